"""A sign-in link lets whoever holds it in. Its event reaches the broker with the link, and
the outbox row keeps the event without it once the broker has confirmed it, on PostgreSQL
and on the embedded SQLite; notifications' notice forgets it once the mail is sent. So a copy
of either database lets nobody in."""
import json

import pytest
from kombu import Connection
from sqlalchemy import select

from services.common import topology
from services.common.db import open_database
from services.common.messaging import OutboxRelay
from services.common.migrations import upgrade
from services.enrolment import domain, office, portal
from services.enrolment.models import Body, InboxRecord, OutboxMessage

WIESLOCH = "08226098"


def seeded(handle):
    def setup(session):
        session.add(Body(ags=WIESLOCH, name="Wiesloch", kind="gemeinde", designation="Stadt",
                         land="08"))
        session.flush()
        domain.register_municipality(session, WIESLOCH, "Hauptamt", "hauptamt@w.example")
        office.add_staff(session, "paula@lotsen.example", "Paula Programm")
    handle.run(setup)
    assert handle.run(portal.request_sign_in, "hauptamt@w.example", "http://gw/portal/link/") == 1
    assert handle.run(office.request_sign_in, "paula@lotsen.example", "http://gw/buero/link/") \
        == 1


def stored(handle) -> dict:
    return handle.run(lambda s: {m.event_type: m.envelope["payload"] for m in s.scalars(
        select(OutboxMessage))})


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_the_outbox_forgets_a_link_once_the_broker_has_it(service_config, tmp_path, database):
    config = dict(service_config)
    if database == "sqlite":
        config = dict(config, LOTSEN_HOME=str(tmp_path), DATABASES={})
        upgrade("enrolment", f"sqlite:///{tmp_path / 'enrolment.sqlite'}")
    handle = open_database(config, "enrolment", OutboxMessage, InboxRecord)
    relay = OutboxRelay(handle, "enrolment", config)
    try:
        assert handle.is_postgresql == (database == "postgresql")
        seeded(handle)
        links = {t: p["link"] for t, p in stored(handle).items() if "link" in p}
        assert set(links) == {"sign_in_link_requested", "office_sign_in_link_requested"}
        assert all(len(link) > 40 for link in links.values())
        relay.declare_topology()
        assert relay.publish_pending() == 3
        after = stored(handle)
        assert {t: after[t]["link"] for t in links} == dict.fromkeys(links, "")
        assert after["municipality_registered"]["contact_email"] == "hauptamt@w.example"
        assert after["sign_in_link_requested"]["email"] == "hauptamt@w.example"
        # the consumer got the link as it was
        queue = next(s.queue_name for s in topology.subscriptions(
            topology.service_classes(config)) if s.event_type == "sign_in_link_requested")
        with Connection(config["AMQP_URI"]) as connection:
            message = connection.channel().basic_get(queue, no_ack=True)
        assert message is not None
        assert json.loads(message.body)["payload"]["link"] == links["sign_in_link_requested"]
    finally:
        relay.close()
        handle.dispose()


def test_a_sent_link_mail_forgets_the_link(tmp_path):
    """Notifications on SQLite: the mail carries the link, the notice afterwards does not."""
    from services.common.events import build_event, parse_event
    from services.notifications import domain as mail
    from services.notifications.delivery import render
    from services.notifications.models import InboxRecord as MailInbox
    from services.notifications.models import Notice
    from services.notifications.models import OutboxMessage as MailOutbox
    from tests.sqlite_support import migrated_sqlite

    handle = migrated_sqlite(tmp_path, "notifications", MailOutbox, MailInbox)
    link = "http://gw/portal/link/" + "t" * 43
    try:
        event = parse_event(build_event("enrolment", "sign_in_link_requested", {
            "ags": WIESLOCH, "municipality": "Wiesloch", "email": "hauptamt@w.example",
            "name": "Hauptamt", "link": link, "expires_at": domain.now()}))
        handle.run(mail.sign_in_link_requested, event.payload, str(event.event_id))
        [notice] = handle.run(mail.claim_due, 20)
        _, text, _ = render(notice.template, dict(
            notice.context, recipient_role=notice.recipient_role, to_name=notice.to_name,
            office_name="Büro"))
        assert link in text  # what the mail says
        forget = {notice.id: mail.without_secrets(notice)}
        assert handle.run(mail.record_round, [notice.id], [], 8, 5, 600, forget) == [notice.id]
        kept = handle.run(lambda s: s.get(Notice, notice.id))
        assert kept.status == "sent" and kept.context["link"] == ""
        assert kept.context["municipality"] == "Wiesloch"
        from services.notifications.privacy import subject_line
        assert "Anmeldelink" in subject_line(kept, "Büro")  # the access request still says it
    finally:
        handle.dispose()
