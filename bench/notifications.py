"""The notifications service on its own: the events of N enrolments in, every mail out.

What is measured, and how:

* **One notifications process**, started as an operator starts it
  (``lotsen run --service notifications``), against the RabbitMQ and PostgreSQL on this machine,
  in a vhost and a database of their own, with the file mail transport (the embedded default,
  as in ``bench/national.py``) and the default settings (10 workers, prefetch 10, retry backoff
  from 1 s).
* **The events the real producers send**, published as their relays publish them: to the
  ``enrolment`` and ``funding`` exchanges, persistent, with publisher confirms and the AMQP
  ``user_id`` of the producer's broker user (``guest`` here, as in the embedded configuration),
  so the service's origin check passes as in production. First one ``municipality_registered``
  per body (not measured), then per enrolment ``enrolment_created`` and ``funding_granted``
  (contracts v2). A share of the funding events (``--early``, default 20 %) is published
  *before* its enrolment's ``enrolment_created``, as happens under load in the national case.
  Each enrolment causes four mails (confirmation and funding notice, each to the participant
  and to the municipality's contact).
* **Two ways of arriving**: a *burst* (every event published at once, each enrolment's two
  events one after the other: the service works off a backlog, the most it can do) and a
  *steady* stream (``--rate`` enrolments a second, about what the whole system accepts in the
  national case, each funding event 0.1 s after its enrolment's, the early ones 0.1 s before:
  can mail keep up?).
* **Figures**: time from the first measured publish until every mail file is written (and, for
  the steady stream, its ratio to the time the last event was published: the national target
  is 1.3), CPU milliseconds per enrolment of the notifications process and of all PostgreSQL
  processes (from /proc, over the same window), and how many events went round the retry queue
  (the service's log lines).
* **A no-op baseline**: a nameko service in its own process with the same retrying event
  handler (origin check included) on the same two event types, doing nothing; the same burst.
  What nameko, kombu and eventlet cost per event before any work.

    .venv/bin/python bench/notifications.py [--enrolments 1000] [--bodies 800] [--rate 20]
        [--early 0.2] [--compare /path/to/other/checkout] [--profile DIR] [--no-write]

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
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import date, datetime, timedelta, timezone  # noqa: E402

import yaml  # noqa: E402

import common  # noqa: E402
from common import (  # noqa: E402
    Databases,
    ServiceProcess,
    Vhost,
    cpu_seconds,
    describe,
    machine_line,
    peak_rss_mb,
    python_of,
    wait,
)

BENCH = Path(__file__).resolve().parent
SERVICE_KEY = "bench-service-key-" + "x" * 40
MAILS_PER_ENROLMENT = 4
TICK = 0.1  # s: the steady stream's step, and how long after an enrolment its funding comes


# --- the no-op baseline -------------------------------------------------------------------------

def serve_noop(config_path: str):
    """A service that consumes the same events with the same retrying handler, and does
    nothing (runs as its own process until SIGTERM)."""
    import signal

    from nameko.rpc import rpc
    from nameko.runners import ServiceRunner

    from services.common.messaging import event_handler

    handled = [0]

    class NoopNotifications:
        name = "noop_notifications"

        @event_handler("enrolment", "enrolment_created")
        def on_enrolment_created(self, envelope):
            handled[0] += 1

        @event_handler("funding", "funding_granted")
        def on_funding_granted(self, envelope):
            handled[0] += 1

        @rpc
        def handled(self):
            return handled[0]

    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    runner = ServiceRunner(config)
    runner.add_service(NoopNotifications)
    signal.signal(signal.SIGTERM, lambda *_: eventlet.spawn_n(runner.stop))
    runner.start()
    runner.wait()


# --- the events ---------------------------------------------------------------------------------

def bodies(count: int) -> list[str]:
    """Distinct 8-digit AGS in Baden-Württemberg's range."""
    return [f"08{n:06d}" for n in range(101, 101 + count)]


