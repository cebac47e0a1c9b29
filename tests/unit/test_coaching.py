"""Sachsen's coaching programme on the real register (429 eligible bodies), on SQLite: one
Navigator per municipality, pairing within each coach's maximum, milestones reached and
overdue with a clock the test sets."""
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from services.common.clock import calendar_today
from services.common.errors import Conflict, NotFound, RuleViolation
from services.enrolment import coaching, domain
from services.enrolment.models import InboxRecord, OutboxMessage
from services.enrolment.register import import_register, parse_register
from tests.sqlite_support import migrated_sqlite

MILESTONES = [
    {"key": "situation", "title": "Situation vor Ort erfasst", "due_days": 42},
    {"key": "agenda", "title": "Digitale Agenda geschrieben", "due_days": 112, "document": True},
    {"key": "projekt", "title": "Erstes Projekt begonnen", "due_days": 168},
]
DRESDEN, LEIPZIG, GOERLITZ_KREIS, PIRNA = "14612000", "14713000", "14626000", "14628270"


@pytest.fixture(scope="module")
def saxony(register_file):
    return [b for b in parse_register(register_file) if b.land == "14"]


def coaching_programme(session, code="SN-DN", name="Digital-Navigatoren Sachsen"):
    programme = domain.create_programme(session, {
        "code": code, "name": name, "land": "14",
        "role_name": "Digital-Navigator", "eligible_kinds": ["gemeinde", "kreis"],
        "enrolment_opens_on": calendar_today() - timedelta(days=10),
        "enrolment_closes_on": date(2099, 1, 1)})
    coaching.define(session, programme, MILESTONES)


@pytest.fixture
def db(tmp_path, saxony):
    def seed(session):
        import_register(session, saxony)
        coaching_programme(session)
    handle = migrated_sqlite(tmp_path, "enrolment", OutboxMessage, InboxRecord, seed)
    yield handle
    handle.dispose()


def person(n):
    return {"given_name": f"Karin{n}", "family_name": f"Krause{n}",
            "email": f"navigator{n}@sachsen.example", "department": "Hauptamt"}


def events(db, event_type):
    return db.run(lambda s: [m.envelope["payload"] for m in s.query(OutboxMessage)
                             if m.envelope["event_type"] == event_type])


def test_429_bodies_may_name_one_navigator_each_and_replacing_keeps_the_history(db):
    published = events(db, "programme_published")[0]
    assert len(published["eligible_bodies"]) == 429  # 419 Gemeinden and 10 Landkreise
    first = db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(1))
    db.run(coaching.name_navigator, LEIPZIG, "SN-DN", person(2))
    db.run(coaching.name_navigator, GOERLITZ_KREIS, "SN-DN", person(3))
    with pytest.raises(Conflict) as refused:
        db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(4))
    assert refused.value.fields == {"navigator": ["already named"]}
    second = db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(4), replace=True)
    assert second["replaces_id"] == first["id"]
    history = db.run(coaching.navigators_of, DRESDEN, "SN-DN")
    assert [n["participant"]["email"] for n in history] == ["navigator4@sachsen.example",
                                                           "navigator1@sachsen.example"]
    assert history[0]["replaced_at"] is None and history[1]["replaced_at"] is not None
    named = events(db, "navigator_named")
    assert len(named) == 4 and named[-1]["replaces_id"] == first["id"]
    with pytest.raises(RuleViolation):  # a body of another Land
        db.run(coaching.name_navigator, "08226098", "SN-DN", person(5))


def test_pairing_respects_each_coachs_maximum(db):
    coach, token = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann",
                          "lehmann@ssg.example", 2)
    navigators = [db.run(coaching.name_navigator, ags, "SN-DN", person(n))
                  for n, ags in enumerate((DRESDEN, LEIPZIG, PIRNA))]
    for navigator in navigators[:2]:
        db.run(coaching.pair, uuid.UUID(navigator["id"]), coach.id)
    with pytest.raises(RuleViolation) as full:
        db.run(coaching.pair, uuid.UUID(navigators[2]["id"]), coach.id)
    assert full.value.fields == {"coach_id": ["at the maximum"]}
    # Replacing a paired Navigator passes the coach on and keeps the load at two.
    db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(9), replace=True)
    seen = db.run(lambda s: coaching.coach_navigators(s, coaching.coach_by_token(s, token)))
    assert seen["coach"]["load"] == 2
    assert {n["participant"]["email"] for n in seen["navigators"]} == {
        "navigator9@sachsen.example", "navigator1@sachsen.example"}
    assert len(events(db, "coaching_paired")) == 2


