"""Writing events to the outbox and recording handled ones in the inbox, inside the caller's
transaction. No nameko here, so domain modules can use it and stay framework-free.

Both are on every hot path, so each is one statement: the outbox row is a plain Core INSERT,
and the inbox record is an INSERT that skips a duplicate (``ON CONFLICT DO NOTHING``) and says
whether it wrote, instead of a SELECT and then an INSERT.
"""
from __future__ import annotations

import uuid

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.common.events import Event, build_event
from services.common.models import utcnow


# Statements made once per table (and dialect): SQLAlchemy then neither builds them nor works out
# their cache keys on every call.
_INSERTS: dict = {}


def insert_skipping_duplicates(session: Session, table, rows: list[dict], conflict: list[str],
                               returning=None):
    """``INSERT ... ON CONFLICT (conflict) DO NOTHING`` on PostgreSQL and SQLite: rows whose
    key exists already are left as they are. With ``returning`` (columns), the rows written."""
    dialect = session.get_bind().dialect.name
    shape = (dialect, table, tuple(conflict), tuple(returning or ()))
    statement = _INSERTS.get(shape)
    if statement is None:
        make = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = make(table).on_conflict_do_nothing(index_elements=conflict)
        if returning is not None:
            statement = statement.returning(*returning)
        statement = _INSERTS.setdefault(shape, statement)
    return session.execute(statement, rows[0] if len(rows) == 1 else rows)


def _insert_into(table):
    """One INSERT statement per table, made once (no building, no cache key per call)."""
    statement = _INSERTS.get(table)
    if statement is None:
        statement = _INSERTS.setdefault(table, insert(table))
    return statement


def emit(session: Session, event_type: str, payload: dict) -> dict:
    """Write an event to the outbox in the session's transaction."""
    outbox = session.info["outbox_model"].__table__
    envelope = build_event(session.info["producer"], event_type, payload,
                           correlation_id=session.info.get("correlation_id"))
    session.execute(_insert_into(outbox), {
        "event_id": uuid.UUID(envelope["event_id"]), "event_type": event_type,
        "envelope": envelope, "created_at": utcnow()})
    session.info["emitted"] = True
    return envelope


def emit_numbered(session: Session, subject, event_type: str, payload: dict,
                  after: int | None = None) -> dict:
    """Write an event about ``subject`` (an enrolment, a funding, ...) numbered with its next
    ``version`` as the payload's ``sequence``, so consumers apply only newer ones. ``after``:
    the number to count on from, where it is not the subject's own (certificates count per
    enrolment across re-issues)."""
    start = (subject.version or 0) if after is None else after
    subject.version = start + 1
    return emit(session, event_type, dict(payload, sequence=subject.version))


def first_delivery(session: Session, event: Event, consumer: str) -> bool:
    """Record ``event`` as handled by ``consumer``; False if it was handled before.

    The record commits with the handler's effect, so a redelivered event has no second effect.
    Two deliveries racing each other: the second one's INSERT waits for the first's
    transaction and then skips (PostgreSQL), or waits for the write lock (SQLite), and sees
    it was handled.
    """
    inbox = session.info["inbox_model"].__table__
    written = insert_skipping_duplicates(
        session, inbox, [{"consumer": consumer, "event_id": event.event_id,
                          "event_type": event.event_type, "handled_at": utcnow()}],
        ["consumer", "event_id"], returning=[inbox.c.event_id])
    return written.first() is not None


def handle_once(session: Session, event: Event, consumer: str, effect) -> bool:
    """Run ``effect(session, event)`` unless ``consumer`` handled this event before; the inbox
    record and the effect commit together."""
    if not first_delivery(session, event, consumer):
        return False
    effect(session, event)
    return True


def handle_in_group(group, db, key, event: Event, consumer: str, effect) -> bool:
    """``handle_once`` through a ``GroupCommit``: the events of ``key`` that queued up while
    another transaction ran are handled together, in order, in one transaction. Each keeps
    its own correlation id for the events it causes. ``db`` is the worker's database."""
    item = (event, consumer, effect, db.correlation_id)
    return group.run(key, item, lambda items: db.run(_handle_all, items))


def _handle_all(session: Session, items: list) -> list[bool]:
    handled = []
    for event, consumer, effect, correlation_id in items:
        session.info["correlation_id"] = correlation_id
        handled.append(handle_once(session, event, consumer, effect))
    return handled
