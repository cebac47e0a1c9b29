"""Addresses with umlauts (issue 15) through the real services and a real SMTP server (aiosmtpd):
an umlaut domain arrives (RCPT TO in punycode, a readable To header), a local part beyond ASCII
arrives where the server offers SMTPUTF8 and is refused at enrolment where it does not, and a
mail that can never go is failed after one attempt."""
import email
import email.policy
import socket
import uuid
from datetime import date

import pytest
from aiosmtpd.controller import Controller
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import select

from services.common.errors import ValidationFailed
from services.common.events import build_event
from services.enrolment import domain as enrolment_domain
from services.enrolment.service import EnrolmentService
from services.funding import domain as funding_domain
from services.notifications.models import Notice
from services.notifications.service import NotificationsService
from tests.integration.helpers import (
    SignedRpc,
    gemeinden,
    producer_dispatcher,
    seed,
    wait_for,
)

UMLAUT_DOMAIN = "j.gross@bürgeramt-walldorf.example"
UMLAUT_LOCAL = "jörg@bürgeramt-walldorf.example"
PUNYCODE = "xn--brgeramt-walldorf-22b.example"
CONTACT = "hauptamt@rathaus-östringen.example"
CONTACT_PUNYCODE = "hauptamt@xn--rathaus-stringen-twb.example"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notifications_db(config):
    from services.common.db import open_database
    from services.notifications.models import InboxRecord, OutboxMessage
    return open_database(config, "notifications", OutboxMessage, InboxRecord)


class Server:
    """Keeps each accepted mail with its envelope; optionally refuses an address (550)."""

    def __init__(self):
        self.mails = []  # (MAIL FROM options, RCPT TO addresses, parsed message)
        self.refuse = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        # UTF-8 headers (SMTPUTF8) read as text; the bytes parser would leave them undecoded
        message = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
        self.mails.append((list(envelope.mail_options), list(envelope.rcpt_tos), message, raw))
        return "250 Message accepted"

    def to(self, rcpt):
        return [m for m in self.mails if rcpt in m[1]]


@pytest.fixture
def smtp_server(request):
    server = Server()
    controller = Controller(server, hostname="127.0.0.1", port=free_port(),
                            enable_SMTPUTF8=getattr(request, "param", False))
    controller.start()
    yield server, controller
    controller.stop()


@pytest.fixture
def config(service_config, smtp_server, monkeypatch):
    _, controller = smtp_server
    smtputf8 = controller.SMTP_kwargs.get("enable_SMTPUTF8", False)
    # Enrolment reads the setting where the deployment files take it from.
    monkeypatch.setenv("SMTP_SMTPUTF8", "true" if smtputf8 else "false")
    return dict(service_config, MAIL={
        "transport": "smtp", "host": "127.0.0.1", "port": controller.port,
        "smtputf8": smtputf8, "sender": "noreply@lotsen.example",
        "office_name": "Ihr Programmbüro", "max_attempts": 4, "base_delay_s": 0.2,
        "max_delay_s": 1, "poll_interval_s": 0.1})


def enrolment_world(container_factory, config, enrolment_db, register_file):
    for service in (EnrolmentService, NotificationsService):
        container_factory(service, config).start()
    seeded = seed(enrolment_db, register_file)
    [ags] = gemeinden(register_file, 1)
    enrolment_db.run(enrolment_domain.register_municipality, ags, "Hauptamt", CONTACT)
    return ags, str(seeded["courses"][0])


def person(address):
    return {"given_name": "Jörg", "family_name": "Groß", "email": address,
            "department": "Hauptamt"}


def notices(config):
    handle = notifications_db(config)
    try:
        return handle.run(lambda s: [(n.to_email, n.status, n.attempts, n.last_error)
                                     for n in s.scalars(select(Notice))])
    finally:
        handle.dispose()


