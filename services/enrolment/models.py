"""Tables of the enrolment service (its own database)."""
from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    LargeBinary,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.common.models import InboxMixin, OutboxMixin, UTCDateTime, utcnow


class Base(DeclarativeBase):
    pass


class OutboxMessage(OutboxMixin, Base):
    pass


class InboxRecord(InboxMixin, Base):
    pass


class Body(Base):
    """A municipality or other body that can send participants (from the Destatis register)."""

    __tablename__ = "bodies"

    ags: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)  # gemeinde | kreis | bezirk
    designation: Mapped[str] = mapped_column(String(60), nullable=False)  # Stadt, Landkreis, ...
    kreisfrei: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    land: Mapped[str] = mapped_column(String(2), nullable=False, index=True)
    kreis_ags: Mapped[str | None] = mapped_column(String(8), nullable=True)
    population: Mapped[int | None] = mapped_column(Integer, nullable=True)
    postal_code: Mapped[str | None] = mapped_column(String(5), nullable=True)
    longitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    latitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class MunicipalityAccount(Base):
    """A body registered for the gateway: its contact and its API key (hash only)."""

    __tablename__ = "municipality_accounts"

    ags: Mapped[str] = mapped_column(ForeignKey("bodies.ags"), primary_key=True)
    contact_name: Mapped[str] = mapped_column(String(200), nullable=False)
    contact_email: Mapped[str] = mapped_column(String(254), nullable=False)
    api_key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    api_key_prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    key_issued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # How often the contact was announced (municipality_registered's `sequence`).
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Set when the operator revokes the key: it then fails like an unknown one until a new
    # key is issued (rotation or registering again).
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    body: Mapped[Body] = relationship(lazy="joined")


class FormerContact(Base):
    """A body's contact whom a newer one replaced: kept to say when they lost access, so
    that the retention run erases them in time; erasing them replaces name and address."""

    __tablename__ = "former_contacts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    ags: Mapped[str] = mapped_column(ForeignKey("bodies.ags"), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False, index=True)
    replaced_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Programme(Base):
    __tablename__ = "programmes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    code: Mapped[str] = mapped_column(String(40), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    land: Mapped[str] = mapped_column(String(2), nullable=False)
    role_name: Mapped[str] = mapped_column(String(80), nullable=False)
    eligible_kinds: Mapped[list] = mapped_column(JSON, nullable=False)
    enrolment_opens_on: Mapped[date] = mapped_column(Date, nullable=False)
    enrolment_closes_on: Mapped[date] = mapped_column(Date, nullable=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # How long participant data is kept after the course ended or the enrolment was
    # cancelled; then the daily retention run erases it (services/enrolment/privacy.py).
    retention_days: Mapped[int] = mapped_column(Integer, nullable=False, default=730)
    # False: nothing is ever funded (a coaching programme without a funding section).
    funded: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True,
                                         server_default=text("true"))


class Provider(Base):
    """An education provider (Bildungsträger); it authenticates with a token (hash only)."""

    __tablename__ = "providers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    token_issued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False,
                                                      default=utcnow)
    # Set when the operator revokes the token: it then fails like an unknown one until a new
    # token is issued (rotation).
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Course(Base):
    __tablename__ = "courses"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id"), nullable=False,
                                                    index=True)
    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id"), nullable=False,
                                                   index=True)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    location: Mapped[str] = mapped_column(String(200), nullable=False)
    capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="planned")
    # Counts enrolments ever made, under the course's lock: first-come order without clock ties.
    enrolment_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    cancelled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    programme: Mapped[Programme] = relationship(lazy="joined", innerjoin=True)
    provider: Mapped[Provider] = relationship(lazy="joined", innerjoin=True)
    modules: Mapped[list["Module"]] = relationship(
        order_by="Module.number", cascade="all, delete-orphan", lazy="selectin")


