"""Sachsen's coaching programme through the services' RPC (real RabbitMQ, PostgreSQL) and the
reminders notifications sends to a real SMTP server."""
import re
import uuid
from datetime import date, datetime, timedelta, timezone

import eventlet
import pytest
from nameko.standalone.rpc import ServiceRpcProxy

from services.common.clock import calendar_today
from services.common.errors import AuthenticationFailed, Conflict, NotFound, RuleViolation
from services.enrolment import coaching, domain
from services.enrolment.register import import_register, parse_register
from services.enrolment.service import EnrolmentService
from services.gateway.service import GatewayService
from services.notifications.service import NotificationsService
from tests.integration.helpers import SignedRpc, wait_for
from tests.integration.test_gateway import gateway_config, world  # noqa: F401 (fixtures)
from tests.integration.test_office import office_system  # noqa: F401 (fixture)
from tests.integration.test_portal import portal  # noqa: F401 (fixture)
from tests.integration.test_notifications import (  # noqa: F401 (fixtures)
    mail_config,
    notifications_db,
    smtp,
)

MILESTONES = [
    {"key": "situation", "title": "Situation vor Ort erfasst", "due_days": 42},
    {"key": "agenda", "title": "Digitale Agenda geschrieben", "due_days": 112, "document": True},
]
DRESDEN, LEIPZIG, CHEMNITZ = "14612000", "14713000", "14511000"


def navigator(n):
    return {"given_name": f"Karin{n}", "family_name": f"Krause{n}",
            "email": f"navigator{n}@sachsen.example"}


def baden_navigators(session):
    """A coaching programme in Baden-Württemberg, to use the gateway and portal tests'
    worlds."""
    programme = domain.create_programme(session, {
        "code": "BW-NAV", "name": "Navigatoren", "land": "08", "role_name": "Navigator",
        "eligible_kinds": ["gemeinde"], "enrolment_opens_on": date(2026, 1, 1),
        "enrolment_closes_on": date(2099, 1, 1)})
    coaching.define(session, programme, MILESTONES)


@pytest.fixture
def saxony(container_factory, mail_config, enrolment_db, register_file):
    enrolment_db.run(import_register, [b for b in parse_register(register_file)
                                       if b.land == "14"])

    def setup(session):
        programme = domain.create_programme(session, {
            "code": "SN-DN", "name": "Digital-Navigatoren Sachsen", "land": "14",
            "role_name": "Digital-Navigator", "eligible_kinds": ["gemeinde", "kreis"],
            "enrolment_opens_on": calendar_today() - timedelta(days=100),
            "enrolment_closes_on": date(2099, 1, 1)})
        coaching.define(session, programme, MILESTONES)
        for ags, town in ((DRESDEN, "dresden"), (LEIPZIG, "leipzig"), (CHEMNITZ, "chemnitz")):
            domain.register_municipality(session, ags, f"Hauptamt {town}",
                                         f"hauptamt@{town}.example")
    enrolment_db.run(setup)
    for service in (EnrolmentService, NotificationsService):
        container_factory(service, mail_config).start()
    return mail_config


