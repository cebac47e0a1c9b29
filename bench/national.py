"""The national case: every eligible body of every Land, one programme per Land, one enrolment
per body plus 20 % second enrolments, sent through the gateway, every service in its own process.

Measured per mode, each time on a fresh system (own vhost, own databases): through the batch
endpoint (one request per body with its one or two rows) and through single calls. For each:
the time until every enrolment is accepted, every funding decision is made (the funding
service's rows and the enrolment service's copy of the decision) and every e-mail is delivered
(file transport, the embedded default), and the CPU each service process, PostgreSQL and
RabbitMQ used per enrolment. Counted from each service's outbox and inbox afterwards (exact,
whatever the machine's speed): how many relay batches and event-handling transactions the
enrolments took. Next to it, in the same run, the no-op event chain of the same length (RPC,
then two event hops), its three services each in a process of its own.

    .venv/bin/python bench/national.py [--lands 08,09] [--share 1.0] [--concurrency 20]
        [--compare /path/to/other/checkout [--order abba]] [--profile DIR]

``--compare DIR`` measures that checkout first (e.g. a ``git worktree`` of an older commit with
its own ``make install``), then this one, and prints both side by side. With ``--profile DIR``
each service process is sampled by py-spy while the enrolments go through.
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
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import date, timedelta  # noqa: E402

import requests  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

import common  # noqa: E402
from common import (  # noqa: E402
    REGISTER,
    CpuMeter,
    Databases,
    ServiceProcess,
    Vhost,
    describe,
    free_port,
    machine_line,
    peak_rss_mb,
    python_of,
)

BENCH = Path(__file__).resolve().parent
SERVICES = ["enrolment", "funding", "certificates", "notifications", "gateway"]
LANDS = [f"{n:02d}" for n in range(1, 17)]
FEE = 50_000
SEATS = 22
MAILS_PER_ENROLMENT = 4  # confirmation and funding notice, each to participant and contact
SERVICE_KEY = "bench-service-key-" + "n" * 40


def wait(predicate, what: str, timeout_s: float = 3600, interval_s: float = 0.25) -> float:
    deadline = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f}s for {what}")
        eventlet.sleep(interval_s)
    return time.perf_counter()


class System:
    """A fresh system: vhost, one database per service, the five service processes."""

    def __init__(self, workdir: Path, vhost: Vhost, databases: Databases):
        self.home = workdir / vhost.name
        self.home.mkdir(parents=True)
        self.address = f"127.0.0.1:{free_port()}"
        self.base = f"http://{self.address}"
        self.config = {
            "AMQP_URI": vhost.uri, "DATABASES": databases.urls,
            "LOTSEN_HOME": str(self.home), "WEB_SERVER_ADDRESS": self.address,
            "SERVICE_KEY": SERVICE_KEY,
            "OUTBOX": {"poll_interval_s": 0.2, "batch_size": 200},
            "MAIL": {"transport": "file", "poll_interval_s": 0.2},
            "GATEWAY": {"rpc_timeout_s": 60},
            "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING", "SHUTDOWN_GRACE_S": 5,
        }
        self.path = self.home / "config.yaml"
        self.path.write_text(yaml.safe_dump(self.config))
        self.processes: dict[str, ServiceProcess] = {}
        self.engines = {s: create_engine(url) for s, url in databases.urls.items()}

    def lotsen(self, *args) -> str:
        result = subprocess.run([python_of(ROOT), "-m", "services.cli", "--config",
                                 str(self.path), *args], cwd=ROOT, capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise RuntimeError(f"lotsen {' '.join(args)}: {result.stdout} {result.stderr}")
        return result.stdout

    def handle(self, service: str, models):
        from services.common.db import open_database
        return open_database(self.config, service, models.OutboxMessage, models.InboxRecord)

    def start(self):
        for service in SERVICES:
            self.processes[service] = ServiceProcess(ROOT, self.path, service, self.home)
        common.wait(lambda: requests.get(self.base + "/health/ready", timeout=5)
                    .status_code == 200, "gateway ready", 180)

    def stop(self):
        for process in self.processes.values():
            process.stop()
        for engine in self.engines.values():
            engine.dispose()

    def count(self, service: str, sql: str) -> int:
        with self.engines[service].connect() as conn:
            return conn.execute(text(sql)).scalar()

    def pids(self) -> dict[str, list[int]]:
        return {service: [process.pid] for service, process in self.processes.items()}


def set_up(system: System, lands: list[str], share: float, rng: random.Random):
    """Programmes, a provider, courses of 22 seats and a key per body; returns the requests."""
    from services.enrolment import domain as enrolment_domain
    from services.enrolment import models as enrolment_models

    system.lotsen("import-register", str(REGISTER))
    enrolment = system.handle("enrolment", enrolment_models)
    try:
        def eligible_per_land(session):
            per_land = {}
            for land in lands:
                probe = enrolment_models.Programme(land=land, eligible_kinds=["gemeinde", "kreis"])
                per_land[land] = [b.ags for b in enrolment_domain.eligible_bodies(session, probe)]
            return per_land
        eligible = enrolment.run(eligible_per_land)
        # The sample: every body (or a share of them), 20 % of them with a second participant.
        plan = {}
        for land, bodies in eligible.items():
            chosen = bodies if share >= 1 else sorted(rng.sample(bodies, max(1, int(len(bodies)
                                                                                   * share))))
            seconds = set(rng.sample(chosen, round(len(chosen) * 0.2)))
            plan[land] = [(ags, 2 if ags in seconds else 1) for ags in chosen]
        for land, bodies in eligible.items():
            budget = math.ceil(len(bodies) * 1.3) * FEE
            programme = {"code": f"DL-{land}", "name": f"Digitallotsen {land}", "land": land,
                         "role_name": "Digitallotse", "eligible_kinds": ["gemeinde", "kreis"],
                         "enrolment_opens_on": "2026-01-01", "enrolment_closes_on": "2099-12-31",
                         "funding": {"budget_cents": budget, "fee_cents": FEE,
                                     "guaranteed_per_body": 1, "reserve_until": "2099-06-30"}}
            path = system.home / f"programme-{land}.yaml"
            path.write_text(yaml.safe_dump(programme))
            system.lotsen("programme", "create", str(path))

        first = date.today() + timedelta(days=60)

        def courses_and_keys(session):
            provider, _ = enrolment_domain.create_provider(session, "Bench Akademie")
            requests_, keys = [], {}
            for land, rows in plan.items():
                wanted = sum(n for _, n in rows)
                courses = [enrolment_domain.create_course(session, provider, {
                    "programme_code": f"DL-{land}", "title": f"Basisseminar {land}-{i}",
                    "location": "Bench", "capacity": SEATS, "open": True,
                    "modules": [{"number": m, "title": f"Modul {m}",
                                 "date": first + timedelta(days=m)} for m in range(1, 6)]}).id
                    for i in range(math.ceil(wanted / (SEATS - 2)))]
                seat = 0
                for ags, n in rows:
                    _, keys[ags] = enrolment_domain.register_municipality(
                        session, ags, f"Hauptamt {ags}", f"hauptamt{ags}@bench.example")
                    for k in range(n):
                        requests_.append((ags, {"course_id": str(courses[seat // (SEATS - 2)]),
                                                "participant": {
                                                    "given_name": "Bench",
                                                    "family_name": f"T{ags}{k}",
                                                    "email": f"t{ags}-{k}@bench.example"}}))
                        seat += 1
            return requests_, keys
        requests_, keys = enrolment.run(courses_and_keys)
        # Municipalities do not queue up course by course: requests arrive in random order
        # (each body's own rows stay in order, so its first is still its first).
        order = list(keys)
        rng.shuffle(order)
        rank = {ags: n for n, ags in enumerate(order)}
        requests_.sort(key=lambda r: rank[r[0]])
        return requests_, keys
    finally:
        enrolment.dispose()


def send(system: System, enrolments, keys, mode: str, concurrency: int) -> dict:
    """Every enrolment through the gateway, ``concurrency`` requests in flight."""
    by_body: dict[str, list] = {}
    for ags, row in enrolments:
        by_body.setdefault(ags, []).append(row)
    http = requests.Session()
    http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency))
    failures = []

    def post(path, ags, payload, key):
        response = http.post(system.base + path, json=payload, timeout=120, headers={
            "Authorization": f"Bearer {keys[ags]}", "Idempotency-Key": key})
        if response.status_code != 201:
            failures.append((response.status_code, response.text[:300]))

    pool = eventlet.GreenPool(concurrency)
    if mode == "batch":
        for ags, rows in by_body.items():
            pool.spawn_n(post, "/api/v1/enrolments:batch", ags, {"rows": rows}, ags)
    else:
        for n, (ags, row) in enumerate(enrolments):
            pool.spawn_n(post, "/api/v1/enrolments", ags, row, f"{ags}-{n}")
    pool.waitall()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[:3]}")
    return {"requests": len(by_body) if mode == "batch" else len(enrolments)}


def profile(system: System, directory: str | None, mode: str) -> list[subprocess.Popen]:
    if not directory:
        return []
    Path(directory).mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(python_of(ROOT)).parent / "py-spy")
    return [subprocess.Popen(
        [py_spy, "record", "--pid", str(process.pid), "--rate", "100", "--format", "raw",
         "--nonblocking", "--output", str(Path(directory) / f"{mode}-{service}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for service, process in system.processes.items()]


def national_case(workdir: Path, mode: str, lands, share, concurrency, seed,
                  profile_dir: str | None = None) -> dict:
    rng = random.Random(seed)
    with Vhost("lotsen_national") as vhost, \
            Databases("lotsen_national", SERVICES[:-1]) as databases:
        system = System(workdir, vhost, databases)
        try:
            system.lotsen("migrate")
            enrolments, keys = set_up(system, lands, share, rng)
            system.start()
            # Everything the set-up caused (programmes, contacts) has reached every service.
            wait(lambda: system.count("notifications", "SELECT count(*) FROM contacts")
                 == len(keys), "contacts known", 900)
            wait(lambda: system.count("funding", "SELECT count(*) FROM eligible_bodies")
                 >= len(keys), "funding knows every body", 900)
            total = len(enrolments)
            samplers = profile(system, profile_dir, mode)
            marks = message_marks(system)
            meter = CpuMeter(system.pids()).start()
            started = time.perf_counter()
            sent = send(system, enrolments, keys, mode, concurrency)
            accepted = time.perf_counter()
            funded = wait(lambda: system.count("funding", "SELECT count(*) FROM fundings")
                          >= total, "every funding decision")
            seen = wait(lambda: system.count(
                "enrolment", "SELECT count(*) FROM enrolments WHERE funding_status <> 'pending'")
                >= total, "every decision back at enrolment")
            mailed = wait(lambda: system.count(
                "notifications", "SELECT count(*) FROM notices WHERE status = 'sent'")
                >= total * MAILS_PER_ENROLMENT, "every mail delivered")
            cpu = meter.stop()
            grouping = message_grouping(system, marks)
            for sampler in samplers:
                sampler.send_signal(signal.SIGINT)  # py-spy writes its file and exits
                sampler.wait(timeout=60)
            files = sum(1 for _ in (system.home / "mail").rglob("*.eml"))
            granted = system.count("funding", "SELECT count(*) FROM fundings "
                                              "WHERE state IN ('guaranteed', 'pool')")
            parked = vhost.messages_in(lambda q: q.endswith(".parked"))
            return {"mode": mode, "bodies": len(keys), "enrolments": total, **sent,
                    "accepted_s": accepted - started, "funded_s": funded - started,
                    "seen_s": seen - started, "mailed_s": mailed - started,
                    "mails": files, "granted": granted, "parked_queues": parked,
                    "rss": {s: peak_rss_mb(p.pid) for s, p in system.processes.items()},
                    "grouping": grouping,
                    "cpu_ms": {group: seconds * 1000 / total for group, seconds in cpu.items()}}
        finally:
            system.stop()


def message_marks(system: System) -> dict:
    """Where each service's outbox ends and its database's clock stands before the first
    request: what comes after is the run's."""
    return {service: (system.count(service, "SELECT coalesce(max(position), 0) FROM outbox"),
                      system.count(service, "SELECT now()"))
            for service in SERVICES[:-1]}


