"""Every service consumes through our broker-restart-proof QueueConsumer, never nameko's own:
one of nameko's in a container would open a second connection and could die with a restart."""
from nameko import messaging as nameko_messaging
from nameko.containers import ServiceContainer

from services.common import broker, topology


def test_every_service_consumes_through_the_restart_proof_queue_consumer():
    consumers = {}
    for cls in topology.service_classes({}):
        container = ServiceContainer(cls, {"AMQP_URI": "memory://"})
        queue_consumers = [ext for ext in container.extensions
                           if isinstance(ext, nameko_messaging.QueueConsumer)]
        assert all(type(ext) is broker.QueueConsumer for ext in queue_consumers), cls.name
        consumers[cls.name] = len(queue_consumers)
    # One shared consumer (one connection) per service that takes messages; the gateway too,
    # for its RPC replies.
    assert consumers == {name: 1 for name in consumers}
    assert {"enrolment", "funding", "certificates", "notifications", "gateway"} <= set(consumers)
