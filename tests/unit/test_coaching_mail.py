"""What notifications writes for a coaching programme's events, and how an erased Navigator
who never enrolled leaves its mail (SQLite, no broker)."""
import uuid
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import Text, cast, select

from services.notifications import domain, privacy
from services.notifications.models import InboxRecord, Notice, OutboxMessage
from tests.sqlite_support import migrated_sqlite

NAVIGATOR = {"given_name": "Karin", "family_name": "Krause", "email": "karin@pirna.example"}


@pytest.fixture
def db(tmp_path):
    handle = migrated_sqlite(tmp_path, "notifications", OutboxMessage, InboxRecord)
    yield handle
    handle.dispose()


def coaching_payload(navigator_id, **more):
    return dict({"navigator_id": navigator_id, "programme_id": uuid.uuid4(),
                 "programme_name": "Digital-Navigatoren Sachsen", "ags": "14628270",
                 "municipality": "Pirna, Stadt", "participant": NAVIGATOR, "sequence": 1},
                **more)


def notices(db):
    return db.run(lambda s: s.execute(select(Notice.template, Notice.to_email, Notice.status)
                                      .order_by(Notice.template)).all())


def test_named_and_reached_are_mailed_to_the_navigator_once_each(db):
    navigator_id, other = uuid.uuid4(), uuid.uuid4()
    for event_id in ("e1", "e2"):  # the same event delivered twice
        db.run(domain.navigator_named, coaching_payload(navigator_id, replaces_id=None), event_id)
        db.run(domain.milestone_reached, coaching_payload(
            navigator_id, key="agenda", title="Digitale Agenda", reached_on=date(2027, 3, 1),
            coach_name="Lotse Lehmann", coach_email="lehmann@ssg.example",
            document_ref="document:1"), event_id)
    db.run(domain.navigator_named, coaching_payload(other, participant=dict(
        NAVIGATOR, email="olaf@pirna.example")), "e3")
    assert notices(db) == [("milestone_reached", "karin@pirna.example", "pending"),
                           ("navigator_named", "karin@pirna.example", "pending"),
                           ("navigator_named", "olaf@pirna.example", "pending")]

    # Karin never enrolled: the erasure names only her Navigator id.
    db.run(privacy.participant_erased, {
        "erasure_id": uuid.uuid4(), "pseudonym": "abcdef123456", "cause": "request",
        "erased_at": datetime.now(timezone.utc), "enrolments": [],
        "navigators": [str(navigator_id)]})
    assert notices(db) == [("navigator_named", "olaf@pirna.example", "pending")]


def rendered(db, template, role):
    """(subject, text) of the one notice of ``template`` to ``role``."""
    from services.notifications import delivery
    [(context, to_role)] = db.run(lambda s: s.execute(select(Notice.context,
                                                             Notice.recipient_role).where(
        Notice.template == template, Notice.recipient_role == role)).all())
    subject, text, _ = delivery.render(template, dict(context, recipient_role=to_role,
                                                      office_name="Programmbüro"))
    return subject, " ".join(text.split())


