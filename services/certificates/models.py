"""Tables of the certificates service (its own database)."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.models import (
    ErasedEnrolmentMixin,
    InboxMixin,
    OutboxMixin,
    UTCDateTime,
    utcnow,
)


# A certificate number is "<programme code>-<year>-<sequence>", e.g. BW-DL-2026-000123. Every
# service that keeps a copy of it (enrolment, notifications) stores it in NUMBER_LENGTH
# characters, so a programme code may be at most PROGRAMME_CODE_MAX long; the enrolment
# service refuses longer codes when the programme is created (its ProgrammeIn schema).
NUMBER_LENGTH = 40
SEQUENCE_DIGITS = 6
PROGRAMME_CODE_MAX = NUMBER_LENGTH - len("-YYYY-") - SEQUENCE_DIGITS  # 28


class Base(DeclarativeBase):
    pass


class OutboxMessage(OutboxMixin, Base):
    pass


class InboxRecord(InboxMixin, Base):
    pass


class ErasedEnrolment(ErasedEnrolmentMixin, Base):
    pass


class CertificateSequence(Base):
    """Last number given per programme and year; its row lock makes numbers gapless."""

    __tablename__ = "certificate_sequences"

    programme_code: Mapped[str] = mapped_column(String(40), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Certificate(Base):
    """Kept for ever: a revoked or superseded certificate must verify as such, not vanish."""

    __tablename__ = "certificates"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    number: Mapped[str] = mapped_column(String(NUMBER_LENGTH), nullable=False, unique=True)
    enrolment_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    ags: Mapped[str] = mapped_column(String(8), nullable=False, index=True)
    programme_code: Mapped[str] = mapped_column(String(40), nullable=False)
    verification_code: Mapped[str] = mapped_column(String(20), nullable=False, unique=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False)  # valid|revoked|superseded
    # What the certificate states, as it was at issuance (no e-mail address in clear).
    data: Mapped[dict] = mapped_column(JSON, nullable=False)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    key_id: Mapped[str] = mapped_column(String(60), nullable=False)
    credential_jws: Mapped[str] = mapped_column(Text, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revocation_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    supersedes: Mapped[str | None] = mapped_column(String(NUMBER_LENGTH), nullable=True)
    superseded_by: Mapped[str | None] = mapped_column(String(NUMBER_LENGTH), nullable=True)
    # The `sequence` of the newest event about this certificate's enrolment (counted over all
    # of the enrolment's certificates: a re-issue continues it).
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Set when the holder's data was erased: number, status and course facts stay (so the
    # certificate still verifies), the name and the PDF are gone, and of the signed
    # credential only its SHA-256 is kept (a holder's copy still verifies against it).
    holder_erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        # One current certificate per enrolment, however often the event arrives.
        Index("uq_current_certificate_per_enrolment", "enrolment_id", unique=True,
              postgresql_where=text("status <> 'superseded'"),
              sqlite_where=text("status <> 'superseded'")),
    )
