"""Building funding scenarios: a programme, its eligible bodies, and enrolment events."""
import uuid
from datetime import date, datetime, timezone

from sqlalchemy import func, select

from services.funding import domain
from services.funding.models import Funding


def bodies(count, land="08"):
    return [f"{land}{n:06d}" for n in range(1, count + 1)]


def publish(session, programme_id, eligible, code="BW-DL", revision=1):
    domain.programme_published(session, {
        "programme_id": programme_id, "code": code, "land": "08", "name": "n",
        "role_name": "r", "revision": revision,
        "eligible_bodies": [{"ags": ags, "kind": "gemeinde"} for ags in eligible]})


def policy(budget_cents, fee_cents=50_000, guaranteed_per_body=1, reserve_until=date(2099, 1, 1)):
    return {"budget_cents": budget_cents, "fee_cents": fee_cents,
            "guaranteed_per_body": guaranteed_per_body, "reserve_until": reserve_until}


def confirmed(programme_id, ags, enrolment_id=None):
    return {"enrolment_id": enrolment_id or uuid.uuid4(), "programme_id": programme_id,
            "ags": ags, "status": "confirmed", "course_id": uuid.uuid4(),
            "enrolled_at": datetime.now(timezone.utc)}


def cancelled(programme_id, ags, enrolment_id, previous="confirmed"):
    return {"enrolment_id": enrolment_id, "programme_id": programme_id, "ags": ags,
            "previous_status": previous, "cancelled_by": "municipality",
            "course_id": uuid.uuid4(), "cancelled_at": datetime.now(timezone.utc)}


def invariants(session, programme_id, eligible, per_body, budget, code="BW-DL"):
    """Every invariant of DESIGN.md's funding rule, checked from the database."""
    result = domain.check(session, code)
    assert result["ok"], result["problems"]
    programme = session.get(domain.FundingProgramme, programme_id)
    granted = programme.granted_guaranteed_cents + programme.granted_pool_cents
    assert 0 <= granted <= budget
    rows = session.execute(select(Funding.ags, Funding.state)
                           .where(Funding.programme_id == programme_id)).all()
    for ags in eligible:
        states = [state for a, state in rows if a == ags]
        held = states.count("guaranteed")
        assert held <= per_body
        active = sum(1 for s in states if s != "released")
        if not programme.reserve_released_at:
            assert held == min(active, per_body)
    funded = session.scalar(select(func.coalesce(func.sum(Funding.amount_cents), 0))
                            .where(Funding.programme_id == programme_id))
    assert funded == granted
