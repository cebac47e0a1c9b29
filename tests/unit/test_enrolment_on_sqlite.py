"""The enrolment rules on the embedded default (SQLite file, migrated by Alembic)."""
from datetime import date, timedelta

import pytest

from services.common.clock import calendar_today
from services.common.errors import (
    Conflict,
    DuplicateEnrolment,
    IdempotencyKeyReused,
    NotFound,
    RuleViolation,
)
from services.enrolment import domain
from services.enrolment.models import Body, InboxRecord, OutboxMessage
from tests.sqlite_support import migrated_sqlite

BODIES = [("08226098", "Wiesloch, Stadt", "gemeinde", False),
          ("08226095", "Walldorf, Stadt", "gemeinde", False),
          ("08226000", "Rhein-Neckar-Kreis", "kreis", False),
          ("08221000", "Heidelberg, Stadt", "gemeinde", True),
          ("09162000", "München, Landeshauptstadt", "gemeinde", True)]


@pytest.fixture
def db(tmp_path):
    def seed(session):
        for ags, name, kind, kreisfrei in BODIES:
            session.add(Body(ags=ags, name=name, kind=kind, designation="x", kreisfrei=kreisfrei,
                             land=ags[:2], kreis_ags=ags[:5] + "000"))
    handle = migrated_sqlite(tmp_path, "enrolment", OutboxMessage, InboxRecord, seed)
    yield handle
    handle.dispose()


def programme(**overrides):
    data = {"code": "BW-DL", "name": "Digitallotsen", "land": "08", "role_name": "Digitallotse",
            "eligible_kinds": ["gemeinde"], "enrolment_opens_on": date(2026, 1, 1),
            "enrolment_closes_on": date(2099, 1, 1)}
    data.update(overrides)
    return data


def setup_course(db, capacity=1, **programme_overrides):
    def run(session):
        domain.create_programme(session, programme(**programme_overrides))
        provider, token = domain.create_provider(session, "VWA")
        course = domain.create_course(session, provider, {
            "programme_code": "BW-DL", "title": "Basisseminar", "location": "Wiesloch",
            "capacity": capacity, "open": True,
            "modules": [{"number": 1, "title": "M1", "date": calendar_today() + timedelta(days=9)}]})
        return course.id, token
    return db.run(run)


def enrol(db, ags, course, email, key=None, today=None):
    command = {"course_id": course, "idempotency_key": key, "participant": {
        "given_name": "Anna", "family_name": "Groß", "email": email, "department": None}}
    return db.run(domain.enrol, ags, command, today=today)


def test_programme_published_with_its_eligible_bodies(db):
    setup_course(db, eligible_kinds=["gemeinde", "kreis"])
    events = db.run(lambda s: [r.envelope for r in s.query(OutboxMessage)])
    [published] = [e for e in events if e["event_type"] == "programme_published"]
    assert sorted(b["ags"] for b in published["payload"]["eligible_bodies"]) == [
        "08221000", "08226000", "08226095", "08226098"]


def test_kreisfreie_stadt_counts_as_kreis_where_only_kreise_are_eligible(db):
    course, _ = setup_course(db, eligible_kinds=["kreis"])
    assert enrol(db, "08221000", course, "a@example.org")["status"] == "confirmed"
    with pytest.raises(RuleViolation):
        enrol(db, "08226098", course, "b@example.org")


def test_seat_then_waitlist_on_sqlite(db):
    course, _ = setup_course(db, capacity=1)
    first = enrol(db, "08226098", course, "a@example.org")
    second = enrol(db, "08226095", course, "b@example.org")
    assert (first["status"], second["status"]) == ("confirmed", "waitlisted")
    assert second["waitlist_position"] == 1
    with pytest.raises(DuplicateEnrolment):
        enrol(db, "08226095", course, "A@example.org".lower())


def test_enrolment_window_and_other_land_are_refused(db):
    course, _ = setup_course(db)
    with pytest.raises(RuleViolation) as closed:
        enrol(db, "08226098", course, "a@example.org", today=date(2025, 12, 31))
    assert "window" in str(closed.value.fields)
    with pytest.raises(RuleViolation):
        enrol(db, "09162000", course, "m@example.org")


def test_idempotency_key_on_sqlite(db):
    course, _ = setup_course(db)
    first = enrol(db, "08226098", course, "a@example.org", key="k1")
    assert enrol(db, "08226098", course, "a@example.org", key="k1") == first
    with pytest.raises(IdempotencyKeyReused):
        enrol(db, "08226098", course, "other@example.org", key="k1")
    # Keys are per municipality: another body may use the same key.
    other = enrol(db, "08226095", course, "b@example.org", key="k1")
    assert other["id"] != first["id"]


def test_unknown_course_and_duplicate_programme(db):
    import uuid
    setup_course(db)
    with pytest.raises(NotFound):
        enrol(db, "08226098", uuid.uuid4(), "a@example.org")
    with pytest.raises(Conflict):
        db.run(domain.create_programme, programme())


def test_api_keys_and_provider_tokens_are_stored_hashed(db):
    account_key = db.run(lambda s: domain.register_municipality(
        s, "08226098", "Hauptamt", "HA@wiesloch.example")[1])
    body = db.run(domain.authenticate_municipality, account_key)
    assert body.ags == "08226098"
    stored = db.run(lambda s: s.execute(
        __import__("sqlalchemy").text("SELECT api_key_hash FROM municipality_accounts")).scalar())
    assert account_key not in stored and len(stored) == 64
    # A new key replaces the old one.
    db.run(lambda s: domain.register_municipality(s, "08226098", "Hauptamt", "ha@w.example"))
    from services.common.errors import AuthenticationFailed
    with pytest.raises(AuthenticationFailed):
        db.run(domain.authenticate_municipality, account_key)


def test_a_course_created_again_with_its_id_is_the_same_course_once(db):
    import uuid

    from services.enrolment.models import Course

    setup_course(db)
    course_id = uuid.uuid4()
    data = {"id": course_id, "programme_code": "BW-DL", "title": "Aufbauseminar",
            "location": "Walldorf", "capacity": 12, "open": True,
            "modules": [{"number": n, "title": f"M{n}", "date": calendar_today() + timedelta(days=n)}
                        for n in (2, 1)]}

    def create(session, data):
        provider = session.query(domain.Provider).one()
        return domain.create_course(session, provider, data).id

    assert db.run(create, data) == course_id
    assert db.run(create, dict(data)) == course_id  # a retry after a lost reply
    assert db.run(lambda s: s.query(Course).filter_by(title="Aufbauseminar").count()) == 1
    with pytest.raises(Conflict) as conflict:
        db.run(create, dict(data, capacity=13))
    assert "id" in conflict.value.fields
    assert db.run(lambda s: s.get(Course, course_id).capacity) == 12
    # Without an id every call makes a new course, as before.
    assert db.run(create, dict(data, id=None)) != course_id
