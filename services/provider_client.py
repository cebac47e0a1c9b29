"""The education providers' client: course, attendance and revocation calls over RabbitMQ.

A provider's broker user may publish only calls to provider methods and may read only its own
reply queue, bound with reply keys that start with its user name. nameko's standalone proxy
does neither (it declares the RPC exchange and names its reply queue freely), so providers use
this client::

    from services.provider_client import ProviderClient

    with ProviderClient("amqps://provider-vwa-baden:PASSWORD@broker.land.example/lotsen",
                        token="lp_...", ca_certs="/etc/ssl/land-ca.pem") as client:
        course = client.create_course({"id": "…", "programme_code": "BW-DL", ...})
        client.open_course(course["id"])
        client.record_attendance(course["id"], 1, [enrolment_id, ...])
        client.revoke_certificate("BW-DL-2026-000123", "Teilnahme nicht nachgewiesen")

Errors arrive typed (``services.common.errors``: ``ValidationFailed``, ``NotFound``,
``AuthenticationFailed``, ``Conflict``, ``RuleViolation``), each with ``.message`` and
``.fields``. A call without an answer within ``timeout`` seconds raises ``TimeoutError``; it may
still be carried out later, so repeat it (``create_course`` with the same ``id`` is safe).
"""
from __future__ import annotations

import json
import ssl as ssl_module
import time
import uuid

from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.utils.url import url_to_parts
from nameko.exceptions import deserialize

import services.common.errors  # noqa: F401  (registers the typed errors for deserialize)
from services.common.config import ensure_connected

RPC_EXCHANGE = "nameko-rpc"
REPLY_QUEUE_TTL_MS = 300_000


class ProviderClient:
    def __init__(self, amqp_uri: str, token: str, timeout: float = 30.0,
                 ca_certs: str | None = None, exchange: str = RPC_EXCHANGE):
        self.token = token
        self.timeout = timeout
        self.user = url_to_parts(amqp_uri).username or "guest"
        # server_hostname None: the host name of the URI, which the certificate must name.
        tls = {"ca_certs": ca_certs, "cert_reqs": ssl_module.CERT_REQUIRED,
               "server_hostname": None} if ca_certs else None
        self.connection = Connection(amqp_uri, ssl=tls, connect_timeout=10)
        # The exchange exists already; declaring it would need a permission providers lack.
        self.exchange = Exchange(exchange, type="topic", durable=True, no_declare=True)
        self.reply_key = f"{self.user}.{uuid.uuid4()}"
        self.reply_queue = Queue(f"rpc.reply-{self.user}-{uuid.uuid4()}", exchange=self.exchange,
                                 routing_key=self.reply_key, auto_delete=True,
                                 queue_arguments={"x-expires": REPLY_QUEUE_TTL_MS})
        self._replies: dict[str, dict] = {}
        self._consumer = None
        self._channel = None

    # --- connection ------------------------------------------------------------------------

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    def connect(self):
        ensure_connected(self.connection, max_retries=3)
        self._channel = self.connection.channel()
        self._consumer = Consumer(self._channel, queues=[self.reply_queue],
                                  callbacks=[self._on_reply], accept=["json"], no_ack=True)
        self._consumer.consume()

    def close(self):
        try:
            self.connection.release()
        except Exception:
            pass

    def _on_reply(self, body, message):
        self._replies[message.properties.get("correlation_id")] = body

    # --- calls -----------------------------------------------------------------------------

    def call(self, service: str, method: str, *args, **kwargs):
        """One RPC call with the provider token; returns the result or raises its error."""
        if self._consumer is None:
            self.connect()
        correlation_id = str(uuid.uuid4())
        Producer(self._channel, exchange=self.exchange, auto_declare=False).publish(
            {"args": list(args), "kwargs": kwargs}, routing_key=f"{service}.{method}",
            serializer="json", reply_to=self.reply_key, correlation_id=correlation_id,
            headers={"nameko.provider_token": self.token,
                     "nameko.call_id_stack": [f"provider.{method}.{correlation_id}"]},
            delivery_mode=2)
        deadline = time.monotonic() + self.timeout
        while correlation_id not in self._replies:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{service}.{method} did not answer within "
                                   f"{self.timeout:.0f}s")
            try:
                self.connection.drain_events(timeout=min(left, 1.0))
            except TimeoutError:
                continue
            except OSError as exc:  # socket.timeout is an OSError too
                if "timed out" not in str(exc):
                    raise
        reply = self._replies.pop(correlation_id)
        if reply.get("error"):
            raise deserialize(reply["error"])
        return reply.get("result")

    def create_course(self, course: dict) -> dict:
        """``{id, programme_code, title, location, capacity, modules: [{number, title, date}],
        open?}``; give an ``id`` (a UUID you choose) so the call is safe to repeat."""
        return self.call("enrolment", "create_course", _plain(course))

    def open_course(self, course_id: str) -> dict:
        return self.call("enrolment", "open_course", str(course_id))

    def close_course(self, course_id: str) -> dict:
        return self.call("enrolment", "close_course", str(course_id))

    def complete_course(self, course_id: str) -> dict:
        return self.call("enrolment", "complete_course", str(course_id))

    def cancel_course(self, course_id: str, reason: str | None = None) -> dict:
        return self.call("enrolment", "cancel_course", str(course_id), reason)

    def course_enrolments(self, course_id: str) -> list[dict]:
        return self.call("enrolment", "course_enrolments", str(course_id))

    def cancel_enrolment(self, enrolment_id: str, reason: str | None = None) -> dict:
        return self.call("enrolment", "provider_cancel_enrolment", str(enrolment_id), reason)

    def record_attendance(self, course_id: str, module_number: int,
                          enrolment_ids: list[str]) -> list[dict]:
        return self.call("enrolment", "record_attendance", str(course_id), module_number,
                         [str(e) for e in enrolment_ids])

    def revoke_certificate(self, number: str, reason: str) -> dict:
        return self.call("certificates", "revoke", number, reason)


def _plain(value):
    """Dates and UUIDs as the JSON strings the services expect."""
    return json.loads(json.dumps(value, default=str))
