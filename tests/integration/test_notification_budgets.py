"""What notifications' hot paths say to PostgreSQL, counted (tests/statements.py), and the
early-funding handshake under concurrency.

Each budget is exactly what the code needs today: a change that adds a statement fails here
instead of slowing production. The counts must not grow with the tables either.
"""
from __future__ import annotations

import uuid
from datetime import timedelta

import eventlet
import pytest
from sqlalchemy import func, insert, select, text

from services.common.clock import calendar_today
from services.common.db import DatabaseHandle
from services.common.events import build_event, parse_event
from services.common.outbox import handle_once
from services.notifications import domain
from services.notifications.models import (
    EarlyFundingEvent,
    InboxRecord,
    KnownEnrolment,
    Notice,
    OutboxMessage,
)
from tests.statements import counting

AGS = "08226098"
COURSE = {"title": "Basisseminar", "location": "Wiesloch", "provider_name": "VWA",
          "programme_code": "BW-DL", "programme_name": "Digitallotsen",
          "modules": [{"number": n, "title": f"Modul {n}",
                       "date": calendar_today() + timedelta(days=30 + n)} for n in (1, 2, 3)]}

# The budgets (statements; each path is one transaction: one BEGIN, one COMMIT).
CREATED_NEW = 5     # inbox, copy, contact (FOR KEY SHARE), waiting funding events, notices
FUNDING_KNOWN = 3   # inbox, copy with contact, notices
FUNDING_EARLY = 5   # inbox, copy with contact, contact (FOR UPDATE), copy again, the waiting row
DUPLICATE = 1       # inbox
CLAIM = 1           # UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING
ROUND_SENT = 1      # UPDATE ... WHERE id IN (...)


@pytest.fixture
def db(notifications_pg_url):
    handle = DatabaseHandle(notifications_pg_url, "notifications", OutboxMessage, InboxRecord)
    deliver(handle, "municipality_registered", {
        "ags": AGS, "name": "Wiesloch, Stadt", "contact_name": "Hauptamt",
        "contact_email": "hauptamt@wiesloch.example", "sequence": 1})
    yield handle
    handle.dispose()


HANDLERS = {"municipality_registered": domain.municipality_registered,
            "enrolment_created": domain.enrolment_created,
            "funding_granted": lambda s, p, k: domain.funding_event(s, "funding_granted", p, k)}


def deliver(handle, event_type: str, envelope_or_payload: dict):
    """As the service's handler does: parse the envelope, inbox record and effect in one
    transaction."""
    envelope = envelope_or_payload if "event_id" in envelope_or_payload else build_event(
        "enrolment" if event_type != "funding_granted" else "funding", event_type,
        envelope_or_payload)
    event = parse_event(envelope, event_type)
    return handle.run(handle_once, event, f"notifications.{event_type}",
                      lambda session, e: HANDLERS[event_type](session, e.payload,
                                                              str(e.event_id)))


def created(enrolment_id=None, n=1):
    return build_event("enrolment", "enrolment_created", {
        "enrolment_id": enrolment_id or uuid.uuid4(), "programme_id": uuid.uuid4(),
        "course_id": uuid.uuid4(), "ags": AGS, "status": "confirmed", "waitlist_position": None,
        "enrolled_at": domain.now(), "sequence": 1, "course": COURSE,
        "participant": {"given_name": "Jörg", "family_name": f"Weiß{n}",
                        "email": f"teilnehmer{n}@example.org"}})


def granted(enrolment_id):
    return build_event("funding", "funding_granted", {
        "enrolment_id": enrolment_id, "programme_id": uuid.uuid4(), "ags": AGS,
        "kind": "guaranteed", "amount_cents": 50_000, "sequence": 1})


def enrolment_id_of(envelope) -> uuid.UUID:
    return uuid.UUID(envelope["payload"]["enrolment_id"])


def count(handle, model, *where) -> int:
    return handle.run(lambda s: s.scalar(select(func.count()).select_from(model).where(*where)))


def within(seen, statements: int):
    """At most ``statements`` statements in one transaction; prints them otherwise."""
    assert seen.count <= statements and seen.begins <= 1 and seen.commits <= 1, str(seen)


def fill(handle, notices: int, enrolments: int):
    """Tables as after a long run: many sent notices, many known enrolments."""
    moment = domain.now()
    rows = [{"id": uuid.uuid4(), "dedup_key": f"old:{i}", "template": "enrolment_confirmed",
             "recipient_role": "participant", "to_email": f"t{i}@example.org", "to_name": "T",
             "cc_email": None, "context": {}, "certificate_number": None, "status": "sent",
             "attempts": 1, "next_attempt_at": moment, "lease_until": None, "last_error": None,
             "created_at": moment - timedelta(days=1), "sent_at": moment}
            for i in range(notices)]
    copies = [{"enrolment_id": uuid.uuid4(), "ags": AGS, "course_id": uuid.uuid4(),
               "given_name": "A", "family_name": "B", "email": f"k{i}@example.org",
               "status": "confirmed", "course": {}, "first_module_on": None, "version": 1}
              for i in range(enrolments)]

    def run(session):
        for start in range(0, len(rows), 2000):
            session.execute(insert(Notice), rows[start:start + 2000])
        for start in range(0, len(copies), 2000):
            session.execute(insert(KnownEnrolment), copies[start:start + 2000])
        session.execute(text("ANALYZE"))
    handle.run(run)


