"""Access, erasure and retention of participants' data at its source, the enrolment service.
Plain functions over a session, no nameko.

Erasure replaces the participant's name, address and department on each of their enrolments
by a pseudonym, scrubs them from the stored events and idempotency answers, keeps a record that
identifies no one (``Erasure``) and announces ``participant_erased`` with the enrolment ids, so
that every other service does the same with its own copies. Retention erases, through the same
path, the enrolments whose programme's retention period has run out since the course ended or
the enrolment was cancelled. Coaches, office members and municipal clerks who left are
erased here too (``erase_coach``, ``erase_office_member``, ``erase_clerk``), with
notifications' part called first.
"""
from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import Text, cast, delete, func, or_, select, union_all, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from services.common import privacy
from services.common.clock import calendar_day
from services.common.errors import NotFound, RuleViolation
from services.common.outbox import emit
from services.enrolment.domain import ACTIVE_STATUSES, present
from services.enrolment.models import (
    Body,
    Course,
    Enrolment,
    Erasure,
    FormerContact,
    IdempotencyRecord,
    MilestoneRecord,
    Module,
    MunicipalityAccount,
    Navigator,
    OutboxMessage,
    PortalColleague,
    PortalSession,
    PortalSignInLink,
    Programme,
)

RUNNING_COURSE = ("planned", "open", "closed")


def now() -> datetime:
    return datetime.now(timezone.utc)


def _normal(email: str) -> str:
    return str(email).strip().lower()


def _of_person(session: Session, email: str, lock: bool = False) -> list[Enrolment]:
    query = (select(Enrolment).where(Enrolment.email == _normal(email),
                                     Enrolment.erased_at.is_(None))
             .order_by(Enrolment.enrolled_at))
    if lock:
        query = query.with_for_update(of=Enrolment)
    return list(session.execute(query).unique().scalars())


def erase_participant(session: Session, email: str, reason: str, key: bytes,
                      moment: datetime | None = None) -> dict:
    """Erase everything that identifies the participant with this address (Art. 17 DSGVO).

    Refused while they hold a seat or a waitlist place in a course that has not ended: the
    enrolment is cancelled first (by the municipality or the provider), so that the seat,
    the waitlist and the funding follow their rules. Asking again for an address already
    erased answers with the earlier erasure."""
    enrolments = _of_person(session, email, lock=True)
    named = session.scalar(select(func.count()).select_from(Navigator).where(
        Navigator.email == _normal(email)))
    if not enrolments and not named:
        earlier = session.scalars(select(Erasure).where(
            Erasure.email_key == privacy.email_key(key, email))
            .order_by(Erasure.erased_at)).all()
        if earlier:
            return {"status": "already_erased", "erasure_id": str(earlier[-1].id),
                    "erased_at": earlier[-1].erased_at.isoformat(),
                    "enrolments": sum(len(e.enrolment_ids) for e in earlier)}
        raise NotFound("no participant with this e-mail address",
                       {"email": ["no enrolment with this address"]})
    running = [e for e in enrolments
               if e.status in ACTIVE_STATUSES and e.course.status in RUNNING_COURSE]
    if running:
        raise RuleViolation(
            "the participant still holds a seat or waitlist place in a course that has not "
            "ended; cancel it first, then erase",
            {"email": [f"active enrolment {e.id} ({e.status}, course {e.course.status})"
                       for e in running]})
    erasure = erase_people(session, [(privacy.email_key(key, email), enrolments,
                                      _normal(email))], "request", reason, moment)[0]
    return {"status": "erased", **erasure}


def erase_enrolments(session: Session, enrolments: list[Enrolment], cause: str,
                     reason: str | None, email_key: str, moment: datetime | None = None
                     ) -> dict:
    """The one erasure path (requests and retention): one person's enrolments."""
    return erase_people(session, [(email_key, enrolments)], cause, reason, moment)[0]


