"""The programme office's coverage report for the whole register, next to a no-op RPC.

What is measured, and how:

* the whole register (11,088 eligible bodies in 16 programmes, one per Land, Gemeinden and
  Kreise eligible) and 13,000 enrolments spread at random over them (80 % holding a seat, 10 %
  completed, 10 % waitlisted), written straight into a fresh PostgreSQL database;
* the enrolment service in its own process (``lotsen run --service enrolment``) and the no-op
  service in another, on a vhost of their own;
* the gateway and the funding service in their own processes too, for the office's pages;
* each figure is the median (and the slowest) of ``--repeat`` calls, one after the other:
  the no-op RPC; the coverage page for the whole register as the office's browser gets it
  (``GET /buero/abdeckung?programm=alle``: session check, coverage RPC, reminders from funding
  for each programme, sorting, rendering the HTML) and the map page;
  the coverage RPC for all programmes (query, aggregation, JSON over RabbitMQ);
  the same report computed in this process without RPC (database and aggregation alone); the
  map of every body as SVG, for the whole country and for Baden-Württemberg; the CSV of bodies
  without a Lotse.

    .venv/bin/python bench/coverage.py [--enrolments 13000] [--repeat 10] [--no-write]
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import checkout_from_argv  # noqa: E402

ROOT = checkout_from_argv()

import requests  # noqa: E402
import yaml  # noqa: E402

import common  # noqa: E402
from common import (  # noqa: E402
    REGISTER,
    Databases,
    ServiceProcess,
    Vhost,
    machine_line,
    python_of,
    wait,
)

BENCH = Path(__file__).resolve().parent
OPERATOR_TOKEN = "bench-operator-token"


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(median ms, slowest ms, last result) of ``repeat`` calls of ``fn``."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return times[len(times) // 2], times[-1], result


def seed(handle, enrolments: int, rng: random.Random) -> dict:
    from sqlalchemy import insert

    from services.enrolment import domain
    from services.enrolment.coverage import LAENDER
    from services.enrolment.models import Enrolment
    from services.enrolment.register import import_register, parse_register

    handle.run(import_register, parse_register(REGISTER))

    def programmes(session):
        provider, _ = domain.create_provider(session, "Bench Akademie")
        courses = {}
        for land, name in LAENDER.items():
            code = f"L{land}-DL"
            programme = domain.create_programme(session, {
                "code": code, "name": f"Digitallotsen {name}", "land": land,
                "role_name": "Digitallotse", "eligible_kinds": ["gemeinde", "kreis"],
                "enrolment_opens_on": date.today() - timedelta(days=200),
                "enrolment_closes_on": date(2099, 1, 1)})
            course = domain.create_course(session, provider, {
                "programme_code": code, "title": "Basisseminar", "location": "Bench",
                "capacity": 22, "open": True,
                "modules": [{"number": 1, "title": "M1",
                             "date": date.today() + timedelta(days=30)}]})
            courses[programme.id] = (course.id, [b.ags for b in
                                                 domain.eligible_bodies(session, programme)])
        return courses
    courses = handle.run(programmes)
    eligible = [(pid, ags) for pid, (_, bodies) in courses.items() for ags in bodies]
    now = datetime.now(timezone.utc)
    rows = []
    for n in range(enrolments):
        programme_id, ags = rng.choice(eligible)
        roll = rng.random()
        status = "completed" if roll < 0.1 else "waitlisted" if roll < 0.2 else "confirmed"
        enrolled = now - timedelta(days=rng.uniform(0, 190))
        rows.append({"id": uuid.uuid4(), "programme_id": programme_id,
                     "course_id": courses[programme_id][0], "ags": ags, "sequence": n + 1,
                     "given_name": "Bench", "family_name": f"P{n}",
                     "email": f"bench{n}@example.org", "status": status, "enrolled_at": enrolled,
                     "confirmed_at": None if status == "waitlisted" else enrolled,
                     "version": 1, "funding_status": "granted"})
    handle.run(lambda s: s.execute(insert(Enrolment), rows))
    return {"eligible": len(eligible), "enrolments": enrolments}


def office_cookie(handle, config) -> str:
    """A signed-in member of the office, as the browser holds it after using a mailed link."""
    from sqlalchemy import select

    from services.common import callers
    from services.enrolment import office
    from services.enrolment.models import OutboxMessage
    from services.gateway import portal_auth

    handle.run(office.add_staff, "bench@buero.example", "Bench")
    handle.run(office.request_sign_in, "bench@buero.example", "http://bench/buero/link/")
    link = handle.run(lambda s: [m.envelope["payload"]["link"] for m in s.scalars(
        select(OutboxMessage)) if m.envelope["event_type"] == "office_sign_in_link_requested"])
    session_id = handle.run(office.sign_in, link[-1].rsplit("/", 1)[1], 8)["session_id"]
    key = portal_auth.portal_key(callers.service_key(config))
    return portal_auth.session_cookie(key, session_id)


def measure(args) -> list[tuple[str, str]]:
    from nameko.standalone.rpc import ServiceRpcProxy

    from services.common.db import open_database
    from services.enrolment import coverage
    from services.enrolment.models import InboxRecord, OutboxMessage
    from services.gateway.charts import coverage_map

    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="lotsen-coverage-"))
    port = common.free_port()
    base = f"http://127.0.0.1:{port}"
    with Vhost("lotsen_bench") as vhost, \
            Databases("lotsen_bench", ["enrolment", "funding"]) as dbs:
        config = {"AMQP_URI": vhost.uri, "max_workers": 10, "DATABASES": dict(dbs.urls),
                  "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}",
                  "GATEWAY": {"rpc_timeout_s": 60}, "PORTAL": {"public_url": base},
                  "LOTSEN_HOME": str(workdir), "SERVICE_KEY": "bench-service-key-" + "k" * 32,
                  "OPERATOR_TOKEN": OPERATOR_TOKEN, "LOG_FORMAT": "json",
                  "LOG_LEVEL": "WARNING", "SHUTDOWN_GRACE_S": 5}
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        subprocess.run([python_of(ROOT), "-m", "services.cli", "--config", str(config_path),
                        "migrate"], cwd=ROOT, check=True, capture_output=True)
        handle = open_database(config, "enrolment", OutboxMessage, InboxRecord)
        sizes = seed(handle, args.enrolments, rng)
        cookie = office_cookie(handle, config)
        processes = [ServiceProcess(ROOT, config_path, service, workdir)
                     for service in ("enrolment", "funding", "gateway")] + [
                     ServiceProcess(ROOT, config_path, "noop", workdir,
                                    module_args=[str(BENCH / "noop.py"), str(config_path),
                                                 "Noop"])]
        try:
            wait(lambda: requests.get(base + "/health/ready", timeout=5).status_code == 200,
                 "the gateway", 120)
            for process in processes:
                time.sleep(0.5)
                if not process.alive():
                    raise RuntimeError(f"{process.service} stopped: see {workdir}")

            def answers(service):
                with ServiceRpcProxy(service, config, timeout=5) as proxy:
                    return proxy.health() if service == "enrolment" else proxy.call("ok")
            wait(lambda: answers("enrolment"), "the enrolment service", 120)
            wait(lambda: answers("noop"), "the no-op service", 120)
            with ServiceRpcProxy("enrolment", config, timeout=60,
                                 context_data={"operator_token": OPERATOR_TOKEN}) as office, \
                    ServiceRpcProxy("noop", config, timeout=60) as noop:
                office.coverage(None)  # warm: statements compiled, pages cached
                rows = [("eligible bodies / enrolments",
                         f"{sizes['eligible']:,} / {sizes['enrolments']:,}")]
                noop_ms = timed(lambda: noop.call("ok"), args.repeat)
                rows.append(("no-op RPC, median / slowest ms",
                             f"{noop_ms[0]:.1f} / {noop_ms[1]:.1f}"))
                browser = requests.Session()
                browser.cookies.set("lotsen_buero", cookie, path="/buero")

                def page(path):
                    answer = browser.get(base + path, timeout=60, allow_redirects=False)
                    assert answer.status_code == 200, (answer.status_code, answer.text[:300])
                    return answer.content
                page("/buero/abdeckung?programm=alle")  # warm
                shown = timed(lambda: page("/buero/abdeckung?programm=alle"), args.repeat)
                rows.append(("coverage page, whole register, median / slowest ms",
                             f"{shown[0]:.0f} / {shown[1]:.0f} ({len(shown[2]) / 1e3:.0f} kB)"))
                shown = timed(lambda: page("/buero/karte?programm=alle"), args.repeat)
                rows.append(("map page, whole register, median / slowest ms",
                             f"{shown[0]:.0f} / {shown[1]:.0f} ({len(shown[2]) / 1e6:.1f} MB)"))
                rpc_ms = timed(lambda: office.coverage(None), args.repeat)
                report = rpc_ms[2]
                rows.append(("coverage RPC, all programmes, median / slowest ms",
                             f"{rpc_ms[0]:.0f} / {rpc_ms[1]:.0f}"))
                local_ms = timed(lambda: handle.run(coverage.coverage, None, commit=False),
                                 args.repeat)
                rows.append(("the same report without RPC (query and aggregation), ms",
                             f"{local_ms[0]:.0f} / {local_ms[1]:.0f}"))
                national = timed(lambda: coverage_map(report["bodies"], "Deutschland"),
                                 args.repeat)
                rows.append(("map SVG, all 16 Länder, median / slowest ms",
                             f"{national[0]:.0f} / {national[1]:.0f} "
                             f"({len(national[2]) / 1e6:.1f} MB)"))
                bw = [b for b in report["bodies"] if b["land"] == "08"]
                bw_map = timed(lambda: coverage_map(bw, "Baden-Württemberg"), args.repeat)
                rows.append(("map SVG, Baden-Württemberg, median / slowest ms",
                             f"{bw_map[0]:.0f} / {bw_map[1]:.0f} "
                             f"({len(bw_map[2]) / 1e6:.2f} MB)"))
                missing = timed(lambda: coverage.without_lotse_csv(report), args.repeat)
                rows.append(("CSV of bodies without a Lotse, ms",
                             f"{missing[0]:.0f} / {missing[1]:.0f}"))
                totals = report["totals"]
                rows.append(("covered / waitlisted only / none",
                             f"{totals['covered']:,} / {totals['waitlisted']:,} / "
                             f"{totals['none']:,}"))
        finally:
            for process in processes:
                process.stop()
            handle.dispose()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enrolments", type=int, default=13_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--checkout", help="measure this checkout (default: this one)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    rows = measure(args)
    text = "\n".join([f"## Coverage report, {machine_line()}", "",
                      "The whole register, one programme per Land; see bench/coverage.py.", "",
                      "| measure | value |", "|---|---|",
                      *[f"| {name} | {value} |" for name, value in rows]])
    (print if args.no_write else common.append_results)(text)


if __name__ == "__main__":
    main()
