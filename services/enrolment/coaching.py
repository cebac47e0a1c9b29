"""Coaching programmes: each municipality names one Navigator, the office pairs Navigators with
coaches (the Lotsen), coaches record milestones, overdue milestones are reminded of.

Plain functions, no nameko. Sachsen runs its Digital-Lotsen this way: a few Lotsen at the
Städte- und Gemeindetag coach one Navigator per municipality, who records the situation on
site, writes a Digitale Agenda after three to four months and starts a first project. A
milestone is due ``due_days`` after the Navigator's coaching started (the day of pairing, or
the day the office gives). Every step is an event (contracts in ``services.common.events``);
notifications tells the people concerned.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.clock import calendar_day
from services.common.errors import AuthenticationFailed, Conflict, NotFound, RuleViolation
from services.common.outbox import emit, emit_numbered
from services.common.spreadsheet import german_csv
from services.enrolment.domain import eligible, hash_secret, now, programme_by_code
from services.enrolment.models import (
    Body,
    Coach,
    CoachingProgramme,
    CoachSession,
    CoachSignInLink,
    MilestoneDocument,
    MilestoneOverdue,
    MilestoneRecord,
    Navigator,
    Programme,
)
from services.enrolment.signin import Desk

# An uploaded milestone document (the Agenda) is a PDF of at most this size.
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
DOCUMENT_REF = "document:"


def define(session: Session, programme: Programme, milestones: list[dict]) -> CoachingProgramme:
    """Make ``programme`` a coaching programme with these milestones (``key``, ``title``,
    ``due_days``, ``document``: whether the record names a document, as the Agenda does)."""
    keys = [m["key"] for m in milestones]
    if len(set(keys)) != len(keys):
        raise RuleViolation("every milestone needs its own key", {"milestones": ["keys repeat"]})
    coaching = CoachingProgramme(programme_id=programme.id, milestones=[
        {"key": m["key"], "title": m["title"], "due_days": m["due_days"],
         "document": bool(m.get("document"))} for m in milestones])
    session.add(coaching)
    session.flush()
    return coaching


def _coaching(session: Session, code: str) -> tuple[Programme, CoachingProgramme]:
    programme = programme_by_code(session, code)
    coaching = session.get(CoachingProgramme, programme.id)
    if coaching is None:
        raise RuleViolation(f"{code} is not a coaching programme",
                            {"programme_code": ["not a coaching programme"]})
    return programme, coaching


def _person(navigator: Navigator) -> dict:
    return {"given_name": navigator.given_name, "family_name": navigator.family_name,
            "email": navigator.email, "department": navigator.department}


def _addressed(navigator: Navigator) -> dict:
    """What the events carry of the Navigator: enough to write to them."""
    return {"given_name": navigator.given_name, "family_name": navigator.family_name,
            "email": navigator.email}


def navigator_out(navigator: Navigator, coaching: CoachingProgramme | None = None,
                  reached: dict | None = None, today: date | None = None) -> dict:
    out = {"id": str(navigator.id), "ags": navigator.ags, "participant": _person(navigator),
           "named_at": navigator.named_at, "replaced_at": navigator.replaced_at,
           "replaces_id": str(navigator.replaces_id) if navigator.replaces_id else None,
           "coach_id": str(navigator.coach_id) if navigator.coach_id else None,
           "coaching_started_on": navigator.coaching_started_on}
    if coaching is not None:
        out["milestones"] = milestone_states(coaching, navigator, reached or {}, today)
    return out


def milestone_states(coaching: CoachingProgramme, navigator: Navigator, reached: dict,
                     today: date | None) -> list[dict]:
    """Each milestone: due when, reached when (with its note and document), or overdue."""
    today = today or calendar_day(now())
    states = []
    for milestone in coaching.milestones:
        record = reached.get(milestone["key"])
        due = (navigator.coaching_started_on + timedelta(days=milestone["due_days"])
               if navigator.coaching_started_on else None)
        states.append({
            "key": milestone["key"], "title": milestone["title"], "due_on": due,
            "reached_on": record.reached_on if record else None,
            "note": record.note if record else None,
            "document_ref": record.document_ref if record else None,
            "overdue": record is None and due is not None and due < today})
    return states


# --- the municipality names its Navigator --------------------------------------------------------

def active_navigator(session: Session, programme_id, ags: str) -> Navigator | None:
    return session.scalar(select(Navigator).where(
        Navigator.programme_id == programme_id, Navigator.ags == ags,
        Navigator.replaced_at.is_(None)))


def name_navigator(session: Session, ags: str, code: str, person: dict,
                   replace: bool = False) -> dict:
    """Name the body's Navigator; a second active one is refused unless ``replace``, which
    ends the current one's term (kept, with its milestones) and passes its coach on."""
    programme, coaching = _coaching(session, code)
    body = session.get(Body, ags)
    if body is None or not eligible(body, programme):
        raise RuleViolation("programme not open to this body", {"ags": ["not eligible"]})
    today = calendar_day(now())
    if not programme.enrolment_opens_on <= today <= programme.enrolment_closes_on:
        raise RuleViolation("enrolment window closed", {"programme_code": ["not open now"]})
    # The lock on the body's row makes two namings at once take turns.
    session.execute(select(Body.ags).where(Body.ags == ags).with_for_update())
    current = active_navigator(session, programme.id, ags)
    if current is not None and not replace:
        raise Conflict("this municipality has named its Navigator already; replace them "
                       "instead", {"navigator": ["already named"]})
    moment = now()
    navigator = Navigator(id=uuid.uuid4(), programme_id=programme.id, ags=ags,
                          given_name=person["given_name"], family_name=person["family_name"],
                          email=person["email"], department=person.get("department"),
                          named_at=moment, version=0)
    if current is not None:
        if (current.given_name, current.family_name, current.email) == (
                navigator.given_name, navigator.family_name, navigator.email):
            raise Conflict("this person is the Navigator already", {"email": ["same person"]})
        current.replaced_at = moment
        navigator.replaces_id = current.id
        navigator.coach_id = current.coach_id
        navigator.coaching_started_on = calendar_day(moment) if current.coach_id else None
        session.flush()
    session.add(navigator)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("this municipality has named its Navigator already",
                       {"navigator": ["already named"]}) from None
    emit_numbered(session, navigator, "navigator_named", {
        "navigator_id": navigator.id, "programme_id": programme.id,
        "programme_name": programme.name, "ags": ags, "municipality": body.name,
        "participant": _addressed(navigator), "named_at": moment,
        "replaces_id": current.id if current is not None else None})
    return navigator_out(navigator, coaching, {}, calendar_day(moment))


