"""Outbox, topology, retries, parking and the inbox, against the real broker and database."""
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from nameko.standalone.rpc import ServiceRpcProxy

from services.common import topology
from services.common.events import build_event
from services.common.messaging import list_parked
from services.enrolment.models import Enrolment, InboxRecord
from services.enrolment.service import EnrolmentService
from tests.integration.helpers import (
    producer_dispatcher,
    Recorder,
    gemeinden,
    outbox_events,
    participant,
    seed,
    wait_for,
)

RECORDER_QUEUE = "evt-enrolment-enrolment_created--recorder.on_enrolment_created"


@pytest.fixture
def seeded(enrolment_db, register_file):
    return seed(enrolment_db, register_file, capacity=2)


@pytest.fixture(autouse=True)
def fresh_recorder():
    Recorder.reset()
    yield
    Recorder.reset()


def enrol_directly(handle, register_file, course_id, n=1):
    """Write enrolments (and their events) straight into the database, as the CLI would."""
    from services.enrolment import domain
    for i, ags in enumerate(gemeinden(register_file, n)):
        handle.run(domain.enrol, ags, {"course_id": course_id, "participant": participant(i)})


def unpublished(handle):
    from services.enrolment.models import OutboxMessage
    return handle.run(lambda s: s.query(OutboxMessage)
                      .filter(OutboxMessage.published_at.is_(None)).count())


def test_event_published_right_after_start_up_reaches_a_consumer_started_later(
        seeded, enrolment_db, container_factory, service_config, register_file, rabbit_manager):
    enrol_directly(enrolment_db, register_file, seeded["courses"][0])
    vhost = service_config["vhost"]
    assert RECORDER_QUEUE not in [q["name"] for q in rabbit_manager.get_queues(vhost)]

    producer = container_factory(EnrolmentService, service_config)
    producer.start()
    wait_for(lambda: unpublished(enrolment_db) == 0, message="outbox relayed")
    # The consumer did not exist when the event went out; its queue did.
    consumer = container_factory(Recorder, service_config)
    consumer.start()
    wait_for(lambda: Recorder.received, message="event delivered")
    [event] = Recorder.received
    assert event["event_type"] == "enrolment_created"
    assert event["event_id"] == outbox_events(enrolment_db, "enrolment_created")[0]["event_id"]


def test_topology_lists_every_consumer_queue_of_the_system():
    queues = [s.queue_name for s in topology.subscriptions(topology.service_classes({}))]
    assert "evt-funding-funding_granted--enrolment.on_funding_granted" in queues
    assert "evt-certificates-certificate_issued--enrolment.on_certificate_issued" in queues


def test_transient_failure_is_retried_with_backoff_then_handled(
        container_factory, service_config, rabbit_manager):
    Recorder.reset("fail_n:2")
    consumer = container_factory(Recorder, service_config)
    consumer.start()
    envelope = build_event("enrolment", "enrolment_created", sample_created())
    dispatch = producer_dispatcher(service_config)
    dispatch("enrolment", "enrolment_created", envelope)
    wait_for(lambda: Recorder.received, message="handled after retries")
    assert Recorder.attempts[envelope["event_id"]] == 3
    assert list_parked(service_config["AMQP_URI"], [RECORDER_QUEUE]) == []