def erase_people(session: Session, people: list[tuple[str, list[Enrolment]]], cause: str,
                 reason: str | None, moment: datetime | None = None,
                 keep_navigators: frozenset = frozenset()) -> list[dict]:
    """Erase several people at once, ``(email key, their enrolments[, their address])``
    each: one pseudonym, one record and one ``participant_erased`` per person; the stored
    events and idempotency answers are scrubbed in one pass for all of them. The address
    finds them as a coaching programme's Navigator even without an enrolment; the
    addresses in ``keep_navigators`` keep their Navigator rows (retention: still within
    their own period)."""
    if not people:
        return []
    moment = moment or now()
    pseudonyms, navigators, results = {}, {}, []
    for email_key, enrolments, *address in people:
        pseudonym = privacy.new_pseudonym()
        stand_in = privacy.erased_participant(pseudonym)
        # The same person as a coaching programme's Navigator (their enrolments' address).
        addresses = ({e.email for e in enrolments} | set(address)) - keep_navigators
        named = []
        if addresses:
            named = list(session.scalars(update(Navigator).where(
                Navigator.email.in_(addresses)).values(
                given_name=stand_in["given_name"], family_name=stand_in["family_name"],
                email=stand_in["email"], department=None).returning(Navigator.id)))
            navigators.update(dict.fromkeys(named, pseudonym))
        if named:  # a coach's notes are free text: they may name the person
            session.execute(update(MilestoneRecord).where(
                MilestoneRecord.navigator_id.in_(named)).values(note=None))
        for enrolment in enrolments:
            enrolment.given_name = stand_in["given_name"]
            enrolment.family_name = stand_in["family_name"]
            enrolment.email = stand_in["email"]
            enrolment.department = None
            enrolment.cancel_reason = None  # free text: it may name the person
            enrolment.erased_at = moment
            pseudonyms[enrolment.id] = pseudonym
        erasure = Erasure(id=uuid.uuid4(), email_key=email_key, pseudonym=pseudonym,
                          cause=cause, reason=reason,
                          enrolment_ids=[str(e.id) for e in enrolments], erased_at=moment)
        session.add(erasure)
        emit(session, "participant_erased", {
            "erasure_id": erasure.id, "pseudonym": pseudonym, "cause": cause,
            "erased_at": moment,
            "enrolments": [{"enrolment_id": e.id, "programme_id": e.programme_id,
                            "course_id": e.course_id, "ags": e.ags} for e in enrolments],
            "navigators": named})
        results.append({"erasure_id": str(erasure.id), "pseudonym": pseudonym,
                        "erased_at": moment.isoformat(), "enrolments": len(enrolments),
                        "navigators": len(named)})
    _scrub_idempotency_answers(session, [e for _, group, *_ in people for e in group],
                               pseudonyms)
    privacy.scrub_envelopes(session, OutboxMessage.__table__, pseudonyms)
    privacy.scrub_envelopes(session, OutboxMessage.__table__, navigators, key="navigator_id")
    session.flush()
    return results


def _scrub_idempotency_answers(session: Session, enrolments: list[Enrolment],
                               pseudonyms: dict):
    """A repeated enrolment request answers with its first answer: that answer must not
    bring the person back. (The request's hash stays: it is a SHA-256 over the whole request
    and cannot be reversed into the name.)"""
    wanted = {str(i): p for i, p in pseudonyms.items()}
    records = session.scalars(select(IdempotencyRecord).where(
        IdempotencyRecord.ags.in_({e.ags for e in enrolments}))).all()
    for record in records:
        pseudonym = wanted.get(str((record.response or {}).get("id")))
        if pseudonym is not None:
            record.response = privacy.scrub_participant(record.response, pseudonym)
            flag_modified(record, "response")


# --- coaches who left --------------------------------------------------------------------------