def message_grouping(system: System, marks: dict) -> dict:
    """Per service, counted from its tables after the run (exact, whatever the machine's
    speed): events its relay published and in how many batches (a batch marks its rows with
    one moment), and events it handled and in how many transactions (the inbox rows written by
    one transaction share its xmin)."""
    grouping = {}
    for service, (position, moment) in marks.items():
        with system.engines[service].connect() as conn:
            published, batches = conn.execute(text(
                "SELECT count(published_at), count(DISTINCT published_at) FROM outbox "
                "WHERE position > :p"), {"p": position}).one()
            handled, transactions = conn.execute(text(
                "SELECT count(*), count(DISTINCT xmin::text) FROM inbox "
                "WHERE handled_at >= :t"), {"t": moment}).one()
        grouping[service] = {"published": published, "batches": batches,
                             "handled": handled, "transactions": transactions}
    return grouping


def noop_chain_rate(workdir: Path, chains: int) -> float:
    """The no-op chain, its three services each in a process of their own."""
    from noop import chain_rate

    with Vhost("lotsen_noop") as vhost:
        config = {"AMQP_URI": vhost.uri, "max_workers": 10}
        path = workdir / f"{vhost.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        processes = [ServiceProcess(ROOT, path, name, workdir,
                                    module_args=[str(BENCH / "noop.py"), str(path), name])
                     for name in ("Noop", "NoopHop", "NoopEnd")]
        try:
            from nameko.standalone.rpc import ClusterRpcProxy

            def ready():
                with ClusterRpcProxy(config, timeout=5) as cluster:
                    return cluster.noop.call(1) == 1 and cluster.noop_end.tally() is not None
            common.wait(ready, "the no-op services", 120)
            # An event sent before its consumer's queue exists is dropped (not mandatory).
            common.wait(lambda: {"evt-noop-hop1--noop_hop.hop1",
                                 "evt-noop_hop-hop2--noop_end.hop2"} <= set(vhost.queues()),
                        "the no-op event queues", 60)
            chain_rate(config, 50)  # warm-up
            return chain_rate(config, chains)
        finally:
            for process in processes:
                process.stop()


