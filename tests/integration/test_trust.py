"""The trust model on the real broker: being connected proves nothing.

Each attack from the issue that found the gap is a test here: calls without the caller's
proof, a gateway assertion for one body used for another, a provider trying every gateway and
operator method, forged events, a provider user trying what its broker permissions forbid, and
malformed messages that used to kill a service.
"""
import dataclasses
import time
import uuid

import amqp.exceptions
import pytest
from kombu import Connection, Exchange, Queue
from nameko.standalone.rpc import ServiceRpcProxy
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from services.certificates.models import Certificate
from services.certificates.service import CertificatesService
from services.common import broker_access, callers, topology
from services.common.errors import AuthenticationFailed, NotFound
from services.common.messaging import list_parked
from services.enrolment.service import EnrolmentService
from services.funding.service import FundingService
from services.notifications.service import NotificationsService
from services.provider_client import ProviderClient
from tests.integration.helpers import (
    SignedRpc,
    acting_for,
    count_enrolments,
    gemeinden,
    participant,
    producer_dispatcher,
    seed,
    wait_for,
)
from tests.integration.test_certificates import certificates_db, completed_event

MANAGEMENT = "http://guest:guest@127.0.0.1:15672"
CERTIFICATES_QUEUE = "evt-enrolment-enrolment_completed--certificates.on_enrolment_completed"


def refused_count(service, entrypoint=None):
    total = 0
    for metric in REGISTRY.collect():
        if metric.name != "lotsen_refused":
            continue
        for sample in metric.samples:
            if sample.name == "lotsen_refused_total" and sample.labels["service"] == service \
                    and entrypoint in (None, sample.labels["entrypoint"]):
                total += sample.value
    return total


@pytest.fixture
def seeded(enrolment_db, register_file):
    return seed(enrolment_db, register_file, capacity=22, providers=2)


@pytest.fixture
def enrolment_service(container_factory, service_config):
    container = container_factory(EnrolmentService, service_config)
    container.start()
    return container


def vhost_of(config):
    return config["AMQP_URI"].rsplit("/", 1)[1]


@pytest.fixture
def broker_users(rabbit_config):
    """Makes real broker users with the permissions ``lotsen broker`` gives them, on this
    test's vhost; returns a function access -> AMQP URI. Users are removed afterwards."""
    management = broker_access.Management(MANAGEMENT)
    vhost = vhost_of(rabbit_config)
    made = []

    def make(access: broker_access.Access) -> str:
        password = uuid.uuid4().hex
        management.put_user(access.user, password)
        management.grant(vhost, access)
        made.append(access.user)
        return f"pyamqp://{access.user}:{password}@127.0.0.1:5672/{vhost}"
    yield make
    for user in made:
        management.delete_user(user)


# --- callers of RPC methods ----------------------------------------------------------------

def test_nobody_acts_for_a_municipality_without_the_gateways_proof(
        seeded, enrolment_service, service_config, enrolment_db, register_file):
    course = str(seeded["courses"][0])
    [ags] = gemeinden(register_file, 1)
    before = refused_count("enrolment")
    with ServiceRpcProxy("enrolment", service_config) as anyone:
        for call in (lambda: anyone.list_enrolments(ags, {}),
                     lambda: anyone.enrol(ags, {"course_id": course,
                                                "participant": participant(1)}),
                     lambda: anyone.municipality(ags),
                     lambda: anyone.authenticate("lk_guess")):
            with pytest.raises(AuthenticationFailed) as refused:
                call()
            assert refused.value.fields == {"caller": ["no_credential"]}
    assert count_enrolments(enrolment_db) == 0
    assert refused_count("enrolment") - before == 4


