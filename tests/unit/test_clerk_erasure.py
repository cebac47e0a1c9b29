"""A municipal clerk who may no longer sign in (a former contact, a removed colleague) is
erased (SQLite, no broker): enrolment's rows, sign-in and stored events, then the mail log
the events were mailed from. Someone else of the same name elsewhere keeps theirs."""
import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import select, update

from services.common.events import parse_event
from services.common.errors import AuthenticationFailed, NotFound, RuleViolation
from services.enrolment import domain, portal, privacy
from services.enrolment.models import (
    Body,
    FormerContact,
    InboxRecord,
    OutboxMessage,
    PortalColleague,
    PortalSession,
    PortalSignInLink,
)
from services.notifications import domain as mail_domain
from services.notifications import privacy as mail_privacy
from services.notifications.models import Contact, Notice
from services.notifications.models import InboxRecord as MailInbox
from services.notifications.models import OutboxMessage as MailOutbox
from tests.sqlite_support import migrated_sqlite

ERIKA, MAX = "e.muster@x.example", "max.mustermann@x.example"
PORTAL = "http://gw/portal/anmelden"
LINKS = "http://gw/portal/link/"


@pytest.fixture
def db(tmp_path):
    handle = migrated_sqlite(tmp_path, "enrolment", OutboxMessage, InboxRecord)

    def setup(session):
        for ags, name in (("08226098", "Wiesloch"), ("08226095", "Walldorf"),
                          ("08226062", "Nußloch")):
            session.add(Body(ags=ags, name=name, kind="gemeinde", designation="Stadt",
                             land="08"))
        session.flush()
        domain.register_municipality(session, "08226098", "Erika Muster", ERIKA)
        domain.register_municipality(session, "08226095", "Erika Muster", ERIKA)
        # Another Erika Muster, contact of Nußloch: nothing of hers is touched.
        domain.register_municipality(session, "08226062", "Erika Muster",
                                     "erika@nussloch.example")
    handle.run(setup)
    yield handle
    handle.dispose()


@pytest.fixture
def mail_log(tmp_path):
    handle = migrated_sqlite(tmp_path, "notifications", MailOutbox, MailInbox)
    yield handle
    handle.dispose()


def signed_in(db, ags, email) -> str:
    db.run(portal.request_sign_in, email, LINKS)
    link = db.run(lambda s: [m.envelope["payload"]["link"] for m in s.scalars(
        select(OutboxMessage).where(OutboxMessage.event_type == "sign_in_link_requested")
        .order_by(OutboxMessage.position)) if m.envelope["payload"]["email"] == email
        and m.envelope["payload"]["ags"] == ags][-1])
    return db.run(portal.sign_in, link.rsplit("/", 1)[1], 8)["session_id"]


def publish_all(db):
    db.run(lambda s: s.execute(update(OutboxMessage).values(
        published_at=datetime.now(timezone.utc))))


def stored_events(db) -> list[str]:
    return db.run(lambda s: [str(m.envelope) for m in s.scalars(select(OutboxMessage))])


def mailed(db, mail_log):
    """Every stored event of enrolment handled by notifications, as the running service
    would have; the mails are then sent."""
    handlers = {"municipality_registered": mail_domain.municipality_registered,
                "sign_in_link_requested": mail_domain.sign_in_link_requested,
                "colleague_invited": mail_domain.colleague_invited}
    envelopes = db.run(lambda s: [m.envelope for m in s.scalars(
        select(OutboxMessage).order_by(OutboxMessage.position))])
    for envelope in envelopes:
        event = parse_event(envelope)
        mail_log.run(handlers[event.event_type], event.payload, str(event.event_id))
    mail_log.run(lambda s: s.execute(update(Notice).values(
        status="sent", sent_at=datetime.now(timezone.utc))))


