"""The portal's pieces that need no broker: reading uploaded CSV files as German offices export
them, signed cookies and form tokens, errors said in German, the sign-in rules on SQLite."""
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from services.common.errors import AuthenticationFailed, Conflict, PermissionDenied
from services.enrolment import domain, portal
from services.enrolment.models import (
    Body, InboxRecord, OutboxMessage, PortalSession, PortalSignInLink)
from services.gateway import pages, portal_auth, upload
from tests.sqlite_support import migrated_sqlite

HEADER = "Vorname;Nachname;E-Mail;Abteilung"


def test_semicolon_and_windows_1252_as_excel_saves_it():
    raw = (HEADER + "\r\nJörg;Groß;j.gross@x.example;Straßenbau\r\n").encode("cp1252")
    [row] = upload.parse(raw)
    assert row.line == 2 and row.problems == {}
    assert row.values == {"given_name": "Jörg", "family_name": "Groß",
                          "email": "j.gross@x.example", "department": "Straßenbau"}


def test_comma_utf8_with_bom_quotes_and_header_spelling():
    raw = ('\ufeff"Vorname","Nach-Name","E-Mail-Adresse"\n'
           '"Anna, Maria",Müller,a.m@x.example\n').encode("utf-8")
    [row] = upload.parse(raw)
    assert row.values == {"given_name": "Anna, Maria", "family_name": "Müller",
                          "email": "a.m@x.example"}
    assert upload.enrolment_row(row, "c", "k")["participant"]["department"] is None


def test_excel_sep_line_tabs_empty_lines_and_line_numbers():
    raw = b"sep=;\nVorname;Nachname;E-Mail\n\nA;B;a@x.example\n;;\nC;D;c@x.example;zu;viel\n"
    rows = upload.parse(raw)
    assert [r.line for r in rows] == [4, 6]
    assert list(rows[1].problems) == ["_row"]
    assert "mehr Spalten" in rows[1].problems["_row"] and rows[0].problems == {}
    [tabbed] = upload.parse(b"Vorname\tNachname\tE-Mail\nA\tB\ta@x.example\n")
    assert tabbed.values["email"] == "a@x.example"


@pytest.mark.parametrize("raw, says", [
    (b"", "leer"),
    (b"Vorname;Nachname\nA;B\n", "es fehlt: E-Mail"),
    (b"name email\n", "keine Spalten"),
    (HEADER.encode() + b"\n", "nur die Kopfzeile"),
    (b"PK\x03\x04\x00\x00binary", "Binärdaten"),
    ((HEADER + "\n" + "A;B;a@x.example;\n" * 501).encode(), "mehr als 500"),
])
def test_files_that_cannot_be_read_say_why_in_german(raw, says):
    with pytest.raises(upload.UploadProblem, match=says):
        upload.parse(raw)


def test_cookies_and_form_tokens_are_bound_to_their_session_and_key():
    key, other = portal_auth.portal_key(b"k" * 32), portal_auth.portal_key(b"o" * 32)
    cookie = portal_auth.session_cookie(key, "session-id-1234567890")
    assert portal_auth.session_id_from(key, cookie) == "session-id-1234567890"
    assert portal_auth.session_id_from(other, cookie) is None
    assert portal_auth.session_id_from(key, cookie[:-1] + "x") is None
    assert portal_auth.session_id_from(key, "no-mac") is None
    token = portal_auth.csrf_token(key, "session-a")
    assert portal_auth.csrf_valid(key, "session-a", token)
    assert not portal_auth.csrf_valid(key, "session-b", token)
    assert not portal_auth.csrf_valid(key, "session-a", None)
    data = portal_auth.sign_data(key, "session-a", {"rows": [{"ä": 1}]})
    assert portal_auth.signed_data(key, "session-a", data) == {"rows": [{"ä": 1}]}
    assert portal_auth.signed_data(key, "session-b", data) is None
    assert portal_auth.signed_data(key, "session-a", "x" + data) is None


def test_service_errors_become_german_sentences_next_to_their_field():
    errors = pages.field_errors({"participant.email": ["Not a valid email address."],
                                 "participant.given_name": ["Length must be between 1 and 100."],
                                 "participant.family_name": ["Length must be between 1 and 100."],
                                 "course_id": ["course is closed"]},
                                {"given_name": "", "family_name": "x" * 101})
    assert errors == {"email": pages.german("Not a valid email address."),
                      "given_name": "Bitte ausfüllen.", "family_name": "Höchstens 100 Zeichen.",
                      "course_id": "Dieses Seminar nimmt keine Anmeldungen an."}
    assert "gültige E-Mail-Adresse" in errors["email"]
    assert pages.field_errors({"participant.email": ["already enrolled in this programme"]}) == {
        "email": "Diese Person ist in diesem Programm bereits angemeldet."}
    assert pages.german("something new") == "Diese Angabe ist ungültig."
    assert pages.status_text({"status": "waitlisted", "waitlist_position": 3}) == \
        "Warteliste, Platz 3"
    assert pages.funding_text({"status": "granted", "kind": "guaranteed"}).startswith("Gefördert")
    assert pages.funding_text({"status": "pending"}) == "Wird geprüft"
    assert pages.funding_text({"status": "none", "kind": None}).startswith("Keine Förderung")


# --- the rules of signing in, on the enrolment service's own database (SQLite) ---------------