def coaches_to_erase(session: Session, email: str, lock: bool = False) -> list:
    """The coach rows of this address, if they may be erased: NotFound for an address no
    coach has (an erased one included), RuleViolation while they still coach anywhere."""
    from services.enrolment.models import Coach
    query = select(Coach).where(Coach.email == _normal(email)).order_by(Coach.created_at)
    coaches = session.scalars(query.with_for_update() if lock else query).all()
    if not coaches:
        raise NotFound("no coach with this e-mail address (an erased coach is not found by it)",
                       {"email": ["no coach with this address"]})
    active = [c for c in coaches if c.removed_at is None]
    if active:
        codes = [session.get(Programme, c.programme_id).code for c in active]
        raise RuleViolation("the coach still coaches: take them out of the programme first "
                            "(lotsen coaching remove-coach)",
                            {"email": [f"coaches in {code}" for code in codes]})
    _wait_for_events_about(session, _normal(email), {str(c.id) for c in coaches}, "coach")
    return coaches


def _wait_for_events_about(session: Session, address: str, ids: set[str], who: str):
    """Events about the person's departure must reach notifications first, or its mails
    would name them again after the erasure: until the relay has sent them, it waits."""
    table = OutboxMessage.__table__
    if session.scalar(select(func.count()).select_from(table).where(
            table.c.published_at.is_(None),
            or_(*(privacy.in_json_text(table.c.envelope, i) for i in {address, *ids})))):
        raise _still_being_sent(who)


def _still_being_sent(who: str) -> RuleViolation:
    return RuleViolation(f"events that name the {who} are still being sent; try again in a "
                         "minute", {"email": [f"events naming the {who} not yet sent"]})


def erase_coach(session: Session, email: str, pseudonym: str | None = None,
                moment: datetime | None = None) -> dict:
    """Erase a coach who left (Art. 17 DSGVO, or once the office no longer needs their data):
    in every programme the address coached in, name and address become a pseudonym, their
    sign-in links and sessions go, and the stored events that named them are scrubbed. The
    rows stay, because the milestones they recorded and the documents they uploaded point to
    them. (Notifications' part, the mails to and about them: ``recipient_erased`` there.)"""
    from services.enrolment import coaching
    from services.enrolment.domain import hash_secret, new_secret
    coaches = coaches_to_erase(session, email, lock=True)
    address = _normal(email)
    moment = moment or now()
    pseudonym = pseudonym or privacy.new_pseudonym()
    stand_in = privacy.pseudonym_email(pseudonym)
    for coach in coaches:
        coach.name = privacy.ERASED_NAME
        coach.email = stand_in
        coach.token_hash = hash_secret(new_secret("ct"))  # a token no one holds
        coach.erased_at = moment
    _forget_sign_in(session, coaching.DESK, address)
    scrubbed = _scrub_person_events(session, address, {str(c.id) for c in coaches}, stand_in)
    session.flush()
    return {"status": "erased", "pseudonym": pseudonym, "stand_in": stand_in,
            "coaches": len(coaches), "events_scrubbed": scrubbed,
            "erased_at": moment.isoformat()}


def office_member_to_erase(session: Session, email: str, lock: bool = False):
    """The office member of this address, if they may be erased: NotFound for an address
    the office never had (or erased), RuleViolation while they may still sign in."""
    from services.enrolment.models import OfficeStaff
    query = select(OfficeStaff).where(OfficeStaff.email == _normal(email))
    member = session.scalar(query.with_for_update() if lock else query)
    if member is None:
        raise NotFound("no member of the office with this e-mail address",
                       {"email": ["not registered"]})
    if member.removed_at is None:
        raise RuleViolation("this member may still sign in: end their access first "
                            "(lotsen office remove)", {"email": ["still has access"]})
    _wait_for_events_about(session, member.email, set(), "member of the office")
    return member


def erase_office_member(session: Session, email: str, pseudonym: str | None = None) -> dict:
    """Erase a member of the office whose access ended: their row keeps when access began
    and ended, under a pseudonym address; their sign-in links, sessions and the stored
    link requests go."""
    from services.enrolment import office
    member = office_member_to_erase(session, email, lock=True)
    address = member.email
    pseudonym = pseudonym or privacy.new_pseudonym()
    stand_in = privacy.pseudonym_email(pseudonym)
    _forget_sign_in(session, office.DESK, address)
    session.flush()
    member.email, member.name = stand_in, privacy.ERASED_NAME  # nothing refers to it now
    scrubbed = _scrub_person_events(session, address, set(), stand_in)
    session.flush()
    return {"status": "erased", "pseudonym": pseudonym, "stand_in": stand_in,
            "events_scrubbed": scrubbed, "erased_at": now().isoformat()}