def test_an_assertion_for_one_body_is_no_use_for_another_and_expires(
        seeded, enrolment_service, service_config, enrolment_db, register_file):
    course = str(seeded["courses"][0])
    mine, other = gemeinden(register_file, 2)
    key = callers.service_key(service_config)
    enrolment = {"course_id": course, "participant": participant(1)}
    attempts = {
        "other_municipality": callers.sign_assertion(key, "gateway", mine),
        "expired_assertion": callers.sign_assertion(key, "gateway", other, ttl_s=-5),
        "bad_signature": callers.sign_assertion(b"x" * 40, "gateway", other),
        "malformed_assertion": "v1|gateway|" + other,
    }
    for reason, assertion in attempts.items():
        with ServiceRpcProxy("enrolment", service_config,
                             context_data={callers.ASSERTION_KEY: assertion}) as caller:
            with pytest.raises(AuthenticationFailed) as refused:
                caller.enrol(other, enrolment)
            assert refused.value.fields == {"caller": [reason]}
    assert count_enrolments(enrolment_db) == 0
    with SignedRpc("enrolment", service_config) as gateway:  # the real thing works
        assert gateway.enrol(other, enrolment)["status"] == "confirmed"


def test_a_provider_can_call_no_gateway_or_operator_method(
        container_factory, seeded, service_config, register_file):
    """Every RPC method of every service that does not answer providers (or everyone) refuses
    a valid provider token, before any argument is looked at."""
    for cls in (EnrolmentService, FundingService, CertificatesService, NotificationsService):
        container_factory(cls, service_config).start()
    token = seeded["providers"][0]["token"]
    methods = broker_access.rpc_methods(topology.service_classes({}))
    closed = sorted(name for name, kinds in methods.items()
                    if callers.PROVIDER not in kinds and callers.PUBLIC not in kinds)
    assert ("enrolment", "enrol") in closed and ("enrolment", "create_provider") in closed
    assert ("certificates", "get_pdf") in closed and ("funding", "set_policy") in closed
    for service, method in closed:
        cls = next(c for c in topology.service_classes({}) if c.name == service)
        import inspect
        parameters = [p for p in inspect.signature(getattr(cls, method)).parameters.values()
                      if p.name != "self" and p.default is inspect.Parameter.empty]
        args = ["08226098" if p.name == "ags" else "x" for p in parameters]
        with ServiceRpcProxy(service, service_config, timeout=20,
                             context_data={"provider_token": token}) as proxy:
            with pytest.raises(AuthenticationFailed):
                getattr(proxy, method)(*args)


def test_certificates_are_not_readable_by_number_without_the_right_caller(
        container_factory, service_config):
    container_factory(CertificatesService, service_config).start()
    producer_dispatcher(service_config)("enrolment", "enrolment_completed", completed_event(1))
    handle = certificates_db(service_config)
    try:
        number = wait_for(lambda: handle.run(lambda s: s.scalar(select(Certificate.number))),
                          message="certificate issued")
    finally:
        handle.dispose()
    with ServiceRpcProxy("certificates", service_config) as anyone:
        for call in (lambda: anyone.get_certificate(number), lambda: anyone.get_pdf(number)):
            with pytest.raises(AuthenticationFailed):
                call()
    with ServiceRpcProxy("certificates", service_config,
                         context_data=acting_for(service_config, "08221000")) as gateway:
        with pytest.raises(NotFound):  # another municipality's certificate
            gateway.get_pdf(number, "08221000")
        with pytest.raises(AuthenticationFailed):  # the assertion names another body
            gateway.get_pdf(number, "08226098")
    with ServiceRpcProxy("certificates", service_config,
                         context_data=acting_for(service_config, "08226098")) as gateway:
        assert gateway.get_pdf(number, "08226098")["filename"].endswith(".pdf")
    with SignedRpc("certificates", service_config, operator=True) as operator:
        assert operator.get_certificate(number)["number"] == number
        assert anyone_can_verify(service_config, number)


def anyone_can_verify(config, number):
    with ServiceRpcProxy("certificates", config) as anyone:
        return "keys" in anyone.jwks()


# --- events believed only from their producer ---------------------------------------------

