"""Funding when the register changes after the start, and when a policy comes late: the
invariants of DESIGN.md hold on every path, and a budget that no longer covers every
guarantee is a clear error that changes nothing."""
import uuid

import pytest
from sqlalchemy import select

from services.common.db import DatabaseHandle
from services.common.errors import RuleViolation
from services.funding import domain
from services.funding.models import Base, Funding, FundingProgramme, InboxRecord, OutboxMessage
from tests.funding_support import bodies, confirmed, invariants, policy, publish

FEE = 10_000


@pytest.fixture
def handle():
    handle = DatabaseHandle("sqlite://", "funding", OutboxMessage, InboxRecord)
    Base.metadata.create_all(handle.engine)
    yield handle
    handle.dispose()


def state(handle, enrolment_id):
    return handle.run(lambda s: s.get(Funding, enrolment_id).state)


def test_a_body_that_becomes_eligible_takes_its_guarantee_from_the_pool_or_the_wait(handle):
    programme_id = uuid.uuid4()
    first, newcomer = bodies(2)
    handle.run(lambda s: publish(s, programme_id, [first]))
    # the reserve for `first` and one pool seat: the newcomer's first enrolment gets the pool
    # seat, its second waits
    handle.run(domain.set_policy, programme_id, "BW-DL", policy(2 * FEE, FEE))
    pool = confirmed(programme_id, newcomer)
    waiting = confirmed(programme_id, newcomer)
    handle.run(domain.enrolment_confirmed, pool, "k1")
    handle.run(domain.enrolment_confirmed, waiting, "k2")
    assert (state(handle, pool["enrolment_id"]), state(handle, waiting["enrolment_id"])) == (
        "pool", "waiting")

    handle.run(lambda s: publish(s, programme_id, [first, newcomer], revision=2))
    # its first enrolment converts to the guarantee (the pool seat goes back to the pool, and
    # is now held as `first`'s reserve); the second still waits
    assert state(handle, pool["enrolment_id"]) == "guaranteed"
    assert state(handle, waiting["enrolment_id"]) == "waiting"
    handle.run(invariants, programme_id, [first, newcomer], 1, 2 * FEE)
    emitted = handle.run(lambda s: [m.event_type for m in s.scalars(select(OutboxMessage))])
    assert "funding_converted" in emitted


def test_more_eligible_bodies_than_the_budget_covers_is_refused_and_changes_nothing(handle):
    programme_id = uuid.uuid4()
    handle.run(lambda s: publish(s, programme_id, bodies(2)))
    handle.run(domain.set_policy, programme_id, "BW-DL", policy(2 * FEE, FEE))
    assert handle.run(domain.shortfall_for, "BW-DL", bodies(3)) == FEE
    with pytest.raises(RuleViolation) as refused:
        handle.run(lambda s: publish(s, programme_id, bodies(3), revision=2))
    assert "budget_cents" in refused.value.fields
    programme = handle.run(lambda s: s.get(FundingProgramme, programme_id))
    assert (programme.eligible_count, programme.revision) == (2, 1)
    # With the budget raised, the same announcement goes through.
    handle.run(domain.change_budget, "BW-DL", 3 * FEE, "Nachtrag")
    handle.run(lambda s: publish(s, programme_id, bodies(3), revision=2))
    handle.run(invariants, programme_id, bodies(3), 1, 3 * FEE)


def test_a_body_merged_away_no_longer_holds_reserve_and_its_seat_money_funds_the_wait(handle):
    programme_id = uuid.uuid4()
    a, b, merged = bodies(3)
    handle.run(lambda s: publish(s, programme_id, [a, b, merged]))
    handle.run(domain.set_policy, programme_id, "BW-DL", policy(3 * FEE, FEE))  # no pool
    second = confirmed(programme_id, a)
    handle.run(domain.enrolment_confirmed, confirmed(programme_id, a), "k1")
    handle.run(domain.enrolment_confirmed, second, "k2")
    assert state(handle, second["enrolment_id"]) == "waiting"
    handle.run(lambda s: publish(s, programme_id, [a, b], revision=2))
    assert state(handle, second["enrolment_id"]) == "pool"
    assert handle.run(domain.budget_state, "BW-DL")["eligible_bodies"] == 2
    handle.run(invariants, programme_id, [a, b], 1, 3 * FEE)