def test_umlaut_domain_arrives_in_punycode_readable_and_umlaut_local_part_is_refused(
        container_factory, config, enrolment_db, register_file, smtp_server):
    server, _ = smtp_server
    ags, course = enrolment_world(container_factory, config, enrolment_db, register_file)
    with SignedRpc("enrolment", config) as enrolment:
        assert enrolment.enrol(ags, {"course_id": course, "participant": person(UMLAUT_DOMAIN)})
        with pytest.raises(ValidationFailed) as refused:  # this server has no SMTPUTF8
            enrolment.enrol(ags, {"course_id": course, "participant": person(UMLAUT_LOCAL)})
    assert list(refused.value.fields) == ["participant.email"]
    assert "SMTPUTF8" in refused.value.fields["participant.email"][0]

    participant_rcpt = f"j.gross@{PUNYCODE}"
    wait_for(lambda: server.to(participant_rcpt) and server.to(CONTACT_PUNYCODE), timeout=30,
             message="both mails")
    [(options, rcpt, message, raw)] = server.to(participant_rcpt)
    assert rcpt == [participant_rcpt] and "SMTPUTF8" not in options
    assert raw.isascii()  # headers encoded as any server takes them
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Jörg Groß", participant_rcpt)
    assert "Jörg Groß" in message.get_body(("plain",)).get_content()
    wait_for(lambda: {(s, a) for _, s, a, _ in notices(config)} == {("sent", 1)},
             message="both notices sent at the first attempt")


@pytest.mark.parametrize("smtp_server", [True], indirect=True)
def test_non_ascii_local_part_arrives_where_the_server_offers_smtputf8(
        container_factory, config, enrolment_db, register_file, smtp_server):
    server, _ = smtp_server
    ags, course = enrolment_world(container_factory, config, enrolment_db, register_file)
    with SignedRpc("enrolment", config) as enrolment:
        assert enrolment.enrol(ags, {"course_id": course, "participant": person(UMLAUT_LOCAL)})
    rcpt = f"jörg@{PUNYCODE}"
    wait_for(lambda: server.to(rcpt), timeout=30, message="the participant's mail")
    [(options, rcpts, message, _)] = server.to(rcpt)
    assert "SMTPUTF8" in options and rcpts == [rcpt]
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Jörg Groß", UMLAUT_LOCAL)


def test_a_mail_that_can_never_go_is_failed_after_one_attempt(container_factory, config,
                                                              smtp_server):
    """An address enrolled while the server still offered SMTPUTF8, and one the server refuses
    for good (550): both failed at once with the reason; the municipality's mail goes."""
    server, _ = smtp_server
    server.refuse = "gone@example.org"
    container_factory(NotificationsService, config).start()
    dispatch = producer_dispatcher(config)
    dispatch("enrolment", "municipality_registered", build_event(
        "enrolment", "municipality_registered", {
            "ags": "08226098", "name": "Wiesloch, Stadt", "contact_name": "Hauptamt",
            "contact_email": "hauptamt@w.example", "sequence": 1}))
    for address in (UMLAUT_LOCAL, "gone@example.org"):
        dispatch("enrolment", "enrolment_created", build_event(
            "enrolment", "enrolment_created", {
                "enrolment_id": uuid.uuid4(), "programme_id": uuid.uuid4(),
                "course_id": uuid.uuid4(), "ags": "08226098", "status": "confirmed",
                "waitlist_position": None, "enrolled_at": funding_domain.now(),
                "participant": person(address), "sequence": 1,
                "course": {"title": "Basisseminar", "location": "Wiesloch",
                           "provider_name": "VWA", "programme_code": "BW-DL",
                           "programme_name": "Digitallotsen",
                           "modules": [{"number": 1, "title": "Modul",
                                        "date": date(2027, 1, 5)}]}}))
    with ServiceRpcProxy("notifications", config,
                         context_data={"operator_token": config["OPERATOR_TOKEN"]}) as notes:
        failed = wait_for(lambda: len(notes.failed_notices()) == 2 and notes.failed_notices(),
                          timeout=30, message="two failed notices")
    assert [f["attempts"] for f in failed] == [1, 1]
    reasons = " | ".join(f["last_error"] for f in failed)
    assert "SMTPUTF8" in reasons and "550" in reasons
    wait_for(lambda: len(server.to("hauptamt@w.example")) == 2, message="municipality's mails")
    assert server.to(f"jörg@{PUNYCODE}") == [] and server.to("gone@example.org") == []
    by_address = {n[0]: n[1:3] for n in notices(config)}
    assert by_address[UMLAUT_LOCAL] == ("failed", 1)
    assert by_address["gone@example.org"] == ("failed", 1)
