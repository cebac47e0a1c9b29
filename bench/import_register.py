"""Times the register import (the issue asks for the full file in under 30 s here).

Prints parse time, first import and re-import on SQLite, and on PostgreSQL when one answers on
127.0.0.1:5432. Usage: .venv/bin/python bench/import_register.py [--file PATH]
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.migrations import upgrade  # noqa: E402
from services.enrolment.register import import_register, parse_register  # noqa: E402

DEFAULT_FILE = ROOT.parent / "shared" / "data" / "destatis-gv-auszug.csv"
PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def import_into(url: str, records) -> list[tuple[str, float, str]]:
    upgrade("enrolment", url)
    engine = create_engine(url)
    rows = []
    try:
        for label in ("first import", "re-import (unchanged)"):
            with Session(engine) as session:
                result, seconds = timed(lambda: import_register(session, records))
                session.commit()
            rows.append((label, seconds, f"{result.created} new, {result.updated} updated, "
                                         f"{result.unchanged} unchanged"))
    finally:
        engine.dispose()
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args()
    records, parse_seconds = timed(lambda: parse_register(args.file))
    table = [("sqlite", "parse", parse_seconds, f"{len(records)} bodies")]
    with tempfile.TemporaryDirectory() as tmp:
        for label, seconds, note in import_into(f"sqlite:///{tmp}/bench.sqlite", records):
            table.append(("sqlite", label, seconds, note))
    try:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"lotsen_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            for label, seconds, note in import_into(PG_ADMIN.rsplit("/", 1)[0] + "/" + name,
                                                    records):
                table.append(("postgresql", label, seconds, note))
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            admin.dispose()
    except Exception as exc:  # no PostgreSQL here: report SQLite only
        print(f"PostgreSQL skipped: {type(exc).__name__}")
    print(f"register import, {args.file.name}, {platform.node()}, Python {platform.python_version()}")
    print(f"{'database':<11} {'step':<24} {'seconds':>8}  result")
    for database, step, seconds, note in table:
        print(f"{database:<11} {step:<24} {seconds:>8.2f}  {note}")
    total = max(s for _, step, s, _ in table if step == "first import") + parse_seconds
    print(f"slowest full import incl. parsing: {total:.2f} s (target: under 30 s)")


if __name__ == "__main__":
    main()
