"""QUEUE_TYPE: quorum declares every durable queue as a quorum queue, on the real broker: the
RPC queue, each consumer's queue, its retry and parked queues; calls, retries and parking
work as with classic queues."""
from nameko.standalone.rpc import ServiceRpcProxy

from services.common import broker_access, topology
from services.common.events import build_event
from services.common.messaging import list_parked
from services.enrolment.service import EnrolmentService
from tests.integration.helpers import Recorder, producer_dispatcher, wait_for
from tests.integration.test_messaging import sample_created
from tests.integration.test_trust import MANAGEMENT, vhost_of

RECORDER_QUEUE = "evt-enrolment-enrolment_created--recorder.on_enrolment_created"


def queue_types(config):
    management = broker_access.Management(MANAGEMENT)
    return {q["name"]: q.get("type") for q in
            management.request("GET", "queues", vhost_of(config))}


def test_every_queue_is_a_quorum_queue_and_retries_still_work(container_factory,
                                                              service_config):
    config = dict(service_config, QUEUE_TYPE="quorum")
    topology.declare(config["AMQP_URI"], config)
    container_factory(EnrolmentService, config).start()
    Recorder.reset("fail_n:1")
    container_factory(Recorder, config).start()

    envelope = build_event("enrolment", "enrolment_created", sample_created())
    producer_dispatcher(config)("enrolment", "enrolment_created", envelope)
    wait_for(lambda: Recorder.received, message="handled on the second attempt")
    assert Recorder.attempts[envelope["event_id"]] == 2  # went through the quorum retry queue
    with ServiceRpcProxy("enrolment", config, timeout=20) as anyone:
        assert anyone.health()["broker"] == "ok"

    Recorder.reset("fail")
    producer_dispatcher(config)("enrolment", "enrolment_created",
                                build_event("enrolment", "enrolment_created", sample_created()))
    wait_for(lambda: list_parked(config["AMQP_URI"], [RECORDER_QUEUE]), timeout=30,
             message="parked in a quorum queue")
    types = queue_types(config)
    durable = {name: kind for name, kind in types.items() if not name.startswith("rpc.reply")}
    assert "rpc-enrolment" in durable and RECORDER_QUEUE + ".retry" in durable
    assert set(durable.values()) == {"quorum"}, durable
    retry = broker_access.Management(MANAGEMENT).request(
        "GET", "queues", vhost_of(config), RECORDER_QUEUE + ".retry")
    assert retry["arguments"]["x-dead-letter-strategy"] == "at-least-once"
    assert len([n for n in durable if n.startswith("evt-")]) == 3 * len(
        topology.subscriptions(topology.service_classes(config)))
