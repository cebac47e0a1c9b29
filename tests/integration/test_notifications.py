"""Notifications through the real services, delivered to a real SMTP server (aiosmtpd)."""
import email
import email.policy
import uuid
from datetime import date, timedelta

import pytest
from aiosmtpd.controller import Controller
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import func, select

from services.certificates.service import CertificatesService
from services.common.clock import calendar_today
from services.common.events import build_event
from services.enrolment import domain as enrolment_domain
from services.enrolment.register import import_register
from services.enrolment.service import EnrolmentService
from services.funding import domain as funding_domain
from services.funding.service import FundingService
from services.notifications.models import Notice
from services.notifications.service import NotificationsService
from tests.funding_support import policy
from tests.integration.helpers import (
    producer_dispatcher,
    SignedRpc,
    PROGRAMME,
    bw_records,
    gemeinden,
    participant,
    wait_for,
)
from tests.integration.test_gateway import free_port

FEE = 50_000


class Inbox:
    """An SMTP server's handler that keeps what it accepts; can refuse for a while."""

    def __init__(self):
        self.messages = []
        self.refuse = None  # None, "451" (try later) or an address to refuse with 550

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse == "451":
            return "451 4.3.0 try again later"
        if self.refuse == address:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 Message accepted"

    def by_id(self):
        ids = [m["Message-ID"] for m in self.messages]
        return {i: ids.count(i) for i in ids}


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller
    controller.stop()


@pytest.fixture
def mail_config(service_config, smtp):
    _, controller = smtp
    return dict(service_config, MAIL={
        "transport": "smtp", "host": "127.0.0.1", "port": controller.port,
        "sender": "noreply@lotsen.example", "office_name": "Ihr Programmbüro",
        "max_attempts": 4, "base_delay_s": 0.2, "max_delay_s": 1, "poll_interval_s": 0.1})


def notifications_db(config):
    from services.common.db import open_database
    from services.notifications.models import InboxRecord, OutboxMessage
    return open_database(config, "notifications", OutboxMessage, InboxRecord)


def start_all(container_factory, config):
    for service in (EnrolmentService, FundingService, CertificatesService, NotificationsService):
        container_factory(service, config).start()


def world(enrolment_db, funding_db, register_file, pool_seats=1, first_module_in_days=5):
    enrolment_db.run(import_register, bw_records(register_file))
    a, b = gemeinden(register_file, 2)

    def setup(session):
        programme = enrolment_domain.create_programme(session, dict(PROGRAMME))
        provider, token = enrolment_domain.create_provider(session, "Verwaltungsschule")
        courses = []
        for location, capacity in (("Wiesloch", 2), ("Walldorf", 5)):
            first = calendar_today() + timedelta(days=first_module_in_days)
            courses.append(str(enrolment_domain.create_course(session, provider, {
                "programme_code": "BW-DL", "title": "Basisseminar", "location": location,
                "capacity": capacity, "open": True,
                "modules": [{"number": n, "title": f"Modul {n} – Prozesse", "date":
                             first + timedelta(days=n)} for n in (1, 2)]}).id))
        for ags, town in ((a, "a"), (b, "b")):
            enrolment_domain.register_municipality(session, ags, f"Hauptamt {town.upper()}",
                                                   f"hauptamt@{town}.example")
        return programme.id, token, courses
    programme_id, token, courses = enrolment_db.run(setup)
    funding_db.run(funding_domain.set_policy, programme_id, "BW-DL",
                   policy((1136 + pool_seats) * FEE, FEE, 1, date(2027, 6, 30)))
    return {"a": a, "b": b, "token": token, "courses": courses}