def test_navigators_coaches_and_overdue_reminders(saxony, smtp, enrolment_db):
    inbox, _ = smtp
    config = saxony
    with SignedRpc("enrolment", config) as town:
        named = {ags: town.name_navigator(ags, "SN-DN", navigator(n))
                 for n, ags in enumerate((DRESDEN, LEIPZIG, CHEMNITZ))}
        with pytest.raises(Conflict) as second:
            town.name_navigator(DRESDEN, "SN-DN", navigator(9))
        assert second.value.fields == {"navigator": ["already named"]}
        with pytest.raises(AuthenticationFailed):  # Dresden cannot name Leipzig's
            town._service.name_navigator(LEIPZIG, "SN-DN", navigator(8))
    with SignedRpc("enrolment", config, operator=True) as office:
        coach = office.register_coach({"programme_code": "SN-DN", "name": "Lotse Lehmann",
                                       "email": "lehmann@ssg.example", "max_navigators": 2})
        other = office.register_coach({"programme_code": "SN-DN", "name": "Lotsin Lange",
                                       "email": "lange@ssg.example", "max_navigators": 5})
        start = (calendar_today() - timedelta(days=50)).isoformat()
        office.pair_navigator(named[DRESDEN]["id"], coach["id"], start)

    # Two pairings for the coach's last place at once: one gets it.
    def pair(ags):
        with SignedRpc("enrolment", config, operator=True) as operator:
            try:
                return operator.pair_navigator(named[ags]["id"], coach["id"], start)
            except RuleViolation as exc:
                return exc
    results = [r.wait() for r in [eventlet.spawn(pair, a) for a in (LEIPZIG, CHEMNITZ)]]
    assert sorted(type(r).__name__ for r in results) == ["RuleViolation", "dict"]
    refused = next(r for r in results if isinstance(r, RuleViolation))
    assert refused.fields == {"coach_id": ["at the maximum"]}

    with ServiceRpcProxy("enrolment", config,
                         context_data={"coach_token": coach["token"]}) as lehmann:
        mine = lehmann.coach_navigators()
        assert mine["coach"]["load"] == 2
        dresden = named[DRESDEN]["id"]
        reached = lehmann.record_milestone({
            "navigator_id": dresden, "key": "situation",
            "reached_on": (calendar_today() - timedelta(days=3)).isoformat(),
            "note": "Bestandsaufnahme mit dem Hauptamt"})
        assert reached["milestones"][0]["reached_on"] == (
            calendar_today() - timedelta(days=3)).isoformat()
    with ServiceRpcProxy("enrolment", config,
                         context_data={"coach_token": other["token"]}) as lange:
        with pytest.raises(NotFound):
            lange.record_milestone({"navigator_id": dresden, "key": "agenda",
                                    "reached_on": calendar_today().isoformat(),
                                    "document_ref": "Ratsbeschluss 1"})
    with ServiceRpcProxy("enrolment", config) as stranger:
        with pytest.raises(AuthenticationFailed):
            stranger.coach_navigators()

    # Day 50 of coaching: the situation of the Navigator paired second is overdue (Dresden's
    # is recorded); on day 113 the Agendas of both are. Each is reported once.
    with SignedRpc("enrolment", config, operator=True) as office:
        assert office.report_overdue_milestones()["reported"] == 1
        assert office.report_overdue_milestones()["reported"] == 0
        later = (calendar_today() + timedelta(days=63)).isoformat()
        assert office.report_overdue_milestones(later)["reported"] == 2
        assert office.report_overdue_milestones(later)["reported"] == 0
        view = office.coaching_overview("SN-DN")
    assert (view["eligible"], view["with_navigator"], view["paired"], view["overdue"]) == (
        429, 3, 2, 1)  # today: the second Navigator's situation
    subject = "Erinnerung:"

    def reminders():
        got = [m for m in inbox.messages if str(m["Subject"]).startswith(subject)]
        return got if len(got) >= 6 else None
    mails = wait_for(reminders, timeout=30, message="overdue reminders")
    eventlet.sleep(1.5)  # a second copy would show now
    mails = [m for m in inbox.messages if str(m["Subject"]).startswith(subject)]
    to = sorted(m["To"].addresses[0].addr_spec for m in mails)
    paired_second = next(r for r in results if isinstance(r, dict))
    second_email = paired_second["participant"]["email"]
    assert to == sorted(["lehmann@ssg.example"] * 3 + ["navigator0@sachsen.example",
                                                        second_email, second_email])
    paired_mails = [m for m in inbox.messages if "Coaching als Digital-Navigator" in
                    str(m["Subject"])]
    assert len(paired_mails) == 4  # each pairing: the Navigator and the coach

    # Lehmann leaves and asks to be erased: refused while he coaches, then done in enrolment
    # and in the mail log, which held his pairing and reminder mails.
    from sqlalchemy import select

    from services.enrolment.models import Coach
    from services.notifications.models import Notice
    from tests.integration.test_notifications import notifications_db
    with SignedRpc("enrolment", config, operator=True, timeout=60) as office:
        with pytest.raises(RuleViolation) as refused:
            office.erase_coach("lehmann@ssg.example")
        assert refused.value.fields == {"email": ["coaches in SN-DN"]}
        office.remove_coach(coach["id"])
        mail_log = notifications_db(config)
        try:  # the operator erases once the departure's mails are written
            wait_for(lambda: len(mail_log.run(lambda s: s.scalars(select(Notice.id).where(
                Notice.template == "coaching_unpaired")).all())) == 2, timeout=30,
                message="the departure's mails")
        finally:
            mail_log.dispose()
        erased = office.erase_coach("lehmann@ssg.example")
        with pytest.raises(NotFound):
            office.erase_coach("lehmann@ssg.example")
    assert erased["coaches"] == 1 and erased["mails"]["notices_kept"] >= 5
    mail_log = notifications_db(config)
    try:
        left = mail_log.run(lambda s: [str(row) for row in s.execute(
            select(Notice.to_email, Notice.to_name, Notice.context))])
    finally:
        mail_log.dispose()
    assert left and not [r for r in left if "lehmann@ssg.example" in r or "Lehmann" in r]
    assert enrolment_db.run(lambda s: s.get(Coach, uuid.UUID(coach["id"])).name) == "gelöscht"

    # A member of the office who left, over the same path.
    from services.enrolment import office as office_domain
    enrolment_db.run(office_domain.add_staff, "paula@lotsen.example", "Paula Programm")
    with SignedRpc("enrolment", config, operator=True, timeout=60) as office:
        with pytest.raises(RuleViolation):
            office.erase_office_member("paula@lotsen.example")
        enrolment_db.run(office_domain.remove_staff, "paula@lotsen.example")
        gone = office.erase_office_member("paula@lotsen.example")
        assert gone["status"] == "erased" and gone["mails"]["notices_dropped"] == 0
        with pytest.raises(NotFound):
            office.erase_office_member("paula@lotsen.example")

        # One who left more than a year ago is erased by the retention run, the same way.
        from sqlalchemy import update

        from services.enrolment.models import OfficeStaff
        enrolment_db.run(office_domain.add_staff, "ida@lotsen.example", "Ida Ehemals")
        enrolment_db.run(lambda s: s.execute(update(OfficeStaff).where(
            OfficeStaff.email == "ida@lotsen.example").values(
            removed_at=datetime.now(timezone.utc) - timedelta(days=400))))
        assert office.apply_retention()["staff"] == 1
        assert office.apply_retention()["staff"] == 0
        assert enrolment_db.run(lambda s: s.get(OfficeStaff, "ida@lotsen.example")) is None


