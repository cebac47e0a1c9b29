"""The whole journey through public interfaces only, every service in its own process:
the CLI for the programme office, provider RPC, the gateway over HTTP, e-mail over SMTP."""
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import yaml
from aiosmtpd.controller import Controller
from nameko.standalone.rpc import ServiceRpcProxy

from tests.integration.helpers import wait_for
from tests.integration.test_gateway import free_port
from tests.integration.test_notifications import Inbox

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["enrolment", "funding", "certificates", "notifications", "gateway"]
FEE = 50_000


@pytest.fixture
def system(service_config, tmp_path, register_file):
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    address = f"127.0.0.1:{free_port()}"
    config = {k: service_config[k] for k in ("AMQP_URI", "DATABASES", "EVENT_RETRY",
                                             "OPERATOR_TOKEN")}
    config.update({
        "LOTSEN_HOME": str(tmp_path / "home"), "WEB_SERVER_ADDRESS": address,
        "OUTBOX": {"poll_interval_s": 0.2, "batch_size": 200}, "LOG_FORMAT": "json",
        "CERTIFICATES": {"public_base_url": f"http://{address}",
                         "issuer_name": "Programmbüro Kommunale Digitallotsen"},
        "MAIL": {"transport": "smtp", "host": "127.0.0.1", "port": smtp.port,
                 "max_attempts": 6, "base_delay_s": 0.2, "max_delay_s": 2,
                 "poll_interval_s": 0.2}})
    path = tmp_path / "journey.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    processes = {}
    try:
        yield {"path": path, "config": config, "inbox": inbox, "processes": processes,
               "base": f"http://{address}", "tmp": tmp_path}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
        smtp.stop()


