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
"""
from __future__ import annotations

import logging

import eventlet
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError
from nameko import messaging as nameko_messaging
from nameko import rpc as nameko_rpc

log = logging.getLogger(__name__)

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
    rpc_consumer = RpcConsumer()


rpc = Rpc.decorator


class ReplyListener(nameko_rpc.ReplyListener):
    queue_consumer = QueueConsumer()


class RpcProxy(nameko_rpc.RpcProxy):
    """nameko's RPC proxy, listening for replies on the container's shared consumer."""

    rpc_reply_listener = ReplyListener()
