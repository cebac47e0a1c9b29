"""Data protection rules at each service, on PostgreSQL: retention with a controllable clock,
what an erasure refuses, an erasure that reaches a consumer before the events it erases, and
the mail log's retention."""
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from services.certificates import domain as certificates
from services.certificates import privacy as certificate_privacy
from services.certificates.credentials import KeyRing
from services.certificates.models import Certificate
from services.common.clock import calendar_today
from services.common.db import DatabaseHandle
from services.common.errors import NotFound, RuleViolation, ValidationFailed
from services.common.events import build_event, parse_event
from services.enrolment import domain
from services.enrolment import privacy
from services.enrolment.models import Enrolment, Erasure
from services.enrolment.register import import_register
from services.notifications import domain as notifications
from services.notifications import privacy as mail_privacy
from services.notifications.models import KnownEnrolment, Notice
from services.notifications.models import InboxRecord as MailInbox
from services.notifications.models import OutboxMessage as MailOutbox
from tests.integration.helpers import PROGRAMME, bw_records, gemeinden, outbox_events

KEY = b"k" * 32
TODAY = calendar_today()


def person(n):
    return {"given_name": f"Irmgard{n}", "family_name": f"Lindqvist{n}",
            "email": f"irmgard.lindqvist{n}@example.org", "department": "Kämmerei"}


def course(first_day, title="Basisseminar"):
    return {"programme_code": "BW-DL", "title": title, "location": "Wiesloch",
            "capacity": 10, "open": True,
            "modules": [{"number": n, "title": f"Modul {n}", "date": first_day + timedelta(days=n)}
                        for n in range(1, 4)]}


@pytest.fixture
def world(enrolment_db, register_file):
    """BW-DL keeping participant data 30 days; a course that ended 47 days ago, one to come."""
    enrolment_db.run(import_register, bw_records(register_file))
    ags = gemeinden(register_file, 1)[0]

    def run(session):
        domain.create_programme(session, dict(PROGRAMME, retention_days=30))
        provider, _ = domain.create_provider(session, "VWA")
        past = domain.create_course(session, provider, course(TODAY - timedelta(days=50)))
        coming = domain.create_course(session, provider, course(TODAY + timedelta(days=20),
                                                                "Aufbauseminar"))
        return provider, past.id, coming.id
    provider, past, coming = enrolment_db.run(run)
    return {"ags": ags, "provider": provider, "past": past, "coming": coming}


def enrol(handle, world, course_id, n):
    return handle.run(domain.enrol, world["ags"], {"course_id": course_id,
                                                   "participant": person(n)})


def erased_events(handle):
    return [e["payload"] for e in outbox_events(handle, "participant_erased")]


def test_retention_erases_what_expired_through_the_erasure_path(enrolment_db, world):
    completed = enrol(enrolment_db, world, world["past"], 1)
    enrolment_db.run(lambda s: [domain.record_attendance(
        s, s.merge(world["provider"]), {"course_id": world["past"], "module_number": m,
                                         "enrolment_ids": [uuid.UUID(completed["id"])]})
        for m in (1, 2, 3)])
    cancelled = enrol(enrolment_db, world, world["past"], 2)
    enrolment_db.run(domain.cancel_enrolment, uuid.UUID(cancelled["id"]), ags=world["ags"])
    coming = enrol(enrolment_db, world, world["coming"], 3)

    # Today: the completed course ended 47 days ago (> 30); the cancellation is from today.
    assert enrolment_db.run(privacy.apply_retention, KEY, TODAY) == {
        "people": 1, "enrolments": 1, "navigators": 0}
    [event] = erased_events(enrolment_db)
    assert event["cause"] == "retention"
    assert [e["enrolment_id"] for e in event["enrolments"]] == [completed["id"]]
    rows = enrolment_db.run(lambda s: {str(e.id): e for e in s.scalars(select(Enrolment))})
    assert rows[completed["id"]].email.endswith("@erased.invalid")
    assert rows[completed["id"]].department is None and rows[completed["id"]].erased_at
    assert rows[cancelled["id"]].email == person(2)["email"]
    # The same day again: nothing more.
    assert enrolment_db.run(privacy.apply_retention, KEY, TODAY)["enrolments"] == 0

    # 31 days on the cancellation has expired; the course to come has not ended yet.
    later = TODAY + timedelta(days=31)
    assert enrolment_db.run(privacy.apply_retention, KEY, later)["enrolments"] == 1
    assert [e["enrolments"][0]["enrolment_id"] for e in erased_events(enrolment_db)] == [
        completed["id"], cancelled["id"]]
    assert enrolment_db.run(lambda s: s.get(Enrolment, uuid.UUID(coming["id"])).email) == \
        person(3)["email"]
    # Its course ends on day 23; 30 days after that it goes too.
    assert enrolment_db.run(privacy.apply_retention, KEY,
                            TODAY + timedelta(days=54))["enrolments"] == 1
    assert enrolment_db.run(lambda s: s.scalar(select(func.count()).select_from(Erasure))) == 3


