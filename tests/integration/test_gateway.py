"""The gateway over real HTTP, with the real enrolment service, RabbitMQ and PostgreSQL."""
import socket
import uuid

import pytest
import requests

from services.enrolment import domain
from services.enrolment.service import EnrolmentService
from services.gateway.service import GatewayService
from tests.integration.helpers import count_enrolments, gemeinden, participant, seed, wait_for

PROBLEM = "application/problem+json"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gateway_config(service_config):
    port = free_port()
    config = dict(service_config)
    config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{port}"
    config["GATEWAY"] = {"rpc_timeout_s": 5, "ready_timeout_s": 1, "max_body_bytes": 200_000}
    return config


@pytest.fixture
def world(enrolment_db, register_file):
    seeded = seed(enrolment_db, register_file, capacity=2, providers=1)
    first, second = gemeinden(register_file, 2)
    keys = {}
    for ags in (first, second):
        keys[ags] = enrolment_db.run(lambda s, a=ags: domain.register_municipality(
            s, a, "Hauptamt", f"hauptamt@{a}.example")[1])
    return {"course": str(seeded["courses"][0]), "a": first, "b": second, "keys": keys}


@pytest.fixture
def running(container_factory, gateway_config):
    enrolment = container_factory(EnrolmentService, gateway_config)
    gateway = container_factory(GatewayService, gateway_config)
    enrolment.start()
    gateway.start()
    return {"enrolment": enrolment, "gateway": gateway,
            "url": f"http://{gateway_config['WEB_SERVER_ADDRESS']}"}


class Client:
    def __init__(self, base, key=None):
        self.base = base
        self.session = requests.Session()
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def __getattr__(self, method):
        def call(path, **kwargs):
            kwargs.setdefault("timeout", 30)
            return self.session.request(method.upper(), self.base + path, **kwargs)
        return call


def is_problem(response, status, field=None):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in response.text
    if field:
        assert field in [e["field"] for e in body["errors"]], body
    return body


