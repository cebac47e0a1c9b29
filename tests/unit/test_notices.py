"""Notices: which events cause which mails, rendering in German, the file transport."""
import email
import uuid
from datetime import timedelta

import pytest

from services.common.clock import calendar_today
from services.common.db import DatabaseHandle
from services.notifications import delivery, domain
from services.notifications.models import (
    Base,
    EarlyFundingEvent,
    InboxRecord,
    KnownEnrolment,
    Notice,
    OutboxMessage,
)

COURSE = {"title": "Basisseminar", "location": "Wiesloch", "provider_name": "Verwaltungsschule",
          "programme_code": "BW-DL", "programme_name": "Kommunale Digitallotsen Baden-Württemberg",
          "modules": [{"number": 1, "title": "Prozesse & <Pläne>",
                       "date": calendar_today() + timedelta(days=5)}]}


@pytest.fixture
def db():
    handle = DatabaseHandle("sqlite://", "notifications", OutboxMessage, InboxRecord)
    Base.metadata.create_all(handle.engine)
    handle.run(domain.municipality_registered, {
        "ags": "08226098", "name": "Wiesloch, Stadt", "contact_name": "Hauptamt Wiesloch",
        "contact_email": "digital@wiesloch.example"}, "e0")
    yield handle
    handle.dispose()


def created(status="confirmed", family_name="Weiß"):
    return {"enrolment_id": uuid.uuid4(), "programme_id": uuid.uuid4(), "course_id": uuid.uuid4(),
            "ags": "08226098", "status": status, "waitlist_position": 2 if status != "confirmed"
            else None, "participant": {"given_name": "Jürgen", "family_name": family_name,
                                       "email": "jw@wiesloch.example"}, "course": COURSE}


def notices(db):
    return db.run(lambda s: [(n.template, n.recipient_role, n.to_email)
                             for n in s.query(Notice).order_by(Notice.created_at)])


def test_enrolment_tells_participant_and_municipality_once(db):
    payload = created()
    db.run(domain.enrolment_created, payload, "event-1")
    db.run(domain.enrolment_created, payload, "event-1")  # the same event again
    assert notices(db) == [("enrolment_confirmed", "participant", "jw@wiesloch.example"),
                           ("enrolment_confirmed", "municipality", "digital@wiesloch.example")]


def test_unknown_municipality_is_not_ready(db):
    with pytest.raises(domain.NotReady):
        db.run(domain.enrolment_created, dict(created(), ags="08226095"), "e")
    with pytest.raises(domain.NotReady):  # an unknown enrolment of an unknown municipality
        db.run(domain.funding_event, "funding_waiting",
               {"enrolment_id": uuid.uuid4(), "ags": "08226095"}, "e")
    with pytest.raises(domain.NotReady):
        db.run(domain.certificate_issued, {"enrolment_id": uuid.uuid4(),
                                           "certificate_number": "N", "verification_url": "u"},
               "e")


def early_events(db):
    return db.run(lambda s: [(e.event_id, e.event_type) for e in s.query(EarlyFundingEvent)])


def test_a_funding_event_before_its_enrolment_waits_and_its_mails_follow_the_enrolment(db):
    payload = created()
    granted = {"enrolment_id": payload["enrolment_id"], "ags": "08226098", "kind": "guaranteed",
               "amount_cents": 50000, "sequence": 1}
    db.run(domain.funding_event, "funding_granted", granted, "f1")  # no NotReady, no retry
    db.run(domain.funding_event, "funding_granted", granted, "f1")  # delivered twice
    assert notices(db) == [] and early_events(db) == [("f1", "funding_granted")]
    db.run(domain.enrolment_created, payload, "e1")
    assert sorted(notices(db)) == [
        ("enrolment_confirmed", "municipality", "digital@wiesloch.example"),
        ("enrolment_confirmed", "participant", "jw@wiesloch.example"),
        ("funding_granted", "municipality", "digital@wiesloch.example"),
        ("funding_granted", "participant", "jw@wiesloch.example")]
    assert early_events(db) == []
    keys = db.run(lambda s: sorted(n.dedup_key for n in s.query(Notice)))
    assert "f1:participant:funding_granted" in keys  # the key it has when it comes late
    # Either event again, or the funding event after all: nothing new.
    db.run(domain.enrolment_created, payload, "e1")
    db.run(domain.funding_event, "funding_granted", granted, "f1")
    assert len(notices(db)) == 4 and early_events(db) == []
    granted_mail = db.run(lambda s: s.query(Notice).filter_by(
        dedup_key="f1:participant:funding_granted").one().context)
    subject, text, _ = delivery.render("funding_granted", dict(
        granted_mail, recipient_role="participant", to_name="x", office_name="Büro"))
    assert subject == "Förderung bewilligt: Jürgen Weiß – Basisseminar" and "500,00 €" in text


