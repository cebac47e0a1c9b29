"""The one database dependency: an SQLAlchemy 2 session per unit of work.

``db.run(fn, *args)`` runs ``fn(session, *args)`` in one transaction: commit on success,
rollback on error, and a retry when PostgreSQL reports a serialization failure or deadlock.
Events written with ``emit`` land in the service's outbox in that same transaction, and the
relay is woken after the commit.

Connections are not pinged before use (a round trip per transaction). A connection that turns
out to be dead fails its first statement instead; the transaction then runs again on a fresh
one, which is safe as long as the COMMIT was not yet sent (nothing of it landed).
"""
from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from typing import Callable

from nameko.extensions import DependencyProvider
from sqlalchemy import create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from services.common import config as cfg
from services.common.errors import LotsenError

log = logging.getLogger(__name__)

RETRYABLE_PGCODES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def make_engine(url: str, pool_size: int = 10):
    if url.startswith("sqlite"):
        # One connection per process, handed out in turn (the pool's wait is green under
        # eventlet): SQLite has a single writer, and a blocked sqlite call would stall the hub.
        engine = create_engine(
            url, poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=120,
            connect_args={"check_same_thread": False, "isolation_level": None, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection):
            # Take the write lock at BEGIN, so read-then-write never fails half-way.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)


def _is_retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "pgcode", None) in RETRYABLE_PGCODES


class DatabaseHandle:
    """A service's database: engine, sessions, transactions with retry."""

    def __init__(self, url: str, producer: str, outbox_model=None, inbox_model=None,
                 pool_size: int = 10, on_emit: Callable[[], None] | None = None):
        self.url = url
        self.outbox_model = outbox_model
        self.engine = make_engine(url, pool_size)
        self.on_emit = on_emit
        self.sessionmaker = sessionmaker(
            self.engine, expire_on_commit=False,
            info={"producer": producer, "outbox_model": outbox_model, "inbox_model": inbox_model},
        )

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self, correlation_id: str | None = None, commit: bool = True,
                    progress: dict | None = None):
        """One unit of work; ``commit=False`` runs everything and then rolls it back (dry run).
        ``progress["committing"]`` tells afterwards whether the COMMIT was attempted."""
        session: Session = self.sessionmaker()
        session.info["correlation_id"] = correlation_id
        try:
            yield session
            if commit:
                if progress is not None:
                    progress["committing"] = True
                session.commit()
            else:
                session.rollback()
                session.info["emitted"] = False
        except BaseException:
            session.rollback()
            raise
        finally:
            emitted = session.info.get("emitted")
            session.close()
        if emitted and self.on_emit:
            self.on_emit()

    def run(self, fn: Callable, *args, correlation_id: str | None = None, attempts: int = 5,
            commit: bool = True, retry_lost_connection: bool = False, **kwargs):
        """``fn(session, ...)`` in a transaction, again after a conflict, and again on a fresh
        connection when the old one turns out to be dead before the COMMIT was sent. With
        ``retry_lost_connection`` also when it dropped during the COMMIT: only for work that is
        safe to repeat, as the commit may have landed."""
        for attempt in range(1, attempts + 1):
            progress = {"committing": False}
            try:
                with self.transaction(correlation_id, commit, progress) as session:
                    return fn(session, *args, **kwargs)
            except DBAPIError as exc:
                lost = exc.connection_invalidated and (
                    retry_lost_connection or not progress["committing"])
                if attempt == attempts or not (lost or _is_retryable(exc)):
                    raise
                if lost:
                    log.info("database connection lost, retrying (attempt %d)", attempt)
                    time.sleep(0.2 * (attempt - 1))  # a stale pooled connection: at once
                else:
                    log.info("transaction conflict, retrying (attempt %d)", attempt)
                    time.sleep(random.uniform(0.005, 0.05) * attempt)

    def dispose(self):
        self.engine.dispose()


def run_in_group(group, db: "BoundDatabase", key, fn: Callable, *args, lock_order=None):
    """``db.run(fn, *args)``, sharing a transaction with the calls of the same ``key`` that
    queued up while another one ran (a ``GroupCommit``): one BEGIN and one COMMIT for all of
    them. Each runs with its own correlation id and gets its own answer; a ``LotsenError`` is
    its own refusal and leaves the others be, so ``fn`` must refuse before it writes anything
    that should not stay. Any other error runs every call again alone. Calls are taken in order
    of ``lock_order`` (stable, so arrival order within one value), so that transactions in
    different processes take row locks in the same order and do not deadlock each other."""
    outcome = group.run(key, (fn, args, db.correlation_id, lock_order),
                        lambda calls: db.run(_run_all, calls))
    if isinstance(outcome, LotsenError):
        raise outcome
    return outcome


def _run_all(session: Session, calls: list) -> list:
    order = sorted(range(len(calls)), key=lambda n: (calls[n][3] is None, str(calls[n][3] or "")))
    outcomes = [None] * len(calls)
    for n in order:
        fn, args, correlation_id, _ = calls[n]
        session.info["correlation_id"] = correlation_id
        try:
            outcomes[n] = fn(session, *args)
        except LotsenError as refusal:
            outcomes[n] = refusal
    return outcomes


class BoundDatabase:
    """What a worker sees: the service's database with the call's correlation id."""

    def __init__(self, handle: DatabaseHandle, correlation_id: str | None):
        self._handle = handle
        self._correlation_id = correlation_id

    @property
    def correlation_id(self) -> str | None:
        return self._correlation_id

    def run(self, fn: Callable, *args, **kwargs):
        return self._handle.run(fn, *args, correlation_id=self._correlation_id, **kwargs)

    def transaction(self):
        return self._handle.transaction(self._correlation_id)


class Database(DependencyProvider):
    """Gives each worker the service's database; runs the outbox relay beside the service."""

    def __init__(self, service: str, outbox_model=None, inbox_model=None, relay: bool = True):
        self.service = service
        self.outbox_model = outbox_model
        self.inbox_model = inbox_model
        self.with_relay = relay and outbox_model is not None
        self.handle: DatabaseHandle | None = None
        self.relay = None

    def setup(self):
        from services.common.messaging import OutboxRelay

        config = self.container.config
        pool_size = int(config.get("max_workers", 10)) + 2
        self.handle = DatabaseHandle(
            cfg.database_url(config, self.service), producer=self.container.service_name,
            outbox_model=self.outbox_model, inbox_model=self.inbox_model, pool_size=pool_size,
        )
        if self.with_relay:
            self.relay = OutboxRelay(self.handle, self.container.service_name, config)
            self.handle.on_emit = self.relay.wake

    def start(self):
        if self.relay:
            self.container.spawn_managed_thread(self.relay.run, identifier="outbox-relay")

    def stop(self):
        if self.relay:
            self.relay.stop()

    def kill(self):
        self.stop()

    def get_dependency(self, worker_ctx):
        from services.common.logs import correlation_id_of
        return BoundDatabase(self.handle, correlation_id_of(worker_ctx))


def open_database(config: dict, service: str, outbox_model=None, inbox_model=None,
                  producer: str | None = None) -> DatabaseHandle:
    """A handle outside nameko (CLI, tests): events written here are published by the
    running service's relay."""
    return DatabaseHandle(cfg.database_url(config, service), producer=producer or service,
                          outbox_model=outbox_model, inbox_model=inbox_model, pool_size=2)
