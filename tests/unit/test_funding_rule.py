"""The funding rule on the embedded database (SQLite), decision by decision."""
import uuid
from datetime import date

import pytest

from services.common.db import DatabaseHandle
from services.common.errors import RuleViolation
from services.common.migrations import upgrade
from services.funding import domain
from services.funding.models import Funding, InboxRecord, OutboxMessage
from tests.funding_support import bodies, cancelled, confirmed, policy, publish

FEE = 50_000


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'funding.sqlite'}"
    upgrade("funding", url)
    handle = DatabaseHandle(url, "funding", OutboxMessage, InboxRecord)
    yield handle
    handle.dispose()


def programme(db, eligible_count, budget, per_body=1, reserve_until=date(2099, 1, 1)):
    programme_id = uuid.uuid4()
    eligible = bodies(eligible_count)
    db.run(lambda s: publish(s, programme_id, eligible))
    db.run(domain.set_policy, programme_id, "BW-DL",
           policy(budget, FEE, per_body, reserve_until))
    return programme_id, eligible


def confirm(db, programme_id, ags):
    payload = confirmed(programme_id, ags)
    state = db.run(domain.enrolment_confirmed, payload, str(uuid.uuid4()))
    return payload["enrolment_id"], state


def cancel(db, programme_id, ags, enrolment_id):
    return db.run(domain.enrolment_cancelled, cancelled(programme_id, ags, enrolment_id),
                  str(uuid.uuid4()))


def state_of(db, enrolment_id):
    return db.run(lambda s: s.get(Funding, enrolment_id).state)


def events(db, event_type):
    return db.run(lambda s: [m.envelope["payload"] for m in s.query(OutboxMessage)
                             .filter(OutboxMessage.event_type == event_type)
                             .order_by(OutboxMessage.position)])


def test_baden_wuerttemberg_worked_example(db):
    programme(db, 1136, 80_000_000)
    state = db.run(domain.budget_state, "BW-DL")
    assert state["reserved_cents"] == 56_800_000
    assert state["pool_left_cents"] == 23_200_000
    assert state["pool_seats_left"] == 464
    assert state["fundable_seats_total"] == 1600
    assert state["seats_still_fundable"] == 1600


def test_budget_must_cover_every_guaranteed_seat(db):
    programme_id = uuid.uuid4()
    db.run(lambda s: publish(s, programme_id, bodies(10)))
    with pytest.raises(RuleViolation) as short:
        db.run(domain.set_policy, programme_id, "BW-DL", policy(9 * FEE))
    assert "budget_cents" in short.value.fields


def test_first_guaranteed_then_pool_then_waiting(db):
    programme_id, (a, b, c) = programme(db, 3, 4 * FEE)  # 3 reserved, 1 pool seat
    first = confirm(db, programme_id, a)
    second = confirm(db, programme_id, a)
    third = confirm(db, programme_id, a)
    assert [first[1], second[1], third[1]] == ["guaranteed", "pool", "waiting"]
    # B's guarantee holds although the pool is spent.
    assert confirm(db, programme_id, b)[1] == "guaranteed"
    state = db.run(domain.budget_state, "BW-DL")
    assert (state["pool_left_cents"], state["reserved_cents"], state["waiting"]) == (0, FEE, 1)
    assert db.run(domain.check, "BW-DL")["ok"]


def test_released_guarantee_converts_the_pool_seat_and_frees_pool_money(db):
    programme_id, (a, b) = programme(db, 2, 3 * FEE)  # 2 reserved, 1 pool seat
    a1, _ = confirm(db, programme_id, a)
    a2, _ = confirm(db, programme_id, a)
    a3, _ = confirm(db, programme_id, a)
    assert [state_of(db, e) for e in (a1, a2, a3)] == ["guaranteed", "pool", "waiting"]
    cancel(db, programme_id, a, a1)
    # a2 takes the guarantee (its pool money returns), which then funds a3 from the pool.
    assert [state_of(db, e) for e in (a1, a2, a3)] == ["released", "guaranteed", "pool"]
    assert [e["enrolment_id"] for e in events(db, "funding_converted")] == [str(a2)]
    assert db.run(domain.check, "BW-DL")["ok"]


def test_released_guarantee_goes_to_a_waiting_enrolment_of_the_same_body(db):
    programme_id, (a, b) = programme(db, 2, 2 * FEE)  # no pool at all
    a1, _ = confirm(db, programme_id, a)
    a2, s2 = confirm(db, programme_id, a)
    assert s2 == "waiting"
    cancel(db, programme_id, a, a1)
    assert state_of(db, a2) == "guaranteed"
    granted = events(db, "funding_granted")
    assert granted[-1]["enrolment_id"] == str(a2) and granted[-1]["kind"] == "guaranteed"