@pytest.fixture
def handle(tmp_path):
    handle = migrated_sqlite(tmp_path, "enrolment", OutboxMessage, InboxRecord)

    def setup(session):
        for ags, name in (("08226098", "Wiesloch"), ("08226095", "Walldorf")):
            session.add(Body(ags=ags, name=name, kind="gemeinde", designation="Stadt",
                             land="08"))
        session.flush()
        domain.register_municipality(session, "08226098", "Erika Muster", "E.Muster@x.example")
        domain.register_municipality(session, "08226095", "Erika Muster", "e.muster@x.example")
    handle.run(setup)
    yield handle
    handle.dispose()


def _links(handle):
    def read(session):
        rows = session.scalars(select(OutboxMessage).where(
            OutboxMessage.event_type == "sign_in_link_requested")).all()
        return [r.envelope["payload"] for r in rows]
    return handle.run(read)


def test_one_link_per_body_the_address_serves_and_nothing_for_strangers(handle):
    assert handle.run(portal.request_sign_in, "nobody@x.example", "http://gw/portal/link/") == 0
    assert handle.run(portal.request_sign_in, "e.muster@x.example", "http://gw/portal/link/") == 2
    assert sorted(p["ags"] for p in _links(handle)) == ["08226095", "08226098"]
    assert all(p["link"].startswith("http://gw/portal/link/") for p in _links(handle))
    # Only hashes are stored: the token in the mail is nowhere in the database.
    token = _links(handle)[0]["link"].rsplit("/", 1)[1]
    stored = handle.run(lambda s: s.scalars(select(PortalSignInLink.token_hash)).all())
    assert token not in stored and domain.hash_secret(token) in stored


def test_a_link_signs_in_once_and_a_session_ends_at_sign_out(handle):
    handle.run(portal.request_sign_in, "e.muster@x.example", "http://gw/portal/link/")
    token = next(p for p in _links(handle) if p["ags"] == "08226098")["link"].rsplit("/", 1)[1]
    person = handle.run(portal.sign_in, token, 8)
    assert (person["ags"], person["role"], person["name"]) == ("08226098", "contact",
                                                               "Erika Muster")
    with pytest.raises(AuthenticationFailed):
        handle.run(portal.sign_in, token, 8)
    session_id = person["session_id"]
    assert handle.run(portal.current, session_id)["municipality"] == "Wiesloch"
    handle.run(portal.sign_out, session_id)
    with pytest.raises(AuthenticationFailed):
        handle.run(portal.current, session_id)


def test_expired_links_and_sessions_let_nobody_in(handle):
    handle.run(portal.request_sign_in, "e.muster@x.example", "http://gw/portal/link/")
    first, second = [p["link"].rsplit("/", 1)[1] for p in _links(handle)]
    handle.run(lambda s: s.execute(update(PortalSignInLink).where(
        PortalSignInLink.token_hash == domain.hash_secret(first)).values(
        expires_at=domain.now() - timedelta(seconds=1))))
    with pytest.raises(AuthenticationFailed):
        handle.run(portal.sign_in, first, 8)
    person = handle.run(portal.sign_in, second, 8)
    handle.run(lambda s: s.execute(update(PortalSession).values(
        expires_at=domain.now() - timedelta(seconds=1))))
    with pytest.raises(AuthenticationFailed):
        handle.run(portal.current, person["session_id"])


def test_only_the_contact_invites_and_a_removed_colleague_is_out_at_once(handle):
    handle.run(portal.request_sign_in, "e.muster@x.example", "http://gw/portal/link/")
    token = next(p for p in _links(handle) if p["ags"] == "08226098")["link"].rsplit("/", 1)[1]
    contact = handle.run(portal.sign_in, token, 8)["session_id"]
    invited = handle.run(portal.invite_colleague, "08226098", contact, "Max", "max@x.example",
                         "http://gw/portal/anmelden")
    with pytest.raises(Conflict):
        handle.run(portal.invite_colleague, "08226098", contact, "Max", "max@x.example",
                   "http://gw/portal/anmelden")
    with pytest.raises(AuthenticationFailed):  # the session is for another body
        handle.run(portal.invite_colleague, "08226095", contact, "Y", "y@x.example",
                   "http://gw/portal/anmelden")
    handle.run(portal.request_sign_in, "max@x.example", "http://gw/portal/link/")
    token = next(p for p in _links(handle) if p["email"] == "max@x.example")["link"]
    colleague = handle.run(portal.sign_in, token.rsplit("/", 1)[1], 8)
    assert colleague["role"] == "colleague"
    with pytest.raises(PermissionDenied):
        handle.run(portal.invite_colleague, "08226098", colleague["session_id"], "Z",
                   "z@x.example", "http://gw/portal/anmelden")
    handle.run(portal.remove_colleague, "08226098", contact, invited["id"])
    with pytest.raises(AuthenticationFailed):
        handle.run(portal.current, colleague["session_id"])
    assert handle.run(portal.request_sign_in, "max@x.example", "http://gw/portal/link/") == 0


def test_old_links_and_sessions_are_deleted_when_links_are_asked_for(handle):
    handle.run(portal.request_sign_in, "e.muster@x.example", "http://gw/portal/link/")
    token = _links(handle)[0]["link"].rsplit("/", 1)[1]
    session_id = handle.run(portal.sign_in, token, 8)["session_id"]
    handle.run(portal.sign_out, session_id)
    long_ago = domain.now() - timedelta(days=31)
    handle.run(lambda s: (s.execute(update(PortalSignInLink).values(expires_at=long_ago)),
                          s.execute(update(PortalSession).values(ended_at=long_ago))))
    handle.run(portal.request_sign_in, "nobody@x.example", "http://gw/portal/link/")
    assert handle.run(lambda s: (s.scalars(select(PortalSignInLink)).all(),
                                 s.scalars(select(PortalSession)).all())) == ([], [])
