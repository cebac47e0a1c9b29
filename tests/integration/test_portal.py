"""The municipality portal over real HTTP: the gateway, the enrolment and notifications services,
RabbitMQ, PostgreSQL, mail written to files. Forms are sent as a browser sends them (the
browser test in tests/e2e drives a real chromium)."""
from __future__ import annotations

import email
import email.policy
import html
import logging
import re
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, update

from services.enrolment import domain
from services.enrolment.models import Enrolment, PortalSession, PortalSignInLink
from services.enrolment.service import EnrolmentService
from services.gateway.service import GatewayService
from services.notifications.service import NotificationsService
from tests.integration.helpers import count_enrolments, gemeinden, seed, wait_for
from tests.integration.test_gateway import free_port

LINK = re.compile(r"https?://[^\s\"<>]+/portal/link/[A-Za-z0-9_-]+")


class Browserish:
    """A cookie jar and the forms of the last page, as a browser without JavaScript."""

    def __init__(self, base: str):
        self.base = base
        self.session = requests.Session()
        self.last = None

    def get(self, path: str, **kwargs):
        self.last = self.session.get(self.base + path, timeout=30, allow_redirects=False,
                                     **kwargs)
        return self.last

    def csrf(self) -> str:
        return re.search(r'name="csrf" value="([^"]+)"', self.last.text).group(1)

    def hidden(self, name: str) -> str:
        return html.unescape(re.search(rf'name="{name}" value="([^"]*)"', self.last.text)
                             .group(1))

    def post(self, path: str, data: dict, csrf: bool = True, **kwargs):
        data = dict(data)
        if csrf:
            data["csrf"] = self.csrf()
        self.last = self.session.post(self.base + path, data=data, timeout=60,
                                      allow_redirects=False, **kwargs)
        return self.last

    def follow(self):
        assert self.last.status_code == 303, (self.last.status_code, self.last.text[:500])
        return self.get(self.last.headers["Location"].removeprefix(self.base))