def test_cancelled_pool_seat_funds_the_longest_waiting_enrolment(db):
    programme_id, (a, b) = programme(db, 2, 3 * FEE)
    confirm(db, programme_id, a)
    b1, _ = confirm(db, programme_id, b)
    a2, _ = confirm(db, programme_id, a)      # pool
    b2, _ = confirm(db, programme_id, b)      # waits first
    a3, _ = confirm(db, programme_id, a)      # waits second
    cancel(db, programme_id, a, a2)
    assert (state_of(db, b2), state_of(db, a3)) == ("pool", "waiting")


def test_cancellation_arriving_before_its_confirmation_is_never_funded(db):
    programme_id, (a, _) = programme(db, 2, 4 * FEE)
    payload = confirmed(programme_id, a)
    cancel(db, programme_id, a, payload["enrolment_id"])
    assert db.run(domain.enrolment_confirmed, payload, "late") == "released"
    assert db.run(domain.budget_state, "BW-DL")["granted_guaranteed_cents"] == 0


def test_confirmation_before_the_programme_or_policy_is_not_ready(db):
    programme_id = uuid.uuid4()
    with pytest.raises(domain.NotReady):
        db.run(domain.enrolment_confirmed, confirmed(programme_id, "08000001"), "k")
    db.run(lambda s: publish(s, programme_id, bodies(1)))
    with pytest.raises(domain.NotReady):
        db.run(domain.enrolment_confirmed, confirmed(programme_id, "08000001"), "k")


def test_reserve_deadline_releases_unused_reserve_and_funds_waiting(db):
    programme_id, (a, b, c) = programme(db, 3, 3 * FEE, reserve_until=date(2027, 6, 30))
    confirm(db, programme_id, a)
    a2, s2 = confirm(db, programme_id, a)
    assert s2 == "waiting"
    before = db.run(domain.apply_reserve_deadline, "BW-DL", date(2027, 6, 30))
    assert before["released"] is False and state_of(db, a2) == "waiting"
    after = db.run(domain.apply_reserve_deadline, "BW-DL", date(2027, 7, 1))
    assert after == {"programme_code": "BW-DL", "released": True, "released_cents": 2 * FEE,
                     "funded": 1}
    assert state_of(db, a2) == "pool"
    again = db.run(domain.apply_reserve_deadline, "BW-DL", date(2027, 7, 2))
    assert again["released"] is False
    assert db.run(domain.check, "BW-DL")["ok"]


def test_budget_change_is_a_ledger_entry_with_its_reason(db):
    programme_id, (a,) = programme(db, 1, 2 * FEE)
    confirm(db, programme_id, a)
    a2, s2 = confirm(db, programme_id, a)
    confirm(db, programme_id, a)
    db.run(domain.change_budget, "BW-DL", 3 * FEE, "Nachtragshaushalt 2027")
    rows = db.run(domain.ledger_rows, "BW-DL")
    assert [(r["kind"], r["amount_cents"]) for r in rows if r["pot"] == "budget"] == [
        ("budget_change", 2 * FEE), ("budget_change", FEE)]
    assert rows[-1]["kind"] == "grant" and rows[-1]["pot"] == "pool"  # the waiting one funded
    assert any(r["reason"] == "Nachtragshaushalt 2027" for r in rows)
    with pytest.raises(RuleViolation):
        db.run(domain.change_budget, "BW-DL", FEE, "zu wenig")
    check = db.run(domain.check, "BW-DL")
    assert check["ok"] and check["balance_cents"] == 0


def test_check_finds_a_tampered_total(db):
    programme_id, (a,) = programme(db, 1, 2 * FEE)
    confirm(db, programme_id, a)
    from services.funding.models import FundingProgramme
    db.run(lambda s: setattr(s.get(FundingProgramme, programme_id), "granted_pool_cents", 1))
    result = db.run(domain.check, "BW-DL")
    assert not result["ok"] and any("pool" in p for p in result["problems"])


def test_a_programme_announced_as_unfunded_decides_nothing_until_a_policy_is_set(db):
    programme_id, eligible = uuid.uuid4(), bodies(3)
    db.run(lambda s: domain.programme_published(s, {
        "programme_id": programme_id, "code": "SN-DN", "land": "14", "name": "Navigatoren",
        "role_name": "r", "revision": 1, "funded": False,
        "eligible_bodies": [{"ags": a, "kind": "gemeinde"} for a in eligible]}))
    first = confirmed(programme_id, eligible[0])
    assert db.run(domain.enrolment_confirmed, first, str(uuid.uuid4())) == "unfunded"
    assert db.run(domain.enrolment_cancelled, cancelled(programme_id, eligible[0],
                                                        first["enrolment_id"]),
                  str(uuid.uuid4())) is None
    assert db.run(lambda s: s.query(Funding).count()) == 0
    assert events(db, "funding_granted") == [] and events(db, "funding_waiting") == []
    # A policy set later funds from then on.
    db.run(domain.set_policy, programme_id, "SN-DN", policy(3 * FEE, FEE, 1))
    later = confirmed(programme_id, eligible[1])
    assert db.run(domain.enrolment_confirmed, later, str(uuid.uuid4())) == "guaranteed"
