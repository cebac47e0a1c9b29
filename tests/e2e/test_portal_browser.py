"""The portal in a real browser (Debian's chromium through Debian's chromedriver, driven by
Selenium) against the whole system: every service in its own process, mail over SMTP to an
in-process server.

``test_the_clerks_whole_path`` walks what a clerk does, from asking for a sign-in link to
signing out; ``test_keyboard_only_and_accessibility`` does it with the keyboard alone and runs
axe-core (installed from the npm registry into .venv/node by scripts/ensure-browser, put into
the page by the test, never served by the gateway) and structural checks on every page. Both
save a screenshot of every page they see (``LOTSEN_SCREENSHOTS``, default var/screenshots).

(Selenium rather than Playwright: Playwright's sync API refuses to run where an asyncio loop
is running in the same OS thread, and under eventlet the SMTP server's loop is exactly that.)
"""
from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from services.common.clock import calendar_today
from services.provider_client import ProviderClient
from tests.conftest import ON_CI, REPO
from tests.integration.helpers import wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
AXE = REPO / ".venv" / "node" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = Path(os.environ.get("LOTSEN_SCREENSHOTS") or REPO / "var" / "screenshots")
TOWN = {"08226098": "wiesloch"}
CONTACT = "hauptamt@wiesloch.example"
LINK = re.compile(r"https?://\S+/portal/link/[A-Za-z0-9_-]+")


def _needed(what: str, present: bool):
    if not present:
        message = f"{what} is missing (scripts/ensure-browser installs it)"
        if ON_CI:
            pytest.fail(message)
        pytest.skip(message)


class Browser:
    """A headless chromium with the few moves these tests make, found the way a person finds
    them: fields by their label, buttons and links by their text."""

    def __init__(self, base: str, downloads: Path, shots: Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=de-DE"):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_script_timeout(60)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
            "behavior": "allow", "downloadPath": str(downloads)})
        self.base, self.downloads, self.shots, self.count = base, downloads, shots, 0
        if shots.exists():
            shutil.rmtree(shots)
        shots.mkdir(parents=True)

    def close(self):
        self.driver.quit()

    # --- looking -----------------------------------------------------------------------------

    def go(self, path_or_url: str):
        self.driver.get(path_or_url if path_or_url.startswith("http") else self.base + path_or_url)

    @property
    def url(self) -> str:
        return self.driver.current_url

    @property
    def html(self) -> str:
        return self.driver.page_source

    def find(self, css: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def heading(self) -> str:
        return self.find("h1").text

    def status(self) -> str:
        return self.find("[role=status]").text

    def _xpath(self, expression: str, text: str):
        from selenium.webdriver.common.by import By
        found = self.driver.find_elements(By.XPATH, expression.replace("$t", _literal(text)))
        assert found, f"nothing like {text!r} on {self.url}"
        return found[0]

    def field(self, label: str):
        """The form field whose label starts with ``label``."""
        element = self._xpath("//label[starts-with(normalize-space(.), $t)]", label)
        return self.find("#" + element.get_attribute("for"))

    def fill(self, label: str, value: str):
        field = self.field(label)
        field.clear()
        field.send_keys(value)

    def choose(self, label: str, option_text: str):
        from selenium.webdriver.support.ui import Select
        select = Select(self.field(label))
        select.select_by_visible_text(next(o.text for o in select.options
                                           if option_text in o.text))

    def _navigating(self, locate):
        """Click what ``locate`` finds, which leads to another page, and wait until it is there.

        Right after a page has loaded, chromedriver now and then refuses a click with "Node
        with given id does not belong to the document" (its cached node ids still belong to
        the page before). Nothing was clicked then, so the element is looked up afresh and
        clicked once more; any other error, or the same one twice, fails the test.

        The new page is recognised by a mark left on the old page's ``window``: every new
        document starts without it. (Waiting for the old ``<html>`` element to go stale met the
        same chromedriver error while the page was changing.)
        """
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait
        mark = secrets.token_hex(8)
        self.js("window.__pageBeforeClick = arguments[0]", mark)
        try:
            locate().click()
        except WebDriverException as error:
            if "does not belong to the document" not in str(error.msg):
                raise
            locate().click()

        def on_the_next_page(driver):
            try:
                return driver.execute_script("return window.__pageBeforeClick || null") != mark
            except WebDriverException:  # the old document is going away mid-call: ask again
                return False
        WebDriverWait(self.driver, 30).until(on_the_next_page)
        WebDriverWait(self.driver, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete")

    def press(self, button_text: str):
        self._navigating(lambda: self._xpath("//button[normalize-space(.)=$t]", button_text))

    def follow(self, link_text: str):
        self._navigating(lambda: self._xpath("//a[normalize-space(.)=$t]", link_text))

    def has_link(self, link_text: str) -> bool:
        from selenium.webdriver.common.by import By
        return bool(self.driver.find_elements(
            By.XPATH, f"//a[normalize-space(.)={_literal(link_text)}]"))

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def shot(self, name: str):
        """A screenshot of the whole page, not only what fits the window."""
        self.count += 1
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics["cssContentSize"]
        width = min(size["width"], self.js("return window.innerWidth"))
        image = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}})
        (self.shots / f"{self.count:02d}-{name}.png").write_bytes(
            base64.b64decode(image["data"]))

    # --- the keyboard ------------------------------------------------------------------------

    def keys(self, *keys):
        from selenium.webdriver.common.action_chains import ActionChains
        ActionChains(self.driver).send_keys(*keys).perform()

    def tab(self):
        from selenium.webdriver.common.keys import Keys
        self.keys(Keys.TAB)

    def enter(self):
        from selenium.webdriver.common.keys import Keys
        self.keys(Keys.ENTER)


