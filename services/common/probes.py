"""Liveness and readiness of this process, answered by the process itself.

An RPC health call goes through the service's shared queue: in an enrolment wave it waits
behind the work it should watch (every pod fails liveness together and is restarted), and any
sibling instance may answer it (a wedged pod stays "live"). These probes look only at this
process's own service containers:

* live: each container is running and its queue consumer thread is alive;
* ready: live, each consumer is connected to the broker, each service database answers, and
  whatever a service's dependencies add (certificates: its signing key signs).

They are served next to the metrics (``METRICS_PORT``): ``/health/live``, ``/health/ready``.
"""
from __future__ import annotations

import threading

import eventlet

DATABASE_TIMEOUT_S = 2.0


class Probes:
    def __init__(self):
        self._containers: dict[int, object] = {}
        self._lock = threading.Lock()

    def watch(self, container):
        with self._lock:
            self._containers[id(container)] = container

    def forget(self, container):
        with self._lock:
            self._containers.pop(id(container), None)

    def containers(self) -> list:
        with self._lock:
            return list(self._containers.values())

    def live(self) -> tuple[bool, dict]:
        return self._report(_running)

    def ready(self) -> tuple[bool, dict]:
        return self._report(_readiness)

    def _report(self, check) -> tuple[bool, dict]:
        report = {}
        for container in self.containers():
            try:
                if container._died.ready() and not container._died.has_exception():
                    self.forget(container)  # stopped on purpose, not a failure
                    continue
                report[container.service_name] = check(container)
            except ReferenceError:  # extensions hold the container weakly: it is gone
                self.forget(container)
        return bool(report) and all(v == "ok" for v in report.values()), report


def _queue_consumer(container):
    from services.common.broker import QueueConsumer
    return next((e for e in container.extensions if isinstance(e, QueueConsumer)), None)


def _running(container) -> str:
    if container._died.ready():
        return "died"
    if container._being_killed:
        return "stopping"
    consumer = _queue_consumer(container)
    if consumer is not None and (consumer._gt is None or consumer._gt.dead):
        return "consumer thread gone"
    return "ok"


def _readiness(container) -> str:
    state = _running(container)
    return state if state != "ok" else (
        _broker(container) or _database(container) or _own_checks(container) or "ok")


def _own_checks(container) -> str | None:
    """A dependency may say what else its service needs to be ready (``readiness()``: None,
    or why not), e.g. that the certificates service can read its signing key and sign."""
    for dependency in container.dependencies:
        check = getattr(dependency, "readiness", None)
        if callable(check):
            problem = check()
            if problem:
                return problem
    return None


def _broker(container) -> str | None:
    consumer = _queue_consumer(container)
    if consumer is not None and not consumer.broker_connected:
        return "broker connection down"
    return None


def _database(container) -> str | None:
    from sqlalchemy import text

    from services.common.db import Database
    database = next((d for d in container.dependencies if isinstance(d, Database)), None)
    if database is None or getattr(database, "handle", None) is None:
        return None
    try:
        with eventlet.Timeout(DATABASE_TIMEOUT_S):
            with database.handle.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
    except BaseException as exc:  # eventlet.Timeout is a BaseException
        if not isinstance(exc, (Exception, eventlet.Timeout)):
            raise
        return f"database does not answer ({type(exc).__name__})"
    return None


PROBES = Probes()