def test_a_municipality_names_its_navigator_through_the_gateway(
        container_factory, gateway_config, enrolment_db, world):
    """A coaching programme in Baden-Württemberg here, to use the gateway tests' world."""
    from tests.integration.test_gateway import Client, is_problem

    enrolment_db.run(baden_navigators)
    for service in (EnrolmentService, GatewayService):
        container_factory(service, gateway_config).start()
    client = Client(f"http://{gateway_config['WEB_SERVER_ADDRESS']}", world["keys"][world["a"]])
    first = client.post("/api/v1/navigators", json={"programme_code": "BW-NAV",
                                                     "navigator": navigator(1)})
    assert first.status_code == 201, first.text
    assert first.json()["milestones"][1]["title"] == "Digitale Agenda geschrieben"
    # The coach uploads the Agenda; the municipality's software fetches it by its id.
    pdf = b"%PDF-1.7\n% Agenda\n" + bytes(range(256)) * 4

    def agenda(session):
        coach, _ = coaching.register_coach(session, "BW-NAV", "Lotse Lehmann",
                                           "lehmann@ssg.example", 3)
        coaching.pair(session, first.json()["id"], coach.id, calendar_today())
        done = coaching.record_milestone(session, coach, first.json()["id"], "agenda",
                                         calendar_today(), None, None,
                                         {"filename": "Agenda.pdf", "content": pdf})
        return done["milestones"][1]["document_ref"]
    ref = enrolment_db.run(agenda)
    listed = client.get("/api/v1/navigators", params={"programme_code": "BW-NAV"}).json()
    assert listed["items"][0]["milestones"][1]["document_ref"] == ref
    fetched = client.get(f"/api/v1/navigator-documents/{ref.removeprefix('document:')}")
    assert fetched.status_code == 200 and fetched.content == pdf
    assert fetched.headers["Content-Type"] == "application/pdf"
    for odd in (str(uuid.uuid4()), "kein-dokument"):
        is_problem(client.get(f"/api/v1/navigator-documents/{odd}"), 404)
    is_problem(Client(client.base, "lk_unknown").get(
        f"/api/v1/navigator-documents/{ref.removeprefix('document:')}"), 401)
    is_problem(Client(client.base, world["keys"][world["b"]]).get(
        f"/api/v1/navigator-documents/{ref.removeprefix('document:')}"), 404)
    is_problem(client.post("/api/v1/navigators", json={"programme_code": "BW-NAV",
                                                        "navigator": navigator(2)}),
               409, "navigator")
    is_problem(client.post("/api/v1/navigators", json={"programme_code": "BW-NAV",
                                                        "navigator": navigator(2),
                                                        "replace": "ja"}), 422, "replace")
    is_problem(client.post("/api/v1/navigators", json={"programme_code": "BW-DL",
                                                        "navigator": navigator(2)}),
               422, "programme_code")  # a seminar programme has no Navigators
    replaced = client.post("/api/v1/navigators", json={
        "programme_code": "BW-NAV", "navigator": navigator(2), "replace": True})
    assert replaced.status_code == 201 and replaced.json()["replaces_id"] == first.json()["id"]
    listed = client.get("/api/v1/navigators", params={"programme_code": "BW-NAV"}).json()
    assert [n["participant"]["email"] for n in listed["items"]] == [
        "navigator2@sachsen.example", "navigator1@sachsen.example"]
    for odd in ("", "BW%00NAV", "bw-nav"):
        is_problem(client.get(f"/api/v1/navigators?programme_code={odd}"), 422, "programme_code")
    other = Client(client.base, world["keys"][world["b"]])
    assert other.get("/api/v1/navigators",
                     params={"programme_code": "BW-NAV"}).json()["items"] == []


def test_the_clerk_names_and_replaces_the_navigator_in_the_portal(portal):
    from tests.integration.test_portal import Browserish, sign_in

    portal["db"].run(baden_navigators)
    browser = sign_in(portal, portal["contact"])
    assert 'href="/portal/navigator/BW-NAV"' in browser.get("/portal/uebersicht").text
    assert "Digital-Navigator benennen" in browser.get("/portal/navigator/BW-NAV").text
    bad = browser.post("/portal/navigator/BW-NAV", {"given_name": "Karin", "family_name": "",
                                                   "email": "k@x.example", "department": ""})
    assert bad.status_code == 422 and 'id="fehler-family_name"' in bad.text
    assert 'value="Karin"' in bad.text  # input kept
    done = browser.post("/portal/navigator/BW-NAV", {"given_name": "Karin",
                                                    "family_name": "Krause",
                                                    "email": "k@x.example", "department": ""})
    assert done.status_code == 303
    page = browser.follow().text
    assert "Karin Krause" in page and "Situation vor Ort erfasst" in page
    twice = browser.post("/portal/navigator/BW-NAV", {"given_name": "Olaf", "family_name": "Ost",
                                                     "email": "o@x.example", "department": ""})
    assert twice.status_code == 422 and "schon einen Digital-Navigator" in twice.text
    replaced = browser.post("/portal/navigator/BW-NAV", {
        "given_name": "Olaf", "family_name": "Ost", "email": "o@x.example", "department": "",
        "ersetzen": "ja"})
    assert replaced.status_code == 303
    page = browser.follow().text
    assert "Olaf Ost" in page and "Frühere Digital-Navigatoren" in page and "Karin Krause" in page
    assert browser.get("/portal/navigator/BW-DL").status_code == 404  # a seminar programme