def test_every_notice_of_the_journey_arrives_once(
        container_factory, mail_config, enrolment_db, funding_db, register_file, smtp,
        monkeypatch):
    inbox, _ = smtp
    config = mail_config
    start_all(container_factory, config)
    w = world(enrolment_db, funding_db, register_file)
    with SignedRpc("funding", config, operator=True) as funding:
        wait_for(lambda: _ready(funding), message="programme reached funding")
    first, second = w["courses"]
    person = lambda n: dict(participant(n), family_name=f"Weiß-Größler{n}")  # noqa: E731
    with SignedRpc("enrolment", config) as enrolment, \
            ServiceRpcProxy("enrolment", config,
                            context_data={"provider_token": w["token"]}) as provider:
        p1 = enrolment.enrol(w["a"], {"course_id": first, "participant": person(1)})
        p2 = enrolment.enrol(w["a"], {"course_id": first, "participant": person(2)})
        p3 = enrolment.enrol(w["a"], {"course_id": first, "participant": person(3)})
        p4 = enrolment.enrol(w["b"], {"course_id": first, "participant": person(4)})
        p5 = enrolment.enrol(w["a"], {"course_id": second, "participant": person(5)})
        assert [p["status"] for p in (p1, p2, p3, p4)] == [
            "confirmed", "confirmed", "waitlisted", "waitlisted"]
        wait_for(lambda: enrolment.get_enrolment(w["a"], p5["id"])["funding"]["status"]
                 == "waiting", timeout=30, message="p5 waits for funding")
        enrolment.cancel_enrolment(w["a"], p2["id"])  # frees seat and pool money
        wait_for(lambda: enrolment.get_enrolment(w["b"], p4["id"])["status"] == "confirmed")
        # The course takes place (modules in 6 and 7 days): the enrolment service's clock moves
        # on to the day after, when the provider records attendance, then back.
        with monkeypatch.context() as clock:
            real_now = enrolment_domain.now
            clock.setattr(enrolment_domain, "now", lambda: real_now() + timedelta(days=8))
            for module in (1, 2):
                provider.record_attendance(first, module, [p1["id"]])
        certificate = wait_for(lambda: enrolment.get_enrolment(w["a"], p1["id"])["certificate"],
                               timeout=30, message="certificate")
        provider.cancel_course(second, "Dozent erkrankt")
    with ServiceRpcProxy("certificates", config,
                         context_data={"operator_token": config["OPERATOR_TOKEN"]}) as certs:
        certs.revoke(certificate["number"], "Name falsch geschrieben")
    with ServiceRpcProxy("notifications", config,
                         context_data={"operator_token": config["OPERATOR_TOKEN"]}) as notes:
        wait_for(lambda: _all_written(config), timeout=30, message="notices written")
        assert notes.send_course_reminders()["reminders"] == 2  # p4 and p1 start in 5 days

    expected = {
        ("enrolment_confirmed", "p1"), ("enrolment_confirmed", "a"),
        ("enrolment_waitlisted", "p3"), ("enrolment_waitlisted", "b"),
        ("enrolment_promoted", "p4"), ("enrolment_promoted", "b"),
        ("funding_granted", "p1"), ("funding_granted", "a"),
        ("funding_granted", "p5"),                      # from the pool freed by p2
        ("funding_waiting", "a"), ("funding_released", "a"),
        ("enrolment_cancelled", "p2"), ("enrolment_cancelled", "a"),
        ("course_cancelled", "p5"), ("course_cancelled", "a"),
        ("course_reminder", "p4"), ("course_reminder", "p1"),
        ("certificate_issued", "p1"), ("certificate_revoked", "p1"),
    }
    wait_for(lambda: expected <= _received(inbox), timeout=60,
             message=f"all notices; missing {expected - _received(inbox)}")
    assert set(inbox.by_id().values()) == {1}  # no Message-ID twice
    certificate_mail = next(m for m in inbox.messages if "Glückwunsch" in m["Subject"])
    assert certificate_mail["Cc"] == "hauptamt@a.example"
    [pdf] = [part for part in certificate_mail.iter_attachments()]
    assert pdf.get_content_type() == "application/pdf" and pdf.get_content()[:4] == b"%PDF"
    waiting = next(m for m in inbox.messages if m["Subject"].startswith("Förderung zurzeit"))
    assert "Weiß-Größler5" in waiting["Subject"]
    assert "Mit freundlichen Grüßen" in waiting.get_body(("plain",)).get_content()