def test_waiting_funding_events_follow_a_cancellation_that_comes_first_and_it_stays_final(db):
    payload = created()
    db.run(domain.funding_event, "funding_waiting",
           {"enrolment_id": payload["enrolment_id"], "ags": "08226098", "sequence": 1}, "f1")
    db.run(domain.funding_event, "funding_released",
           {"enrolment_id": payload["enrolment_id"], "ags": "08226098", "amount_cents": 0,
            "sequence": 2}, "f2")
    db.run(domain.enrolment_cancelled, dict(
        payload, previous_status="confirmed", cancelled_by="municipality", reason=None,
        sequence=2), "e2")
    db.run(domain.enrolment_created, dict(payload, sequence=1), "e1")  # late, older
    assert db.run(lambda s: s.get(KnownEnrolment, payload["enrolment_id"]).status) == "cancelled"
    assert sorted(t for t, _, _ in notices(db)) == [
        "enrolment_cancelled", "enrolment_cancelled", "enrolment_confirmed",
        "enrolment_confirmed", "funding_released", "funding_waiting"]
    assert early_events(db) == []


def test_funding_mails_go_to_the_municipality_and_granted_also_to_the_participant(db):
    payload = created()
    db.run(domain.enrolment_created, payload, "e1")
    db.run(domain.funding_event, "funding_granted",
           {"enrolment_id": payload["enrolment_id"], "kind": "pool", "amount_cents": 50000},
           "e2")
    db.run(domain.funding_event, "funding_waiting", {"enrolment_id": payload["enrolment_id"]},
           "e3")
    assert notices(db)[2:] == [
        ("funding_granted", "participant", "jw@wiesloch.example"),
        ("funding_granted", "municipality", "digital@wiesloch.example"),
        ("funding_waiting", "municipality", "digital@wiesloch.example")]


def test_course_cancellation_sends_one_notice_not_two(db):
    payload = created()
    db.run(domain.enrolment_created, payload, "e1")
    cancelled = dict(payload, previous_status="confirmed", cancelled_by="course_cancelled",
                     reason="Dozent erkrankt")
    db.run(domain.enrolment_cancelled, cancelled, "e2")
    db.run(domain.course_cancelled, {"enrolment_ids": [payload["enrolment_id"]],
                                     "reason": "Dozent erkrankt"}, "e3")
    assert [t for t, _, _ in notices(db)].count("course_cancelled") == 2
    assert "enrolment_cancelled" not in [t for t, _, _ in notices(db)]


def test_reminder_once_in_the_week_before_the_first_module(db):
    db.run(domain.enrolment_created, created(), "e1")
    db.run(domain.enrolment_created, created("waitlisted"), "e2")
    assert db.run(domain.course_reminders, calendar_today()) == 1
    assert db.run(domain.course_reminders, calendar_today()) == 0
    assert db.run(domain.course_reminders, calendar_today() - timedelta(days=10)) == 0