def navigators_of(session: Session, ags: str, code: str) -> list[dict]:
    """The body's Navigators in this programme, the active one first, then the history."""
    programme, coaching = _coaching(session, code)
    rows = session.scalars(select(Navigator).where(
        Navigator.programme_id == programme.id, Navigator.ags == ags)
        .order_by(Navigator.replaced_at.is_not(None), Navigator.named_at.desc())).all()
    return [navigator_out(n, coaching, _reached(session, n.id)) for n in rows]


def _reached(session: Session, navigator_id) -> dict:
    return {r.key: r for r in session.scalars(select(MilestoneRecord).where(
        MilestoneRecord.navigator_id == navigator_id))}


# --- coaches and pairing (the office) ------------------------------------------------------------

def register_coach(session: Session, code: str, name: str, email: str,
                   max_navigators: int) -> tuple[Coach, str]:
    """Register a coach, or re-admit one who left (same row, so their records stay theirs;
    a new token, since the old one was given up)."""
    programme, _ = _coaching(session, code)
    coach = session.scalar(select(Coach).where(Coach.programme_id == programme.id,
                                               Coach.email == email).with_for_update())
    if coach is not None and coach.removed_at is None:
        raise Conflict("this address coaches in this programme already",
                       {"email": ["registered already"]})
    token = f"ct_{secrets.token_urlsafe(32)}"
    if coach is None:
        coach = Coach(id=uuid.uuid4(), programme_id=programme.id, email=email,
                      created_at=now())
        session.add(coach)
    coach.name, coach.max_navigators, coach.removed_at = name, max_navigators, None
    coach.token_hash = hash_secret(token)
    session.flush()
    return coach, token


