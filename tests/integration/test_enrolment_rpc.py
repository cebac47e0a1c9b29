"""The enrolment service over real RabbitMQ and PostgreSQL, as its callers use it."""
import uuid

import pytest
from nameko.standalone.rpc import ClusterRpcProxy, ServiceRpcProxy

from services.common.errors import (
    AuthenticationFailed,
    Conflict,
    DuplicateEnrolment,
    IdempotencyKeyReused,
    NotFound,
    ValidationFailed,
)
from services.enrolment.service import EnrolmentService
from tests.integration.helpers import (
    count_enrolments,
    gemeinden,
    outbox_events,
    participant,
    seed,
    sign_for,
    SignedRpc,
)


@pytest.fixture
def seeded(enrolment_db, register_file):
    return seed(enrolment_db, register_file, capacity=22, providers=2)


@pytest.fixture
def instances(container_factory, service_config):
    """Two instances of the enrolment service sharing one database and one queue."""
    containers = [container_factory(EnrolmentService, service_config) for _ in range(2)]
    for container in containers:
        container.start()
    return containers


def count_workers(containers):
    """Count the workers each container spawns from now on."""
    counts = [0] * len(containers)
    for index, container in enumerate(containers):
        original = container.spawn_worker

        def counting(*args, _index=index, _original=original, **kwargs):
            counts[_index] += 1
            return _original(*args, **kwargs)
        container.spawn_worker = counting
    return counts


def provider_proxy(config, token):
    return ServiceRpcProxy("enrolment", config, context_data={"provider_token": token})


def test_fifty_concurrent_enrolments_into_22_seats_on_two_instances(
        seeded, instances, service_config, enrolment_db, register_file):
    course_id = str(seeded["courses"][0])
    bodies = gemeinden(register_file, 50)
    served = count_workers(instances)
    with ClusterRpcProxy(service_config) as cluster:
        calls = []
        for n, ags in enumerate(bodies):
            sign_for(cluster, service_config, ags)
            calls.append(cluster.enrolment.enrol.call_async(
                ags, {"course_id": course_id, "participant": participant(n)}))
        results = [call.result() for call in calls]

    statuses = [r["status"] for r in results]
    assert statuses.count("confirmed") == 22
    assert statuses.count("waitlisted") == 28
    assert count_enrolments(enrolment_db, status="confirmed") == 22
    assert count_enrolments(enrolment_db, status="waitlisted") == 28
    # Every created enrolment announced itself once, in the same transaction.
    created = outbox_events(enrolment_db, "enrolment_created")
    assert sorted(e["payload"]["enrolment_id"] for e in created) == sorted(r["id"] for r in results)
    # Positions answered at enrolment time were distinct at that moment.
    positions = [r["waitlist_position"] for r in results if r["status"] == "waitlisted"]
    assert sorted(positions) == list(range(1, 29))
    # Both instances took part.
    assert all(count > 0 for count in served) and sum(served) >= 50


def test_duplicate_participant_refused_with_clear_error_and_nothing_written(
        seeded, instances, service_config, enrolment_db, register_file):
    first_course, second_course = (str(c) for c in seeded["courses"])
    ags_a, ags_b = gemeinden(register_file, 2)
    with SignedRpc("enrolment", service_config) as enrolment:
        enrolment.enrol(ags_a, {"course_id": first_course, "participant": participant(1)})
        before = len(outbox_events(enrolment_db))
        duplicate = participant(1)
        duplicate["email"] = duplicate["email"].upper()  # e-mail compares case-insensitively
        with pytest.raises(DuplicateEnrolment) as refused:
            enrolment.enrol(ags_b, {"course_id": second_course, "participant": duplicate})
    assert "participant.email" in refused.value.fields
    assert count_enrolments(enrolment_db) == 1
    assert len(outbox_events(enrolment_db)) == before


def test_participant_may_enrol_again_after_cancelling(seeded, instances, service_config,
                                                      register_file, enrolment_db):
    course = str(seeded["courses"][0])
    [ags] = gemeinden(register_file, 1)
    with SignedRpc("enrolment", service_config) as enrolment:
        first = enrolment.enrol(ags, {"course_id": course, "participant": participant(7)})
        enrolment.cancel_enrolment(ags, first["id"])
        again = enrolment.enrol(ags, {"course_id": course, "participant": participant(7)})
    assert again["id"] != first["id"] and again["status"] == "confirmed"


def test_idempotency_key_returns_first_result_and_refuses_a_different_body(
        seeded, instances, service_config, enrolment_db, register_file):
    course = str(seeded["courses"][0])
    [ags] = gemeinden(register_file, 1)
    request = {"course_id": course, "participant": participant(3), "idempotency_key": "nominierung-42"}
    with ClusterRpcProxy(service_config) as cluster:
        sign_for(cluster, service_config, ags)
        # Five retries of the same request racing each other: one enrolment.
        calls = [cluster.enrolment.enrol.call_async(ags, request) for _ in range(5)]
        answers = [c.result() for c in calls]
        again = cluster.enrolment.enrol(ags, request)
        changed = dict(request, participant=participant(4))
        with pytest.raises(IdempotencyKeyReused) as reused:
            cluster.enrolment.enrol(ags, changed)
    assert len({a["id"] for a in answers + [again]}) == 1
    assert again == answers[0]
    assert "idempotency_key" in reused.value.fields
    assert count_enrolments(enrolment_db) == 1
    assert len(outbox_events(enrolment_db, "enrolment_created")) == 1