def run_cli(service_config, tmp_path, *args):
    import yaml
    from click.testing import CliRunner

    from services.cli import main
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({
        "AMQP_URI": service_config["AMQP_URI"],
        "EXTRA_SERVICE_CLASSES": service_config["EXTRA_SERVICE_CLASSES"]}))
    result = CliRunner().invoke(main, ["--config", str(path), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_poison_message_is_parked_not_spun_and_can_be_replayed(
        container_factory, service_config, tmp_path):
    Recorder.reset("fail")
    consumer = container_factory(Recorder, service_config)
    consumer.start()
    envelope = build_event("enrolment", "enrolment_created", sample_created())
    dispatch = producer_dispatcher(service_config)
    dispatch("enrolment", "enrolment_created", envelope)
    uri = service_config["AMQP_URI"]
    parked = wait_for(lambda: list_parked(uri, [RECORDER_QUEUE]), message="message parked")
    # Exactly max_attempts tries, then parked: no spin, nothing lost.
    attempts = service_config["EVENT_RETRY"]["max_attempts"]
    assert Recorder.attempts[envelope["event_id"]] == attempts
    assert parked[0]["event_id"] == envelope["event_id"]
    assert parked[0]["attempts"] == attempts and "RuntimeError" in parked[0]["error"]
    assert Recorder.received == []
    # Listing does not take the messages away.
    assert len(list_parked(uri, [RECORDER_QUEUE])) == 1

    Recorder.behaviour = "ok"  # the operator fixed the cause, then uses the CLI
    listed = run_cli(service_config, tmp_path, "parked", "list")
    assert envelope["event_id"] in listed and "1 parked message(s)" in listed
    replayed = run_cli(service_config, tmp_path, "parked", "replay", "--queue", RECORDER_QUEUE)
    assert "replayed 1 message(s)" in replayed
    wait_for(lambda: Recorder.received, message="replayed message handled")
    assert Recorder.received[0]["event_id"] == envelope["event_id"]
    assert list_parked(uri, [RECORDER_QUEUE]) == []


def test_message_breaking_its_contract_is_parked_at_once(container_factory, service_config):
    consumer = container_factory(Recorder, service_config)
    consumer.start()
    dispatch = producer_dispatcher(service_config)
    dispatch("enrolment", "enrolment_created", {"not": "an envelope"})
    uri = service_config["AMQP_URI"]
    parked = wait_for(lambda: list_parked(uri, [RECORDER_QUEUE]), message="parked")
    assert parked[0]["attempts"] == 1 and "ContractViolation" in parked[0]["error"]


def sample_created():
    return {"enrolment_id": uuid.uuid4(), "programme_id": uuid.uuid4(),
            "course_id": uuid.uuid4(), "ags": "08226098", "status": "confirmed",
            "waitlist_position": None, "enrolled_at": datetime.now(timezone.utc),
            "participant": {"given_name": "Jörg", "family_name": "Groß",
                            "email": "jg@example.org"}, "sequence": 1}


def funding_event(event_type, enrolment_id, occurred_at=None, sequence=1, **extra):
    """A funding event; ``sequence=None`` makes a version 1 event (from before sequences)."""
    payload = {"enrolment_id": enrolment_id, "programme_id": uuid.uuid4(), "ags": "08226098"}
    payload.update(extra)
    if sequence is None:
        envelope = build_event("funding", event_type, payload, version=1)
    else:
        envelope = build_event("funding", event_type, dict(payload, sequence=sequence))
    if occurred_at:
        envelope["occurred_at"] = occurred_at.isoformat()
    return envelope


def test_redelivered_funding_event_changes_the_read_model_once(
        seeded, container_factory, service_config, enrolment_db, register_file):
    enrol_directly(enrolment_db, register_file, seeded["courses"][0])
    enrolment_id = enrolment_db.run(lambda s: str(s.query(Enrolment.id).scalar()))
    service = container_factory(EnrolmentService, service_config)
    service.start()
    granted = funding_event("funding_granted", enrolment_id, kind="guaranteed", amount_cents=50000)
    dispatch = producer_dispatcher(service_config)
    dispatch("funding", "funding_granted", granted)
    dispatch("funding", "funding_granted", granted)  # the same event again

    def handled():
        return enrolment_db.run(lambda s: s.query(InboxRecord).count())
    wait_for(lambda: handled() >= 1, message="funding event handled")
    with ServiceRpcProxy("enrolment", service_config) as enrolment:
        enrolment.health()  # a round trip: the second copy has been taken off the queue by now
    assert handled() == 1
    state = enrolment_db.run(lambda s: s.get(Enrolment, uuid.UUID(enrolment_id)))
    assert (state.funding_status, state.funding_kind) == ("granted", "guaranteed")


def deliver_in_turn(config, enrolment_db, *events):
    """Publish (producer, envelope) pairs one after another, each handled before the next."""
    dispatch = producer_dispatcher(config)
    for n, (producer, envelope) in enumerate(events, start=1):
        dispatch(producer, envelope["event_type"], envelope)
        wait_for(lambda n=n: enrolment_db.run(lambda s: s.query(InboxRecord).count()) == n)


def test_older_funding_decision_arriving_late_does_not_overwrite_a_newer_one(
        seeded, container_factory, service_config, enrolment_db, register_file):
    enrol_directly(enrolment_db, register_file, seeded["courses"][0])
    enrolment_id = enrolment_db.run(lambda s: str(s.query(Enrolment.id).scalar()))
    service = container_factory(EnrolmentService, service_config)
    service.start()
    now = datetime.now(timezone.utc)
    # The grant is older by its sequence, although another funding instance (its clock five
    # seconds ahead) stamped it later: the sequence decides, not the clocks.
    released = funding_event("funding_released", enrolment_id, occurred_at=now, sequence=2,
                             amount_cents=50000)
    granted = funding_event("funding_granted", enrolment_id, sequence=1,
                            occurred_at=now + timedelta(seconds=5), kind="pool",
                            amount_cents=50000)
    deliver_in_turn(service_config, enrolment_db, ("funding", released), ("funding", granted))
    state = enrolment_db.run(lambda s: s.get(Enrolment, uuid.UUID(enrolment_id)))
    assert state.funding_status == "released"


def test_a_batch_is_confirmed_as_a_whole_and_a_dead_connection_is_replaced(rabbit_config):
    from kombu import Connection, Exchange, Queue

    from services.common.messaging import BatchPublisher

    uri = rabbit_config["AMQP_URI"]
    exchange = Exchange("batch-test", type="topic", durable=True)
    with Connection(uri) as connection:
        queue = Queue("batch-test-q", exchange=exchange, routing_key="#", durable=True)
        queue(connection.channel()).declare()
    publisher = BatchPublisher(uri, exchange)
    events = [({"event_type": "thing_done", "payload": {"n": n}}, "thing_done", f"id-{n}")
              for n in range(50)]
    confirmed, failure = publisher.publish(events)
    assert (confirmed, failure) == (list(range(50)), None)

    publisher.connection.connection.sock.close()  # the broker connection dies under it
    confirmed, failure = publisher.publish(events[:5])
    assert confirmed == [] and failure is not None  # nothing claimed that was not confirmed
    confirmed, failure = publisher.publish(events[:5])  # a fresh connection, from tag 1 again
    assert (confirmed, failure) == ([0, 1, 2, 3, 4], None)
    publisher.close()

    with Connection(uri) as connection:
        received = []
        bound = queue(connection.channel())
        while (message := bound.get(no_ack=True)) is not None:
            received.append(message.properties["message_id"])
    assert received[:50] == [f"id-{n}" for n in range(50)]
    assert sorted(received[50:]) == [f"id-{n}" for n in range(5)]


def test_events_from_before_sequences_are_still_ordered_by_their_time(
        seeded, container_factory, service_config, enrolment_db, register_file):
    enrol_directly(enrolment_db, register_file, seeded["courses"][0])
    enrolment_id = enrolment_db.run(lambda s: str(s.query(Enrolment.id).scalar()))
    container_factory(EnrolmentService, service_config).start()
    now = datetime.now(timezone.utc)
    released = funding_event("funding_released", enrolment_id, occurred_at=now, sequence=None,
                             amount_cents=50000)
    granted = funding_event("funding_granted", enrolment_id, sequence=None,
                            occurred_at=now - timedelta(seconds=5), kind="pool",
                            amount_cents=50000)
    assert released["version"] == granted["version"] == 1
    deliver_in_turn(service_config, enrolment_db, ("funding", released), ("funding", granted))
    state = enrolment_db.run(lambda s: s.get(Enrolment, uuid.UUID(enrolment_id)))
    assert state.funding_status == "released"


def test_a_late_certificate_issued_does_not_undo_its_revocation(
        seeded, container_factory, service_config, enrolment_db, register_file):
    """Issued and revoked by different certificates instances (the issuing one's clock ahead):
    the sequence, not the time, decides what enrolment shows."""
    enrol_directly(enrolment_db, register_file, seeded["courses"][0])
    enrolment_id = enrolment_db.run(lambda s: str(s.query(Enrolment.id).scalar()))
    container_factory(EnrolmentService, service_config).start()
    now = datetime.now(timezone.utc)
    number = "BW-DL-2026-000001"
    issued = build_event("certificates", "certificate_issued", {
        "enrolment_id": enrolment_id, "certificate_number": number,
        "verification_url": "https://lotsen.example/verify/X", "issued_at": now, "sequence": 1})
    issued["occurred_at"] = (now + timedelta(seconds=5)).isoformat()
    revoked = build_event("certificates", "certificate_revoked", {
        "enrolment_id": enrolment_id, "certificate_number": number, "reason": "Irrtum",
        "revoked_at": now, "sequence": 2})
    deliver_in_turn(service_config, enrolment_db, ("certificates", revoked),
                    ("certificates", issued))  # the retried, older one last
    state = enrolment_db.run(lambda s: s.get(Enrolment, uuid.UUID(enrolment_id)))
    assert (state.certificate_number, state.certificate_status) == (number, "revoked")
