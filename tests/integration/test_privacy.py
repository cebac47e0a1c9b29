"""Data protection through the real services (RabbitMQ, PostgreSQL, every service running):
a participant who enrolled, was funded, completed, got a certificate and several mails asks
for their data and is erased; afterwards no database column, mail file or log line names
them, the ledger still sums, and the certificate still verifies, saying the holder's data
was erased. Replaying their old events after the erasure brings nothing back."""
import email
import email.policy
import logging
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import MetaData, Table, Text, cast, create_engine, func, inspect, select

from services.certificates.models import Certificate
from services.certificates.models import InboxRecord as CertificatesInbox
from services.certificates.service import CertificatesService
from services.common.clock import calendar_today
from services.common.events import build_event
from services.cli import main
from services.common import config as cfg
from services.common.errors import AuthenticationFailed, Gone, NotFound, RuleViolation
from services.enrolment import domain as enrolment_domain
from services.enrolment.models import OutboxMessage as EnrolmentOutbox
from services.enrolment.register import import_register
from services.enrolment.service import EnrolmentService
from services.funding import domain as funding_domain
from services.funding.models import ErasedEnrolment, LedgerEntry
from services.funding.models import OutboxMessage as FundingOutbox
from services.funding.service import FundingService
from services.gateway.service import GatewayService
from services.notifications.models import InboxRecord as NotificationsInbox
from services.notifications.models import Contact, KnownEnrolment, Notice
from services.notifications.service import NotificationsService
from tests.funding_support import policy
from tests.integration.helpers import (
    PROGRAMME,
    SignedRpc,
    bw_records,
    gemeinden,
    participant,
    producer_dispatcher,
    wait_for,
)
from tests.integration.test_gateway import free_port

FEE = 50_000
PERSON = {"given_name": "Anneliese", "family_name": "Quellenbrück",
          "email": "anneliese.quellenbrueck@wiesloch.example", "department": "Ordnungsamt Süd"}
# ASCII pieces: JSON columns store "ü" as "\u00fc", mails encode headers and bodies.
NEEDLES = ("Anneliese", "Quellenbr", "anneliese.quellenbrueck", "Ordnungsamt")
SERVICES = ("enrolment", "funding", "certificates", "notifications")


def text_hits(url: str, needles=NEEDLES) -> list[str]:
    """Every column of every table, as text, searched for each needle: ``table.column:needle``
    for each hit."""
    engine = create_engine(url)
    hits = []
    try:
        meta = inspect(engine)
        with engine.connect() as conn:
            for table in meta.get_table_names():
                reflected = Table(table, MetaData(), autoload_with=engine)
                for column in reflected.columns:
                    as_text = cast(column, Text)
                    for needle in needles:
                        if conn.scalar(select(func.count()).select_from(reflected)
                                       .where(as_text.ilike(f"%{needle}%"))):
                            hits.append(f"{table}.{column.name}:{needle}")
    finally:
        engine.dispose()
    return hits


def mail_hits(directory: Path, needles=NEEDLES) -> list[str]:
    """Mail files searched raw and decoded (headers and every text part)."""
    hits = []
    for path in sorted(directory.glob("*")) if directory.exists() else []:
        raw = path.read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        decoded = " ".join(str(v) for v in message.values())
        for part in message.walk():
            if part.get_content_maintype() == "text":
                decoded += part.get_content()
        for needle in needles:
            if needle.lower().encode() in raw.lower() or needle.lower() in decoded.lower():
                hits.append(f"{path.name}:{needle}")
    return hits


def log_hits(records, needles=NEEDLES) -> list[str]:
    return [f"{r.name}:{needle}" for r in records for needle in needles
            if needle.lower() in r.getMessage().lower()]


def db(config, service):
    import importlib

    from services.common.db import open_database
    models = importlib.import_module(f"services.{service}.models")
    return open_database(config, service, models.OutboxMessage, models.InboxRecord)


