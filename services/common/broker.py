"""nameko's AMQP extensions, changed so that a broker restart cannot kill a service container.

nameko 2.14 kills the whole container when an entrypoint's result handling raises, and it
expects only amqp's ``ConnectionError`` there. When RabbitMQ restarts, the socket is reset
(``ConnectionResetError``) or refused, and sending an RPC reply gives up with kombu's
``OperationalError``. The container then dies while the process lives on: it never consumes
again, and no supervisor notices. Every service therefore uses these classes instead of
nameko's: they treat a lost broker connection as what it is, a message the broker will hand out
again once the consumer has reconnected (kombu's ``ConsumerMixin`` does that by itself).
Event consumers deduplicate with their inbox. An RPC call may run twice, as it always could
when a worker died before its ack; the gateway's calls are idempotent (Idempotency-Key, cancel
returns the first cancellation).

Stopping is bounded too: nameko's consumer thread sits in kombu's reconnect loop for as long as
the broker is away, and killing the container waited for it, so a process told to stop (or
whose service had died) stayed alive until the broker came back.

All of these share one ``QueueConsumer`` per container, as nameko's own classes do.

They also keep a malformed or unauthorised message from doing harm (the trust model in
DESIGN.md: being on the broker proves nothing). A body that cannot be decoded, an RPC request
without a reply address, or a message over ``MAX_MESSAGE_BYTES`` is rejected with a log line
and a metric instead of killing the container; an RPC call whose caller cannot prove it may
call the method is answered ``AuthenticationFailed`` before any worker runs.
"""
from __future__ import annotations

import inspect
import logging
import re
import socket
from contextlib import contextmanager
from functools import partial

import eventlet
from amqp.exceptions import ChannelError
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError
from nameko import messaging as nameko_messaging
from nameko import rpc as nameko_rpc
from nameko.exceptions import ContainerBeingKilled, MalformedRequest

from services.common import callers
from services.common import config as cfg

log = logging.getLogger(__name__)

UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# A reply address: nameko's own (a UUID) or a client's that names its broker user
# ("<user>.<uuid>"). The broker lets services publish replies to exactly these keys.
REPLY_KEY = rf"(?:[A-Za-z0-9_-]{{1,80}}\.)?{UUID}"
REPLY_TO = re.compile(rf"^{REPLY_KEY}$")
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def safe_context(data: dict) -> dict:
    """Context data from message headers, as nameko may use it: strings, and a call id stack
    that is a short list of short strings. Anything else is dropped (a call id stack of
    numbers would raise inside nameko, outside any handler, and kill the container)."""
    clean = {}
    for key, value in (data or {}).items():
        if key == "call_id_stack":
            if isinstance(value, list) and len(value) <= 64 and all(
                    isinstance(item, str) and len(item) <= 256 for item in value):
                clean[key] = value
        elif isinstance(key, str) and isinstance(value, str) and len(value) <= 4096:
            clean[key] = value
    return clean


class SafeHeaders(nameko_messaging.HeaderDecoder):
    def unpack_message_headers(self, message):
        return safe_context(super().unpack_message_headers(message))


def refused(service: str, entrypoint: str, reason: str):
    """The trace a refused message leaves: one log line (no message content) and a metric."""
    from services.common.metrics import REFUSED
    REFUSED.labels(service, entrypoint, reason).inc()
    log.warning("refused a message for %s.%s: %s", service, entrypoint, reason)

# What a broker that went away looks like from here.
BROKER_GONE = (OSError, AmqpConnectionError, OperationalError)

# How long a kill waits for the consumer to close its connection politely.
KILL_WAIT_S = 5.0
WINDING_DOWN_POLL_S = 0.05