def remove_coach(session: Session, coach_id) -> dict:
    """A coach who leaves: their token, sign-in links and sessions stop working at once, and
    each of their Navigators is without a coach until the office pairs them again. The
    coaching's start day and the milestones reached stay, so the milestones' clock runs on.
    Removing a removed coach changes nothing."""
    coach = session.scalar(select(Coach).where(Coach.id == coach_id).with_for_update())
    if coach is None:
        raise NotFound("no such coach", {"coach_id": ["unknown coach"]})
    if coach.removed_at is not None:
        return dict(coach_out(coach), unpaired=[])
    moment = now()
    coach.removed_at = moment
    navigators = session.scalars(select(Navigator).where(
        Navigator.coach_id == coach.id, Navigator.replaced_at.is_(None))
        .order_by(Navigator.ags).with_for_update()).all()
    programme = session.get(Programme, coach.programme_id)
    for navigator in navigators:
        navigator.coach_id = None
        emit_numbered(session, navigator, "coaching_unpaired", {
            "navigator_id": navigator.id, "programme_id": programme.id,
            "programme_name": programme.name, "ags": navigator.ags,
            "municipality": session.get(Body, navigator.ags).name,
            "participant": _addressed(navigator), "coach_id": coach.id,
            "coach_name": coach.name, "unpaired_at": moment})
    session.flush()
    if _coach_member(session, coach.email) is None:  # they coach in no other programme
        DESK.end_sessions(session, coach.email)
    return dict(coach_out(coach), unpaired=[str(n.id) for n in navigators])


def coach_out(coach: Coach, load: int | None = None) -> dict:
    out = {"id": str(coach.id), "name": coach.name, "email": coach.email,
           "max_navigators": coach.max_navigators, "removed_at": coach.removed_at}
    if load is not None:
        out["load"] = load
    return out


def coaches(session: Session, code: str) -> list[dict]:
    """The programme's coaches who have not left, by name, with their load."""
    programme, _ = _coaching(session, code)
    return [coach_out(c, _load(session, c.id)) for c in session.scalars(
        select(Coach).where(Coach.programme_id == programme.id, Coach.removed_at.is_(None))
        .order_by(Coach.name, Coach.email))]


def coach_by_token(session: Session, token: str | None) -> Coach:
    coach = session.scalar(select(Coach).where(Coach.token_hash == hash_secret(token or ""),
                                               Coach.removed_at.is_(None)))
    if coach is None:
        raise AuthenticationFailed("unknown coach token", {"caller": ["unknown_coach"]})
    return coach


def _load(session: Session, coach_id) -> int:
    return session.scalar(select(func.count()).select_from(Navigator).where(
        Navigator.coach_id == coach_id, Navigator.replaced_at.is_(None))) or 0


def pair(session: Session, navigator_id, coach_id, started_on: date | None = None) -> dict:
    """Pair a Navigator with a coach of the same programme, within the coach's maximum (the
    coach's row is locked, so two pairings at once cannot both take the last place)."""
    coach = session.scalar(select(Coach).where(Coach.id == coach_id).with_for_update())
    navigator = session.scalar(select(Navigator).where(Navigator.id == navigator_id)
                               .with_for_update())
    if coach is None or coach.removed_at is not None:
        raise NotFound("no such coach", {"coach_id": ["unknown coach"]})
    if navigator is None or navigator.replaced_at is not None:
        raise NotFound("no such active Navigator", {"navigator_id": ["unknown or replaced"]})
    if coach.programme_id != navigator.programme_id:
        raise RuleViolation("the coach works in another programme",
                            {"coach_id": ["other programme"]})
    if navigator.coach_id == coach.id:
        return navigator_out(navigator)
    if _load(session, coach.id) >= coach.max_navigators:
        raise RuleViolation(f"{coach.name} coaches {coach.max_navigators} Navigators already",
                            {"coach_id": ["at the maximum"]})
    # A Navigator moved to another coach, or paired again after theirs left, goes on with
    # the coaching they started: same first day, same milestones' due days.
    continues = navigator.coaching_started_on is not None
    navigator.coach_id = coach.id
    navigator.coaching_started_on = (navigator.coaching_started_on or started_on
                                     or calendar_day(now()))
    session.flush()
    body = session.get(Body, navigator.ags)
    programme = session.get(Programme, navigator.programme_id)
    emit_numbered(session, navigator, "coaching_paired", {
        "navigator_id": navigator.id, "programme_id": programme.id,
        "programme_name": programme.name, "ags": navigator.ags, "municipality": body.name,
        "participant": _addressed(navigator), "coach_id": coach.id, "coach_name": coach.name,
        "coach_email": coach.email, "started_on": navigator.coaching_started_on,
        "continues": continues, "paired_on": calendar_day(now())})
    return navigator_out(navigator)