def test_a_forged_enrolment_completed_issues_no_certificate(
        container_factory, service_config, broker_users):
    enrolment_user = broker_access.service_access(
        "enrolment", topology.service_classes({}), topology.subscriptions(
            topology.service_classes({})))
    enrolment_user = dataclasses.replace(enrolment_user, user=f"lotsen-enrolment-{uuid.uuid4().hex[:8]}")
    enrolment_uri = broker_users(enrolment_user)
    config = dict(service_config, BROKER_USERS={"enrolment": enrolment_user.user})
    container_factory(CertificatesService, config).start()
    before = refused_count("certificates", "on_enrolment_completed")

    # Anyone with write access to the exchange (here guest), without and with a user_id.
    producer_dispatcher(config, user_id=None)("enrolment", "enrolment_completed",
                                              completed_event(1))
    producer_dispatcher(config)("enrolment", "enrolment_completed", completed_event(2))
    parked = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(
        list_parked(config["AMQP_URI"], [CERTIFICATES_QUEUE])), message="two parked")
    assert all("ForgedEvent" in p["error"] and not p["replayable"] for p in parked)
    assert refused_count("certificates", "on_enrolment_completed") - before == 2

    # The enrolment service's own user may not claim to be someone else ...
    with pytest.raises(amqp.exceptions.PreconditionFailed):
        producer_dispatcher(dict(config, AMQP_URI=enrolment_uri), user_id="guest")(
            "enrolment", "enrolment_completed", completed_event(3))
    # ... and what it publishes as itself is believed.
    genuine = completed_event(4)
    producer_dispatcher(dict(config, AMQP_URI=enrolment_uri))(
        "enrolment", "enrolment_completed", genuine)
    handle = certificates_db(config)
    try:
        wait_for(lambda: handle.run(lambda s: s.scalar(select(func.count())
                                                        .select_from(Certificate))) == 1,
                 message="genuine certificate")
        time.sleep(0.5)
        issued = handle.run(lambda s: [c.enrolment_id for c in s.scalars(select(Certificate))])
    finally:
        handle.dispose()
    assert [str(e) for e in issued] == [genuine["payload"]["enrolment_id"]]


# --- broker permissions of a provider --------------------------------------------------------

def test_a_provider_user_can_call_provider_methods_and_nothing_else(
        seeded, enrolment_service, service_config, broker_users):
    user = f"provider-test-{uuid.uuid4().hex[:8]}"
    uri = broker_users(broker_access.provider_access(user, topology.service_classes({})))
    token = seeded["providers"][0]["token"]
    course_id = str(uuid.uuid4())
    course = {"id": course_id, "programme_code": "BW-DL", "title": "Aufbauseminar",
              "location": "Walldorf", "capacity": 12,
              "modules": [{"number": 1, "title": "Modul 1", "date": "2099-03-01"}]}
    with ProviderClient(uri, token, timeout=20) as client:
        assert client.create_course(course)["id"] == course_id
        assert client.open_course(course_id)["status"] == "open"
        assert client.course_enrolments(course_id) == []
    # A gateway or operator method: the broker refuses the publish (topic permission).
    for method in ("enrol", "list_enrolments", "create_provider", "authenticate"):
        with ProviderClient(uri, token, timeout=20) as client:
            with pytest.raises(amqp.exceptions.AccessRefused):
                client.call("enrolment", method, "08226098", {})

    def refused(action):
        with Connection(uri) as connection:
            channel = connection.channel()
            with pytest.raises(amqp.exceptions.AccessRefused):
                action(connection, channel)

    rpc = Exchange("nameko-rpc", type="topic", durable=True)
    # Copy every call (and the API keys in them): bind a queue of its own with '#'.
    refused(lambda c, ch: Queue(f"rpc.reply-{user}-{uuid.uuid4()}", exchange=rpc,
                                routing_key="#", auto_delete=True)(ch).declare())
    refused(lambda c, ch: Queue(f"rpc.reply-{user}-{uuid.uuid4()}", exchange=rpc,
                                routing_key="enrolment.*", auto_delete=True)(ch).declare())
    # Read the services' queues, publish events or straight into a queue, redeclare the
    # RPC exchange.
    refused(lambda c, ch: ch.basic_get("rpc-enrolment"))
    refused(lambda c, ch: ch.basic_get(CERTIFICATES_QUEUE))
    refused(lambda c, ch: ch.queue_declare("rpc-enrolment", durable=True))
    refused(lambda c, ch: rpc(ch).declare())

    def publish(exchange, key):
        def action(connection, channel):
            channel.confirm_select()
            channel.basic_publish(channel.prepare_message(b"{}"), exchange=exchange,
                                  routing_key=key)
            connection.drain_events(timeout=5)
        return action
    refused(publish("enrolment.events", "enrolment_completed"))
    refused(publish("", "rpc-enrolment"))


