"""When reminders are due, and whom they reach, on the embedded database (SQLite)."""
import uuid
from datetime import date, timedelta

import pytest

from services.common.errors import RuleViolation
from services.funding import domain
from services.funding.models import InboxRecord, OutboxMessage
from tests.funding_support import bodies, cancelled, confirmed, policy, publish
from tests.sqlite_support import migrated_sqlite

FEE = 50_000
RESERVE = date(2027, 6, 30)


@pytest.fixture
def db(tmp_path):
    handle = migrated_sqlite(tmp_path, "funding", OutboxMessage, InboxRecord)
    yield handle
    handle.dispose()


def programme(db, count=5, remind_days_before=(28, 7)):
    programme_id, eligible = uuid.uuid4(), bodies(count)
    db.run(lambda s: publish(s, programme_id, eligible))
    db.run(domain.set_policy, programme_id, "BW-DL",
           dict(policy(count * FEE * 2, FEE, 1, RESERVE),
                remind_days_before=list(remind_days_before)))
    return programme_id, eligible


def reminded_events(db):
    return db.run(lambda s: [m.envelope["payload"] for m in s.query(OutboxMessage)
                             if m.envelope["event_type"] == "body_reminded"])


def test_campaigns_fall_due_the_configured_days_before_the_reserve_date(db):
    programme(db)
    due = lambda today: db.run(domain.due_reminder_campaigns, today)  # noqa: E731
    assert due(RESERVE - timedelta(days=29)) == []
    assert due(RESERVE - timedelta(days=28)) == [("BW-DL", "reserve-20270630-28d")]
    assert due(RESERVE - timedelta(days=7)) == [("BW-DL", "reserve-20270630-28d"),
                                                ("BW-DL", "reserve-20270630-7d")]
    assert due(RESERVE + timedelta(days=1)) == []
    db.run(domain.apply_reserve_deadline, "BW-DL", RESERVE + timedelta(days=1))
    assert due(RESERVE) == []  # released: no guarantee left to remind of


def test_a_body_with_a_confirmed_participant_is_not_reminded_and_nobody_twice(db):
    programme_id, eligible = programme(db)
    funded = confirmed(programme_id, eligible[0])
    db.run(domain.enrolment_confirmed, funded, str(uuid.uuid4()))
    waiting_body = confirmed(programme_id, eligible[1])
    db.run(domain.enrolment_confirmed, waiting_body, str(uuid.uuid4()))
    gone = confirmed(programme_id, eligible[2])
    db.run(domain.enrolment_confirmed, gone, str(uuid.uuid4()))
    db.run(domain.enrolment_cancelled, cancelled(programme_id, eligible[2], gone["enrolment_id"]),
           str(uuid.uuid4()))
    first = db.run(domain.remind_bodies_without_participant, "BW-DL", "reserve-20270630-28d")
    assert (first["reminded"], first["already_reminded"]) == (3, 0)
    assert sorted(e["ags"] for e in reminded_events(db)) == [eligible[2], eligible[3],
                                                             eligible[4]]
    [event] = [e for e in reminded_events(db) if e["ags"] == eligible[3]]
    assert event["reserve_until"] == "2027-06-30" and event["programme_name"] == "n"
    again = db.run(domain.remind_bodies_without_participant, "BW-DL", "reserve-20270630-28d")
    assert (again["reminded"], again["already_reminded"]) == (0, 3)
    assert len(reminded_events(db)) == 3
    listed = db.run(domain.reminders, "BW-DL")
    assert [r["ags"] for r in listed] == [eligible[2], eligible[3], eligible[4]]


def test_no_reminder_after_the_reserve_is_released(db):
    programme(db)
    db.run(domain.apply_reserve_deadline, "BW-DL", RESERVE + timedelta(days=1))
    with pytest.raises(RuleViolation):
        db.run(domain.remind_bodies_without_participant, "BW-DL", "spaet")
    assert reminded_events(db) == []
