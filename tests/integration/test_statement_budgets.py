"""Statement budgets of the hot paths, counted on the real PostgreSQL (no timing).

Each test runs a hot path once through the entrypoint the services run, counts what it says
to its database with SQLAlchemy's events (``tests/statements.py``) and compares it with the
budget: exactly what the code needs today, so a change that adds a query fails here instead of
slowing production down. What each path costs, and why, is in README "Performance".
"""
import uuid

import pytest
from nameko.testing.services import worker_factory

from services.common.db import BoundDatabase
from services.common.events import build_event
from services.common.messaging import OutboxRelay
from services.common.outbox import first_delivery
from services.common.turns import GroupCommit
from services.common.events import parse_event
from services.enrolment import domain
from services.enrolment.models import Enrolment, OutboxMessage
from services.enrolment.service import EnrolmentService
from services.funding import domain as funding_domain
from services.funding.service import FundingService
from tests.funding_support import policy
from tests.integration.helpers import gemeinden, outbox_events, participant, seed
from tests.statements import counting

# (statements, transactions) per hot path; BEGIN and COMMIT come with each transaction.
ENROL = 3                 # course lock, one read under it, one write: enrolment, event and
ENROL_WITHOUT_KEY = 3     #   idempotency record as one statement of INSERT CTEs
ENROL_WAITLISTED = 5      # + the enrolment first, then the waitlist in promotion order
ENROL_REPLAYED = 3        # lock, read, the first answer
ENROL_WITH_KEY = 4        # + the API key's account and body
FIRST_ENROL_IN_COURSE = 2  # the course's card, once per course and process
FUNDING_GUARANTEED = 5    # inbox, programme lock, the fundings there are, the bodies'
FUNDING_POOL = 6          #   eligibility and guarantees held, one write: funding, ledger
#                           entry, event and totals; + the reserve still held for a pool seat
FUNDING_DUPLICATE = 1     # the inbox says it was handled
READ_MODEL_EVENT = 2      # inbox, one conditional UPDATE (those queued up share a transaction)
RELAY_BATCH = 2           # the batch (locked), one UPDATE marking it published
INBOX_CHECK = 1


def within(seen, statements, transactions=1):
    assert seen.count <= statements, str(seen)
    assert seen.begins <= transactions and seen.commits <= transactions, str(seen)


@pytest.fixture
def enrolment_service(enrolment_db):
    return worker_factory(EnrolmentService, db=BoundDatabase(enrolment_db, None), config={},
                          group=GroupCommit())


@pytest.fixture
def world(enrolment_db, register_file):
    seeded = seed(enrolment_db, register_file, capacity=3)
    bodies = gemeinden(register_file, 6)
    keys = {ags: enrolment_db.run(lambda s, a=ags: domain.register_municipality(
        s, a, "Hauptamt", f"hauptamt@{a}.example")[1]) for ags in bodies}
    return {"course": str(seeded["courses"][0]), "bodies": bodies, "keys": keys}


def request(world, n, key=True):
    body = {"course_id": world["course"], "participant": participant(n)}
    if key:
        body["idempotency_key"] = f"key-{n}"
    return body


def test_an_enrolment_costs_one_transaction_of_three_statements(
        enrolment_service, enrolment_db, world):
    first, second = world["bodies"][:2]
    domain.COURSE_CARDS._cards.clear()
    with counting(enrolment_db.engine) as seen:
        enrolment_service.enrol(first, request(world, 1))
    within(seen, ENROL + FIRST_ENROL_IN_COURSE)
    with counting(enrolment_db.engine) as seen:
        created = enrolment_service.enrol(second, request(world, 2))
    assert created["status"] == "confirmed"
    within(seen, ENROL)
    with counting(enrolment_db.engine) as seen:
        enrolment_service.enrol(second, request(world, 3, key=False))
    within(seen, ENROL_WITHOUT_KEY)
    with counting(enrolment_db.engine) as seen:
        again = enrolment_service.enrol(second, request(world, 2))
    assert again == created
    within(seen, ENROL_REPLAYED)
    with counting(enrolment_db.engine) as seen:  # the course (3 seats) is full now
        waiting = enrolment_service.enrol(world["bodies"][3], request(world, 4))
    assert waiting["status"] == "waitlisted" and waiting["waitlist_position"] == 1
    within(seen, ENROL_WAITLISTED)


def test_an_enrolment_with_an_unseen_key_authenticates_in_the_same_transaction(
        enrolment_service, enrolment_db, world):
    ags = world["bodies"][4]
    enrolment_service.enrol(world["bodies"][5], request(world, 9))  # the course's card
    with counting(enrolment_db.engine) as seen:
        answer = enrolment_service.enrol_with_key(world["keys"][ags], request(world, 1))
    assert answer["body"]["ags"] == ags and answer["enrolment"]["ags"] == ags
    within(seen, ENROL_WITH_KEY)