class Module(Base):
    __tablename__ = "modules"

    course_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("courses.id"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    date: Mapped[date] = mapped_column(Date, nullable=False)


ACTIVE_STATUSES = ("confirmed", "waitlisted")


class Enrolment(Base):
    __tablename__ = "enrolments"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id"), nullable=False)
    course_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("courses.id"), nullable=False)
    ags: Mapped[str] = mapped_column(ForeignKey("bodies.ags"), nullable=False)
    sequence: Mapped[int] = mapped_column(Integer, nullable=False)
    given_name: Mapped[str] = mapped_column(String(100), nullable=False)
    family_name: Mapped[str] = mapped_column(String(100), nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    department: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_by: Mapped[str | None] = mapped_column(String(20), nullable=True)
    cancel_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # How often this enrolment changed in a way its events tell: their `sequence`.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Read model of the other services' decisions, kept from their events.
    funding_status: Mapped[str] = mapped_column(String(20), nullable=False, default="pending")
    funding_kind: Mapped[str | None] = mapped_column(String(20), nullable=True)
    certificate_number: Mapped[str | None] = mapped_column(String(40), nullable=True)
    certificate_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # Events from different queues can arrive out of order: only newer ones are applied.
    funding_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    funding_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    certificate_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    certificate_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set when the participant's data was replaced by a pseudonym (participant_erased).
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    course: Mapped[Course] = relationship(lazy="joined", innerjoin=True)
    body: Mapped[Body] = relationship(lazy="joined", innerjoin=True)
    attendance: Mapped[list["Attendance"]] = relationship(lazy="selectin",
                                                          order_by="Attendance.module_number")

    __table_args__ = (
        # One active enrolment per participant e-mail and programme, whatever the race.
        Index("uq_active_enrolment_per_email", "programme_id", "email", unique=True,
              postgresql_where=text("status IN ('confirmed', 'waitlisted')"),
              sqlite_where=text("status IN ('confirmed', 'waitlisted')")),
        Index("ix_enrolments_course_status", "course_id", "status", "sequence"),
        Index("ix_enrolments_ags_programme", "ags", "programme_id"),
    )


class Attendance(Base):
    __tablename__ = "attendance"

    enrolment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("enrolments.id"), primary_key=True)
    module_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class IdempotencyRecord(Base):
    """The first answer to an enrolment request with an idempotency key."""

    __tablename__ = "idempotency_records"

    ags: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    response: Mapped[dict] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)



# --- the municipality portal: who may sign in, sign-in links, sessions -------------------------

class PortalColleague(Base):
    """A colleague the municipality's contact invited to the portal; removed ones are kept
    (``removed_at``) so that their sessions and links stop working and the record says why."""

    __tablename__ = "portal_colleagues"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    ags: Mapped[str] = mapped_column(ForeignKey("bodies.ags"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    invited_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        # One active invitation per address and body.
        Index("uq_active_portal_colleague", "ags", "email", unique=True,
              postgresql_where=text("removed_at IS NULL"),
              sqlite_where=text("removed_at IS NULL")),
        Index("ix_portal_colleagues_email", "email"),
    )


class PortalSignInLink(Base):
    """A single-use sign-in link (hash of its token only), valid for a few minutes."""

    __tablename__ = "portal_sign_in_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    ags: Mapped[str] = mapped_column(ForeignKey("bodies.ags"), nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PortalSession(Base):
    """A signed-in clerk (hash of the session id the gateway's cookie carries). Ends when it
    expires, at sign-out, or when the person loses access."""

    __tablename__ = "portal_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    ags: Mapped[str] = mapped_column(ForeignKey("bodies.ags"), nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_portal_sessions_ags_email", "ags", "email"),)


# --- the programme office's pages: staff an operator registered, their links and sessions ------

class OfficeStaff(Base):
    """A member of the programme office who may use the office's pages (registered by an
    operator with the CLI); removed ones are kept so the record says when access ended."""

    __tablename__ = "office_staff"

    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OfficeSignInLink(Base):
    """A single-use sign-in link for office staff (hash of its token only)."""

    __tablename__ = "office_sign_in_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(ForeignKey("office_staff.email"), nullable=False,
                                       index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OfficeSession(Base):
    """A signed-in member of the office (hash of the id the gateway's cookie carries)."""

    __tablename__ = "office_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(ForeignKey("office_staff.email"), nullable=False,
                                       index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# --- coaching programmes (Sachsen's Digital-Navigatoren) ----------------------------------------