def course_info(first: date) -> dict:
    return {"title": "Basisseminar Digitallotsen", "location": "Wiesloch",
            "provider_name": "Verwaltungsschule des Gemeindetags", "programme_code": "BW-DL",
            "programme_name": "Kommunale Digitallotsen Baden-Württemberg",
            "modules": [{"number": m, "title": f"Modul {m}: Prozesse erkennen",
                         "date": first + timedelta(days=7 * m)} for m in range(1, 6)]}


def registrations(build_event, ags_list: list[str]) -> list[tuple[str, dict]]:
    return [("enrolment", build_event("enrolment", "municipality_registered", {
        "ags": ags, "name": f"Gemeinde {ags}", "contact_name": f"Hauptamt {ags}",
        "contact_email": f"hauptamt-{ags}@gemeinde.example", "sequence": 1}))
        for ags in ags_list]


def enrolment_events(build_event, ags_list: list[str], count: int, early: float,
                     rng: random.Random) -> list[list[tuple[str, dict]]]:
    """Per enrolment the events in the order they are published: ``enrolment_created`` then
    ``funding_granted``, or (a share ``early``) the funding event first."""
    programme_id = uuid.uuid4()
    courses = [uuid.uuid4() for _ in range(max(1, count // 20))]
    first = date.today() + timedelta(days=60)
    info = course_info(first)
    now = datetime.now(timezone.utc)
    seen: dict[str, int] = {}
    result = []
    for n in range(count):
        ags = ags_list[n % len(ags_list)]
        seen[ags] = seen.get(ags, 0) + 1
        enrolment_id = uuid.uuid4()
        created = ("enrolment", build_event("enrolment", "enrolment_created", {
            "enrolment_id": enrolment_id, "programme_id": programme_id,
            "course_id": rng.choice(courses), "ags": ags, "status": "confirmed",
            "waitlist_position": None, "enrolled_at": now,
            "participant": {"given_name": "Jörg", "family_name": f"Weiß-{n}",
                            "email": f"teilnehmer{n}@gemeinde.example"},
            "course": info, "sequence": 1}))
        granted = ("funding", build_event("funding", "funding_granted", {
            "enrolment_id": enrolment_id, "programme_id": programme_id, "ags": ags,
            "kind": "guaranteed" if seen[ags] == 1 else "pool", "amount_cents": 50_000,
            "sequence": 1}))
        result.append([granted, created] if rng.random() < early else [created, granted])
    return result


class Publisher:
    """Publishes as the producers' relays do (BatchPublisher: confirms, ``user_id``)."""

    def __init__(self, config: dict):
        from nameko.standalone.events import get_event_exchange

        from services.common import config as cfg
        from services.common.messaging import BatchPublisher

        user = cfg.broker_user(config)
        self.publishers = {
            service: BatchPublisher(cfg.amqp_uri(config), get_event_exchange(service, config),
                                    user_id=user)
            for service in ("enrolment", "funding")}

    def publish(self, events: list[tuple[str, dict]]):
        """In the order given: each run of one producer's events as one confirmed batch."""
        runs: list[tuple[str, list]] = []
        for service, envelope in events:
            if not runs or runs[-1][0] != service or len(runs[-1][1]) >= 500:
                runs.append((service, []))
            runs[-1][1].append((envelope, envelope["event_type"], envelope["event_id"]))
        for service, batch in runs:
            confirmed, failure = self.publishers[service].publish(batch)
            if failure is not None or len(confirmed) != len(batch):
                raise RuntimeError(f"publishing failed: {failure}")

    def close(self):
        for publisher in self.publishers.values():
            publisher.close()


# --- one checkout -------------------------------------------------------------------------------

def mail_count(directory: Path) -> int:
    try:
        return sum(1 for entry in os.scandir(directory) if entry.name.endswith(".eml"))
    except FileNotFoundError:
        return 0


def retried(log_path: Path) -> int:
    """Events the service sent round its retry queue (its own log lines say so)."""
    count = 0
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            count += json.loads(line).get("message", "").startswith("retrying ")
        except (ValueError, AttributeError):
            pass
    return count


def backends(engine, database: str) -> list[int]:
    """The PostgreSQL backends serving ``database`` (not the rest of this shared server)."""
    from sqlalchemy import text
    with engine.connect() as conn:
        return [pid for (pid,) in conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
            {"d": database})]


class Meter:
    """CPU of the service process and of the PostgreSQL backends of its database (the server
    and RabbitMQ are shared with other work on this machine, so they are left out)."""

    def __init__(self, pid: int, backends_now=None):
        self.pid, self.backends_now = pid, backends_now or (lambda: [])

    def _read(self, pids) -> float:
        total = 0.0
        for pid in pids:
            try:
                total += cpu_seconds(pid)
            except (OSError, IndexError):
                pass  # a backend that ended
        return total

    def start(self):
        self.backends = set(self.backends_now())
        self.started = {"notifications": self._read([self.pid]),
                        "postgresql": self._read(self.backends)}
        return self

    def stop(self) -> dict[str, float]:
        # A backend that connected meanwhile counts from zero: it began in the window.
        self.backends |= set(self.backends_now())
        return {"notifications": self._read([self.pid]) - self.started["notifications"],
                "postgresql": self._read(self.backends) - self.started["postgresql"]}


def profiler(args, pid: int, name: str):
    if not args.profile:
        return None
    Path(args.profile).mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(python_of(ROOT)).parent / "py-spy")
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
         "--nonblocking", "--output", str(Path(args.profile) / f"{name}{common.run_suffix()}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(sampler):
    if sampler is not None:
        sampler.send_signal(2)  # SIGINT: py-spy writes its file and exits
        sampler.wait(timeout=120)


def measure_real(args, mode: str, rng: random.Random) -> dict:
    """One fresh system (vhost, database, mail directory, service process) for one mode."""
    from sqlalchemy import create_engine, text

    from services.common import topology
    from services.common.events import build_event
    from services.common.migrations import upgrade
    from services.notifications.service import NotificationsService

    workdir = Path(tempfile.mkdtemp(prefix=f"lotsen-notify-{mode}-"))
    mail_dir = workdir / "mail"
    with Vhost("lotsen_bench_notify") as vhost, \
            Databases("lotsen_bench_notify", ["notifications"]) as dbs:
        url = dbs.urls["notifications"]
        config = {"AMQP_URI": vhost.uri, "DATABASES": {"notifications": url},
                  "LOTSEN_HOME": str(workdir), "SERVICE_KEY": SERVICE_KEY,
                  "MAIL": {"transport": "file", "directory": str(mail_dir),
                           "poll_interval_s": 0.2},
                  "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING", "SHUTDOWN_GRACE_S": 5}
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        upgrade("notifications", url)
        topology.declare(vhost.uri, config, classes=[NotificationsService])
        engine = create_engine(url)
        process = ServiceProcess(ROOT, config_path, "notifications", workdir)
        publisher = Publisher(config)
        try:
            ags_list = bodies(args.bodies)
            publisher.publish(registrations(build_event, ags_list))

            def contacts():
                with engine.connect() as conn:
                    return conn.execute(text("SELECT count(*) FROM contacts")).scalar() \
                        == len(ags_list)
            wait(contacts, "every contact registered", 300)
            per_enrolment = enrolment_events(build_event, ags_list, args.enrolments, args.early,
                                             rng)
            expected = MAILS_PER_ENROLMENT * args.enrolments
            meter = Meter(process.pid, lambda: backends(engine, dbs.names["notifications"]))
            sampler = profiler(args, process.pid, f"notifications-{mode}")
            meter.start()
            started = time.perf_counter()
            if mode == "burst":
                publisher.publish([e for pair in per_enrolment for e in pair])
            else:
                # Each enrolment at its moment; its funding event a tick later, as funding
                # reacts to it, or (the early share) a tick before.
                schedule = []
                for n, pair in enumerate(per_enrolment):
                    moment = n / args.rate
                    for service, envelope in pair:
                        if envelope["event_type"] == "enrolment_created":
                            schedule.append((moment, service, envelope))
                        else:
                            early = pair[0][1]["event_type"] == "funding_granted"
                            schedule.append((max(0.0, moment + (-TICK if early else TICK)),
                                             service, envelope))
                schedule.sort(key=lambda item: item[0])
                index = 0
                while index < len(schedule):
                    due = time.perf_counter() - started
                    upto = index
                    while upto < len(schedule) and schedule[upto][0] <= due:
                        upto += 1
                    publisher.publish([(svc, env) for _, svc, env in schedule[index:upto]])
                    index = upto
                    time.sleep(TICK / 2)
            published = time.perf_counter() - started
            wait(lambda: mail_count(mail_dir) >= expected, f"{expected} mails", 1800, 0.05)
            elapsed = time.perf_counter() - started
            cpu = meter.stop()
            stop_profiler(sampler)
            time.sleep(1.0)  # a mail written twice would show now
            written = mail_count(mail_dir)
            if written != expected:
                raise RuntimeError(f"{written} mails written, {expected} expected")
            with engine.connect() as conn:
                notices = conn.execute(text("SELECT count(*) FROM notices")).scalar()
            if notices != expected:
                raise RuntimeError(f"{notices} notices, {expected} expected")
            if args.keep_logs:
                Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                shutil.copy(workdir / "notifications.log",
                            Path(args.keep_logs) / f"notifications-{mode}.log")
            return {"published_s": published, "mailed_s": elapsed,
                    "cpu_ms": {g: s * 1000 / args.enrolments for g, s in cpu.items()},
                    "retried": retried(workdir / "notifications.log"),
                    "rss_mb": peak_rss_mb(process.pid)}
        finally:
            publisher.close()
            process.stop()
            engine.dispose()
            shutil.rmtree(workdir, ignore_errors=True)


def measure_noop(args, rng: random.Random) -> dict:
    from nameko.standalone.rpc import ServiceRpcProxy

    from services.common.events import build_event

    workdir = Path(tempfile.mkdtemp(prefix="lotsen-notify-noop-"))
    with Vhost("lotsen_bench_notify") as vhost:
        config = {"AMQP_URI": vhost.uri, "LOTSEN_HOME": str(workdir), "LOG_LEVEL": "WARNING"}
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        process = ServiceProcess(ROOT, config_path, "noop_notifications", workdir,
                                 module_args=[str(Path(__file__).resolve()), "--checkout",
                                              str(ROOT), "--serve-noop", str(config_path)])
        publisher = Publisher(config)
        try:
            def handled():
                with ServiceRpcProxy("noop_notifications", config, timeout=5) as proxy:
                    return proxy.handled()
            wait(lambda: handled() == 0, "the no-op service", 120)
            per_enrolment = enrolment_events(build_event, bodies(args.bodies), args.enrolments,
                                             args.early, rng)
            expected = 2 * args.enrolments
            meter = Meter(process.pid).start()
            started = time.perf_counter()
            publisher.publish([e for pair in per_enrolment for e in pair])
            wait(lambda: handled() >= expected, f"{expected} events", 600, 0.1)
            elapsed = time.perf_counter() - started
            cpu = meter.stop()
            return {"mailed_s": elapsed,
                    "cpu_ms": {g: s * 1000 / args.enrolments for g, s in cpu.items()}}
        finally:
            publisher.close()
            process.stop()
            shutil.rmtree(workdir, ignore_errors=True)


def measure_checkout(args) -> dict:
    rng = random.Random(args.seed)
    results = {"checkout": describe(ROOT), "rows": {}}
    results["rows"]["burst"] = measure_real(args, "burst", rng)
    results["rows"]["steady"] = measure_real(args, "steady", rng)
    if not args.skip_noop:
        results["rows"]["noop"] = measure_noop(args, rng)
    return results


# --- the table ----------------------------------------------------------------------------------

def table(runs: list[dict], args) -> str:
    lines = [f"## Notifications alone, {machine_line()}", "",
             f"One notifications process (`lotsen run --service notifications`, 10 workers, "
             f"file mail), PostgreSQL; {args.bodies:,} municipalities registered first (not "
             f"measured), then {args.enrolments:,} enrolments' events published as the relays "
             f"publish them (confirms, user_id): enrolment_created and funding_granted each "
             f"(v2), {args.early:.0%} of the funding events before their enrolment_created; "
             f"4 mails per enrolment. Burst: everything published at once. Steady: "
             f"{args.rate:g} enrolments/s, each funding event 0.1 s after its enrolment (the "
             f"early ones 0.1 s before). CPU from /proc over the window from the first "
             f"publish to the last mail file. The no-op service consumes the same burst with "
             f"the same retrying handler and does nothing.", ""]
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

    for mode, title in (("burst", "burst"), ("steady", f"steady {args.rate:g}/s")):
        row(f"{title}: every mail written (s)", lambda r, m=mode: f"{r['rows'][m]['mailed_s']:.1f}")
        if mode == "steady":
            row(f"{title}: last event published (s)",
                lambda r, m=mode: f"{r['rows'][m]['published_s']:.1f}")
            row(f"{title}: last mail / last event published", lambda r, m=mode: (
                f"**{r['rows'][m]['mailed_s'] / r['rows'][m]['published_s']:.2f}**"))
        else:
            row(f"{title}: enrolments mailed per s", lambda r, m=mode: (
                f"{args.enrolments / r['rows'][m]['mailed_s']:.0f}"))
        row(f"{title}: CPU ms per enrolment, notifications",
            lambda r, m=mode: f"**{r['rows'][m]['cpu_ms']['notifications']:.1f}**")
        row(f"{title}: CPU ms per enrolment, PostgreSQL (this database's backends)",
            lambda r, m=mode: f"{r['rows'][m]['cpu_ms']['postgresql']:.1f}")
        row(f"{title}: events sent round the retry queue",
            lambda r, m=mode: f"{r['rows'][m]['retried']}")
    row("no-op, same burst: all events handled (s)",
        lambda r: f"{r['rows']['noop']['mailed_s']:.1f}")
    row("no-op, same burst: CPU ms per enrolment (2 events)",
        lambda r: f"{r['rows']['noop']['cpu_ms']['notifications']:.1f}")
    row("peak RSS, notifications (MB)", lambda r: f"{r['rows']['burst']['rss_mb']:.0f}")
    return "\n".join(lines)


def main():
    if "--serve-noop" in sys.argv:
        return serve_noop(sys.argv[sys.argv.index("--serve-noop") + 1])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enrolments", type=int, default=1000)
    parser.add_argument("--bodies", type=int, default=800)
    parser.add_argument("--rate", type=float, default=20.0,
                        help="enrolments per second in the steady run")
    parser.add_argument("--early", type=float, default=0.2,
                        help="share of funding events published before their enrolment")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--skip-noop", action="store_true")
    parser.add_argument("--checkout", help="measure this checkout (default: this one)")
    parser.add_argument("--compare", help="also measure this checkout, first")
    parser.add_argument("--order", choices=common.ORDERS, default="ab",
                        help="with --compare: ab, or abba to give both sides a first place")
    parser.add_argument("--json", help="write the figures to this file (no table)")
    parser.add_argument("--profile", help="sample the notifications process with py-spy into DIR")
    parser.add_argument("--keep-logs", help="copy the service's logs into DIR")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.json:
        Path(args.json).write_text(json.dumps(measure_checkout(args)))
        return
    runs = common.each_checkout(__file__, args.compare, ROOT, lambda checkout: [
        "--enrolments", str(args.enrolments), "--bodies", str(args.bodies),
        "--rate", str(args.rate), "--early", str(args.early), "--seed", str(args.seed),
        *(["--skip-noop"] if args.skip_noop else []),
        *(["--keep-logs", f"{args.keep_logs}/{Path(checkout).name}"] if args.keep_logs else []),
        *(["--profile", f"{args.profile}/{Path(checkout).name}"] if args.profile else [])],
        order=args.order)
    text = table(runs, args)
    print(text)
    if not args.no_write:
        with open(Path(common.HERE) / "bench" / "results.md", "a", encoding="utf-8") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
