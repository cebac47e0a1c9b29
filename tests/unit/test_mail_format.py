"""The mails notifications writes itself read, to a mail reader, exactly as the ones the
``email`` package builds: same headers (names, IDNA domains, UTF-8 where SMTPUTF8 is used), the
plain text with its HTML alternative, the PDF of a certificate. The reference below is how
``delivery.build_message`` built them with ``email.message.EmailMessage`` before."""
import email
import email.policy
import types
import uuid
from datetime import date, timedelta

import pytest

from services.common.schemas import ascii_domain
from services.notifications import delivery

COURSE = {"title": "Basisseminar „Digitale Verwaltung“ für Kommunen mit langem Titel",
          "location": "Wiesloch", "provider_name": "Verwaltungsschule",
          "programme_code": "BW-DL", "programme_name": "Kommunale Digitallotsen Baden-Württemberg",
          "modules": [{"number": n, "title": "Prozesse & <Pläne>   ",
                       "date": (date(2027, 2, 1) + timedelta(days=7 * n)).isoformat()}
                      for n in range(1, 4)]}
SENDER = ("Programmbüro Kommunale Digitallotsen", "noreply@lotsen.example")
TEMPLATES = ["body_reminded", "coaching_paired", "coaching_unpaired", "milestone_overdue", "navigator_named",
             "milestone_reached", "sign_in_link", "office_sign_in_link", "coach_sign_in_link",
             "colleague_invited",
             "enrolment_confirmed", "enrolment_waitlisted", "enrolment_promoted",
             "enrolment_cancelled", "course_cancelled", "funding_granted", "funding_waiting",
             "funding_released", "course_reminder", "certificate_issued", "certificate_revoked"]


def reference(notice, sender, context, attachment=None):
    """The message as the ``email`` package (default policy) builds it."""
    from email.message import EmailMessage
    from email.utils import formatdate
    subject, text, html = delivery.render(notice.template, context)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = delivery.header_address(*sender)
    message["To"] = delivery.header_address(notice.to_name, notice.to_email)
    if notice.cc_email:
        message["Cc"] = delivery.header_address(None, notice.cc_email)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = f"<{notice.id}@notices.lotsen>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(f"<!doctype html><html lang='de'><body style='font-family:Georgia,"
                            f"serif;max-width:40em'>{html}</body></html>", subtype="html")
    if attachment:
        message.add_attachment(attachment[1], maintype="application", subtype="pdf",
                               filename=attachment[0])
    return message


def read(raw: bytes):
    """As a reader parses it (UTF-8 headers too, RFC 6532)."""
    if raw.isascii():
        return email.message_from_bytes(raw, policy=email.policy.default)
    return email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)


def what_a_reader_sees(message) -> dict:
    def addresses(name):
        header = message[name]
        return None if header is None else [(a.display_name, a.addr_spec)
                                            for a in header.addresses]
    parts = []
    for part in message.walk():
        if part.is_multipart():
            parts.append(("multipart", part.get_content_subtype()))
        else:
            parts.append((part.get_content_type(), part.get_filename(), part.get_content()))
    return {"subject": str(message["Subject"]), "from": addresses("From"),
            "to": addresses("To"), "cc": addresses("Cc"), "message-id": message["Message-ID"],
            "auto-submitted": message["Auto-Submitted"], "date": bool(message["Date"]),
            "mime": message["MIME-Version"], "parts": parts, "defects": [
                type(d).__name__ for p in message.walk() for d in p.defects]}


def notice(template, to_name, to_email, cc_email=None, certificate_number=None):
    return types.SimpleNamespace(id=uuid.uuid4(), template=template, to_name=to_name,
                                 to_email=to_email, cc_email=cc_email,
                                 certificate_number=certificate_number)


def context(role, to_name):
    return {"recipient_role": role, "to_name": to_name, "participant_name": "Jürgen Weiß",
            "municipality": "Wiesloch, Stadt", "course": COURSE, "office_name": "Programmbüro",
            "programme_name": COURSE["programme_name"], "waitlist_position": 3,
            "cancelled_by": "Ihre Kommune", "reason": "Dozent = erkrankt", "kind": "pool",
            "amount_cents": 50000, "amount": "500,00 €", "converted": False, "days": 5,
            "number": "BW-DL-2027-000001", "verification_url": "https://x.example/verify/A=B",
            "reserve_until": "2027-06-30", "link": "https://x.example/portal/link/abc",
            "valid_until": "14:15", "invited_by": "Das Programmbüro",
            "portal_url": "https://x.example/portal", "navigator_name": "Karin Krause",
            "coach_name": "Lotse Lehmann", "coach_email": "lehmann@ssg.example",
            "started_on": "2027-01-11", "title": "Digitale Agenda", "due_on": "2027-05-03",
            "replaces": True, "reached_on": "2027-03-01", "with_document": True,
            "continues": True, "paired_on": "2027-04-06"}


def same(n, sender, ctx, attachment=None):
    ours = delivery.build_message(n, sender, ctx, attachment)
    theirs = reference(n, sender, ctx, attachment)
    utf8 = ours.smtputf8
    raw_theirs = theirs.as_bytes(policy=theirs.policy.clone(utf8=True) if utf8 else None)
    seen = what_a_reader_sees(read(bytes(ours)))
    assert seen == what_a_reader_sees(read(raw_theirs))
    assert seen["defects"] == []
    return ours, seen


