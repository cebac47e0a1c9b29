"""Writing events to the outbox and recording handled ones in the inbox, inside the caller's
transaction. No nameko here, so domain modules can use it and stay framework-free.

Both are on every hot path, so each is one statement: the outbox row is a plain Core INSERT,
and the inbox record is an INSERT that skips a duplicate (``ON CONFLICT DO NOTHING``) and says
whether it wrote, instead of a SELECT and then an INSERT.
"""
from __future__ import annotations

import uuid

from sqlalchemy import bindparam, insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.visitors import InternalTraversal

from services.common.events import Event, build_event
from services.common.models import utcnow


# Statements made once per table (and dialect): SQLAlchemy then neither builds them nor works out
# their cache keys on every call.
_INSERTS: dict = {}


class SkipDuplicates(ClauseElement):
    """``ON CONFLICT (columns) DO NOTHING``, written the same by PostgreSQL and SQLite.

    The dialects' own ``on_conflict_do_nothing()`` makes an INSERT that SQLAlchemy cannot
    cache, so it was compiled again on every call (a tenth of the notifications service's CPU
    in the national benchmark). This clause has a cache key (its columns), so the INSERT that
    carries it is compiled once per dialect."""

    __visit_name__ = "skip_duplicates"
    _traverse_internals = [("columns", InternalTraversal.dp_string_list)]
    inherit_cache = True

    def __init__(self, columns):
        self.columns = tuple(columns)


@compiles(SkipDuplicates)
def _skip_duplicates(element, compiler, **kw):
    quoted = ", ".join(compiler.preparer.quote(column) for column in element.columns)
    return f"ON CONFLICT ({quoted}) DO NOTHING"


class InsertSkippingDuplicates(Insert):
    """A plain INSERT with ``SkipDuplicates`` after its values (and before RETURNING)."""

    inherit_cache = True  # the clause is part of Insert's own cache key

    def __init__(self, table, conflict):
        super().__init__(table)
        self._post_values_clause = SkipDuplicates(conflict)


def insert_skipping_duplicates(session: Session, table, rows: list[dict], conflict: list[str],
                               returning=None):
    """``INSERT ... ON CONFLICT (conflict) DO NOTHING`` on PostgreSQL and SQLite: rows whose
    key exists already are left as they are. With ``returning`` (columns), the rows written.

    Several rows always go with a RETURNING (of the conflict columns if the caller wants
    none): SQLAlchemy 2.0 sends an INSERT with ON CONFLICT and several rows as one statement
    only then, and otherwise hands them to psycopg2's executemany, a round trip per row."""
    if returning is None and len(rows) > 1:
        returning = [table.c[name] for name in conflict]
    shape = ("skipping", table, tuple(conflict), tuple(returning or ()))
    statement = _INSERTS.get(shape)
    if statement is None:
        statement = InsertSkippingDuplicates(table, conflict)
        if returning is not None:
            statement = statement.returning(*returning)
        statement = _INSERTS.setdefault(shape, statement)
    return session.execute(statement, rows[0] if len(rows) == 1 else rows)


def _insert_into(table):
    """One INSERT statement per table, made once (no building, no cache key per call)."""
    statement = _INSERTS.get(table)
    if statement is None:
        statement = _INSERTS.setdefault(table, insert(table))
    return statement


def write_together(session: Session, inserts: list[tuple], then: tuple | None = None):
    """Several INSERTs, ``(table, row)`` each, and an optional last statement ``then``
    (``(statement, params)``, e.g. an UPDATE of running totals) in one round trip.

    On PostgreSQL they become one statement of data-modifying CTEs (``WITH w0 AS (INSERT
    ...), w1 AS (INSERT ...) UPDATE ...``): all of it happens or none, like separate
    statements in the same transaction, but the database is asked once. Elsewhere (SQLite)
    they run one after another. Every row of a table must name the same columns, including
    every column with a default; the parameters of ``then`` must not be named ``w<n>_...``."""
    if session.get_bind().dialect.name != "postgresql":
        for table, row in inserts:
            session.execute(_insert_into(table), row)
        if then is not None:
            session.execute(*then)
        return
    shape = ("together", tuple((table, tuple(row)) for table, row in inserts),
             then[0] if then is not None else None)
    statement = _INSERTS.get(shape)
    if statement is None:
        writes = [insert(table).values({c: bindparam(f"w{n}_{c}") for c in row})
                  for n, (table, row) in enumerate(inserts)]
        main = then[0] if then is not None else writes.pop()
        for n, write in enumerate(writes):
            main = main.add_cte(write.cte(f"w{n}"))
        statement = _INSERTS.setdefault(shape, main)
    params = {f"w{n}_{c}": value for n, (_, row) in enumerate(inserts)
              for c, value in row.items()}
    if then is not None:
        params.update(then[1])
    session.execute(statement, params)


