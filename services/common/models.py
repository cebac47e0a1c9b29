"""Column types and the messaging tables every service database carries (outbox, inbox)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String, TypeDecorator, Uuid
from sqlalchemy.orm import Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: times are timezone-aware UTC")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements).
AutoIncrement = BigInteger().with_variant(Integer(), "sqlite")


class OutboxMixin:
    """Events written in the same transaction as the change they announce."""

    __tablename__ = "outbox"

    position: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, nullable=False)
    event_type: Mapped[str] = mapped_column(String(80), nullable=False)
    envelope: Mapped[dict] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class InboxMixin:
    """Events a consumer has handled, recorded in the same transaction as their effect."""

    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(120), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    event_type: Mapped[str] = mapped_column(String(80), nullable=False)
    handled_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ErasedEnrolmentMixin:
    """An enrolment whose participant was erased (``participant_erased``): the marker a
    consumer keeps so that a late or replayed event about it brings nothing back. Keyed by the
    enrolment id, which identifies no one."""

    __tablename__ = "erased_enrolments"

    enrolment_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    erasure_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
