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
from functools import partial

import eventlet
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError
from nameko import messaging as nameko_messaging
from nameko import rpc as nameko_rpc
from nameko.exceptions import ContainerBeingKilled, MalformedRequest

from services.common import callers
from services.common import config as cfg

log = logging.getLogger(__name__)

# A reply address: nameko's own (a UUID) or a provider client's ("<broker user>.<uuid>").
REPLY_TO = re.compile(r"^[A-Za-z0-9_.@-]{1,200}$")
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def refused(service: str, entrypoint: str, reason: str):
    """The trace a refused message leaves: one log line (no message content) and a metric."""
    from services.common.metrics import REFUSED
    REFUSED.labels(service, entrypoint, reason).inc()
    log.warning("refused a message for %s.%s: %s", service, entrypoint, reason)

# What a broker that went away looks like from here.
BROKER_GONE = (OSError, AmqpConnectionError, OperationalError)

# How long a kill waits for the consumer to close its connection politely.
KILL_WAIT_S = 5.0


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

    def get_consumers(self, consumer_cls, channel):
        # A body that cannot be decoded (not JSON, a content type we do not accept) would
        # otherwise raise in the consumer thread and kill the container, again on redelivery.
        return super().get_consumers(partial(consumer_cls, on_decode_error=self._undecodable),
                                     channel)

    def _undecodable(self, message, exc):
        refused(self.container.service_name, "-", f"undecodable body ({type(exc).__name__})")
        self.reject_message(message)

    def handle_message(self, provider, body, message):
        if isinstance(provider, (RpcConsumer, nameko_messaging.Consumer)):
            limit = int(cfg.setting(self.container.config, "MAX_MESSAGE_BYTES",
                                    DEFAULT_MAX_MESSAGE_BYTES))
            if len(message.body or b"") > limit:
                refused(self.container.service_name,
                        getattr(provider, "method_name", None) or "rpc",
                        f"message over {limit} bytes")
                self.reject_message(message)
                return
        super().handle_message(provider, body, message)

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
        except BROKER_GONE as exc:
            log.warning("could not send the reply to %s (%s); the call goes back to the queue",
                        message.delivery_info.get("routing_key"), type(exc).__name__)
            self.queue_consumer.requeue_message(message)
            return result, exc_info


class Rpc(nameko_rpc.Rpc):
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
        self.check_signature(args, kwargs)
        context_data = self.unpack_message_headers(message)
        try:
            callers.identify(
                self.callers_allowed, context_data,
                self.signature.bind(None, *args, **kwargs).arguments,
                service_key=self.service_key, operator_token=self.operator_token)
        except callers.CallerRefused as exc:
            refused(self.container.service_name, self.method_name, exc.reason)
            raise exc.for_caller(self.method_name, self.callers_allowed) from None
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
