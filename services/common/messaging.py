"""Reliable messaging on top of nameko: outbox relay, retrying event handler, parking.

* ``OutboxRelay`` publishes outbox rows oldest first, a batch at a time with publisher confirms
  collected for the whole batch, and marks them published. Rows stay in the outbox until the
  broker has confirmed them, so a crash re-sends rather than loses (consumers deduplicate
  with the inbox).
* ``event_handler`` is nameko's, except for what happens when the handler raises: instead of
  acking the message away (nameko's default) or requeueing it at once (a spin), the message goes
  to a delay queue and comes back after an exponential backoff; after the last attempt, or at
  once for a message that breaks its contract, it is parked in a queue an operator can list and
  replay (``lotsen parked``).
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from kombu import Queue
from nameko.amqp.publish import get_producer
from nameko.constants import PERSISTENT
from nameko.events import EventHandler
from nameko.standalone.events import get_event_exchange
from sqlalchemy import bindparam, select, update

from services.common import config as cfg
from services.common.broker import QueueConsumer, SafeHeaders, refused
from services.common.errors import ContractViolation
from services.common.events import SECRET_FIELDS

log = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-lotsen-attempt"
# Set by a consumer on a message it forwards to its own retry or parked queue, once it has
# checked that the event came from its producer: the broker vouches (user_id) that only that
# consumer's user could have published the copy.
ORIGIN_HEADER = "x-lotsen-origin"
# Set on a message parked because it could not be believed or read: replay skips it.
REFUSED_HEADER = "x-lotsen-refused"
ERROR_HEADER = "x-lotsen-error"
PARKED_AT_HEADER = "x-lotsen-parked-at"


def retry_queue_name(queue_name: str) -> str:
    return f"{queue_name}.retry"


def parked_queue_name(queue_name: str) -> str:
    return f"{queue_name}.parked"


def retry_queue(queue_name: str, arguments: dict | None = None) -> Queue:
    """Messages wait here for their TTL, then dead-letter back to the consumer's queue."""
    return Queue(retry_queue_name(queue_name), durable=True, auto_delete=False,
                 queue_arguments=retry_arguments(queue_name, arguments))


def retry_arguments(queue_name: str, arguments: dict | None = None) -> dict:
    arguments = dict(arguments or {})
    if arguments.get("x-queue-type") == "quorum":
        # A quorum queue dead-letters at most once by default: a message could be lost on a
        # leader change. At least once, which needs the queue to refuse rather than drop.
        arguments.update({"x-dead-letter-strategy": "at-least-once",
                          "x-overflow": "reject-publish"})
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue_name, **arguments}


def parked_queue(queue_name: str, arguments: dict | None = None) -> Queue:
    return Queue(parked_queue_name(queue_name), durable=True, auto_delete=False,
                 queue_arguments=dict(arguments or {}))


def backoff_seconds(attempt: int, base_ms: int, max_ms: int) -> float:
    return min(max_ms, base_ms * 2 ** (attempt - 1)) / 1000.0


