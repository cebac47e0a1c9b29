"""Addresses with umlauts (issue 15): an umlaut domain travels as IDNA (punycode); a local part
beyond ASCII only where the mail server offers SMTPUTF8, and is refused at enrolment otherwise;
a mail that can never go fails at once instead of being retried."""
import email
import email.policy
import socket
import types
import uuid

import pytest
from aiosmtpd.controller import Controller
from marshmallow.experimental.context import Context

from services.common.errors import ValidationFailed
from services.common.schemas import ascii_domain, envelope_address, load, mail_smtputf8
from services.enrolment.schemas import EnrolIn
from services.notifications import delivery

UMLAUT_DOMAIN = "j.gross@bürgeramt-walldorf.example"
PUNYCODE = "xn--brgeramt-walldorf-22b.example"
UMLAUT_LOCAL = "jörg@bürgeramt-walldorf.example"
COURSE = {"title": "Basisseminar", "location": "Wiesloch", "provider_name": "Verwaltungsschule",
          "programme_code": "BW-DL", "programme_name": "Digitallotsen", "modules": []}


@pytest.fixture(autouse=True)
def no_smtputf8_from_outside(monkeypatch):
    monkeypatch.delenv("SMTP_SMTPUTF8", raising=False)


def enrol(address):
    return load(EnrolIn(), {"course_id": str(uuid.uuid4()), "participant": {
        "given_name": "Jörg", "family_name": "Groß", "email": address}}, "enrolment")


def notice(to_email, cc_email=None):
    return types.SimpleNamespace(id=uuid.uuid4(), template="course_reminder",
                                 to_name="Jörg Groß", to_email=to_email, cc_email=cc_email)


def message_to(to_email, cc_email=None):
    context = {"participant_name": "Jörg Groß", "course": COURSE, "programme_name": "P",
               "days": 3, "recipient_role": "participant", "to_name": "Jörg Groß",
               "office_name": "Ihr Programmbüro"}
    return delivery.build_message(notice(to_email, cc_email),
                                  ("Programmbüro", "noreply@lotsen.example"), context)


def utf8_message(raw: bytes):
    """Parse a message with UTF-8 headers (RFC 6532); the bytes parser would keep them raw."""
    return email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)


# --- the address forms ---------------------------------------------------------------------------

def test_an_umlaut_domain_is_written_in_idna_for_the_envelope():
    assert envelope_address(UMLAUT_DOMAIN) == f"j.gross@{PUNYCODE}"
    assert ascii_domain("BÜRGERAMT-WALLDORF.example") == PUNYCODE  # case folded first
    # IDNA 2008, as DENIC registers: "straße" is its own domain, not "strasse".
    assert ascii_domain("straße.example") == "xn--strae-oqa.example"
    assert envelope_address("teilnehmer1@example.org") == "teilnehmer1@example.org"
    # the local part is left as it is: it can only travel over SMTPUTF8
    assert envelope_address(UMLAUT_LOCAL) == f"jörg@{PUNYCODE}"


def test_a_mail_to_an_umlaut_domain_has_ascii_headers_that_read_back_correctly():
    mail = message_to(UMLAUT_DOMAIN, cc_email="hauptamt@rathaus-östringen.example")
    raw = bytes(mail)
    assert raw.isascii()  # no SMTPUTF8 needed, any server takes it
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    [to] = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Jörg Groß", f"j.gross@{PUNYCODE}")
    [cc] = parsed["Cc"].addresses
    assert cc.domain == ascii_domain("rathaus-östringen.example") != "rathaus-östringen.example"
    assert parsed["From"].addresses[0].display_name == "Programmbüro"


def test_a_domain_without_an_idna_form_is_refused_when_the_mail_is_built():
    with pytest.raises(delivery.PermanentFailure) as refused:
        message_to("j.gross@bü--x.example")
    assert "IDNA" in str(refused.value) and "bü--x" not in str(refused.value)


