"""The national case: every eligible body of every Land, one programme per Land, one enrolment
per body plus 20 % second enrolments, sent through the gateway, every service in its own process.

Measured twice, each time on a fresh system (own vhost, own databases): once through the batch
endpoint (one request per body with its one or two rows) and once through single calls. For each:
the time until every enrolment is accepted, every funding decision is made (the funding
service's rows and the enrolment service's copy of the decision) and every e-mail is delivered
(file transport, the embedded default). Next to it the no-op event chain of the same length.

    .venv/bin/python bench/national.py [--lands 08,09] [--share 1.0] [--concurrency 20]

With ``--profile DIR`` each service process is sampled by py-spy (``pip install py-spy``) while
the enrolments go through; DIR then holds one collapsed-stack file per service and mode.
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import eventlet
eventlet.monkey_patch()

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import date, datetime, timedelta, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import requests  # noqa: E402
import yaml  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from nameko.containers import ServiceContainer  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from noop import SERVICES as NOOP_SERVICES, chain_rate  # noqa: E402
from services import cli  # noqa: E402
from services.common.db import open_database  # noqa: E402
from services.enrolment import domain as enrolment_domain  # noqa: E402
from services.enrolment import models as enrolment_models  # noqa: E402
from services.funding import models as funding_models  # noqa: E402
from services.notifications import models as notification_models  # noqa: E402

REGISTER = ROOT.parent / "shared" / "data" / "destatis-gv-auszug.csv"
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
API = "http://guest:guest@127.0.0.1:15672/api"
SERVICES = ["enrolment", "funding", "certificates", "notifications", "gateway"]
LANDS = [f"{n:02d}" for n in range(1, 17)]
FEE = 50_000
SEATS = 22
MAILS_PER_ENROLMENT = 4  # confirmation and funding notice, each to participant and contact


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class System:
    """A fresh system: vhost, one database per service, the five service processes."""

    def __init__(self, workdir: Path):
        run = uuid.uuid4().hex[:8]
        self.vhost = f"lotsen_national_{run}"
        self.databases = {s: f"lotsen_national_{run}_{s}" for s in SERVICES[:-1]}
        self.home = workdir / run
        self.home.mkdir(parents=True)
        self.address = f"127.0.0.1:{free_port()}"
        self.base = f"http://{self.address}"
        self.config = {
            "AMQP_URI": f"pyamqp://guest:guest@127.0.0.1:5672/{self.vhost}",
            "DATABASES": {s: f"{PG}/{db}" for s, db in self.databases.items()},
            "LOTSEN_HOME": str(self.home), "WEB_SERVER_ADDRESS": self.address,
            "OUTBOX": {"poll_interval_s": 0.2, "batch_size": 200},
            "MAIL": {"transport": "file", "poll_interval_s": 0.2},
            "GATEWAY": {"rpc_timeout_s": 60},
            "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING", "SHUTDOWN_GRACE_S": 5,
        }
        self.path = self.home / "config.yaml"
        self.path.write_text(yaml.safe_dump(self.config))
        self.processes: dict[str, subprocess.Popen] = {}
        self.admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
        self.engines = {}

    def __enter__(self):
        requests.put(f"{API}/vhosts/{self.vhost}", timeout=10).raise_for_status()
        requests.put(f"{API}/permissions/{self.vhost}/guest", timeout=10,
                     json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        with self.admin.connect() as conn:
            for database in self.databases.values():
                conn.execute(text(f'CREATE DATABASE "{database}"'))
        self.engines = {s: create_engine(url) for s, url in self.config["DATABASES"].items()}
        self.lotsen("migrate")
        return self

    def __exit__(self, *exc):
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for engine in self.engines.values():
            engine.dispose()
        with self.admin.connect() as conn:
            for database in self.databases.values():
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :d AND pid <> pg_backend_pid()"),
                             {"d": database})
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}"'))
        self.admin.dispose()
        requests.delete(f"{API}/vhosts/{self.vhost}", timeout=10)
        shutil.rmtree(self.home, ignore_errors=True)

    def lotsen(self, *args) -> str:
        result = CliRunner().invoke(cli.main, ["--config", str(self.path), *args])
        if result.exit_code != 0:
            raise RuntimeError(f"lotsen {' '.join(args)}: {result.output} {result.exception}")
        return result.output

    def handle(self, service: str, models):
        return open_database(self.config, service, models.OutboxMessage, models.InboxRecord)

    def start(self):
        for service in SERVICES:
            log = open(self.home / f"{service}.log", "w")
            self.processes[service] = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "--config", str(self.path), "run",
                 "--service", service], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait(lambda: _ok(self.base + "/health/ready"), "gateway ready", 120)

    def count(self, service: str, query) -> int:
        with self.engines[service].connect() as conn:
            return conn.execute(query).scalar()

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds (user + system) each service process has used since it started."""
        tick = os.sysconf("SC_CLK_TCK")
        used = {}
        for service, process in self.processes.items():
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[service] = (int(fields[11]) + int(fields[12])) / tick
        return used

    def peak_rss_mb(self) -> dict[str, float]:
        """VmHWM of each service process: its peak resident set since it started."""
        peaks = {}
        for service, process in self.processes.items():
            status = Path(f"/proc/{process.pid}/status").read_text()
            kb = next(int(line.split()[1]) for line in status.splitlines()
                      if line.startswith("VmHWM:"))
            peaks[service] = kb / 1024
        return peaks