def leipzig_with_lehmann(db):
    """Leipzig's Navigator, coached by Lotse Lehmann since 50 days ago: (coach, token,
    Navigator, the coaching's first day)."""
    coach, token = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann",
                          "lehmann@ssg.example", 5)
    navigator = db.run(coaching.name_navigator, LEIPZIG, "SN-DN", person(1))
    start = calendar_today() - timedelta(days=50)
    db.run(coaching.pair, uuid.UUID(navigator["id"]), coach.id, start)
    return coach, token, navigator, start


def test_milestones_reached_and_overdue_once_each(db):
    coach, token, navigator, start = leipzig_with_lehmann(db)

    def record(key, reached_on, document_ref=None):
        return db.run(lambda s: coaching.record_milestone(
            s, coaching.coach_by_token(s, token), uuid.UUID(navigator["id"]), key, reached_on,
            "vor Ort besprochen", document_ref))
    with pytest.raises(RuleViolation) as needs_document:
        record("agenda", calendar_today())
    assert "document_ref" in needs_document.value.fields
    # Day 50: the situation (due day 42) is overdue; reported once however often it runs.
    assert db.run(coaching.report_overdue, calendar_today()) == 1
    assert db.run(coaching.report_overdue, calendar_today()) == 0
    [overdue] = events(db, "milestone_overdue")
    assert (overdue["key"], overdue["due_on"]) == ("situation",
                                                   (start + timedelta(days=42)).isoformat())
    assert overdue["coach_email"] == "lehmann@ssg.example"
    after = record("situation", calendar_today() - timedelta(days=1))
    assert [m["reached_on"] for m in after["milestones"]][0] == calendar_today() - timedelta(days=1)
    assert record("situation", calendar_today() - timedelta(days=1)) == after  # repeated: same
    with pytest.raises(Conflict):
        record("situation", calendar_today())
    # Day 113 (the Agenda due on day 112): one more reminder, the situation is done.
    later = start + timedelta(days=113)
    assert db.run(coaching.report_overdue, later) == 1
    assert [e["key"] for e in events(db, "milestone_overdue")] == ["situation", "agenda"]
    record("agenda", calendar_today(), "Ratsbeschluss 2026/117")
    view = db.run(coaching.overview, "SN-DN", later)
    assert (view["eligible"], view["with_navigator"], view["paired"], view["with_agenda"]) == (
        429, 1, 1, 1)
    assert view["coaches"] == [{"id": str(coach.id), "name": "Lotse Lehmann",
                                "max_navigators": 5, "load": 1}]
    with pytest.raises(NotFound):  # another coach cannot record for this Navigator
        other, other_token = db.run(coaching.register_coach, "SN-DN", "Lotsin Lange",
                                    "lange@ssg.example", 5)
        db.run(lambda s: coaching.record_milestone(
            s, coaching.coach_by_token(s, other_token), uuid.UUID(navigator["id"]), "projekt",
            calendar_today(), None, None))
    assert [e["key"] for e in events(db, "milestone_reached")] == ["situation", "agenda"]


