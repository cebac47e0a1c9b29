"""The funding service on PostgreSQL and RabbitMQ: two instances, concurrent and duplicated
events, the real register's Baden-Württemberg figures, and the read model in enrolment."""
import random
import uuid
from datetime import date

import eventlet
from sqlalchemy import func, select

from services.common import topology
from services.common.events import build_event
from services.common.messaging import list_parked
from services.enrolment import domain as enrolment_domain
from services.enrolment.register import import_register
from services.enrolment.service import EnrolmentService
from services.funding import domain
from services.funding.models import Funding, InboxRecord
from services.funding.models import OutboxMessage as FundingOutbox
from services.funding.service import FundingService
from tests.funding_support import bodies, cancelled, invariants, policy
from tests.integration.helpers import (
    producer_dispatcher,
    SignedRpc,
    PROGRAMME,
    bw_records,
    course_data,
    gemeinden,
    outbox_events,
    participant,
    wait_for,
)

FEE = 50_000


def created_event(programme_id, ags, enrolment_id, n):
    return build_event("enrolment", "enrolment_created", {
        "enrolment_id": enrolment_id, "programme_id": programme_id, "course_id": uuid.uuid4(),
        "ags": ags, "status": "confirmed", "waitlist_position": None,
        "enrolled_at": domain.now(), "participant": participant(n), "sequence": 1})


def cancelled_event(programme_id, ags, enrolment_id, n):
    payload = cancelled(programme_id, ags, enrolment_id)
    payload["participant"] = participant(n)
    payload["sequence"] = 2
    return build_event("enrolment", "enrolment_cancelled", payload)


def handled(funding_db):
    return funding_db.run(lambda s: s.scalar(select(func.count()).select_from(InboxRecord)))


def test_two_instances_keep_every_invariant_under_concurrency_and_duplicates(
        container_factory, service_config, funding_db):
    instances = [container_factory(FundingService, service_config) for _ in range(2)]
    for instance in instances:
        instance.start()
    programme_id, eligible = uuid.uuid4(), bodies(60)
    budget = (60 + 40) * FEE  # every body's guarantee plus 40 pool seats
    funding_db.run(domain.set_policy, programme_id, "BW-DL", policy(budget, FEE))
    dispatch = producer_dispatcher(service_config)
    dispatch("enrolment", "programme_published", build_event("enrolment", "programme_published", {
        "programme_id": programme_id, "code": "BW-DL", "name": "n", "land": "08",
        "role_name": "r", "revision": 1,
        "eligible_bodies": [{"ags": a, "kind": "gemeinde"} for a in eligible]}))
    wait_for(lambda: handled(funding_db) == 1, message="programme published")

    rng = random.Random(20261122)
    enrolments = [(uuid.uuid4(), eligible[n % 60]) for n in range(200)]
    created = [created_event(programme_id, ags, eid, n) for n, (eid, ags) in enumerate(enrolments)]
    to_cancel = rng.sample(range(200), 40)
    cancellations = [cancelled_event(programme_id, enrolments[i][1], enrolments[i][0], i)
                     for i in to_cancel]
    deliveries = [("enrolment_created", e) for e in created]
    deliveries += [("enrolment_created", e) for e in rng.sample(created, 40)]  # duplicates
    deliveries += [("enrolment_cancelled", e) for e in cancellations]
    deliveries += [("enrolment_cancelled", e) for e in rng.sample(cancellations, 10)]
    rng.shuffle(deliveries)

    pool = eventlet.GreenPool(20)
    for event_type, envelope in deliveries:
        pool.spawn_n(dispatch, "enrolment", event_type, envelope)
    pool.waitall()
    wait_for(lambda: handled(funding_db) == 1 + 200 + 40, timeout=120,
             message="every distinct event handled once")

    funding_db.run(invariants, programme_id, eligible, 1, budget)
    states = dict(funding_db.run(lambda s: s.execute(
        select(Funding.state, func.count()).group_by(Funding.state)).all()))
    assert states["released"] == 40
    # 160 active enrolments from 60 bodies for 100 funded seats: all money granted, 60 wait.
    assert states["guaranteed"] + states["pool"] == 100
    assert states["waiting"] == 60
    state = funding_db.run(domain.budget_state, "BW-DL")
    assert state["granted_guaranteed_cents"] + state["granted_pool_cents"] == budget
    queues = [s.queue_name for s in topology.subscriptions([FundingService])]
    assert list_parked(service_config["AMQP_URI"], queues) == []


def test_baden_wuerttemberg_figures_from_the_real_register(
        container_factory, service_config, enrolment_db, funding_db, register_file):
    for service in (EnrolmentService, FundingService):
        container_factory(service, service_config).start()
    enrolment_db.run(import_register, bw_records(register_file))
    programme = enrolment_db.run(enrolment_domain.create_programme, dict(PROGRAMME))
    funding_db.run(domain.set_policy, programme.id, "BW-DL",
                   policy(80_000_000, FEE, 1, date(2027, 6, 30)))
    with SignedRpc("funding", service_config, operator=True) as funding:
        state = wait_for(lambda: _state_when_published(funding), message="programme in funding")
    assert state["eligible_bodies"] == 1136
    assert state["reserved_cents"] == 56_800_000
    assert state["pool_seats_left"] == 464
    assert state["fundable_seats_total"] == 1600