def test_municipality_enrols_lists_and_cancels(world, running):
    client = Client(running["url"], world["keys"][world["a"]])
    courses = client.get("/api/v1/courses")
    assert courses.status_code == 200
    [course] = courses.json()["items"]
    assert course["free_seats"] == 2 and len(course["modules"]) == 5

    created = client.post("/api/v1/enrolments",
                          json={"course_id": course["id"], "participant": participant(1)})
    assert created.status_code == 201, created.text
    enrolment = created.json()
    assert enrolment["status"] == "confirmed"
    assert created.headers["Location"] == f"/api/v1/enrolments/{enrolment['id']}"
    assert enrolment["participant"]["family_name"] == "Weiß1"

    assert client.get(f"/api/v1/enrolments/{enrolment['id']}").json() == enrolment
    listed = client.get("/api/v1/enrolments", params={"status": "confirmed", "programme": "BW-DL"})
    assert [e["id"] for e in listed.json()["items"]] == [enrolment["id"]]
    assert client.get("/api/v1/enrolments", params={"status": "waitlisted"}).json()["total"] == 0
    overview = client.get("/api/v1/municipality").json()
    assert overview["body"]["ags"] == world["a"]
    assert overview["programmes"][0]["enrolments"] == {"confirmed": 1}

    cancelled = client.delete(f"/api/v1/enrolments/{enrolment['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.delete(f"/api/v1/enrolments/{enrolment['id']}")
    assert again.status_code == 200 and again.json()["cancelled_at"] == cancelled.json()["cancelled_at"]


def test_keys_are_required_and_checked(world, running):
    anonymous = Client(running["url"])
    body = is_problem(anonymous.get("/api/v1/courses"), 401)
    assert "Bearer" in body["detail"]
    forged = Client(running["url"], "lk_" + "x" * 43)
    response = forged.post("/api/v1/enrolments", json={"course_id": world["course"],
                                                       "participant": participant(1)})
    is_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert count_enrolments_via(running) == 0


def count_enrolments_via(running):
    from services.common.db import open_database
    from services.enrolment.models import InboxRecord, OutboxMessage
    handle = open_database(running["enrolment"].config, "enrolment", OutboxMessage, InboxRecord)
    try:
        return count_enrolments(handle)
    finally:
        handle.dispose()


def test_one_municipality_never_sees_anothers_enrolments(world, running):
    mine = Client(running["url"], world["keys"][world["a"]])
    theirs = Client(running["url"], world["keys"][world["b"]])
    enrolment = mine.post("/api/v1/enrolments", json={
        "course_id": world["course"], "participant": participant(1)}).json()
    foreign = theirs.get(f"/api/v1/enrolments/{enrolment['id']}")
    unknown = theirs.get(f"/api/v1/enrolments/{uuid.uuid4()}")
    assert is_problem(foreign, 404) == is_problem(unknown, 404)
    is_problem(theirs.delete(f"/api/v1/enrolments/{enrolment['id']}"), 404)
    assert theirs.get("/api/v1/enrolments").json()["total"] == 0
    assert mine.get(f"/api/v1/enrolments/{enrolment['id']}").json()["status"] == "confirmed"


def test_bad_requests_get_problems_and_store_nothing(world, running):
    client = Client(running["url"], world["keys"][world["a"]])
    good = {"course_id": world["course"], "participant": participant(1)}
    is_problem(client.post("/api/v1/enrolments", data="{not json",
                           headers={"Content-Type": "application/json"}), 400)
    is_problem(client.post("/api/v1/enrolments", data="course_id=1",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
    is_problem(client.post("/api/v1/enrolments", json=dict(good, shoe_size=44)), 422, "shoe_size")
    bad_email = dict(good, participant=dict(participant(1), email="kein-at-zeichen"))
    is_problem(client.post("/api/v1/enrolments", json=bad_email), 422, "participant.email")
    is_problem(client.post("/api/v1/enrolments", json=dict(good, course_id="42")), 422, "course_id")
    is_problem(client.post("/api/v1/enrolments", json=[good]), 422)
    is_problem(client.post("/api/v1/enrolments", json=dict(good, course_id=str(uuid.uuid4()))), 404)
    huge = dict(good, participant=dict(participant(1), department="x" * 300_000))
    is_problem(client.post("/api/v1/enrolments", json=huge), 413)
    is_problem(client.get("/api/v1/enrolments/not-a-uuid"), 404)
    is_problem(client.get("/api/v1/enrolments", params={"colour": "blue"}), 422, "colour")
    is_problem(client.get("/api/v1/enrolments", params={"status": "lost"}), 422, "status")
    is_problem(client.get("/api/v1/nothing-here"), 404)
    assert count_enrolments_via(running) == 0

    client.post("/api/v1/enrolments", json=good)
    duplicate = client.post("/api/v1/enrolments", json=good)
    assert is_problem(duplicate, 409, "participant.email")["type"] == "/problems/duplicate"
    assert count_enrolments_via(running) == 1


def test_idempotency_key_replays_the_first_answer(world, running):
    client = Client(running["url"], world["keys"][world["a"]])
    request = {"course_id": world["course"], "participant": participant(5)}
    headers = {"Idempotency-Key": "liste-2026-11-22-zeile-5"}
    first = client.post("/api/v1/enrolments", json=request, headers=headers)
    replay = client.post("/api/v1/enrolments", json=request, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    other = client.post("/api/v1/enrolments", json=dict(request, participant=participant(6)),
                        headers=headers)
    is_problem(other, 422, "idempotency_key")
    assert count_enrolments_via(running) == 1


def test_batch_reports_each_row_and_dry_run_stores_nothing(world, running):
    client = Client(running["url"], world["keys"][world["a"]])
    rows = [{"course_id": world["course"], "participant": participant(n)} for n in range(3)]
    rows.append({"course_id": world["course"], "participant": participant(0)})  # duplicate
    rows.append({"course_id": world["course"], "participant": {"given_name": "Ohne"}})

    dry = client.post("/api/v1/enrolments:batch", params={"dry_run": "true"}, json={"rows": rows})
    assert dry.status_code == 200, dry.text
    assert [r["result"] for r in dry.json()["results"]] == [
        "would_create", "would_create", "would_create", "error", "error"]
    assert count_enrolments_via(running) == 0

    done = client.post("/api/v1/enrolments:batch", json={"rows": rows})
    assert done.status_code == 207
    result = done.json()
    assert (result["succeeded"], result["failed"]) == (3, 2)
    statuses = [r["enrolment"]["status"] for r in result["results"][:3]]
    assert statuses == ["confirmed", "confirmed", "waitlisted"]
    assert result["results"][3]["error"]["status"] == 409
    assert set(result["results"][4]["error"]["fields"]) == {"participant.family_name",
                                                          "participant.email"}
    assert count_enrolments_via(running) == 3

    too_many = client.post("/api/v1/enrolments:batch", json={"rows": rows * 101})
    is_problem(too_many, 422, "rows")
    is_problem(client.post("/api/v1/enrolments:batch", json={"rows": rows, "x": 1}), 422, "x")
    assert count_enrolments_via(running) == 3


def test_stopped_service_means_503_with_retry_after(world, running):
    client = Client(running["url"], world["keys"][world["a"]])
    assert client.get("/health/ready").status_code == 200
    running["enrolment"].stop()
    not_ready = client.get("/health/ready")
    assert not_ready.status_code == 503 and not_ready.headers["Retry-After"]
    busy = client.get("/api/v1/courses")
    is_problem(busy, 503)
    assert busy.headers["Retry-After"] == "5"
    assert client.get("/health/live").status_code == 200


@pytest.mark.parametrize("cache_s, old_key_status", [(300, 200), (0, 401)])
def test_a_rotated_key_works_only_as_long_as_the_gateway_remembers_it(
        world, enrolment_db, container_factory, gateway_config, cache_s, old_key_status):
    gateway_config["GATEWAY"] = dict(gateway_config["GATEWAY"], auth_cache_s=cache_s)
    for service in (EnrolmentService, GatewayService):
        container_factory(service, gateway_config).start()
    url = f"http://{gateway_config['WEB_SERVER_ADDRESS']}"
    old = Client(url, world["keys"][world["a"]])
    assert old.get("/api/v1/municipality").status_code == 200
    new_key = enrolment_db.run(lambda s: domain.register_municipality(
        s, world["a"], "Hauptamt", "hauptamt@neu.example")[1])
    assert old.get("/api/v1/municipality").status_code == old_key_status
    assert Client(url, new_key).get("/api/v1/municipality").status_code == 200
    assert Client(url, "lk_" + "y" * 43).get("/api/v1/municipality").status_code == 401


def test_openapi_document_is_valid_and_matches_the_routes(running):
    from openapi_spec_validator import validate
    document = requests.get(running["url"] + "/api/v1/openapi.json", timeout=10).json()
    validate(document)
    from services.gateway.portal import PageEntrypoint
    served = set()
    for entrypoint in running["gateway"].entrypoints:
        url = getattr(entrypoint, "url", None)
        # The portal's pages are for people, not part of the API (README: the portal).
        if url and "<path:" not in url and not isinstance(entrypoint, PageEntrypoint):
            for method in entrypoint.method.split(","):
                served.add((method.lower(), url.replace("<", "{").replace(">", "}")))
    documented = {(method, path) for path, operations in document["paths"].items()
                  for method in operations if method != "parameters"}
    assert documented == served
    page = requests.get(running["url"] + "/api/docs", timeout=10)
    assert page.status_code == 200 and "/api/v1/enrolments:batch" in page.text


def handled(entrypoint):
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value("lotsen_handled_total", {
        "service": "enrolment", "entrypoint": entrypoint, "outcome": "ok"}) or 0


def test_an_unseen_key_is_checked_inside_the_enrol_call(world, running):
    """No authenticate call before the first enrolment of a key; the key is remembered."""
    client = Client(running["url"], world["keys"][world["a"]])
    before = {e: handled(e) for e in ("authenticate", "enrol_with_key", "enrol",
                                      "enrol_batch_with_key", "enrol_batch")}
    first = client.post("/api/v1/enrolments",
                        json={"course_id": world["course"], "participant": participant(1)})
    assert first.status_code == 201, first.text
    assert first.json()["ags"] == world["a"]
    second = client.post("/api/v1/enrolments",
                         json={"course_id": world["course"], "participant": participant(2)})
    assert second.status_code == 201, second.text
    batch = Client(running["url"], world["keys"][world["b"]]).post(
        "/api/v1/enrolments:batch",
        json={"rows": [{"course_id": world["course"], "participant": participant(3)}]})
    assert batch.status_code == 201, batch.text
    assert batch.json()["results"][0]["enrolment"]["ags"] == world["b"]
    expected = {"authenticate": 0, "enrol_with_key": 1, "enrol": 1, "enrol_batch_with_key": 1,
                "enrol_batch": 0}

    def counted():  # a worker is counted just after its reply went out
        return {e: handled(e) - before[e] for e in before}
    wait_for(lambda: counted() == expected, timeout=5, message="the calls counted")
    assert counted() == expected


def test_a_stranger_hears_401_whatever_the_body(world, running):
    stranger = Client(running["url"], "lk_" + "y" * 43)
    for path in ("/api/v1/enrolments", "/api/v1/enrolments:batch"):
        is_problem(stranger.post(path, data=b"{not json", headers={
            "Content-Type": "application/json"}), 401)
        is_problem(stranger.post(path, json={"course_id": world["course"]}), 401)
        is_problem(stranger.post(path, json={"rows": [{"course_id": "x"}]}), 401)
    known = Client(running["url"], world["keys"][world["a"]])
    is_problem(known.post("/api/v1/enrolments", data=b"{not json",
                          headers={"Content-Type": "application/json"}), 400)
    is_problem(known.post("/api/v1/enrolments", json={"course_id": world["course"]}), 422,
               "participant")
    assert count_enrolments_via(running) == 0