def measure_checkout(args) -> dict:
    lands = args.lands.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="lotsen-national-"))
    try:
        runs = [national_case(workdir, mode, lands, args.share, args.concurrency, args.seed,
                              args.profile and f"{args.profile}/{common.run_name(ROOT)}")
                for mode in args.modes.split(",")]
        chains = noop_chain_rate(workdir, 2000)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"checkout": describe(ROOT), "runs": runs, "chains": chains}


def table(results: list[dict], args) -> str:
    lands = args.lands.split(",")
    scope = "all 16 Länder" if set(lands) == set(LANDS) else f"Länder {', '.join(lands)}"
    columns = [(result, run) for result in results for run in result["runs"]]
    lines = [f"### National case, {machine_line()}", "",
             f"{scope}, {args.share:.0%} of eligible bodies, HTTP concurrency "
             f"{args.concurrency}; every service in its own process, PostgreSQL, file mail; "
             "CPU from /proc over the whole run (first request to last mail). The no-op "
             "chain (RPC, then two event hops, each no-op service in its own process) ran "
             "in the same run on the same broker.", "",
             "| measure | " + " | ".join(f"{r['checkout']}, {run['mode']}"
                                       for r, run in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]

    def row(label, fmt):
        lines.append(f"| {label} | " + " | ".join(fmt(r, run) for r, run in columns) + " |")

    row("bodies / enrolments / HTTP requests",
        lambda r, x: f"{x['bodies']:,} / {x['enrolments']:,} / {x['requests']:,}")
    row("all accepted (s)", lambda r, x: f"{x['accepted_s']:.1f}")
    row("every funding decision made (s)", lambda r, x: f"{x['funded_s']:.1f}")
    row("every decision back at enrolment (s)", lambda r, x: f"{x['seen_s']:.1f}")
    row("every mail delivered (s)", lambda r, x: f"{x['mailed_s']:.1f}")
    row("last mail / last accepted", lambda r, x: f"**{x['mailed_s'] / x['accepted_s']:.2f}**")
    row("mails written / funded seats", lambda r, x: f"{x['mails']:,} / {x['granted']:,}")
    row("messages parked", lambda r, x: f"{x['parked_queues']:,}")
    row("enrolments decided per s", lambda r, x: f"{x['enrolments'] / x['funded_s']:.0f}")
    row("no-op chains per s (same run)", lambda r, x: f"{r['chains']:.0f}")
    row("decided per s / no-op chains per s",
        lambda r, x: f"**{x['enrolments'] / x['funded_s'] / r['chains']:.2f}**")
    row("CPU ms per enrolment, all services",
        lambda r, x: f"**{sum(x['cpu_ms'][s] for s in SERVICES):.1f}**")
    for group in SERVICES + ["postgresql", "rabbitmq"]:
        row(f"CPU ms per enrolment, {group}", lambda r, x, g=group: f"{x['cpu_ms'][g]:.1f}")

    def per_enrolment(x, count, of):
        total = sum(g[count] for g in x["grouping"].values())
        each = sum(g[of] for g in x["grouping"].values())
        return f"{total / x['enrolments']:.2f} ({each / max(total, 1):.1f})"

    row("relay batches per enrolment, all services (events per batch)",
        lambda r, x: per_enrolment(x, "batches", "published"))
    row("event-handling transactions per enrolment (events per transaction)",
        lambda r, x: per_enrolment(x, "transactions", "handled"))
    for service in SERVICES:
        row(f"peak RSS {service} (MB)", lambda r, x, s=service: f"{x['rss'][s]:.0f}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lands", default=",".join(LANDS),
                        help="comma-separated Land codes (default: all 16)")
    parser.add_argument("--share", type=float, default=1.0,
                        help="share of each Land's eligible bodies that enrol (default: all)")
    parser.add_argument("--concurrency", type=int, default=20, help="HTTP requests in flight")
    parser.add_argument("--modes", default="batch,single")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--checkout", help="measure this checkout (default: this one)")
    parser.add_argument("--compare", help="also measure this checkout, first")
    parser.add_argument("--order", choices=common.ORDERS, default="ab",
                        help="with --compare: ab, or abba to give both sides a first place")
    parser.add_argument("--json", help="write the figures to this file (no table)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--profile", help="sample every service with py-spy into DIR")
    args = parser.parse_args()
    if args.json:
        Path(args.json).write_text(json.dumps(measure_checkout(args)))
        return
    results = common.each_checkout(__file__, args.compare, ROOT, [
        "--lands", args.lands, "--share", str(args.share), "--concurrency",
        str(args.concurrency), "--modes", args.modes, "--seed", str(args.seed),
        *(["--profile", args.profile] if args.profile else [])], order=args.order)
    (print if args.no_write else common.append_results)(table(results, args))


if __name__ == "__main__":
    main()
