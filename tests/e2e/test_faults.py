"""Faults in the middle of a burst, the whole system running, every service in its own process.

A burst is 48 enrolments from 8 municipalities into two courses of 22 seats (so 4 wait), with
money for the 1,136 guaranteed seats and 24 more (so some extras wait for funding), sent through
the gateway four at a time, then 8 cancellations. A client that gets no answer or a 5xx tries
again with the same Idempotency-Key, as the README tells clients to. Each test ends in
``System.settle``: every published event handled once, nothing parked, every expected mail
received once, and ``lotsen funding check`` finds every invariant holding.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import time
from datetime import timedelta

import eventlet
import pytest
import requests
from kombu import Connection, Queue
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import create_engine, text

from services.common import topology
from tests.conftest import ON_CI
from tests.integration.helpers import gemeinden, wait_for
from services.common.clock import calendar_today

PER_BODY = 6
CANCELLED = 8
ENROLMENTS = 8 * PER_BODY


class Burst:
    """The municipalities' side of a burst, run in a green thread beside the test."""

    def __init__(self, system, world, seed: int):
        self.system, self.world = system, world
        self.rng = random.Random(seed)
        self.enrolled: list[tuple[str, str]] = []
        self.cancelled: list[str] = []
        self.retries = 0
        self._thread = None

    def request(self, method: str, path: str, ags: str, idempotency_key: str, json=None,
                expect=(200, 201)) -> dict:
        headers = {"Authorization": f"Bearer {self.world['keys'][ags]}",
                   "Idempotency-Key": idempotency_key}
        deadline = time.monotonic() + 180
        while True:
            try:
                response = requests.request(method, self.system.base + path, json=json,
                                            headers=headers, timeout=30)
                if response.status_code in expect:
                    return response.json()
                assert response.status_code >= 500, response.text  # a 4xx is a real error
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"{method} {path} never went through"
            self.retries += 1
            eventlet.sleep(0.5)

    def _enrol(self, n: int, ags: str):
        course = self.world["courses"][n % 2]
        body = {"course_id": course, "participant": {
            "given_name": "Jürgen", "family_name": f"Weiß{n}",
            "email": f"teilnehmer{n}@{self.world['towns'][ags]}.example"}}
        enrolment = self.request("POST", "/api/v1/enrolments", ags, f"burst-{n}", body)
        self.enrolled.append((ags, enrolment["id"]))

    def _run(self):
        pool = eventlet.GreenPool(4)
        order = [ags for ags in self.world["keys"] for _ in range(PER_BODY)]
        self.rng.shuffle(order)
        for n, ags in enumerate(order):
            pool.spawn_n(self._enrol, n, ags)
        pool.waitall()
        for ags, enrolment_id in self.rng.sample(self.enrolled, CANCELLED):
            self.request("DELETE", f"/api/v1/enrolments/{enrolment_id}", ags,
                         f"cancel-{enrolment_id}")
            self.cancelled.append(enrolment_id)

    def start(self):
        self._thread = eventlet.spawn(self._run)
        return self

    def wait(self):
        self._thread.wait()
        assert len(self.enrolled) == ENROLMENTS and len(self.cancelled) == CANCELLED
        print(f"\nburst: {ENROLMENTS} enrolments, {CANCELLED} cancellations, "
              f"{self.retries} client retries")


def open_world(system, register_file, services=None) -> dict:
    """Programme, provider, municipalities and two courses; then the given services run."""
    ags_list = gemeinden(register_file, 8)
    world = system.set_up_programme(register_file, {a: f"gemeinde{a}" for a in ags_list},
                                    extra_seats=24)
    system.start(*(services or ()))
    system.wait_ready(*(services or ()))
    first = calendar_today() + timedelta(days=30)
    with ServiceRpcProxy("enrolment", {"AMQP_URI": system.config["AMQP_URI"]}, timeout=30,
                         context_data={"provider_token": world["provider_token"]}) as provider:
        world["courses"] = [provider.create_course({
            "programme_code": world["code"], "title": f"Basisseminar {n}",
            "location": "Wiesloch", "capacity": 22, "open": True,
            "modules": [{"number": m, "title": f"Modul {m}",
                         "date": (first + timedelta(days=m)).isoformat()}
                        for m in range(1, 6)]})["id"] for n in (1, 2)]
    return world