class QueueConsumer(nameko_messaging.QueueConsumer):
    """Acks and requeues that find the connection gone do nothing: the broker has already taken
    the message back and will deliver it again. A kill waits a few seconds for the consumer to
    close its connection, not until the broker is back."""

    def kill(self):
        with eventlet.Timeout(KILL_WAIT_S, False):
            super().kill()
            return
        log.warning("the broker did not answer within %.0fs of a kill; dropping the consumer",
                    KILL_WAIT_S)
        self._gt.kill()

    broker_connected = False  # the readiness probe's view of this consumer's connection

    def consume(self, limit=None, timeout=None, safety_interval=1, **kwargs):
        """kombu's consume loop, with a short wait in the socket once the consumer winds down.

        nameko cancels a leaving provider's consumer only from the consumer thread, between two
        waits for the broker, and kombu waits up to ``safety_interval`` (1 s) each time. Stopping
        an idle service took three such waits in a row (the entrypoints, the reply listener,
        the thread's own exit): 2-3 s for every stop. Once one provider has left, the others
        follow within moments, so from then on the wait is short. Messages wake the thread at
        once either way; an idle running service still wakes once a second. (``limit`` and
        ``timeout`` are kombu's; nameko's run loop passes neither.)"""
        wait = safety_interval
        with self.consumer_context(**kwargs) as (connection, _channel, _consumers):
            while not self.should_stop:
                if self._pending_remove_providers:
                    wait = WINDING_DOWN_POLL_S
                self.on_iteration()
                if self.should_stop:  # the last provider has left
                    break
                try:
                    connection.drain_events(timeout=wait)
                except socket.timeout:
                    connection.heartbeat_check()
                except OSError:
                    if not self.should_stop:
                        raise
                else:
                    yield

    @contextmanager
    def consumer_context(self, **kwargs):
        try:
            with super().consumer_context(**kwargs) as context:
                self.broker_connected = True
                yield context
        finally:
            self.broker_connected = False

    def get_consumers(self, consumer_cls, channel):
        """Each message is looked at before its body is decoded: one over the size limit is
        refused unread (decoding a large JSON body costs many times its size in memory), and
        one that cannot be decoded (not JSON, a content type we do not accept) is refused
        instead of raising in the consumer thread, which would kill the container, again on
        every redelivery."""
        consumers = super().get_consumers(consumer_cls, channel)
        for provider, consumer in self._consumers.items():
            consumer.on_message = partial(self._on_message, provider)
        return consumers

    def on_decode_error(self, message, exc):
        """kombu's own handler logs the body (which may hold personal data) and acks it."""
        refused(self.container.service_name, "-", f"undecodable body ({type(exc).__name__})")
        self.reject_message(message)

    def _on_message(self, provider, message):
        checked = isinstance(provider, (RpcConsumer, nameko_messaging.Consumer))
        limit = int(cfg.setting(self.container.config, "MAX_MESSAGE_BYTES",
                                DEFAULT_MAX_MESSAGE_BYTES))
        if checked and len(message.body or b"") > limit:  # dropped: not worth keeping a copy
            return self._refuse(provider, message, f"message over {limit} bytes", park=False)
        try:
            body = message.decode()
        except Exception as exc:
            return self._refuse(provider, message, f"undecodable body ({type(exc).__name__})")
        self.handle_message(provider, body, message)

    def _refuse(self, provider, message, reason: str, park: bool = True):
        """Unreadable events are parked with the reason (an operator may want to see them);
        anything else is dropped."""
        entrypoint = getattr(provider, "method_name", None) or (
            "rpc" if isinstance(provider, RpcConsumer) else "reply")
        refused(self.container.service_name, entrypoint, reason)
        park = getattr(provider, "park_refused", None) if park else None
        if park is not None:
            self.container.spawn_managed_thread(partial(park, message, reason),
                                                identifier="park-refused")
        else:
            self.reject_message(message)

    def reject_message(self, message):
        """Drop a message that can never be handled (no dead-letter exchange on these queues)."""
        self._settle(lambda m: m.reject(requeue=False), message, "rejected")

    def ack_message(self, message):
        self._settle(super().ack_message, message, "acked")

    def requeue_message(self, message):
        self._settle(super().requeue_message, message, "requeued")

    @staticmethod
    def _settle(settle, message, what: str):
        try:
            settle(message)
        except BROKER_GONE as exc:
            log.warning("broker connection lost before a message was %s (%s); it will be "
                        "delivered again", what, type(exc).__name__)