def _state_when_published(funding):
    try:
        return funding.budget_state("BW-DL")
    except domain.NotReady:
        return None


def test_enrolment_learns_its_funding_from_the_funding_service(
        container_factory, service_config, enrolment_db, funding_db, register_file):
    for service in (EnrolmentService, FundingService):
        container_factory(service, service_config).start()
    enrolment_db.run(import_register, bw_records(register_file))

    def setup(session):
        programme = enrolment_domain.create_programme(session, dict(PROGRAMME))
        provider, _ = enrolment_domain.create_provider(session, "VWA")
        course = enrolment_domain.create_course(session, provider, course_data(capacity=5))
        return programme.id, str(course.id)
    programme_id, course = enrolment_db.run(setup)
    funding_db.run(domain.set_policy, programme_id, "BW-DL",
                   policy(1136 * FEE, FEE, 1, date(2027, 6, 30)))  # no pool at all
    with SignedRpc("funding", service_config, operator=True) as funding:
        wait_for(lambda: _state_when_published(funding), message="programme in funding")
    [ags] = gemeinden(register_file, 1)
    with SignedRpc("enrolment", service_config) as enrolment:
        first = enrolment.enrol(ags, {"course_id": course, "participant": participant(1)})
        second = enrolment.enrol(ags, {"course_id": course, "participant": participant(2)})
        funding_of = lambda e: enrolment.get_enrolment(ags, e["id"])["funding"]  # noqa: E731
        wait_for(lambda: funding_of(first) == {"status": "granted", "kind": "guaranteed"}
                 and funding_of(second)["status"] == "waiting", message="funding decided")
        enrolment.cancel_enrolment(ags, first["id"])
        # Funding sends both decisions at once; enrolment may apply either first.
        wait_for(lambda: funding_of(second) == {"status": "granted", "kind": "guaranteed"}
                 and funding_of(first)["status"] == "released", message="guarantee passed on")
        overview = enrolment.municipality(ags)
    assert overview["programmes"][0]["guaranteed_seat_used"] is True
    # The first call id travels with the events: funding's decision shares the enrolment's.
    created = {e["payload"]["enrolment_id"]: e["correlation_id"]
               for e in outbox_events(enrolment_db, "enrolment_created")}
    granted = [e for e in funding_db.run(lambda s: [m.envelope for m in s.query(FundingOutbox)])
               if e["event_type"] == "funding_granted"
               and e["payload"]["enrolment_id"] == first["id"]]
    assert created[first["id"]] and granted[0]["correlation_id"] == created[first["id"]]


def test_a_cancellation_waiting_for_the_lock_sees_what_the_one_before_it_changed(funding_db):
    """Two cancellations in one body: the first passes the guarantee on to the second
    enrolment, whose own cancellation is already waiting for the programme lock. The waiting
    one must act on the converted (guaranteed) seat, not on what it would have read before."""
    from tests.funding_support import confirmed, publish

    programme_id, eligible = uuid.uuid4(), bodies(3)
    ags = eligible[0]
    funding_db.run(publish, programme_id, eligible)
    budget = (len(eligible) + 3) * FEE
    funding_db.run(domain.set_policy, programme_id, "BW-DL", policy(budget, FEE))
    first, second, third = (confirmed(programme_id, ags) for _ in range(3))
    for n, payload in enumerate((first, second, third)):
        assert funding_db.run(domain.enrolment_confirmed, payload, f"c{n}") == \
            ("guaranteed" if n == 0 else "pool")

    first_holds_lock, commit_first = eventlet.event.Event(), eventlet.event.Event()

    def cancel_first():
        with funding_db.transaction() as session:
            domain.enrolment_cancelled(
                session, cancelled(programme_id, ags, first["enrolment_id"]), "x1")
            first_holds_lock.send()
            commit_first.wait()

    def cancel_second():
        return funding_db.run(domain.enrolment_cancelled,
                              cancelled(programme_id, ags, second["enrolment_id"]), "x2")

    one = eventlet.spawn(cancel_first)
    first_holds_lock.wait()
    two = eventlet.spawn(cancel_second)
    eventlet.sleep(0.5)  # the second is now blocked on the programme row
    commit_first.send()
    one.wait()
    assert two.wait() == "guaranteed"  # it held the guarantee the first had passed on
    states = dict(funding_db.run(lambda s: s.execute(select(Funding.enrolment_id, Funding.state)
                                                     .where(Funding.ags == ags)).all()))
    assert states[third["enrolment_id"]] == "guaranteed"  # and passes it on again
    funding_db.run(invariants, programme_id, eligible, 1, budget)