def test_the_navigator_completes_with_every_module_and_every_milestone(db):
    def course(session):
        provider, token = domain.create_provider(session, "SSG")
        made = domain.create_course(session, provider, {
            "programme_code": "SN-DN", "title": "Grundlagen", "location": "Dresden",
            "capacity": 5, "open": True,
            "modules": [{"number": 1, "title": "eGovernment-Gesetz",
                         "date": calendar_today() - timedelta(days=2)}]})
        return made.id, provider.id
    course_id, provider_id = db.run(course)
    navigator = db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(1))
    coach, token = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann",
                          "lehmann@ssg.example", 5)
    db.run(coaching.pair, uuid.UUID(navigator["id"]), coach.id,
           calendar_today() - timedelta(days=30))

    def enrol(n):
        return db.run(domain.enrol, DRESDEN, {"course_id": course_id, "idempotency_key": None,
                                              "participant": person(n)})
    theirs, colleague = enrol(1), enrol(2)

    def attend():
        from services.enrolment.models import Provider
        return db.run(lambda s: domain.record_attendance(s, s.get(Provider, provider_id), {
            "course_id": course_id, "module_number": 1,
            "enrolment_ids": [uuid.UUID(theirs["id"]), uuid.UUID(colleague["id"])]}))
    attended = {e["id"]: e["status"] for e in attend()}
    # Every module attended, but no milestone yet, and the colleague is not the Navigator.
    assert attended == {theirs["id"]: "confirmed", colleague["id"]: "confirmed"}
    assert events(db, "enrolment_completed") == []
    for key, ref in (("situation", None), ("agenda", "Ratsbeschluss 17/2026"),
                     ("projekt", None)):
        db.run(lambda s, k=key, r=ref: coaching.record_milestone(
            s, coaching.coach_by_token(s, token), uuid.UUID(navigator["id"]), k,
            calendar_today() - timedelta(days=1), None, r))
    [completed] = events(db, "enrolment_completed")
    assert completed["enrolment_id"] == theirs["id"]
    assert [m["title"] for m in completed["milestones"]] == [m["title"] for m in MILESTONES]


def test_erasing_a_participant_erases_them_as_navigator_too(db):
    from services.enrolment import privacy
    from services.enrolment.models import Enrolment, Navigator

    def course(session):
        provider, _ = domain.create_provider(session, "SSG")
        return domain.create_course(session, provider, {
            "programme_code": "SN-DN", "title": "Grundlagen", "location": "Dresden",
            "capacity": 5, "open": True,
            "modules": [{"number": 1, "title": "M1", "date": calendar_today() + timedelta(days=9)}]}).id
    course_id = db.run(course)
    named = db.run(coaching.name_navigator, LEIPZIG, "SN-DN", person(1))
    coach, _ = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann", "lehmann@ssg.example", 5)
    db.run(coaching.pair, uuid.UUID(named["id"]), coach.id)
    db.run(domain.enrol, LEIPZIG, {"course_id": course_id, "idempotency_key": None,
                                   "participant": person(1)})
    db.run(lambda s: privacy.erase_enrolments(
        s, list(s.query(Enrolment).filter(Enrolment.email == "navigator1@sachsen.example")),
        "request", "Antrag", "key"))
    navigator = db.run(lambda s: s.get(Navigator, uuid.UUID(named["id"])))
    assert "Krause1" not in navigator.family_name and navigator.email != person(1)["email"]
    stored = db.run(lambda s: [str(m.envelope) for m in s.query(OutboxMessage)])
    assert not [e for e in stored if "Krause1" in e or "navigator1@sachsen.example" in e]


def test_a_navigator_who_never_enrolled_can_be_erased(db):
    from services.enrolment import privacy
    from services.enrolment.models import MilestoneRecord, Navigator

    named = db.run(coaching.name_navigator, PIRNA, "SN-DN", person(5))
    coach, _ = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann", "lehmann@ssg.example", 5)
    db.run(coaching.pair, uuid.UUID(named["id"]), coach.id, calendar_today() - timedelta(days=7))
    db.run(lambda s: coaching.record_milestone(
        s, s.get(type(coach), coach.id), uuid.UUID(named["id"]), "situation", calendar_today(),
        "Gespräch mit Frau Krause5 im Hauptamt", None))
    [shown] = db.run(privacy.export_participant, "navigator5@sachsen.example",
                     b"k" * 32)["navigators"]  # Art. 15: what is held about her as Navigator
    assert (shown["family_name"], shown["coach"], shown["municipality"]) == (
        "Krause5", "Lotse Lehmann", "Pirna, Stadt")
    assert shown["milestones"][0]["note"] == "Gespräch mit Frau Krause5 im Hauptamt"
    erased = db.run(privacy.erase_participant, "Navigator5@Sachsen.example", "Antrag", b"k" * 32)
    assert (erased["status"], erased["enrolments"], erased["navigators"]) == ("erased", 0, 1)
    row = db.run(lambda s: s.get(Navigator, uuid.UUID(named["id"])))
    assert "Krause5" not in row.family_name and row.email != person(5)["email"]
    note = db.run(lambda s: s.get(MilestoneRecord, (uuid.UUID(named["id"]), "situation")).note)
    assert note is None  # the coach's free text named her
    stored = db.run(lambda s: [str(m.envelope) for m in s.query(OutboxMessage)])
    assert not [e for e in stored if "Krause5" in e or "navigator5@sachsen.example" in e]
    [announced] = events(db, "participant_erased")
    assert announced["enrolments"] == [] and announced["navigators"] == [named["id"]]
    from services.common.events import ParticipantErasedV1
    assert ParticipantErasedV1().validate(dict(announced, erased_at=announced["erased_at"])) == {}
    again = db.run(privacy.erase_participant, "navigator5@sachsen.example", "Antrag", b"k" * 32)
    assert again["status"] == "already_erased"
    assert db.run(privacy.export_participant, "navigator5@sachsen.example",
                  b"k" * 32)["navigators"] == []