def test_the_count_does_not_grow_with_the_table(enrolment_service, enrolment_db, world,
                                                register_file):
    """With a thousand more active enrolments in the programme, the same statements."""
    enrolment_service.enrol(world["bodies"][0], request(world, 1))
    programme_id = enrolment_db.run(lambda s: s.get(domain.Course, uuid.UUID(world["course"]))
                                    .programme_id)
    other = seed_course(enrolment_db)
    from datetime import datetime, timezone
    from sqlalchemy import insert
    moment = datetime.now(timezone.utc)
    enrolment_db.run(lambda s: s.execute(insert(Enrolment), [
        {"id": uuid.uuid4(), "programme_id": programme_id, "course_id": other,
         "ags": world["bodies"][n % 6], "sequence": 100 + n, "given_name": "F",
         "family_name": "F", "email": f"fill{n}@example.org", "status": "confirmed",
         "enrolled_at": moment, "funding_status": "pending"} for n in range(1000)]))
    with counting(enrolment_db.engine) as seen:
        enrolment_service.enrol(world["bodies"][1], request(world, 2))
    within(seen, ENROL)


def test_enrolments_that_queue_up_share_one_transaction(enrolment_db, world):
    """Ten callers at once: the first enrols alone, the nine that queued up behind it in one
    more transaction with three statements each. Each caller gets its own answer, refusals
    included, and each event carries its own caller's correlation id."""
    import eventlet
    from services.common.errors import DuplicateEnrolment, NotFound
    roomy = str(seed_course(enrolment_db))
    group = GroupCommit()
    callers = [worker_factory(EnrolmentService, db=BoundDatabase(enrolment_db, f"call-{n}"),
                              config={}, group=group) for n in range(10)]
    callers[0].enrol(world["bodies"][0], dict(request(world, 0), course_id=roomy))  # the card
    requests = [(world["bodies"][n % 6], dict(request(world, n), course_id=roomy))
                for n in range(1, 11)]
    requests[4] = ("08999999", requests[4][1])  # no such body
    requests[7] = (requests[7][0], dict(requests[7][1], participant=participant(2)))  # a twin
    with counting(enrolment_db.engine) as seen:
        pool = eventlet.GreenPool(10)
        answers = list(pool.imap(lambda n: _answer(callers[n].enrol, *requests[n]), range(10)))
    assert seen.commits == 2, str(seen)
    assert seen.count == 10 * ENROL - 2, str(seen)  # the two refused write nothing
    assert isinstance(answers[4], NotFound) and isinstance(answers[7], DuplicateEnrolment)
    made = [a for a in answers if isinstance(a, dict)]
    assert len(made) == 8 and all(a["status"] == "confirmed" for a in made)
    created = {e["payload"]["enrolment_id"]: e for e in _created_events(enrolment_db)}
    for n, answer in enumerate(answers):
        if isinstance(answer, dict):
            assert created[answer["id"]]["correlation_id"] == f"call-{n}"
    assert len(created) == 9  # the card's enrolment and the eight made together


def _answer(call, *args):
    try:
        return call(*args)
    except Exception as refusal:
        return refusal


def seed_course(enrolment_db):
    from tests.integration.helpers import course_data

    def make(session):
        provider = session.query(domain.Provider).first()
        return domain.create_course(session, provider, course_data(capacity=1000)).id
    return enrolment_db.run(make)


def _created_events(enrolment_db):
    return [e for e in outbox_events(enrolment_db) if e["event_type"] == "enrolment_created"]


def test_a_funding_decision_costs_one_transaction_of_five_statements(
        enrolment_service, enrolment_db, funding_db, world):
    for n, ags in enumerate(world["bodies"][:3]):
        enrolment_service.enrol(ags, request(world, n))
    enrolment_service.enrol(world["bodies"][0], request(world, 7))  # a second one: waitlisted
    published = [e for e in outbox_events(enrolment_db)
                 if e["event_type"] == "programme_published"][0]
    funding = worker_factory(FundingService, db=BoundDatabase(funding_db, None),
                             group=GroupCommit())
    funding.on_programme_published(published)
    programme_id = published["payload"]["programme_id"]
    funding_db.run(funding_domain.set_policy, programme_id, "BW-DL", policy(700_000_000))
    created = _created_events(enrolment_db)
    with counting(funding_db.engine) as seen:
        funding.on_enrolment_created(created[0])
    within(seen, FUNDING_GUARANTEED)
    with counting(funding_db.engine) as seen:
        funding.on_enrolment_created(created[0])
    within(seen, FUNDING_DUPLICATE)
    # A second participant of a body that holds its guarantee: funded from the pool.
    second = dict(created[1], event_id=str(uuid.uuid4()),
                  payload=dict(created[1]["payload"], enrolment_id=str(uuid.uuid4()),
                               ags=created[0]["payload"]["ags"]))
    with counting(funding_db.engine) as seen:
        funding.on_enrolment_created(second)
    within(seen, FUNDING_POOL)
    states = funding_db.run(lambda s: {str(f.enrolment_id): f.state
                                       for f in s.query(funding_domain.Funding)})
    assert states == {created[0]["payload"]["enrolment_id"]: "guaranteed",
                      second["payload"]["enrolment_id"]: "pool"}


