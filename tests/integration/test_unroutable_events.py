"""An event that no queue takes is returned by the broker, kept in the outbox, counted, and
sent again once the relay has declared its consumers' queues anew (a replaced broker, or a
release whose new queues do not exist yet)."""
import pytest
from kombu import Connection
from prometheus_client import REGISTRY
from sqlalchemy import select

from services.common import broker_access, topology
from services.common.messaging import OutboxRelay, UnroutableEvents
from services.enrolment.models import OutboxMessage
from tests.integration.helpers import seed
from tests.integration.test_trust import MANAGEMENT, vhost_of


def unpublished(handle, event_type):
    return handle.run(lambda s: len(s.scalars(select(OutboxMessage.event_id).where(
        OutboxMessage.event_type == event_type,
        OutboxMessage.published_at.is_(None))).all()))


def test_a_returned_event_stays_in_the_outbox_until_its_queues_exist_again(
        service_config, enrolment_db, register_file):
    seed(enrolment_db, register_file)  # writes programme_published to the outbox
    topology.declare(service_config["AMQP_URI"], service_config)
    queues = [s.queue_name for s in topology.subscriptions(
        topology.service_classes(service_config))
        if s.source_service == "enrolment" and s.event_type == "programme_published"]
    management = broker_access.Management(MANAGEMENT)
    for name in queues:  # the broker was replaced: the queues are gone
        management.request("DELETE", "queues", vhost_of(service_config), name)
    before = REGISTRY.get_sample_value("lotsen_unroutable_events_total", {
        "service": "enrolment", "event_type": "programme_published"}) or 0

    relay = OutboxRelay(enrolment_db, "enrolment", service_config)
    try:
        with pytest.raises(UnroutableEvents):
            relay.publish_pending()
        assert unpublished(enrolment_db, "programme_published") == 1
        assert REGISTRY.get_sample_value("lotsen_unroutable_events_total", {
            "service": "enrolment", "event_type": "programme_published"}) - before == 1
        # The relay declared the queues again: the next try delivers to every consumer.
        relay.publish_pending()
    finally:
        relay.close()
    assert unpublished(enrolment_db, "programme_published") == 0
    assert queues
    with Connection(service_config["AMQP_URI"]) as connection:
        channel = connection.channel()
        for name in queues:  # each consumer's queue holds the event now
            message = channel.basic_get(name, no_ack=True)
            assert message is not None and message.headers["nameko.event_type"] == \
                "programme_published"