def _forget_sign_in(session: Session, desk, address: str):
    for model in (desk.link_model, desk.session_model):
        session.execute(delete(model).where(model.email == address))


def _scrub_person_events(session: Session, address: str, coach_ids: set[str],
                         stand_in: str, invited_by: tuple[set, set] = (set(), set())) -> int:
    """The person out of every stored event: a coach's pairings, departures, milestones and
    reminders name them (by id and address); anyone's sign-in link requests carry address,
    name and link; a clerk's announcements as a contact and invitations carry address and
    name. ``invited_by`` (the clerk's names, the bodies they were the contact of) finds the
    invitations they sent, which carry only their name."""
    names, contact_bodies = invited_by
    table = OutboxMessage.__table__
    text = cast(table.c.envelope, Text)
    # Only what was sent: the erasure waited for the events about them, so an unsent one is
    # newer than its check (they were just let in again) and must reach them as it is.
    rows = session.execute(select(table.c.position, table.c.envelope).where(
        table.c.published_at.is_not(None),
        or_(privacy.in_json_text(table.c.envelope, address),
            *(text.contains(i) for i in coach_ids),
            *(privacy.in_json_text(table.c.envelope, name) for name in names)))).all()
    changed = 0
    for position, envelope in rows:
        payload = dict(envelope.get("payload") or {})
        event_type = str(envelope.get("event_type"))
        if str(payload.get("coach_email", "")).lower() == address \
                or str(payload.get("coach_id")) in coach_ids:
            payload.update({"coach_name": privacy.ERASED_NAME},
                           **({"coach_email": stand_in} if "coach_email" in payload else {}))
        if event_type.endswith("sign_in_link_requested") \
                and str(payload.get("email", "")).lower() == address:
            payload.update(email=stand_in, name=privacy.ERASED_NAME, link="")
        if event_type == "municipality_registered" \
                and str(payload.get("contact_email", "")).lower() == address:
            payload.update(contact_email=stand_in, contact_name=privacy.ERASED_NAME)
        if event_type == "colleague_invited":
            if str(payload.get("email", "")).lower() == address:
                payload.update(email=stand_in, name=privacy.ERASED_NAME)
            if payload.get("ags") in contact_bodies and payload.get("invited_by") in names:
                payload.update(invited_by=privacy.ERASED_NAME)
        if payload != envelope.get("payload"):
            session.execute(update(table).where(table.c.position == position)
                            .values(envelope=dict(envelope, payload=payload)))
            changed += 1
    return changed


# --- municipal clerks who left ----------------------------------------------------------------