def test_a_removed_colleague_and_a_former_contact_are_erased(db, mail_log, tmp_path):
    erika = signed_in(db, "08226098", ERIKA)
    invited = db.run(portal.invite_colleague, "08226098", erika, "Max Mustermann", MAX, PORTAL)
    signed_in(db, "08226098", MAX)
    nussloch = signed_in(db, "08226062", "erika@nussloch.example")
    db.run(portal.invite_colleague, "08226062", nussloch, "Nora Nachbar",
           "nora@nussloch.example", PORTAL)

    with pytest.raises(RuleViolation) as colleague:
        db.run(privacy.erase_clerk, MAX)
    assert colleague.value.fields == {"email": ["colleague at 08226098"]}
    with pytest.raises(RuleViolation) as contact:
        db.run(privacy.erase_clerk, ERIKA)
    assert contact.value.fields == {"email": ["contact of 08226095", "contact of 08226098"]}
    with pytest.raises(NotFound):
        db.run(privacy.erase_clerk, "never@x.example")

    # Erika removes Max; he may be erased once his link request and invitation are sent.
    db.run(portal.remove_colleague, "08226098", erika, invited["id"])
    with pytest.raises(RuleViolation) as waiting:
        db.run(privacy.erase_clerk, MAX)
    assert waiting.value.fields == {"email": ["events naming the clerk not yet sent"]}
    publish_all(db)
    mailed(db, mail_log)
    max_found = db.run(privacy.clerk_to_erase, MAX)
    assert (max_found["names"], max_found["contact_bodies"]) == (["Max Mustermann"], [])
    mails = mail_log.run(mail_privacy.recipient_erased, MAX, "p1@erased.invalid",
                         names=max_found["names"], municipalities=max_found["municipalities"])
    assert (mails["notices_kept"], mails["notices_dropped"]) == (2, 0)  # invitation, link
    gone = db.run(privacy.erase_clerk, MAX.upper(), "p1")
    assert (gone["colleague_rows"], gone["events_scrubbed"]) == (1, 2)
    row = db.run(lambda s: s.get(PortalColleague, uuid.UUID(invited["id"])))
    assert (row.name, row.email) == ("gelöscht", "p1@erased.invalid")
    assert row.invited_at and row.removed_at  # when access began and ended stays
    assert not [e for e in stored_events(db) if "mustermann" in e.lower()]
    with pytest.raises(NotFound):
        db.run(privacy.erase_clerk, MAX)
    # The address may be invited again later, as someone new.
    again = db.run(portal.invite_colleague, "08226098", erika, "Max Mustermann", MAX, PORTAL)
    assert again["id"] != invited["id"]

    # Erika leaves: both her bodies get a new contact, then she may be erased.
    db.run(lambda s: [domain.register_municipality(s, ags, "Olga Neu", "o.neu@x.example")
                      for ags in ("08226098", "08226095")])
    with pytest.raises(AuthenticationFailed):  # her session ended with her access
        db.run(portal.current, erika)
    with pytest.raises(RuleViolation):  # her invitation of Max again is not sent yet
        db.run(privacy.erase_clerk, ERIKA)
    publish_all(db)
    mail_log.run(lambda s: s.execute(update(Notice).values(status="pending")))
    mail_log.run(mail_domain.colleague_invited, {
        "ags": "08226098", "municipality": "Wiesloch", "email": MAX, "name": "Max Mustermann",
        "invited_by": "Erika Muster", "portal_url": PORTAL}, "again")
    mail_log.run(lambda s: s.add(Notice(
        dedup_key="x:participant:funding_granted", template="funding_granted",
        recipient_role="participant", to_email="p@x.example", to_name="P", cc_email=ERIKA,
        context={}, status="sent", sent_at=datetime.now(timezone.utc))))
    (tmp_path / "files").mkdir()
    found = db.run(privacy.clerk_to_erase, ERIKA)
    assert found["names"] == ["Erika Muster"]
    assert found["contact_bodies"] == ["08226095", "08226098"]
    assert found["municipalities"] == ["Walldorf", "Wiesloch"]
    mails = mail_log.run(mail_privacy.recipient_erased, ERIKA, "p2@erased.invalid",
                         mail_dir=tmp_path / "files", names=found["names"],
                         municipalities=found["municipalities"],
                         bodies=found["contact_bodies"])
    # links to her were never sent here (pending): dropped; the copy to her is gone; the
    # invitations she sent (the first one scrubbed with Max already, then the second) no
    # longer name her; Nußloch's Erika still invites Nora.
    assert mails["notices_dropped"] == 2 and mails["notices_copied"] == 1
    assert mails["notices_naming"] == 1
    rows = mail_log.run(lambda s: s.execute(select(Notice.to_email, Notice.cc_email,
                                                   Notice.context)).all())
    assert ERIKA not in str(rows)
    assert [r.context["invited_by"] for r in rows if r.to_email == "nora@nussloch.example"] \
        == ["Erika Muster"]
    assert mail_log.run(lambda s: {c.ags: c.contact_email for c in s.scalars(
        select(Contact))})["08226098"] == "p2@erased.invalid"  # until Olga's event arrives
    assert db.run(lambda s: sorted((f.ags, f.name) for f in s.scalars(
        select(FormerContact).where(FormerContact.email == ERIKA)))) == [
        ("08226095", "Erika Muster"), ("08226098", "Erika Muster")]
    # Nußloch's Erika Muster invites someone meanwhile: not about her, so no wait
    db.run(portal.invite_colleague, "08226062", nussloch, "Nils Neu", "nils@nussloch.example",
           PORTAL)
    gone = db.run(privacy.erase_clerk, ERIKA, "p2")
    assert (gone["colleague_rows"], gone["contact_rows"], gone["events_scrubbed"]) == (0, 2, 6)
    assert db.run(lambda s: sorted((f.name, f.email) for f in s.scalars(
        select(FormerContact)))) == [("gelöscht", "p2@erased.invalid")] * 2  # dates stay
    left = stored_events(db)
    assert not [e for e in left if "e.muster" in e]
    assert [e for e in left if "erika@nussloch.example" in e and "Erika Muster" in e]
    assert [e for e in left if "nora@nussloch.example" in e and "Erika Muster" in e]
    assert len([e for e in left if "'invited_by': 'gelöscht'" in e]) == 2
    assert [e for e in left if "o.neu@x.example" in e and "Olga Neu" in e]
    assert db.run(lambda s: s.scalar(select(PortalSignInLink.email).where(
        PortalSignInLink.email == ERIKA)) or s.scalar(select(PortalSession.email).where(
        PortalSession.email == ERIKA))) is None
    with pytest.raises(NotFound):
        db.run(privacy.erase_clerk, ERIKA)


