"""Faults in the middle of a burst: a killed funding process, dropped database connections.
Each test ends by checking every funding invariant and that no event was lost or doubled."""
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import eventlet
import pytest
import yaml
from nameko.standalone.events import event_dispatcher
from sqlalchemy import create_engine, func, select, text

from services.common import topology
from services.common.events import build_event
from services.common.messaging import list_parked
from services.funding import domain
from services.funding.models import Funding, InboxRecord, LedgerEntry
from services.funding.service import FundingService
from tests.funding_support import bodies, invariants, policy
from tests.integration.helpers import wait_for
from tests.integration.test_funding import cancelled_event, created_event

REPO = Path(__file__).resolve().parents[2]
FEE = 50_000


@pytest.fixture
def funding_process(service_config, tmp_path):
    config = {k: service_config[k] for k in ("AMQP_URI", "DATABASES", "EVENT_RETRY", "OUTBOX")}
    config.update({"LOTSEN_HOME": str(tmp_path / "home"), "LOG_FORMAT": "json",
                   "SHUTDOWN_GRACE_S": 5})
    path = tmp_path / "funding.yaml"
    path.write_text(yaml.safe_dump(config))
    running = []

    def start():
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "--config", str(path), "run", "--service",
             "funding"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        running.append(process)
        return process
    yield start
    for process in running:
        if process.poll() is None:
            process.kill()
            process.wait()


def handled(funding_db):
    return funding_db.run(lambda s: s.scalar(select(func.count()).select_from(InboxRecord)))


def burst(service_config, funding_db, start, programme_id, eligible, rng):
    budget = (len(eligible) + 30) * FEE
    topology.declare(service_config["AMQP_URI"], {})  # what `lotsen migrate` does
    funding_db.run(domain.set_policy, programme_id, "BW-DL", policy(budget, FEE))
    dispatch = event_dispatcher(service_config)
    dispatch("enrolment", "programme_published", build_event("enrolment", "programme_published", {
        "programme_id": programme_id, "code": "BW-DL", "name": "n", "land": "08",
        "role_name": "r", "revision": 1,
        "eligible_bodies": [{"ags": a, "kind": "gemeinde"} for a in eligible]}))
    enrolments = [(uuid.uuid4(), eligible[n % len(eligible)]) for n in range(150)]
    events = [("enrolment_created", created_event(programme_id, ags, eid, n))
              for n, (eid, ags) in enumerate(enrolments)]
    events += [("enrolment_cancelled", cancelled_event(programme_id, enrolments[i][1],
                                                       enrolments[i][0], i))
               for i in rng.sample(range(150), 30)]
    pool = eventlet.GreenPool(10)
    for event_type, envelope in events:
        pool.spawn_n(dispatch, "enrolment", event_type, envelope)
    pool.waitall()
    return budget, 1 + len(events)


def finish(service_config, funding_db, programme_id, eligible, budget, expected):
    wait_for(lambda: handled(funding_db) == expected, timeout=120,
             message="every event handled exactly once")
    funding_db.run(invariants, programme_id, eligible, 1, budget)
    released = funding_db.run(lambda s: s.scalar(select(func.count()).select_from(Funding)
                                                 .where(Funding.state == "released")))
    assert released == 30
    queues = [s.queue_name for s in topology.subscriptions([FundingService])]
    parked = list_parked(service_config["AMQP_URI"], queues)
    grants = funding_db.run(lambda s: s.execute(
        select(LedgerEntry.enrolment_id, func.count()).where(LedgerEntry.kind == "grant")
        .group_by(LedgerEntry.enrolment_id)).all())
    duplicated = sum(n - 1 for _, n in grants if n > 1)
    lost = expected - handled(funding_db)
    print(f"\nsent {expected}, handled {handled(funding_db)}, parked {len(parked)}, "
          f"lost {lost}, duplicated {duplicated}")
    assert (parked, lost, duplicated) == ([], 0, 0)


def test_funding_killed_mid_burst_then_restarted(service_config, funding_db, funding_process):
    process = funding_process()
    programme_id, eligible = uuid.uuid4(), bodies(40)
    rng = random.Random(7)
    budget, expected = burst(service_config, funding_db, funding_process, programme_id,
                             eligible, rng)
    wait_for(lambda: handled(funding_db) >= 20, timeout=60, message="burst under way")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert handled(funding_db) < expected  # it really died mid-burst
    funding_process()
    finish(service_config, funding_db, programme_id, eligible, budget, expected)


def test_database_connections_dropped_mid_burst(service_config, funding_db, funding_process):
    funding_process()
    programme_id, eligible = uuid.uuid4(), bodies(40)
    rng = random.Random(11)
    budget, expected = burst(service_config, funding_db, funding_process, programme_id,
                             eligible, rng)
    database = service_config["DATABASES"]["funding"].rsplit("/", 1)[1]
    admin = create_engine(service_config["DATABASES"]["funding"].rsplit("/", 1)[0] + "/postgres",
                          isolation_level="AUTOCOMMIT")
    dropped = 0
    try:
        for _ in range(5):
            wait_for(lambda: handled(funding_db) >= 10, timeout=60, message="burst under way")
            with admin.connect() as conn:
                dropped += conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid() "
                    "AND application_name NOT LIKE 'pytest%'"), {"db": database}).scalar()
            eventlet.sleep(0.3)
    finally:
        admin.dispose()
    assert dropped > 0
    finish(service_config, funding_db, programme_id, eligible, budget, expected)
