"""Sachsen's coaching programme in a real browser (Debian's chromium through chromedriver)
against the whole system, every service in its own process, mail over SMTP.

One walk through the three roles: the clerk of Pirna names the municipality's Digital-Navigator
in the portal; the programme office registers a Lotse and pairs them; the Lotse signs in to
the coaches' pages, records the situation on site and uploads the Digitale Agenda as a PDF;
the Navigator is mailed at each step; at the end the office takes the Lotse out. Every page is
checked with axe-core and the structural checks of the portal's test, and saved as a
screenshot (``LOTSEN_SCREENSHOTS``, default var/screenshots/coaching).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.system import REPO
from tests.e2e.test_portal_browser import (
    AXE,
    CHROMEDRIVER,
    CHROMIUM,
    SHOTS,
    Browser,
    _needed,
    check_page,
)
from tests.integration.helpers import wait_for

PIRNA = "14628270"
CONTACT = "hauptamt@pirna.example"
STAFF = "sabine.sachse@smi.sachsen.example"
COACH = "lotse.lehmann@ssg.example"
NAVIGATOR = "karin.krause@pirna.example"


@pytest.fixture
def coaching_system(make_system, register_file):
    _needed("Debian's chromium", Path(CHROMIUM).exists())
    _needed("Debian's chromium-driver", Path(CHROMEDRIVER).exists())
    _needed("axe-core", AXE.exists())
    pytest.importorskip("selenium")
    system = make_system()
    system.set_up_programme(register_file, {PIRNA: "pirna"}, extra_seats=0)
    created = system.cli("programme", "create",
                         str(REPO / "deploy/programmes/sn-digital-navigatoren.yaml"))
    assert "429 eligible bodies" in created and "nothing is funded" in created
    system.cli("office", "add", STAFF, "--name", "Sabine Sachse")
    system.start()
    system.wait_ready()
    return system


def mails(system, to: str, subject: str) -> list:
    return [m for m in system.inbox.messages if subject in str(m["Subject"])
            and m["To"].addresses[0].addr_spec == to]


def sign_in(b: Browser, system, area: str, address: str, subject: str, axe_source: str):
    """Sign in by the link in the next sign-in mail (not an earlier one, already used)."""
    before = len(mails(system, address, subject))
    b.go(f"/{area}/anmelden")
    check_page(b, f"{area}-anmelden", axe_source)
    b.fill("Ihre", address)
    b.press("Anmeldelink anfordern")
    mail = wait_for(lambda: mails(system, address, subject)[before:], timeout=60,
                    message=f"the mail {subject!r}")[0]
    b.go(re.search(rf"https?://\S+/{area}/link/[A-Za-z0-9_-]+",
                   mail.get_body(("plain",)).get_content()).group(0))
    b.press("Jetzt anmelden")


def test_naming_pairing_and_coaching_in_a_browser(coaching_system, tmp_path):
    system = coaching_system
    axe_source = AXE.read_text(encoding="utf-8")
    b = Browser(system.base, tmp_path, SHOTS / "coaching")
    try:
        # The clerk names Pirna's Navigator.
        sign_in(b, system, "portal", CONTACT, "Ihr Anmeldelink", axe_source)
        assert b.has_link("Digital-Navigator für Digital-Navigatoren Sachsen")
        b.go("/portal/navigator/SN-DN")
        check_page(b, "portal-navigator-leer", axe_source)
        b.fill("Vorname", "Karin")
        b.fill("Nachname", "Krause")
        b.fill("Dienstliche E-Mail-Adresse", NAVIGATOR)
        b.press("Benennen")
        assert "Der Digital-Navigator ist benannt" in b.status()
        assert "Karin Krause" in b.html
        check_page(b, "portal-navigator", axe_source)
        b.press("Abmelden")

        # The office registers a Lotse and pairs them with Pirna's Navigator.
        sign_in(b, system, "buero", STAFF, "Seiten des Programmbüros", axe_source)
        b.follow("Coaching")
        assert "1 Kommune mit Digital-Navigator" in b.html
        b.fill("Name", "Lotse Lehmann")
        b.fill("Dienstliche E-Mail-Adresse", COACH)
        b.fill("Höchstens", "12")
        b.press("Eintragen")
        assert "ist eingetragen" in b.status()
        check_page(b, "buero-coaching", axe_source)
        b.choose("Zuordnen für Pirna", "Lotse Lehmann")
        b.press("Zuordnen")
        assert "Lotse Lehmann, seit" in b.html
        check_page(b, "buero-coaching-zugeordnet", axe_source)
        b.press("Abmelden")
        # The operator's view of the same.
        listed = system.cli("coaching", "navigators", "SN-DN")
        assert PIRNA in listed and "Lotse Lehmann" in listed and "Krause" not in listed

        # The Lotse records the situation, then the Agenda with its PDF.
        sign_in(b, system, "coaching", COACH, "Seiten für das Coaching", axe_source)
        assert b.heading() == "Meine Navigatoren"
        check_page(b, "coaching-navigatoren", axe_source)
        b.follow("Pirna, Stadt")
        check_page(b, "coaching-navigator", axe_source)
        b.choose("Meilenstein", "Situation vor Ort erfasst")
        b.fill("Notiz", "Bestandsaufnahme mit dem Hauptamt")
        b.press("Meilenstein erfassen")
        assert "Der Meilenstein ist erfasst" in b.status()
        b.choose("Meilenstein", "Digitale Agenda")
        b.press("Meilenstein erfassen")  # without its document
        assert "Für diesen Meilenstein geben Sie das Dokument an" in b.find(
            ".error-summary").text
        check_page(b, "coaching-navigator-fehler", axe_source)
        agenda = tmp_path / "Digitale Agenda Pirna.pdf"
        agenda.write_bytes(b"%PDF-1.4\n% Digitale Agenda der Stadt Pirna\n%%EOF\n")
        b.choose("Meilenstein", "Digitale Agenda")
        b.field("PDF hochladen").send_keys(str(agenda))
        b.press("Meilenstein erfassen")
        assert b.has_link("PDF herunterladen")
        check_page(b, "coaching-navigator-agenda", axe_source)
        b.press("Abmelden")

        # The office reads the Navigator's page, with the Agenda to download; then Lehmann
        # leaves: the office takes him out after a page that names his Navigators.
        sign_in(b, system, "buero", STAFF, "Seiten des Programmbüros", axe_source)
        b.follow("Coaching")
        b.follow("Karin Krause")
        assert b.heading() == "Karin Krause" and "Lotse Lehmann" in b.html
        assert "Digitale Agenda Pirna.pdf" in b.html and "/buero/coaching/dokumente/" in b.html
        check_page(b, "buero-coaching-navigator", axe_source)
        b.follow("Zurück zum Coaching")
        b.follow("Austragen: Lotse Lehmann")
        assert b.heading() == "Lotse Lehmann austragen?" and "Pirna, Stadt: Karin Krause" in b.html
        check_page(b, "buero-coaching-austragen", axe_source)
        b.press("Ja, austragen")
        assert "ist ausgetragen" in b.status() and "Lotse Lehmann, seit" not in b.html
        assert "noch niemand; es ist keine Lotsin und kein Lotse eingetragen" in b.html
        check_page(b, "buero-coaching-ausgetragen", axe_source)
        b.press("Abmelden")

        # The clerk finds Pirna's Agenda on the Navigator page, and that the Lotse left.
        sign_in(b, system, "portal", CONTACT, "Ihr Anmeldelink", axe_source)
        b.go("/portal/navigator/SN-DN")
        assert b.has_link("PDF herunterladen: Digitale Agenda geschrieben")
        assert "derzeit ohne Lotsin oder Lotse" in b.html
        check_page(b, "portal-navigator-agenda", axe_source)
        b.press("Abmelden")
    finally:
        b.close()

    # The Navigator heard of each step: named, paired, two milestones.
    def to_navigator():
        subjects = [str(m["Subject"]) for m in system.inbox.messages
                    if m["To"].addresses[0].addr_spec == NAVIGATOR]
        return subjects if len(subjects) >= 5 else None
    subjects = wait_for(to_navigator, timeout=60, message="the Navigator's mails")
    assert sorted(s.split(":")[0].split(" für ")[0] for s in subjects) == [
        "Ihr Coaching als Digital-Navigator", "Ihr Coaching als Digital-Navigator beginnt",
        "Meilenstein erreicht", "Meilenstein erreicht", "Sie sind Digital-Navigator"]
    assert any(s.endswith("Lotse Lehmann begleitet Pirna, Stadt nicht mehr") for s in subjects)