def clerk_to_erase(session: Session, email: str, lock: bool = False) -> dict:
    """A municipality's former contact or removed colleague of this address, if they may be
    erased: RuleViolation while they may still sign in for a body (as its contact or a
    colleague), NotFound when the portal holds nothing of the address. The answer says what
    the mail log needs to find the mails that name them: their names, and the bodies they
    were the contact of (the invitations they sent carry only their name)."""
    address = _normal(email)
    contact_of = session.scalars(select(MunicipalityAccount.ags).where(
        MunicipalityAccount.contact_email == address).order_by(MunicipalityAccount.ags)).all()
    query = select(PortalColleague).where(PortalColleague.email == address)
    rows = session.scalars(query.with_for_update() if lock else query).all()
    active = sorted(c.ags for c in rows if c.removed_at is None)
    if contact_of or active:
        raise RuleViolation(
            "this address may still sign in to the portal: a new contact is registered for "
            "the body first (lotsen municipality register, or the office's contact list), "
            "and a colleague is removed by the contact in the portal",
            {"email": [f"contact of {ags}" for ags in contact_of]
             + [f"colleague at {ags}" for ags in active]})
    query = select(FormerContact).where(FormerContact.email == address)
    former = session.scalars(query.with_for_update() if lock else query).all()
    names = {c.name for c in rows} | {f.name for f in former}
    contact_bodies = {f.ags for f in former}
    for envelope in session.scalars(select(OutboxMessage.envelope).where(
            privacy.in_json_text(OutboxMessage.envelope, address))):
        payload = envelope.get("payload") or {}
        if envelope.get("event_type") == "municipality_registered" \
                and str(payload.get("contact_email", "")).lower() == address:
            names.add(payload.get("contact_name"))
            contact_bodies.add(payload.get("ags"))
        elif envelope.get("event_type") in ("colleague_invited", "sign_in_link_requested") \
                and str(payload.get("email", "")).lower() == address:
            names.add(payload.get("name"))
    names.discard(None)
    sign_ins = sum(session.scalar(select(func.count()).select_from(model).where(
        model.email == address)) for model in (PortalSignInLink, PortalSession))
    if not rows and not former and not names and not sign_ins:
        raise NotFound("the portal holds nothing of this e-mail address (an erased clerk is "
                       "not found by it)", {"email": ["no contact or colleague with this "
                                                      "address"]})
    _wait_for_events_about(session, address, set(), "clerk")
    # The invitations they sent as the contact name them only by name: those of their
    # bodies (a name such as "Hauptamt" stands in every body's events).
    if contact_bodies and any(
            (envelope.get("payload") or {}).get("ags") in contact_bodies
            and (envelope.get("payload") or {}).get("invited_by") in names
            for envelope in session.scalars(select(OutboxMessage.envelope).where(
                OutboxMessage.published_at.is_(None),
                OutboxMessage.event_type == "colleague_invited"))):
        raise _still_being_sent("clerk")
    municipalities = session.scalars(select(Body.name).where(Body.ags.in_(contact_bodies))
                                     ).all() if contact_bodies else []
    return {"colleagues": rows, "former": former, "names": sorted(names),
            "contact_bodies": sorted(contact_bodies), "municipalities": sorted(municipalities)}


def erase_clerk(session: Session, email: str, pseudonym: str | None = None) -> dict:
    """Erase a municipal clerk who may no longer sign in (a former contact, a removed
    colleague): their colleague rows keep when they were invited and removed, under a
    pseudonym; their sign-in links and sessions go; the stored events that named them (the
    contact's announcements, invitations to and from them, link requests) are scrubbed.
    (The mail log's part, the mails to and about them: ``recipient_erased`` there.)"""
    found = clerk_to_erase(session, email, lock=True)
    address = _normal(email)
    pseudonym = pseudonym or privacy.new_pseudonym()
    stand_in = privacy.pseudonym_email(pseudonym)
    for row in found["colleagues"] + found["former"]:  # their dates stay
        row.name, row.email = privacy.ERASED_NAME, stand_in
    for model in (PortalSignInLink, PortalSession):
        session.execute(delete(model).where(model.email == address))
    scrubbed = _scrub_person_events(session, address, set(), stand_in,
                                    (set(found["names"]), set(found["contact_bodies"])))
    session.flush()
    return {"status": "erased", "pseudonym": pseudonym, "stand_in": stand_in,
            "colleague_rows": len(found["colleagues"]), "contact_rows": len(found["former"]),
            "events_scrubbed": scrubbed,
            "erased_at": now().isoformat()}