# --- coaches record milestones -------------------------------------------------------------------

def coach_navigators(session: Session, coach: Coach, today: date | None = None) -> dict:
    coaching = session.get(CoachingProgramme, coach.programme_id)
    programme = session.get(Programme, coach.programme_id)
    rows = session.execute(
        select(Navigator, Body.name).join(Body, Body.ags == Navigator.ags)
        .where(Navigator.coach_id == coach.id, Navigator.replaced_at.is_(None))
        .order_by(Body.name, Navigator.ags)).all()
    return {"coach": {"id": str(coach.id), "name": coach.name,
                      "max_navigators": coach.max_navigators, "load": len(rows)},
            "programme": {"code": programme.code, "name": programme.name,
                          "milestones": coaching.milestones},
            "navigators": [dict(navigator_out(n, coaching, _reached(session, n.id), today),
                                municipality=name) for n, name in rows]}


# --- the coaches' own pages: signing in by address, their Navigators, documents ------------------

def _coach_member(session: Session, email: str) -> dict | None:
    coach = session.scalar(select(Coach).where(Coach.email == email, Coach.removed_at.is_(None))
                           .order_by(Coach.created_at).limit(1))
    return {"email": coach.email, "name": coach.name} if coach is not None else None


DESK = Desk(CoachSignInLink, CoachSession, _coach_member, "coach_sign_in_link_requested")


def coaches_by_email(session: Session, email: str) -> list[Coach]:
    """One person may coach in several programmes: a row for each they still coach in."""
    return session.scalars(select(Coach).where(Coach.email == email, Coach.removed_at.is_(None))
                           .order_by(Coach.created_at)).all()


def desk(session: Session, email: str, today: date | None = None) -> list[dict]:
    """What a signed-in coach's pages show: per programme, their Navigators and milestones."""
    return [coach_navigators(session, coach, today) for coach in coaches_by_email(session, email)]


def coach_of(session: Session, email: str, navigator_id) -> Coach:
    """The signed-in person's coach row for this Navigator; nobody else's Navigators."""
    coach_ids = [c.id for c in coaches_by_email(session, email)]
    navigator = session.get(Navigator, navigator_id)
    if navigator is None or navigator.coach_id not in coach_ids or navigator.replaced_at:
        raise NotFound("no such Navigator of yours", {"navigator_id": ["not coached by you"]})
    return session.get(Coach, navigator.coach_id)


def _store_document(session: Session, coach: Coach, navigator_id, key: str,
                    document: dict) -> tuple[str, str]:
    """Keep an uploaded PDF; (its reference for the record, its SHA-256)."""
    content, filename = document["content"], document["filename"]
    if len(content) > MAX_DOCUMENT_BYTES:
        raise RuleViolation("the document is too large",
                            {"document": [f"at most {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB"]})
    if not content.startswith(b"%PDF-"):
        raise RuleViolation("the document is not a PDF", {"document": ["not a PDF file"]})
    digest = hashlib.sha256(content).hexdigest()
    stored = MilestoneDocument(id=uuid.uuid4(), navigator_id=navigator_id, key=key,
                               filename=filename, content=content, size=len(content),
                               sha256=digest, uploaded_by=coach.id, uploaded_at=now())
    session.add(stored)
    return DOCUMENT_REF + str(stored.id), digest


def _same_document(session: Session, document_ref: str | None, document: dict) -> bool:
    if not (document_ref or "").startswith(DOCUMENT_REF):
        return False
    stored = session.get(MilestoneDocument, uuid.UUID(document_ref[len(DOCUMENT_REF):]))
    return (stored is not None
            and stored.sha256 == hashlib.sha256(document["content"]).hexdigest())


