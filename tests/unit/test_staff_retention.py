"""Who the daily retention run erases among the people who worked on the programme: coaches,
office members and portal colleagues whose access ended more than STAFF_RETENTION_DAYS ago,
and nobody who still has access in that role or lost it more recently (SQLite, no broker)."""
from datetime import datetime, timedelta, timezone

from sqlalchemy import update

from services.common.clock import calendar_today
from services.enrolment import coaching, domain, office, privacy
from services.enrolment.models import (
    Body,
    Coach,
    FormerContact,
    OfficeStaff,
    OutboxMessage,
    PortalColleague,
)
from tests.unit.test_coaching import coaching_programme, db, saxony  # noqa: F401 (fixtures)

DRESDEN, LEIPZIG = "14612000", "14713000"


def left(db, model, where, days_ago):
    moment = datetime.now(timezone.utc) - timedelta(days=days_ago)
    db.run(lambda s: s.execute(update(model).where(where).values(removed_at=moment)))


def test_only_who_left_long_enough_ago_is_due(db):
    def setup(session):
        coaching_programme(session, code="SN-DL2", name="Zweiter Durchgang")
        for name, email, code in (("Alt", "alt@ssg.example", "SN-DN"),
                                  ("Neu", "neu@ssg.example", "SN-DN"),
                                  ("Noch", "noch@ssg.example", "SN-DN"),
                                  ("Beide", "beide@ssg.example", "SN-DN"),
                                  ("Beide", "beide@ssg.example", "SN-DL2")):
            coaching.register_coach(session, code, name, email, 4)
        for email in ("paula@lotsen.example", "otto@lotsen.example", "ida@lotsen.example"):
            office.add_staff(session, email, email.split("@")[0])
        session.add_all([PortalColleague(ags=DRESDEN, name=n, email=e) for n, e in (
            ("Gerda Gegangen", "gerda@dresden.example"),
            ("Wieder Da", "wieder@dresden.example"),
            ("Kontakt Jetzt", "kontakt@leipzig.example"))])
        assert session.get(Body, LEIPZIG) is not None
        session.flush()
        domain.register_municipality(session, LEIPZIG, "Kontakt Jetzt",
                                     "kontakt@leipzig.example")
    db.run(setup)
    left(db, Coach, Coach.email == "alt@ssg.example", 400)
    left(db, Coach, Coach.email == "neu@ssg.example", 30)
    # in one programme long ago, still coaching in the other
    left(db, Coach, (Coach.email == "beide@ssg.example") & (Coach.name == "Beide")
         & (Coach.programme_id == db.run(lambda s: domain.programme_by_code(s, "SN-DN").id)),
         400)
    left(db, OfficeStaff, OfficeStaff.email == "paula@lotsen.example", 366)
    left(db, OfficeStaff, OfficeStaff.email == "otto@lotsen.example", 364)
    left(db, PortalColleague, PortalColleague.email.in_(
        ["gerda@dresden.example", "wieder@dresden.example", "kontakt@leipzig.example"]), 500)
    db.run(lambda s: s.add(PortalColleague(ags=LEIPZIG, name="Wieder Da",  # invited again
                                           email="wieder@dresden.example")))
    # Dresden's contacts: Frieda long ago, then Franz lately, now Fritz; Kontakt Jetzt was
    # Dresden's contact once and is Leipzig's now.
    for name, email in (("Frieda Früher", "frieda@dresden.example"),
                        ("Franz Kürzlich", "franz@dresden.example"),
                        ("Kontakt Jetzt", "kontakt@leipzig.example"),
                        ("Fritz Heute", "fritz@dresden.example")):
        db.run(domain.register_municipality, DRESDEN, name, email)
    long_ago = datetime.now(timezone.utc) - timedelta(days=400)
    db.run(lambda s: s.execute(update(FormerContact).where(
        FormerContact.email != "franz@dresden.example").values(replaced_at=long_ago)))

    due = db.run(privacy.staff_who_left)
    assert due == [("clerk", "frieda@dresden.example"), ("clerk", "gerda@dresden.example"),
                   ("coach", "alt@ssg.example"), ("office", "paula@lotsen.example")]
    assert db.run(privacy.staff_who_left, 20) == sorted(due + [
        ("coach", "neu@ssg.example"), ("office", "otto@lotsen.example")])
    # in two days Otto is due too, in a year Franz; what was erased is not due again
    assert ("office", "otto@lotsen.example") in db.run(
        privacy.staff_who_left, 365, calendar_today() + timedelta(days=2))
    assert ("clerk", "franz@dresden.example") in db.run(
        privacy.staff_who_left, 365, calendar_today() + timedelta(days=366))
    db.run(lambda s: s.execute(update(OutboxMessage).values(  # as the relay would have
        published_at=datetime.now(timezone.utc))))
    db.run(privacy.erase_office_member, "paula@lotsen.example")
    db.run(privacy.erase_coach, "alt@ssg.example")
    db.run(privacy.erase_clerk, "gerda@dresden.example")
    db.run(privacy.erase_clerk, "frieda@dresden.example")
    assert db.run(privacy.staff_who_left) == []


def test_the_period_comes_from_the_config_and_is_at_least_a_day():
    assert privacy.staff_retention_days({}) == 365
    assert privacy.staff_retention_days({"STAFF_RETENTION_DAYS": "90"}) == 90
    assert privacy.staff_retention_days({"STAFF_RETENTION_DAYS": ""}) == 365
    assert privacy.staff_retention_days({"STAFF_RETENTION_DAYS": 0}) == 1
    assert privacy.staff_retention_days({"STAFF_RETENTION_DAYS": "-5"}) == 1
