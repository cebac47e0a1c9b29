"""The programme office's pages over real HTTP: gateway, enrolment, funding and notifications,
RabbitMQ, PostgreSQL, mail written to files."""
from __future__ import annotations

import csv
import io
import re
from datetime import date

import pytest

from services.enrolment import domain, office
from services.enrolment.service import EnrolmentService
from services.funding import domain as funding_domain
from services.funding.service import FundingService
from services.gateway.service import GatewayService
from services.notifications.service import NotificationsService
from tests.funding_support import policy
from tests.integration.helpers import SignedRpc, gemeinden, participant, seed, wait_for
from tests.integration.test_gateway import free_port
from tests.integration.test_portal import Browserish, mails_to

LINK = re.compile(r"https?://[^\s\"<>]+/buero/link/[A-Za-z0-9_-]+")
STAFF = "paula.programm@stm.bwl.example"
FEE = 50_000


@pytest.fixture
def office_system(container_factory, service_config, enrolment_db, funding_db, register_file,
                  tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = dict(service_config, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
                  GATEWAY={"rpc_timeout_s": 20, "ready_timeout_s": 2},
                  PORTAL={"public_url": base, "session_hours": 8})
    seeded = seed(enrolment_db, register_file, capacity=3, providers=1)
    funding_db.run(funding_domain.set_policy, seeded["programme_id"], "BW-DL",
                   policy(80_000_000, FEE, 1, date(2027, 6, 30)))
    first, second = gemeinden(register_file, 2)
    for ags in (first, second):
        enrolment_db.run(lambda s, a=ags: domain.register_municipality(
            s, a, "Erika Muster", f"hauptamt@{a}.example"))
    enrolment_db.run(office.add_staff, STAFF, "Paula Programm")
    for service in (EnrolmentService, FundingService, NotificationsService, GatewayService):
        container_factory(service, config).start()
    with SignedRpc("funding", config, operator=True) as funding:
        wait_for(lambda: _published(funding), message="programme reached funding")
    return {"base": base, "config": config, "a": first, "b": second,
            "course": str(seeded["courses"][0]), "mail": tmp_path / "mail", "db": enrolment_db}


def _published(funding):
    try:
        return funding.budget_state("BW-DL")
    except funding_domain.NotReady:
        return None


def office_link(directory, address, count=1):
    mails = wait_for(lambda: [m for m in mails_to(directory, address)
                              if "Seiten des Programmbüros" in str(m["Subject"])][count - 1:],
                     timeout=30, message="office sign-in mail")
    return LINK.search(mails[0].get_body(("plain",)).get_content()).group(0)


def signed_in(system) -> Browserish:
    browser = Browserish(system["base"])
    browser.get("/buero/anmelden")
    assert browser.post("/buero/anmelden", {"email": STAFF}).status_code == 303
    link = office_link(system["mail"], STAFF)
    browser.get(link.removeprefix(system["base"]))
    assert browser.post("/buero/link", {"token": browser.hidden("token")}).status_code == 303
    assert browser.follow().status_code == 200
    return browser


def test_only_office_staff_get_a_link_and_sign_out_ends_the_session(office_system):
    stranger = Browserish(office_system["base"])
    stranger.get("/buero/anmelden")
    answer = stranger.post("/buero/anmelden", {"email": "jemand@example.org"})
    assert answer.status_code == 303 and answer.headers["Location"].endswith("hinweis=link")
    assert stranger.get("/buero/abdeckung").status_code == 303  # not signed in
    # A municipality's clerk has no way in either: the portal's link is not the office's.
    clerk = Browserish(office_system["base"])
    clerk.get("/buero/anmelden")
    clerk.post("/buero/anmelden", {"email": f"hauptamt@{office_system['a']}.example"})

    browser = signed_in(office_system)
    assert "Abdeckung" in browser.last.text and "Paula Programm" in browser.last.text
    assert mails_to(office_system["mail"], "jemand@example.org") == []
    assert mails_to(office_system["mail"], f"hauptamt@{office_system['a']}.example") == []
    refused = browser.post("/buero/abmelden", {}, csrf=False)
    assert refused.status_code == 403  # no CSRF token: the session stays
    assert browser.get("/buero/abdeckung").status_code == 200
    assert browser.post("/buero/abmelden", {}).status_code == 303
    cookie = browser.session.cookies.get("lotsen_buero")
    assert cookie is None
    again = Browserish(office_system["base"])
    again.session.cookies.set("lotsen_buero", browser.last.request.headers.get("Cookie", "")
                              .partition("lotsen_buero=")[2].split(";")[0], path="/buero")
    assert again.get("/buero/abdeckung").status_code == 303  # the old session has ended


def test_coverage_map_and_budget_follow_the_enrolments(office_system):
    with SignedRpc("enrolment", office_system["config"]) as enrolment:
        made = enrolment.enrol(office_system["a"], {"course_id": office_system["course"],
                                                    "participant": participant(1)})
        wait_for(lambda: enrolment.get_enrolment(office_system["a"], made["id"])["funding"]
                 ["status"] == "granted", message="funded")
    browser = signed_in(office_system)
    page = browser.get("/buero/abdeckung?programm=BW-DL&ebene=kreis&sortierung=name").text
    assert "1.136" in page and "0,1 %" in page
    kreise = re.findall(r'<th scope="row"><a href="[^"]*gebiet=(\d{8})', page)
    assert len(kreise) == 44
    names = re.findall(r'gebiet=\d{8}[^"]*#ohne-titel">([^<]+)</a>', page)
    assert names == sorted(names)
    searched = browser.get("/buero/abdeckung?programm=BW-DL&ebene=kreis&suche=Rhein-Neckar").text
    assert re.findall(r'gebiet=(\d{8})[^"]*#ohne-titel">', searched) == ["08226000"]
    missing = browser.get("/buero/ohne-lotse.csv?programm=BW-DL")
    rows = list(csv.reader(io.StringIO(missing.content.decode("utf-8-sig")), delimiter=";"))
    assert len(rows) == 1 + 1135 and office_system["a"] not in {r[1] for r in rows}
    svg = browser.get("/buero/karte?programm=BW-DL").text
    # one body and its legend entry
    assert svg.count('class="confirmed') == 2 and svg.count("<title>") >= 1136
    budget = browser.get("/buero/budget?programm=BW-DL").text
    assert "800.000,00 €" in budget and "567.500,00 €" in budget  # one guarantee used
    assert "Bewilligte Mittel je Woche" in budget and ("<polyline" in budget or "<circle" in budget)
    for odd in ("BW%00DL", "x" * 50, "bw-dl"):  # no database error, no other programme
        assert browser.get(f"/buero/abdeckung?programm={odd}").status_code == 404
    ledger = browser.get("/buero/ledger.csv?programm=BW-DL")
    assert ledger.status_code == 200 and "grant" in ledger.text


def test_onboarding_is_repeatable_and_reminders_reach_each_body_once(office_system):
    browser = signed_in(office_system)
    browser.get("/buero/kontakte")
    new_ags = "08226098"  # Wiesloch; the file writes it without its leading zero, as Excel does
    sheet = ("AGS;Kontaktperson;E-Mail\r\n"
             f"{new_ags[1:]};Hauptamt Wiesloch;HAUPTAMT@wiesloch.example\r\n"
             f"{office_system['b']};Erika Muster;hauptamt@{office_system['b']}.example\r\n"
             "99999999;Niemand;niemand@example.org\r\n").encode("cp1252")
    report = browser.post("/buero/kontakte", {}, files={"datei": ("kontakte.csv", sheet)})
    assert report.status_code == 200, report.text[:400]
    assert "1 neu, 0 geändert, 1 unverändert, 1 mit Fehler" in report.text
    invitations = wait_for(lambda: [m for m in mails_to(office_system["mail"],
                                                        "hauptamt@wiesloch.example")
                                    if "Einladung" in str(m["Subject"])], timeout=30,
                           message="invitation")
    assert "Das Programmbüro hat Sie eingeladen" in invitations[0].get_body(
        ("plain",)).get_content()
    browser.get("/buero/kontakte")
    again = browser.post("/buero/kontakte", {}, files={"datei": ("kontakte.csv", sheet)})
    assert "0 neu, 0 geändert, 2 unverändert, 1 mit Fehler" in again.text

    browser.get("/buero/erinnerungen")
    bad = browser.post("/buero/erinnerungen", {"programm": "BW-DL", "kampagne": "Große Runde"})
    assert bad.status_code == 422 and 'id="fehler-kampagne"' in bad.text
    assert 'value="Große Runde"' in bad.text  # input kept
    sent = browser.post("/buero/erinnerungen", {"programm": "BW-DL", "kampagne": "runde-1"})
    assert sent.status_code == 303
    browser.follow()
    browser.post("/buero/erinnerungen", {"programm": "BW-DL", "kampagne": "runde-1"})
    reminder = "Noch kein geförderter Platz"
    contacts = [f"hauptamt@{office_system['a']}.example",
                f"hauptamt@{office_system['b']}.example", "hauptamt@wiesloch.example"]
    got = wait_for(lambda: {c: [m for m in mails_to(office_system["mail"], c)
                                if reminder in str(m["Subject"])] for c in contacts}
                   if len([1 for c in contacts for m in mails_to(office_system["mail"], c)
                           if reminder in str(m["Subject"])]) >= 3 else None,
                   timeout=30, message="reminders")
    assert {c: len(m) for c, m in got.items()} == dict.fromkeys(contacts, 1)
    page = browser.get(f"/buero/abdeckung?programm=BW-DL&gebiet={office_system['b'][:5]}000").text
    row = re.search(rf"{office_system['b']}</td>.*?</tr>", page, re.S).group(0)
    assert "runde-1" in row


def test_coverage_of_a_coaching_programme_shows_navigators_and_coaches(office_system,
                                                                      register_file):
    from services.enrolment import coaching
    from services.enrolment.register import import_register, parse_register

    db = office_system["db"]
    db.run(import_register, [b for b in parse_register(register_file) if b.land == "14"])

    def setup(session):
        programme = domain.create_programme(session, {
            "code": "SN-DN", "name": "Digital-Navigatoren Sachsen", "land": "14",
            "role_name": "Digital-Navigator", "eligible_kinds": ["gemeinde", "kreis"],
            "enrolment_opens_on": date(2026, 1, 1), "enrolment_closes_on": date(2099, 1, 1)})
        coaching.define(session, programme, [
            {"key": "agenda", "title": "Digitale Agenda", "due_days": 112, "document": True}])
        coach, _ = coaching.register_coach(session, "SN-DN", "Lotsin Lange",
                                           "lange@ssg.example", 12)
        return coach.id
    coach_id = db.run(setup)
    named = db.run(coaching.name_navigator, "14612000", "SN-DN", participant(1))
    db.run(coaching.pair, named["id"], coach_id)
    browser = signed_in(office_system)
    page = browser.get("/buero/abdeckung?programm=SN-DN").text
    assert "Kommunen mit Digital-Navigator" in page and "1 von 429, davon 1 mit Coach" in page
    assert re.search(r"Lotsin Lange</th><td[^>]*>1</td><td[^>]*>12</td>", page)
    seminar = browser.get("/buero/abdeckung?programm=BW-DL").text
    assert "Kommunen mit Digital-Navigator" not in seminar
