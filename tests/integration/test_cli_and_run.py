"""The operator CLI on the embedded default, and `lotsen run` as a real process."""
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner
from nameko.standalone.rpc import ServiceRpcProxy

from services.cli import main
from services.common.clock import calendar_today
from services.common.errors import AuthenticationFailed
from tests.integration.helpers import SignedRpc

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli_env(tmp_path, rabbit_config):
    """A config file like local.yaml, pointing at this test's vhost and a fresh run directory."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {"AMQP_URI": rabbit_config["AMQP_URI"], "LOTSEN_HOME": str(tmp_path / "var"),
              "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}",
              "max_workers": 10, "DATABASES": {"enrolment": None},
              "OUTBOX": {"poll_interval_s": 0.1, "batch_size": 100},
              "OPERATOR_TOKEN": "operator-token-for-the-cli-tests",
              "LOGGING": {"version": 1, "root": {"level": "WARNING"}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def unpublished(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()[0]


def invoke(config_path, *args):
    result = CliRunner().invoke(main, ["--config", str(config_path), *args],
                                catch_exceptions=False)
    return result


def test_operator_sets_up_a_programme_from_files(cli_env, register_file):
    path, config = cli_env
    assert invoke(path, "migrate").exit_code == 0
    imported = invoke(path, "import-register", str(register_file))
    assert imported.exit_code == 0, imported.output
    assert "bodies" in imported.output
    again = invoke(path, "import-register", str(register_file))
    assert "(0 new, 0 updated, 11117 unchanged)" in again.output
    created = invoke(path, "programme", "create",
                     str(REPO / "deploy" / "programmes" / "bw-digitallotsen.yaml"))
    assert created.exit_code == 0, created.output
    assert "1136 eligible bodies" in created.output
    state = invoke(path, "funding", "state", "BW-DL")
    assert state.exit_code == 2 and "not fully set up" in state.output  # until funding hears of it
    ledger = invoke(path, "funding", "ledger", "BW-DL", "--csv")
    assert ledger.output.splitlines()[1].split(",")[2:5] == ["budget_change", "budget", "80000000"]
    assert invoke(path, "funding", "check", "BW-DL").exit_code == 0
    duplicate = CliRunner().invoke(main, ["--config", str(path), "programme", "create",
                                          str(REPO / "deploy" / "programmes" /
                                              "bw-digitallotsen.yaml")])
    assert duplicate.exit_code == 2 and "exists already" in duplicate.output
    key = invoke(path, "municipality", "register", "08226098", "--contact-name", "Hauptamt",
                 "--contact-email", "digital@wiesloch.example")
    assert key.exit_code == 0 and "lk_" in key.output
    bad = CliRunner().invoke(main, ["--config", str(path), "municipality", "register", "0822",
                                    "--contact-name", "x", "--contact-email", "nope"])
    assert bad.exit_code == 2 and "ags" in bad.output and "contact_email" in bad.output


def test_a_coach_an_office_member_and_a_clerk_who_left_are_erased_by_the_cli(cli_env, register_file):
    from datetime import datetime, timezone

    from services.common.db import open_database
    from services.enrolment.models import Coach, InboxRecord, OutboxMessage
    path, config = cli_env
    assert invoke(path, "migrate").exit_code == 0
    assert invoke(path, "demo", "--register", str(register_file)).exit_code == 0
    address = "lotse@lotsen.example"
    coach_id = invoke(path, "coaching", "coaches", "SN-DN").output.split()[0]
    still = invoke(path, "privacy", "erase-coach", address)
    assert still.exit_code == 2 and "coaches in SN-DN" in still.output
    assert invoke(path, "coaching", "remove-coach", coach_id).exit_code == 0
    waiting = invoke(path, "privacy", "erase-coach", address)  # no relay ran: nothing sent
    assert waiting.exit_code == 2 and "not yet sent" in waiting.output
    enrolment = open_database(config, "enrolment", OutboxMessage, InboxRecord)
    try:
        enrolment.run(lambda s: s.query(OutboxMessage).update(
            {"published_at": datetime.now(timezone.utc)}))
        erased = invoke(path, "privacy", "erase-coach", address)
        assert erased.exit_code == 0 and "erased 1 coach row(s)" in erased.output
        assert address not in erased.output
        assert enrolment.run(lambda s: s.query(Coach).filter(Coach.email == address).count()) == 0
    finally:
        enrolment.dispose()
    again = invoke(path, "privacy", "erase-coach", address)
    assert again.exit_code == 2 and "no coach" in again.output
    assert invoke(path, "privacy", "erase-coach", "kein-adresse").exit_code == 2

    # A member of the office who left, the same way.
    member = "paula.programm@lotsen.example"
    assert invoke(path, "office", "add", member, "--name", "Paula Programm").exit_code == 0
    active = invoke(path, "privacy", "erase-office-member", member)
    assert active.exit_code == 2 and "still has access" in active.output
    assert invoke(path, "office", "remove", member).exit_code == 0
    gone = invoke(path, "privacy", "erase-office-member", member)
    assert gone.exit_code == 0 and gone.output.startswith("erased as erased-")
    assert member not in gone.output and member not in invoke(path, "office", "list").output
    assert invoke(path, "privacy", "erase-office-member", member).exit_code == 2

    # Walldorf's contact, once Walldorf has a new one.
    contact = "digital@walldorf.example"
    current = invoke(path, "privacy", "erase-clerk", contact)
    assert current.exit_code == 2 and "contact of 08226095" in current.output
    assert invoke(path, "municipality", "register", "08226095", "--contact-name", "Olga Neu",
                  "--contact-email", "o.neu@walldorf.example").exit_code == 0
    enrolment = open_database(config, "enrolment", OutboxMessage, InboxRecord)
    try:  # Olga's announcement, still unsent, does not name the old contact: no wait
        left = invoke(path, "privacy", "erase-clerk", contact)
        assert left.exit_code == 0 and left.output.startswith("erased as erased-"), left.output
        assert contact not in left.output
        stored = enrolment.run(lambda s: [str(m.envelope) for m in s.query(OutboxMessage)])
        assert not [e for e in stored if contact in e]
        assert [e for e in stored if "o.neu@walldorf.example" in e]
    finally:
        enrolment.dispose()
    again = invoke(path, "privacy", "erase-clerk", contact)
    assert again.exit_code == 2 and "holds nothing" in again.output

    # Whoever left more than STAFF_RETENTION_DAYS ago goes with the retention run.
    assert invoke(path, "office", "add", "ida@lotsen.example", "--name", "Ida").exit_code == 0
    assert invoke(path, "office", "remove", "ida@lotsen.example").exit_code == 0
    later = (calendar_today() + timedelta(days=366)).isoformat()
    retention = invoke(path, "privacy", "retention", "--today", later)
    assert "erased 1 of 1 coach(es), office member(s)" in retention.output, retention.output
    assert "ida@lotsen.example" not in invoke(path, "office", "list").output


def test_demo_loads_once_and_run_serves_it(cli_env, register_file):
    path, config = cli_env
    assert invoke(path, "migrate").exit_code == 0
    first = invoke(path, "demo", "--register", str(register_file))
    assert first.exit_code == 0 and "demo programme BW-DL" in first.output
    assert "coaching programme SN-DN" in first.output  # the real register has Sachsen
    second = invoke(path, "demo")
    assert "already loaded" in second.output
    credentials = json.loads((Path(config["LOTSEN_HOME"]) / "demo-credentials.json").read_text())
    assert credentials["coaching"] == {"programme": "SN-DN", "coach": "lotse@lotsen.example",
                                       "municipality": "14628270"}
    listed = invoke(path, "coaching", "navigators", "SN-DN")
    assert listed.exit_code == 0 and "14628270  Pirna, Stadt  Lotse (Demo)" in listed.output
    coaches = invoke(path, "coaching", "coaches", "SN-DN")
    assert coaches.exit_code == 0 and "lotse@lotsen.example  1 of " in coaches.output
    assert invoke(path, "coaching", "remove-coach", "kein-coach").exit_code == 2
    removed = invoke(path, "coaching", "remove-coach", coaches.output.split()[0])
    assert removed.exit_code == 0 and "1 Navigators now without a coach" in removed.output
    unpaired = invoke(path, "coaching", "navigators", "SN-DN", "--unpaired")
    assert "14628270  Pirna, Stadt  (no coach)" in unpaired.output
    assert invoke(path, "coaching", "coaches", "SN-DN").output == ""

    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "--config", str(path), "run"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        courses = None
        while time.monotonic() < deadline and courses is None:
            try:
                with SignedRpc("enrolment", dict(config), timeout=5) as enrolment:
                    courses = enrolment.list_open_courses("08226098")
            except Exception:
                assert process.poll() is None, process.stdout.read()
                time.sleep(0.5)
        assert {c["location"] for c in courses} == {"Wiesloch", "Stuttgart"}
        # The embedded default checks callers too: the key it made is in the run directory,
        # and a call without the gateway's proof is refused.
        assert (Path(config["LOTSEN_HOME"]) / "secrets" / "service.key").exists()
        with ServiceRpcProxy("enrolment", {"AMQP_URI": config["AMQP_URI"]},
                             timeout=10) as anyone:
            with pytest.raises(AuthenticationFailed):
                anyone.list_enrolments("08226098", {})
        assert all(c["free_seats"] == c["capacity"] for c in courses)
        assert len(credentials["municipalities"]) == 3
        # The gateway runs in the same process and answers with the demo key.
        key = credentials["municipalities"][0]["api_key"]
        answer = requests.get(f"http://{config['WEB_SERVER_ADDRESS']}/api/v1/courses",
                              headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert answer.status_code == 200 and len(answer.json()["items"]) == 2
        # The relay publishes the demo's events although nobody subscribes to them yet.
        database = Path(config["LOTSEN_HOME"]) / "enrolment.sqlite"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and unpublished(database):
            time.sleep(0.2)
        assert unpublished(database) == 0
        # The funding service in the same process received the programme and its policy.
        with SignedRpc("funding", dict(config), operator=True, timeout=10) as funding:
            deadline = time.monotonic() + 30
            state = None
            while state is None and time.monotonic() < deadline:
                try:
                    state = funding.budget_state("BW-DL")
                except Exception:
                    time.sleep(0.3)
        assert state["eligible_bodies"] == 1136 and state["pool_seats_left"] == 464
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("lotsen run did not stop on SIGTERM")
    assert process.returncode == 0


def test_a_programme_without_funding_gets_a_policy_later_and_publish_checks_the_budget(
        cli_env, register_file, tmp_path):
    path, config = cli_env
    assert invoke(path, "migrate").exit_code == 0
    assert invoke(path, "import-register", str(register_file)).exit_code == 0
    programme = yaml.safe_load((REPO / "deploy" / "programmes" /
                                "bw-digitallotsen.yaml").read_text())
    programme.pop("funding")
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(programme, allow_unicode=True))
    created = invoke(path, "programme", "create", str(bare))
    assert "no funding section" in created.output
    # No policy: a budget change is a clear error, not an internal one.
    early = invoke(path, "funding", "budget", "BW-DL", "90000000", "--reason", "Nachtrag")
    assert early.exit_code == 2 and "lotsen funding policy" in early.output

    small = invoke(path, "funding", "policy", "BW-DL", "--budget-cents", "1000000",
                   "--fee-cents", "50000", "--reserve-until", "2027-06-30")
    assert small.exit_code == 0, small.output
    database = Path(config["LOTSEN_HOME"]) / "enrolment.sqlite"

    def announcements():
        with sqlite3.connect(database) as connection:
            return connection.execute("SELECT count(*) FROM outbox WHERE event_type = "
                                      "'programme_published'").fetchone()[0]
    before = announcements()
    refused = invoke(path, "programme", "publish", "BW-DL")
    assert refused.exit_code == 2 and "1136 eligible bodies" in refused.output
    assert "lacks 55800000 cents" in refused.output
    assert announcements() == before  # nothing announced

    raised = invoke(path, "funding", "budget", "BW-DL", "80000000", "--reason", "Nachtrag")
    assert raised.exit_code == 0, raised.output
    published = invoke(path, "programme", "publish", "BW-DL")
    assert published.exit_code == 0 and "1136 eligible bodies" in published.output
    assert announcements() == before + 1


def test_privacy_commands_on_the_embedded_default(cli_env, register_file, tmp_path):
    """Access, erasure and retention from the command line on the SQLite files: the address
    is never printed by the erasure, the export is one JSON document."""
    from datetime import date, timedelta

    from services.common import config as cfg
    from services.common.db import open_database
    from services.enrolment import domain
    from services.enrolment.models import InboxRecord, OutboxMessage

    path, config = cli_env
    assert invoke(path, "migrate").exit_code == 0
    assert invoke(path, "import-register", str(register_file)).exit_code == 0
    programme = yaml.safe_load((REPO / "deploy/programmes/bw-digitallotsen.yaml").read_text())
    programme["enrolment_closes_on"] = date(2099, 1, 1)
    programme_file = tmp_path / "programme.yaml"
    programme_file.write_text(yaml.safe_dump(programme))
    assert invoke(path, "programme", "create", str(programme_file)).exit_code == 0
    assert invoke(path, "programme", "retention", "BW-DL", "45").exit_code == 0
    assert "kept 45 days" in invoke(path, "programme", "list").output
    handle = open_database(cfg.load_config(str(path)), "enrolment", OutboxMessage, InboxRecord)
    try:
        def setup(session):
            provider, _ = domain.create_provider(session, "VWA")
            first = calendar_today() + timedelta(days=10)
            course = domain.create_course(session, provider, {
                "programme_code": "BW-DL", "title": "Basisseminar", "location": "Wiesloch",
                "capacity": 5, "open": True,
                "modules": [{"number": 1, "title": "Modul 1", "date": first}]})
            return domain.enrol(session, "08226098", {"course_id": course.id, "participant": {
                "given_name": "Hiltrud", "family_name": "Ostermeier",
                "email": "hiltrud.ostermeier@example.org", "department": "Bauamt"}})
        enrolled = handle.run(setup)
    finally:
        handle.dispose()
    exported = invoke(path, "privacy", "export", "Hiltrud.Ostermeier@example.org")
    assert exported.exit_code == 0
    document = json.loads(exported.output)
    assert [e["id"] for e in document["enrolment"]["enrolments"]] == [enrolled["id"]]
    assert set(document) == {"subject", "generated_at", "enrolment", "funding",
                             "certificates", "mails"}
    refused = invoke(path, "privacy", "erase", "hiltrud.ostermeier@example.org",
                     "--reason", "Antrag")
    assert refused.exit_code == 2 and "cancel it first" in refused.output
    assert "hiltrud" not in refused.output.lower()
    unknown = invoke(path, "privacy", "erase", "niemand@example.org", "--reason", "Antrag")
    assert unknown.exit_code == 2 and "niemand" not in unknown.output
    # Far in the future the course has ended long ago: the retention run erases it.
    later = (calendar_today() + timedelta(days=100)).isoformat()
    retention = invoke(path, "privacy", "retention", "--today", later)
    assert retention.exit_code == 0 and "erased 1 enrolment(s) of 1" in retention.output
    after = json.loads(invoke(path, "privacy", "export", "hiltrud.ostermeier@example.org").output)
    assert after["enrolment"]["enrolments"] == []
    assert after["enrolment"]["erasures"][0]["cause"] == "retention"
    database = Path(config["LOTSEN_HOME"]) / "enrolment.sqlite"
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT given_name, family_name, email, department FROM enrolments"
                            ).fetchall()
        envelopes = " ".join(r[0] for r in conn.execute("SELECT envelope FROM outbox"))
    assert rows[0][0] == "gelöscht" and rows[0][2].endswith("@erased.invalid") and not rows[0][3]
    assert "Ostermeier" not in envelopes and "hiltrud" not in envelopes
    assert "participant_erased" in envelopes
