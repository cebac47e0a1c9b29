"""Who listens to what: every consumer queue, declared before anything publishes.

nameko publishes events without the mandatory flag, so an event sent before its consumer's
queue exists is dropped silently. The queues are therefore derived from the service classes
themselves (their ``event_handler`` entrypoints) and declared by ``lotsen migrate`` and by every
outbox relay before its first publish.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

from kombu import Connection, Queue
from nameko.events import SERVICE_POOL, EventHandler
from nameko.standalone.events import get_event_exchange

from services.common.messaging import parked_queue, retry_queue

# Every service of the system; a new service adds itself here.
SERVICE_CLASSES = [
    "services.enrolment.service:EnrolmentService",
    "services.funding.service:FundingService",
    "services.certificates.service:CertificatesService",
    "services.notifications.service:NotificationsService",
    "services.gateway.service:GatewayService",
]


@dataclass(frozen=True)
class Subscription:
    source_service: str
    event_type: str
    consumer_service: str
    method: str

    @property
    def queue_name(self) -> str:
        # The name nameko's EventHandler gives its queue for SERVICE_POOL handlers.
        return f"evt-{self.source_service}-{self.event_type}--{self.consumer_service}.{self.method}"


def load_class(path: str):
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def service_classes(config: dict | None = None) -> list:
    paths = list(SERVICE_CLASSES) + list((config or {}).get("EXTRA_SERVICE_CLASSES") or [])
    return [load_class(p) if isinstance(p, str) else p for p in paths]


def subscriptions(classes) -> list[Subscription]:
    found = []
    for cls in classes:
        for method_name, method in inspect.getmembers(cls, inspect.isfunction):
            for entrypoint in getattr(method, "nameko_entrypoints", ()):
                if isinstance(entrypoint, EventHandler) and entrypoint.handler_type is SERVICE_POOL:
                    found.append(Subscription(entrypoint.source_service, entrypoint.event_type,
                                              cls.name, method_name))
    return sorted(found, key=lambda s: s.queue_name)


def declare(amqp_uri: str, config: dict | None = None, classes=None,
            own_exchange: str | None = None) -> list[Subscription]:
    """Declare exchange, queue, binding, retry and parked queue of every subscription, and the
    publishing service's own exchange (it may have no subscriber yet).

    With ``own_exchange`` (a relay before it publishes) only what that producer's broker user
    may declare: its exchange and the queues of its events' consumers, so that none of its
    events goes unrouted. The retry and parked queues are their consumers' business."""
    from services.common import config as cfg

    subs = subscriptions(classes if classes is not None else service_classes(config))
    if own_exchange:
        subs = [s for s in subs if s.source_service == own_exchange]
    arguments = cfg.queue_arguments(config or {})
    with Connection(amqp_uri, ssl=cfg.amqp_ssl(config or {})) as connection:
        channel = connection.channel()
        if own_exchange:
            get_event_exchange(own_exchange, config or {})(channel).declare()
        for sub in subs:
            exchange = get_event_exchange(sub.source_service, config or {})
            exchange(channel).declare()
            queue = Queue(sub.queue_name, exchange=exchange, routing_key=sub.event_type,
                          durable=True, auto_delete=False, exclusive=False,
                          queue_arguments=arguments)
            queue(channel).declare()
            if not own_exchange:
                retry_queue(sub.queue_name, arguments)(channel).declare()
                parked_queue(sub.queue_name, arguments)(channel).declare()
        channel.close()
    return subs
