"""A member of the programme office whose access ended is erased (SQLite, no broker): name,
address, sign-in links, sessions and the stored link requests go; the record of when their
access began and ended stays under a pseudonym."""
from datetime import datetime, timezone

import pytest

from services.common.errors import NotFound, RuleViolation
from services.enrolment import office, privacy
from services.enrolment.models import (
    InboxRecord,
    OfficeSession,
    OfficeSignInLink,
    OfficeStaff,
    OutboxMessage,
)
from tests.sqlite_support import migrated_sqlite

ADDRESS = "paula.programm@lotsen.example"


@pytest.fixture
def db(tmp_path):
    handle = migrated_sqlite(tmp_path, "enrolment", OutboxMessage, InboxRecord)
    yield handle
    handle.dispose()


def test_an_office_member_who_left_is_erased(db):
    db.run(office.add_staff, ADDRESS, "Paula Programm")
    db.run(office.add_staff, "other@lotsen.example", "Otto Anders")
    assert db.run(office.DESK.request_sign_in, ADDRESS, "http://x/buero/link/") == 1
    link = db.run(lambda s: s.query(OutboxMessage).one().envelope["payload"]["link"])
    db.run(office.DESK.sign_in, link.rsplit("/", 1)[1], 8)
    with pytest.raises(RuleViolation) as still:
        db.run(privacy.erase_office_member, ADDRESS)
    assert still.value.fields == {"email": ["still has access"]}
    db.run(office.remove_staff, ADDRESS)
    with pytest.raises(RuleViolation) as waiting:  # the link request is not sent yet
        db.run(privacy.erase_office_member, ADDRESS)
    assert waiting.value.fields == {"email": ["events naming the member of the office not "
                                              "yet sent"]}
    db.run(lambda s: s.query(OutboxMessage).update({"published_at": datetime.now(timezone.utc)}))

    erased = db.run(privacy.erase_office_member, ADDRESS.upper())
    rows = db.run(lambda s: {m.email: (m.name, m.added_at, m.removed_at)
                             for m in s.query(OfficeStaff)})
    assert ADDRESS not in rows and rows[erased["stand_in"]][0] == "gelöscht"
    assert rows[erased["stand_in"]][2] is not None  # when the access ended stays
    assert rows["other@lotsen.example"][0] == "Otto Anders"
    assert db.run(lambda s: s.query(OfficeSignInLink).count() + s.query(OfficeSession).count()) \
        == 0
    stored = db.run(lambda s: [str(m.envelope) for m in s.query(OutboxMessage)])
    assert stored and not [e for e in stored if "paula" in e.lower() or link in e]
    with pytest.raises(NotFound):
        db.run(privacy.erase_office_member, ADDRESS)
    assert db.run(office.DESK.request_sign_in, ADDRESS, "http://x/buero/link/") == 0
    db.run(office.add_staff, ADDRESS, "Paula Programm")  # the address may come back later
    assert db.run(office.DESK.request_sign_in, ADDRESS, "http://x/buero/link/") == 1


@pytest.mark.parametrize("desk_of, when", [("office", "asked"), ("coaching", "asked"),
                                           ("office", "daily"), ("coaching", "daily")])
def test_old_links_and_sessions_of_the_office_and_the_coaches_are_deleted(db, desk_of, when):
    """As the portal's: a day after a link expired, 30 days after a session ended, when the
    next link is asked for and in the daily retention run; they hold the person's address
    and let nobody in."""
    from datetime import timedelta

    from sqlalchemy import update

    from services.enrolment import coaching
    desk = office.DESK if desk_of == "office" else coaching.DESK
    Link, Session = desk.link_model, desk.session_model
    db.run(office.add_staff, ADDRESS, "Paula Programm")  # the office's links point to staff
    db.run(lambda s: [
        s.add(Link(token_hash=f"{n}" * 64, email=ADDRESS, created_at=moment,
                   expires_at=moment + timedelta(minutes=15)))
        for n, moment in ((1, datetime.now(timezone.utc) - timedelta(days=2)),
                          (2, datetime.now(timezone.utc)))])
    db.run(lambda s: [
        s.add(Session(id_hash=f"{n}" * 64, email=ADDRESS, created_at=moment,
                      expires_at=moment + timedelta(hours=8), ended_at=ended))
        for n, moment, ended in (
            (3, datetime.now(timezone.utc) - timedelta(days=40), None),
            (4, datetime.now(timezone.utc) - timedelta(days=35),
             datetime.now(timezone.utc) - timedelta(days=31)),
            (5, datetime.now(timezone.utc) - timedelta(days=10),
             datetime.now(timezone.utc) - timedelta(days=9)))])
    db.run(lambda s: s.execute(update(Session).where(Session.id_hash == "5" * 64)
                               .values(expires_at=datetime.now(timezone.utc) + timedelta(days=1))))
    if when == "asked":
        assert db.run(desk.request_sign_in, "stranger@lotsen.example", "http://x/") == 0
    else:
        db.run(privacy.forget_old_sign_ins)
    assert db.run(lambda s: sorted(link.token_hash[0] for link in s.query(Link))) == ["2"]
    assert db.run(lambda s: sorted(m.id_hash[0] for m in s.query(Session))) == ["5"]