def test_retention_of_an_enrolment_leaves_the_person_s_active_navigator_row(
        enrolment_db, world):
    """The participant's seminar ended long ago, but they are their body's Navigator in a
    coaching programme now: the enrolment is erased, the Navigator row (still coaching)
    keeps them."""
    from services.enrolment import coaching
    from services.enrolment.models import Navigator

    def coaching_programme(session):
        programme = domain.create_programme(session, dict(PROGRAMME, code="BW-DN",
                                                          name="Digital-Navigatoren"))
        coaching.define(session, programme, [{"key": "agenda", "title": "Agenda",
                                              "due_days": 30}])
    enrolment_db.run(coaching_programme)
    done = enrol(enrolment_db, world, world["past"], 1)
    enrolment_db.run(coaching.name_navigator, world["ags"], "BW-DN", person(1))
    assert enrolment_db.run(privacy.apply_retention, KEY,
                            TODAY + timedelta(days=30))["enrolments"] == 1
    assert enrolment_db.run(lambda s: s.get(Enrolment, uuid.UUID(done["id"])).erased_at)
    assert enrolment_db.run(lambda s: s.scalars(select(Navigator.email)).all()) == [
        person(1)["email"]]
    assert [e["navigators"] for e in erased_events(enrolment_db)] == [[]]


def test_erasure_is_refused_while_a_course_runs_and_for_unknown_addresses(enrolment_db, world):
    enrolled = enrol(enrolment_db, world, world["coming"], 4)
    with pytest.raises(RuleViolation) as refused:
        enrolment_db.run(privacy.erase_participant, person(4)["email"], "Antrag", KEY)
    assert enrolled["id"] in str(refused.value.fields["email"])
    assert erased_events(enrolment_db) == []
    with pytest.raises(NotFound):
        enrolment_db.run(privacy.erase_participant, "niemand@example.org", "Antrag", KEY)
    # Cancelled first, then erased; a second request finds the earlier erasure.
    enrolment_db.run(domain.cancel_enrolment, uuid.UUID(enrolled["id"]), ags=world["ags"])
    first = enrolment_db.run(privacy.erase_participant, person(4)["email"].upper(), "Antrag", KEY)
    again = enrolment_db.run(privacy.erase_participant, person(4)["email"], "Antrag", KEY)
    assert first["status"] == "erased" and again["status"] == "already_erased"
    assert again["erasure_id"] == first["erasure_id"]
    # The record identifies no one: a keyed hash, no address.
    record = enrolment_db.run(lambda s: s.scalars(select(Erasure)).one())
    assert person(4)["email"] not in str(vars(record))
    # The same address may be enrolled again later (a new, lawful enrolment).
    again_enrolled = enrol(enrolment_db, world, world["coming"], 4)
    assert again_enrolled["participant"]["email"] == person(4)["email"]


def test_the_erasure_rpc_checks_its_input(enrolment_db, world):
    from services.common.schemas import load
    from services.enrolment.schemas import ErasureIn
    with pytest.raises(ValidationFailed) as bad:
        load(ErasureIn(), {"email": "kein-name", "reason": ""}, "erasure")
    assert set(bad.value.fields) == {"email", "reason"}


def erased_payload(enrolment_id, ags="08226098"):
    return {"erasure_id": uuid.uuid4(), "pseudonym": "erased-0123456789ab", "cause": "request",
            "erased_at": datetime.now(timezone.utc),
            "enrolments": [{"enrolment_id": enrolment_id, "programme_id": uuid.uuid4(),
                            "course_id": uuid.uuid4(), "ags": ags}]}


