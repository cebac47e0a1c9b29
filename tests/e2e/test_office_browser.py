"""The programme office's pages in a real browser (Debian's chromium through chromedriver)
against the whole system, every service in its own process, mail over SMTP.

One walk through what the office does: sign in with the keyboard by a mailed link, read the
coverage (filtered, sorted, one Kreis's bodies without a Lotse), the map and the budget,
onboard contacts from a CSV, send a reminder campaign and see it on the coverage page, sign
out. Every page is checked with axe-core and the structural checks of the portal's test, and
saved as a screenshot (``LOTSEN_SCREENSHOTS``, default var/screenshots/office).
"""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from services.common.clock import calendar_today
from services.provider_client import ProviderClient
from tests.e2e.test_portal_browser import (
    AXE,
    CHROMEDRIVER,
    CHROMIUM,
    SHOTS,
    Browser,
    _needed,
    check_page,
    tab_to,
)
from tests.integration.helpers import wait_for

TOWNS = {"08226098": "wiesloch", "08226095": "walldorf", "08221000": "heidelberg"}
STAFF = "paula.programm@stm.bwl.example"
LINK = re.compile(r"https?://\S+/buero/link/[A-Za-z0-9_-]+")


@pytest.fixture
def office_system(make_system, register_file, tmp_path):
    _needed("Debian's chromium", Path(CHROMIUM).exists())
    _needed("Debian's chromium-driver", Path(CHROMEDRIVER).exists())
    _needed("axe-core", AXE.exists())
    pytest.importorskip("selenium")
    system = make_system()
    setup = system.set_up_programme(register_file, TOWNS, extra_seats=10)
    system.cli("office", "add", STAFF, "--name", "Paula Programm")
    system.start()
    system.wait_ready()
    later = calendar_today() + timedelta(days=40)
    with ProviderClient(system.config["AMQP_URI"], setup["provider_token"], timeout=30) as p:
        course = p.create_course({
            "programme_code": "BW-DL", "title": "Basisseminar Digitallotsen",
            "location": "Wiesloch", "capacity": 22, "open": True,
            "modules": [{"number": n, "title": f"Modul {n}",
                         "date": (later + timedelta(days=n)).isoformat()} for n in range(1, 4)]})
    for n, ags in enumerate(("08226098", "08226095")):  # Heidelberg enrols nobody
        answer = requests.post(system.base + "/api/v1/enrolments", timeout=30, headers={
            "Authorization": f"Bearer {setup['keys'][ags]}", "Idempotency-Key": f"office-{n}"},
            json={"course_id": course["id"], "participant": {
                "given_name": "Jürgen", "family_name": f"Weiß{n}",
                "email": f"teilnehmer{n}@{TOWNS[ags]}.example"}})
        assert answer.status_code == 201, answer.text
    return system


def test_the_office_in_a_browser(office_system, tmp_path):
    system = office_system
    axe_source = AXE.read_text(encoding="utf-8")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    b = Browser(system.base, downloads, SHOTS / "office")
    try:
        # Sign in with the keyboard alone.
        b.go("/buero")
        assert b.url.endswith("/buero/anmelden")
        assert tab_to(b, "el.classList.contains('skip')")[-1]["text"] == "Zum Inhalt springen"
        check_page(b, "anmelden", axe_source)
        tab_to(b, "el.id === 'feld-email'")
        b.keys(STAFF)
        b.enter()
        wait_for(lambda: b.url.endswith("/buero/anmelden?hinweis=link"), message="asked")
        mail = wait_for(lambda: [m for m in system.inbox.messages
                                 if "Seiten des Programmbüros" in str(m["Subject"])],
                        timeout=60, message="the office's sign-in mail")[0]
        b.go(LINK.search(mail.get_body(("plain",)).get_content()).group(0))
        check_page(b, "link-bestaetigen", axe_source)
        b.press("Jetzt anmelden")
        assert b.heading() == "Abdeckung"

        # Coverage: two of the 1,136 bodies have a Lotse once funding has decided.
        wait_for(lambda: (b.go("/buero/abdeckung?programm=BW-DL"),
                          "2 (0,2 %)" in b.html)[1], timeout=60, message="coverage")
        check_page(b, "abdeckung", axe_source)
        b.choose("Gliederung", "Regierungsbezirk")
        b.press("Anzeigen")
        assert len(b.all("table.stack")[0].find_elements("css selector", "tbody tr")) == 4
        b.follow("Mit Lotse")
        assert "sortierung=anteil" in b.url
        check_page(b, "abdeckung-bezirke", axe_source)
        b.go("/buero/abdeckung?programm=BW-DL&ebene=kreis&suche=Rhein-Neckar")
        b.follow("Rhein-Neckar-Kreis")
        assert "Kommunen ohne Lotse in Rhein-Neckar-Kreis" in b.html
        assert "Walldorf" not in b.find("#ohne-titel + p + .table-scroll").text
        check_page(b, "abdeckung-kreis", axe_source)

        b.follow("Karte")
        svg = b.find("svg.coverage-map")
        assert svg.get_attribute("role") == "img"
        check_page(b, "karte", axe_source)
        b.follow("Budget")
        assert "573.000,00 €" in b.html  # (1,136 + 10 seats) × 500 €
        check_page(b, "budget", axe_source)

        # Onboarding: Heidelberg's contact changes, Schwetzingen's is new, one row is wrong.
        sheet = tmp_path / "kontakte.csv"
        sheet.write_bytes(("AGS;Kontaktperson;E-Mail\r\n"
                           "8221000;Bürgeramt Heidelberg;digital@heidelberg.example\r\n"
                           "08226084;Hauptamt Schwetzingen;hauptamt@schwetzingen.example\r\n"
                           "0822;Falsch;keine-adresse\r\n").encode("cp1252"))
        b.follow("Kontakte")
        check_page(b, "kontakte", axe_source)
        b.field("CSV-Datei").send_keys(str(sheet))
        b.press("Eintragen und einladen")
        assert "1 neu, 1 geändert, 0 unverändert, 1 mit Fehler" in b.html
        check_page(b, "kontakte-bericht", axe_source)

        # Outreach: a campaign, then the coverage page says who was reminded.
        b.follow("Erinnerungen")
        b.fill("Name der Kampagne", "Falscher Name")
        b.press("Erinnerungen verschicken")
        assert "Kleinbuchstaben" in b.find("#fehler-kampagne").text
        check_page(b, "erinnerungen-fehler", axe_source)
        b.fill("Name der Kampagne", "erinnerung-2027-05")
        b.press("Erinnerungen verschicken")
        assert "nur einmal" in b.status()
        check_page(b, "erinnerungen", axe_source)
        wait_for(lambda: [m for m in system.inbox.messages
                          if "Noch kein geförderter Platz" in str(m["Subject"])
                          and m["To"].addresses[0].addr_spec == "digital@heidelberg.example"],
                 timeout=60, message="Heidelberg's reminder")
        b.go("/buero/abdeckung?programm=BW-DL&gebiet=08221000")
        assert "erinnerung-2027-05" in b.find("#ohne-titel + p + .table-scroll").text
        b.shot("abdeckung-erinnert")

        b.press("Abmelden")
        assert b.url.endswith("/buero/anmelden?hinweis=abgemeldet")
        b.go("/buero/budget")
        assert b.url.endswith("/buero/anmelden")
    finally:
        b.close()
    tally = system.settle()
    assert tally.lost == 0 and tally.duplicated == 0, tally.line()