def _ok(url) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def wait(predicate, what: str, timeout_s: float = 1800, interval_s: float = 0.25) -> float:
    deadline = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f}s for {what}")
        eventlet.sleep(interval_s)
    return time.perf_counter()


def set_up(system: System, lands: list[str], share: float, rng: random.Random):
    """Programmes, a provider, courses of 22 seats and a key per body; returns the requests."""
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
    """Every enrolment through the gateway; returns the time of the last answer."""
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


def profile(system: System, directory: Path | None, mode: str) -> list[subprocess.Popen]:
    if directory is None:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return [subprocess.Popen(
        [py_spy, "record", "--pid", str(process.pid), "--rate", "100", "--format", "raw",
         "--output", str(directory / f"{mode}-{service}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for service, process in system.processes.items()]


def national_case(workdir: Path, mode: str, lands, share, concurrency, seed,
                  profile_dir: Path | None = None) -> dict:
    rng = random.Random(seed)
    with System(workdir) as system:
        enrolments, keys = set_up(system, lands, share, rng)
        system.start()
        # Everything the set-up caused (programmes, contacts) has reached every service.
        wait(lambda: system.count("notifications", select(func.count()).select_from(
            notification_models.Contact)) == len(keys), "contacts known", 600)
        wait(lambda: system.count("funding", select(func.count()).select_from(
            funding_models.EligibleBody)) >= len(keys), "funding knows every body", 600)
        total = len(enrolments)
        samplers = profile(system, profile_dir, mode)
        cpu_before = system.cpu_s()
        started = time.perf_counter()
        sent = send(system, enrolments, keys, mode, concurrency)
        accepted = time.perf_counter()
        funded = wait(lambda: system.count("funding", select(func.count()).select_from(
            funding_models.Funding)) >= total, "every funding decision")
        seen = wait(lambda: system.count("enrolment", select(func.count()).select_from(
            enrolment_models.Enrolment).where(
            enrolment_models.Enrolment.funding_status != "pending")) >= total,
            "every decision back at enrolment")
        mailed = wait(lambda: system.count("notifications", select(func.count()).select_from(
            notification_models.Notice).where(notification_models.Notice.status == "sent"))
            >= total * MAILS_PER_ENROLMENT, "every mail delivered")
        for sampler in samplers:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            sampler.wait(timeout=60)
        files = sum(1 for _ in (system.home / "mail").rglob("*.eml"))
        granted = system.count("funding", select(func.count()).select_from(
            funding_models.Funding).where(funding_models.Funding.state.in_(
                ("guaranteed", "pool"))))
        return {"mode": mode, "bodies": len(keys), "enrolments": total, **sent,
                "accepted_s": accepted - started, "funded_s": funded - started,
                "seen_s": seen - started, "mailed_s": mailed - started,
                "mails": files, "granted": granted, "rss": system.peak_rss_mb(),
                "cpu_ms": {s: (used - cpu_before[s]) * 1000 / total
                           for s, used in system.cpu_s().items()}}


def noop_chain_rate(chains: int) -> float:
    run = uuid.uuid4().hex[:8]
    vhost = f"lotsen_noop_{run}"
    requests.put(f"{API}/vhosts/{vhost}", timeout=10).raise_for_status()
    requests.put(f"{API}/permissions/{vhost}/guest", timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    config = {"AMQP_URI": f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}", "max_workers": 10}
    containers = [ServiceContainer(cls, config) for cls in NOOP_SERVICES]
    try:
        for container in containers:
            container.start()
        with ClusterRpcProxy(config) as cluster:
            return chain_rate(cluster, chains)
    finally:
        for container in containers:
            container.stop()
        requests.delete(f"{API}/vhosts/{vhost}", timeout=10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lands", default=",".join(LANDS),
                        help="comma-separated Land codes (default: all 16)")
    parser.add_argument("--share", type=float, default=1.0,
                        help="share of each Land's eligible bodies that enrol (default: all)")
    parser.add_argument("--concurrency", type=int, default=20, help="HTTP requests in flight")
    parser.add_argument("--modes", default="batch,single")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--profile", type=Path, help="sample every service with py-spy into DIR")
    args = parser.parse_args()
    lands = args.lands.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="lotsen-national-"))
    try:
        results = [national_case(workdir, mode, lands, args.share, args.concurrency, args.seed,
                                 args.profile)
                   for mode in args.modes.split(",")]
        chains = noop_chain_rate(2000)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    scope = "all 16 Länder" if set(lands) == set(LANDS) else f"Länder {', '.join(lands)}"
    lines = [f"### National case, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"{platform.node()}, {platform.machine()}, Python {platform.python_version()}",
             "", f"{scope}, {args.share:.0%} of eligible bodies, HTTP concurrency "
             f"{args.concurrency}; every service in its own process, PostgreSQL, file mail.",
             "", "| measure | " + " | ".join(r["mode"] for r in results) + " |",
             "| --- |" + " --- |" * len(results)]

    def row(label, fmt):
        lines.append(f"| {label} | " + " | ".join(fmt(r) for r in results) + " |")
    row("bodies / enrolments / HTTP requests",
        lambda r: f"{r['bodies']:,} / {r['enrolments']:,} / {r['requests']:,}")
    row("all accepted (s)", lambda r: f"{r['accepted_s']:.1f}")
    row("every funding decision made (s)", lambda r: f"{r['funded_s']:.1f}")
    row("every decision back at enrolment (s)", lambda r: f"{r['seen_s']:.1f}")
    row("every mail delivered (s)", lambda r: f"{r['mailed_s']:.1f}")
    row("mails delivered / funded seats", lambda r: f"{r['mails']:,} / {r['granted']:,}")
    row("enrolments decided per s", lambda r: f"{r['enrolments'] / r['funded_s']:.0f}")
    row("ratio to the no-op chain", lambda r: f"{r['enrolments'] / r['funded_s'] / chains:.2f}")
    for service in SERVICES:
        row(f"CPU ms per enrolment, {service}", lambda r, s=service: f"{r['cpu_ms'][s]:.1f}")
    for service in SERVICES:
        row(f"peak RSS {service} (MB)", lambda r, s=service: f"{r['rss'][s]:.0f}")
    lines.append(f"\nNo-op event chain (RPC + 2 event hops), same broker: {chains:.0f} chains/s.")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        with open(ROOT / "bench" / "results.md", "a", encoding="utf-8") as out:
            out.write(table + "\n\n")


if __name__ == "__main__":
    main()