def test_a_read_model_event_costs_two_statements(enrolment_service, enrolment_db, world):
    created = enrolment_service.enrol(world["bodies"][0], request(world, 1))
    granted = build_event("funding", "funding_granted", {
        "enrolment_id": created["id"], "programme_id": uuid.uuid4(), "ags": created["ags"],
        "kind": "guaranteed", "amount_cents": 50_000, "sequence": 1})
    with counting(enrolment_db.engine) as seen:
        enrolment_service.on_funding_granted(granted)
    within(seen, READ_MODEL_EVENT)
    assert enrolment_service.get_enrolment(created["ags"], created["id"])["funding"] == {
        "status": "granted", "kind": "guaranteed"}
    with counting(enrolment_db.engine) as seen:
        enrolment_service.on_funding_granted(granted)
    within(seen, INBOX_CHECK)


def test_an_inbox_check_of_a_handled_event_is_one_statement(enrolment_db):
    event = parse_event(build_event("funding", "funding_waiting", {
        "enrolment_id": uuid.uuid4(), "programme_id": uuid.uuid4(), "ags": "08226098",
        "sequence": 1}))
    assert enrolment_db.run(first_delivery, event, "budget.test")
    with counting(enrolment_db.engine) as seen:
        assert not enrolment_db.run(first_delivery, event, "budget.test")
    within(seen, INBOX_CHECK)


def test_a_relay_batch_costs_two_statements_however_large(
        enrolment_service, enrolment_db, world, service_config):
    for n, ags in enumerate(world["bodies"][:3]):
        enrolment_service.enrol(ags, request(world, n))
    relay = OutboxRelay(enrolment_db, "enrolment", service_config)
    relay.declare_topology()
    try:
        unpublished = len([1 for e in outbox_events(enrolment_db)])
        with counting(enrolment_db.engine) as seen:
            assert relay.publish_pending() == unpublished >= 4
        within(seen, RELAY_BATCH)
        with counting(enrolment_db.engine) as seen:
            assert relay.publish_pending() == 0
        within(seen, 1)
    finally:
        relay.close()
    left = enrolment_db.run(lambda s: s.query(OutboxMessage)
                            .filter(OutboxMessage.published_at.is_(None)).count())
    assert left == 0


def test_decisions_that_queue_up_share_one_transaction(enrolment_service, enrolment_db,
                                                        funding_db, world):
    """Ten enrolment events delivered at once: the first is decided alone, the nine that queued
    up behind it in one more transaction, in the order they arrived, with as many statements
    as one decision needs (one inbox statement, one lock, two reads, one write for all)."""
    import eventlet
    roomy = str(seed_course(enrolment_db))
    for n in range(10):
        enrolment_service.enrol(world["bodies"][n % 6], dict(request(world, n), course_id=roomy))
    published = [e for e in outbox_events(enrolment_db)
                 if e["event_type"] == "programme_published"][0]
    funding = worker_factory(FundingService, db=BoundDatabase(funding_db, None),
                             group=GroupCommit())
    funding.on_programme_published(published)
    funding_db.run(funding_domain.set_policy, published["payload"]["programme_id"], "BW-DL",
                   policy(700_000_000))
    created = _created_events(enrolment_db)
    assert len(created) == 10
    with counting(funding_db.engine) as seen:
        pool = eventlet.GreenPool(len(created))
        for envelope in created:
            pool.spawn(funding.on_enrolment_created, envelope)
        pool.waitall()
    assert seen.commits == 2, str(seen)
    assert seen.count <= 2 * FUNDING_POOL, str(seen)
    order = funding_db.run(lambda s: [str(f.enrolment_id) for f in s.query(
        funding_domain.Funding).order_by(funding_domain.Funding.sequence)])
    assert order == [e["payload"]["enrolment_id"] for e in created]


def test_the_planner_knows_the_eligible_bodies_once_they_are_announced(
        enrolment_service, enrolment_db, funding_db, world):
    """The reserve's count joins fundings to eligible bodies. Without statistics the planner
    takes the bodies for a handful of rows and scans all of them per guaranteed seat (100 ms
    a decision at 1,136 bodies), until autovacuum gets round to it: the announcement that
    loads them analyzes them."""
    from sqlalchemy import text

    published = [e for e in outbox_events(enrolment_db)
                 if e["event_type"] == "programme_published"][0]
    funding = worker_factory(FundingService, db=BoundDatabase(funding_db, None),
                             group=GroupCommit())
    funding.on_programme_published(published)
    announced = len(published["payload"]["eligible_bodies"])
    assert announced > 1000  # the whole register of Baden-Württemberg
    rows = funding_db.run(lambda s: s.scalar(text(
        "SELECT reltuples FROM pg_class WHERE relname = 'eligible_bodies'")))
    assert rows == announced
