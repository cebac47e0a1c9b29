"""Enrolment throughput and latency next to a no-op nameko baseline, and flat cost.

Runs against the RabbitMQ and PostgreSQL on this machine, in its own vhost and databases
(dropped afterwards). Prints a table and appends it to bench/results.md.

    .venv/bin/python bench/throughput.py [--calls 300] [--big 100000]
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import eventlet
eventlet.monkey_patch()

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import date, datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import requests  # noqa: E402
from nameko.containers import ServiceContainer  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from services.common import callers  # noqa: E402
from sqlalchemy import create_engine, insert, text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.db import open_database  # noqa: E402
from services.common.migrations import upgrade  # noqa: E402
from services.enrolment import domain  # noqa: E402
from services.enrolment.models import Enrolment, InboxRecord, OutboxMessage  # noqa: E402
from services.enrolment.register import import_register, parse_register  # noqa: E402
from services.enrolment.service import EnrolmentService  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from noop import SERVICES as NOOP_SERVICES, chain_rate as noop_chain_rate  # noqa: E402

REGISTER = ROOT.parent / "shared" / "data" / "destatis-gv-auszug.csv"
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
API = "http://guest:guest@127.0.0.1:15672/api"
def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def measure(cluster, call, calls: int, concurrency: int) -> dict:
    """Keep ``concurrency`` calls in flight (waves of async calls: the standalone proxy is not
    safe for simultaneous blocking calls from several green threads)."""
    latencies = []
    started = time.perf_counter()
    done = 0
    while done < calls:
        wave = min(concurrency, calls - done)
        issued = [(time.perf_counter(), call(cluster, done + i)) for i in range(wave)]
        for sent, reply in issued:
            reply.result()
            latencies.append(time.perf_counter() - sent)
        done += wave
    elapsed = time.perf_counter() - started
    return {"rate": calls / elapsed, "p50": percentile(latencies, 50) * 1000,
            "p99": percentile(latencies, 99) * 1000}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--big", type=int, default=100_000)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    vhost, database = f"lotsen_bench_{run}", f"lotsen_bench_{run}"
    requests.put(f"{API}/vhosts/{vhost}", timeout=10).raise_for_status()
    requests.put(f"{API}/permissions/{vhost}/guest", json={"configure": ".*", "write": ".*",
                                                          "read": ".*"}, timeout=10)
    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    url = f"{PG}/{database}"
    config = {"AMQP_URI": f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}", "max_workers": 10,
              "DATABASES": {"enrolment": url}, "OUTBOX": {"poll_interval_s": 0.2},
              "LOTSEN_HOME": "/tmp/lotsen-bench"}
    rows = []
    containers = []
    try:
        upgrade("enrolment", url)
        handle = open_database(config, "enrolment", OutboxMessage, InboxRecord)
        records = [r for r in parse_register(REGISTER) if r.land == "08"]
        handle.run(import_register, records)

        def setup(session):
            domain.create_programme(session, {
                "code": "BW-DL", "name": "Bench", "land": "08", "role_name": "Digitallotse",
                "eligible_kinds": ["gemeinde", "kreis"], "enrolment_opens_on": date(2026, 1, 1),
                "enrolment_closes_on": date(2099, 1, 1)})
            provider, _ = domain.create_provider(session, "Bench")
            course = domain.create_course(session, provider, {
                "programme_code": "BW-DL", "title": "Bench", "location": "Bench",
                "capacity": 100_000, "open": True,
                "modules": [{"number": 1, "title": "M", "date": date(2027, 1, 1)}]})
            return course.id, course.programme_id
        course_id, programme_id = handle.run(setup)
        bodies = [r.ags for r in records if r.kind == "gemeinde"]

        for cls in (*NOOP_SERVICES, EnrolmentService):
            container = ServiceContainer(cls, config)
            container.start()
            containers.append(container)

        with ClusterRpcProxy(config) as cluster:
            counter = iter(range(10_000_000))

            target = {"course": course_id}

            key = callers.service_key(config)

            def enrol(c, i):
                n = next(counter)
                ags = bodies[n % len(bodies)]
                # As the gateway does: each call carries its signed "acting for" assertion.
                c._worker_ctx.data[callers.ASSERTION_KEY] = callers.sign_assertion(
                    key, "gateway", ags)
                return c.enrolment.enrol.call_async(ags, {
                    "course_id": str(target["course"]), "participant": {
                        "given_name": "Bench", "family_name": f"P{n}",
                        "email": f"bench{n}@example.org"}})

            for concurrency in (1, 10, 50):
                noop = measure(cluster, lambda c, i: c.noop.call.call_async(i), args.calls,
                               concurrency)
                real = measure(cluster, enrol, args.calls, concurrency)
                rows.append((f"RPC at concurrency {concurrency}", noop, real))

            chain_rate = noop_chain_rate(cluster, args.calls)

            # Flat cost: enrol latency with few and with many existing enrolments.
            def fill(count):
                now = datetime.now(timezone.utc)
                with create_engine(url).begin() as conn:
                    start = conn.execute(text("SELECT count(*) FROM enrolments")).scalar()
                    batch = [{"id": uuid.uuid4(), "programme_id": programme_id,
                              "course_id": course_id, "ags": bodies[i % len(bodies)],
                              "sequence": 10_000_000 + start + i, "given_name": "F",
                              "family_name": "F", "email": f"fill{start + i}@example.org",
                              "status": "cancelled", "enrolled_at": now,
                              "funding_status": "pending"}
                             for i in range(max(0, count - start))]
                    for chunk in range(0, len(batch), 5000):
                        conn.execute(insert(Enrolment), batch[chunk:chunk + 5000])
                    conn.execute(text("ANALYZE enrolments"))
            flat = {}
            for size in (1_000, args.big):
                fill(size)
                # A fresh course each time: the cost measured is the table's size, not a queue.
                target["course"] = handle.run(lambda s: domain.create_course(
                    s, s.query(domain.Provider).first(), {
                        "programme_code": "BW-DL", "title": "Flat", "location": "Bench",
                        "capacity": 1000, "open": True,
                        "modules": [{"number": 1, "title": "M", "date": date(2027, 1, 1)}]}).id)
                flat[size] = measure(cluster, enrol, 100, 1)["p50"]
    finally:
        for container in containers:
            container.stop()
        try:
            handle.dispose()
        except Exception:
            pass
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": database})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}"'))
        admin.dispose()
        requests.delete(f"{API}/vhosts/{vhost}", timeout=10)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
             f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
             "", "| measure | no-op nameko | enrol | ratio |", "| --- | --- | --- | --- |"]
    for label, noop, real in rows:
        lines.append(f"| {label}: calls/s | {noop['rate']:.0f} | {real['rate']:.0f} | "
                     f"{real['rate'] / noop['rate']:.2f} |")
        lines.append(f"| {label}: p50 / p99 ms | {noop['p50']:.1f} / {noop['p99']:.1f} | "
                     f"{real['p50']:.1f} / {real['p99']:.1f} | |")
    lines.append(f"| no-op event chain (2 hops): chains/s | {chain_rate:.0f} | | |")
    for size, p50 in flat.items():
        lines.append(f"| enrol p50 with {size:,} existing enrolments | | {p50:.1f} ms | |")
    lines.append(f"| peak RSS of the bench process (all containers in it) | | "
                 f"{rss_mb:.0f} MB | |")
    table = "\n".join(lines)
    print(table)
    with open(ROOT / "bench" / "results.md", "a", encoding="utf-8") as out:
        out.write(table + "\n\n")


if __name__ == "__main__":
    main()