def mails(system) -> int:
    return len(system.inbox.messages)


def test_funding_killed_mid_burst_then_restarted(make_system, register_file):
    system = make_system()
    burst = Burst(system, open_world(system, register_file), seed=1).start()
    wait_for(lambda: len(burst.enrolled) >= 12, timeout=120, message="burst under way")
    system.kill("funding")
    eventlet.sleep(2)  # enrolments go on; their events wait in funding's queues
    system.start("funding")
    burst.wait()
    system.settle()


def test_notifications_killed_while_sending_then_restarted(make_system, register_file):
    system = make_system()
    burst = Burst(system, open_world(system, register_file), seed=2).start()
    wait_for(lambda: mails(system) >= 20, timeout=120, message="mail under way")
    system.kill("notifications")
    eventlet.sleep(0.5)  # a mail the SMTP server was still taking in lands now
    before = mails(system)
    eventlet.sleep(2)
    assert mails(system) == before  # nobody else sends
    system.start("notifications")
    burst.wait()
    # A round's mails are recorded as sent when the round ends: at most the round under way
    # at the kill can arrive twice, each with the same Message-ID (see the Mailer).
    from services.notifications.service import ROUND_SIZE
    round_size = int((system.config.get("MAIL") or {}).get("round_size", ROUND_SIZE))
    system.settle(allowed_resends=round_size)


def _rabbitmqctl(*args):
    if shutil.which("rabbitmqctl") is None:
        message = "rabbitmqctl is not installed here: cannot restart the broker"
        pytest.fail(message) if ON_CI else pytest.skip(message)
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=180,
                   stdout=subprocess.DEVNULL)


def _broker_answers(uri) -> bool:
    try:
        with Connection(uri, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


def test_rabbitmq_restarted_mid_burst(make_system, register_file):
    # Short RPC timeouts in the gateway: a reply lost with the broker means a 503 and a retry.
    system = make_system(GATEWAY={"rpc_timeout_s": 5})
    burst = Burst(system, open_world(system, register_file), seed=3).start()
    wait_for(lambda: len(burst.enrolled) >= 12, timeout=120, message="burst under way")
    _rabbitmqctl("stop_app")
    try:
        eventlet.sleep(2)
    finally:
        _rabbitmqctl("start_app")
    wait_for(lambda: _broker_answers(system.config["AMQP_URI"]), timeout=60,
             message="broker back")
    burst.wait()
    system.settle(timeout=240)
    assert all(p.poll() is None for p in system.processes.values())  # reconnected, not died


def test_database_connections_dropped_mid_burst(make_system, register_file):
    system = make_system()
    burst = Burst(system, open_world(system, register_file), seed=4).start()
    admin_url = system.config["DATABASES"]["funding"].rsplit("/", 1)[0] + "/postgres"
    databases = [url.rsplit("/", 1)[1] for url in system.config["DATABASES"].values()]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    dropped = 0
    try:
        for _ in range(5):
            wait_for(lambda: len(burst.enrolled) >= 6, timeout=120, message="burst under way")
            with admin.connect() as conn:
                dropped += conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = ANY(:dbs) AND pid <> pg_backend_pid()"),
                    {"dbs": databases}).scalar()
            eventlet.sleep(0.5)
    finally:
        admin.dispose()
    assert dropped > 0
    burst.wait()
    system.settle()


def test_smtp_refusing_mail_for_a_while(make_system, register_file):
    system = make_system()
    burst = Burst(system, open_world(system, register_file), seed=5).start()
    wait_for(lambda: mails(system) >= 10, timeout=120, message="mail under way")
    system.inbox.refuse = "451"
    eventlet.sleep(0.5)  # a mail already past RCPT still lands
    before = mails(system)
    eventlet.sleep(4)
    assert mails(system) == before
    system.inbox.refuse = None
    burst.wait()
    system.settle()


# --- messages doubled, out of order, and parked -----------------------------------------------