def _literal(text: str) -> str:
    """``text`` as an XPath string literal."""
    if "'" not in text:
        return f"'{text}'"
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


@pytest.fixture
def portal_system(make_system, register_file):
    _needed("Debian's chromium", Path(CHROMIUM).exists())
    _needed("Debian's chromium-driver", Path(CHROMEDRIVER).exists())
    pytest.importorskip("selenium")
    system = make_system()
    setup = system.set_up_programme(register_file, TOWN, extra_seats=10)
    system.start()
    system.wait_ready()
    # A course that took place in the last days (attendance counts from a module's date on),
    # and one still to come.
    first = calendar_today() - timedelta(days=10)
    with ProviderClient(system.config["AMQP_URI"], setup["provider_token"], timeout=30) as p:
        past = p.create_course({
            "programme_code": "BW-DL", "title": "Basisseminar Digitallotsen",
            "location": "Wiesloch", "capacity": 22, "open": True,
            "modules": [{"number": n, "title": f"Modul {n}",
                         "date": (first + timedelta(days=n)).isoformat()} for n in range(1, 6)]})
        later = calendar_today() + timedelta(days=40)
        p.create_course({
            "programme_code": "BW-DL", "title": "Basisseminar Digitallotsen",
            "location": "Stuttgart", "capacity": 2, "open": True,
            "modules": [{"number": n, "title": f"Modul {n}",
                         "date": (later + timedelta(days=n)).isoformat()} for n in range(1, 4)]})
    return system, setup, past


@pytest.fixture
def open_browser(portal_system, tmp_path):
    made = []

    def make(name: str) -> Browser:
        downloads = tmp_path / f"downloads-{name}"
        downloads.mkdir()
        browser = Browser(portal_system[0].base, downloads, SHOTS / name)
        made.append(browser)
        return browser
    yield make
    for browser in made:
        browser.close()


def sign_in_link(system, count: int = 1) -> str:
    def links():
        found = [m for m in system.inbox.messages
                 if str(m["Subject"]).startswith("Ihr Anmeldelink")
                 and m["To"].addresses[0].addr_spec == CONTACT]
        return found[count - 1:]
    [mail, *_] = wait_for(links, timeout=60, message="the sign-in mail")
    return LINK.search(mail.get_body(("plain",)).get_content()).group(0)