def test_an_erasure_that_reaches_notifications_first_keeps_the_late_events_out(
        notifications_pg_url, tmp_path):
    handle = DatabaseHandle(notifications_pg_url, "notifications", MailOutbox, MailInbox)
    try:
        handle.run(notifications.municipality_registered, {
            "ags": "08226098", "name": "Wiesloch", "contact_name": "Hauptamt",
            "contact_email": "hauptamt@wiesloch.example", "sequence": 1}, "e0")
        enrolment_id = uuid.uuid4()
        handle.run(mail_privacy.participant_erased,
                   parse_payload("participant_erased", erased_payload(enrolment_id)), tmp_path)
        late = parse_payload("enrolment_created", {
            "enrolment_id": enrolment_id, "programme_id": uuid.uuid4(), "course_id": uuid.uuid4(),
            "ags": "08226098", "status": "confirmed", "enrolled_at": datetime.now(timezone.utc),
            "sequence": 1, "participant": person(5),
            "course": {"title": "B", "location": "W", "provider_name": "V",
                       "programme_code": "BW-DL", "programme_name": "P", "modules": []}})
        handle.run(notifications.enrolment_created, late, "e1")
        handle.run(notifications.funding_event, "funding_granted", {
            "enrolment_id": enrolment_id, "programme_id": uuid.uuid4(), "ags": "08226098",
            "kind": "guaranteed", "amount_cents": 50_000, "sequence": 1}, "e2")
        copy = handle.run(lambda s: s.get(KnownEnrolment, enrolment_id))
        assert copy.status == "erased" and copy.email.endswith("@erased.invalid")
        assert "Irmgard" not in copy.given_name
        assert handle.run(lambda s: s.scalar(select(func.count()).select_from(Notice))) == 0
    finally:
        handle.dispose()


def parse_payload(event_type, payload):
    producer = "funding" if event_type.startswith("funding") else "enrolment"
    return parse_event(build_event(producer, event_type, payload), event_type).payload


def test_the_mail_log_forgets_delivered_mails_after_its_days(notifications_pg_url, tmp_path):
    handle = DatabaseHandle(notifications_pg_url, "notifications", MailOutbox, MailInbox)
    now = datetime.now(timezone.utc)
    rows = {"old": ("sent", now - timedelta(days=100)), "recent": ("sent", now - timedelta(days=2)),
            "pending": ("pending", None)}
    ids = {}
    try:
        def write(session):
            for name, (status, sent_at) in rows.items():
                notice = notifications._notice(f"k-{name}", "enrolment_confirmed", "participant",
                                               "x@example.org", "X", {}, now - timedelta(days=200))
                notice.update(status=status, sent_at=sent_at)
                session.execute(Notice.__table__.insert(), notice)
                ids[name] = notice["id"]
                (tmp_path / f"{notice['id']}.eml").write_bytes(b"mail")
        handle.run(write)
        assert handle.run(mail_privacy.delete_old_mail, now - timedelta(days=90), tmp_path) == 1
        left = handle.run(lambda s: set(s.scalars(select(Notice.id))))
        assert left == {ids["recent"], ids["pending"]}
        assert sorted(p.stem for p in tmp_path.glob("*.eml")) == sorted(
            str(ids[n]) for n in ("recent", "pending"))
    finally:
        handle.dispose()


def test_a_completion_after_the_erasure_issues_no_certificate(certificates_pg_url, tmp_path):
    from services.certificates.models import InboxRecord, OutboxMessage
    handle = DatabaseHandle(certificates_pg_url, "certificates", OutboxMessage, InboxRecord)
    keyring = KeyRing(tmp_path / "keys")
    keyring.generate()
    issuer = certificates.Issuer("Programmbüro", "https://lotsen.example",
                                 "https://lotsen.example")
    try:
        enrolment_id, other_id = uuid.uuid4(), uuid.uuid4()
        handle.run(certificate_privacy.participant_erased,
                   parse_payload("participant_erased", erased_payload(enrolment_id)))

        def completion(eid, n):
            return parse_payload("enrolment_completed", {
                "enrolment_id": eid, "programme_id": uuid.uuid4(), "programme_code": "BW-DL",
                "programme_name": "P", "role_name": "Digitallotse", "course_id": uuid.uuid4(),
                "course_title": "B", "location": "W", "provider_name": "V", "ags": "08226098",
                "municipality_name": "Wiesloch", "completed_on": TODAY,
                "modules": [{"number": 1, "title": "M", "date": TODAY}],
                "participant": person(n), "sequence": 2})
        assert handle.run(certificates.issue, completion(enrolment_id, 6), keyring, issuer) is None
        issued = handle.run(certificates.issue, completion(other_id, 7), keyring, issuer)
        assert issued.number.endswith("000001")  # the erased one took no number either
        assert handle.run(lambda s: s.scalar(select(func.count()).select_from(Certificate))) == 1
    finally:
        handle.dispose()