class RpcConsumer(nameko_rpc.RpcConsumer):
    queue_consumer = QueueConsumer()

    def setup(self):
        super().setup()
        self.queue.queue_arguments = cfg.queue_arguments(self.container.config)

    def handle_message(self, body, message):
        """A request nobody can answer (no reply address, or not JSON) is dropped here: nameko
        would raise while replying and take the container down."""
        properties = message.properties or {}
        reply_to = properties.get("reply_to")
        if not isinstance(reply_to, str) or not REPLY_TO.match(reply_to):
            reason = "no usable reply_to"
        elif properties.get("content_type") != "application/json":
            reason = "content type is not application/json"
        else:
            return super().handle_message(body, message)
        refused(self.container.service_name, "rpc", reason)
        self.queue_consumer.reject_message(message)

    def handle_result(self, message, result, exc_info):
        """A reply that cannot be sent leaves the call to be delivered again, rather than
        taking the container down with it (the caller has timed out or will)."""
        try:
            return super().handle_result(message, result, exc_info)
        except ChannelError as exc:  # the broker refused the reply (not a permitted key)
            refused(self.container.service_name, "rpc",
                    f"reply refused by the broker ({type(exc).__name__})")
            self.queue_consumer.ack_message(message)
            return result, exc_info
        except BROKER_GONE as exc:
            log.warning("could not send the reply to %s (%s); the call goes back to the queue",
                        message.delivery_info.get("routing_key"), type(exc).__name__)
            self.queue_consumer.requeue_message(message)
            return result, exc_info


class Rpc(SafeHeaders, nameko_rpc.Rpc):
    """An RPC entrypoint that names its callers (``services.common.callers``) and checks the
    proof before any worker runs."""

    rpc_consumer = RpcConsumer()

    def __init__(self, callers_allowed=(), **kwargs):
        unknown = set(callers_allowed) - set(callers.KINDS)
        if not callers_allowed or unknown:
            raise ValueError(f"an RPC method must name its callers from {callers.KINDS}")
        self.callers_allowed = tuple(callers_allowed)
        super().__init__(**kwargs)

    def setup(self):
        super().setup()
        config = self.container.config
        self.operator_token = str(config.get("OPERATOR_TOKEN") or "")
        needs_key = set(self.callers_allowed) & {callers.MUNICIPALITY, callers.GATEWAY,
                                                 callers.SERVICE}
        self.service_key = callers.service_key(config) if needs_key else b""
        method = getattr(self.container.service_cls, self.method_name)
        self.signature = inspect.signature(method)

    def handle_message(self, body, message):
        if not isinstance(body, dict):
            raise MalformedRequest("the body must be an object with args and kwargs")
        args, kwargs = body.get("args"), body.get("kwargs")
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
            raise MalformedRequest("message missing `args` or `kwargs`")
        context_data = self.unpack_message_headers(message)
        try:  # the caller first: a stranger learns nothing, not even the method's signature
            arguments = self.signature.bind(None, *args, **kwargs).arguments
        except TypeError:
            arguments = {}
        try:
            callers.identify(self.callers_allowed, context_data, arguments,
                             service_key=self.service_key, operator_token=self.operator_token)
        except callers.CallerRefused as exc:
            refused(self.container.service_name, self.method_name, exc.reason)
            raise exc.for_caller(self.method_name, self.callers_allowed) from None
        self.check_signature(args, kwargs)
        try:
            self.container.spawn_worker(self, args, kwargs, context_data=context_data,
                                        handle_result=partial(self.handle_result, message))
        except ContainerBeingKilled:
            self.rpc_consumer.requeue_message(message)


def rpc(*callers_allowed, **kwargs):
    """``@rpc(MUNICIPALITY)``: an RPC method and who may call it."""
    return Rpc.decorator(callers_allowed=callers_allowed, **kwargs)


class ReplyListener(nameko_rpc.ReplyListener):
    queue_consumer = QueueConsumer()


class RpcProxy(nameko_rpc.RpcProxy):
    """nameko's RPC proxy, listening for replies on the container's shared consumer."""

    rpc_reply_listener = ReplyListener()