def test_a_coach_who_left_is_told_to_the_navigator_once_and_the_next_one_continues(db):
    navigator_id, gone, next_coach = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for event_id in ("u1", "u2"):  # delivered twice
        db.run(domain.coaching_unpaired, coaching_payload(
            navigator_id, coach_id=gone, coach_name="Lotse Lehmann",
            unpaired_at=datetime.now(timezone.utc)), event_id)
    assert notices(db) == [("coaching_unpaired", "karin@pirna.example", "pending")]
    subject, text = rendered(db, "coaching_unpaired", "navigator")
    assert subject == ("Ihr Coaching als Digital-Navigator: Lotse Lehmann begleitet Pirna, Stadt "
                       "nicht mehr")
    assert "ordnet Ihnen eine neue Lotsin oder einen neuen Lotsen zu" in text

    # The office pairs her with the next coach: both hear that the coaching goes on.
    db.run(domain.coaching_paired, coaching_payload(
        navigator_id, coach_id=next_coach, coach_name="Lotsin Lange",
        coach_email="lange@ssg.example", started_on=date(2027, 1, 11), continues=True,
        paired_on=date(2027, 4, 6)), "p2")
    subject, text = rendered(db, "coaching_paired", "navigator")
    assert subject.startswith("Ihr Coaching als Digital-Navigator geht weiter")
    assert "ab 6. April 2027 begleitet Sie Lotsin Lange" in text and "seit 11. Januar 2027" in text
    _, to_coach = rendered(db, "coaching_paired", "coach")
    assert "Sie begleiten ab 6. April 2027 Karin Krause" in to_coach
    assert "Das Coaching läuft seit 11. Januar 2027" in to_coach

    # A first pairing (a v1 event has no ``continues``) still reads as the beginning.
    first = uuid.uuid4()
    db.run(domain.coaching_paired, coaching_payload(
        first, participant=dict(NAVIGATOR, email="olaf@pirna.example"), coach_id=next_coach,
        coach_name="Lotsin Lange", coach_email="lange@ssg.example",
        started_on=date(2027, 1, 11)), "p1")
    [(context,)] = db.run(lambda s: s.execute(select(Notice.context).where(
        Notice.to_email == "olaf@pirna.example")).all())
    from services.notifications import delivery
    subject, text, _ = delivery.render("coaching_paired", dict(
        context, recipient_role="navigator", office_name="Programmbüro"))
    assert subject.startswith("Ihr Coaching als Digital-Navigator beginnt")
    assert "ab 11. Januar 2027 begleitet Sie Lotsin Lange" in " ".join(text.split())

    # Erasing Karin takes the mail about her coach's leaving with the rest.
    db.run(privacy.participant_erased, {
        "erasure_id": uuid.uuid4(), "pseudonym": "abcdef123456", "cause": "request",
        "erased_at": datetime.now(timezone.utc), "enrolments": [],
        "navigators": [str(navigator_id)]})
    assert [n[1] for n in notices(db)] == ["olaf@pirna.example", "lange@ssg.example"]


def test_each_pairing_is_mailed_also_back_to_an_earlier_coach(db):
    """Lehmann, then Lange, then Lehmann again (or Lehmann re-admitted after leaving): three
    pairings, three mails to the Navigator; a pairing delivered twice is mailed once."""
    navigator_id, lehmann, lange = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    coaches = {lehmann: ("Lotse Lehmann", "lehmann@ssg.example"),
               lange: ("Lotsin Lange", "lange@ssg.example")}
    for sequence, coach, event_ids in ((2, lehmann, ["p1"]), (3, lange, ["p2"]),
                                       (4, lehmann, ["p3", "p3-again"])):
        name, email = coaches[coach]
        for event_id in event_ids:
            db.run(domain.coaching_paired, coaching_payload(
                navigator_id, sequence=sequence, coach_id=coach, coach_name=name,
                coach_email=email, started_on=date(2027, 1, 11), continues=sequence > 2,
                paired_on=date(2027, 1, 11)), event_id)
    to = [n[1] for n in notices(db)]
    assert to.count("karin@pirna.example") == 3
    assert to.count("lehmann@ssg.example") == 2 and to.count("lange@ssg.example") == 1