def measure_events(handle) -> dict:
    """The statements of each event path, once each."""
    seen = {}
    first = created(n=1)
    with counting(handle.engine) as seen["created"]:
        deliver(handle, "enrolment_created", first)
    with counting(handle.engine) as seen["funding known"]:
        deliver(handle, "funding_granted", granted(enrolment_id_of(first)))
    late = created(n=2)
    with counting(handle.engine) as seen["funding early"]:
        deliver(handle, "funding_granted", granted(enrolment_id_of(late)))
    with counting(handle.engine) as seen["created after early funding"]:
        deliver(handle, "enrolment_created", late)
    with counting(handle.engine) as seen["duplicate"]:
        deliver(handle, "enrolment_created", first)
    return seen


def test_event_paths_keep_their_statement_budgets(db):
    seen = measure_events(db)
    within(seen["created"], CREATED_NEW)
    within(seen["funding known"], FUNDING_KNOWN)
    within(seen["funding early"], FUNDING_EARLY)
    within(seen["created after early funding"], CREATED_NEW)
    within(seen["duplicate"], DUPLICATE)
    # and they did what they are for: 4 mails each, nothing waiting, nothing twice
    assert count(db, Notice) == 8 and count(db, EarlyFundingEvent) == 0


def test_delivery_rounds_keep_their_statement_budgets(db):
    for n in range(25):
        deliver(db, "enrolment_created", created(n=n))  # 50 notices
    with counting(db.engine) as claim:
        claimed = db.run(domain.claim_due, 20, 60)
    within(claim, CLAIM)
    assert len(claimed) == 20
    with counting(db.engine) as sent:
        db.run(domain.record_round, [n.id for n in claimed], [], 8, 5, 600)
    within(sent, ROUND_SENT)
    assert count(db, Notice, Notice.status == "sent") == 20


def test_statement_counts_do_not_grow_with_the_tables(db):
    small = {path: s.count for path, s in measure_events(db).items()}
    fill(db, notices=20_000, enrolments=5_000)
    assert {path: s.count for path, s in measure_events(db).items()} == small
    for n in range(3):
        deliver(db, "enrolment_created", created(n=100 + n))
    with counting(db.engine) as claim:
        claimed = db.run(domain.claim_due, 20, 60)
    within(claim, CLAIM)
    # the oldest pending ones, never one of the 20,000 sent ones (older still)
    keys = db.run(lambda s: [s.get(Notice, c.id).dedup_key for c in claimed])
    assert len(keys) == 20 and not any(key.startswith("old:") for key in keys)
    plan = db.run(lambda s: "\n".join(s.execute(text(
        "EXPLAIN SELECT id FROM notices WHERE status = 'pending' AND next_attempt_at <= now() "
        "ORDER BY created_at LIMIT 20")).scalars()))
    assert "ix_notices_pending_by_age" in plan, plan


def test_two_instances_claim_different_notices(db):
    for n in range(10):
        deliver(db, "enrolment_created", created(n=n))  # 20 notices
    first = db.transaction()
    session = first.__enter__()
    try:
        mine = domain.claim_due(session, 8, 60)  # locked, not committed yet
        theirs = db.run(domain.claim_due, 20, 60)  # skips the locked rows, does not wait
        assert len(mine) == 8 and len(theirs) == 12
        assert not {n.id for n in mine} & {n.id for n in theirs}
    finally:
        first.__exit__(None, None, None)
    assert db.run(domain.claim_due, 20, 60) == []  # all leased now


def test_early_funding_and_its_enrolment_handled_at_once_lose_nothing(db):
    """Each enrolment's two events handled at the same moment by two workers, many times: the
    funding side either sees the enrolment or leaves its event where the enrolment side takes
    it. Without the contact-row handshake some funding mails would wait for ever."""
    pairs = [(created(n=n), None) for n in range(60)]
    pairs = [(c, granted(enrolment_id_of(c))) for c, _ in pairs]
    pool = eventlet.GreenPool(20)
    for c, g in pairs:
        pool.spawn(deliver, db, "funding_granted", g)
        pool.spawn(deliver, db, "enrolment_created", c)
    pool.waitall()
    assert count(db, EarlyFundingEvent) == 0
    assert count(db, Notice, Notice.template == "funding_granted") == 2 * len(pairs)
    assert count(db, Notice) == 4 * len(pairs)


def test_an_enrolment_waits_for_a_funding_side_that_holds_the_contact(db):
    """The handshake step by step: a funding handler has locked the contact (and not yet
    parked its event); the enrolment handler waits for it and then takes the parked event."""
    envelope = created(n=7)
    enrolment_id = enrolment_id_of(envelope)
    funding = db.transaction()
    session = funding.__enter__()
    try:
        session.execute(domain._CONTACT_FOR_UPDATE, {"ags": AGS}).first()
        worker = eventlet.spawn(deliver, db, "enrolment_created", envelope)
        eventlet.sleep(0.5)
        assert not worker.dead  # waiting for the contact's lock
        session.execute(insert(EarlyFundingEvent).values(
            event_id="f-7", enrolment_id=enrolment_id, event_type="funding_granted",
            payload={"kind": "guaranteed", "amount_cents": 50_000}, received_at=domain.now()))
    finally:
        funding.__exit__(None, None, None)  # commits
    worker.wait()
    assert count(db, EarlyFundingEvent) == 0
    assert count(db, Notice, Notice.dedup_key.like("f-7:%")) == 2
