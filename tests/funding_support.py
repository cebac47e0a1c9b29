"""Building funding scenarios: a programme, its eligible bodies, and enrolment events."""
import uuid
from datetime import date, datetime, timezone

from services.funding import domain


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