def test_rendered_mail_is_german_escaped_and_identified_by_the_notice(db, tmp_path):
    db.run(domain.enrolment_created, created(family_name="Weiß <script>"), "e1")
    notice = db.run(lambda s: s.query(Notice).first())
    context = dict(notice.context, recipient_role=notice.recipient_role,
                   to_name=notice.to_name, office_name="Ihr Programmbüro")
    message = delivery.build_message(notice, ("Programmbüro", "noreply@lotsen.example"), context)
    transport = delivery.FileTransport(tmp_path)
    transport.send(notice.id, message)
    transport.send(notice.id, message)  # a retry after a crash: still one file
    [path] = list(tmp_path.glob("*.eml"))
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert str(parsed["Subject"]) == "Anmeldung bestätigt: Basisseminar in Wiesloch"
    assert parsed["Message-ID"] == f"<{notice.id}@notices.lotsen>"
    text = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    assert "Guten Tag Jürgen Weiß <script>," in text and "Mit freundlichen Grüßen" in text
    assert "<script>" not in html and "Weiß &lt;script&gt;" in html
    assert "Prozesse &amp; &lt;Pläne&gt;" in html


@pytest.mark.parametrize("template", [
    "enrolment_confirmed", "enrolment_waitlisted", "enrolment_promoted", "enrolment_cancelled",
    "course_cancelled", "funding_granted", "funding_waiting", "funding_released",
    "course_reminder", "certificate_issued", "certificate_revoked"])
def test_every_template_renders_for_both_recipients(template):
    for role in ("participant", "municipality"):
        subject, text, html = delivery.render(template, {
            "recipient_role": role, "to_name": "Hauptamt", "participant_name": "Jürgen Weiß",
            "municipality": "Wiesloch, Stadt", "course": COURSE, "office_name": "Programmbüro",
            "programme_name": COURSE["programme_name"], "waitlist_position": 1,
            "cancelled_by": "Ihre Kommune", "reason": "Grund", "kind": "pool",
            "amount_cents": 50000, "amount": "500,00 €", "converted": False, "days": 5,
            "number": "BW-DL-2026-000001", "verification_url": "https://x/verify/A"})
        assert subject and "Guten Tag" in text and "Mit freundlichen Grüßen" in text
        assert html.startswith("<p>Guten Tag")


def test_euros_in_german_notation():
    assert domain.euros(80_000_000) == "800.000,00 €"
    assert domain.euros(50_050) == "500,50 €"


def test_a_failure_counts_only_while_the_lease_is_still_ours(db):
    db.run(domain.enrolment_created, created(), "e1")
    [mine, _] = db.run(domain.claim_due, 10, 60)
    assert db.run(domain.claim_due, 10, 60) == []  # leased: nobody else takes them
    stale = mine.lease_until - timedelta(seconds=1)  # an earlier lease of a dead instance

    def state(session):
        notice = session.get(Notice, mine.id)
        return notice.attempts, notice.lease_until is None, notice.status
    db.run(domain.record_failure, mine.id, stale, "SMTP 451", False, 3, 1, 10)
    assert db.run(state) == (0, False, "pending")  # not ours any more: left alone
    db.run(domain.record_failure, mine.id, mine.lease_until, "SMTP 451", False, 3, 1, 10)
    assert db.run(state) == (1, True, "pending")  # ours: counted, lease given back
    db.run(domain.record_sent, [mine.id])
    db.run(domain.record_failure, mine.id, None, "late", True, 3, 1, 10)
    assert db.run(state)[2] == "sent"  # a sent notice never turns failed


