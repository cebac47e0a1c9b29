"""Every service consumes through our broker-restart-proof QueueConsumer, never nameko's own:
one of nameko's in a container would open a second connection and could die with a restart.
And that consumer does not keep a stopping service waiting a second per step, and a broker
whose certificate we do not trust is not tried again."""
import socket
from contextlib import contextmanager
from unittest.mock import Mock

import pytest
from eventlet.event import Event
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


def test_a_consumer_winding_down_waits_briefly_and_exits_when_the_last_provider_left():
    """The consumer thread handles leaving providers only between waits in the broker socket.
    Waits are counted, not timed: idle, each is kombu's 1 s; once a provider leaves, short; once
    the last has left, the thread exits without waiting again."""
    consumer = broker.QueueConsumer()
    first, second = object(), object()
    consumer._consumers = {first: Mock(), second: Mock()}
    left = {first: Event(), second: Event()}
    waits = []

    class Connection:
        def drain_events(self, timeout):
            waits.append(timeout)
            if len(waits) == 2:  # the entrypoints are being stopped: the first one leaves
                consumer._pending_remove_providers[first] = left[first]
            if len(waits) == 4:
                consumer._pending_remove_providers[second] = left[second]
            raise socket.timeout()

        def heartbeat_check(self):
            pass

    @contextmanager
    def context(**kwargs):
        yield Connection(), None, None
    consumer.consumer_context = context

    assert list(consumer.consume(limit=None)) == []  # no message came
    assert waits == [1, 1, broker.WINDING_DOWN_POLL_S, broker.WINDING_DOWN_POLL_S]
    assert left[first].ready() and left[second].ready()
    assert consumer._consumers == {} and consumer.should_stop


def _connection_failing_with(errors, monkeypatch):
    """A kombu connection whose every attempt is recorded and fails with the next of
    ``errors`` (then succeeds); kombu's pauses between retries are recorded, not slept."""
    from kombu import Connection
    from kombu.utils import functional
    connection = Connection("pyamqp://guest:guest@127.0.0.1:1//")
    attempts, pauses = [], []
    monkeypatch.setattr(functional, "sleep", pauses.append)

    def attempt():
        attempts.append(1)
        if len(attempts) <= len(errors):
            raise errors[len(attempts) - 1]
        return Mock()
    connection._connection_factory = attempt
    return connection, attempts, pauses


def test_a_broker_certificate_we_do_not_trust_is_refused_without_retrying(monkeypatch):
    import ssl

    from kombu.exceptions import OperationalError

    from services.common import config as cfg
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed: Hostname mismatch")
    connection, attempts, pauses = _connection_failing_with([mismatch] * 4, monkeypatch)
    with pytest.raises(OperationalError, match="Hostname mismatch") as raised:
        cfg.ensure_connected(connection, max_retries=3)
    assert (len(attempts), pauses) == (1, [])
    assert cfg.untrusted_certificate(raised.value) is mismatch
    # A broker that is not up yet is tried again, as before.
    connection, attempts, pauses = _connection_failing_with(
        [ConnectionRefusedError(111, "refused")] * 2, monkeypatch)
    cfg.ensure_connected(connection, max_retries=3)
    assert len(attempts) == 3 and len(pauses) >= 2
    assert cfg.untrusted_certificate(OperationalError("refused")) is None