def test_the_clerks_whole_path(portal_system, open_browser, tmp_path):
    system, setup, past = portal_system
    b = open_browser("clerk")

    # Ask for a link; the page says the same for any address.
    b.go("/portal")
    assert b.url.endswith("/portal/anmelden")
    b.shot("anmelden")
    b.fill("Ihre dienstliche E-Mail-Adresse", CONTACT)
    b.press("Anmeldelink anfordern")
    assert "15 Minuten und nur einmal" in b.status()
    b.shot("link-angefordert")

    # Read the link from the mail and sign in.
    b.go(sign_in_link(system))
    b.shot("link-bestaetigen")
    b.press("Jetzt anmelden")
    assert b.url.endswith("/portal/uebersicht")
    assert "Wiesloch" in b.heading() and "noch frei" in b.html  # guaranteed seat not used yet
    b.shot("uebersicht-leer")

    # Open courses, then enrol one participant (an error first: shown next to the field).
    b.follow("Offene Seminare")
    assert b.html.count("VWA Baden") == 2 and "Warteliste" in b.html
    b.shot("seminare")
    b.follow("Person anmelden: Basisseminar Digitallotsen, Wiesloch")
    b.fill("Vorname", "Jürgen")
    b.fill("Nachname", "Weiß")
    b.fill("Dienstliche E-Mail-Adresse", "j.weiss@wiesloch")
    b.press("Verbindlich anmelden")
    assert "gültige E-Mail-Adresse" in b.find("#fehler-email").text
    assert b.field("Vorname").get_attribute("value") == "Jürgen"  # input kept
    b.shot("anmeldung-fehler")
    b.fill("Dienstliche E-Mail-Adresse", "j.weiss@wiesloch.example")
    b.fill("Abteilung oder Amt", "Hauptamt")
    b.press("Verbindlich anmelden")
    assert b.heading() == "Anmeldung eingegangen" and "Platz im Seminar" in b.html
    wait_for(lambda: b.driver.refresh() or "Gefördert (garantierter Platz" in b.html,
             timeout=60, interval=0.5, message="the funding decision on the confirmation page")
    b.shot("anmeldung-bestaetigt")
    enrolled_id = b.url.split("/")[-1].split("?")[0]

    # Upload a CSV (Windows-1252, semicolons) with one bad row: reported before anything is
    # stored; then the good rows are confirmed.
    csv = tmp_path / "liste.csv"
    csv.write_bytes(("Vorname;Nachname;E-Mail;Abteilung\r\n"
                     "Anna;Groß;a.gross@wiesloch.example;Bauamt\r\n"
                     "Bernd;Kühn;kein-at-zeichen;Kämmerei\r\n"
                     "Clara;Öztürk;c.oeztuerk@wiesloch.example;Personalamt\r\n").encode("cp1252"))
    b.follow("Liste hochladen")
    b.choose("Seminar", "Wiesloch")
    b.field("CSV-Datei").send_keys(str(csv))
    b.shot("liste-hochladen")
    b.press("Vorschau anzeigen")
    [bad_row] = b.all("tr.bad")
    assert "Bernd Kühn" in bad_row.text and "gültige E-Mail-Adresse" in bad_row.text
    assert len(b.all("tr.good")) == 2 and "Noch ist nichts gespeichert" in b.html
    b.shot("liste-vorschau")
    b.press("2 Anmeldungen speichern")
    assert "2 Personen sind" in b.html
    b.shot("liste-gespeichert")

    # Cancel one, with a confirmation step.
    b.follow("Zur Übersicht")
    b.follow("Stornieren (Anna Groß)")
    assert b.heading() == "Anmeldung stornieren?"
    b.shot("stornieren")
    b.fill("Grund", "Stellenwechsel")
    b.press("Ja, stornieren")
    assert "storniert" in b.status()
    row = next(r for r in b.all("tbody tr") if "Anna Groß" in r.text)
    assert "Storniert" in row.text

    # The provider records attendance: the certificate can be downloaded as a PDF.
    with ProviderClient(system.config["AMQP_URI"], setup["provider_token"], timeout=60) as p:
        for module in range(1, 6):
            p.record_attendance(past["id"], module, [enrolled_id])
    wait_for(lambda: b.driver.refresh() or b.has_link("PDF herunterladen (Jürgen Weiß)"),
             timeout=90, interval=1, message="the certificate on the overview")
    b.shot("uebersicht")
    b._xpath("//a[normalize-space(.)=$t]", "PDF herunterladen (Jürgen Weiß)").click()
    pdf = wait_for(lambda: [p for p in b.downloads.glob("*.pdf")], timeout=30,
                   message="the downloaded PDF")[0]
    assert pdf.read_bytes().startswith(b"%PDF")

    # On a phone: the overview fits the screen (tables scroll inside their own box).
    b.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    b.go("/portal/uebersicht")
    assert b.js("return document.documentElement.scrollWidth <= window.innerWidth")
    b.shot("uebersicht-telefon")
    b.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # Sign out: the session is over, also for the cookie the browser held.
    b.go("/portal/uebersicht")
    cookies = b.driver.get_cookies()
    b.press("Abmelden")
    assert "abgemeldet" in b.status()
    b.shot("abgemeldet")
    b.driver.delete_all_cookies()
    for cookie in cookies:
        b.driver.add_cookie(cookie)
    b.go("/portal/uebersicht")
    assert "/portal/anmelden" in b.url

    system.settle()