def _consumer_queues(service: str, event_types=None) -> list[str]:
    return [s.queue_name for s in topology.subscriptions(topology.service_classes())
            if s.consumer_service == service and s.source_service == "enrolment"
            and (event_types is None or s.event_type in event_types)]


def _take(uri: str, queues: list[str]) -> list[tuple[str, object]]:
    taken = []
    with Connection(uri) as connection:
        channel = connection.channel()
        for name in queues:
            queue = Queue(name, channel=channel)
            while (message := queue.get(no_ack=True)) is not None:
                taken.append((name, message))
    return taken


def _put_back(uri: str, messages: list[tuple[str, object]]):
    with Connection(uri, transport_options={"confirm_publish": True}) as connection:
        producer = connection.Producer()
        for name, message in messages:
            producer.publish(message.body, exchange="", routing_key=name,
                             headers=message.headers, content_type=message.content_type,
                             content_encoding=message.content_encoding, delivery_mode=2,
                             message_id=message.properties.get("message_id"),
                             user_id=message.properties.get("user_id"))


DEPENDENCIES = ("programme_published", "municipality_registered")


def _burst_with_consumers_stopped(make_system, register_file, seed, **overrides):
    """The burst with funding and notifications not running: their events wait in the queues."""
    system = make_system(**overrides)
    world = open_world(system, register_file, ["enrolment", "certificates", "gateway"])
    burst = Burst(system, world, seed=seed).start()
    burst.wait()
    wait_for(lambda: system.published()[1] == 0, timeout=60, message="enrolment outbox sent")
    return system


def test_every_event_twice_in_shuffled_order_and_dependencies_last(make_system, register_file):
    system = _burst_with_consumers_stopped(
        make_system, register_file, seed=6,
        EVENT_RETRY={"max_attempts": 12, "base_delay_ms": 100, "max_delay_ms": 2000})
    uri = system.config["AMQP_URI"]
    queues = _consumer_queues("funding") + _consumer_queues("notifications")
    dependencies = _take(uri, [q for q in queues if any(f"-{d}--" in q for d in DEPENDENCIES)])
    others = _take(uri, queues)
    assert dependencies and len(others) > ENROLMENTS
    doubled = others * 2
    random.Random(6).shuffle(doubled)
    _put_back(uri, doubled)
    system.start("funding", "notifications")
    system.wait_ready("funding", "notifications")
    eventlet.sleep(1)  # enrolments now arrive before the programme and the contacts they need
    assert mails(system) == 0
    _put_back(uri, dependencies * 2)
    system.settle()


def test_events_parked_for_a_missing_dependency_are_listed_and_replayed(make_system,
                                                                          register_file):
    system = _burst_with_consumers_stopped(
        make_system, register_file, seed=7,
        EVENT_RETRY={"max_attempts": 3, "base_delay_ms": 50, "max_delay_ms": 200})
    uri = system.config["AMQP_URI"]
    programme = _take(uri, _consumer_queues("funding", ["programme_published"]))
    assert len(programme) == 1
    system.start("funding", "notifications")
    system.wait_ready("funding", "notifications")
    funding_queues = _consumer_queues("funding")

    def parked_count():
        return int(system.cli("parked", "list").strip().splitlines()[-1].split()[0])

    def settled_without_programme():
        # Every enrolment event funding owes is either handled (a waitlisted one needs no
        # programme) or parked: nothing is still being retried.
        tally = system.tally()
        owed = sum(n for (consumer, event_type), n in tally.missing.items()
                   if consumer == "funding" and event_type != "programme_published")
        parked = [p for p in tally.parked if p["queue"] in funding_queues]
        return owed > 0 and len(parked) == owed and len(tally.parked) == owed
    wait_for(settled_without_programme, timeout=90, message="enrolment events parked")
    parked = parked_count()
    assert parked >= ENROLMENTS - 4  # every confirmed enrolment at least
    listed = system.cli("parked", "list")
    assert "enrolment_created" in listed
    _put_back(uri, programme)  # the fix: the missing programme arrives
    wait_for(lambda: ("funding", "programme_published") not in system.tally().missing,
             timeout=60, message="programme reached funding")
    assert f"replayed {parked} message(s)" in system.cli("parked", "replay")
    system.settle()