@pytest.fixture
def system(container_factory, service_config, enrolment_db, register_file, tmp_path):
    """Every service running; BW-DL with its funding; a course that took place (attendance
    counts from a module's date on); Wiesloch registered."""
    config = dict(service_config, WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")
    config.pop("EXTRA_SERVICE_CLASSES")  # no test consumer holding copies of the events
    for service in (EnrolmentService, FundingService, CertificatesService,
                    NotificationsService, GatewayService):
        container_factory(service, config).start()
    enrolment_db.run(import_register, bw_records(register_file))
    ags, other_ags = gemeinden(register_file, 2)

    def setup(session):
        programme = enrolment_domain.create_programme(session, dict(PROGRAMME))
        provider, token = enrolment_domain.create_provider(session, "VWA Kurpfalz")
        keys = {a: enrolment_domain.register_municipality(
            session, a, "Hauptamt", f"hauptamt@{a}.example")[1] for a in (ags, other_ags)}
        return programme.id, token, keys
    programme_id, token, keys = enrolment_db.run(setup)
    handles = {s: db(config, s) for s in SERVICES}
    handles["funding"].run(funding_domain.set_policy, programme_id, "BW-DL",
                           policy((1136 + 10) * FEE, FEE, 1, date(2099, 1, 1)))
    with SignedRpc("funding", config, operator=True) as funding:
        wait_for(lambda: _published(funding), timeout=30, message="programme in funding")
    first = calendar_today() - timedelta(days=20)
    with ServiceRpcProxy("enrolment", config, context_data={"provider_token": token}) as p:
        course = p.create_course({
            "programme_code": "BW-DL", "title": "Basisseminar", "location": "Wiesloch",
            "capacity": 10, "open": True,
            "modules": [{"number": n, "title": f"Modul {n}",
                         "date": (first + timedelta(days=n)).isoformat()} for n in range(1, 6)]})
    cli_config = tmp_path / "cli.yaml"
    cli_config.write_text(yaml.safe_dump({
        k: config[k] for k in ("AMQP_URI", "LOTSEN_HOME", "DATABASES", "MAIL",
                               "OPERATOR_TOKEN")}))
    yield {"config": config, "ags": ags, "other_ags": other_ags, "token": token, "keys": keys,
           "course": course["id"], "db": handles, "cli": cli_config,
           "base": f"http://{config['WEB_SERVER_ADDRESS']}",
           "mail": Path(config["MAIL"]["directory"])}
    for handle in handles.values():
        handle.dispose()


def _published(funding):
    try:
        return funding.budget_state("BW-DL")
    except funding_domain.NotReady:
        return None


def cli(system, *args):
    return CliRunner().invoke(main, ["--config", str(system["cli"]), *args],
                              catch_exceptions=False)


def journey(system, person, ags, key):
    """Enrolled (with an idempotency key), funded, completed, certified, mailed."""
    config = system["config"]
    with SignedRpc("enrolment", config) as enrolment:
        enrolled = enrolment.enrol(ags, {"course_id": system["course"], "participant": person,
                                         "idempotency_key": key})
        wait_for(lambda: enrolment.get_enrolment(ags, enrolled["id"])["funding"]["status"]
                 == "granted", timeout=30, message="funding granted")
    with ServiceRpcProxy("enrolment", config,
                         context_data={"provider_token": system["token"]}) as provider:
        for module in range(1, 6):
            provider.record_attendance(system["course"], module, [enrolled["id"]])
    with SignedRpc("enrolment", config) as enrolment:
        certificate = wait_for(lambda: enrolment.get_enrolment(ags, enrolled["id"])
                               ["certificate"], timeout=30, message="certificate issued")
    # confirmed, granted (both to participant and contact), certificate: five mails sent
    wait_for(lambda: system["db"]["notifications"].run(lambda s: s.scalar(
        select(func.count()).select_from(Notice).where(
            Notice.enrolment_id == uuid.UUID(enrolled["id"]), Notice.status == "sent"))) >= 5,
        timeout=40, message="the mails sent")
    return enrolled, certificate["number"]


def envelopes_about(handle, outbox, enrolment_id):
    return handle.run(lambda s: [m.envelope for m in s.scalars(select(outbox).order_by(
        outbox.position)) if m.envelope["payload"].get("enrolment_id") == enrolment_id])


def erased_everywhere(system, enrolment_id):
    eid = uuid.UUID(enrolment_id)
    handles = system["db"]
    return (handles["funding"].run(lambda s: s.get(ErasedEnrolment, eid)) is not None
            and handles["certificates"].run(lambda s: s.scalar(
                select(Certificate.holder_erased_at).where(Certificate.enrolment_id == eid)))
            and handles["notifications"].run(lambda s: s.scalar(
                select(KnownEnrolment.status).where(KnownEnrolment.enrolment_id == eid)))
            == "erased")


def everything_found(system, needles=NEEDLES) -> list[str]:
    config = system["config"]
    hits = []
    for service in SERVICES:
        hits += [f"{service}:{h}" for h in text_hits(cfg.database_url(config, service), needles)]
    return hits + [f"mail:{h}" for h in mail_hits(system["mail"], needles)]


def test_access_then_erasure_leaves_no_trace_and_keeps_ledger_and_certificate(
        system, caplog):
    caplog.set_level(logging.INFO)
    config = system["config"]
    ags = system["ags"]
    enrolled, number = journey(system, PERSON, ags, "nominierung-1")
    other = dict(participant(7), department="Bauamt")
    other_enrolled, other_number = journey(system, other, system["other_ags"], "andere-1")
    held_credential = system["db"]["certificates"].run(lambda s: s.scalar(
        select(Certificate.credential_jws).where(Certificate.number == number)))
    code = system["db"]["certificates"].run(lambda s: s.scalar(
        select(Certificate.verification_code).where(Certificate.number == number)))

    # Before: the search finds the person where they are held (so "nothing" below means it).
    before = everything_found(system)
    for where in ("enrolment:enrolments.email", "enrolment:outbox.envelope",
                  "enrolment:idempotency_records.response", "certificates:certificates.data",
                  "notifications:known_enrolments.family_name", "notifications:notices.to_email",
                  "notifications:notices.context", "mail:"):
        assert any(h.startswith(where) for h in before), (where, before)

    # Access: one document with every service's part.
    with SignedRpc("enrolment", config, operator=True, timeout=60) as enrolment:
        document = enrolment.export_participant(PERSON["email"].upper())
    assert [e["id"] for e in document["enrolment"]["enrolments"]] == [enrolled["id"]]
    assert document["enrolment"]["enrolments"][0]["participant"]["department"] == \
        PERSON["department"]
    assert [(f["state"], f["amount_cents"]) for f in document["funding"]["fundings"]] == [
        ("guaranteed", FEE)]
    assert [e["amount_cents"] for e in document["funding"]["ledger_entries"]] == [-FEE]
    assert [c["number"] for c in document["certificates"]["certificates"]] == [number]
    mails = document["mails"]["mails"]
    assert {(m["template"], m["recipient_role"]) for m in mails} >= {
        ("enrolment_confirmed", "participant"), ("funding_granted", "participant"),
        ("certificate_issued", "participant"), ("enrolment_confirmed", "municipality")}
    assert all(m["sent_at"] and m["subject"] for m in mails)
    assert other["email"] not in str(document)
    cli_export = cli(system, "privacy", "export", PERSON["email"])
    assert cli_export.exit_code == 0 and number in cli_export.output

    # Erasure: operators only, and not while a course is running (checked elsewhere).
    with SignedRpc("enrolment", config) as as_gateway:
        with pytest.raises(AuthenticationFailed):
            as_gateway._service.erase_participant(PERSON["email"], "Antrag Art. 17")
    with SignedRpc("enrolment", config, operator=True) as enrolment:
        erased = enrolment.erase_participant(PERSON["email"], "Antrag nach Art. 17 DSGVO")
        again = enrolment.erase_participant(PERSON["email"], "Antrag nach Art. 17 DSGVO")
    assert erased["status"] == "erased" and erased["enrolments"] == 1
    assert again["status"] == "already_erased"
    wait_for(lambda: erased_everywhere(system, enrolled["id"]), timeout=30,
             message="every service applied the erasure")

    # Nothing found: no column of any database, no mail file, no log line (of the services'
    # own, captured all along).
    assert everything_found(system) == []
    assert any(r.name.startswith("services.") for r in caplog.records)
    assert log_hits(caplog.records) == []
    # ... while the other participant is all there.
    assert everything_found(system, ("Bauamt", other["email"]))

    # The ledger keeps the entry (amount, body, course's enrolment) and still sums.
    entries = system["db"]["funding"].run(lambda s: [(e.kind, e.amount_cents, e.ags) for e in
        s.scalars(select(LedgerEntry).where(LedgerEntry.enrolment_id
                                            == uuid.UUID(enrolled["id"])))])
    assert entries == [("grant", -FEE, ags)]
    check = cli(system, "funding", "check", "BW-DL")
    assert check.exit_code == 0, check.output

    # The certificate: its number verifies, as valid, with the holder's data erased.
    base = system["base"]
    verified = requests.get(f"{base}/api/v1/verify/{code}", timeout=10).json()
    assert verified["status"] == "valid" and verified["number"] == number
    assert verified["holder_erased"] is True and verified["participant"] is None
    page = requests.get(f"{base}/verify/{code}", timeout=10).text
    assert "Inhaberdaten gelöscht" in page and "Anneliese" not in page
    presented = requests.post(f"{base}/api/v1/credentials:verify",
                              json={"credential": held_credential}, timeout=10).json()
    assert presented["valid"] is True and presented["holder_erased"] is True
    pdf = requests.get(f"{base}/api/v1/certificates/{number}.pdf", timeout=10,
                       headers={"Authorization": f"Bearer {system['keys'][ags]}"})
    assert pdf.status_code == 410
    with SignedRpc("certificates", config, operator=True) as certificates:
        with pytest.raises(Gone):
            certificates.get_pdf(number)
        with pytest.raises(RuleViolation):
            certificates.reissue(number, "Anneliese", "Quellenbrück")
    other_key = system["keys"][system["other_ags"]]
    other_pdf = requests.get(f"{base}/api/v1/certificates/{other_number}.pdf", timeout=10,
                             headers={"Authorization": f"Bearer {other_key}"})
    assert other_pdf.status_code == 200

    # A repeated enrolment request answers with its first answer, pseudonymised.
    with SignedRpc("enrolment", config) as enrolment:
        replayed = enrolment.enrol(ags, {"course_id": system["course"], "participant": PERSON,
                                         "idempotency_key": "nominierung-1"})
    assert replayed["id"] == enrolled["id"]
    assert replayed["participant"]["email"].endswith("@erased.invalid")

    # Access afterwards: nothing held, and the record that it was erased.
    with SignedRpc("enrolment", config, operator=True, timeout=60) as enrolment:
        after = enrolment.export_participant(PERSON["email"])
    assert after["enrolment"]["enrolments"] == [] and after["mails"]["mails"] == []
    assert [e["cause"] for e in after["enrolment"]["erasures"]] == ["request"]
    assert everything_found(system) == [] and log_hits(caplog.records) == []


def test_old_events_replayed_after_the_erasure_bring_nothing_back(system, caplog):
    caplog.set_level(logging.INFO)
    config = system["config"]
    enrolled, number = journey(system, PERSON, system["ags"], "nominierung-2")
    handles = system["db"]
    old = {"enrolment": envelopes_about(handles["enrolment"], EnrolmentOutbox, enrolled["id"]),
           "funding": envelopes_about(handles["funding"], FundingOutbox, enrolled["id"])}
    assert {e["event_type"] for e in old["enrolment"]} >= {"enrolment_created",
                                                           "enrolment_completed"}
    assert any(PERSON["email"] in str(e) for e in old["enrolment"])

    result = cli(system, "privacy", "erase", PERSON["email"], "--reason", "Antrag Art. 17")
    assert result.exit_code == 0, result.output
    assert "anneliese" not in result.output.lower()
    wait_for(lambda: erased_everywhere(system, enrolled["id"]), timeout=30,
             message="every service applied the erasure")
    assert everything_found(system) == []
    notices = handles["notifications"].run(lambda s: s.scalar(select(func.count())
                                                               .select_from(Notice)))

    # Replayed as they were (a redelivery) and as new messages (a parked one never handled):
    # the inbox drops the first kind, the erasure markers the second.
    dispatch = producer_dispatcher(config)
    fresh = {}
    for service, envelopes in old.items():
        for envelope in envelopes:
            dispatch(service, envelope["event_type"], envelope)
            copy = dict(envelope, event_id=str(uuid.uuid4()))
            fresh[copy["event_id"]] = envelope["event_type"]
            dispatch(service, envelope["event_type"], copy)
    to_notifications = [i for i, kind in fresh.items() if kind in NOTIFIED]
    to_certificates = [i for i, kind in fresh.items() if kind == "enrolment_completed"]
    assert to_notifications and to_certificates
    wait_for(lambda: _handled(handles["notifications"], NotificationsInbox, to_notifications)
             == len(to_notifications), timeout=40, message="replays handled by notifications")
    wait_for(lambda: _handled(handles["certificates"], CertificatesInbox, to_certificates)
             == len(to_certificates), timeout=40, message="replays handled by certificates")
    certificates = handles["certificates"].run(lambda s: s.scalar(
        select(func.count()).select_from(Certificate)))
    assert certificates == 1  # the replayed completion issued no new certificate
    assert handles["notifications"].run(lambda s: s.scalar(
        select(func.count()).select_from(Notice))) == notices  # and no new mail
    assert everything_found(system) == []
    assert log_hits(caplog.records) == []


NOTIFIED = {"enrolment_created", "enrolment_promoted", "enrolment_cancelled",
            "funding_granted", "funding_waiting", "funding_released", "funding_converted"}


def _handled(handle, inbox, event_ids) -> int:
    ids = [uuid.UUID(i) for i in event_ids]
    return handle.run(lambda s: s.scalar(select(func.count()).select_from(inbox)
                                         .where(inbox.event_id.in_(ids))))


def test_a_forged_erasure_is_parked_and_erases_nothing(system):
    """Being on the broker proves nothing: a participant_erased the enrolment service did not
    send (no user_id the broker vouches for) must not wipe anyone's certificate."""
    from services.common.messaging import list_parked
    config = system["config"]
    enrolled, number = journey(system, PERSON, system["ags"], "nominierung-3")
    forged = build_event("enrolment", "participant_erased", {
        "erasure_id": uuid.uuid4(), "pseudonym": "erased-0123456789ab", "cause": "request",
        "erased_at": funding_domain.now(),
        "enrolments": [{"enrolment_id": enrolled["id"], "programme_id": uuid.uuid4(),
                        "course_id": system["course"], "ags": system["ags"]}]})
    producer_dispatcher(config, user_id=None)("enrolment", "participant_erased", forged)
    queue = "evt-enrolment-participant_erased--certificates.on_participant_erased"
    parked = wait_for(lambda: list_parked(config["AMQP_URI"], [queue]), timeout=30,
                      message="the forged erasure parked")
    assert "ForgedEvent" in parked[0]["error"] and not parked[0]["replayable"]
    holder = system["db"]["certificates"].run(lambda s: s.scalar(
        select(Certificate.data).where(Certificate.number == number)))
    assert holder["family_name"] == PERSON["family_name"]


ROSWITHA = "roswitha.kleinschmidt@wiesloch.example"
BARTHOLOMAEUS = "b.eckenfelder@wiesloch.example"
# (Not "Bartholom…": Bartholomä is a Gemeinde in the register.)
CLERK_NEEDLES = ("Roswitha", "Kleinschmidt", "Eckenfelder")


def test_a_former_contact_and_a_removed_colleague_leave_no_trace(system, caplog):
    """Wiesloch's contact invites a colleague, gets a copy of a certificate mail, removes the
    colleague and leaves; the operator erases both over RPC. Afterwards no database column,
    mail file or log line of any service names either of them, and the participant's mails
    and the new contact's stay."""
    from services.enrolment import portal
    caplog.set_level(logging.INFO)
    config, ags = system["config"], system["ags"]
    handle, mail_log = system["db"]["enrolment"], system["db"]["notifications"]
    handle.run(enrolment_domain.register_municipality, ags, "Roswitha Kleinschmidt", ROSWITHA)
    wait_for(lambda: mail_log.run(lambda s: s.scalar(select(func.count()).select_from(
        Notice).where(Notice.to_email == "hauptamt@" + ags + ".example"))) == 0
        and everything_found(system, ("Kleinschmidt",)), timeout=30,
        message="the new contact known to notifications")
    contact = signed_in_by_mail(system, ROSWITHA)
    invited = handle.run(portal.invite_colleague, ags, contact, "Bartholomäus Eckenfelder",
                         BARTHOLOMAEUS, "http://gw/portal/anmelden")
    signed_in_by_mail(system, BARTHOLOMAEUS)
    journey(system, PERSON, ags, "nominierung-kontakt")  # the certificate mail copies her
    before = everything_found(system, CLERK_NEEDLES)
    for where in ("enrolment:portal_colleagues.name", "enrolment:outbox.envelope",
                  "notifications:contacts.contact_name", "notifications:notices.to_name",
                  "notifications:notices.context", "mail:"):
        assert any(h.startswith(where) for h in before), (where, before)
    assert mail_log.run(lambda s: s.scalar(select(func.count()).select_from(Notice).where(
        Notice.cc_email == ROSWITHA))) == 1

    with SignedRpc("enrolment", config, operator=True, timeout=60) as operator:
        document = operator.export_participant(ROSWITHA)  # her access request first
        assert [c["ags"] for c in document["enrolment"]["portal"]["contact_of"]] == [ags]
        assert {(m["template"], m["cc_email"] == ROSWITHA) for m in document["mails"]["mails"]} \
            >= {("sign_in_link", False), ("certificate_issued", True)}
        with pytest.raises(RuleViolation) as still:
            operator.erase_clerk(BARTHOLOMAEUS)
        assert still.value.fields == {"email": [f"colleague at {ags}"]}
        handle.run(portal.remove_colleague, ags, contact, invited["id"])
        colleague = wait_for(lambda: _erased_when_sent(operator, BARTHOLOMAEUS), timeout=30,
                             message="the colleague erased")
        assert colleague["colleague_rows"] == 1 and colleague["mails"]["notices_kept"] == 2
        with pytest.raises(RuleViolation) as contact_still:
            operator.erase_clerk(ROSWITHA)
        assert contact_still.value.fields == {"email": [f"contact of {ags}"]}
        handle.run(enrolment_domain.register_municipality, ags, "Olga Neu",
                   "o.neu@wiesloch.example")
        former = wait_for(lambda: _erased_when_sent(operator, ROSWITHA), timeout=30,
                          message="the former contact erased")
        assert former["mails"]["notices_copied"] == 1
        with pytest.raises(NotFound):
            operator.erase_clerk(ROSWITHA)

    wait_for(lambda: mail_log.run(lambda s: s.scalar(select(Contact.contact_email).where(
        Contact.ags == ags))) == "o.neu@wiesloch.example", timeout=30,
        message="the new contact's announcement applied")
    assert everything_found(system, CLERK_NEEDLES) == []
    assert log_hits(caplog.records, CLERK_NEEDLES + ("roswitha", "eckenfelder")) == []
    kept = mail_log.run(lambda s: set(s.scalars(select(Notice.template).where(
        Notice.to_email == PERSON["email"], Notice.status == "sent"))))
    # the participant's own mails are theirs, untouched
    assert kept == {"enrolment_confirmed", "funding_granted", "certificate_issued"}


def signed_in_by_mail(system, address) -> str:
    """Ask for a link, take it from the mail (the outbox forgets it once it is sent), sign
    in: the session id."""
    import re

    from services.enrolment import portal
    handle, mails = system["db"]["enrolment"], system["mail"]
    before = set(mails.glob("*.eml"))
    assert handle.run(portal.request_sign_in, address, "http://gw/portal/link/") == 1

    def token():
        for path in set(mails.glob("*.eml")) - before:
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"].addresses[0].addr_spec == address:
                found = re.search(r"http://gw/portal/link/(\S+)",
                                  message.get_body(("plain",)).get_content())
                if found:
                    return found.group(1)
    return handle.run(portal.sign_in, wait_for(token, timeout=30, message="the link mail"),
                      8)["session_id"]


def _erased_when_sent(operator, address):
    """The erasure, once the events that name the person have been sent (until then it is
    refused, and asked again)."""
    try:
        return operator.erase_clerk(address)
    except RuleViolation as exc:
        if "not yet sent" in str(exc.fields):
            return None
        raise


def test_an_access_request_that_a_service_cannot_answer_is_a_typed_error(
        container_factory, service_config):
    """Funding and the others are not running: the operator hears which one did not answer,
    within the configured time, instead of waiting for ever."""
    from services.common.errors import Unavailable
    config = dict(service_config, EXPORT_TIMEOUT_S=1)
    config.pop("EXTRA_SERVICE_CLASSES")
    container_factory(EnrolmentService, config).start()
    with SignedRpc("enrolment", config, operator=True, timeout=30) as enrolment:
        with pytest.raises(Unavailable) as missing:
            enrolment.export_participant(PERSON["email"])
    assert missing.value.fields == {"service": ["funding"]}