def cli(system, *args) -> str:
    result = subprocess.run([sys.executable, "-m", "services.cli", "--config",
                             str(system["path"]), *args], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def start(system, service):
    log = open(system["tmp"] / f"{service}.log", "w")
    system["processes"][service] = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "--config", str(system["path"]), "run",
         "--service", service], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def test_the_whole_journey(system, register_file, tmp_path):
    # The programme office: migrate, register, programme with its funding, provider, keys.
    cli(system, "migrate")
    assert "11117 bodies" in cli(system, "import-register", str(register_file))
    programme = dict(yaml.safe_load((REPO / "deploy/programmes/bw-digitallotsen.yaml").read_text()))
    programme["funding"]["budget_cents"] = (1136 + 30) * FEE
    programme_file = tmp_path / "programme.yaml"
    programme_file.write_text(yaml.safe_dump(programme, allow_unicode=True))
    assert "1136 eligible bodies" in cli(system, "programme", "create", str(programme_file))
    token = re.search(r"token: (\S+)", cli(system, "provider", "create", "VWA Baden")).group(1)
    bodies = {"08226098": "wiesloch", "08226095": "walldorf", "08226000": "rnk"}
    keys = {ags: re.search(r": (lk_\S+)", cli(
        system, "municipality", "register", ags, "--contact-name", f"Hauptamt {town}",
        "--contact-email", f"hauptamt@{town}.example")).group(1) for ags, town in bodies.items()}

    for service in SERVICES:
        start(system, service)
    rpc = {"AMQP_URI": system["config"]["AMQP_URI"]}
    for service in SERVICES[:-1]:
        wait_for(lambda s=service: subprocess.run(
            [sys.executable, "-m", "services.cli", "--config", str(system["path"]), "health", s],
            cwd=REPO, capture_output=True, timeout=60).returncode == 0,
            timeout=90, message=f"{service} healthy")
    wait_for(lambda: _ok(system["base"] + "/health/ready"), timeout=60, message="gateway ready")

    # The provider sets up a course of 5 modules and 22 seats.
    from datetime import date, timedelta
    first = date.today() + timedelta(days=30)
    with ServiceRpcProxy("enrolment", rpc, context_data={"provider_token": token},
                         timeout=30) as provider:
        course = provider.create_course({
            "programme_code": "BW-DL", "title": "Basisseminar Digitallotsen",
            "location": "Wiesloch", "capacity": 22, "open": True,
            "modules": [{"number": n, "title": f"Modul {n}",
                         "date": (first + timedelta(days=n)).isoformat()} for n in range(1, 6)]})

    # Three municipalities enrol 25 participants through the gateway.
    order = ["08226098"] * 10 + ["08226095"] * 8 + ["08226000"] * 7
    enrolled = []
    for n, ags in enumerate(order):
        response = requests.post(system["base"] + "/api/v1/enrolments", timeout=30,
                                 headers={"Authorization": f"Bearer {keys[ags]}",
                                          "Idempotency-Key": f"journey-{n}"},
                                 json={"course_id": course["id"], "participant": {
                                     "given_name": "Jürgen", "family_name": f"Weiß{n}",
                                     "email": f"teilnehmer{n}@{bodies[ags]}.example"}})
        assert response.status_code == 201, response.text
        enrolled.append((ags, response.json()))
    statuses = Counter(e["status"] for _, e in enrolled)
    assert statuses == {"confirmed": 22, "waitlisted": 3}

    def funding(ags, enrolment_id):
        return requests.get(f"{system['base']}/api/v1/enrolments/{enrolment_id}", timeout=30,
                            headers={"Authorization": f"Bearer {keys[ags]}"}).json()["funding"]

    confirmed = [(ags, e) for ags, e in enrolled if e["status"] == "confirmed"]
    wait_for(lambda: all(funding(ags, e["id"])["status"] == "granted" for ags, e in confirmed),
             timeout=60, message="every seat funded")
    kinds = Counter(funding(ags, e["id"])["kind"] for ags, e in confirmed)
    assert kinds == {"guaranteed": 3, "pool": 19}
    firsts = {ags: e for ags, e in reversed(confirmed)}  # earliest per body
    assert all(funding(ags, e["id"])["kind"] == "guaranteed" for ags, e in firsts.items())

    # A confirmed participant cancels: the first waitlisted one moves up and is funded.
    leaver_ags, leaver = confirmed[1]
    cancelled = requests.delete(f"{system['base']}/api/v1/enrolments/{leaver['id']}",
                                headers={"Authorization": f"Bearer {keys[leaver_ags]}"},
                                timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    moved_ags, moved = next((ags, e) for ags, e in enrolled if e["status"] == "waitlisted")
    wait_for(lambda: funding(moved_ags, moved["id"]) == {"status": "granted", "kind": "pool"},
             timeout=60, message="promoted and funded")
    seated = [(ags, e) for ags, e in confirmed if e["id"] != leaver["id"]] + [(moved_ags, moved)]

    # The provider records attendance for every module: 22 complete.
    with ServiceRpcProxy("enrolment", rpc, context_data={"provider_token": token},
                         timeout=60) as provider:
        for module in range(1, 6):
            provider.record_attendance(course["id"], module, [e["id"] for _, e in seated])
    for ags, e in seated:
        wait_for(lambda a=ags, i=e["id"]: (requests.get(
            f"{system['base']}/api/v1/enrolments/{i}", timeout=30,
            headers={"Authorization": f"Bearer {keys[a]}"}).json()["certificate"] or {})
            .get("status") == "issued", timeout=90, message="certificate issued")

    # Every expected mail arrives once; certificates come with their PDF.
    inbox = system["inbox"]
    expected = {"Anmeldung bestätigt": 22 * 2, "Warteliste": 3 * 2, "Nachgerückt": 2,
                "Förderung bewilligt": 23 * 2, "Abmeldung": 2, "Förderung freigegeben": 1,
                "Herzlichen Glückwunsch": 22}
    wait_for(lambda: all(_count(inbox, prefix) >= n for prefix, n in expected.items()),
             timeout=120, message="every mail")
    time.sleep(1)  # anything sent twice would arrive now
    assert {prefix: _count(inbox, prefix) for prefix in expected} == expected
    assert set(inbox.by_id().values()) == {1}
    certificate_mails = [m for m in inbox.messages if str(m["Subject"]).startswith("Herzlich")]
    assert all(len(list(m.iter_attachments())) == 1 for m in certificate_mails)
    url = re.search(r"https?://\S+/verify/[0-9A-Z-]+",
                    certificate_mails[0].get_body(("plain",)).get_content()).group(0)
    page = requests.get(url, timeout=30)
    assert page.status_code == 200 and "Zertifikat gültig" in page.text
    check = yaml.safe_load(cli(system, "funding", "check", "BW-DL"))
    assert check["ok"] is True


def _ok(url):
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _count(inbox, prefix):
    return sum(1 for m in inbox.messages if str(m["Subject"]).startswith(prefix))