def _as_clerk(session: Session, email: str) -> dict:
    """The person as a municipality's clerk: the bodies they are or were the contact of
    (until when), their invitations as a colleague (when, removed when), and their open
    portal sessions."""
    address = _normal(email)
    contact = session.execute(select(MunicipalityAccount, Body.name).join(
        Body, Body.ags == MunicipalityAccount.ags).where(
        MunicipalityAccount.contact_email == address).order_by(MunicipalityAccount.ags)).all()
    former = session.execute(select(FormerContact, Body.name).join(
        Body, Body.ags == FormerContact.ags).where(FormerContact.email == address)
        .order_by(FormerContact.replaced_at)).all()
    colleague = session.execute(select(PortalColleague, Body.name).join(
        Body, Body.ags == PortalColleague.ags).where(PortalColleague.email == address)
        .order_by(PortalColleague.invited_at)).all()
    return {
        "contact_of": [{"ags": a.ags, "municipality": name, "name": a.contact_name,
                        "email": a.contact_email} for a, name in contact],
        "contact_until": [{"ags": f.ags, "municipality": name, "name": f.name,
                           "email": f.email, "replaced_at": f.replaced_at.isoformat()}
                          for f, name in former],
        "colleague_of": [{"ags": c.ags, "municipality": name, "name": c.name,
                          "email": c.email, "invited_at": c.invited_at.isoformat(),
                          "removed_at": c.removed_at.isoformat() if c.removed_at else None}
                         for c, name in colleague],
        "sessions": session.scalar(select(func.count()).select_from(PortalSession).where(
            PortalSession.email == address, PortalSession.ended_at.is_(None)))}


def _as_coach(session: Session, email: str) -> list[dict]:
    """The person as a coach: in which programmes, since and until when, how many
    Navigators and milestones."""
    from services.enrolment.models import Coach
    out = []
    for coach in session.scalars(select(Coach).where(Coach.email == _normal(email))
                                 .order_by(Coach.created_at)):
        out.append({
            "programme_name": session.get(Programme, coach.programme_id).name,
            "name": coach.name, "email": coach.email, "max_navigators": coach.max_navigators,
            "registered_at": coach.created_at.isoformat(),
            "removed_at": coach.removed_at.isoformat() if coach.removed_at else None,
            "navigators_now": session.scalar(select(func.count()).select_from(Navigator).where(
                Navigator.coach_id == coach.id, Navigator.replaced_at.is_(None))),
            "milestones_recorded": session.scalar(select(func.count()).select_from(
                MilestoneRecord).where(MilestoneRecord.recorded_by == coach.id))})
    return out


# --- retention ---------------------------------------------------------------------------------

def set_retention(session: Session, code: str, days: int) -> dict:
    from services.common.schemas import load
    from services.enrolment.domain import programme_by_code
    from services.enrolment.schemas import RetentionDaysIn
    days = load(RetentionDaysIn(), {"retention_days": days}, "retention")["retention_days"]
    programme = programme_by_code(session, code)
    programme.retention_days = days
    return {"code": programme.code, "retention_days": days}


def expired(session: Session, today: date) -> list[Enrolment]:
    """Enrolments whose participant data has outlived its programme's retention period:
    counted from the cancellation for a cancelled enrolment, else from the course's last
    module (or its cancellation). Enrolments in a course still to come are never expired."""
    last_module = (select(Module.course_id, func.max(Module.date).label("last_day"))
                   .group_by(Module.course_id).subquery())
    rows = session.execute(
        select(Enrolment, Programme.retention_days, last_module.c.last_day, Course.status,
               Course.id)
        .join(Course, Course.id == Enrolment.course_id)
        .join(Programme, Programme.id == Enrolment.programme_id)
        .outerjoin(last_module, last_module.c.course_id == Enrolment.course_id)
        .where(Enrolment.erased_at.is_(None))).unique().all()
    due = []
    for enrolment, days, last_day, course_status, _ in rows:
        if enrolment.status == "cancelled" and enrolment.cancelled_at is not None:
            ended = calendar_day(enrolment.cancelled_at)
        elif course_status in RUNNING_COURSE and (last_day is None or last_day >= today):
            continue  # the course is still to come or under way
        else:
            ended = last_day or today
        if ended + timedelta(days=days) < today:
            due.append(enrolment)
    return due


def forget_old_sign_ins(session: Session, moment: datetime | None = None):
    """Used and expired links and ended sessions of the portal, the office and the coaches,
    as each desk deletes them when asked for a link: daily too, for a desk nobody uses."""
    from services.enrolment import coaching, office, portal
    moment = moment or now()
    portal.forget_old(session, moment)
    office.DESK.forget_old(session, moment)
    coaching.DESK.forget_old(session, moment)