class OutboxRelay:
    """Publishes a service's outbox; one per service instance, safe to run several."""

    def __init__(self, handle, service_name: str, config: dict):
        self.handle = handle
        self.service_name = service_name
        self.config = config
        self.amqp_uri = cfg.amqp_uri(config)
        outbox = config.get("OUTBOX") or {}
        self.poll_interval = float(cfg.setting(outbox, "poll_interval_s", 1.0))
        self.batch_size = int(cfg.setting(outbox, "batch_size", 200))
        # Woken by a commit, the relay waits this long for more commits to join the batch:
        # a batch costs four statements and one wait for confirms, whatever its size.
        self.linger_s = float(cfg.setting(outbox, "linger_s", 0.02))
        self.exchange = get_event_exchange(service_name, config)
        # Events someone subscribes to are published mandatory: one that no queue takes (the
        # queue is gone, or not declared yet by a newer release) comes back instead of being
        # confirmed into nothing.
        from services.common import topology
        self.routed = {s.event_type for s in topology.subscriptions(
            topology.service_classes(config)) if s.source_service == service_name}
        self.publisher = BatchPublisher(self.amqp_uri, self.exchange, ssl=cfg.amqp_ssl(config),
                                        user_id=cfg.broker_user(config),
                                        mandatory_types=self.routed)
        self._wake = threading.Event()
        self._stopped = False
        self._made = None
        self.published = 0

    def wake(self):
        self._wake.set()

    def stop(self):
        self._stopped = True
        self._wake.set()

    def declare_topology(self):
        from services.common import topology
        topology.declare(self.amqp_uri, self.config, own_exchange=self.service_name)

    def run(self):
        delay = 0.5
        while not self._stopped:
            try:
                self.declare_topology()
                break
            except Exception as exc:  # broker not up yet: keep trying, never publish first
                log.warning("declaring the event topology failed (%s); retrying", type(exc).__name__)
                time.sleep(delay)
                delay = min(delay * 2, 10)
        delay = 0.5
        while not self._stopped:
            try:
                count = self.publish_pending()
                delay = 0.5
            except UnroutableEvents:  # counted and logged; the queues were declared again
                time.sleep(1)  # no growing backoff: the other events must not wait long
                continue
            except Exception as exc:
                log.warning("outbox relay of %s failed (%s: %s); retrying in %.1fs",
                            self.service_name, type(exc).__name__, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30)
                continue
            if count < self.batch_size:
                woken = self._wake.wait(self.poll_interval)
                if woken and self.linger_s > 0 and not self._stopped:
                    time.sleep(self.linger_s)
                self._wake.clear()
        self.publisher.close()

    def publish_pending(self) -> int:
        """Publish one batch of unsent events; returns how many the broker confirmed.

        On PostgreSQL the batch's rows stay locked (skip-locked) while it is published, so
        several instances share the outbox. SQLite has one writer for the whole file: there
        the batch is read, published with no transaction open, and marked afterwards, so that
        a slow or absent broker never holds up the service's writes. (A crash in between
        publishes the batch again; consumers drop the repeat with their inbox.)"""
        if not self.handle.is_postgresql:
            return self._publish_unlocked()
        with self.handle.transaction() as session:
            batch = session.execute(self._statements()[0]).all()
            if not batch:
                return 0
            confirmed, failure = self.publisher.publish([
                (envelope, event_type, str(event_id)) for _, envelope, event_type, event_id
                in batch])
            self._mark_published(session, [batch[i] for i in confirmed])
        return self._outcome(confirmed, failure)

    def _statements(self):
        """(the next batch, locked; the next batch; mark published), made once."""
        if self._made is None:
            outbox = self.handle.outbox_model.__table__
            pending = (select(outbox.c.position, outbox.c.envelope, outbox.c.event_type,
                              outbox.c.event_id)
                       .where(outbox.c.published_at.is_(None))
                       .order_by(outbox.c.position).limit(self.batch_size))
            mark = (update(outbox)
                    .where(outbox.c.position.in_(bindparam("positions", expanding=True)))
                    .values(published_at=bindparam("moment")))
            self._made = (pending.with_for_update(skip_locked=True), pending, mark)
        return self._made

    def _mark_published(self, session, rows: list):
        """One UPDATE for the whole batch, however large; an event that carries a secret
        (``SECRET_FIELDS``, rare) has it blanked in its row as well."""
        if not rows:
            return
        session.execute(self._statements()[2], {"positions": [row[0] for row in rows],
                                                "moment": datetime.now(timezone.utc)})
        outbox = self.handle.outbox_model.__table__
        for position, envelope, event_type, _ in rows:
            secret = SECRET_FIELDS.get(event_type)
            if secret:
                payload = dict(envelope.get("payload") or {}, **dict.fromkeys(secret, ""))
                session.execute(update(outbox).where(outbox.c.position == position)
                                .values(envelope=dict(envelope, payload=payload)))

    def _publish_unlocked(self) -> int:
        with self.handle.transaction() as session:
            batch = session.execute(self._statements()[1]).all()
        if not batch:
            return 0
        confirmed, failure = self.publisher.publish([
            (envelope, event_type, str(event_id)) for _, envelope, event_type, event_id in batch])
        if confirmed:
            with self.handle.transaction() as session:
                self._mark_published(session, [batch[i] for i in confirmed])
        return self._outcome(confirmed, failure)

    def _outcome(self, confirmed: list[int], failure: Exception | None) -> int:
        self.published += len(confirmed)
        if isinstance(failure, UnroutableEvents):
            self._unroutable(failure)
        if failure is not None:
            raise failure
        return len(confirmed)

    def _unroutable(self, failure: "UnroutableEvents"):
        """Returned events stay in the outbox; the queues are declared again before the
        relay's next try (after its backoff)."""
        from services.common.metrics import UNROUTABLE
        for event_type, count in failure.by_type.items():
            UNROUTABLE.labels(self.service_name, event_type).inc(count)
        log.warning("%d event(s) of %s reached no queue (%s); they stay in the outbox, "
                    "declaring the queues again", sum(failure.by_type.values()),
                    self.service_name, ", ".join(sorted(failure.by_type)))
        try:
            self.declare_topology()
        except Exception as exc:
            log.warning("declaring the event topology failed (%s)", type(exc).__name__)

    def close(self):
        self.publisher.close()