def _ready(funding):
    try:
        return funding.budget_state("BW-DL")
    except Exception:
        return None


def _all_written(config):
    handle = notifications_db(config)
    try:
        return handle.run(lambda s: s.scalar(select(func.count()).select_from(Notice))) >= 17
    finally:
        handle.dispose()


def _received(inbox):
    """(template, who) pairs: who is p<n> for a participant, a or b for a municipality."""
    found = set()
    subjects = {
        "Anmeldung bestätigt": "enrolment_confirmed", "Warteliste": "enrolment_waitlisted",
        "Nachgerückt": "enrolment_promoted", "Förderung bewilligt": "funding_granted",
        "Förderung zurzeit": "funding_waiting", "Förderung freigegeben": "funding_released",
        "Abmeldung": "enrolment_cancelled", "Seminar abgesagt": "course_cancelled",
        "Erinnerung": "course_reminder", "Herzlichen Glückwunsch": "certificate_issued",
    }
    for message in inbox.messages:
        subject = str(message["Subject"])
        template = next((t for prefix, t in subjects.items() if subject.startswith(prefix)),
                        "certificate_revoked" if "widerrufen" in subject else subject)
        to = str(message["To"])
        if "hauptamt@" in to:
            who = to.split("hauptamt@")[1][0]
        else:
            who = "p" + to.split("teilnehmer")[1].split("@")[0]
        found.add((template, who))
    return found


def test_smtp_down_for_a_while_then_every_mail_arrives_once(
        container_factory, mail_config, enrolment_db, funding_db, register_file, smtp):
    inbox, _ = smtp
    inbox.refuse = "451"
    start_all(container_factory, mail_config)
    w = world(enrolment_db, funding_db, register_file)
    with SignedRpc("enrolment", mail_config) as enrolment:
        enrolment.enrol(w["a"], {"course_id": w["courses"][0], "participant": participant(1)})
    handle = notifications_db(mail_config)
    try:
        wait_for(lambda: handle.run(lambda s: s.scalar(
            select(func.count()).select_from(Notice).where(Notice.attempts >= 1))) >= 2,
            message="first attempts refused")
        assert inbox.messages == []
        inbox.refuse = None
        wait_for(lambda: len(inbox.messages) >= 2, timeout=30, message="mails after recovery")
        wait_for(lambda: handle.run(lambda s: s.scalar(
            select(func.count()).select_from(Notice).where(Notice.status != "sent"))) == 0,
            timeout=30, message="all notices sent")
    finally:
        handle.dispose()
    assert set(inbox.by_id().values()) == {1}


