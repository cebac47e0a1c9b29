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