def replaced_navigators(session: Session, today: date) -> list[str]:
    """Addresses of people who were a coaching programme's Navigator and were replaced
    longer ago than that programme's retention period, with no Navigator row of theirs
    still active or still within its period (their enrolments follow their own rule)."""
    rows = session.execute(
        select(Navigator.email, Navigator.replaced_at, Programme.retention_days)
        .join(Programme, Programme.id == Navigator.programme_id)
        .where(Navigator.email.not_like(f"%@{privacy.ERASED_DOMAIN}"))).all()
    due: dict[str, bool] = {}
    for email, replaced_at, days in rows:
        over = replaced_at is not None and calendar_day(replaced_at) + timedelta(
            days=days) < today
        due[email] = due.get(email, True) and over
    return sorted(email for email, over in due.items() if over)


def apply_retention(session: Session, key: bytes, today: date | None = None,
                    moment: datetime | None = None) -> dict:
    """Erase what has expired, one erasure (and one event) per person: enrolments, and
    Navigators replaced longer ago than their programme keeps data."""
    today = today or calendar_day(now())
    by_person: dict[str, list[Enrolment]] = {}
    for enrolment in expired(session, today):
        by_person.setdefault(enrolment.email, []).append(enrolment)
    due = set(replaced_navigators(session, today))
    erased = erase_people(session, [(privacy.email_key(key, email), enrolments)
                                    for email, enrolments in by_person.items()]
                          + [(privacy.email_key(key, address), [], address)
                             for address in sorted(due - set(by_person))],
                          "retention", "retention period of the programme ended", moment,
                          keep_navigators=frozenset(set(by_person) - due))
    return {"people": len(by_person), "enrolments": sum(map(len, by_person.values())),
            "navigators": sum(e["navigators"] for e in erased)}


def staff_steps(kind: str, email: str):
    """How someone who worked on the programme and left is erased: (the check, which
    refuses or answers what the mail log's ``recipient_erased`` needs besides the address,
    as JSON; the erasure here) for a coach (``coach``), an office member (``office``) or a
    municipal clerk (``clerk``). The mail log goes between the two."""
    if kind == "coach":
        return (lambda s: {"coach_ids": [str(c.id) for c in coaches_to_erase(s, email)]}), \
            erase_coach
    if kind == "office":
        def member(session) -> dict:  # refuses, or nothing to add: a member coaches no one
            office_member_to_erase(session, email)
            return {}
        return member, erase_office_member

    def clerk(session) -> dict:
        found = clerk_to_erase(session, email)
        return {"names": found["names"], "municipalities": found["municipalities"],
                "bodies": found["contact_bodies"]}
    return clerk, erase_clerk


STAFF_RETENTION_DAYS = 365


def staff_retention_days(config: dict) -> int:
    """``STAFF_RETENTION_DAYS`` of the config (unset: a year; at least one day)."""
    value = config.get("STAFF_RETENTION_DAYS")
    return STAFF_RETENTION_DAYS if value in (None, "") else max(1, int(value))


