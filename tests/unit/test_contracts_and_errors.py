"""Event contracts, typed errors and input validation: no broker, no database."""
import uuid
from datetime import datetime, timezone

import pytest
from nameko.exceptions import deserialize, serialize

from services.common.errors import (
    ContractViolation,
    DuplicateEnrolment,
    LotsenError,
    ValidationFailed,
)
from services.common.events import build_event, parse_event
from services.common.messaging import backoff_seconds
from services.common.schemas import load
from services.enrolment.schemas import CourseIn, EnrolIn, ProgrammeIn


def created_payload(**overrides):
    payload = {"enrolment_id": uuid.uuid4(), "programme_id": uuid.uuid4(),
               "course_id": uuid.uuid4(), "ags": "08226098", "status": "waitlisted",
               "waitlist_position": 3, "enrolled_at": datetime.now(timezone.utc),
               "participant": {"given_name": "Jörg", "family_name": "Weiß",
                               "email": "jw@example.org"}}
    payload.update(overrides)
    return payload


def test_event_round_trips_through_its_envelope():
    envelope = build_event("enrolment", "enrolment_created", created_payload(sequence=1))
    assert set(envelope) == {"event_id", "event_type", "version", "occurred_at", "producer",
                             "correlation_id", "payload"}
    event = parse_event(envelope, "enrolment_created")
    assert event.version == 2 and event.producer == "enrolment"
    assert event.payload["sequence"] == 1
    assert event.payload["participant"]["family_name"] == "Weiß"
    assert event.occurred_at.tzinfo is not None


def test_events_about_one_enrolment_carry_its_sequence_and_version_1_still_reads():
    with pytest.raises(ContractViolation) as missing:  # a producer must number them now
        build_event("enrolment", "enrolment_created", created_payload())
    assert "sequence" in missing.value.fields
    old = build_event("enrolment", "enrolment_created", created_payload(), version=1)
    assert parse_event(old, "enrolment_created").payload.get("sequence") is None


def test_producer_cannot_emit_a_payload_that_breaks_the_contract():
    with pytest.raises(ContractViolation) as broken:
        build_event("enrolment", "enrolment_created", created_payload(ags="123"))
    assert "ags" in broken.value.fields
    with pytest.raises(ContractViolation):
        build_event("enrolment", "no_such_event", {})


def test_consumer_refuses_unknown_versions_and_wrong_types():
    envelope = build_event("enrolment", "enrolment_created", created_payload(sequence=1))
    with pytest.raises(ContractViolation):
        parse_event(dict(envelope, version=99))
    with pytest.raises(ContractViolation):
        parse_event(envelope, "enrolment_cancelled")
    with pytest.raises(ContractViolation):
        parse_event({"event_type": "enrolment_created"})


def test_typed_errors_survive_the_rpc_wire_with_their_fields():
    error = DuplicateEnrolment("already enrolled", {"participant.email": ["taken"]})
    received = deserialize(serialize(error))
    assert type(received) is DuplicateEnrolment
    assert isinstance(received, LotsenError) and received.status == 409
    assert received.fields == {"participant.email": ["taken"]}


def test_validation_names_each_bad_field():
    with pytest.raises(ValidationFailed) as invalid:
        load(EnrolIn(), {"course_id": "x", "participant": {"given_name": "A", "email": "@"},
                         "extra": 1})
    assert set(invalid.value.fields) == {"course_id", "participant.family_name",
                                         "participant.email", "extra"}


def test_participant_names_are_trimmed_and_email_lowercased():
    data = load(EnrolIn(), {"course_id": str(uuid.uuid4()), "participant": {
        "given_name": " Jürgen ", "family_name": "Groß", "email": "J.Gross@Example.ORG"}})
    assert data["participant"]["given_name"] == "Jürgen"
    assert data["participant"]["email"] == "j.gross@example.org"
    with pytest.raises(ValidationFailed):
        load(EnrolIn(), {"course_id": str(uuid.uuid4()), "participant": {
            "given_name": "   ", "family_name": "Groß", "email": "a@example.org"}})


def test_course_modules_must_be_numbered_without_gaps():
    course = {"programme_code": "BW-DL", "title": "t", "location": "l", "capacity": 5,
              "modules": [{"number": 1, "title": "a", "date": "2027-01-01"},
                          {"number": 3, "title": "b", "date": "2027-01-02"}]}
    with pytest.raises(ValidationFailed) as invalid:
        load(CourseIn(), course)
    assert "modules" in invalid.value.fields


def test_programme_window_must_not_end_before_it_starts():
    with pytest.raises(ValidationFailed) as invalid:
        load(ProgrammeIn(), {"code": "BW-DL", "name": "n", "land": "08", "role_name": "r",
                             "eligible_kinds": ["gemeinde"], "enrolment_opens_on": "2027-01-01",
                             "enrolment_closes_on": "2026-01-01"})
    assert "enrolment_closes_on" in invalid.value.fields


def test_backoff_grows_exponentially_up_to_its_ceiling():
    assert [backoff_seconds(n, 1000, 5000) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_every_boundary_refuses_text_with_a_nul_character_naming_the_field():
    """No text column can store NUL: refused at the schema, not as a database error later."""
    from services.common.errors import ValidationFailed
    from services.common.schemas import load
    from services.enrolment.schemas import CourseIn, EnrolmentFilterIn

    course = {"programme_code": "BW-DL", "title": "Basis\x00seminar", "location": "Wiesloch",
              "capacity": 5, "modules": [{"number": 1, "title": "M", "date": "2027-01-05"}]}
    with pytest.raises(ValidationFailed) as refused:
        load(CourseIn(), course, "course")
    assert refused.value.fields == {"title": ["must not contain the NUL character"]}
    with pytest.raises(ValidationFailed) as beyond:
        load(EnrolmentFilterIn(), {"page": 1_000_001}, "filters")
    assert "page" in beyond.value.fields