def test_invalid_input_names_the_field_and_writes_nothing(seeded, instances, service_config,
                                                          enrolment_db, register_file):
    course = str(seeded["courses"][0])
    [ags] = gemeinden(register_file, 1)
    bad = {"course_id": course, "participant": dict(participant(1), email="not-an-address"),
           "shoe_size": 44}
    with SignedRpc("enrolment", service_config) as enrolment:
        with pytest.raises(ValidationFailed) as invalid:
            enrolment.enrol(ags, bad)
        with pytest.raises(ValidationFailed) as bad_ags:
            enrolment.enrol("8226098", {"course_id": course, "participant": participant(1)})
    assert set(invalid.value.fields) == {"participant.email", "shoe_size"}
    assert "ags" in bad_ags.value.fields
    assert count_enrolments(enrolment_db) == 0


def test_provider_acts_only_on_its_own_courses(seeded, instances, service_config,
                                               register_file):
    own_course, other_course = (str(c) for c in seeded["courses"])
    first_token, second_token = (p["token"] for p in seeded["providers"])
    [ags] = gemeinden(register_file, 1)
    with SignedRpc("enrolment", service_config) as enrolment:
        theirs = enrolment.enrol(ags, {"course_id": other_course, "participant": participant(1)})
    with provider_proxy(service_config, first_token) as provider:
        assert provider.course_enrolments(own_course) == []
        for call in (lambda: provider.course_enrolments(other_course),
                     lambda: provider.close_course(other_course),
                     lambda: provider.cancel_course(other_course, "nope"),
                     lambda: provider.record_attendance(other_course, 1, [theirs["id"]]),
                     lambda: provider.provider_cancel_enrolment(theirs["id"])):
            with pytest.raises(NotFound):
                call()
    with provider_proxy(service_config, second_token) as provider:
        [listed] = provider.course_enrolments(other_course)
        assert listed["id"] == theirs["id"]
    with provider_proxy(service_config, "lp_forged") as provider:
        with pytest.raises(AuthenticationFailed):
            provider.course_enrolments(own_course)
    with ServiceRpcProxy("enrolment", service_config) as anonymous:
        with pytest.raises(AuthenticationFailed):
            anonymous.create_course({"programme_code": "BW-DL"})


def test_municipality_cannot_see_or_cancel_another_bodys_enrolment(
        seeded, instances, service_config, register_file):
    course = str(seeded["courses"][0])
    mine, other = gemeinden(register_file, 2)
    with SignedRpc("enrolment", service_config) as enrolment:
        theirs = enrolment.enrol(other, {"course_id": course, "participant": participant(1)})
        for call in (lambda: enrolment.get_enrolment(mine, theirs["id"]),
                     lambda: enrolment.cancel_enrolment(mine, theirs["id"]),
                     lambda: enrolment.get_enrolment(mine, str(uuid.uuid4()))):
            with pytest.raises(NotFound) as hidden:
                call()
            assert hidden.value.message == "no such enrolment"
        assert enrolment.list_enrolments(mine)["total"] == 0
        assert enrolment.get_enrolment(other, theirs["id"])["status"] == "confirmed"


def test_operator_calls_need_the_operator_token(instances, service_config):
    with ServiceRpcProxy("enrolment", service_config) as anonymous:
        with pytest.raises(AuthenticationFailed):
            anonymous.create_provider("Volkshochschule")
    with provider_proxy(service_config, "lp_whatever") as provider:
        with pytest.raises(AuthenticationFailed):  # a provider is no operator
            provider.create_provider("Volkshochschule")
    with ServiceRpcProxy("enrolment", service_config,
                         context_data={"operator_token": "operator-secret-for-tests"}) as operator:
        created = operator.create_provider("Volkshochschule")
    assert created["token"].startswith("lp_")
    with provider_proxy(service_config, created["token"]) as provider:
        with pytest.raises(NotFound):
            provider.course_enrolments(str(uuid.uuid4()))


def test_a_provider_repeating_create_course_with_its_id_gets_one_course(
        seeded, instances, service_config):
    course_id = str(uuid.uuid4())
    course = {"id": course_id, "programme_code": "BW-DL", "title": "Aufbauseminar",
              "location": "Walldorf", "capacity": 12,
              "modules": [{"number": 1, "title": "Modul 1", "date": "2099-03-01"}]}
    with provider_proxy(service_config, seeded["providers"][0]["token"]) as provider:
        first = provider.create_course(course)
        again = provider.create_course(course)
        assert first["id"] == again["id"] == course_id
        with pytest.raises(Conflict) as conflict:
            provider.create_course(dict(course, title="Anderes Seminar"))
        assert "id" in conflict.value.fields
        with pytest.raises(ValidationFailed) as invalid:
            provider.create_course(dict(course, id="not-a-uuid"))
        assert "id" in invalid.value.fields, invalid.value.fields
    with provider_proxy(service_config, seeded["providers"][1]["token"]) as other:
        with pytest.raises(Conflict):  # another provider cannot take it over
            other.create_course(course)