# --- keyboard only, and an accessibility checker --------------------------------------------

FOCUS = """
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return {tag: el.tagName, text: (el.innerText || el.value || el.id || '').slice(0, 60),
          visible: (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2)
                   || style.boxShadow !== 'none'};
"""

STRUCTURE = """
  const problems = [];
  if (document.documentElement.lang !== 'de') problems.push('lang is not de');
  if (!document.title.trim()) problems.push('no title');
  if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    const label = el.id && document.querySelector(`label[for="${el.id}"]`);
    if (!label || !label.innerText.trim()) problems.push('no label: ' + (el.name || el.id));
  }
  for (const el of document.querySelectorAll('[aria-describedby]')) {
    for (const id of el.getAttribute('aria-describedby').split(' '))
      if (!document.getElementById(id)) problems.push('describedby missing: ' + id);
  }
  for (const el of document.querySelectorAll('script, link[href^="http"], img[src^="http"]'))
    problems.push('external or script: ' + el.outerHTML.slice(0, 80));
  return problems;
"""

AXE_RUN = """
  const done = arguments[arguments.length - 1];
  axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}})
    .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact,
                     nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))))
    .catch(e => done([{id: 'axe failed', impact: String(e)}]));
"""


def tab_to(b: Browser, predicate: str, limit: int = 40) -> list[dict]:
    """Press Tab until the focused element satisfies ``predicate`` (JS on ``el``); every
    element passed on the way must show its focus."""
    seen = []
    for _ in range(limit):
        b.tab()
        focus = b.js(FOCUS)
        seen.append(focus)
        assert focus["visible"], f"focus not visible on {focus}"
        if b.js(f"const el = document.activeElement; return Boolean({predicate});"):
            return seen
    raise AssertionError(f"never reached {predicate} with Tab: {seen}")


def check_page(b: Browser, name: str, axe_source: str):
    assert b.js(STRUCTURE) == [], name
    if not b.js("return typeof axe !== 'undefined'"):
        b.js(axe_source)
    assert b.driver.execute_async_script(AXE_RUN) == [], name
    b.shot(name)


