"""Writing events to the outbox and recording handled ones in the inbox, inside the caller's
transaction. No nameko here, so domain modules can use it and stay framework-free."""
from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.events import Event, build_event


def emit(session: Session, event_type: str, payload: dict) -> dict:
    """Write an event to the outbox in the session's transaction."""
    outbox = session.info["outbox_model"]
    envelope = build_event(session.info["producer"], event_type, payload,
                           correlation_id=session.info.get("correlation_id"))
    session.add(outbox(event_id=uuid.UUID(envelope["event_id"]), event_type=event_type,
                       envelope=envelope))
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
    Two deliveries racing each other collide on the primary key: one commits, the other fails
    and is retried, and then sees the record.
    """
    inbox = session.info["inbox_model"]
    seen = session.execute(
        select(inbox.event_id).where(inbox.consumer == consumer,
                                     inbox.event_id == event.event_id)
    ).first()
    if seen:
        return False
    session.add(inbox(consumer=consumer, event_id=event.event_id, event_type=event.event_type))
    session.flush()
    return True


def handle_once(session: Session, event: Event, consumer: str, effect) -> bool:
    """Run ``effect(session, event)`` unless ``consumer`` handled this event before; the inbox
    record and the effect commit together."""
    if not first_delivery(session, event, consumer):
        return False
    effect(session, event)
    return True
