"""Who may do what on the broker, as data: one user per service and per education provider.

Defence in depth behind the checks in the services (``services.common.callers`` and the event
origin check): even a provider that ignores our client can only

* publish RPC calls to provider methods (a topic permission on ``nameko-rpc``'s routing keys),
* declare, bind and read its own reply queues, bound only with reply keys of its own,
* and nothing else: no event exchange, no event or RPC queue, not the default exchange.

A service may publish events only to its own ``<service>.events`` exchange, read only its own
queues, and bind only to the exchanges it consumes from. The permission sets are derived from
the service classes (their event handlers and the callers each RPC method names), so a new
method or subscription is covered without editing a list. ``lotsen broker setup`` applies them
through the RabbitMQ management API; ``lotsen broker permissions`` prints them as JSON.

RabbitMQ's rules, for reading the patterns: configure = declare/delete; write = publish to an
exchange, or bind a queue (write on the queue); read = consume from a queue, or bind to an
exchange (read on the exchange). Topic permissions check the routing key of each publish
(write) and the binding key of each bind (read). ``{username}`` is not expanded in the three
plain patterns, so user names are written into them.
"""
from __future__ import annotations

import base64
import inspect
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from services.common import callers
from services.common.broker import REPLY_KEY, UUID, Rpc
from services.common.messaging import parked_queue_name, retry_arguments, retry_queue_name

RPC_EXCHANGE = "nameko-rpc"
PROVIDER_USER = re.compile(r"^provider-[a-z0-9][a-z0-9-]{0,60}$")
# RPC a service makes itself, beside its RpcProxy dependencies (standalone proxies).
EXTRA_RPC_TARGETS = {"notifications": ["certificates"]}


def service_user(service: str) -> str:
    return f"lotsen-{service}"