def test_a_coaching_programme_without_funding_funds_nothing_and_parks_nothing(
        container_factory, service_config, enrolment_db, funding_db, register_file):
    from sqlalchemy import func, select

    from services.common import topology
    from services.common.messaging import list_parked
    from services.funding.models import Funding, InboxRecord
    from services.funding.service import FundingService

    enrolment_db.run(import_register, [b for b in parse_register(register_file)
                                       if b.land == "14"])

    def setup(session):
        programme = domain.create_programme(session, {
            "code": "SN-DN", "name": "Digital-Navigatoren Sachsen", "land": "14",
            "role_name": "Digital-Navigator", "eligible_kinds": ["gemeinde", "kreis"],
            "enrolment_opens_on": date(2026, 1, 1), "enrolment_closes_on": date(2099, 1, 1),
            "funded": False})
        coaching.define(session, programme, MILESTONES)
        provider, _ = domain.create_provider(session, "SSG")
        return str(domain.create_course(session, provider, {
            "programme_code": "SN-DN", "title": "Grundlagen", "location": "Dresden",
            "capacity": 5, "open": True,
            "modules": [{"number": 1, "title": "eGovernment-Gesetz",
                         "date": calendar_today() + timedelta(days=20)}]}).id)
    course = enrolment_db.run(setup)
    for service in (EnrolmentService, FundingService):
        container_factory(service, service_config).start()
    with SignedRpc("enrolment", service_config) as town:
        made = town.enrol(DRESDEN, {"course_id": course, "participant": navigator(1)})
        assert made["status"] == "confirmed"
        assert made["funding"] == {"status": "none", "kind": None}  # not "pending" for ever
    handled = lambda: funding_db.run(lambda s: s.scalar(  # noqa: E731
        select(func.count()).select_from(InboxRecord)))
    wait_for(lambda: handled() >= 2, message="programme and enrolment handled by funding")
    assert funding_db.run(lambda s: s.scalar(select(func.count()).select_from(Funding))) == 0
    queues = [s.queue_name for s in topology.subscriptions([FundingService])]
    assert list_parked(service_config["AMQP_URI"], queues) == []


def test_the_new_methods_refuse_callers_without_their_proof(
        container_factory, service_config, enrolment_db, funding_db, register_file):
    """Being on the broker proves nothing: the office's, the coaches' and the operator's new
    methods answer only their callers; an office method with a made-up session is refused."""
    from services.funding.service import FundingService

    for service in (EnrolmentService, FundingService):
        container_factory(service, service_config).start()
    with ServiceRpcProxy("enrolment", service_config) as anyone:
        for call in (lambda: anyone.office_coverage("x" * 40),
                     lambda: anyone.office_onboard("x" * 40, [], "http://x.example"),
                     lambda: anyone.coverage(None),
                     lambda: anyone.register_coach({}),
                     lambda: anyone.pair_navigator("a", "b"),
                     lambda: anyone.report_overdue_milestones(),
                     lambda: anyone.record_milestone({}),
                     lambda: anyone.name_navigator(DRESDEN, "SN-DN", navigator(1)),
                     lambda: anyone.coach_request_sign_in("a@b.example", "http://x.example/"),
                     lambda: anyone.coach_desk("x" * 40),
                     lambda: anyone.coach_record_milestone("x" * 40, {}),
                     lambda: anyone.coach_document("x" * 40, "a"),
                     lambda: anyone.office_coaching("x" * 40, "SN-DN"),
                     lambda: anyone.office_register_coach("x" * 40, {}),
                     lambda: anyone.office_pair("x" * 40, "a", "b"),
                     lambda: anyone.coaches("SN-DN"),
                     lambda: anyone.remove_coach(str(uuid.uuid4())),
                     lambda: anyone.office_remove_coach("x" * 40, str(uuid.uuid4())),
                     lambda: anyone.navigator_document(DRESDEN, str(uuid.uuid4())),
                     lambda: anyone.office_navigator("x" * 40, "SN-DN", str(uuid.uuid4())),
                     lambda: anyone.office_document("x" * 40, str(uuid.uuid4())),
                     lambda: anyone.office_navigators_csv("x" * 40, "SN-DN"),
                     lambda: anyone.erase_coach("lehmann@ssg.example"),
                     lambda: anyone.erase_office_member("paula@lotsen.example"),
                     lambda: anyone.erase_clerk("digital@wiesloch.example")):
            with pytest.raises(AuthenticationFailed):
                call()
    with ServiceRpcProxy("funding", service_config) as anyone:
        for call in (lambda: anyone.remind_bodies_without_participant("BW-DL", "runde-1"),
                     lambda: anyone.commitments("BW-DL"), lambda: anyone.reminders("BW-DL")):
            with pytest.raises(AuthenticationFailed):
                call()
    from tests.integration.helpers import sign_for
    gateway = ServiceRpcProxy("enrolment", service_config)  # the gateway, a made-up session
    enrolment = gateway.start()
    try:
        sign_for(gateway, service_config)
        for call in (lambda: enrolment.office_coverage("y" * 43),
                     lambda: enrolment.office_pair("y" * 43, "a", "b"),
                     lambda: enrolment.office_remove_coach("y" * 43, str(uuid.uuid4())),
                     lambda: enrolment.coach_desk("y" * 43),
                     lambda: enrolment.coach_document("y" * 43, str(uuid.uuid4())),
                     lambda: enrolment.office_navigator("y" * 43, "SN-DN", str(uuid.uuid4())),
                     lambda: enrolment.office_document("y" * 43, str(uuid.uuid4())),
                     lambda: enrolment.office_navigators_csv("y" * 43, "SN-DN")):
            with pytest.raises(AuthenticationFailed) as refused:
                call()
            assert refused.value.fields == {"session": ["ended or unknown"]}
    finally:
        gateway.stop()
    with ServiceRpcProxy("enrolment", service_config,
                         context_data={"coach_token": "ct_made_up"}) as coach:
        with pytest.raises(AuthenticationFailed):
            coach.coach_navigators()


