"""What notifications writes for a coaching programme's events, and how an erased Navigator
who never enrolled leaves its mail (SQLite, no broker)."""
import uuid
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import select

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
                 "municipality": "Pirna, Stadt", "participant": NAVIGATOR}, **more)


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