def test_coaches_sign_in_by_address_and_see_only_their_navigators(db):
    first = db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(1))
    second = db.run(coaching.name_navigator, LEIPZIG, "SN-DN", person(2))
    mine, _ = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann", "lehmann@ssg.example", 5)
    other, _ = db.run(coaching.register_coach, "SN-DN", "Lotsin Lange", "lange@ssg.example", 5)
    db.run(coaching.pair, uuid.UUID(first["id"]), mine.id)
    db.run(coaching.pair, uuid.UUID(second["id"]), other.id)
    assert db.run(coaching.DESK.request_sign_in, "jemand@ssg.example", "http://x/link/") == 0
    assert db.run(coaching.DESK.request_sign_in, "lehmann@ssg.example", "http://x/link/") == 1
    [mail] = events(db, "coach_sign_in_link_requested")
    token = mail["link"].rsplit("/", 1)[1]
    signed = db.run(coaching.DESK.sign_in, token, 8)
    assert signed["name"] == "Lotse Lehmann"
    from services.common.errors import AuthenticationFailed
    with pytest.raises(AuthenticationFailed):  # a link works once
        db.run(coaching.DESK.sign_in, token, 8)
    [programme] = db.run(coaching.desk, "lehmann@ssg.example")
    assert [n["municipality"] for n in programme["navigators"]] == ["Dresden, Stadt"]
    assert programme["programme"]["code"] == "SN-DN"
    with pytest.raises(NotFound):  # Leipzig's Navigator is Lange's
        db.run(coaching.coach_of, "lehmann@ssg.example", uuid.UUID(second["id"]))


def test_an_agenda_pdf_is_kept_and_only_its_coach_gets_it(db):
    first = db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(1))
    mine, _ = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann", "lehmann@ssg.example", 5)
    other, _ = db.run(coaching.register_coach, "SN-DN", "Lotsin Lange", "lange@ssg.example", 5)
    navigator_id = uuid.UUID(first["id"])
    db.run(coaching.pair, navigator_id, mine.id, calendar_today() - timedelta(days=100))
    pdf = b"%PDF-1.7\n" + b"Digitale Agenda Dresden\n" * 100

    def record(content, name="agenda.pdf"):
        return db.run(lambda s: coaching.record_milestone(
            s, s.get(type(mine), mine.id), navigator_id, "agenda", calendar_today(), None, None,
            {"filename": name, "content": content}))
    with pytest.raises(RuleViolation) as not_pdf:
        record(b"<html>keine PDF</html>")
    assert not_pdf.value.fields == {"document": ["not a PDF file"]}
    with pytest.raises(RuleViolation) as too_large:
        record(b"%PDF-" + b"0" * coaching.MAX_DOCUMENT_BYTES)
    assert list(too_large.value.fields) == ["document"]
    done = record(pdf)
    ref = done["milestones"][1]["document_ref"]
    assert ref.startswith("document:")
    assert record(pdf)["milestones"][1]["document_ref"] == ref  # sent twice: kept once
    with pytest.raises(Conflict):
        record(pdf + b"anders")
    stored = db.run(coaching.document_for, "lehmann@ssg.example", uuid.UUID(ref[9:]))
    assert (stored.content, stored.filename, stored.size) == (pdf, "agenda.pdf", len(pdf))
    with pytest.raises(NotFound):
        db.run(coaching.document_for, "lange@ssg.example", uuid.UUID(ref[9:]))
    [reached] = events(db, "milestone_reached")
    assert reached["document_ref"] == ref and reached["participant"]["email"] == person(1)["email"]


