"""Tables of the funding service (its own database)."""
from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.models import (
    AutoIncrement,
    ErasedEnrolmentMixin,
    InboxMixin,
    OutboxMixin,
    UTCDateTime,
    utcnow,
)


class Base(DeclarativeBase):
    pass


class OutboxMessage(OutboxMixin, Base):
    pass


class InboxRecord(InboxMixin, Base):
    pass


class ErasedEnrolment(ErasedEnrolmentMixin, Base):
    pass


class FundingProgramme(Base):
    """A programme's funding policy and running totals; its row is the lock for decisions."""

    __tablename__ = "funding_programmes"

    programme_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), nullable=False, unique=True)
    # From the programme-published event (None until it arrived).
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # From the programme-published event: False when nothing is to be funded at all.
    funded: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True,
                                         server_default=text("true"))
    revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    eligible_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The policy (None until the operator set it).
    budget_cents: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    fee_cents: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    guaranteed_per_body: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    reserve_until: Mapped[date | None] = mapped_column(Date, nullable=True)
    reserve_released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    remind_days_before: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # Running totals, kept with every ledger entry; the ledger check recomputes them.
    granted_guaranteed_cents: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    granted_pool_cents: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    confirmations: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class EligibleBody(Base):
    __tablename__ = "eligible_bodies"

    programme_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("funding_programmes.programme_id"), primary_key=True)
    ags: Mapped[str] = mapped_column(String(8), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)


class Funding(Base):
    """The funding state of one confirmed enrolment."""

    __tablename__ = "fundings"

    enrolment_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    programme_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("funding_programmes.programme_id"), nullable=False)
    ags: Mapped[str] = mapped_column(String(8), nullable=False)
    # Order of confirmation within the programme: who waits longest is funded first.
    sequence: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)  # guaranteed|pool|waiting|released
    amount_cents: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    confirmed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # How often this funding changed in a way its events tell: their `sequence`.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (
        Index("ix_fundings_programme_body_state", "programme_id", "ags", "state"),
        Index("ix_fundings_programme_state_sequence", "programme_id", "state", "sequence"),
    )


class LedgerEntry(Base):
    """Append-only. ``amount_cents`` is the change of money still available: the sum of a
    programme's entries is its balance (budget minus what is granted)."""

    __tablename__ = "ledger_entries"

    position: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    programme_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("funding_programmes.programme_id"), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(30), nullable=False)
    pot: Mapped[str] = mapped_column(String(20), nullable=False)  # budget | guaranteed | pool
    amount_cents: Mapped[int] = mapped_column(BigInteger, nullable=False)
    enrolment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    ags: Mapped[str | None] = mapped_column(String(8), nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Reminder(Base):
    """A body reminded in a campaign: at most once per campaign, however often it runs."""

    __tablename__ = "reminders"

    programme_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("funding_programmes.programme_id"), primary_key=True)
    campaign: Mapped[str] = mapped_column(String(60), primary_key=True)
    ags: Mapped[str] = mapped_column(String(8), primary_key=True)
    reminded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