def _document(session: Session, document_id, allowed) -> MilestoneDocument:
    """The uploaded document if ``allowed(document, its Navigator)``; one answer, NotFound,
    for a document that does not exist and for one the caller may not see."""
    stored = session.get(MilestoneDocument, document_id)
    if stored is None or not allowed(stored, session.get(Navigator, stored.navigator_id)):
        raise NotFound("no such document", {"document_id": ["unknown"]})
    return stored


def document_for(session: Session, email: str, document_id) -> MilestoneDocument:
    """An uploaded document, for the coach of its Navigator (or the coach who uploaded it)."""
    coach_ids = {c.id for c in coaches_by_email(session, email)}
    return _document(session, document_id, lambda stored, navigator: (
        navigator.coach_id in coach_ids or stored.uploaded_by in coach_ids))


def document_of_body(session: Session, ags: str, document_id) -> MilestoneDocument:
    """An uploaded document, for the municipality it concerns: the Agenda is the
    municipality's, also after its Navigator was replaced."""
    return _document(session, document_id, lambda stored, navigator: navigator.ags == ags)


def document_for_office(session: Session, document_id) -> MilestoneDocument:
    return _document(session, document_id, lambda stored, navigator: True)


def document_out(stored: MilestoneDocument) -> dict:
    """A document as an RPC answer carries it: its name and its content in base64."""
    return {"filename": stored.filename, "size": stored.size,
            "content": base64.b64encode(stored.content).decode("ascii")}


def record_milestone(session: Session, coach: Coach, navigator_id, key: str, reached_on: date,
                     note: str | None, document_ref: str | None,
                     document: dict | None = None) -> dict:
    """Record a milestone; ``document`` (``{"filename", "content"}``, a PDF) is kept here and
    becomes the record's ``document_ref``. The same record sent again changes nothing."""
    navigator = session.scalar(select(Navigator).where(Navigator.id == navigator_id)
                               .with_for_update())
    if navigator is None or navigator.coach_id != coach.id or navigator.replaced_at is not None:
        raise NotFound("no such Navigator of yours", {"navigator_id": ["not coached by you"]})
    coaching = session.get(CoachingProgramme, navigator.programme_id)
    milestone = next((m for m in coaching.milestones if m["key"] == key), None)
    if milestone is None:
        raise RuleViolation("no such milestone in this programme",
                            {"key": [f"one of {', '.join(m['key'] for m in coaching.milestones)}"]})
    if milestone["document"] and not (document_ref or document):
        raise RuleViolation("this milestone is recorded with its document",
                            {"document_ref": ["the document's reference or an uploaded PDF"]})
    if reached_on > calendar_day(now()) or (navigator.coaching_started_on
                                            and reached_on < navigator.coaching_started_on):
        raise RuleViolation("a milestone is reached between the start of coaching and today",
                            {"reached_on": ["not in the coaching's time"]})
    existing = session.get(MilestoneRecord, (navigator.id, key))
    if existing is not None:
        same_document = (_same_document(session, existing.document_ref, document) if document
                         else existing.document_ref == document_ref)
        if (existing.reached_on, existing.note) == (reached_on, note) and same_document:
            return navigator_out(navigator, coaching, _reached(session, navigator.id))
        raise Conflict("this milestone is recorded already", {"key": ["recorded already"]})
    if document is not None:
        document_ref, _ = _store_document(session, coach, navigator.id, key, document)
    session.add(MilestoneRecord(navigator_id=navigator.id, key=key, reached_on=reached_on,
                                note=note, document_ref=document_ref, recorded_by=coach.id,
                                recorded_at=now()))
    session.flush()
    emit_numbered(session, navigator, "milestone_reached", {
        "navigator_id": navigator.id, "programme_id": navigator.programme_id,
        "programme_name": session.get(Programme, navigator.programme_id).name,
        "ags": navigator.ags, "municipality": session.get(Body, navigator.ags).name,
        "participant": _addressed(navigator), "coach_name": coach.name,
        "coach_email": coach.email, "key": key, "title": milestone["title"],
        "reached_on": reached_on, "document_ref": document_ref})
    _complete_if_done(session, navigator)
    return navigator_out(navigator, coaching, _reached(session, navigator.id))


# --- completion: every module attended and every milestone reached ------------------------------