# --- malformed messages --------------------------------------------------------------------

def test_malformed_messages_never_stop_a_service(
        container_factory, service_config):
    enrolment = container_factory(EnrolmentService, service_config)
    certificates = container_factory(CertificatesService, service_config)
    enrolment.start()
    certificates.start()
    before = refused_count("enrolment") + refused_count("certificates")
    call = b'{"args": [], "kwargs": {}}'
    with Connection(service_config["AMQP_URI"],
                    transport_options={"confirm_publish": True}) as connection:
        producer = connection.Producer()

        def send(body, queue, **properties):
            properties.setdefault("content_type", "application/json")
            properties.setdefault("content_encoding", "utf-8")
            producer.publish(body, exchange="", routing_key=queue, **properties)

        def rpc(body, method="enrolment.health", **properties):
            properties.setdefault("reply_to", str(uuid.uuid4()))
            send(body, "rpc-enrolment", **properties)
        # Refused before anything runs (each one used to kill the container, or could):
        rpc(b"{not json")
        rpc(b"\x80\x04K\x01.", content_type="application/x-python-serialize",
            content_encoding="binary")
        rpc(call, reply_to=None)                    # nowhere to answer
        rpc(call, reply_to="x")                     # an address the broker would refuse
        rpc(call, content_type="application/data")  # decodes as bytes, no JSON reply possible
        rpc(b'{"args": ["' + b"x" * (5 * 1024 * 1024) + b'"], "kwargs": {}}')
        send(b"\xff\xfe not json either", CERTIFICATES_QUEUE)
        # Answered or handled, harmlessly:
        rpc(b"[1, 2]")                                              # MethodNotFound
        rpc(call, headers={"nameko.call_id_stack": [1, {"a": 2}]})  # crashed nameko's logging
        send(b'"just a string"', CERTIFICATES_QUEUE, user_id="guest",
             headers={"x-lotsen-attempt": "abc"})                   # spun for ever before
    wait_for(lambda: refused_count("enrolment") + refused_count("certificates") - before >= 7,
             message="malformed messages refused")
    # Both services keep serving: RPC answers and a real event is still handled.
    with ServiceRpcProxy("enrolment", service_config, timeout=20) as proxy:
        assert proxy.health()["database"] == "ok"
    producer_dispatcher(service_config)("enrolment", "enrolment_completed", completed_event(5))
    handle = certificates_db(service_config)
    try:
        wait_for(lambda: handle.run(lambda s: s.scalar(select(func.count())
                                                        .select_from(Certificate))) == 1,
                 message="a good event after the bad ones")
    finally:
        handle.dispose()
    assert not enrolment._died.ready() and not certificates._died.ready()
    # Both bad events wait, parked with their reasons, for an operator; the unreadable one
    # will never be replayed, the one that broke its contract may be once fixed.
    parked = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(
        list_parked(service_config["AMQP_URI"], [CERTIFICATES_QUEUE])), message="two parked")
    assert sorted((p["replayable"], p["error"].split(":")[0]) for p in parked) == [
        (False, "RefusedMessage"), (True, "ContractViolation")]