def provider_user(name: str) -> str:
    """A provider's broker user name from a free name: ``provider-vwa-baden``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("ä", "ae").replace("ö", "oe")
                  .replace("ü", "ue").replace("ß", "ss")).strip("-")[:60]
    user = slug if slug.startswith("provider-") else f"provider-{slug}"
    if not PROVIDER_USER.match(user):
        raise ValueError(f"no usable broker user name from {name!r}")
    return user


@dataclass
class Access:
    user: str
    configure: str
    write: str
    read: str
    topic: dict[str, tuple[str, str]] = field(default_factory=dict)  # exchange: (write, read)


def _any_of(names) -> str:
    return "^(?:" + "|".join(names) + ")$"


def rpc_methods(classes) -> dict[tuple[str, str], tuple[str, ...]]:
    """Every RPC method of the system and the callers it answers."""
    found = {}
    for cls in classes:
        for name, method in inspect.getmembers(cls, inspect.isfunction):
            for entrypoint in getattr(method, "nameko_entrypoints", ()):
                if isinstance(entrypoint, Rpc):
                    found[(cls.name, name)] = entrypoint.callers_allowed
    return found


def provider_access(user: str, classes) -> Access:
    if not PROVIDER_USER.match(user):
        raise ValueError(f"provider broker users are named provider-<name>, not {user!r}")
    methods = sorted(f"{re.escape(service)}\\.{re.escape(method)}"
                     for (service, method), kinds in rpc_methods(classes).items()
                     if callers.PROVIDER in kinds or callers.COACH in kinds)
    replies = rf"rpc\.reply-{re.escape(user)}-{UUID}"
    return Access(
        user=user,
        configure=_any_of([replies]),
        write=_any_of([re.escape(RPC_EXCHANGE), replies]),
        read=_any_of([re.escape(RPC_EXCHANGE), replies]),
        topic={RPC_EXCHANGE: (_any_of(methods), _any_of([rf"{re.escape(user)}\.{UUID}"]))},
    )


def service_access(service: str, classes, subscriptions, user: str | None = None) -> Access:
    from nameko.rpc import RpcProxy

    cls = next(c for c in classes if c.name == service)
    sources = sorted({s.source_service for s in subscriptions if s.consumer_service == service})
    targets = {dep.target_service for dep in vars(cls).values() if isinstance(dep, RpcProxy)}
    targets |= set(EXTRA_RPC_TARGETS.get(service, ()))
    produces = any(s.source_service == service for s in subscriptions) or \
        hasattr(cls, "db")
    s = re.escape(service)
    own_queues = [rf"rpc-{s}", rf"rpc\.reply-(?:{s}|standalone_rpc_proxy)-{UUID}",
                  rf"evt-[a-z]+-[a-z_]+--{s}\.[a-z_]+(?:\.retry|\.parked)?"]
    source_exchanges = [rf"{re.escape(source)}\.events" for source in sources]
    own_exchange = [rf"{s}\.events"] if produces else []
    consumer_queues = [rf"evt-{s}-[a-z_]+--[a-z]+\.[a-z_]+"] if produces else []
    rpc_keys = [REPLY_KEY, rf"{s}\.health"] + [rf"{re.escape(t)}\.[a-z_]+" for t in
                                                sorted(targets)]
    return Access(
        user=user or service_user(service),
        # Declaring an exchange needs configure even when it exists (nameko declares the
        # exchanges it binds to); configure is not write: only the owner publishes.
        configure=_any_of([re.escape(RPC_EXCHANGE), *own_exchange, *source_exchanges,
                           *own_queues, *consumer_queues]),
        # amq.default: handlers forward failed events to their own retry and parked queues.
        write=_any_of([re.escape(RPC_EXCHANGE), *own_exchange, "amq\\.default", *own_queues,
                       *consumer_queues]),
        read=_any_of([re.escape(RPC_EXCHANGE), *own_exchange, *source_exchanges,
                      *own_queues]),
        topic={RPC_EXCHANGE: (_any_of(rpc_keys), _any_of([rf"{s}\.\*", UUID]))},
    )


def definitions(classes, subscriptions, users: dict | None = None) -> list[Access]:
    """Every service's access; ``users`` names a service's broker user where it is not
    ``lotsen-<service>``."""
    return [service_access(cls.name, classes, subscriptions, (users or {}).get(cls.name))
            for cls in classes]


class Management:
    """A small client of the RabbitMQ management HTTP API."""

    def __init__(self, url: str, timeout: float = 10.0):
        parts = urllib.parse.urlsplit(url)
        if not parts.username:
            raise ValueError("the management URL needs an administrator's user and password, "
                             "e.g. http://admin:PASSWORD@rabbitmq:15672")
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api"
        credentials = f"{urllib.parse.unquote(parts.username)}:" \
                      f"{urllib.parse.unquote(parts.password or '')}"
        self.auth = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.timeout = timeout

    def request(self, method: str, *path: str, body=None, ok_missing: bool = False):
        url = self.base + "/" + "/".join(urllib.parse.quote(p, safe="") for p in path)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": self.auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            if ok_missing and exc.code == 404:
                return None
            raise RuntimeError(f"RabbitMQ management API: {method} {'/'.join(path)} answered "
                               f"{exc.code} {exc.read()[:200].decode(errors='replace')}") from None
        return json.loads(payload) if payload else None

    def put_user(self, user: str, password: str, tags: str = ""):
        self.request("PUT", "users", user, body={"password": password, "tags": tags})

    def delete_user(self, user: str):
        """Deleting a user closes its connections at once; an unknown user is no error."""
        self.request("DELETE", "users", user, ok_missing=True)

    def user_exists(self, user: str) -> bool:
        return self.request("GET", "users", user, ok_missing=True) is not None

    def grant(self, vhost: str, access: Access):
        self.request("PUT", "permissions", vhost, access.user, body={
            "configure": access.configure, "write": access.write, "read": access.read})
        for exchange, (write, read) in access.topic.items():
            self.request("PUT", "topic-permissions", vhost, access.user, body={
                "exchange": exchange, "write": write, "read": read})

    def declare_topology(self, vhost: str, subscriptions, services, arguments=None):
        """Exchanges, consumer queues with their bindings, retry and parked queues, and the
        services' RPC queues; ``arguments`` for each (``x-queue-type``)."""
        arguments = dict(arguments or {})
        self.request("PUT", "vhosts", vhost, body={})
        exchange = {"type": "topic", "durable": True, "auto_delete": False, "internal": False,
                    "arguments": {}}
        self.request("PUT", "exchanges", vhost, RPC_EXCHANGE, body=exchange)
        queue = {"durable": True, "auto_delete": False, "arguments": arguments}
        for service in services:
            self.request("PUT", "exchanges", vhost, f"{service}.events", body=exchange)
            self.request("PUT", "queues", vhost, f"rpc-{service}", body=queue)
            self.request("POST", "bindings", vhost, "e", RPC_EXCHANGE, "q", f"rpc-{service}",
                         body={"routing_key": f"{service}.*", "arguments": {}})
        for sub in subscriptions:
            self.request("PUT", "queues", vhost, sub.queue_name, body=queue)
            self.request("POST", "bindings", vhost, "e", f"{sub.source_service}.events", "q",
                         sub.queue_name, body={"routing_key": sub.event_type, "arguments": {}})
            self.request("PUT", "queues", vhost, retry_queue_name(sub.queue_name), body={
                "durable": True, "auto_delete": False,
                "arguments": retry_arguments(sub.queue_name, arguments)})
            self.request("PUT", "queues", vhost, parked_queue_name(sub.queue_name), body=queue)