def staff_who_left(session: Session, days: int = STAFF_RETENTION_DAYS,
                   today: date | None = None) -> list[tuple[str, str]]:
    """``(kind, address)`` of each coach, office member, portal colleague and former contact
    of a body whose access ended more than ``days`` days before ``today`` (Berlin days) and
    who is not erased yet: what the daily retention run erases (kind ``coach``, ``office`` or
    ``clerk``). An address that still has access in that role somewhere, or lost it later,
    is not due yet."""
    from services.common.clock import PROGRAMME_TIMEZONE
    from services.enrolment.models import Coach, OfficeStaff
    day = (today or calendar_day(now())) - timedelta(days=days)
    before = datetime.combine(day, datetime.min.time(), PROGRAMME_TIMEZONE)
    due = []
    coaches = session.execute(
        select(Coach.email).where(Coach.erased_at.is_(None)).group_by(Coach.email)
        .having(func.count() == func.count(Coach.removed_at))
        .having(func.max(Coach.removed_at) < before)).scalars()
    due += [("coach", email) for email in coaches]
    office = session.scalars(select(OfficeStaff.email).where(
        OfficeStaff.removed_at < before,
        OfficeStaff.email.not_like(f"%@{privacy.ERASED_DOMAIN}")))
    due += [("office", email) for email in office]
    still = select(PortalColleague.email).where(PortalColleague.removed_at.is_(None))
    contacts = select(MunicipalityAccount.contact_email)
    left = union_all(
        select(PortalColleague.email.label("email"), PortalColleague.removed_at.label("at")),
        select(FormerContact.email.label("email"), FormerContact.replaced_at.label("at"))
    ).subquery()
    clerks = session.execute(
        select(left.c.email).where(
            left.c.email.not_like(f"%@{privacy.ERASED_DOMAIN}"),
            left.c.email.not_in(still), left.c.email.not_in(contacts))
        .group_by(left.c.email).having(func.max(left.c.at) < before)).scalars()
    due += [("clerk", email) for email in clerks]
    return sorted(due)


# --- access ------------------------------------------------------------------------------------

def export_participant(session: Session, email: str, key: bytes) -> dict:
    """What this service holds about the person (Art. 15 DSGVO), and whether earlier data of
    theirs was erased."""
    enrolments = _of_person(session, email)
    shown = present(session, enrolments) if enrolments else []
    for item, enrolment in zip(shown, enrolments):
        item.update({"programme_name": enrolment.course.programme.name,
                     "municipality": enrolment.body.name,
                     "course_location": enrolment.course.location,
                     "provider": enrolment.course.provider.name,
                     "modules": [{"number": m.number, "title": m.title,
                                  "date": m.date.isoformat()}
                                 for m in enrolment.course.modules],
                     "cancel_reason": enrolment.cancel_reason,
                     "retention_days": enrolment.course.programme.retention_days})
    erasures = session.scalars(select(Erasure).where(
        Erasure.email_key == privacy.email_key(key, email)).order_by(Erasure.erased_at)).all()
    return {"enrolments": shown, "navigators": _as_navigator(session, email),
            "coaches": _as_coach(session, email), "portal": _as_clerk(session, email),
            "erasures": [{"erased_at": e.erased_at.isoformat(), "cause": e.cause,
                          "enrolments": len(e.enrolment_ids)} for e in erasures]}


def _as_navigator(session: Session, email: str) -> list[dict]:
    """The person as a coaching programme's Navigator: named when, for whom, by which coach,
    and the milestones their coach recorded (with the notes)."""
    from services.enrolment.models import Body, Coach, MilestoneRecord
    rows = session.execute(
        select(Navigator, Programme.name, Body.name).join(Programme,
                                                          Programme.id == Navigator.programme_id)
        .join(Body, Body.ags == Navigator.ags).where(Navigator.email == _normal(email))
        .order_by(Navigator.named_at)).all()
    out = []
    for navigator, programme_name, municipality in rows:
        coach = session.get(Coach, navigator.coach_id) if navigator.coach_id else None
        records = session.scalars(select(MilestoneRecord).where(
            MilestoneRecord.navigator_id == navigator.id).order_by(MilestoneRecord.reached_on))
        out.append({
            "programme_name": programme_name, "municipality": municipality,
            "given_name": navigator.given_name, "family_name": navigator.family_name,
            "email": navigator.email, "department": navigator.department,
            "named_at": navigator.named_at.isoformat(),
            "replaced_at": navigator.replaced_at.isoformat() if navigator.replaced_at else None,
            "coach": coach.name if coach else None,
            "milestones": [{"key": r.key, "reached_on": r.reached_on.isoformat(),
                            "note": r.note, "document_ref": r.document_ref} for r in records]})
    return out


def enrolment_ids_of(session: Session, email: str) -> list:
    return [e.id for e in _of_person(session, email)]
