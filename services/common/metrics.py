"""Prometheus metrics: per entrypoint counts, failures and latency, the outbox backlog, parked
messages, and each service's own domain figures, read from its database when scraped.

One HTTP endpoint per process (``METRICS_PORT``, 0 turns it off); with all services in one
process they share it.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

from nameko.extensions import DependencyProvider
from prometheus_client import REGISTRY, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from services.common import config as cfg

log = logging.getLogger(__name__)

HANDLED = Counter("lotsen_handled_total", "Messages and calls handled, by outcome",
                  ["service", "entrypoint", "outcome"])
REFUSED = Counter("lotsen_refused_total", "Messages refused: unauthorised callers, forged "
                  "events, malformed messages", ["service", "entrypoint", "reason"])
UNROUTABLE = Counter("lotsen_unroutable_events_total", "Events the broker returned because no "
                     "queue took them (kept in the outbox, sent again)", ["service", "event_type"])
LATENCY = Histogram("lotsen_handler_seconds", "Time spent in an entrypoint",
                    ["service", "entrypoint"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

_server_lock = threading.Lock()
_server_port = None


def _serve(port: int):
    """One HTTP server per process: /metrics and the process's own probes."""
    global _server_port
    with _server_lock:
        if _server_port is None and port:
            import eventlet
            import eventlet.wsgi
            listener = eventlet.listen(("0.0.0.0", port))
            eventlet.spawn_n(eventlet.wsgi.server, listener, _application, log_output=False,
                             socket_timeout=10)
            _server_port = listener.getsockname()[1]


def serving_port() -> int | None:
    """The port this process serves metrics and probes on (None: not serving)."""
    return _server_port


_metrics_app = make_wsgi_app()


def _application(environ, start_response):
    from services.common.probes import PROBES

    path = environ.get("PATH_INFO", "")
    if path in ("/health/live", "/health/ready"):
        ok, report = PROBES.live() if path.endswith("live") else PROBES.ready()
        body = json.dumps({"status": "ok" if ok else "unavailable", "services": report})
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
        return [body.encode()]
    return _metrics_app(environ, start_response)


class ServiceGauges:
    """Gauges read at scrape time for one service: backlog, parked messages, domain figures."""

    def __init__(self, service: str, handle, snapshot: Callable | None, config: dict):
        self.service, self.handle, self.snapshot, self.config = service, handle, snapshot, config

    def add_to(self, backlog, figures, parked):
        try:
            outbox = self.handle.outbox_model
            if outbox is not None:
                count = self.handle.run(lambda s: s.scalar(
                    select(func.count()).select_from(outbox).where(outbox.published_at.is_(None))))
                backlog.add_metric([self.service], count)
            if self.snapshot:
                for name, value in self.handle.run(self.snapshot).items():
                    figures.add_metric([self.service, name], value)
            parked.add_metric([self.service], self._parked())
        except Exception as exc:  # a scrape must not break the service
            log.warning("metrics for %s incomplete (%s)", self.service, type(exc).__name__)

    def _parked(self) -> int:
        from services.common import topology
        from services.common.messaging import parked_queue_name
        names = [s.queue_name for s in topology.subscriptions(topology.service_classes(self.config))
                 if s.consumer_service == self.service]
        total = 0
        with cfg.amqp_connection(self.config, connect_timeout=3) as connection:
            channel = connection.channel()
            for name in names:
                try:
                    _, count, _ = channel.queue_declare(parked_queue_name(name), passive=True)
                    total += count
                except Exception:
                    channel = connection.channel()  # a missing queue closes the channel
        return total


class ProcessCollector:
    """One collector per process for the services running in it."""

    def __init__(self):
        self.services: dict[str, ServiceGauges] = {}

    def collect(self):
        backlog = GaugeMetricFamily("lotsen_outbox_backlog", "Events not yet published",
                                    labels=["service"])
        figures = GaugeMetricFamily("lotsen_domain", "Domain figures",
                                    labels=["service", "figure"])
        parked = GaugeMetricFamily("lotsen_parked_messages", "Messages parked after retries",
                                   labels=["service"])
        for gauges in list(self.services.values()):
            gauges.add_to(backlog, figures, parked)
        yield backlog
        yield figures
        yield parked


COLLECTOR = ProcessCollector()
REGISTRY.register(COLLECTOR)


class Metrics(DependencyProvider):
    """Counts and times every worker; registers the service's gauges once per process."""

    def __init__(self, snapshot: Callable | None = None):
        self.snapshot = snapshot
        self._started: dict = {}

    def setup(self):
        from services.common.db import Database
        from services.common.probes import PROBES

        config = self.container.config
        _serve(int(cfg.setting(config, "METRICS_PORT", 0)))
        PROBES.watch(self.container)
        database = next((d for d in self.container.dependencies
                         if isinstance(d, Database)), None)
        if database is not None:  # the newest instance of a service in this process reports
            COLLECTOR.services[self.container.service_name] = ServiceGauges(
                self.container.service_name, _LazyHandle(database), self.snapshot, config)

    def stop(self):
        from services.common.probes import PROBES
        PROBES.forget(self.container)  # stopped on purpose; a container that died stays

    def worker_setup(self, worker_ctx):
        self._started[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started = self._started.pop(worker_ctx, None)
        labels = (worker_ctx.service_name, worker_ctx.entrypoint.method_name)
        HANDLED.labels(*labels, "failed" if exc_info else "ok").inc()
        if started is not None:
            LATENCY.labels(*labels).observe(time.perf_counter() - started)

    def worker_teardown(self, worker_ctx):
        self._started.pop(worker_ctx, None)


class _LazyHandle:
    """The database handle exists only after the Database dependency's setup."""

    def __init__(self, database):
        self.database = database

    def __getattr__(self, name):
        return getattr(self.database.handle, name)