def event_row(session: Session, event_type: str, payload: dict,
              correlation_id: str | None = None) -> tuple:
    """An event's outbox row, ``(table, row)``, to write with others (``write_together``);
    the relay is woken after the commit. The correlation id is the session's unless given
    (one transaction deciding several events: each one's own)."""
    outbox = session.info["outbox_model"].__table__
    envelope = build_event(session.info["producer"], event_type, payload,
                           correlation_id=correlation_id or session.info.get("correlation_id"))
    session.info["emitted"] = True
    return outbox, {"event_id": uuid.UUID(envelope["event_id"]), "event_type": event_type,
                    "envelope": envelope, "created_at": utcnow()}


def emit(session: Session, event_type: str, payload: dict) -> dict:
    """Write an event to the outbox in the session's transaction."""
    table, row = event_row(session, event_type, payload)
    session.execute(_insert_into(table), row)
    return row["envelope"]


def emit_numbered(session: Session, subject, event_type: str, payload: dict,
                  after: int | None = None) -> dict:
    """Write an event about ``subject`` (an enrolment, a funding, ...) numbered with its next
    ``version`` as the payload's ``sequence``, so consumers apply only newer ones. ``after``:
    the number to count on from, where it is not the subject's own (certificates count per
    enrolment across re-issues)."""
    start = (subject.version or 0) if after is None else after
    subject.version = start + 1
    return emit(session, event_type, dict(payload, sequence=subject.version))


def first_delivery(session: Session, event: Event, consumer: str) -> bool:
    """Record ``event`` as handled by ``consumer``; False if it was handled before.

    The record commits with the handler's effect, so a redelivered event has no second effect.
    Two deliveries racing each other: the second one's INSERT waits for the first's
    transaction and then skips (PostgreSQL), or waits for the write lock (SQLite), and sees
    it was handled.
    """
    inbox = session.info["inbox_model"].__table__
    written = insert_skipping_duplicates(
        session, inbox, [{"consumer": consumer, "event_id": event.event_id,
                          "event_type": event.event_type, "handled_at": utcnow()}],
        ["consumer", "event_id"], returning=[inbox.c.event_id])
    return written.first() is not None


def handle_once(session: Session, event: Event, consumer: str, effect) -> bool:
    """Run ``effect(session, event)`` unless ``consumer`` handled this event before; the inbox
    record and the effect commit together."""
    if not first_delivery(session, event, consumer):
        return False
    effect(session, event)
    return True


class Together:
    """An effect that can take a run of events at once: ``many(session, [(event,
    correlation id), ...])`` returns one result per event. ``handle_in_group`` hands it the
    consecutive new events of a batch that share it; called on its own it is a run of one."""

    def __init__(self, many):
        self.many = many

    def __call__(self, session: Session, event: Event):
        return self.many(session, [(event, None)])[0]


def handle_in_group(group, db, key, event: Event, consumer: str, effect) -> bool:
    """``handle_once`` through a ``GroupCommit``: the events of ``key`` that queued up while
    another transaction ran are handled together, in order, in one transaction: one inbox
    statement for all of them, and a ``Together`` effect once for each run of new events that
    share it. Each keeps its own correlation id for the events it causes. ``db`` is the
    worker's database."""
    item = (event, consumer, effect, db.correlation_id)
    return group.run(key, item, lambda items: db.run(_handle_all, items))


def _handle_all(session: Session, items: list) -> list[bool]:
    new = _first_deliveries(session, [(event, consumer) for event, consumer, _, _ in items])
    index = 0
    while index < len(items):
        event, _, effect, correlation_id = items[index]
        if not new[index]:
            index += 1
            continue
        if isinstance(effect, Together):
            run, index = [], index
            while index < len(items) and (not new[index] or items[index][2] is effect):
                if new[index]:
                    run.append((items[index][0], items[index][3]))
                index += 1
            effect.many(session, run)
            continue
        session.info["correlation_id"] = correlation_id
        effect(session, event)
        index += 1
    return new


def _first_deliveries(session: Session, deliveries: list[tuple]) -> list[bool]:
    """``first_delivery`` for several events at once, in one statement: for each, whether it
    is new to its consumer (the same one twice in the list: only the first is new)."""
    if len(deliveries) == 1:
        return [first_delivery(session, *deliveries[0])]
    inbox = session.info["inbox_model"].__table__
    rows, seen = [], set()
    for event, consumer in deliveries:
        if (consumer, event.event_id) not in seen:
            seen.add((consumer, event.event_id))
            rows.append({"consumer": consumer, "event_id": event.event_id,
                         "event_type": event.event_type, "handled_at": utcnow()})
    written = {(r.consumer, r.event_id) for r in insert_skipping_duplicates(
        session, inbox, rows, ["consumer", "event_id"],
        returning=[inbox.c.consumer, inbox.c.event_id])}
    new = []
    for event, consumer in deliveries:
        new.append((consumer, event.event_id) in written)
        written.discard((consumer, event.event_id))
    return new