class UnroutableEvents(Exception):
    """Events the broker returned: no queue was bound for them."""

    def __init__(self, by_type: dict[str, int]):
        super().__init__(f"{sum(by_type.values())} event(s) reached no queue")
        self.by_type = by_type


class BatchPublisher:
    """Publishes a batch of events on one channel in confirm mode, then collects the broker's
    confirms for all of them.

    Waiting for each confirm before the next publish (kombu's ``confirm_publish``) costs a round
    trip and a broker disk sync per event; here the batch shares them. Safety is the same: only
    events the broker confirmed are reported, the rest stay in the outbox and go again.
    """

    def __init__(self, amqp_uri: str, exchange, confirm_timeout_s: float = 30.0, ssl=None,
                 user_id: str | None = None, mandatory_types=frozenset()):
        self.amqp_uri = amqp_uri
        self.mandatory_types = set(mandatory_types)
        self._returned: set[str] = set()
        self.ssl = ssl
        # The broker refuses a message whose user_id is not the connection's user, so
        # consumers can believe where an event came from.
        self.user_id = user_id
        self.exchange = exchange
        self.confirm_timeout_s = confirm_timeout_s
        self.connection = None
        self.channel = None
        self._next_tag = 1
        self._acked: set[int] = set()
        self._nacked: set[int] = set()
        self._settled_up_to = 0  # every tag up to here is acked or nacked

    def _open(self):
        from kombu import Connection

        # Socket timeouts too: a broker blocked by a memory or disk alarm must not hold the
        # relay (and the outbox rows it has locked) for ever.
        timeout = self.confirm_timeout_s
        self.connection = Connection(self.amqp_uri, connect_timeout=10, ssl=self.ssl,
                                     transport_options={
            "read_timeout": timeout, "write_timeout": timeout})
        cfg.ensure_connected(self.connection, max_retries=1)
        self.channel = self.connection.channel()
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.channel.events["basic_return"].add(self._on_return)
        self._next_tag = 1
        self._acked.clear()
        self._nacked.clear()
        self._settled_up_to = 0

    def _on_ack(self, delivery_tag, multiple):
        self._settle(self._acked, delivery_tag, multiple)

    def _on_nack(self, delivery_tag, multiple):
        self._settle(self._nacked, delivery_tag, multiple)

    def _on_return(self, exc, exchange, routing_key, message):
        # The broker sends the return before the confirm of the same message.
        self._returned.add((message.properties or {}).get("message_id"))

    def _settle(self, into: set, delivery_tag: int, multiple: bool):
        if multiple:
            into.update(t for t in range(self._settled_up_to + 1, delivery_tag + 1)
                        if t not in self._acked and t not in self._nacked)
        else:
            into.add(delivery_tag)
        while self._settled_up_to + 1 in self._acked or self._settled_up_to + 1 in self._nacked:
            self._settled_up_to += 1

    def publish(self, events: list[tuple[dict, str, str]]) -> tuple[list[int], Exception | None]:
        """Publish (envelope, routing key, message id) triples; returns the indexes the broker
        confirmed and the error that stopped the rest, if any."""
        from kombu import Producer

        tags: list[int] = []
        deadline = time.monotonic() + self.confirm_timeout_s
        try:
            if self.connection is None:
                self._open()
            producer = Producer(self.channel, exchange=self.exchange, auto_declare=False)
            self._returned.clear()
            for envelope, routing_key, message_id in events:
                producer.publish(envelope, routing_key=routing_key, serializer="json",
                                 delivery_mode=PERSISTENT, message_id=message_id,
                                 mandatory=routing_key in self.mandatory_types,
                                 headers=_context_headers(envelope),
                                 **({"user_id": self.user_id} if self.user_id else {}))
                tags.append(self._next_tag)
                self._next_tag += 1
            while self._settled_up_to < tags[-1]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no confirm for {tags[-1] - self._settled_up_to} "
                                       "event(s)")
                self.connection.drain_events(timeout=remaining)
        except BaseException as exc:  # connection gone or confirms missing: start afresh
            self.close(politely=False)
            if not isinstance(exc, Exception):
                raise  # the relay is being killed
            return [i for i, tag in enumerate(tags)
                    if tag in self._acked and events[i][2] not in self._returned], exc
        returned = {i for i, (_, _, message_id) in enumerate(events)
                    if message_id in self._returned}
        confirmed = [i for i, tag in enumerate(tags) if tag in self._acked and i not in returned]
        nacked = len(tags) - len(confirmed) - len(returned)
        self._acked.difference_update(tags)
        self._nacked.difference_update(tags)
        if nacked:
            return confirmed, RuntimeError(f"the broker refused {nacked} event(s)")
        if returned:
            by_type: dict[str, int] = {}
            for i in returned:
                by_type[events[i][1]] = by_type.get(events[i][1], 0) + 1
            return confirmed, UnroutableEvents(by_type)
        return confirmed, None

    def close(self, politely: bool = True):
        """Close the connection; ``politely=False`` drops the socket without waiting for the
        broker (which may be gone or stuck)."""
        connection, self.connection, self.channel = self.connection, None, None
        if connection is None:
            return
        try:
            connection.release() if politely else connection.collect()
        except Exception:
            pass