def test_the_municipality_and_the_office_get_the_agenda_too(db):
    """The Agenda is the municipality's: it keeps it after its Navigator is replaced; another
    municipality gets the same NotFound as for a document that does not exist."""
    first = db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(1))
    coach, _ = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann", "lehmann@ssg.example", 5)
    navigator_id = uuid.UUID(first["id"])
    started = calendar_today() - timedelta(days=100)
    db.run(coaching.pair, navigator_id, coach.id, started)
    pdf = b"%PDF-1.7\n" + b"Digitale Agenda Dresden\n" * 100
    done = db.run(lambda s: coaching.record_milestone(
        s, s.get(type(coach), coach.id), navigator_id, "agenda", calendar_today(), None, None,
        {"filename": "Agenda Dresden.pdf", "content": pdf}))
    document_id = uuid.UUID(done["milestones"][1]["document_ref"][len("document:"):])
    assert db.run(coaching.document_of_body, DRESDEN, document_id).content == pdf
    assert db.run(coaching.document_for_office, document_id).content == pdf
    for refused in (lambda: db.run(coaching.document_of_body, LEIPZIG, document_id),
                    lambda: db.run(coaching.document_of_body, DRESDEN, uuid.uuid4()),
                    lambda: db.run(coaching.document_for_office, uuid.uuid4())):
        with pytest.raises(NotFound) as unknown:
            refused()
        assert unknown.value.fields == {"document_id": ["unknown"]}

    # The office's page of the Navigator: each milestone, the document by name and size.
    shown = db.run(coaching.navigator_for_office, "SN-DN", navigator_id)
    assert (shown["municipality"], shown["coach_name"]) == ("Dresden, Stadt", "Lotse Lehmann")
    assert [(m["key"], m["reached_on"], m["overdue"]) for m in shown["milestones"]] == [
        ("situation", None, True), ("agenda", calendar_today(), False),
        ("projekt", None, False)]
    assert shown["milestones"][1]["document"] == {
        "id": str(document_id), "filename": "Agenda Dresden.pdf", "size": len(pdf)}
    assert shown["milestones"][0]["document"] is None and shown["others"] == []

    # Dresden names another person: the Agenda stays Dresden's; both pages name each other.
    second = db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(2), replace=True)
    assert db.run(coaching.document_of_body, DRESDEN, document_id).content == pdf
    before = db.run(coaching.navigator_for_office, "SN-DN", navigator_id)
    assert before["replaced_at"] is not None
    assert [o["id"] for o in before["others"]] == [second["id"]]
    now = db.run(coaching.navigator_for_office, "SN-DN", uuid.UUID(second["id"]))
    assert [o["id"] for o in now["others"]] == [first["id"]]
    assert now["milestones"][1]["document"] is None  # the Agenda was the first one's milestone
    # A Navigator is shown only under their own programme.
    db.run(coaching_programme, "SN-XY", "Anderes Programm")
    for code, unknown_id in (("SN-XY", navigator_id), ("SN-DN", uuid.uuid4())):
        with pytest.raises(NotFound):
            db.run(coaching.navigator_for_office, code, unknown_id)


