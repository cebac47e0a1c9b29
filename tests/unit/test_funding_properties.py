"""Random sequences of confirmations, cancellations, duplicates, register revisions and the
deadline: the funding invariants of DESIGN.md hold after every step."""
import uuid
from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlalchemy import select

from services.common.db import DatabaseHandle
from services.common.errors import RuleViolation
from services.funding import domain
from services.funding.models import Base, EligibleBody, InboxRecord, OutboxMessage
from tests.funding_support import (
    bodies,
    cancelled,
    confirmed,
    invariants,
    policy,
    publish,
)

FEE = 10_000
BODIES = bodies(4)
UNIVERSE = bodies(6)  # register revisions add and remove bodies among these

steps = st.lists(st.one_of(
    st.tuples(st.just("confirm"), st.integers(0, len(UNIVERSE) - 1)),
    # a new register: the bodies whose bit is set are eligible (at least one)
    st.tuples(st.just("revise"), st.integers(1, 2 ** len(UNIVERSE) - 1)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("again"), st.integers(0, 50)),
    st.tuples(st.just("deadline"), st.just(0)),
), min_size=1, max_size=40)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, per_body=st.integers(1, 2), extra_seats=st.integers(0, 3))
def test_invariants_hold_for_any_sequence(steps, per_body, extra_seats):
    handle = DatabaseHandle("sqlite://", "funding", OutboxMessage, InboxRecord)
    Base.metadata.create_all(handle.engine)
    try:
        programme_id = uuid.uuid4()
        budget = (len(BODIES) * per_body + extra_seats) * FEE
        handle.run(lambda s: publish(s, programme_id, BODIES))
        handle.run(domain.set_policy, programme_id, "BW-DL",
                   policy(budget, FEE, per_body, date(2027, 6, 30)))
        active, delivered, revision = [], [], 1
        for action, n in steps:
            if action == "confirm":
                payload = confirmed(programme_id, UNIVERSE[n])
                key = str(uuid.uuid4())
                handle.run(domain.enrolment_confirmed, payload, key)
                active.append(payload)
                delivered.append((domain.enrolment_confirmed, payload, key))
            elif action == "cancel" and active:
                payload = active.pop(n % len(active))
                event = cancelled(programme_id, payload["ags"], payload["enrolment_id"])
                key = str(uuid.uuid4())
                handle.run(domain.enrolment_cancelled, event, key)
                delivered.append((domain.enrolment_cancelled, event, key))
            elif action == "again" and delivered:
                # The same event handled a second time (the inbox normally stops this earlier).
                fn, payload, key = delivered[n % len(delivered)]
                handle.run(fn, payload, key)
            elif action == "deadline":
                handle.run(domain.apply_reserve_deadline, "BW-DL", date(2027, 7, 1))
            elif action == "revise":
                revision += 1
                chosen = [ags for i, ags in enumerate(UNIVERSE) if n >> i & 1]
                try:
                    handle.run(lambda s: publish(s, programme_id, chosen, revision=revision))
                except RuleViolation:
                    pass  # the budget does not cover them: refused, nothing changed
            eligible = handle.run(lambda s: list(s.scalars(select(EligibleBody.ags).where(
                EligibleBody.programme_id == programme_id))))
            handle.run(invariants, programme_id, eligible, per_body, budget)
    finally:
        handle.dispose()


batches = st.lists(st.one_of(
    # a run of confirmations decided together (indexes into the universe; repeats are the
    # same enrolment delivered twice within the run)
    st.tuples(st.just("run"), st.lists(st.integers(0, 2 * len(UNIVERSE)), min_size=1,
                                       max_size=8)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("deadline"), st.just([])),
), min_size=1, max_size=12)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=batches, per_body=st.integers(1, 2), extra_seats=st.integers(0, 3))
def test_a_run_decided_together_decides_as_one_by_one(steps, per_body, extra_seats):
    """What ``decide_confirmations`` carries forward in memory (guarantees held, reserve,
    pool, totals, repeats) gives exactly what deciding the same events one at a time does."""
    handles = [DatabaseHandle("sqlite://", "funding", OutboxMessage, InboxRecord)
               for _ in range(2)]
    try:
        programme_id = uuid.uuid4()
        budget = (len(BODIES) * per_body + extra_seats) * FEE
        for handle in handles:
            Base.metadata.create_all(handle.engine)
            handle.run(lambda s: publish(s, programme_id, BODIES))
            handle.run(domain.set_policy, programme_id, "BW-DL",
                       policy(budget, FEE, per_body, date(2027, 6, 30)))
        together, alone = handles
        enrolments, active = {}, []
        for action, arg in steps:
            if action == "run":
                run = []
                for n in arg:  # n beyond the universe: the body's second participant
                    ags = UNIVERSE[n % len(UNIVERSE)]
                    payload = enrolments.setdefault(n, confirmed(programme_id, ags))
                    run.append((payload, f"k{payload['enrolment_id']}", None))
                    if payload not in active:
                        active.append(payload)
                outcomes = together.run(domain.decide_confirmations, run)
                assert outcomes == [alone.run(domain.enrolment_confirmed, p, k)
                                    for p, k, _ in run]
            elif action == "cancel" and active:
                payload = active.pop(arg % len(active))
                event = cancelled(programme_id, payload["ags"], payload["enrolment_id"])
                for handle in handles:
                    handle.run(domain.enrolment_cancelled, event, f"c{payload['enrolment_id']}")
            elif action == "deadline":
                for handle in handles:
                    handle.run(domain.apply_reserve_deadline, "BW-DL", date(2027, 7, 1))

        def picture(session):
            fundings = {str(f.enrolment_id): (f.state, f.amount_cents, f.sequence)
                        for f in session.query(domain.Funding)}
            # (a budget's key has a random part of its own in each database)
            ledger = sorted((e.kind, e.pot, e.amount_cents, e.idempotency_key
                             if e.kind != "budget_change" else None)
                            for e in session.query(domain.LedgerEntry))
            return fundings, ledger, domain.budget_state(session, "BW-DL")
        assert together.run(picture) == alone.run(picture)
        together.run(invariants, programme_id, BODIES, per_body, budget)
    finally:
        for handle in handles:
            handle.dispose()
