"""Counting what a hot path says to its database, through SQLAlchemy's events.

``Statements`` records every statement an engine sends, every transaction begun and every
commit or rollback. An ``executemany`` counts once per row it sends: psycopg2's executemany is
a round trip per row. Where SQLAlchemy batches the rows into one statement instead
(insertmanyvalues, e.g. a plain INSERT), the event sees that one statement and counts it once. A
statement budget test runs a hot path once, deterministically, and compares the counts with
the budget: a change that adds a query fails the suite instead of slowing production.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import event


@dataclass
class Statements:
    sql: list[str] = field(default_factory=list)
    begins: int = 0
    commits: int = 0
    rollbacks: int = 0

    @property
    def count(self) -> int:
        return len(self.sql)

    @property
    def round_trips(self) -> int:
        """Statements plus BEGIN and COMMIT/ROLLBACK, as the database sees them."""
        return self.count + self.begins + self.commits + self.rollbacks

    def __str__(self) -> str:
        lines = [f"{self.count} statements, {self.begins} BEGIN, {self.commits} COMMIT, "
                 f"{self.rollbacks} ROLLBACK:"]
        lines += [f"  {n}. {' '.join(s.split())[:160]}" for n, s in enumerate(self.sql, 1)]
        return "\n".join(lines)


@contextmanager
def counting(engine):
    """Count what ``engine`` is asked to do inside the block."""
    seen = Statements()

    def on_execute(conn, cursor, statement, parameters, context, executemany):
        rows = len(parameters) if executemany and isinstance(parameters, (list, tuple)) else 1
        seen.sql.extend([statement] * rows)

    def on_begin(conn):
        seen.begins += 1

    def on_commit(conn):
        seen.commits += 1

    def on_rollback(conn):
        seen.rollbacks += 1

    listeners = [("before_cursor_execute", on_execute), ("begin", on_begin),
                 ("commit", on_commit), ("rollback", on_rollback)]
    for name, fn in listeners:
        event.listen(engine, name, fn)
    try:
        yield seen
    finally:
        for name, fn in listeners:
            event.remove(engine, name, fn)
