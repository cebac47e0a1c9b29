"""The whole journey through public interfaces only, every service in its own process:
the CLI for the programme office, provider RPC, the gateway over HTTP, e-mail over SMTP."""
import re
from collections import Counter
from datetime import timedelta

import requests
import yaml

from services.common.clock import calendar_today
from services.provider_client import ProviderClient
from tests.e2e.system import FEE, REPO, by_kind
from tests.integration.helpers import wait_for
from tests.integration.test_privacy import text_hits


def test_the_whole_journey(make_system, register_file, tmp_path):
    system = make_system()
    cli = system.cli
    # The programme office: migrate, register, programme with its funding, provider, keys.
    cli("migrate")
    assert "11117 bodies" in cli("import-register", str(register_file))
    programme = dict(yaml.safe_load((REPO / "deploy/programmes/bw-digitallotsen.yaml").read_text()))
    programme["funding"]["budget_cents"] = (1136 + 30) * FEE
    programme_file = tmp_path / "programme.yaml"
    programme_file.write_text(yaml.safe_dump(programme, allow_unicode=True))
    assert "1136 eligible bodies" in cli("programme", "create", str(programme_file))
    token = re.search(r"token: (\S+)", cli("provider", "create", "VWA Baden")).group(1)
    bodies = {"08226098": "wiesloch", "08226095": "walldorf", "08226000": "rnk"}
    keys = {ags: re.search(r": (lk_\S+)", cli(
        "municipality", "register", ags, "--contact-name", f"Hauptamt {town}",
        "--contact-email", f"hauptamt@{town}.example")).group(1) for ags, town in bodies.items()}

    system.start()
    system.wait_ready()
    broker = system.config["AMQP_URI"]

    # The provider sets up a course of 5 modules and 22 seats, with its own client. The journey
    # runs in one go and attendance counts only from a module's date on, so the course is one
    # that took place in the last days (entered after the fact, as providers do).
    first = calendar_today() - timedelta(days=10)
    with ProviderClient(broker, token, timeout=30) as provider:
        course = provider.create_course({
            "programme_code": "BW-DL", "title": "Basisseminar Digitallotsen",
            "location": "Wiesloch", "capacity": 22, "open": True,
            "modules": [{"number": n, "title": f"Modul {n}",
                         "date": (first + timedelta(days=n)).isoformat()} for n in range(1, 6)]})

    # Three municipalities enrol 25 participants through the gateway.
    order = ["08226098"] * 10 + ["08226095"] * 8 + ["08226000"] * 7
    enrolled = []
    for n, ags in enumerate(order):
        response = requests.post(system.base + "/api/v1/enrolments", timeout=30,
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
        return requests.get(f"{system.base}/api/v1/enrolments/{enrolment_id}", timeout=30,
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
    cancelled = requests.delete(f"{system.base}/api/v1/enrolments/{leaver['id']}",
                                headers={"Authorization": f"Bearer {keys[leaver_ags]}"},
                                timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    moved_ags, moved = next((ags, e) for ags, e in enrolled if e["status"] == "waitlisted")
    wait_for(lambda: funding(moved_ags, moved["id"]) == {"status": "granted", "kind": "pool"},
             timeout=60, message="promoted and funded")
    seated = [(ags, e) for ags, e in confirmed if e["id"] != leaver["id"]] + [(moved_ags, moved)]

    # The provider records attendance for every module: 22 complete.
    with ProviderClient(broker, token, timeout=60) as provider:
        for module in range(1, 6):
            provider.record_attendance(course["id"], module, [e["id"] for _, e in seated])
    for ags, e in seated:
        wait_for(lambda a=ags, i=e["id"]: (requests.get(
            f"{system.base}/api/v1/enrolments/{i}", timeout=30,
            headers={"Authorization": f"Bearer {keys[a]}"}).json()["certificate"] or {})
            .get("status") == "issued", timeout=90, message="certificate issued")

    # Every expected mail arrives once (settle also runs `lotsen funding check`); certificates
    # come with their PDF.
    tally = system.settle()
    assert by_kind(tally.mails_received) == {
        "confirmed": 22 * 2, "waitlisted": 3 * 2, "promoted": 2, "granted": 23 * 2,
        "cancelled": 2, "released": 1, "certificate": 22}
    inbox = system.inbox
    certificate_mails = [m for m in inbox.messages if str(m["Subject"]).startswith("Herzlich")]
    assert all(len(list(m.iter_attachments())) == 1 for m in certificate_mails)
    url = re.search(r"https?://\S+/verify/[0-9A-Z-]+",
                    certificate_mails[0].get_body(("plain",)).get_content()).group(0)
    page = requests.get(url, timeout=30)
    assert page.status_code == 200 and "Zertifikat gültig" in page.text

    # Data protection, through the CLI as the programme office does it: one certified
    # participant is erased. Afterwards their address is in no database and in no line any
    # service process logged, while the certificate still verifies, saying the holder's data
    # was erased; the ledger still holds and sums.
    ags, person = seated[0]
    address = person["participant"]["email"]
    mail_to = next(m for m in certificate_mails if address in str(m["To"]))
    code_url = re.search(r"https?://\S+/verify/([0-9A-Z-]+)",
                         mail_to.get_body(("plain",)).get_content()).group(1)
    output = cli("privacy", "erase", address, "--reason", "Antrag nach Art. 17 DSGVO")
    assert "erased 1 enrolment" in output and address not in output
    verified = wait_for(lambda: (lambda v: v if v.get("holder_erased") else None)(
        requests.get(f"{system.base}/api/v1/verify/{code_url}", timeout=30).json()),
        timeout=60, message="the certificate says its holder's data was erased")
    assert verified["status"] == "valid" and verified["participant"] is None
    wait_for(lambda: not text_hits(system.config["DATABASES"]["notifications"], (address,)),
             timeout=60, message="notifications applied the erasure")
    for service, url in system.config["DATABASES"].items():
        assert text_hits(url, (address,)) == [], service
    logs = list(tmp_path.glob("*.log"))
    assert len(logs) == 5  # one per service process
    family = re.compile(re.escape(person["participant"]["family_name"]) + r"(?!\d)")
    for log_file in logs:
        logged = log_file.read_text(encoding="utf-8", errors="replace")
        assert address not in logged and not family.search(logged), log_file
    assert '"ok": true' in cli("funding", "check", "BW-DL")