def test_duplicated_event_sends_nothing_new_and_failed_mail_can_be_resent(
        container_factory, mail_config, enrolment_db, funding_db, register_file, smtp):
    inbox, _ = smtp
    container_factory(NotificationsService, mail_config).start()
    dispatch = producer_dispatcher(mail_config)
    dispatch("enrolment", "municipality_registered", build_event(
        "enrolment", "municipality_registered", {
            "ags": "08226098", "name": "Wiesloch, Stadt", "contact_name": "Hauptamt",
            "contact_email": "hauptamt@w.example", "sequence": 1}))
    inbox.refuse = "teilnehmer1@example.org"  # this mailbox does not exist (550)
    created = build_event("enrolment", "enrolment_created", {
        "enrolment_id": uuid.uuid4(), "programme_id": uuid.uuid4(), "course_id": uuid.uuid4(),
        "ags": "08226098", "status": "confirmed", "waitlist_position": None,
        "enrolled_at": funding_domain.now(), "participant": participant(1), "sequence": 1,
        "course": {"title": "Basisseminar", "location": "Wiesloch", "provider_name": "VWA",
                   "programme_code": "BW-DL", "programme_name": "Digitallotsen",
                   "modules": [{"number": 1, "title": "Modul", "date": date(2027, 1, 5)}]}})
    dispatch("enrolment", "enrolment_created", created)
    dispatch("enrolment", "enrolment_created", created)
    wait_for(lambda: len(inbox.messages) == 1, timeout=30, message="municipality's mail")
    with ServiceRpcProxy("notifications", mail_config,
                         context_data={"operator_token": mail_config["OPERATOR_TOKEN"]}) as notes:
        failed = wait_for(lambda: notes.failed_notices(), timeout=30, message="failed notice")
        assert len(failed) == 1 and failed[0]["recipient_role"] == "participant"
        assert "550" in failed[0]["last_error"]
        inbox.refuse = None
        assert notes.resend_failed(failed[0]["id"]) == {"queued_again": 1}
        wait_for(lambda: len(inbox.messages) == 2, timeout=30, message="resent mail")
        assert notes.failed_notices() == []
    handle = notifications_db(mail_config)
    try:
        assert handle.run(lambda s: s.scalar(select(func.count()).select_from(Notice))) == 2
    finally:
        handle.dispose()
    assert set(inbox.by_id().values()) == {1}


def test_a_round_whose_record_is_lost_goes_again_with_the_same_message_ids(
        container_factory, mail_config, smtp, monkeypatch):
    """A round's mails are recorded together when it ends: if that record is lost (the
    process dies, the database goes away), exactly that round's mails go again once their
    lease ends, with the same Message-IDs; nothing else is sent twice."""
    from services.notifications import domain as notifications

    inbox, _ = smtp
    config = dict(mail_config, MAIL=dict(mail_config["MAIL"], round_size=3, lease_s=1))
    lost = []
    real = notifications.record_round

    def record_round(session, sent, failures, *args):
        if not lost:
            lost.extend(sent)
            raise RuntimeError("database gone")  # after the mails went out
        return real(session, sent, failures, *args)
    monkeypatch.setattr(notifications, "record_round", record_round)
    container_factory(NotificationsService, config).start()
    dispatch = producer_dispatcher(config)
    dispatch("enrolment", "municipality_registered", build_event(
        "enrolment", "municipality_registered", {
            "ags": "08226098", "name": "Wiesloch, Stadt", "contact_name": "Hauptamt",
            "contact_email": "hauptamt@w.example", "sequence": 1}))
    for n in (1, 2):
        dispatch("enrolment", "enrolment_created", build_event("enrolment", "enrolment_created", {
            "enrolment_id": uuid.uuid4(), "programme_id": uuid.uuid4(),
            "course_id": uuid.uuid4(), "ags": "08226098", "status": "confirmed",
            "waitlist_position": None, "enrolled_at": funding_domain.now(),
            "participant": participant(n), "sequence": 1,
            "course": {"title": "Basisseminar", "location": "Wiesloch", "provider_name": "VWA",
                       "programme_code": "BW-DL", "programme_name": "Digitallotsen",
                       "modules": [{"number": 1, "title": "Modul", "date": date(2027, 1, 5)}]}}))
    handle = notifications_db(config)
    try:
        wait_for(lambda: handle.run(lambda s: s.scalar(select(func.count()).select_from(
            Notice).where(Notice.status == "sent"))) == 4, timeout=30, message="all sent")
    finally:
        handle.dispose()
    twice = {i for i, n in inbox.by_id().items() if n == 2}
    assert 1 <= len(lost) <= 3 and set(inbox.by_id().values()) <= {1, 2}
    assert twice == {f"<{notice_id}@notices.lotsen>" for notice_id in lost}
    assert len(inbox.by_id()) == 4