def test_an_access_request_shows_the_clerk_s_portal_access(db):
    erika = signed_in(db, "08226098", ERIKA)
    db.run(portal.invite_colleague, "08226098", erika, "Max Mustermann", MAX, PORTAL)
    shown = db.run(privacy.export_participant, ERIKA, b"k" * 32)["portal"]
    assert [(c["ags"], c["municipality"], c["name"]) for c in shown["contact_of"]] == [
        ("08226095", "Walldorf", "Erika Muster"), ("08226098", "Wiesloch", "Erika Muster")]
    assert shown["colleague_of"] == [] and shown["sessions"] == 1
    assert shown["contact_until"] == []
    db.run(domain.register_municipality, "08226098", "Olga Neu", "o.neu@x.example")
    replaced = db.run(privacy.export_participant, ERIKA, b"k" * 32)["portal"]
    assert [(c["municipality"], c["name"]) for c in replaced["contact_until"]] == [
        ("Wiesloch", "Erika Muster")]
    assert [c["ags"] for c in replaced["contact_of"]] == ["08226095"]
    of_max = db.run(privacy.export_participant, MAX, b"k" * 32)["portal"]
    assert [(c["municipality"], c["name"], c["removed_at"]) for c in of_max["colleague_of"]] \
        == [("Wiesloch", "Max Mustermann", None)]
    assert of_max["contact_of"] == [] and of_max["sessions"] == 0


def test_only_events_already_sent_are_scrubbed(db):
    """An erasure waits for the events about the person; one written after that check (they
    were let in again meanwhile) is newer than the erasure and reaches them as it is."""
    erika = signed_in(db, "08226098", ERIKA)
    db.run(portal.invite_colleague, "08226098", erika, "Max Mustermann", MAX, PORTAL)
    publish_all(db)
    db.run(portal.request_sign_in, MAX, LINKS)  # not sent yet
    assert db.run(privacy._scrub_person_events, MAX, set(), "p@erased.invalid") == 1
    left = db.run(lambda s: {m.event_type: (m.envelope["payload"]["email"], m.published_at)
                             for m in s.scalars(select(OutboxMessage).where(
                                 OutboxMessage.event_type.in_(
                                     ["colleague_invited", "sign_in_link_requested"])))
                             if m.envelope["payload"].get("name") != "Erika Muster"})
    assert left["colleague_invited"][0] == "p@erased.invalid"
    assert left["sign_in_link_requested"] == (MAX, None)