NAMES = ["Jürgen Weiß", "Hauptamt Wiesloch", "Wiesloch, Stadt", 'Dr. "Jo" O\'Neil',
         "Ünal  Çelik-Öztürk", "Back\\slash", "Tab\there", "Groß, Jörg (Bürgeramt)"]
LONG = "Ünal  Çelik-Öztürk von und zu Großsachsenheim-Überlingen am See und noch länger"


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("role", ["participant", "municipality"])
def test_every_template_reads_the_same(template, role):
    for name in NAMES:
        same(notice(template, name, "teilnehmer1@gemeinde.example",
                    cc_email="hauptamt@wiesloch.example" if role == "municipality" else None),
             SENDER, context(role, name))


def test_umlaut_domains_in_idna_and_ascii_bytes():
    ours, seen = same(notice("course_reminder", "Jörg Groß", "j.gross@bürgeramt-walldorf.example",
                             cc_email="hauptamt@rathaus-östringen.example"),
                      SENDER, context("participant", "Jörg Groß"))
    assert bytes(ours).isascii() and not ours.smtputf8
    assert seen["to"] == [("Jörg Groß", "j.gross@xn--brgeramt-walldorf-22b.example")]
    assert ours.recipients == ("j.gross@xn--brgeramt-walldorf-22b.example",
                               f"hauptamt@{ascii_domain('rathaus-östringen.example')}")
    assert ours.sender == "noreply@lotsen.example"
    assert all(len(line) <= 78 for line in bytes(ours).split(b"\n\n", 1)[0].split(b"\n"))


def test_a_local_part_beyond_ascii_gets_utf8_headers_and_needs_smtputf8():
    ours, seen = same(notice("course_reminder", "Jörg, Groß", "jörg@bürgeramt-walldorf.example"),
                      SENDER, context("participant", "Jörg Groß"))
    assert ours.smtputf8 and not bytes(ours).isascii()
    assert "To: \"Jörg, Groß\" <jörg@bürgeramt-walldorf.example>".encode() in bytes(ours)
    assert ours.recipients == ("jörg@xn--brgeramt-walldorf-22b.example",)


def test_a_certificate_has_its_pdf_attached():
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
    ours, seen = same(notice("certificate_issued", "Jürgen Weiß", "jw@example.org",
                             cc_email="hauptamt@wiesloch.example",
                             certificate_number="BW-DL-2027-000001"),
                      SENDER, context("participant", "Jürgen Weiß"),
                      ("BW-DL-2027-000001.pdf", pdf))
    assert [p[:2] for p in seen["parts"]] == [
        ("multipart", "mixed"), ("multipart", "alternative"), ("text/plain", None),
        ("text/html", None), ("application/pdf", "BW-DL-2027-000001.pdf")]
    assert seen["parts"][-1][2] == pdf
    assert ours.recipients == ("jw@example.org", "hauptamt@wiesloch.example")
    same(notice("certificate_issued", "J", "jw@example.org"), SENDER,
         context("participant", "J"), ("Zertifikat Jürgen.pdf", pdf))  # RFC 2231 name


def test_a_line_break_in_a_name_or_address_fails_at_once_and_adds_no_header():
    for name, address in (("Eve\r\nBcc: all@example.org", "e@example.org"),
                          ("Eve", "e\r\nBcc: x@example.org")):
        with pytest.raises(delivery.PermanentFailure) as refused:
            delivery.build_message(notice("course_reminder", name, address), SENDER,
                                   context("participant", "Eve"))
        assert "malformed" in str(refused.value) and "Eve" not in str(refused.value)
        with pytest.raises(delivery.PermanentFailure):  # as the email package refuses it
            reference(notice("course_reminder", name, address), SENDER,
                      context("participant", "Eve"))


def test_a_name_that_looks_encoded_stays_as_it_is():
    # The email package writes it raw, so a reader decodes it into "Fake"; here it is encoded.
    ours = delivery.build_message(notice("course_reminder", "=?utf-8?q?Fake?=", "e@example.org"),
                                  SENDER, context("participant", "x"))
    assert what_a_reader_sees(read(bytes(ours)))["to"] == [("=?utf-8?q?Fake?=", "e@example.org")]


def test_a_long_name_reads_back_exactly():
    """The email package splits a long name between encoded words in the middle of a word,
    where Python's reader puts a space ("Großsachse nheim"); here each run of words beyond
    ASCII is one encoded word, so both Python's reader and RFC 2047's rule read it right."""
    from email.header import decode_header, make_header
    ours = delivery.build_message(notice("course_reminder", LONG, "e@example.org"), SENDER,
                                  context("participant", "x"))
    head = bytes(ours).decode().split("\n\n", 1)[0].replace("\n ", " ")
    [to] = [line[len("To: "):] for line in head.split("\n") if line.startswith("To: ")]
    assert str(make_header(decode_header(to))) == f"{LONG} <e@example.org>"
    assert what_a_reader_sees(read(bytes(ours)))["to"] == [
        (" ".join(LONG.split()), "e@example.org")]  # Python's reader folds the double space