class CoachingProgramme(Base):
    """A programme run as coaching: its milestones, each due some days after a Navigator's
    coaching starts (``[{"key", "title", "due_days", "document"}]``)."""

    __tablename__ = "coaching_programmes"

    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id"),
                                                    primary_key=True)
    milestones: Mapped[list] = mapped_column(JSON, nullable=False)


class Coach(Base):
    """A Lotse who coaches Navigators, at most ``max_navigators`` at a time. A coach who
    leaves is kept with ``removed_at``: the milestones they recorded name them. Erasing
    them afterwards (``erased_at``) replaces name and address by a pseudonym."""

    __tablename__ = "coaches"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id"), nullable=False,
                                                    index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    max_navigators: Mapped[int] = mapped_column(Integer, nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Navigator(Base):
    """The one person a municipality names for a coaching programme. Replacing one keeps the
    old row (``replaced_at``), so the history stays."""

    __tablename__ = "navigators"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id"), nullable=False)
    ags: Mapped[str] = mapped_column(ForeignKey("bodies.ags"), nullable=False)
    given_name: Mapped[str] = mapped_column(String(100), nullable=False)
    family_name: Mapped[str] = mapped_column(String(100), nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    department: Mapped[str | None] = mapped_column(String(200), nullable=True)
    named_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    replaced_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    replaces_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    coach_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("coaches.id"), nullable=True,
                                                       index=True)
    coaching_started_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (
        Index("uq_active_navigator", "programme_id", "ags", unique=True,
              postgresql_where=text("replaced_at IS NULL"),
              sqlite_where=text("replaced_at IS NULL")),
    )


class MilestoneRecord(Base):
    """A milestone a Navigator reached, as their coach recorded it."""

    __tablename__ = "milestone_records"

    navigator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("navigators.id"),
                                                    primary_key=True)
    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    reached_on: Mapped[date] = mapped_column(Date, nullable=False)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    document_ref: Mapped[str | None] = mapped_column(String(300), nullable=True)
    recorded_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("coaches.id"), nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class CoachSignInLink(Base):
    """A single-use sign-in link for a coach's pages (hash of its token only); by address,
    since one person may coach in several programmes."""

    __tablename__ = "coach_sign_in_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CoachSession(Base):
    """A signed-in coach (hash of the id the gateway's cookie carries)."""

    __tablename__ = "coach_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MilestoneDocument(Base):
    """A PDF a coach uploaded for a milestone (the Digitale Agenda); the milestone's record
    names it as ``document:<id>``."""

    __tablename__ = "milestone_documents"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    navigator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("navigators.id"),
                                                    nullable=False, index=True)
    key: Mapped[str] = mapped_column(String(40), nullable=False)
    filename: Mapped[str] = mapped_column(String(200), nullable=False)
    content: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    uploaded_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("coaches.id"), nullable=False)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class MilestoneOverdue(Base):
    """That a milestone's reminder went out (once per Navigator and milestone)."""

    __tablename__ = "milestones_overdue"

    navigator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("navigators.id"),
                                                    primary_key=True)
    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
class Erasure(Base):
    """The record that a participant's data was erased, and why (accountability, Art. 5(2)
    DSGVO). It identifies no one: the address is kept only as a keyed hash (HMAC with the
    service key), so a repeated request for the same address is recognised and an access
    request can be told that and when the data was erased."""

    __tablename__ = "erasures"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email_key: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    pseudonym: Mapped[str] = mapped_column(String(40), nullable=False)
    cause: Mapped[str] = mapped_column(String(20), nullable=False)  # request | retention
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    enrolment_ids: Mapped[list] = mapped_column(JSON, nullable=False)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
