"""Seat, waitlist, cancellation and completion rules at the service layer on PostgreSQL."""
from datetime import timedelta

import pytest

from services.common.clock import calendar_today
from services.common.errors import RuleViolation, ValidationFailed
from services.common.schemas import load
from services.enrolment import domain
from services.enrolment.schemas import AttendanceIn
from tests.integration.helpers import gemeinden, outbox_events, participant, seed


@pytest.fixture
def world(enrolment_db, register_file):
    seeded = seed(enrolment_db, register_file, capacity=2)
    provider = seeded["providers"][0]
    return {"course": seeded["courses"][0], "token": provider["token"],
            "bodies": gemeinden(register_file, 3)}


def enrol(handle, ags, course, n):
    return handle.run(domain.enrol, ags, {"course_id": course, "participant": participant(n)})


def attendance(command):
    return load(AttendanceIn(), command)


def as_provider(handle, token, fn, *args):
    return handle.run(lambda s: fn(s, domain.authenticate_provider(s, token), *args))


def test_freed_seat_goes_first_to_bodies_without_a_confirmed_participant(world, enrolment_db):
    a, b, c = world["bodies"]
    course = world["course"]
    a1 = enrol(enrolment_db, a, course, 1)
    a2 = enrol(enrolment_db, a, course, 2)
    a3 = enrol(enrolment_db, a, course, 3)  # waitlisted first, but its body has seats
    b1 = enrol(enrolment_db, b, course, 4)
    c1 = enrol(enrolment_db, c, course, 5)
    assert [x["status"] for x in (a1, a2, a3, b1, c1)] == [
        "confirmed", "confirmed", "waitlisted", "waitlisted", "waitlisted"]
    # Positions follow the promotion order, not just arrival.
    current = {e["id"]: e["waitlist_position"]
               for e in as_provider(enrolment_db, world["token"], domain.course_enrolments, course)}
    assert [current[x["id"]] for x in (b1, c1, a3)] == [1, 2, 3]

    enrolment_db.run(lambda s: domain.cancel_enrolment(s, a1["id"], ags=a))
    assert enrolment_db.run(domain.get_enrolment, b, b1["id"])["status"] == "confirmed"
    assert enrolment_db.run(domain.get_enrolment, a, a3["id"])["status"] == "waitlisted"

    # Now A has one confirmed participant, C none: C goes before A's earlier request.
    enrolment_db.run(lambda s: domain.cancel_enrolment(s, b1["id"], ags=b))
    assert enrolment_db.run(domain.get_enrolment, c, c1["id"])["status"] == "confirmed"

    # A's last confirmed participant leaves: A3 is the only one waiting and moves up.
    enrolment_db.run(lambda s: domain.cancel_enrolment(s, a2["id"], ags=a))
    assert enrolment_db.run(domain.get_enrolment, a, a3["id"])["status"] == "confirmed"
    promoted = [e["payload"]["enrolment_id"] for e in outbox_events(enrolment_db, "enrolment_promoted")]
    assert promoted == [b1["id"], c1["id"], a3["id"]]


def test_cancelling_twice_changes_nothing_the_second_time(world, enrolment_db):
    a = world["bodies"][0]
    first = enrol(enrolment_db, a, world["course"], 1)
    enrolment_db.run(lambda s: domain.cancel_enrolment(s, first["id"], ags=a))
    again = enrolment_db.run(lambda s: domain.cancel_enrolment(s, first["id"], ags=a))
    assert again["status"] == "cancelled"
    assert len(outbox_events(enrolment_db, "enrolment_cancelled")) == 1


def test_course_cancellation_cancels_every_enrolment(world, enrolment_db):
    a, b, c = world["bodies"]
    ids = [enrol(enrolment_db, ags, world["course"], n)["id"]
           for n, ags in enumerate((a, b, c))]
    as_provider(enrolment_db, world["token"], domain.cancel_course, world["course"], "Dozent krank")
    listed = as_provider(enrolment_db, world["token"], domain.course_enrolments, world["course"])
    assert {e["status"] for e in listed} == {"cancelled"}
    assert {e["cancelled_by"] for e in listed} == {"course_cancelled"}
    assert outbox_events(enrolment_db, "enrolment_promoted") == []
    [course_event] = outbox_events(enrolment_db, "course_cancelled")
    assert sorted(course_event["payload"]["enrolment_ids"]) == sorted(ids)
    with pytest.raises(RuleViolation):
        enrol(enrolment_db, a, world["course"], 9)


def test_attending_every_module_completes_once(world, enrolment_db):
    a, b, c = world["bodies"]
    # The provider enters the attendance lists once the course has taken place (its modules
    # lie 31 to 35 days ahead; attendance counts only from a module's date on).
    after_the_course = calendar_today() + timedelta(days=40)
    seated = enrol(enrolment_db, a, world["course"], 1)
    other = enrol(enrolment_db, b, world["course"], 2)
    waiting = enrol(enrolment_db, c, world["course"], 3)
    with pytest.raises(ValidationFailed) as refused:
        as_provider(enrolment_db, world["token"], domain.record_attendance,
                    attendance({"course_id": str(world["course"]), "module_number": 1,
                                "enrolment_ids": [seated["id"], waiting["id"]]}),
                    after_the_course)
    assert "enrolment_ids" in refused.value.fields
    for module in range(1, 6):
        for _ in range(2):  # recording twice is harmless
            result = as_provider(enrolment_db, world["token"], domain.record_attendance,
                                 attendance({"course_id": str(world["course"]),
                                             "module_number": module,
                                             "enrolment_ids": [seated["id"]] + (
                                                 [other["id"]] if module < 5 else [])}),
                                 after_the_course)
    assert result[0]["status"] == "completed"
    assert result[0]["attended_modules"] == [1, 2, 3, 4, 5]
    assert enrolment_db.run(domain.get_enrolment, b, other["id"])["status"] == "confirmed"
    [completed] = outbox_events(enrolment_db, "enrolment_completed")
    assert completed["payload"]["enrolment_id"] == seated["id"]
    assert [m["number"] for m in completed["payload"]["modules"]] == [1, 2, 3, 4, 5]
    with pytest.raises(RuleViolation):
        enrolment_db.run(lambda s: domain.cancel_enrolment(s, seated["id"], ags=a))


def test_body_of_another_land_is_not_eligible(world, enrolment_db, register_file):
    from services.enrolment.register import import_register, parse_register
    bavarian = next(r for r in parse_register(register_file) if r.land == "09")
    enrolment_db.run(import_register, [bavarian])
    with pytest.raises(RuleViolation):
        enrol(enrolment_db, bavarian.ags, world["course"], 1)