def _context_headers(envelope: dict) -> dict:
    headers = {"nameko.event_type": envelope["event_type"]}
    if envelope.get("correlation_id"):
        headers["nameko.correlation_id"] = envelope["correlation_id"]
    return headers


def attempt_of(message) -> int:
    """The attempt a message is on; a header that is not a small number counts as the first."""
    try:
        return max(1, min(int((message.headers or {}).get(ATTEMPT_HEADER, 1)), 1000))
    except (TypeError, ValueError):
        return 1


class ReliableEventHandler(SafeHeaders, EventHandler):
    """nameko's event handler with retry-with-backoff and parking instead of ack-and-forget."""

    queue_consumer = QueueConsumer()

    def setup(self):
        super().setup()
        self.queue_arguments = cfg.queue_arguments(self.container.config)
        self.queue.queue_arguments = dict(self.queue_arguments)
        retry = self.container.config.get("EVENT_RETRY") or {}
        self.max_attempts = int(cfg.setting(retry, "max_attempts", 5))
        self.base_delay_ms = int(cfg.setting(retry, "base_delay_ms", 1000))
        self.max_delay_ms = int(cfg.setting(retry, "max_delay_ms", 60000))
        self.amqp_uri = cfg.amqp_uri(self.container.config)
        self.ssl = cfg.amqp_ssl(self.container.config)
        self.own_user = cfg.broker_user(self.container.config)
        self.producer_user = cfg.producer_user(self.container.config, self.source_service)

    def handle_message(self, body, message):
        """An event is believed only if the broker vouches that its producer sent it."""
        forged = self.origin_problem(message)
        if forged is None:
            return super().handle_message(body, message)
        refused(self.container.service_name, self.method_name, "event not from its producer")
        self.park_refused(message, forged, ForgedEvent)

    def park_refused(self, message, reason: str, kind=None):
        """Park a message that cannot be believed or read, with the reason; never replayed."""
        try:
            self._forward(message, parked_queue(self.queue.name, self.queue_arguments),
                          attempt_of(message),
                          (kind or RefusedMessage)(reason), park=True, verified=False)
        except Exception:
            log.exception("could not park a refused %s message; requeueing", self.event_type)
            time.sleep(1)
            self.queue_consumer.requeue_message(message)
        else:
            self.queue_consumer.ack_message(message)

    def origin_problem(self, message) -> str | None:
        """Why ``message`` cannot be believed to come from ``source_service``, or None."""
        user = (message.properties or {}).get("user_id")
        if not user:
            return "no user_id: the broker did not vouch for the sender"
        if user == self.producer_user:
            return None
        if user == self.own_user and (message.headers or {}).get(ORIGIN_HEADER) == \
                self.source_service:
            return None  # our own retry or parked copy of an event we checked
        return f"sent by broker user {user}, not by {self.source_service}"

    def handle_result(self, message, worker_ctx, result=None, exc_info=None):
        if exc_info is None:
            self.queue_consumer.ack_message(message)
            return result, exc_info
        exc = exc_info[1]
        attempt = attempt_of(message)
        try:
            if isinstance(exc, ContractViolation) or attempt >= self.max_attempts:
                self._forward(message, parked_queue(self.queue.name, self.queue_arguments),
                              attempt, exc, park=True)
                log.error("parked %s message for %s after %d attempt(s): %s",
                          self.event_type, self.method_name, attempt, type(exc).__name__)
            else:
                delay = backoff_seconds(attempt, self.base_delay_ms, self.max_delay_ms)
                self._forward(message, retry_queue(self.queue.name, self.queue_arguments),
                              attempt + 1, exc,
                              expiration=delay)
                log.warning("retrying %s message for %s in %.1fs (attempt %d failed: %s)",
                            self.event_type, self.method_name, delay, attempt,
                            type(exc).__name__)
        except Exception:
            # Could not hand the message on: leave it to the broker rather than lose it.
            log.exception("could not retry or park a failed %s message; requeueing",
                          self.event_type)
            time.sleep(1)
            self.queue_consumer.requeue_message(message)
        else:
            self.queue_consumer.ack_message(message)
        return result, exc_info

    def _forward(self, message, queue: Queue, attempt: int, exc: BaseException,
                 park: bool = False, expiration: float | None = None, verified: bool = True):
        headers = dict(message.headers or {})
        headers.pop(ORIGIN_HEADER, None)
        headers.pop(REFUSED_HEADER, None)
        if verified:
            headers[ORIGIN_HEADER] = self.source_service
        else:
            headers[REFUSED_HEADER] = type(exc).__name__
        headers[ATTEMPT_HEADER] = attempt
        headers[ERROR_HEADER] = f"{type(exc).__name__}: {exc}"[:500]
        if park:
            headers[PARKED_AT_HEADER] = datetime.now(timezone.utc).isoformat()
        properties = message.properties or {}
        with get_producer(self.amqp_uri, confirms=True, ssl=self.ssl) as producer:
            producer.publish(
                message.body, exchange="", routing_key=queue.name, headers=headers,
                content_type=message.content_type, content_encoding=message.content_encoding,
                delivery_mode=PERSISTENT, expiration=expiration, declare=[queue],
                message_id=properties.get("message_id"), retry=True, user_id=self.own_user,
            )


