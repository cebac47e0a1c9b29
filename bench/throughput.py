"""The enrol RPC next to a no-op nameko RPC, measured the same way in the same run.

What is measured, and how:

* **Each service in its own process**, started as an operator starts it
  (``lotsen run --service enrolment``; the no-op service by ``bench/noop.py``), against the
  RabbitMQ and PostgreSQL on this machine, in a vhost and a database of their own.
* **Steady concurrency**: N green threads in the bench process, each with its own RPC proxy,
  each sending its next call as soon as the last one is answered.
* **Enrol calls as the gateway makes them**: a random eligible body of Baden-Württemberg, a
  random course among many of 22 seats (at least ten per green thread, and enough that nearly
  every call finds a seat), a new participant, an idempotency key, the signed "acting for"
  assertion. The relay publishes every enrolment_created to the queues of its consumers; those
  queues are emptied by a separate drain process (the consumers' own cost is the national
  case's business, ``bench/national.py``), so the broker works in a steady state.
* **CPU per call** from /proc: the service process, all PostgreSQL processes, the RabbitMQ
  node and the bench process itself, over the same window.
* **Flat cost**: enrol latency and CPU with 1,000 and with 100,000 active enrolments in the same
  programme. **The lock's ceiling**: every call into one course (capacity 1,000, so every call
  takes a seat), reported on its own.

    .venv/bin/python bench/throughput.py [--calls 2000] [--big 100000]
        [--compare /path/to/other/checkout] [--no-write]

``--compare DIR`` measures that checkout first (a ``git worktree`` of an older commit, with its
own ``make install``), then this one, and prints both side by side.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import checkout_from_argv  # noqa: E402

ROOT = checkout_from_argv()

import warnings  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import eventlet
eventlet.monkey_patch()

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import date, datetime, timedelta, timezone  # noqa: E402

import yaml  # noqa: E402

import common  # noqa: E402
from common import (  # noqa: E402
    REGISTER,
    CpuMeter,
    Databases,
    ServiceProcess,
    Vhost,
    describe,
    machine_line,
    peak_rss_mb,
    percentile,
    python_of,
    wait,
)

BENCH = Path(__file__).resolve().parent
SEATS = 22
SERVICE_KEY = "bench-service-key-" + "x" * 40


def drain(uri: str, queues: list[str]):
    """Consume and drop every message of ``queues`` (runs as its own process)."""
    from kombu import Connection, Consumer, Queue

    with Connection(uri) as connection:
        channel = connection.channel()
        channel.basic_qos(0, 1000, False)
        consumer = Consumer(channel, [Queue(q, no_declare=True) for q in queues], no_ack=True,
                            accept=["json"], on_message=lambda message: None)
        consumer.consume()
        while True:
            try:
                connection.drain_events(timeout=1)
            except TimeoutError:
                pass


class Calls:
    """``concurrency`` green threads, each with its own RPC proxy to ``service``."""

    def __init__(self, service: str, config: dict, concurrency: int):
        from nameko.standalone.rpc import ServiceRpcProxy
        self.proxies = [ServiceRpcProxy(service, config, timeout=120)
                        for _ in range(concurrency)]
        self.started = [p.start() for p in self.proxies]

    def close(self):
        for proxy in self.proxies:
            proxy.stop()

    def run(self, call, calls: int, meter: CpuMeter) -> dict:
        latencies = []
        counter = itertools.count()
        errors = []

        def worker(index):
            proxy, remote = self.proxies[index], self.started[index]
            while True:
                n = next(counter)
                if n >= calls:
                    return
                sent = time.perf_counter()
                try:
                    call(proxy, remote, n)
                except Exception as exc:  # counted, and the run is reported as failed
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                latencies.append(time.perf_counter() - sent)

        pool = eventlet.GreenPool(len(self.proxies))
        meter.start()
        started = time.perf_counter()
        for index in range(len(self.proxies)):
            pool.spawn(worker, index)
        pool.waitall()
        elapsed = time.perf_counter() - started
        cpu = meter.stop()
        if errors:
            raise RuntimeError(f"{len(errors)} of {calls} calls failed, e.g. {errors[:3]}")
        return {"calls": calls, "rate": calls / elapsed,
                "p50": percentile(latencies, 50) * 1000, "p99": percentile(latencies, 99) * 1000,
                "cpu_ms": {group: seconds * 1000 / calls for group, seconds in cpu.items()}}


def measure_checkout(args) -> dict:
    """Every measurement for the checkout this process imports (``ROOT``)."""
    from nameko.standalone.rpc import ServiceRpcProxy
    from sqlalchemy import create_engine, insert, text

    from services.common import callers
    from services.common.db import open_database
    from services.enrolment import domain
    from services.enrolment.models import Enrolment, InboxRecord, OutboxMessage
    from services.enrolment.register import import_register, parse_register

    rng = random.Random(args.seed)
    results = {"checkout": describe(ROOT), "rows": {}}
    workdir = Path(tempfile.mkdtemp(prefix="lotsen-throughput-"))
    with Vhost("lotsen_bench") as vhost, Databases("lotsen_bench", ["enrolment"]) as dbs:
        url = dbs.urls["enrolment"]
        config = {"AMQP_URI": vhost.uri, "max_workers": 10, "DATABASES": {"enrolment": url},
                  "OUTBOX": {"poll_interval_s": 0.2}, "LOTSEN_HOME": str(workdir),
                  "SERVICE_KEY": SERVICE_KEY, "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING",
                  "SHUTDOWN_GRACE_S": 5}
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        subprocess.run([python_of(ROOT), "-m", "services.cli", "--config", str(config_path),
                        "migrate"], cwd=ROOT, check=True, capture_output=True)
        handle = open_database(config, "enrolment", OutboxMessage, InboxRecord)
        records = [r for r in parse_register(REGISTER) if r.land == "08"]
        handle.run(import_register, records)
        first = date.today() + timedelta(days=60)

        def course_spec(capacity=SEATS, title="Basisseminar"):
            return {"programme_code": "BW-DL", "title": title, "location": "Bench",
                    "capacity": capacity, "open": True,
                    "modules": [{"number": m, "title": f"Modul {m}",
                                 "date": first + timedelta(days=m)} for m in range(1, 6)]}

        def setup(session):
            programme = domain.create_programme(session, {
                "code": "BW-DL", "name": "Bench", "land": "08", "role_name": "Digitallotse",
                "eligible_kinds": ["gemeinde", "kreis"],
                "enrolment_opens_on": date(2026, 1, 1), "enrolment_closes_on": date(2099, 1, 1)})
            domain.create_provider(session, "Bench Akademie")
            return programme.id
        programme_id = handle.run(setup)
        bodies = [ags for ags in handle.run(lambda s: [b.ags for b in domain.eligible_bodies(
            s, domain.programme_by_code(s, "BW-DL"))])]

        def new_courses(count, capacity=SEATS):
            def make(session):
                provider = session.query(domain.Provider).first()
                return [domain.create_course(session, provider, course_spec(capacity)).id
                        for _ in range(count)]
            return [str(c) for c in handle.run(make)]

        processes = [ServiceProcess(ROOT, config_path, "enrolment", workdir),
                     ServiceProcess(ROOT, config_path, "noop", workdir,
                                    module_args=[str(BENCH / "noop.py"), str(config_path),
                                                 "Noop"])]
        drainer = None
        try:
            def answers(service):
                with ServiceRpcProxy(service, config, timeout=5) as proxy:
                    return proxy.health() if service == "enrolment" else \
                        proxy.call("ok") == "ok"
            wait(lambda: answers("enrolment"), "the enrolment service", 120)
            wait(lambda: answers("noop"), "the no-op service", 120)
            # The relay has declared its consumers' queues before its first publish.
            event_queues = wait(lambda: [q for q in vhost.queues()
                                         if q.startswith("evt-enrolment-")
                                         and not q.endswith((".retry", ".parked"))],
                                "the event queues", 60)
            drainer = subprocess.Popen([sys.executable, str(BENCH / "throughput.py"), "--drain",
                                        vhost.uri, *event_queues], cwd=ROOT)
            service_pid = processes[0].pid
            noop_pid = processes[1].pid
            key = SERVICE_KEY.encode()
            serial = itertools.count()

            def enrol_into(course_ids):
                def call(proxy, remote, n):
                    k = next(serial)
                    ags = rng.choice(bodies)
                    proxy._worker_ctx.data[callers.ASSERTION_KEY] = callers.sign_assertion(
                        key, "gateway", ags)
                    remote.enrol(ags, {
                        "course_id": rng.choice(course_ids),
                        "participant": {"given_name": "Bench", "family_name": f"P{k}",
                                        "email": f"bench{k}@example.org"},
                        "idempotency_key": f"bench-{k}"})
                return call

            def profile(pid, name):
                """py-spy samples the service process while it works (``--profile DIR``)."""
                if not args.profile:
                    return None
                Path(args.profile).mkdir(parents=True, exist_ok=True)
                py_spy = str(Path(python_of(ROOT)).parent / "py-spy")
                return subprocess.Popen(
                    [py_spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                     "--nonblocking", "--output", str(Path(args.profile) / f"{name}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def stop_profile(sampler):
                if sampler is not None:
                    sampler.send_signal(2)  # SIGINT: py-spy writes its file and exits
                    sampler.wait(timeout=60)

            def noop(proxy, remote, n):
                remote.call(n)

            def both(concurrency, calls, label):
                courses = new_courses(max(10 * concurrency, math.ceil(calls / (SEATS / 2))))
                noop_calls = Calls("noop", config, concurrency)
                enrol_calls = Calls("enrolment", config, concurrency)
                try:
                    # A short warm-up each, then the measured runs.
                    noop_calls.run(noop, 50, CpuMeter({}))
                    enrol_calls.run(enrol_into(courses), 20, CpuMeter({}))
                    base = noop_calls.run(noop, calls, CpuMeter({"service": [noop_pid]}))
                    sampler = profile(service_pid, f"{common.run_name(ROOT)}-enrol-c{concurrency}")
                    real = enrol_calls.run(enrol_into(courses), calls,
                                           CpuMeter({"service": [service_pid]}))
                    stop_profile(sampler)
                finally:
                    noop_calls.close()
                    enrol_calls.close()
                results["rows"][label] = {"noop": base, "enrol": real}

            for concurrency in (1, 10, 50):
                both(concurrency, args.calls if concurrency > 1 else args.calls // 4,
                     f"RPC at concurrency {concurrency}")

            # The lock's ceiling: every call into one course.
            hot = new_courses(1, capacity=1000)
            calls = Calls("enrolment", config, 10)
            try:
                results["rows"]["one hot course, concurrency 10"] = {
                    "enrol": calls.run(enrol_into(hot), 1000,
                                       CpuMeter({"service": [service_pid]}))}
            finally:
                calls.close()

            # Flat cost: active enrolments in the same programme.
            fillers = new_courses(100, capacity=1000)
            engine = create_engine(url)

            def fill(count):
                moment = datetime.now(timezone.utc)
                with engine.begin() as conn:
                    have = conn.execute(text(
                        "SELECT count(*) FROM enrolments WHERE status IN "
                        "('confirmed', 'waitlisted')")).scalar()
                    rows = [{"id": uuid.uuid4(), "programme_id": programme_id,
                             "course_id": uuid.UUID(fillers[i % len(fillers)]),
                             "ags": bodies[i % len(bodies)], "sequence": 1_000_000 + have + i,
                             "given_name": "F", "family_name": "F",
                             "email": f"fill{have + i}@example.org", "status": "confirmed",
                             "enrolled_at": moment, "confirmed_at": moment,
                             "funding_status": "pending"}
                            for i in range(max(0, count - have))]
                    for start in range(0, len(rows), 5000):
                        conn.execute(insert(Enrolment), rows[start:start + 5000])
                    conn.execute(text("ANALYZE"))

            for size in (1_000, args.big):
                fill(size)
                courses = new_courses(20)
                for concurrency in (1, 10):
                    calls = Calls("enrolment", config, concurrency)
                    try:
                        results["rows"][f"{size:,} active enrolments, concurrency "
                                        f"{concurrency}"] = {
                            "enrol": calls.run(enrol_into(courses), 200,
                                               CpuMeter({"service": [service_pid]}))}
                    finally:
                        calls.close()
            engine.dispose()
            results["rss_mb"] = {"enrolment": peak_rss_mb(service_pid),
                                 "noop": peak_rss_mb(noop_pid)}
        finally:
            if drainer is not None:
                drainer.kill()
                drainer.wait()
            for process in processes:
                process.stop()
            handle.dispose()
    return results


def table(runs: list[dict]) -> str:
    """One table: per measurement the no-op and the enrol figures of each checkout."""
    lines = [f"## Enrol RPC, {machine_line()}", "",
             "Each service in its own process; steady concurrency; random course of 22 seats "
             "and random body per call, idempotency key, signed assertion; CPU from /proc over "
             "the same window (service process, all PostgreSQL processes, RabbitMQ, bench "
             "client). Enrolment events are published to their queues and drained by a "
             "separate process.", ""]
    header = "| measure | " + " | ".join(r["checkout"] for r in runs) + " |"
    lines += [header, "|---" * (len(runs) + 1) + "|"]

    def row(label, fn):
        cells = []
        for run in runs:
            try:
                cells.append(fn(run))
            except KeyError:
                cells.append("")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    labels = list(runs[-1]["rows"])
    for label in labels:
        has_noop = "noop" in runs[-1]["rows"][label]
        if has_noop:
            row(f"{label}: no-op calls/s", lambda r, l=label: f"{r['rows'][l]['noop']['rate']:.0f}")
        row(f"{label}: enrol calls/s", lambda r, l=label: f"{r['rows'][l]['enrol']['rate']:.0f}")
        if has_noop:
            row(f"{label}: enrol / no-op", lambda r, l=label: (
                f"**{r['rows'][l]['enrol']['rate'] / r['rows'][l]['noop']['rate']:.2f}**"))
            row(f"{label}: p50 / p99 ms, no-op", lambda r, l=label: (
                f"{r['rows'][l]['noop']['p50']:.1f} / {r['rows'][l]['noop']['p99']:.1f}"))
        row(f"{label}: p50 / p99 ms, enrol", lambda r, l=label: (
            f"{r['rows'][l]['enrol']['p50']:.1f} / {r['rows'][l]['enrol']['p99']:.1f}"))
        for kind in (("noop", "enrol") if has_noop else ("enrol",)):
            row(f"{label}: CPU ms per call, {kind} (service / PostgreSQL / RabbitMQ / client)",
                lambda r, l=label, k=kind: " / ".join(
                    f"{r['rows'][l][k]['cpu_ms'][g]:.2f}"
                    for g in ("service", "postgresql", "rabbitmq", "bench client")))
    row("peak RSS, enrolment process (MB)", lambda r: f"{r['rss_mb']['enrolment']:.0f}")
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--drain":
        return drain(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--checkout", help="measure this checkout (default: this one)")
    parser.add_argument("--compare", help="also measure this checkout, first")
    parser.add_argument("--order", choices=common.ORDERS, default="ab",
                        help="with --compare: ab, or abba to give both sides a first place")
    parser.add_argument("--json", help="write the figures to this file (no table)")
    parser.add_argument("--profile", help="sample the enrolment process with py-spy into DIR")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.json:
        Path(args.json).write_text(json.dumps(measure_checkout(args)))
        return
    runs = common.each_checkout(__file__, args.compare, ROOT, [
        "--calls", str(args.calls), "--big", str(args.big), "--seed", str(args.seed),
        *(["--profile", args.profile] if args.profile else [])], order=args.order)
    (print if args.no_write else common.append_results)(table(runs))


if __name__ == "__main__":
    main()