def completion_milestones(session: Session, enrolment) -> list | None:
    """What completing ``enrolment`` (every module attended) needs from coaching: ``[]`` in a
    seminar programme; in a coaching programme the milestones (title, day reached) if the
    participant is the body's Navigator and has reached every one, else None (not yet)."""
    coaching = session.get(CoachingProgramme, enrolment.programme_id)
    if coaching is None:
        return []
    navigator = active_navigator(session, enrolment.programme_id, enrolment.ags)
    if navigator is None or navigator.email != enrolment.email:
        return None
    reached = _reached(session, navigator.id)
    if any(m["key"] not in reached for m in coaching.milestones):
        return None
    return [{"title": m["title"], "reached_on": reached[m["key"]].reached_on}
            for m in coaching.milestones]


def _complete_if_done(session: Session, navigator: Navigator):
    """After the last milestone: the Navigator's enrolment that has attended every module of
    its course completes now (the certificate follows)."""
    from services.enrolment.domain import complete
    from services.enrolment.models import Attendance, Course, Enrolment
    enrolments = session.scalars(select(Enrolment).where(
        Enrolment.programme_id == navigator.programme_id, Enrolment.ags == navigator.ags,
        Enrolment.email == navigator.email, Enrolment.status == "confirmed")).all()
    for enrolment in enrolments:
        course = session.get(Course, enrolment.course_id)
        attended = set(session.scalars(select(Attendance.module_number).where(
            Attendance.enrolment_id == enrolment.id)))
        if attended >= {m.number for m in course.modules}:
            milestones = completion_milestones(session, enrolment)
            if milestones is not None:
                complete(session, enrolment, course, milestones)


# --- overdue milestones --------------------------------------------------------------------------

def report_overdue(session: Session, today: date | None = None) -> int:
    """A ``milestone_overdue`` for each milestone now past its due day and not reached, once
    per Navigator and milestone (a replaced Navigator's are no longer reminded of)."""
    today = today or calendar_day(now())
    reported = 0
    coachings = {c.programme_id: c for c in session.scalars(select(CoachingProgramme))}
    names = dict(session.execute(select(Programme.id, Programme.name).where(
        Programme.id.in_(list(coachings)))).all())
    rows = session.execute(
        select(Navigator, Coach).join(Coach, Coach.id == Navigator.coach_id)
        .where(Navigator.replaced_at.is_(None), Navigator.coaching_started_on.is_not(None))
        .order_by(Navigator.ags)).all()
    for navigator, coach in rows:
        reached = _reached(session, navigator.id)
        told = set(session.scalars(select(MilestoneOverdue.key).where(
            MilestoneOverdue.navigator_id == navigator.id)))
        for state in milestone_states(coachings[navigator.programme_id], navigator, reached,
                                      today):
            if not state["overdue"] or state["key"] in told:
                continue
            session.add(MilestoneOverdue(navigator_id=navigator.id, key=state["key"],
                                         reported_at=now()))
            emit(session, "milestone_overdue", {
                "navigator_id": navigator.id, "programme_id": navigator.programme_id,
                "programme_name": names[navigator.programme_id], "ags": navigator.ags,
                "municipality": session.get(Body, navigator.ags).name, "key": state["key"],
                "title": state["title"],
                "due_on": state["due_on"], "participant": _addressed(navigator),
                "coach_name": coach.name, "coach_email": coach.email})
            reported += 1
    session.flush()
    return reported


# --- what the office sees ------------------------------------------------------------------------

def navigator_for_office(session: Session, code: str, navigator_id,
                         today: date | None = None) -> dict:
    """One Navigator of the programme (active or replaced) as the office sees them: their
    municipality and coach, each milestone with its uploaded document's name and size, and
    the municipality's other Navigators in this programme."""
    programme, coaching = _coaching(session, code)
    navigator = session.get(Navigator, navigator_id)
    if navigator is None or navigator.programme_id != programme.id:
        raise NotFound("no such Navigator in this programme", {"navigator_id": ["unknown"]})
    coach = session.get(Coach, navigator.coach_id) if navigator.coach_id else None
    out = navigator_out(navigator, coaching, _reached(session, navigator.id), today)
    documents = {str(d.id): d for d in session.scalars(select(MilestoneDocument).where(
        MilestoneDocument.navigator_id == navigator.id))}
    for milestone in out["milestones"]:
        ref = milestone["document_ref"] or ""
        stored = documents.get(ref[len(DOCUMENT_REF):]) if ref.startswith(DOCUMENT_REF) else None
        milestone["document"] = ({"id": str(stored.id), "filename": stored.filename,
                                  "size": stored.size} if stored else None)
    others = session.scalars(select(Navigator).where(
        Navigator.programme_id == programme.id, Navigator.ags == navigator.ags,
        Navigator.id != navigator.id).order_by(Navigator.named_at)).all()
    return dict(out, municipality=session.get(Body, navigator.ags).name,
                coach_name=coach.name if coach else None,
                others=[navigator_out(n) for n in others])