def test_a_coach_who_leaves_loses_access_and_their_navigators_wait_for_a_new_one(db):
    """Removing a coach ends their token, links and sessions, unpairs each of their active
    Navigators (once, with an event each) and keeps what they recorded; the same address
    may be registered again later, with a new token."""
    from services.common.errors import AuthenticationFailed
    leaving, token = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann",
                            "lehmann@ssg.example", 3)
    staying, _ = db.run(coaching.register_coach, "SN-DN", "Lotsin Lange", "lange@ssg.example", 1)
    first = db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(1))
    second = db.run(coaching.name_navigator, LEIPZIG, "SN-DN", person(2))
    start = calendar_today() - timedelta(days=60)
    for navigator in (first, second):
        db.run(coaching.pair, uuid.UUID(navigator["id"]), leaving.id, start)
    db.run(lambda s: coaching.record_milestone(
        s, coaching.coach_by_token(s, token), uuid.UUID(first["id"]), "situation",
        calendar_today() - timedelta(days=3), "vor Ort", None))
    assert db.run(coaching.DESK.request_sign_in, "lehmann@ssg.example", "http://x/link/") == 1
    [link] = events(db, "coach_sign_in_link_requested")
    unused = db.run(coaching.DESK.request_sign_in, "lehmann@ssg.example", "http://x/link/")
    signed = db.run(coaching.DESK.sign_in, link["link"].rsplit("/", 1)[1], 8)
    assert unused == 1

    removed = db.run(coaching.remove_coach, leaving.id)
    assert sorted(removed["unpaired"]) == sorted([first["id"], second["id"]])
    assert removed["removed_at"] is not None
    with pytest.raises(AuthenticationFailed):  # the software's token
        db.run(lambda s: coaching.coach_by_token(s, token))
    with pytest.raises(AuthenticationFailed):  # the open session
        db.run(coaching.DESK.current, signed["session_id"])
    second_link = events(db, "coach_sign_in_link_requested")[1]["link"].rsplit("/", 1)[1]
    with pytest.raises(AuthenticationFailed):  # the link mailed before
        db.run(coaching.DESK.sign_in, second_link, 8)
    assert db.run(coaching.DESK.request_sign_in, "lehmann@ssg.example", "http://x/link/") == 0
    assert db.run(coaching.desk, "lehmann@ssg.example") == []

    navigators = {n["id"]: n for n in db.run(coaching.programme_navigators, "SN-DN")}
    assert {n["coach_id"] for n in navigators.values()} == {None}
    assert navigators[first["id"]]["coaching_started_on"] == start  # the clock runs on
    assert navigators[first["id"]]["milestones"][0]["reached_on"] is not None
    unpaired = events(db, "coaching_unpaired")
    assert sorted(e["navigator_id"] for e in unpaired) == sorted([first["id"], second["id"]])
    assert {e["coach_name"] for e in unpaired} == {"Lotse Lehmann"}
    view = db.run(coaching.overview, "SN-DN")
    assert [c["name"] for c in view["coaches"]] == ["Lotsin Lange"] and view["paired"] == 0
    with pytest.raises(NotFound):  # nobody is paired with a coach who left
        db.run(coaching.pair, uuid.UUID(first["id"]), leaving.id)
    # Removing again changes nothing and tells nobody twice.
    assert db.run(coaching.remove_coach, leaving.id)["unpaired"] == []
    assert len(events(db, "coaching_unpaired")) == 2
    with pytest.raises(NotFound):
        db.run(coaching.remove_coach, uuid.uuid4())

    # Lange takes over Dresden: the coaching goes on from its first day.
    db.run(coaching.pair, uuid.UUID(first["id"]), staying.id)
    paired = events(db, "coaching_paired")[-1]
    assert (paired["continues"], paired["started_on"], paired["paired_on"]) == (
        True, start.isoformat(), calendar_today().isoformat())
    assert not events(db, "coaching_paired")[0]["continues"]
    # Lehmann comes back: the same row (his records stay his), a new token.
    back, new_token = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann",
                             "lehmann@ssg.example", 2)
    assert back.id == leaving.id and new_token != token
    assert db.run(lambda s: coaching.coach_by_token(s, new_token).id) == leaving.id
    with pytest.raises(AuthenticationFailed):
        db.run(lambda s: coaching.coach_by_token(s, token))
    assert [c["name"] for c in db.run(coaching.coaches, "SN-DN")] == ["Lotse Lehmann",
                                                                       "Lotsin Lange"]
    with pytest.raises(Conflict):
        db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann", "lehmann@ssg.example", 2)


def test_a_coach_in_two_programmes_keeps_signing_in_for_the_other(db):
    db.run(coaching_programme, "SN-DN2", "Digital-Navigatoren Sachsen, zweite Runde")
    first, _ = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann", "lehmann@ssg.example", 3)
    db.run(coaching.register_coach, "SN-DN2", "Lotse Lehmann", "lehmann@ssg.example", 3)
    db.run(coaching.DESK.request_sign_in, "lehmann@ssg.example", "http://x/link/")
    [link] = events(db, "coach_sign_in_link_requested")
    signed = db.run(coaching.DESK.sign_in, link["link"].rsplit("/", 1)[1], 8)
    db.run(coaching.remove_coach, first.id)
    assert db.run(coaching.DESK.current, signed["session_id"])["name"] == "Lotse Lehmann"
    assert [d["programme"]["code"] for d in db.run(coaching.desk, "lehmann@ssg.example")] == [
        "SN-DN2"]


