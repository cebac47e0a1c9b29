"""Attendance counts only on or after the module's date, a calendar day in Europe/Berlin
(issue 15: a course dated December and January was completed on 23 November)."""
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from services.common.clock import calendar_today
from services.common.db import DatabaseHandle
from services.common.errors import RuleViolation
from services.common.migrations import upgrade
from services.enrolment import domain
from services.enrolment.models import Attendance, Body, Enrolment, InboxRecord, OutboxMessage

# Five modules in December and January, as in the issue.
MODULE_DATES = [date(2026, 12, 1), date(2026, 12, 8), date(2026, 12, 15), date(2027, 1, 12),
                date(2027, 1, 19)]
ENROLLED_ON = date(2026, 11, 23)


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'enrolment.sqlite'}"
    upgrade("enrolment", url)
    handle = DatabaseHandle(url, "enrolment", OutboxMessage, InboxRecord)
    handle.run(lambda s: s.add(Body(ags="08226098", name="Wiesloch, Stadt", kind="gemeinde",
                                    designation="Große Kreisstadt", kreisfrei=False,
                                    land="08", kreis_ags="08226000")))
    yield handle
    handle.dispose()


def course_with_participant(db, dates=MODULE_DATES):
    def run(session):
        domain.create_programme(session, {
            "code": "BW-DL", "name": "Digitallotsen", "land": "08",
            "role_name": "Digitallotse", "eligible_kinds": ["gemeinde"],
            "enrolment_opens_on": date(2026, 1, 1), "enrolment_closes_on": date(2099, 1, 1)})
        provider, _ = domain.create_provider(session, "VWA")
        course = domain.create_course(session, provider, {
            "programme_code": "BW-DL", "title": "Basisseminar", "location": "Wiesloch",
            "capacity": 22, "open": True,
            "modules": [{"number": n, "title": f"Modul {n}", "date": d}
                        for n, d in enumerate(dates, start=1)]})
        enrolment = domain.enrol(session, "08226098", {
            "course_id": course.id, "idempotency_key": None, "participant": {
                "given_name": "Anna", "family_name": "Groß", "email": "anna@example.org",
                "department": None}}, today=ENROLLED_ON)
        return course.id, uuid.UUID(enrolment["id"])
    return db.run(run)


def attend(db, course_id, module, enrolment_id, today=None):
    def run(session):
        provider = session.query(domain.Provider).one()
        command = {"course_id": course_id, "module_number": module,
                   "enrolment_ids": [enrolment_id]}
        if today is None:  # the service's own clock
            return domain.record_attendance(session, provider, command)
        return domain.record_attendance(session, provider, command, today=today)
    return db.run(run)


def recorded(db):
    return db.run(lambda s: sorted(a.module_number for a in s.query(Attendance)))


def completions(db):
    return db.run(lambda s: [r.envelope for r in s.query(OutboxMessage)
                             if r.event_type == "enrolment_completed"])


def test_modules_that_have_not_taken_place_are_refused_and_nothing_is_recorded(db, monkeypatch):
    course_id, enrolment_id = course_with_participant(db)
    # The service's clock says 23 November, 10:00 in Berlin.
    monkeypatch.setattr(domain, "now", lambda: datetime(2026, 11, 23, 9, tzinfo=timezone.utc))
    for module in range(1, 6):
        with pytest.raises(RuleViolation) as refused:
            attend(db, course_id, module, enrolment_id)
        assert list(refused.value.fields) == ["module_number"]
        assert f"module {module}" in refused.value.fields["module_number"][0]
        assert MODULE_DATES[module - 1].isoformat() in refused.value.message
    assert recorded(db) == []
    assert db.run(lambda s: s.get(Enrolment, enrolment_id).status) == "confirmed"
    assert completions(db) == []


def test_the_day_before_is_refused_the_day_itself_and_later_count(db):
    course_id, enrolment_id = course_with_participant(db)
    with pytest.raises(RuleViolation):
        attend(db, course_id, 1, enrolment_id, today=date(2026, 11, 30))
    attend(db, course_id, 1, enrolment_id, today=date(2026, 12, 1))
    attend(db, course_id, 2, enrolment_id, today=date(2026, 12, 20))  # after the fact
    with pytest.raises(RuleViolation):  # module 4 is in January
        attend(db, course_id, 4, enrolment_id, today=date(2026, 12, 20))
    assert recorded(db) == [1, 2]


def test_completion_only_once_the_last_module_has_taken_place(db, monkeypatch):
    course_id, enrolment_id = course_with_participant(db)

    def clock(day):  # noon in Berlin (11:00 UTC in winter) on that day
        moment = datetime(day.year, day.month, day.day, 11, tzinfo=timezone.utc)
        monkeypatch.setattr(domain, "now", lambda: moment)

    clock(date(2027, 1, 12))
    for module in range(1, 5):
        attend(db, course_id, module, enrolment_id)
    clock(date(2027, 1, 18))
    with pytest.raises(RuleViolation):
        attend(db, course_id, 5, enrolment_id)
    assert completions(db) == []
    clock(date(2027, 1, 19))
    [result] = attend(db, course_id, 5, enrolment_id)
    assert result["status"] == "completed"
    [completed] = completions(db)
    assert completed["payload"]["completed_on"] == "2027-01-19"
    assert [m["date"] for m in completed["payload"]["modules"]] == [
        d.isoformat() for d in MODULE_DATES]


@pytest.mark.parametrize("utc_moment, module_day, allowed", [
    # 00:30 on 1 December in Berlin, still 30 November in UTC: the module's day has begun.
    (datetime(2026, 11, 30, 23, 30, tzinfo=timezone.utc), date(2026, 12, 1), True),
    # 23:30 on 30 November in Berlin (22:30 UTC): not yet.
    (datetime(2026, 11, 30, 22, 30, tzinfo=timezone.utc), date(2026, 12, 1), False),
    # Summer time (UTC+2): 00:30 on 1 July in Berlin is 22:30 UTC on 30 June.
    (datetime(2027, 6, 30, 22, 30, tzinfo=timezone.utc), date(2027, 7, 1), True),
    (datetime(2027, 6, 30, 21, 30, tzinfo=timezone.utc), date(2027, 7, 1), False),
])
def test_the_default_clock_is_the_date_in_berlin(db, monkeypatch, utc_moment, module_day,
                                                 allowed):
    course_id, enrolment_id = course_with_participant(db, dates=[module_day])
    monkeypatch.setattr(domain, "now", lambda: utc_moment)
    if allowed:
        [result] = attend(db, course_id, 1, enrolment_id)
        assert result["status"] == "completed"
        # The completion date is the same Berlin day, never the day before the module.
        [completed] = completions(db)
        assert completed["payload"]["completed_on"] == module_day.isoformat()
    else:
        with pytest.raises(RuleViolation):
            attend(db, course_id, 1, enrolment_id)
        assert recorded(db) == []


def test_a_course_that_took_place_can_be_recorded_after_the_fact(db):
    """A provider enters the attendance lists of a finished course: that is normal."""
    past = [calendar_today() - timedelta(days=40 - 7 * n) for n in range(5)]
    course_id, enrolment_id = course_with_participant(db, dates=past)
    for module in range(1, 6):
        attend(db, course_id, module, enrolment_id)
    assert db.run(lambda s: s.get(Enrolment, enrolment_id).status) == "completed"