def test_a_coach_signs_in_sees_their_navigators_and_records_milestones_with_a_pdf(portal,
                                                                                 caplog):
    """The coaches' pages over real HTTP: sign-in by a mailed link, only the coach's own
    Navigators, a milestone with a note, the Agenda with an uploaded PDF, mail to the
    Navigator each time."""
    import logging
    import re

    from tests.integration.test_portal import Browserish, mails_to
    caplog.set_level(logging.INFO)

    def setup(session):
        baden_navigators(session)
        ours = coaching.name_navigator(session, portal["a"], "BW-NAV", navigator(1))
        theirs = coaching.name_navigator(session, portal["b"], "BW-NAV", navigator(2))
        lehmann, _ = coaching.register_coach(session, "BW-NAV", "Lotse Lehmann",
                                             "lehmann@ssg.example", 3)
        lange, _ = coaching.register_coach(session, "BW-NAV", "Lotsin Lange",
                                           "lange@ssg.example", 3)
        start = calendar_today() - timedelta(days=120)
        coaching.pair(session, ours["id"], lehmann.id, start)
        coaching.pair(session, theirs["id"], lange.id, start)
        return ours["id"], theirs["id"]
    ours, theirs = portal["db"].run(setup)
    base, directory = portal["base"], portal["mail"]

    browser = Browserish(base)
    assert browser.get("/coaching/navigatoren").headers["Location"].endswith("/coaching/anmelden")
    page = browser.get("/coaching/anmelden")
    assert page.status_code == 200 and '<html lang="de">' in page.text
    assert browser.post("/coaching/anmelden", {"email": "LEHMANN@ssg.example"}).status_code == 303
    mail = wait_for(lambda: [m for m in mails_to(directory, "lehmann@ssg.example")
                             if "Seiten für das Coaching" in str(m["Subject"])],
                    timeout=30, message="coach sign-in mail")[0]
    link = re.search(r"https?://[^\s\"<>]+/coaching/link/[A-Za-z0-9_-]+",
                     mail.get_body(("plain",)).get_content()).group(0)
    browser.get(link.removeprefix(base))
    token = browser.hidden("token")
    assert browser.post("/coaching/link", {"token": token}).status_code == 303
    listing = browser.follow()
    assert listing.status_code == 200 and "Meine Navigatoren" in listing.text
    assert f'href="/coaching/navigatoren/{ours}"' in listing.text
    assert theirs not in listing.text and "Karin2" not in listing.text
    assert "2 überfällig" in listing.text  # day 120: both milestones past due
    refused = browser.get(f"/coaching/navigatoren/{theirs}")
    assert refused.status_code == 404  # in the coaches' own header, back to their start
    assert "Lotsinnen und Lotsen im Coaching" in refused.text and 'href="/coaching"' in refused.text
    assert browser.get("/portal/uebersicht").status_code == 303  # no way into the portal

    detail = browser.get(f"/coaching/navigatoren/{ours}")
    assert "Karin1 Krause1" in detail.text and 'enctype="multipart/form-data"' in detail.text
    path = f"/coaching/navigatoren/{ours}"
    yesterday = (calendar_today() - timedelta(days=1)).strftime("%d.%m.%Y")
    assert browser.post(path, {"key": "situation", "reached_on": yesterday,
                               "note": "Bestandsaufnahme im Hauptamt",
                               "document_ref": ""}).status_code == 303
    page = browser.follow().text
    assert "Der Meilenstein ist erfasst" in page and "Bestandsaufnahme im Hauptamt" in page

    # The Agenda needs its document: none, then a file that is no PDF, then the PDF.
    browser.get(path)
    missing = browser.post(path, {"key": "agenda", "reached_on": calendar_today().isoformat(),
                                  "note": "", "document_ref": ""})
    assert missing.status_code == 422 and 'id="fehler-document_ref"' in missing.text
    not_pdf = browser.post(path, {"key": "agenda", "reached_on": calendar_today().isoformat(),
                                  "note": "", "document_ref": ""},
                           files={"dokument": ("agenda.docx", b"PK\x03\x04 word",
                                               "application/msword")})
    assert not_pdf.status_code == 422 and 'id="fehler-dokument"' in not_pdf.text
    # 2 MB: above the 1 MiB every other request may have, within the documents' limit.
    pdf = b"%PDF-1.7\n% Digitale Agenda\n" + bytes(range(256)) * 8000
    uploaded = browser.post(path, {"key": "agenda", "reached_on": calendar_today().isoformat(),
                                   "note": "", "document_ref": ""},
                            files={"dokument": ("Agenda Gemeinde.pdf", pdf, "application/pdf")})
    assert uploaded.status_code == 303, uploaded.text[:300]
    page = browser.follow().text
    found = re.search(r'href="(/coaching/dokumente/[0-9a-f-]{36})"', page)
    assert found and "Alle Meilensteine sind erreicht" in page
    download = browser.get(found.group(1))
    assert download.status_code == 200 and download.content == pdf
    assert download.headers["Content-Type"] == "application/pdf"
    assert download.headers["Content-Disposition"].startswith("attachment")

    # Another coach gets neither the Navigator nor the document.
    other = Browserish(base)
    other.get("/coaching/anmelden")
    other.post("/coaching/anmelden", {"email": "lange@ssg.example"})
    mail = wait_for(lambda: [m for m in mails_to(directory, "lange@ssg.example")
                             if "Seiten für das Coaching" in str(m["Subject"])],
                    timeout=30, message="second coach's sign-in mail")[0]
    link = re.search(r"https?://[^\s\"<>]+/coaching/link/[A-Za-z0-9_-]+",
                     mail.get_body(("plain",)).get_content()).group(0)
    other.get(link.removeprefix(base))
    other.post("/coaching/link", {"token": other.hidden("token")})
    assert other.get(found.group(1)).status_code == 404
    assert other.get(path).status_code == 404

    # The Navigator was told when named and at each milestone, once each.
    def told():
        subjects = sorted(str(m["Subject"]).split(":")[0].split(" für ")[0]
                          for m in mails_to(directory, "navigator1@sachsen.example"))
        return subjects if len(subjects) >= 4 else None
    assert wait_for(told, timeout=30, message="the Navigator's mails") == [
        "Ihr Coaching als Digital-Navigator beginnt", "Meilenstein erreicht",
        "Meilenstein erreicht", "Sie sind Digital-Navigator"]

    assert browser.get("/coaching/navigatoren").status_code == 200, browser.last.text[:2000]
    assert browser.post("/coaching/abmelden", {}).status_code == 303
    assert browser.get("/coaching/navigatoren").status_code == 303
    # No link token, no Navigator's name or address in any log line.
    assert token not in caplog.text and "/coaching/link/<token>" in caplog.text
    assert "navigator1@sachsen.example" not in caplog.text and "Krause1" not in caplog.text
    assert "lehmann@ssg.example" not in caplog.text.lower()