def test_the_offices_csv_lists_each_navigator_and_where_their_milestones_stand(db):
    import csv
    import io
    _, token, paired, start = leipzig_with_lehmann(db)
    db.run(lambda s: coaching.record_milestone(
        s, coaching.coach_by_token(s, token), uuid.UUID(paired["id"]), "situation",
        start + timedelta(days=10), None, None))
    # A name typed as a formula stays text in a spreadsheet.
    db.run(coaching.name_navigator, DRESDEN, "SN-DN",
           dict(person(2), given_name="=HYPERLINK(\"http://x.example\")", family_name="Ost"))
    text = db.run(coaching.navigators_csv, "SN-DN")
    assert text.startswith("\ufeff") and "\r\n" in text
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=";"))
    assert rows[0] == ["Kommune", "AGS", "Digital-Navigator", "E-Mail", "Benannt am",
                       "Lotsin oder Lotse", "Coaching seit", "Situation vor Ort erfasst",
                       "Digitale Agenda geschrieben", "Erstes Projekt begonnen"]
    by_ags = {row[1]: row for row in rows[1:]}
    assert len(rows) == 3 and set(by_ags) == {LEIPZIG, DRESDEN}
    german = lambda d: d.strftime("%d.%m.%Y")  # noqa: E731
    assert by_ags[LEIPZIG][2:] == [
        "Karin1 Krause1", "navigator1@sachsen.example", german(calendar_today()),
        "Lotse Lehmann", german(start), f"erreicht am {german(start + timedelta(days=10))}",
        f"offen bis {german(start + timedelta(days=112))}",
        f"offen bis {german(start + timedelta(days=168))}"]
    assert by_ags[DRESDEN][2] == "'=HYPERLINK(\"http://x.example\") Ost"
    assert by_ags[DRESDEN][5:] == ["", ""] + ["Coaching hat nicht begonnen"] * 3
    # Day 113: the Agenda is overdue.
    later = db.run(coaching.navigators_csv, "SN-DN", start + timedelta(days=113))
    assert f"überfällig seit {german(start + timedelta(days=112))}" in later
    with pytest.raises(NotFound):
        db.run(coaching.navigators_csv, "KEIN-PROGRAMM")


