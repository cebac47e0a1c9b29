"""Outreach: the reminder to bodies still without a confirmed participant, through funding and
notifications to a real SMTP server; each body receives each campaign once."""
from datetime import date

import eventlet
from sqlalchemy import func, select

from services.enrolment import domain as enrolment_domain
from services.enrolment.register import import_register
from services.enrolment.service import EnrolmentService
from services.funding import domain as funding_domain
from services.funding.service import FundingService
from services.notifications.models import Notice
from services.notifications.service import NotificationsService
from tests.funding_support import policy
from tests.integration.helpers import (
    PROGRAMME,
    SignedRpc,
    bw_records,
    course_data,
    participant,
    wait_for,
)
from tests.integration.test_notifications import (  # noqa: F401 (fixtures)
    mail_config,
    notifications_db,
    smtp,
)

FEE = 50_000
SUBJECT = "Noch kein geförderter Platz"


def test_each_body_without_a_participant_is_reminded_once_per_campaign(
        container_factory, mail_config, enrolment_db, funding_db, register_file, smtp):
    inbox, _ = smtp
    for service in (EnrolmentService, FundingService, NotificationsService):
        container_factory(service, mail_config).start()
    enrolment_db.run(import_register, bw_records(register_file))
    kreise = dict(PROGRAMME, eligible_kinds=["kreis"])  # 35 Landkreise and 9 Stadtkreise

    def setup(session):
        programme = enrolment_domain.create_programme(session, kreise)
        provider, _ = enrolment_domain.create_provider(session, "Verwaltungsschule")
        course = enrolment_domain.create_course(session, provider, course_data(capacity=5))
        # Rhein-Neckar-Kreis enrols; Karlsruhe (Landkreis) and Heidelberg do not;
        # Böblingen has no registered contact.
        for ags, who in (("08226000", "rnk"), ("08215000", "lka"), ("08221000", "hd")):
            enrolment_domain.register_municipality(session, ags, f"Hauptamt {who}",
                                                   f"hauptamt@{who}.example")
        return programme.id, str(course.id)
    programme_id, course = enrolment_db.run(setup)
    funding_db.run(funding_domain.set_policy, programme_id, "BW-DL",
                   policy(44 * FEE, FEE, 1, date(2027, 6, 30)))
    with SignedRpc("enrolment", mail_config) as enrolment:
        enrolled = enrolment.enrol("08226000", {"course_id": course,
                                                "participant": participant(1)})
        wait_for(lambda: enrolment.get_enrolment("08226000", enrolled["id"])["funding"]
                 ["status"] == "granted", message="Rhein-Neckar-Kreis funded")

    def remind():
        with SignedRpc("funding", mail_config, operator=True) as operator:
            return operator.remind_bodies_without_participant("BW-DL", "erinnerung-test")
    # Two operators start the same campaign at once, and it is started again later.
    runs = [eventlet.spawn(remind) for _ in range(2)]
    first, second = sorted((r.wait() for r in runs), key=lambda r: -r["reminded"])
    with SignedRpc("funding", mail_config, operator=True) as funding:
        again = funding.remind_bodies_without_participant("BW-DL", "erinnerung-test")
        other = funding.remind_bodies_without_participant("BW-DL", "zweite-runde")
        reminded = funding.reminders("BW-DL")
    assert (first["reminded"], second["reminded"], again["reminded"]) == (43, 0, 0)
    assert again["already_reminded"] == 43
    assert other["reminded"] == 43
    assert len(reminded) == 86 and "08226000" not in {r["ags"] for r in reminded}

    def reminders_arrived():
        got = [m for m in inbox.messages if SUBJECT in str(m["Subject"])]
        return got if len(got) >= 4 else None
    mails = wait_for(reminders_arrived, message="reminders delivered")
    # Every notice is written and sent: nothing further will arrive.
    db = notifications_db(mail_config)
    try:
        wait_for(lambda: db.run(lambda s: s.scalar(select(func.count()).select_from(Notice)
                                                   .where(Notice.status != "sent"))) == 0,
                 message="every notice sent")
    finally:
        db.dispose()
    mails = [m for m in inbox.messages if SUBJECT in str(m["Subject"])]
    recipients = sorted(m["To"].addresses[0].addr_spec for m in mails)
    assert recipients == ["hauptamt@hd.example", "hauptamt@hd.example",
                          "hauptamt@lka.example", "hauptamt@lka.example"]
    text = mails[0].get_body(("plain",)).get_content()
    assert "30. Juni 2027" in text and "Kommunale Digitallotsen Baden-Württemberg" in text