def test_the_office_registers_coaches_and_pairs_navigators_in_its_pages(office_system):
    """The office's coaching page: a coach registered, the Navigators of a programme listed,
    one paired; a coach at the maximum is not offered (and refused if sent anyway)."""
    from tests.integration.test_office import signed_in

    def setup(session):
        baden_navigators(session)
        return [coaching.name_navigator(session, ags, "BW-NAV", navigator(n))["id"]
                for n, ags in enumerate((office_system["a"], office_system["b"]))]
    first, second = office_system["db"].run(setup)
    browser = signed_in(office_system)
    page = browser.get("/buero/coaching?programm=BW-NAV")
    assert page.status_code == 200 and "2 Kommunen mit Digital-Navigator" in page.text
    assert "Zuordnen für" not in page.text  # nobody to pair with yet
    bad = browser.post("/buero/coaching/lotsen", {"programm": "BW-NAV", "name": "Lotse Lehmann",
                                                  "email": "lehmann@ssg.example",
                                                  "max_navigators": "viele"})
    assert bad.status_code == 422 and 'id="fehler-max_navigators"' in bad.text
    assert browser.post("/buero/coaching/lotsen", {
        "programm": "BW-NAV", "name": "Lotse Lehmann", "email": "lehmann@ssg.example",
        "max_navigators": "1"}).status_code == 303
    page = browser.follow()
    assert "ist eingetragen" in page.text and page.text.count("Zuordnen für") == 2
    twice = browser.post("/buero/coaching/lotsen", {
        "programm": "BW-NAV", "name": "Lotse Lehmann", "email": "LEHMANN@ssg.example",
        "max_navigators": "3"})
    assert twice.status_code == 422 and "schon eingetragen" in twice.text
    coach_id = re.search(r'<option value="([0-9a-f-]{36})">Lotse Lehmann', twice.text).group(1)
    assert browser.post("/buero/coaching/zuordnen", {
        "programm": "BW-NAV", "navigator_id": first, "coach_id": coach_id}).status_code == 303
    page = browser.follow()
    assert "Die Zuordnung ist gespeichert" in page.text and "Lotse Lehmann, seit" in page.text
    assert "Zuordnen für" not in page.text  # his one place is taken
    full = browser.post("/buero/coaching/zuordnen", {
        "programm": "BW-NAV", "navigator_id": second, "coach_id": coach_id})
    assert full.status_code == 422 and f'id="fehler-coach-{second}"' in full.text
    assert "begleitet schon so viele Navigatoren wie vorgesehen" in full.text
    # A second coach: the paired Navigator may change to her, the other gets her too.
    assert browser.post("/buero/coaching/lotsen", {
        "programm": "BW-NAV", "name": "Lotsin Lange", "email": "lange@ssg.example",
        "max_navigators": "2"}).status_code == 303
    page = browser.follow().text
    assert page.count("Wechseln für") == 1 and page.count("Zuordnen für") == 1
    lange = re.search(r'<option value="([0-9a-f-]{36})">Lotsin Lange', page).group(1)
    assert browser.post("/buero/coaching/zuordnen", {
        "programm": "BW-NAV", "navigator_id": first, "coach_id": lange}).status_code == 303
    page = browser.follow().text
    assert "Lotsin Lange, seit" in page and "Lotse Lehmann, seit" not in page
    coverage = browser.get("/buero/abdeckung?programm=BW-NAV").text
    assert "davon 1 mit Coach" in coverage and 'href="/buero/coaching?programm=BW-NAV"' in coverage
    # Lange leaves: a page asks first and names whom she coaches; then she is gone, and her
    # Navigator is offered to Lehmann again.
    asked = browser.get(f"/buero/coaching/lotsen/{lange}/entfernen?programm=BW-NAV")
    assert asked.status_code == 200 and "Lotsin Lange austragen?" in asked.text
    assert "1 Digital-Navigator ist danach ohne Lotsin oder Lotse" in asked.text
    assert browser.get(f"/buero/coaching/lotsen/{uuid.uuid4()}/entfernen?programm=BW-NAV"
                       ).status_code == 404
    assert browser.get(f"/buero/coaching/lotsen/{lange}/entfernen?programm=KEIN-PROGRAMM"
                       ).status_code == 404
    forged = browser.post(f"/buero/coaching/lotsen/{lange}/entfernen",
                          {"programm": "BW-NAV", "csrf": "falsch"}, csrf=False)
    assert forged.status_code == 403
    assert "Lotsin Lange" in browser.get("/buero/coaching?programm=BW-NAV").text
    assert browser.post(f"/buero/coaching/lotsen/{lange}/entfernen",
                        {"programm": "BW-NAV"}).status_code == 303
    page = browser.follow().text
    assert "ist ausgetragen" in page and "Lotsin Lange" not in page
    assert page.count("Zuordnen für") == 2 and "davon 0 mit Coach" in page
    assert browser.post(f"/buero/coaching/lotsen/{lange}/entfernen",
                        {"programm": "BW-NAV"}).status_code == 404  # gone already