def test_a_policy_set_before_the_programme_is_published_is_checked_when_it_is(handle):
    programme_id = uuid.uuid4()
    handle.run(domain.set_policy, programme_id, "BW-DL", policy(2 * FEE, FEE))  # unchecked yet
    with pytest.raises(RuleViolation):
        handle.run(lambda s: publish(s, programme_id, bodies(3)))
    handle.run(lambda s: publish(s, programme_id, bodies(2)))
    assert handle.run(domain.budget_state, "BW-DL")["pool_left_cents"] == 0


def test_a_budget_change_without_a_policy_is_a_clear_error(handle):
    programme_id = uuid.uuid4()
    handle.run(lambda s: publish(s, programme_id, bodies(2)))
    with pytest.raises(RuleViolation) as refused:
        handle.run(domain.change_budget, "BW-DL", 5 * FEE, "Nachtrag")
    assert "no funding policy" in refused.value.message
    handle.run(domain.set_policy, programme_id, "BW-DL", policy(2 * FEE, FEE))
    assert handle.run(domain.change_budget, "BW-DL", 5 * FEE, "Nachtrag")["budget_cents"] \
        == 5 * FEE


def test_two_waiting_enrolments_of_a_new_body_both_take_its_two_guarantees(handle):
    """A merger: b leaves, c (with two enrolments waiting, the pool being empty) comes in."""
    programme_id = uuid.uuid4()
    a, b, c = bodies(3)
    handle.run(lambda s: publish(s, programme_id, [a, b]))
    handle.run(domain.set_policy, programme_id, "BW-DL", policy(4 * FEE, FEE, 2))  # no pool
    waiting = [confirmed(programme_id, c) for _ in range(2)]
    for n, payload in enumerate(waiting):
        handle.run(domain.enrolment_confirmed, payload, f"k{n}")
    assert [state(handle, p["enrolment_id"]) for p in waiting] == ["waiting", "waiting"]
    handle.run(lambda s: publish(s, programme_id, [a, c], revision=2))
    assert [state(handle, p["enrolment_id"]) for p in waiting] == ["guaranteed", "guaranteed"]
    handle.run(invariants, programme_id, [a, c], 2, 4 * FEE)


def test_a_body_that_left_the_register_passes_no_guarantee_on(handle):
    programme_id = uuid.uuid4()
    stays, leaves = bodies(2)
    handle.run(lambda s: publish(s, programme_id, [stays, leaves]))
    handle.run(domain.set_policy, programme_id, "BW-DL", policy(2 * FEE, FEE))  # no pool
    held, second = confirmed(programme_id, leaves), confirmed(programme_id, leaves)
    handle.run(domain.enrolment_confirmed, held, "k1")
    handle.run(domain.enrolment_confirmed, second, "k2")
    handle.run(lambda s: publish(s, programme_id, [stays], revision=2))
    from tests.funding_support import cancelled
    handle.run(domain.enrolment_cancelled,
               cancelled(programme_id, leaves, held["enrolment_id"]), "k3")
    # Its freed money is pool money now, which funds whoever waits longest (here: its own
    # second enrolment), but as a pool seat, not as a guarantee it no longer has.
    assert state(handle, second["enrolment_id"]) == "pool"
    handle.run(invariants, programme_id, [stays], 1, 2 * FEE)


def test_the_publish_check_counts_pool_seats_that_convert_as_held(handle):
    programme_id = uuid.uuid4()
    first, newcomer = bodies(2)
    handle.run(lambda s: publish(s, programme_id, [first]))
    handle.run(domain.set_policy, programme_id, "BW-DL", policy(2 * FEE, FEE))
    handle.run(domain.enrolment_confirmed, confirmed(programme_id, newcomer), "k1")  # pool
    # Making the newcomer eligible converts its pool seat: no new money is needed.
    assert handle.run(domain.shortfall_for, "BW-DL", [first, newcomer]) == 0
    handle.run(lambda s: publish(s, programme_id, [first, newcomer], revision=2))