def mails_to(directory: Path, address: str) -> list:
    found = []
    for path in sorted(directory.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if message["To"].addresses[0].addr_spec == address:
            found.append(message)
    return found


def link_for(directory: Path, address: str, count: int = 1) -> str:
    mails = wait_for(lambda: [m for m in mails_to(directory, address)
                              if str(m["Subject"]).startswith("Ihr Anmeldelink")][count - 1:],
                     timeout=30, message=f"sign-in mail no. {count}")
    return LINK.search(mails[0].get_body(("plain",)).get_content()).group(0)


@pytest.fixture
def portal(container_factory, service_config, enrolment_db, register_file, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = dict(service_config, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
                  GATEWAY={"rpc_timeout_s": 10, "ready_timeout_s": 2},
                  PORTAL={"public_url": base, "session_hours": 8})
    seeded = seed(enrolment_db, register_file, capacity=3, providers=1)
    first, second = gemeinden(register_file, 2)
    for ags in (first, second):
        enrolment_db.run(lambda s, a=ags: domain.register_municipality(
            s, a, "Erika Muster", f"hauptamt@{a}.example"))
    for service in (EnrolmentService, NotificationsService, GatewayService):
        container_factory(service, config).start()
    return {"base": base, "a": first, "b": second, "course": str(seeded["courses"][0]),
            "contact": f"hauptamt@{first}.example", "mail": tmp_path / "mail",
            "db": enrolment_db}


def sign_in(portal, address: str, count: int = 1) -> Browserish:
    browser = Browserish(portal["base"])
    browser.get("/portal/anmelden")
    assert browser.post("/portal/anmelden", {"email": address}).status_code == 303
    link = link_for(portal["mail"], address, count)
    browser.get(link.removeprefix(portal["base"]))
    assert browser.post("/portal/link", {"token": browser.hidden("token")}).status_code == 303
    assert browser.follow().status_code == 200
    return browser


def test_sign_in_by_link_single_use_and_sign_out(portal, caplog):
    caplog.set_level(logging.INFO)
    browser = Browserish(portal["base"])
    page = browser.get("/portal/anmelden")
    assert page.status_code == 200 and '<html lang="de">' in page.text
    assert 'for="feld-email"' in page.text and "HttpOnly" in page.headers["Set-Cookie"]
    assert "'self'" in page.headers["Content-Security-Policy"]

    known = browser.post("/portal/anmelden", {"email": portal["contact"].upper()})
    answer_known = browser.follow().text
    stranger = Browserish(portal["base"])
    stranger.get("/portal/anmelden")
    unknown = stranger.post("/portal/anmelden", {"email": "niemand@nirgendwo.example"})
    answer_unknown = stranger.follow().text
    # The same answer whether or not the address may sign in.
    assert known.headers["Location"] == unknown.headers["Location"]
    def without_tokens(text):
        return re.sub(r'name="csrf" value="[^"]+"', "", text)
    assert without_tokens(answer_known) == without_tokens(answer_unknown)
    assert "15 Minuten" in answer_known

    link = link_for(portal["mail"], portal["contact"])
    assert mails_to(portal["mail"], "niemand@nirgendwo.example") == []
    path = link.removeprefix(portal["base"])
    browser.get(path)
    browser.get(path)  # a mail scanner opening the link uses nothing up
    token = browser.hidden("token")
    assert browser.post("/portal/link", {"token": token}, csrf=False).status_code == 403
    browser.get(path)
    signed_in = browser.post("/portal/link", {"token": token})
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/portal/uebersicht"
    cookie = signed_in.headers["Set-Cookie"]
    assert "lotsen_sitzung=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/portal" in cookie and "Max-Age=" in cookie
    overview = browser.follow()
    assert overview.status_code == 200 and "Erika Muster" in overview.text

    # The link works once.
    again = Browserish(portal["base"])
    again.get(path)
    refused = again.post("/portal/link", {"token": token})
    assert refused.status_code == 400 and "gilt nicht mehr" in refused.text

    # A cookie not made by the gateway, and one whose session ended, let nobody in.
    stolen = browser.session.cookies.get("lotsen_sitzung")
    forged = requests.get(portal["base"] + "/portal/uebersicht", allow_redirects=False,
                          cookies={"lotsen_sitzung": stolen[:-3] + "AAA"}, timeout=30)
    assert forged.status_code == 303 and forged.headers["Location"].startswith("/portal/anmelden")
    browser.get("/portal/uebersicht")
    assert browser.post("/portal/abmelden", {}, csrf=False).status_code == 403
    browser.get("/portal/uebersicht")
    out = browser.post("/portal/abmelden", {})
    assert out.status_code == 303 and "abgemeldet" in out.headers["Location"]
    replayed = requests.get(portal["base"] + "/portal/uebersicht", allow_redirects=False,
                            cookies={"lotsen_sitzung": stolen}, timeout=30)
    assert replayed.status_code == 303
    assert replayed.headers["Location"] == "/portal/anmelden?hinweis=abgelaufen"

    # No address and no link token in any log line.
    assert portal["contact"] not in caplog.text and token not in caplog.text
    assert "/portal/link/<token>" in caplog.text


def test_a_link_expires_after_15_minutes_and_requests_are_limited(portal):
    browser = Browserish(portal["base"])
    browser.get("/portal/anmelden")
    browser.post("/portal/anmelden", {"email": portal["contact"]})
    link = link_for(portal["mail"], portal["contact"])

    def age(session):
        made = session.scalars(select(PortalSignInLink)).one()
        assert made.expires_at - made.created_at == timedelta(minutes=15)
        session.execute(update(PortalSignInLink).values(
            expires_at=domain.now() - timedelta(seconds=1)))
    portal["db"].run(age)
    browser.get(link.removeprefix(portal["base"]))
    assert browser.post("/portal/link", {"token": browser.hidden("token")}).status_code == 400
    # At most three unused links at once: the form answers the same, no fourth mail.
    for _ in range(4):
        browser.get("/portal/anmelden")
        assert browser.post("/portal/anmelden", {"email": portal["contact"]}).status_code == 303
    link_for(portal["mail"], portal["contact"], count=4)
    assert portal["db"].run(lambda s: len(s.scalars(select(PortalSignInLink)).all())) == 4
    browser.get("/portal/anmelden")
    bad = browser.post("/portal/anmelden", {"email": "kein-at-zeichen"})
    assert bad.status_code == 422 and "gültige E-Mail-Adresse" in bad.text
    assert 'value="kein-at-zeichen"' in bad.text


def test_enrol_one_errors_in_german_next_to_the_field_then_seat_and_cancel(portal):
    browser = sign_in(portal, portal["contact"])
    browser.get(f"/portal/anmeldung?kurs={portal['course']}")
    form = {"course_id": portal["course"], "given_name": "", "family_name": "Weiß",
            "email": "j.weiss@", "department": "Hauptamt", "key": browser.hidden("key")}
    assert browser.post("/portal/anmeldung", form, csrf=False).status_code == 403
    assert count_enrolments(portal["db"]) == 0
    browser.get(f"/portal/anmeldung?kurs={portal['course']}")
    refused = browser.post("/portal/anmeldung", form)
    assert refused.status_code == 422
    text = refused.text
    assert 'id="fehler-given_name"' in text and "Bitte ausfüllen." in text
    assert 'id="fehler-email"' in text and "gültige E-Mail-Adresse" in text
    assert 'aria-describedby="fehler-given_name"' in text and 'aria-invalid="true"' in text
    assert 'value="Weiß"' in text and 'value="j.weiss@"' in text and 'value="Hauptamt"' in text
    assert count_enrolments(portal["db"]) == 0

    form.update(given_name="Jürgen", email="j.weiss@leimen.example", key=browser.hidden("key"))
    created = browser.post("/portal/anmeldung", form)
    location = created.headers["Location"]
    confirmation = browser.follow()
    assert "Anmeldung eingegangen" in confirmation.text and "Platz im Seminar" in confirmation.text
    # The same form sent twice (a double click, a reload) enrols once.
    browser.get("/portal/uebersicht")
    assert browser.post("/portal/anmeldung", form).headers["Location"] == location
    assert count_enrolments(portal["db"]) == 1
    # Someone already enrolled: said next to the e-mail field.
    browser.get("/portal/anmeldung")
    twice = browser.post("/portal/anmeldung", dict(form, key=browser.hidden("key")))
    assert twice.status_code == 422 and "bereits angemeldet" in twice.text

    enrolment_id = location.split("/")[-1].split("?")[0]
    page = browser.get(f"/portal/anmeldung/{enrolment_id}/stornieren")
    assert "Anmeldung stornieren?" in page.text and "Jürgen Weiß" in page.text
    assert count_enrolments(portal["db"], status="confirmed") == 1  # asking changes nothing
    done = browser.post(f"/portal/anmeldung/{enrolment_id}/stornieren", {"reason": "krank"})
    assert done.headers["Location"] == "/portal/uebersicht?hinweis=storniert"
    assert "Storniert" in browser.follow().text
    assert count_enrolments(portal["db"], status="cancelled") == 1

    # Another municipality's enrolment is not there for this one.
    other = sign_in(portal, f"hauptamt@{portal['b']}.example")
    assert other.get(f"/portal/anmeldung/{enrolment_id}").status_code == 404


def test_upload_preview_reports_each_bad_row_and_stores_only_on_confirm(portal):
    browser = sign_in(portal, portal["contact"])
    browser.get("/portal/hochladen")
    csv = ("Vorname;Nachname;E-Mail;Abteilung\r\n"
           "Jörg;Groß;j.gross@leimen.example;Bauamt\r\n"
           "Änne;Müller;keine-adresse;Hauptamt\r\n"
           "\r\n"
           "Ute;Weiß;u.weiss@leimen.example;\r\n").encode("cp1252")
    preview = browser.post("/portal/hochladen", {"course_id": portal["course"]},
                           files={"datei": ("liste.csv", csv, "text/csv")})
    assert preview.status_code == 200, preview.text[:2000]
    rows = re.findall(r'<tr class="(good|bad)">\s*<th scope="row">(\d+)</th>', preview.text)
    assert rows == [("good", "2"), ("bad", "3"), ("good", "5")]
    assert "Änne Müller" in preview.text and "Jörg Groß" in preview.text
    assert "gültige E-Mail-Adresse" in preview.text and "2 Anmeldungen speichern" in preview.text
    assert count_enrolments(portal["db"]) == 0  # nothing stored before the confirmation

    data = browser.hidden("daten")
    tampered = browser.post("/portal/hochladen/speichern", {"daten": data[:-2] + "xx"})
    assert tampered.status_code == 400 and count_enrolments(portal["db"]) == 0
    browser.get("/portal/uebersicht")
    stored = browser.post("/portal/hochladen/speichern", {"daten": data})
    assert stored.status_code == 200 and "2 Personen sind" in stored.text
    assert count_enrolments(portal["db"]) == 2
    # Sent again (reload): the same enrolments, nothing twice.
    browser.get("/portal/uebersicht")
    browser.post("/portal/hochladen/speichern", {"daten": data})
    assert count_enrolments(portal["db"]) == 2

    browser.get("/portal/hochladen")
    no_header = browser.post("/portal/hochladen", {"course_id": portal["course"]},
                             files={"datei": ("x.csv", b"a,b\n1,2\n", "text/csv")})
    assert no_header.status_code == 422 and "es fehlt: Vorname, Nachname, E-Mail" in no_header.text
    assert f'<option value="{portal["course"]}" selected>' in no_header.text  # input kept


def test_the_contact_invites_and_removes_a_colleague(portal):
    contact = sign_in(portal, portal["contact"])
    contact.get("/portal/kollegen")
    invited = contact.post("/portal/kollegen", {"name": "Max Kollege",
                                                "email": "m.kollege@leimen.example"})
    assert invited.headers["Location"] == "/portal/kollegen?hinweis=eingeladen"
    assert "Max Kollege" in contact.follow().text
    again = contact.post("/portal/kollegen", {"name": "Max", "email": "M.Kollege@leimen.example"})
    assert again.status_code == 422 and "bereits Zugang" in again.text
    invitation = wait_for(lambda: mails_to(portal["mail"], "m.kollege@leimen.example"),
                          timeout=30, message="invitation mail")
    assert "Einladung" in str(invitation[0]["Subject"])

    colleague = sign_in(portal, "m.kollege@leimen.example")
    page = colleague.get("/portal/kollegen")
    assert page.status_code == 200 and 'action="/portal/kollegen"' not in page.text
    forbidden = colleague.post("/portal/kollegen", {"name": "X", "email": "x@leimen.example"})
    assert forbidden.status_code == 403
    assert colleague.get("/portal/uebersicht").status_code == 200

    colleague_id = re.search(r"/portal/kollegen/([0-9a-f-]+)/entfernen",
                             contact.get("/portal/kollegen").text).group(1)
    contact.get(f"/portal/kollegen/{colleague_id}/entfernen")
    removed = contact.post(f"/portal/kollegen/{colleague_id}/entfernen", {})
    assert removed.headers["Location"] == "/portal/kollegen?hinweis=entfernt"
    # The colleague's session ended with the access; a new link is not sent.
    assert colleague.get("/portal/uebersicht").status_code == 303
    ended = portal["db"].run(lambda s: [x.ended_at for x in s.scalars(select(PortalSession))])
    assert sum(1 for e in ended if e is not None) == 1
    before = len(mails_to(portal["mail"], "m.kollege@leimen.example"))
    fresh = Browserish(portal["base"])
    fresh.get("/portal/anmelden")
    fresh.post("/portal/anmelden", {"email": "m.kollege@leimen.example"})
    contact.get("/portal/uebersicht")  # a round trip later, still no new mail
    assert len(mails_to(portal["mail"], "m.kollege@leimen.example")) == before
    assert portal["db"].run(lambda s: s.scalar(select(Enrolment.id))) is None