# --- the whole system under its own broker users ------------------------------------------

def test_the_system_works_under_its_own_broker_users(
        container_factory, service_config, enrolment_db, funding_db, register_file,
        broker_users):
    """Every service connects as its own user with exactly the permissions `lotsen broker
    setup` grants, a provider as its own: an enrolment is funded, attendance completes it, a
    certificate is issued and mailed with its PDF (an RPC from notifications), nothing parked.
    A consumer whose first attempt fails believes its own retry copy (it comes back under the
    consumer's user, not the producer's)."""
    from tests.integration.helpers import Recorder
    import requests

    from services.enrolment import domain as enrolment_domain
    from services.gateway.service import GatewayService
    from services.notifications.models import Notice
    from tests.integration.test_gateway import free_port
    from tests.integration.test_notifications import notifications_db, world

    classes = topology.service_classes({})
    subscriptions = topology.subscriptions(classes)
    suffix = uuid.uuid4().hex[:6]
    users, uris = {}, {}
    for access in broker_access.definitions(classes, subscriptions):
        service = access.user.removeprefix("lotsen-")
        access = dataclasses.replace(access, user=f"{access.user}-{suffix}")
        users[service], uris[service] = access.user, broker_users(access)
    with_recorder = topology.subscriptions([*classes, Recorder])
    recorder_access = broker_access.service_access(
        "recorder", [*classes, Recorder], with_recorder, f"lotsen-recorder-{suffix}")
    recorder_uri = broker_users(recorder_access)
    broker_access.Management(MANAGEMENT).declare_topology(
        vhost_of(service_config), with_recorder, [c.name for c in classes])
    address = f"127.0.0.1:{free_port()}"
    base = dict(service_config, BROKER_USERS=users, EXTRA_SERVICE_CLASSES=[],
                WEB_SERVER_ADDRESS=address)
    for cls in (EnrolmentService, FundingService, CertificatesService, NotificationsService,
                GatewayService):
        container_factory(cls, dict(base, AMQP_URI=uris[cls.name])).start()
    Recorder.reset("fail_n:1")
    container_factory(Recorder, dict(base, AMQP_URI=recorder_uri)).start()

    # Courses that took place (modules 9 and 8 days ago): attendance can be recorded now.
    w = world(enrolment_db, funding_db, register_file, first_module_in_days=-10)
    key = enrolment_db.run(lambda s: enrolment_domain.register_municipality(
        s, w["a"], "Hauptamt A", "hauptamt@a.example")[1])
    with SignedRpc("funding", base, operator=True) as funding:
        wait_for(lambda: _published(funding), message="programme reached funding")
    headers = {"Authorization": f"Bearer {key}"}
    answer = requests.post(f"http://{address}/api/v1/enrolments", headers=headers, timeout=20,
                           json={"course_id": w["courses"][1], "participant": participant(1)})
    assert answer.status_code == 201, answer.text
    enrolment_id = answer.json()["id"]

    def enrolment():
        return requests.get(f"http://{address}/api/v1/enrolments/{enrolment_id}",
                            headers=headers, timeout=20).json()
    wait_for(lambda: enrolment()["funding"]["status"] == "granted", timeout=30,
             message="funding decided under restricted users")
    created = wait_for(lambda: [e for e in Recorder.received
                                if e["payload"]["enrolment_id"] == enrolment_id],
                       message="the recorder's retry copy believed")
    assert Recorder.attempts[created[0]["event_id"]] == 2

    provider = f"provider-vwa-{suffix}"
    provider_uri = broker_users(broker_access.provider_access(provider, classes))
    with ProviderClient(provider_uri, w["token"], timeout=20) as client:
        for module in (1, 2):
            client.record_attendance(w["courses"][1], module, [enrolment_id])
    wait_for(lambda: (enrolment().get("certificate") or {}).get("number"), timeout=30,
             message="certificate issued and known to enrolment")
    handle = notifications_db(base)
    try:
        wait_for(lambda: handle.run(lambda s: s.scalar(
            select(func.count()).select_from(Notice).where(
                Notice.template == "certificate_issued", Notice.status == "sent"))) == 1,
            timeout=40, message="certificate mailed with its PDF")
    finally:
        handle.dispose()
    assert list_parked(service_config["AMQP_URI"], [s.queue_name for s in with_recorder]) == []


