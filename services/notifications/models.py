"""Tables of the notifications service: its copies of what mails need, and the notices."""
from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import JSON, Date, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.models import InboxMixin, OutboxMixin, UTCDateTime, utcnow


class Base(DeclarativeBase):
    pass


class OutboxMessage(OutboxMixin, Base):
    pass


class InboxRecord(InboxMixin, Base):
    pass


class Contact(Base):
    """The municipality's contact, as the operator registered it with the API key."""

    __tablename__ = "contacts"

    ags: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    contact_name: Mapped[str] = mapped_column(String(200), nullable=False)
    contact_email: Mapped[str] = mapped_column(String(254), nullable=False)
    # The `sequence` of the newest announcement applied.
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)


class KnownEnrolment(Base):
    """What later notices about an enrolment need (funding and certificate events are terse)."""

    __tablename__ = "known_enrolments"

    enrolment_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    ags: Mapped[str] = mapped_column(String(8), nullable=False)
    course_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    given_name: Mapped[str] = mapped_column(String(100), nullable=False)
    family_name: Mapped[str] = mapped_column(String(100), nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    course: Mapped[dict] = mapped_column(JSON, nullable=False)
    first_module_on: Mapped[date | None] = mapped_column(Date, nullable=True, index=True)
    # "erased" once the participant's data was erased: the row then stays as the marker (with
    # a pseudonym), so a late event about the enrolment finds it and writes no notice.
    # The `sequence` of the newest enrolment event applied to this copy.
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Notice(Base):
    """One e-mail to one recipient about one event: unique per (event, recipient, template)."""

    __tablename__ = "notices"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    dedup_key: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    template: Mapped[str] = mapped_column(String(60), nullable=False)
    recipient_role: Mapped[str] = mapped_column(String(20), nullable=False)
    to_email: Mapped[str] = mapped_column(String(254), nullable=False)
    to_name: Mapped[str] = mapped_column(String(200), nullable=False)
    cc_email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    context: Mapped[dict] = mapped_column(JSON, nullable=False)
    certificate_number: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The enrolment the notice is about (None for notices from before it was kept): an
    # erasure finds the participant's mails by it.
    enrolment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_notices_due", "status", "next_attempt_at"),
        # The delivery round takes the oldest pending notices: this index holds only those,
        # so a claim reads a few index entries however many notices were sent before.
        Index("ix_notices_pending_by_age", "created_at",
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        # The mail log's retention deletes sent notices by age.
        Index("ix_notices_sent_at", "sent_at",
              postgresql_where=text("status = 'sent'"), sqlite_where=text("status = 'sent'")),
    )


class EarlyFundingEvent(Base):
    """A funding event that arrived before its enrolment's first event (the two come from
    different services, so either may come first). Its facts wait here, recorded with its inbox
    record; the event that makes the enrolment known writes its notices and removes it."""

    __tablename__ = "early_funding_events"

    # The key its notices are deduplicated by (the event id, as the handler writes it).
    event_id: Mapped[str] = mapped_column(String(60), primary_key=True)
    enrolment_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    event_type: Mapped[str] = mapped_column(String(40), nullable=False)
    payload: Mapped[dict] = mapped_column(JSON, nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