def test_a_mail_erased_while_on_the_way_is_not_recorded_and_its_file_goes(
        notifications_pg_url, tmp_path):
    """The delivery round records what is still there; the Mailer removes the file of a
    notice erased meanwhile (``set(sent) - set(recorded)``)."""
    handle = DatabaseHandle(notifications_pg_url, "notifications", MailOutbox, MailInbox)
    now = datetime.now(timezone.utc)
    try:
        notices = [notifications._notice(f"k-{n}", "enrolment_confirmed", "participant",
                                         f"p{n}@example.org", "P", {}, now) for n in (1, 2)]
        handle.run(lambda s: s.execute(Notice.__table__.insert(), notices))
        claimed = handle.run(notifications.claim_due, 10)
        assert len(claimed) == 2
        gone = notices[0]["id"]
        handle.run(lambda s: s.execute(Notice.__table__.delete().where(Notice.id == gone)))
        recorded = handle.run(notifications.record_round, [n.id for n in claimed],
                              [(gone, claimed[0].lease_until, "x", False)], 8, 5, 600)
        assert recorded == [notices[1]["id"]]
        for notice in notices:
            (tmp_path / f"{notice['id']}.eml").write_bytes(b"mail")
        mail_privacy.remove_files(tmp_path, {n.id for n in claimed} - set(recorded))
        assert [p.stem for p in tmp_path.glob("*.eml")] == [str(notices[1]["id"])]
    finally:
        handle.dispose()


def test_a_programme_retention_can_be_changed_within_limits(enrolment_db, world):
    with pytest.raises(ValidationFailed) as bad:
        enrolment_db.run(privacy.set_retention, "BW-DL", 0)
    assert "retention_days" in bad.value.fields
    with pytest.raises(NotFound):
        enrolment_db.run(privacy.set_retention, "XX-YY", 100)
    assert enrolment_db.run(privacy.set_retention, "BW-DL", 60)["retention_days"] == 60
    completed = enrol(enrolment_db, world, world["past"], 8)
    enrolment_db.run(lambda s: [domain.record_attendance(
        s, s.merge(world["provider"]), {"course_id": world["past"], "module_number": m,
                                         "enrolment_ids": [uuid.UUID(completed["id"])]})
        for m in (1, 2, 3)])
    # Ended 47 days ago: kept now, with 60 days.
    assert enrolment_db.run(privacy.apply_retention, KEY, TODAY)["enrolments"] == 0


def test_a_notice_written_while_its_participant_was_erased_is_never_sent(
        notifications_pg_url, tmp_path):
    """An event handled at the same moment as the erasure can write its notice after the
    erasure looked: it is not claimed for sending, the daily sweep deletes it, and a late
    update does not undo the copy's erased state."""
    handle = DatabaseHandle(notifications_pg_url, "notifications", MailOutbox, MailInbox)
    now = datetime.now(timezone.utc)
    try:
        erased_id, other_id = uuid.uuid4(), uuid.uuid4()
        handle.run(mail_privacy.participant_erased,
                   parse_payload("participant_erased", erased_payload(erased_id)), tmp_path)
        notices = [notifications._notice(f"k-{n}", "enrolment_confirmed", "participant",
                                         f"p{n}@example.org", "P", {}, now, enrolment_id=e)
                   for n, e in ((1, erased_id), (2, other_id))]
        handle.run(lambda s: s.execute(Notice.__table__.insert(), notices))
        assert [n.id for n in handle.run(notifications.claim_due, 10)] == [notices[1]["id"]]
        from sqlalchemy import update
        handle.run(lambda s: s.execute(update(KnownEnrolment).where(
            KnownEnrolment.enrolment_id == erased_id, KnownEnrolment.status.not_in(
                notifications.FINAL)).values(status="confirmed")))
        assert handle.run(lambda s: s.get(KnownEnrolment, erased_id).status) == "erased"
        assert handle.run(mail_privacy.delete_old_mail, now - timedelta(days=90), tmp_path) == 1
        assert handle.run(lambda s: set(s.scalars(select(Notice.id)))) == {notices[1]["id"]}
    finally:
        handle.dispose()