def _published(funding):
    try:
        return funding.budget_state("BW-DL")
    except Exception:
        return None


# --- the operator's broker commands ---------------------------------------------------------

def test_broker_setup_and_add_provider_through_the_management_api(
        rabbit_config, tmp_path, monkeypatch):
    """`lotsen broker setup` makes each service's user with the derived permissions and the
    topology; refuses guest and a missing password before changing anything; `add-provider`
    prints a working password once; `remove-provider` deletes the user."""
    import json as json_module

    import yaml
    from click.testing import CliRunner

    from services.cli import main

    suffix = uuid.uuid4().hex[:6]
    users = {name: f"lotsen-{name}-{suffix}" for name in
             ("enrolment", "funding", "certificates", "notifications", "gateway")}
    management = broker_access.Management(MANAGEMENT)
    path = tmp_path / "broker.yaml"
    base = {"AMQP_URI": rabbit_config["AMQP_URI"], "LOTSEN_HOME": str(tmp_path)}
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", MANAGEMENT)

    def run(*args, **config):
        path.write_text(yaml.safe_dump(dict(base, **config)))
        return CliRunner().invoke(main, ["--config", str(path), *args])

    vhost = vhost_of(rabbit_config)
    try:
        refused = run("broker", "setup", BROKER_USERS=dict(users, funding="guest"))
        assert refused.exit_code == 2 and "guest" in refused.output
        missing = run("broker", "setup", BROKER_USERS=users)
        assert missing.exit_code == 2 and "ENROLMENT_BROKER_PASSWORD" in missing.output
        assert not any(management.user_exists(u) for u in users.values())  # nothing changed
        for name in users:
            monkeypatch.setenv(f"{name.upper()}_BROKER_PASSWORD", f"pw-{name}-{suffix}")
        done = run("broker", "setup", BROKER_USERS=users)
        assert done.exit_code == 0, done.output
        granted = management.request("GET", "permissions", vhost, users["funding"])
        expected = broker_access.service_access(
            "funding", topology.service_classes({}),
            topology.subscriptions(topology.service_classes({})), users["funding"])
        assert (granted["configure"], granted["write"], granted["read"]) == (
            expected.configure, expected.write, expected.read)
        queues = {q["name"] for q in management.request("GET", "queues", vhost)}
        assert CERTIFICATES_QUEUE in queues and CERTIFICATES_QUEUE + ".parked" in queues
        with Connection(f"pyamqp://{users['funding']}:pw-funding-{suffix}@127.0.0.1:5672/"
                        f"{vhost}") as connection:
            connection.ensure_connection(max_retries=1)

        added = run("broker", "add-provider", f"Test Schule {suffix}")
        assert added.exit_code == 0, added.output
        user = added.output.split("broker user: ")[1].split()[0]
        password = added.output.split("password: ")[1].split()[0]
        assert user == f"provider-test-schule-{suffix}"
        topic = management.request("GET", "topic-permissions", vhost, user)
        assert topic[0]["exchange"] == "nameko-rpc" and "create_course" in topic[0]["write"]
        with Connection(f"pyamqp://{user}:{password}@127.0.0.1:5672/{vhost}") as connection:
            connection.ensure_connection(max_retries=1)
        listed = run("broker", "permissions", "--provider", f"Test Schule {suffix}",
                     BROKER_USERS=users)
        assert {a["user"] for a in json_module.loads(listed.output)} == {*users.values(), user}
        assert run("broker", "remove-provider", f"Test Schule {suffix}").exit_code == 0
        assert not management.user_exists(user)
    finally:
        for user in users.values():
            management.delete_user(user)