# --- enrolment -----------------------------------------------------------------------------------

def test_enrolment_accepts_an_umlaut_domain_and_refuses_one_without_idna_form():
    assert enrol(UMLAUT_DOMAIN)["participant"]["email"] == UMLAUT_DOMAIN
    with pytest.raises(ValidationFailed) as invalid:
        enrol("j.gross@bü--x.example")
    assert "IDNA" in " ".join(invalid.value.fields["participant.email"])


def test_enrolment_refuses_a_non_ascii_local_part_without_smtputf8_and_says_why():
    assert mail_smtputf8() is False  # the default
    with pytest.raises(ValidationFailed) as invalid:
        enrol(UMLAUT_LOCAL)
    assert list(invalid.value.fields) == ["participant.email"]
    [reason] = invalid.value.fields["participant.email"]
    assert "before the @" in reason and "SMTPUTF8" in reason


def test_enrolment_accepts_a_non_ascii_local_part_where_the_server_offers_smtputf8(monkeypatch):
    monkeypatch.setenv("SMTP_SMTPUTF8", "true")  # what MAIL.smtputf8 is expanded from
    assert enrol(UMLAUT_LOCAL)["participant"]["email"] == UMLAUT_LOCAL
    monkeypatch.delenv("SMTP_SMTPUTF8")
    with Context({"smtputf8": mail_smtputf8({"MAIL": {"smtputf8": True}})}):
        assert enrol(UMLAUT_LOCAL)["participant"]["email"] == UMLAUT_LOCAL
    with Context({"smtputf8": mail_smtputf8({"MAIL": {}})}):
        with pytest.raises(ValidationFailed):
            enrol(UMLAUT_LOCAL)


# --- transports ----------------------------------------------------------------------------------

class Server:
    def __init__(self):
        self.rcpt, self.options, self.contents = [], [], []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpt.append(address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.options.append(list(envelope.mail_options))
        self.contents.append(envelope.original_content or envelope.content)
        return "250 OK"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(request):
    handler = Server()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            enable_SMTPUTF8=getattr(request, "param", False))
    controller.start()
    transport = delivery.SmtpTransport("127.0.0.1", port)
    yield handler, transport
    transport.close()
    controller.stop()


def test_smtp_envelope_uses_punycode_for_an_umlaut_domain(server):
    handler, transport = server
    transport.send(1, message_to(UMLAUT_DOMAIN))
    assert handler.rcpt == [f"j.gross@{PUNYCODE}"]
    assert "SMTPUTF8" not in handler.options[0]


def test_a_non_ascii_local_part_fails_permanently_where_the_server_lacks_smtputf8(server):
    handler, transport = server
    with pytest.raises(delivery.PermanentFailure) as refused:
        transport.send(1, message_to(UMLAUT_LOCAL))
    assert "SMTPUTF8" in str(refused.value) and "jörg" not in str(refused.value)
    transport.send(2, message_to(UMLAUT_DOMAIN))  # the session is still good for the next
    assert handler.rcpt == [f"j.gross@{PUNYCODE}"]


@pytest.mark.parametrize("server", [True], indirect=True)
def test_a_non_ascii_local_part_goes_over_smtputf8_where_the_server_offers_it(server):
    handler, transport = server
    transport.send(1, message_to(UMLAUT_LOCAL))
    assert handler.rcpt == [f"jörg@{PUNYCODE}"]
    assert "SMTPUTF8" in handler.options[0]
    parsed = utf8_message(handler.contents[0])
    [to] = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Jörg Groß", UMLAUT_LOCAL)


def test_the_file_transport_writes_a_non_ascii_local_part_as_utf8(tmp_path):
    transport = delivery.FileTransport(tmp_path)
    transport.send("n1", message_to(UMLAUT_LOCAL))
    parsed = utf8_message((tmp_path / "n1.eml").read_bytes())
    assert parsed["To"].addresses[0].addr_spec == UMLAUT_LOCAL