def test_the_office_and_the_municipality_read_the_navigators_agenda(office_system):
    """The PDF a coach uploaded, over HTTP: the office from the Navigator's own page, the
    municipality from its Navigator page; another municipality, an unknown or malformed id
    and an unknown programme get the 404 page."""
    from tests.integration.test_office import signed_in
    from tests.integration.test_portal import Browserish, sign_in
    pdf = b"%PDF-1.7\n% Digitale Agenda\n" + bytes(range(256)) * 40

    def setup(session):
        baden_navigators(session)
        named = coaching.name_navigator(session, office_system["a"], "BW-NAV", navigator(1))
        coach, _ = coaching.register_coach(session, "BW-NAV", "Lotse Lehmann",
                                           "lehmann@ssg.example", 3)
        coaching.pair(session, named["id"], coach.id, calendar_today() - timedelta(days=150))
        done = coaching.record_milestone(
            session, coach, named["id"], "agenda", calendar_today(), None, None,
            {"filename": "Agenda Gemeinde.pdf", "content": pdf})
        return named["id"], done["milestones"][1]["document_ref"][len("document:"):]
    navigator_id, document_id = office_system["db"].run(setup)

    office = signed_in(office_system)
    listing = office.get("/buero/coaching?programm=BW-NAV").text
    detail_path = f"/buero/coaching/navigatoren/{navigator_id}?programm=BW-NAV"
    assert f'href="{detail_path}"' in listing
    detail = office.get(detail_path)
    assert detail.status_code == 200 and "Karin1 Krause1" in detail.text
    assert "Lotse Lehmann" in detail.text and "überfällig" in detail.text  # the situation
    assert f'href="/buero/coaching/dokumente/{document_id}">Agenda Gemeinde.pdf' in detail.text
    download = office.get(f"/buero/coaching/dokumente/{document_id}")
    assert download.status_code == 200 and download.content == pdf
    assert download.headers["Content-Type"] == "application/pdf"
    assert download.headers["Content-Disposition"] == 'attachment; filename="Agenda_Gemeinde.pdf"'
    # The programme's list as a CSV file, with the Agenda reached today.
    report = office.get("/buero/coaching/navigatoren.csv?programm=BW-NAV")
    assert 'href="/buero/coaching/navigatoren.csv?programm=BW-NAV"' in listing
    assert report.status_code == 200 and report.headers["Content-Type"].startswith("text/csv")
    assert report.headers["Content-Disposition"] == 'attachment; filename="navigatoren-BW-NAV.csv"'
    rows = report.content.decode("utf-8-sig").splitlines()
    assert rows[0].endswith(";Situation vor Ort erfasst;Digitale Agenda geschrieben")
    [row] = rows[1:]
    assert ";Karin1 Krause1;navigator1@sachsen.example;" in row and ";Lotse Lehmann;" in row
    assert row.endswith(f";erreicht am {calendar_today().strftime('%d.%m.%Y')}")
    for path in ("/buero/coaching/navigatoren.csv?programm=KEIN-PROGRAMM",
                 "/buero/coaching/navigatoren.csv?programm=BW-DL",
                 "/buero/coaching/navigatoren.csv",
                 f"/buero/coaching/dokumente/{uuid.uuid4()}", "/buero/coaching/dokumente/x",
                 f"/buero/coaching/navigatoren/{uuid.uuid4()}?programm=BW-NAV",
                 f"/buero/coaching/navigatoren/{navigator_id}?programm=BW-DL",
                 f"/buero/coaching/navigatoren/{navigator_id}?programm=kein%20Code",
                 f"/buero/coaching/navigatoren/{navigator_id}"):
        assert office.get(path).status_code == 404, path

    clerk = sign_in(office_system, f"hauptamt@{office_system['a']}.example")
    page = clerk.get("/portal/navigator/BW-NAV").text
    assert f'href="/portal/dokumente/{document_id}"' in page
    got = clerk.get(f"/portal/dokumente/{document_id}")
    assert got.status_code == 200 and got.content == pdf
    # Another person takes over: the Agenda stays the municipality's, linked in the history.
    office_system["db"].run(coaching.name_navigator, office_system["a"], "BW-NAV",
                            navigator(2), replace=True)
    page = clerk.get("/portal/navigator/BW-NAV").text
    assert "Frühere Digital-Navigatoren" in page
    assert f'href="/portal/dokumente/{document_id}">Digitale Agenda geschrieben (PDF)' in page
    assert clerk.get(f"/portal/dokumente/{document_id}").content == pdf
    assert clerk.get(f"/buero/coaching/dokumente/{document_id}").status_code != 200
    neighbour = sign_in(office_system, f"hauptamt@{office_system['b']}.example")
    refused = neighbour.get(f"/portal/dokumente/{document_id}")
    assert refused.status_code == 404 and pdf not in refused.content
    anonymous = Browserish(office_system["base"])
    for path in (f"/portal/dokumente/{document_id}", f"/buero/coaching/dokumente/{document_id}",
                 detail_path, "/buero/coaching/navigatoren.csv?programm=BW-NAV"):
        assert anonymous.get(path).status_code == 303, path  # to the sign-in page first