def programme_navigators(session: Session, code: str, today: date | None = None) -> list[dict]:
    """Every active Navigator of the programme with their municipality, coach and milestones,
    by municipality: the office's list to pair from."""
    programme, coaching = _coaching(session, code)
    coaches = {c.id: c.name for c in session.scalars(select(Coach).where(
        Coach.programme_id == programme.id))}
    rows = session.execute(
        select(Navigator, Body.name).join(Body, Body.ags == Navigator.ags)
        .where(Navigator.programme_id == programme.id, Navigator.replaced_at.is_(None))
        .order_by(Body.name, Navigator.ags)).all()
    return [dict(navigator_out(n, coaching, _reached(session, n.id), today), municipality=name,
                 coach_name=coaches.get(n.coach_id)) for n, name in rows]


def _german(day: date) -> str:
    return day.strftime("%d.%m.%Y")


def _milestone_cell(state: dict) -> str:
    if state["reached_on"]:
        return f"erreicht am {_german(state['reached_on'])}"
    if state["due_on"] is None:
        return "Coaching hat nicht begonnen"
    return f"{'überfällig seit' if state['overdue'] else 'offen bis'} {_german(state['due_on'])}"


def navigators_csv(session: Session, code: str, today: date | None = None) -> str:
    """Every active Navigator of the programme with their coach and where each milestone
    stands, one row per municipality: the office's report on the programme."""
    _, coaching = _coaching(session, code)
    navigators = programme_navigators(session, code, today)
    return german_csv(
        ["Kommune", "AGS", "Digital-Navigator", "E-Mail", "Benannt am", "Lotsin oder Lotse",
         "Coaching seit"] + [m["title"] for m in coaching.milestones],
        ([n["municipality"], n["ags"],
          f"{n['participant']['given_name']} {n['participant']['family_name']}",
          n["participant"]["email"], _german(calendar_day(n["named_at"])),
          n["coach_name"] or "",
          _german(n["coaching_started_on"]) if n["coaching_started_on"] else ""]
         + [_milestone_cell(m) for m in n["milestones"]] for n in navigators))


def overview(session: Session, code: str, today: date | None = None) -> dict:
    """Municipalities with a Navigator, with an Agenda (the milestone that names a document),
    with something overdue; each coach's load."""
    programme, coaching = _coaching(session, code)
    today = today or calendar_day(now())
    bodies = [b for b in session.scalars(select(Body).where(Body.land == programme.land))
              if eligible(b, programme)]
    navigators = session.scalars(select(Navigator).where(
        Navigator.programme_id == programme.id, Navigator.replaced_at.is_(None))).all()
    document_keys = {m["key"] for m in coaching.milestones if m["document"]}
    with_agenda = overdue = 0
    for navigator in navigators:
        states = milestone_states(coaching, navigator, _reached(session, navigator.id), today)
        with_agenda += any(s["key"] in document_keys and s["reached_on"] for s in states)
        overdue += any(s["overdue"] for s in states)
    coaches = session.scalars(select(Coach).where(Coach.programme_id == programme.id,
                                                  Coach.removed_at.is_(None))
                              .order_by(Coach.name)).all()
    return {"programme_code": code, "eligible": len(bodies),
            "with_navigator": len(navigators), "paired": sum(1 for n in navigators
                                                             if n.coach_id),
            "with_agenda": with_agenda, "overdue": overdue,
            "coaches": [{"id": str(c.id), "name": c.name, "max_navigators": c.max_navigators,
                         "load": _load(session, c.id)} for c in coaches]}