def test_a_coach_who_left_can_be_erased_in_every_programme(db):
    """Refused while they still coach anywhere; then name and address go from their rows
    (which stay, the milestones point to them), from every stored event and from the
    sign-in desk; the address may coach again later, as someone new."""
    from services.common.errors import AuthenticationFailed
    from services.enrolment import privacy
    from services.enrolment.models import Coach, CoachSession, CoachSignInLink, MilestoneRecord
    db.run(coaching_programme, "SN-DN2", "Zweites Programm")
    lehmann, token = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann",
                            "lehmann@ssg.example", 3)
    other_row, _ = db.run(coaching.register_coach, "SN-DN2", "Lotse Lehmann",
                          "lehmann@ssg.example", 3)
    lange, _ = db.run(coaching.register_coach, "SN-DN", "Lotsin Lange", "lange@ssg.example", 3)
    navigator = db.run(coaching.name_navigator, LEIPZIG, "SN-DN", person(1))
    db.run(coaching.pair, uuid.UUID(navigator["id"]), lehmann.id,
           calendar_today() - timedelta(days=30))
    db.run(lambda s: coaching.record_milestone(
        s, coaching.coach_by_token(s, token), uuid.UUID(navigator["id"]), "situation",
        calendar_today(), "vor Ort", None))
    assert db.run(coaching.DESK.request_sign_in, "lehmann@ssg.example", "http://x/link/") == 1
    [link] = events(db, "coach_sign_in_link_requested")
    db.run(coaching.DESK.sign_in, link["link"].rsplit("/", 1)[1], 8)
    db.run(coaching.remove_coach, lehmann.id)
    shown = db.run(privacy.export_participant, "lehmann@ssg.example", b"k" * 32)["coaches"]
    assert [(c["programme_name"], c["removed_at"] is not None, c["milestones_recorded"])
            for c in shown] == [("Digital-Navigatoren Sachsen", True, 1),
                                ("Zweites Programm", False, 0)]

    with pytest.raises(RuleViolation) as refused:  # still coaches in the second programme
        db.run(privacy.erase_coach, "lehmann@ssg.example")
    assert refused.value.fields == {"email": ["coaches in SN-DN2"]}
    assert db.run(lambda s: s.get(Coach, lehmann.id).name) == "Lotse Lehmann"
    db.run(coaching.remove_coach, other_row.id)
    # The events about his departure have not been sent yet: their mails would name him.
    with pytest.raises(RuleViolation) as waiting:
        db.run(privacy.erase_coach, "lehmann@ssg.example")
    assert waiting.value.fields == {"email": ["events naming the coach not yet sent"]}
    db.run(lambda s: s.query(OutboxMessage).update({"published_at": datetime.now(timezone.utc)}))
    erased = db.run(privacy.erase_coach, " Lehmann@SSG.example ")
    assert (erased["status"], erased["coaches"]) == ("erased", 2)
    rows = db.run(lambda s: [s.get(Coach, i) for i in (lehmann.id, other_row.id, lange.id)])
    assert [(c.name, c.email) for c in rows[:2]] == [("gelöscht", erased["stand_in"])] * 2
    assert all(c.erased_at for c in rows[:2]) and rows[2].name == "Lotsin Lange"
    stored = db.run(lambda s: [str(m.envelope) for m in s.query(OutboxMessage)])
    assert not [e for e in stored if "lehmann@ssg.example" in e or "Lehmann" in e]
    assert any("Lotsin Lange" not in e and erased["stand_in"] in e for e in stored)
    assert db.run(lambda s: s.query(CoachSignInLink).count() + s.query(CoachSession).count()) == 0
    with pytest.raises(AuthenticationFailed):
        db.run(coaching.coach_by_token, token)
    record = db.run(lambda s: s.get(MilestoneRecord, (uuid.UUID(navigator["id"]), "situation")))
    assert record.recorded_by == lehmann.id  # what they recorded stays, without their name
    assert db.run(privacy.export_participant, "lehmann@ssg.example", b"k" * 32)["coaches"] == []
    with pytest.raises(NotFound):
        db.run(privacy.erase_coach, "lehmann@ssg.example")
    again, _ = db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann", "lehmann@ssg.example", 3)
    assert again.id not in {lehmann.id, other_row.id}


def test_a_navigator_replaced_longer_ago_than_the_retention_period_is_erased(db):
    """Retention counts from the replacement: the old Navigator goes through the one erasure
    path (participant_erased naming their Navigator row), the one who followed stays, and
    someone who is still a Navigator elsewhere waits until that ends too."""
    from sqlalchemy import select, update

    from services.enrolment import privacy
    from services.enrolment.models import Navigator
    first = db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(1))
    db.run(coaching.name_navigator, DRESDEN, "SN-DN", person(2), replace=True)
    db.run(coaching.name_navigator, LEIPZIG, "SN-DN", person(3))
    db.run(coaching.name_navigator, LEIPZIG, "SN-DN", person(4), replace=True)
    db.run(coaching.name_navigator, PIRNA, "SN-DN", person(3))  # 3 carries on in Pirna
    long_ago = datetime.now(timezone.utc) - timedelta(days=800)  # the default keeps 730
    db.run(lambda s: s.execute(update(Navigator).where(Navigator.replaced_at.is_not(None))
                               .values(replaced_at=long_ago)))
    today = calendar_today()
    assert db.run(privacy.replaced_navigators, today) == ["navigator1@sachsen.example"]
    assert db.run(privacy.replaced_navigators, today - timedelta(days=100)) == []
    done = db.run(privacy.apply_retention, b"k" * 32, today)
    assert (done["navigators"], done["enrolments"]) == (1, 0)
    rows = db.run(lambda s: {str(n.id): (n.given_name, n.email) for n in s.scalars(
        select(Navigator))})
    assert rows[first["id"]][0] == "gelöscht"
    assert rows[first["id"]][1].endswith("@erased.invalid")
    assert sorted(email for _, email in rows.values() if "sachsen" in email) == [
        "navigator2@sachsen.example", "navigator3@sachsen.example",
        "navigator3@sachsen.example", "navigator4@sachsen.example"]
    [erased] = events(db, "participant_erased")
    assert erased["navigators"] == [first["id"]] and erased["enrolments"] == []
    assert db.run(privacy.apply_retention, b"k" * 32, today)["navigators"] == 0