def test_a_late_promotion_does_not_bring_a_cancelled_enrolment_back_for_reminders():
    """A retried enrolment_promoted handled after enrolment_cancelled (issue: the reminder
    then mailed a cancelled participant): only newer events move notifications' copy."""
    import uuid as uuid_module
    from datetime import date as date_type
    from datetime import datetime as datetime_type
    from datetime import timezone as tz

    from services.common.db import DatabaseHandle
    from services.notifications import domain as notifications
    from services.notifications.models import Base, InboxRecord, KnownEnrolment, OutboxMessage

    handle = DatabaseHandle("sqlite://", "notifications", OutboxMessage, InboxRecord)
    Base.metadata.create_all(handle.engine)
    try:
        enrolment_id = uuid_module.uuid4()
        first = date_type.today() + __import__("datetime").timedelta(days=3)
        base = {"enrolment_id": enrolment_id, "programme_id": uuid_module.uuid4(),
                "course_id": uuid_module.uuid4(), "ags": "08226098",
                "participant": {"given_name": "Jörg", "family_name": "Weiß",
                                "email": "jw@example.org"},
                "course": {"title": "Basisseminar", "location": "Wiesloch",
                           "provider_name": "VWA", "programme_code": "BW-DL",
                           "programme_name": "Digitallotsen",
                           "modules": [{"number": 1, "title": "Modul 1", "date": first}]}}
        moment = datetime_type.now(tz.utc)
        handle.run(notifications.municipality_registered, {
            "ags": "08226098", "name": "Wiesloch", "contact_name": "Hauptamt",
            "contact_email": "hauptamt@wiesloch.example"}, "e0")
        handle.run(notifications.enrolment_created, dict(
            base, status="waitlisted", waitlist_position=1, enrolled_at=moment, sequence=1), "e1")
        handle.run(notifications.enrolment_cancelled, dict(
            base, previous_status="confirmed", cancelled_by="municipality", reason=None,
            cancelled_at=moment, sequence=3), "e3")
        handle.run(notifications.enrolment_promoted, dict(  # retried, handled last
            base, confirmed_at=moment, sequence=2), "e2")
        status = handle.run(lambda s: s.get(KnownEnrolment, enrolment_id).status)
        assert status == "cancelled"
        assert handle.run(notifications.course_reminders, date_type.today()) == 0
    finally:
        handle.dispose()


def test_an_older_registration_arriving_late_leaves_the_newer_contact():
    from services.common.db import DatabaseHandle
    from services.notifications import domain as notifications
    from services.notifications.models import Base, Contact, InboxRecord, OutboxMessage

    handle = DatabaseHandle("sqlite://", "notifications", OutboxMessage, InboxRecord)
    Base.metadata.create_all(handle.engine)
    try:
        def registered(email, sequence):
            return {"ags": "08226098", "name": "Wiesloch", "contact_name": "Hauptamt",
                    "contact_email": email, "sequence": sequence}
        handle.run(notifications.municipality_registered, registered("neu@wiesloch.example", 2),
                   "e2")
        handle.run(notifications.municipality_registered, registered("alt@wiesloch.example", 1),
                   "e1")  # retried, handled last
        assert handle.run(lambda s: s.get(Contact, "08226098").contact_email) == \
            "neu@wiesloch.example"
    finally:
        handle.dispose()


def test_an_insert_skipping_duplicates_is_compiled_once_and_skips_them(db):
    """The inbox's and the notices' INSERT ... ON CONFLICT DO NOTHING comes from SQLAlchemy's
    statement cache after its first use (the dialects' own construct was compiled anew on
    every call), renders the conflict clause, and skips a row whose key exists."""
    from datetime import datetime, timezone

    from sqlalchemy.engine.default import CACHE_HIT

    from services.common.outbox import insert_skipping_duplicates
    table = InboxRecord.__table__
    moment = datetime.now(timezone.utc)

    def insert(session, event_id):
        result = insert_skipping_duplicates(session, table, [{
            "consumer": "test", "event_id": event_id, "event_type": "x", "handled_at": moment}],
            ["consumer", "event_id"], returning=[table.c.event_id])
        return result.context.cache_hit, result.context.compiled.string, result.all()
    first, second = uuid.uuid4(), uuid.uuid4()
    db.run(insert, first)  # the first call may compile
    hit, sql, rows = db.run(insert, second)
    assert hit == CACHE_HIT and "ON CONFLICT (consumer, event_id) DO NOTHING" in sql
    assert [r.event_id for r in rows] == [second]
    assert db.run(insert, second)[2] == []  # the same key again: skipped, nothing returned