def test_every_module_and_every_milestone_bring_a_certificate_that_lists_the_milestones(
        container_factory, mail_config, enrolment_db, register_file, smtp):
    """Through the services: the Navigator attends both modules (the provider records it)
    and the coach records both milestones; only then does the certificate come, by mail, with
    the milestones on it."""
    import io

    from pypdf import PdfReader

    from services.certificates.service import CertificatesService

    inbox, _ = smtp
    enrolment_db.run(import_register, [b for b in parse_register(register_file)
                                       if b.land == "14"])

    def setup(session):
        programme = domain.create_programme(session, {
            "code": "SN-DN", "name": "Digital-Navigatoren Sachsen", "land": "14",
            "role_name": "Digital-Navigator", "eligible_kinds": ["gemeinde", "kreis"],
            "enrolment_opens_on": calendar_today() - timedelta(days=100),
            "enrolment_closes_on": date(2099, 1, 1), "funded": False})
        coaching.define(session, programme, MILESTONES)
        domain.register_municipality(session, DRESDEN, "Hauptamt", "hauptamt@dresden.example")
        _, token = domain.create_provider(session, "Sächsischer Städte- und Gemeindetag")
        return token
    token = enrolment_db.run(setup)
    for service in (EnrolmentService, CertificatesService, NotificationsService):
        container_factory(service, mail_config).start()
    config = mail_config
    first = calendar_today() - timedelta(days=20)
    with ServiceRpcProxy("enrolment", config, context_data={"provider_token": token}) as p:
        course = p.create_course({
            "programme_code": "SN-DN", "title": "Grundlagen für Navigatoren",
            "location": "Dresden", "capacity": 10, "open": True,
            "modules": [{"number": n, "title": title,
                         "date": (first + timedelta(days=7 * n)).isoformat()}
                        for n, title in ((1, "Sächsisches eGovernment-Gesetz"),
                                         (2, "Basiskomponenten und OZG"))]})["id"]
    with SignedRpc("enrolment", config) as town:
        named = town.name_navigator(DRESDEN, "SN-DN", navigator(1))
        enrolled = town.enrol(DRESDEN, {"course_id": course, "participant": navigator(1)})
    with SignedRpc("enrolment", config, operator=True) as office:
        coach = office.register_coach({"programme_code": "SN-DN", "name": "Lotse Lehmann",
                                       "email": "lehmann@ssg.example", "max_navigators": 5})
        office.pair_navigator(named["id"], coach["id"],
                              (calendar_today() - timedelta(days=30)).isoformat())
    with ServiceRpcProxy("enrolment", config, context_data={"provider_token": token}) as p:
        for module in (1, 2):
            p.record_attendance(course, module, [enrolled["id"]])
    with ServiceRpcProxy("enrolment", config,
                         context_data={"coach_token": coach["token"]}) as lehmann:
        lehmann.record_milestone({"navigator_id": named["id"], "key": "situation",
                                  "reached_on": (calendar_today() - timedelta(days=5)).isoformat()})

    def certificate_mails():
        return [m for m in inbox.messages if "Zertifikat" in str(m["Subject"])]
    eventlet.sleep(2)  # every module attended, one milestone still open: nothing yet
    assert certificate_mails() == []
    with SignedRpc("enrolment", config) as town:
        assert town.get_enrolment(DRESDEN, enrolled["id"])["status"] == "confirmed"
    with ServiceRpcProxy("enrolment", config,
                         context_data={"coach_token": coach["token"]}) as lehmann:
        lehmann.record_milestone({"navigator_id": named["id"], "key": "agenda",
                                  "reached_on": calendar_today().isoformat(),
                                  "document_ref": "Stadtratsbeschluss 2026/117"})
    [mail, *_] = wait_for(certificate_mails, timeout=60, message="the certificate mail")
    assert mail["To"].addresses[0].addr_spec == "navigator1@sachsen.example"
    [pdf] = [part.get_content() for part in mail.iter_attachments()]
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "Meilensteine" in text
    assert "Situation vor Ort erfasst" in text and "Digitale Agenda geschrieben" in text