def test_a_coach_erased_leaves_the_mail_log_without_their_address(db, tmp_path):
    """Mails to the coach: unsent dropped, sent kept as a record without address, values or
    file; the Navigator's mails keep their record and lose the coach's name and address."""
    navigator_id, lehmann, lange = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for sequence, coach, name, email in (
            (2, lehmann, "Lotse Lehmann", "jürgen.lehmann@ssg.example"),
            (3, lange, "Lotsin Lange", "lange@ssg.example")):
        db.run(domain.coaching_paired, coaching_payload(
            navigator_id, sequence=sequence, coach_id=coach, coach_name=name, coach_email=email,
            started_on=date(2027, 1, 11), continues=False, paired_on=date(2027, 1, 11)),
            f"p{sequence}")
    to_lehmann = db.run(lambda s: s.scalar(select(Notice.id).where(
        Notice.to_email == "jürgen.lehmann@ssg.example")))
    db.run(lambda s: s.get(Notice, to_lehmann).__setattr__("status", "sent"))
    (tmp_path / f"{to_lehmann}.eml").write_text("An: Lotse Lehmann")
    stand_in = "erased-0123456789ab@erased.invalid"
    # A milestone he recorded names him by address only; his departure's mail by id only.
    db.run(domain.milestone_reached, coaching_payload(
        navigator_id, key="situation", title="Situation vor Ort erfasst",
        reached_on=date(2027, 2, 1), coach_name="Lotse Lehmann",
        coach_email="jürgen.lehmann@ssg.example", document_ref=None), "r1")
    db.run(domain.coaching_unpaired, coaching_payload(
        navigator_id, sequence=4, coach_id=lehmann, coach_name="Lotse Lehmann",
        unpaired_at=datetime.now(timezone.utc)), "u4")
    result = db.run(privacy.recipient_erased, "JÜRGEN.LEHMANN@ssg.example", stand_in, [lehmann],
                    tmp_path)
    assert result == {"notices_dropped": 0, "notices_kept": 1, "notices_copied": 0,
                      "notices_naming": 3,
                      "files_removed": 1}
    rows = db.run(lambda s: s.execute(select(Notice.to_email, Notice.recipient_role,
                                             Notice.context)).all())
    assert "jürgen.lehmann@ssg.example" not in str(rows) and "Lotse Lehmann" not in str(rows)
    kept = [r for r in rows if r.to_email == stand_in]
    assert [(r.recipient_role, r.context) for r in kept] == [("coach", {})]
    about = [r.context for r in rows if r.recipient_role == "navigator"
             and r.context["coach_name"] == "gelöscht"]
    assert sorted(str(c.get("coach_email")) for c in about) == sorted(
        [stand_in, stand_in, "None"])
    assert not (tmp_path / f"{to_lehmann}.eml").exists()
    assert {r.to_email for r in rows} >= {"lange@ssg.example", NAVIGATOR["email"]}


def test_an_erased_enrolment_leaves_the_mails_of_its_person_as_navigator(db):
    """Retention erased Karin's old seminar enrolment while she still coaches as Navigator:
    the erasure names no Navigator row, so her coaching mails stay (they are found by the
    Navigator's id when one is erased)."""
    from services.notifications.models import KnownEnrolment
    navigator_id, enrolment_id = uuid.uuid4(), uuid.uuid4()
    db.run(domain.navigator_named, coaching_payload(navigator_id, replaces_id=None), "n1")
    db.run(lambda s: s.add(KnownEnrolment(
        enrolment_id=enrolment_id, ags="14628270", course_id=uuid.uuid4(),
        given_name=NAVIGATOR["given_name"], family_name=NAVIGATOR["family_name"],
        email=NAVIGATOR["email"], status="completed", course={}, first_module_on=None,
        version=1)))
    erasure = {"erasure_id": uuid.uuid4(), "pseudonym": "abcdef123456", "cause": "retention",
               "erased_at": datetime.now(timezone.utc),
               "enrolments": [{"enrolment_id": enrolment_id, "programme_id": uuid.uuid4(),
                               "course_id": uuid.uuid4(), "ags": "14628270"}],
               "navigators": []}
    db.run(privacy.participant_erased, erasure)
    assert notices(db) == [("navigator_named", "karin@pirna.example", "pending")]
    db.run(privacy.participant_erased, dict(erasure, erasure_id=uuid.uuid4(),
                                            navigators=[str(navigator_id)]))
    assert notices(db) == []