def test_keyboard_only_and_accessibility(portal_system, open_browser):
    _needed("axe-core", AXE.exists())
    axe_source = AXE.read_text(encoding="utf-8")
    system, _, _ = portal_system
    b = open_browser("keyboard")

    # The checker finds what it should: a field without a label, put in for this check only.
    b.go("/portal/anmelden")
    b.js(axe_source)
    b.js("const i = document.createElement('input'); i.id = 'ohne-label';"
         "document.querySelector('main').appendChild(i);")
    assert "label" in [v["id"] for v in b.driver.execute_async_script(AXE_RUN)]
    assert any("no label" in p for p in b.js(STRUCTURE))

    b.go("/portal/anmelden")
    skip = tab_to(b, "el.classList.contains('skip')")
    assert skip[-1]["text"] == "Zum Inhalt springen"
    check_page(b, "anmelden", axe_source)
    tab_to(b, "el.id === 'feld-email'")
    b.shot("fokus-email")
    b.keys(CONTACT)
    b.enter()
    wait_for(lambda: b.url.endswith("/portal/anmelden?hinweis=link"), message="link requested")
    check_page(b, "link-angefordert", axe_source)

    b.go(sign_in_link(system))
    check_page(b, "link-bestaetigen", axe_source)
    tab_to(b, "el.tagName === 'BUTTON'")
    b.enter()
    wait_for(lambda: b.url.endswith("/portal/uebersicht"), message="signed in")
    check_page(b, "uebersicht", axe_source)

    # The skip link takes the keyboard past the navigation.
    b.go("/portal/uebersicht")
    tab_to(b, "el.classList.contains('skip')")
    b.enter()
    assert b.js("return document.activeElement.id") == "inhalt"

    # Enrol by keyboard: the course list, every field, the button, the error summary.
    b.go("/portal/kurse")
    check_page(b, "seminare", axe_source)
    tab_to(b, "el.innerText.startsWith('Person anmelden') && el.closest('main')")
    b.enter()
    wait_for(lambda: "/portal/anmeldung?kurs=" in b.url, message="the enrol form")
    check_page(b, "anmeldung", axe_source)
    tab_to(b, "el.id === 'feld-given_name'")
    b.keys("Anna")
    b.tab()
    b.keys("Groß")
    b.tab()
    b.keys("keine-adresse")  # wrong, to reach the error by keyboard
    tab_to(b, "el.tagName === 'BUTTON' && el.closest('main')")
    b.enter()
    wait_for(lambda: b.all("#fehler-email"), message="the error next to the field")
    check_page(b, "anmeldung-fehler", axe_source)
    tab_to(b, "el.getAttribute('href') === '#feld-email'")  # the summary leads to the field
    b.shot("fokus-fehlerliste")
    b.enter()
    assert b.js("return document.activeElement.id") == "feld-email"
    b.js("document.activeElement.select()")
    b.keys("a.gross@wiesloch.example")
    tab_to(b, "el.tagName === 'BUTTON' && el.closest('main')")
    b.enter()
    wait_for(lambda: "Anmeldung eingegangen" in b.html, message="the confirmation")
    check_page(b, "anmeldung-bestaetigt", axe_source)

    for path, name in (("/portal/hochladen", "liste-hochladen"),
                       ("/portal/kollegen", "kollegen"), ("/portal/uebersicht", "uebersicht-2")):
        b.go(path)
        check_page(b, name, axe_source)
    tab_to(b, "el.innerText.startsWith('Stornieren')", limit=60)
    b.enter()
    wait_for(lambda: "Anmeldung stornieren?" in b.html, message="the cancel confirmation")
    check_page(b, "stornieren", axe_source)
    tab_to(b, "el.tagName === 'BUTTON' && el.classList.contains('danger')")
    b.enter()
    wait_for(lambda: b.url.endswith("/portal/uebersicht?hinweis=storniert"), message="cancelled")

    # Signing out is a button in the header, reached by keyboard too.
    b.go("/portal/uebersicht")
    tab_to(b, "el.innerText === 'Abmelden'")
    b.enter()
    wait_for(lambda: b.url.endswith("/portal/anmelden?hinweis=abgemeldet"), message="signed out")
    check_page(b, "abgemeldet", axe_source)
    system.settle()
