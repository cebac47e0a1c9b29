"""An erased participant's mails, the mail log's retention, and what an access request is
shown. Plain functions, no nameko.

On ``participant_erased`` the copy of each enrolment keeps its row as the marker (status
``erased``, names and address replaced by the pseudonym): a late event about the enrolment
finds it in the read it makes anyway and writes nothing, so the hot paths pay no statement
for it. Mails not yet sent are dropped; of mails sent, the record stays (template, recipient
role, dates) without the participant's name, address or the mail's content, and the stored
.eml files (the embedded default's mail directory) are deleted.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from services.common import privacy
from services.notifications.domain import ERASED
from services.notifications.models import Contact, EarlyFundingEvent, KnownEnrolment, Notice

UNSENT = ("pending", "failed")


def remove_files(mail_dir: Path | None, notice_ids) -> int:
    """The .eml files of these notices, if mail goes to files; a missing one is fine."""
    if mail_dir is None:
        return 0
    removed = 0
    for notice_id in notice_ids:
        for name in (f"{notice_id}.eml", f"{notice_id}.eml.partial"):
            try:
                os.remove(Path(mail_dir) / name)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _legacy_notices(session: Session, emails: set, names: set) -> list:
    """Notices from before each kept its enrolment id: the participant's by address, the
    municipality's about them by the name they mention. (A coaching programme's mails to
    the Navigator and their coach are found by the Navigator's id, when the erasure names
    it: retention may erase an enrolment while its person still coaches as Navigator.)"""
    found = []
    for notice_id, to_email, context in session.execute(
            select(Notice.id, Notice.to_email, Notice.context)
            .where(Notice.enrolment_id.is_(None),
                   Notice.recipient_role.not_in(("navigator", "coach")))):
        context = context or {}
        if to_email in emails or context.get("participant_name") in names:
            found.append(notice_id)
    return found


def participant_erased(session: Session, payload: dict, mail_dir: Path | None = None) -> dict:
    pseudonym = payload["pseudonym"]
    stand_in = privacy.erased_participant(pseudonym)
    ids = [e["enrolment_id"] for e in payload["enrolments"]]
    copies = {c.enrolment_id: c for c in session.scalars(
        select(KnownEnrolment).where(KnownEnrolment.enrolment_id.in_(ids)))}
    emails, names = set(), set()
    for erased in payload["enrolments"]:
        copy = copies.get(erased["enrolment_id"])
        if copy is None:  # the erasure came first: the marker waits for the late events
            copy = KnownEnrolment(enrolment_id=erased["enrolment_id"], ags=erased["ags"],
                                  course_id=erased["course_id"], course={},
                                  first_module_on=None, version=None)
            session.add(copy)
        elif copy.status != ERASED:
            emails.add(copy.email)
            names.add(f"{copy.given_name} {copy.family_name}")
        copy.given_name = stand_in["given_name"]
        copy.family_name = stand_in["family_name"]
        copy.email = stand_in["email"]
        copy.status = ERASED
    notices = session.execute(select(Notice.id, Notice.status).where(
        Notice.enrolment_id.in_(ids))).all()
    if payload.get("navigators"):  # mails to or about them as a Navigator
        notices += session.execute(select(Notice.id, Notice.status).where(
            Notice.enrolment_id.is_(None), or_(*(
                Notice.dedup_key.contains(f":{navigator_id}")
                for navigator_id in payload["navigators"])))).all()
    legacy = set(_legacy_notices(session, emails, names)) if emails else set()
    if legacy:
        notices += session.execute(select(Notice.id, Notice.status)
                                   .where(Notice.id.in_(legacy))).all()
    unsent = [n.id for n in notices if n.status in UNSENT]
    sent = [n.id for n in notices if n.status not in UNSENT]
    if unsent:
        session.execute(delete(Notice).where(Notice.id.in_(unsent)))
    if sent:
        session.execute(update(Notice).where(Notice.id.in_(sent),
                                             Notice.recipient_role.in_(("participant",
                                                                        "navigator")))
                        .values(to_email=stand_in["email"],
                                to_name=f"{stand_in['given_name']} {pseudonym}"))
        session.execute(update(Notice).where(Notice.id.in_(sent))
                        .values(context={}, last_error=None))
    session.execute(delete(EarlyFundingEvent).where(EarlyFundingEvent.enrolment_id.in_(ids)))
    files = remove_files(mail_dir, [n.id for n in notices])
    return {"notices_dropped": len(unsent), "notices_kept": len(sent), "files_removed": files}


def recipient_erased(session: Session, email: str, stand_in: str, coach_ids=(),
                     mail_dir: Path | None = None, names=(), municipalities=(),
                     bodies=()) -> dict:
    """The erasure of a coach, an office member or a municipal clerk who left reaches the
    mail log: mails to them (or copied to them, as to a municipality's contact) not yet sent
    are dropped or lose the copy; the sent ones keep only that they were sent (no address,
    no values, no file). A coach's Navigators' mails that name them (by address, or by the
    coach's ids in the mail's key, as the mail about their departure), and the invitations
    a former contact sent (by their ``names`` and the ``bodies``, AGS, they were the contact
    of; by the ``municipalities``' names for invitations written before they kept the AGS),
    lose the name and address from their values. (Those mails' files belong to
    their recipients and go with the mail log's retention.) A contact row still holding the
    address (its successor's announcement not yet here) gets the pseudonym until it comes."""
    email = email.strip().lower()
    ids = [str(i) for i in coach_ids]
    to_them = session.execute(select(Notice.id, Notice.status).where(
        or_(Notice.to_email == email, func.lower(Notice.to_email) == email))).all()
    unsent = [n.id for n in to_them if n.status in UNSENT]
    sent = [n.id for n in to_them if n.status not in UNSENT]
    if unsent:
        session.execute(delete(Notice).where(Notice.id.in_(unsent)))
    if sent:
        session.execute(update(Notice).where(Notice.id.in_(sent)).values(
            to_email=stand_in, to_name=privacy.ERASED_NAME, context={}, last_error=None))
    copied = session.execute(select(Notice.id, Notice.status).where(
        func.lower(Notice.cc_email) == email)).all()
    copied_sent = [n.id for n in copied if n.status not in UNSENT]
    if copied:
        session.execute(update(Notice).where(Notice.id.in_([n.id for n in copied]),
                                             Notice.status.in_(UNSENT)).values(cc_email=None))
        session.execute(update(Notice).where(Notice.id.in_(copied_sent))
                        .values(cc_email=stand_in))
    session.execute(update(Contact).where(func.lower(Contact.contact_email) == email)
                    .values(contact_name=privacy.ERASED_NAME, contact_email=stand_in))
    naming = 0
    names, municipalities, bodies = set(names), set(municipalities), set(bodies)
    for notice in session.scalars(select(Notice).where(Notice.id.not_in(
            [n.id for n in to_them]), or_(privacy.in_json_text(Notice.context, email),
                                          *(Notice.dedup_key.contains(f":{i}") for i in ids),
                                          *(privacy.in_json_text(Notice.context, name)
                                            for name in names)))):
        context = dict(notice.context or {})
        by_address = str(context.get("coach_email", "")).lower() == email
        if by_address or any(f":{i}" in notice.dedup_key for i in ids):
            context["coach_name"] = privacy.ERASED_NAME
            if by_address:
                context["coach_email"] = stand_in
        if notice.template == "colleague_invited" and context.get("invited_by") in names \
                and (context["ags"] in bodies if "ags" in context
                     else context.get("municipality") in municipalities):
            context["invited_by"] = privacy.ERASED_NAME
        if context != (notice.context or {}):
            notice.context = context
            naming += 1
    files = remove_files(mail_dir, [n.id for n in to_them] + copied_sent)
    return {"notices_dropped": len(unsent), "notices_kept": len(sent),
            "notices_copied": len(copied), "notices_naming": naming, "files_removed": files}


def delete_old_mail(session: Session, before: datetime, mail_dir: Path | None = None,
                    batch: int = 1000) -> int:
    """The mail log's retention: sent notices older than ``before`` and their files; and
    unsent notices about erased participants (written while their erasure ran, never sent)."""
    stray = list(session.scalars(select(Notice.id).join(
        KnownEnrolment, KnownEnrolment.enrolment_id == Notice.enrolment_id).where(
        KnownEnrolment.status == ERASED, Notice.status.in_(UNSENT))))
    if stray:
        session.execute(delete(Notice).where(Notice.id.in_(stray)))
        remove_files(mail_dir, stray)
    deleted = len(stray)
    while True:
        ids = list(session.scalars(select(Notice.id).where(
            Notice.status == "sent", Notice.sent_at < before).limit(batch)))
        if not ids:
            return deleted
        session.execute(delete(Notice).where(Notice.id.in_(ids)))
        remove_files(mail_dir, ids)
        deleted += len(ids)


def subject_line(notice, office_name: str) -> str | None:
    """A notice's subject line as its mail has (or had) it; None once its content is gone."""
    from services.notifications.delivery import render
    try:
        context = dict(notice.context, recipient_role=notice.recipient_role,
                       to_name=notice.to_name, office_name=office_name)
        return render(notice.template, context)[0]
    except Exception:
        return None


def participant_data(session: Session, enrolment_ids, email: str | None, subject) -> dict:
    """The copies this service keeps of the enrolments, and the mails about them (to the
    participant and to their municipality's contact) or to the address, with their dates.
    ``subject(notice)`` gives a mail's subject line."""
    ids = privacy.as_uuids(enrolment_ids)
    copies = session.scalars(select(KnownEnrolment).where(
        KnownEnrolment.enrolment_id.in_(ids))).all() if ids else []
    conditions = [Notice.enrolment_id.in_(ids)] if ids else []
    if email:  # mails to the address (or copied to it, as to a contact) about anyone
        address = email.strip().lower()
        conditions.append((Notice.to_email == address) | (Notice.cc_email == address))
    notices = session.scalars(select(Notice).where(or_(*conditions))
                              .order_by(Notice.created_at)).all() if conditions else []
    return {
        "enrolment_copies": [{"enrolment_id": str(c.enrolment_id), "given_name": c.given_name,
                              "family_name": c.family_name, "email": c.email,
                              "status": c.status} for c in copies if c.status != ERASED],
        "mails": [{"id": str(n.id), "template": n.template, "subject": subject(n),
                   "recipient_role": n.recipient_role, "to_email": n.to_email,
                   "cc_email": n.cc_email, "status": n.status,
                   "enrolment_id": str(n.enrolment_id) if n.enrolment_id else None,
                   "created_at": n.created_at.isoformat(),
                   "sent_at": n.sent_at.isoformat() if n.sent_at else None}
                  for n in notices]}