event_handler = ReliableEventHandler.decorator


class RefusedMessage(Exception):
    """A message that cannot be read (not JSON, too large)."""


class ForgedEvent(RefusedMessage):
    """An event whose sender the broker did not vouch for as its producer."""


def _replay_publish(producer, message, queue_name: str, user_id: str | None):
    headers = dict(message.headers or {})
    # Parked before origins were checked: replaying it is the operator vouching for it.
    headers.setdefault(ORIGIN_HEADER, queue_name.split("-", 2)[1])
    headers[ATTEMPT_HEADER] = 1
    headers.pop(PARKED_AT_HEADER, None)
    headers["x-lotsen-replayed-at"] = datetime.now(timezone.utc).isoformat()
    producer.publish(
        message.body, exchange="", routing_key=queue_name, headers=headers,
        content_type=message.content_type, content_encoding=message.content_encoding,
        delivery_mode=PERSISTENT, message_id=message.properties.get("message_id"), retry=True,
        **({"user_id": user_id} if user_id else {}),
    )


def _decoded(message):
    try:
        return message.decode() if message.body else None
    except Exception:
        return None


def _existing(connection, channel, name: str):
    """The queue if it exists (a passive declare: whatever its type), and a usable channel."""
    try:
        channel.queue_declare(name, passive=True)
    except Exception:  # not there: nothing parked; the failed declare closed the channel
        return None, connection.channel()
    return Queue(name, channel=channel), channel


def list_parked(amqp_uri: str, queue_names: list[str], ssl=None) -> list[dict]:
    """Look at parked messages without taking them (they stay parked)."""
    from kombu import Connection

    found = []
    with Connection(amqp_uri, ssl=ssl) as connection:
        channel = connection.channel()
        for name in queue_names:
            queue, channel = _existing(connection, channel, parked_queue_name(name))
            if queue is None:
                continue
            while True:
                message = queue.get(no_ack=False)
                if message is None:
                    break
                body = _decoded(message)
                envelope = body if isinstance(body, dict) else {}
                found.append({
                    "queue": name,
                    "message_id": message.properties.get("message_id"),
                    "event_type": envelope.get("event_type"),
                    "event_id": envelope.get("event_id"),
                    "attempts": (message.headers or {}).get(ATTEMPT_HEADER),
                    "error": (message.headers or {}).get(ERROR_HEADER),
                    "parked_at": (message.headers or {}).get(PARKED_AT_HEADER),
                    "replayable": (message.headers or {}).get(REFUSED_HEADER) is None,
                })
        channel.close()  # returns every message we looked at to its queue
    return found


def replay_parked(amqp_uri: str, queue_names: list[str], message_id: str | None = None,
                  ssl=None, user_id: str | None = None) -> int:
    """Move parked messages (all, or the one with ``message_id``) back to their consumer queue.

    The consumer believes a replayed message only when it comes from its own broker user
    (``user_id``) with the origin it checked before parking it. A message refused as forged
    or unreadable stays parked; one parked before origins were checked is replayed as coming
    from the producer its queue names (the operator vouches for it by replaying it)."""
    from kombu import Connection

    replayed = 0
    with Connection(amqp_uri, ssl=ssl,
                    transport_options={"confirm_publish": True}) as connection:
        channel = connection.channel()
        producer = connection.Producer(channel=connection.channel())
        for name in queue_names:
            queue, channel = _existing(connection, channel, parked_queue_name(name))
            if queue is None:
                continue
            while True:
                message = queue.get(no_ack=False)
                if message is None:
                    break
                if message_id and message.properties.get("message_id") != message_id:
                    continue  # left unacked: back in the parked queue when the channel closes
                if (message.headers or {}).get(REFUSED_HEADER) is not None:
                    continue  # refused as forged or unreadable: replaying cannot make it right
                _replay_publish(producer, message, name, user_id)
                message.ack()
                replayed += 1
        channel.close()
    return replayed
