"""Enrolment rules: who may enrol where, seat or waitlist, promotion, attendance, completion.

Plain functions over an SQLAlchemy session (the caller's unit of work): no nameko here. Every
decision about a course's seats is taken under that course's row lock, so concurrent calls
and several service instances agree on who got a seat.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from types import SimpleNamespace

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload

from services.common.clock import calendar_day
from services.common.errors import (
    AuthenticationFailed,
    Conflict,
    DuplicateEnrolment,
    IdempotencyKeyReused,
    LotsenError,
    NotFound,
    RuleViolation,
    ValidationFailed,
)
from services.common.events import Event
from services.common.outbox import emit, emit_numbered, event_row, write_together
from services.enrolment.models import (
    ACTIVE_STATUSES,
    Attendance,
    Body,
    Course,
    Enrolment,
    FormerContact,
    IdempotencyRecord,
    Module,
    MunicipalityAccount,
    Programme,
    Provider,
)
from services.enrolment.schemas import BodyOut, CourseOut, EnrolmentOut

ENROLMENT_OUT = EnrolmentOut()
ENROLMENTS_OUT = EnrolmentOut(many=True)

SEAT_HOLDING = ("confirmed", "completed")
# The hot paths speak Core to these tables (no unit of work to flush, no objects to build).
_COURSES, _ENROLMENTS = Course.__table__, Enrolment.__table__
_BODIES, _IDEMPOTENCY = Body.__table__, IdempotencyRecord.__table__

def now() -> datetime:
    return datetime.now(timezone.utc)


def course_today() -> date:
    """Today's date where the courses take place (tests replace ``now`` to move the clock)."""
    return calendar_day(now())


def hash_secret(secret: str) -> str:
    """Keys and tokens are long random strings, so a plain SHA-256 is enough to store them."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


# --- programmes, providers, municipalities (operator) -------------------------------------------

def eligible(body: Body, programme: Programme) -> bool:
    if body.land != programme.land:
        return False
    kinds = set(programme.eligible_kinds)
    return body.kind in kinds or (body.kreisfrei and "kreis" in kinds)


def eligible_bodies(session: Session, programme: Programme) -> list[Body]:
    bodies = session.execute(select(Body).where(Body.land == programme.land)
                             .order_by(Body.ags)).scalars()
    return [b for b in bodies if eligible(b, programme)]


def _publish_programme(session: Session, programme: Programme):
    bodies = eligible_bodies(session, programme)
    emit(session, "programme_published", {
        "programme_id": programme.id, "code": programme.code, "name": programme.name,
        "land": programme.land, "role_name": programme.role_name,
        "revision": programme.revision, "funded": programme.funded,
        "eligible_bodies": [{"ags": b.ags, "kind": b.kind} for b in bodies],
    })
    return len(bodies)


def create_programme(session: Session, data: dict) -> Programme:
    if session.scalar(select(Programme.id).where(Programme.code == data["code"])):
        raise Conflict(f"programme {data['code']} exists already",
                                          {"code": ["already taken"]})
    programme = Programme(**data)
    session.add(programme)
    session.flush()
    if not eligible_bodies(session, programme):
        raise RuleViolation("no eligible body in the register for this Land and these kinds: "
                            "import the register first",
                            {"eligible_kinds": ["no matching body in the register"]})
    _publish_programme(session, programme)
    return programme


def republish_programme(session: Session, code: str) -> int:
    """Announce the programme again with the current register (after a re-import)."""
    programme = programme_by_code(session, code)
    programme.revision += 1
    return _publish_programme(session, programme)


def programme_by_code(session: Session, code: str) -> Programme:
    programme = session.scalar(select(Programme).where(Programme.code == code))
    if programme is None:
        raise NotFound(f"no programme {code}", {"programme_code": ["unknown programme"]})
    return programme


def create_provider(session: Session, name: str) -> tuple[Provider, str]:
    if session.scalar(select(Provider.id).where(Provider.name == name)):
        raise Conflict(f"provider {name} exists already",
                                          {"name": ["already taken"]})
    token = new_secret("lp")
    provider = Provider(name=name, token_hash=hash_secret(token))
    session.add(provider)
    session.flush()
    return provider, token


def authenticate_provider(session: Session, token: str | None) -> Provider:
    if not token:
        raise AuthenticationFailed("provider token missing from the call's context data")
    # A revoked token fails exactly like an unknown one: callers learn nothing from the answer.
    provider = session.scalar(select(Provider).where(Provider.token_hash == hash_secret(token),
                                                    Provider.revoked_at.is_(None)))
    if provider is None:
        raise AuthenticationFailed("unknown provider token")
    return provider


def _provider_by_ref(session: Session, provider_ref: str | uuid.UUID) -> Provider:
    """A provider by its id (a UUID) or its exact name, locked for the change that follows."""
    provider = None
    try:
        provider_id = provider_ref if isinstance(provider_ref, uuid.UUID) \
            else uuid.UUID(str(provider_ref))
    except ValueError:
        provider_id = None
    if provider_id is not None:
        provider = session.scalar(select(Provider).where(Provider.id == provider_id)
                                  .with_for_update())
    if provider is None:
        provider = session.scalar(select(Provider).where(Provider.name == str(provider_ref))
                                  .with_for_update())
    if provider is None:
        raise NotFound(f"no provider {provider_ref}", {"provider": ["unknown provider"]})
    return provider


def rotate_provider_token(session: Session, provider_ref: str | uuid.UUID
                          ) -> tuple[Provider, str]:
    """Issue a new token: the old one fails from this commit on; a revoked provider is let in
    again with the new token."""
    provider = _provider_by_ref(session, provider_ref)
    token = new_secret("lp")
    provider.token_hash = hash_secret(token)
    provider.token_issued_at = now()
    provider.revoked_at = None
    session.flush()
    return provider, token


def revoke_provider(session: Session, provider_ref: str | uuid.UUID) -> Provider:
    """Refuse the provider's token from this commit on (repeating keeps the first time)."""
    provider = _provider_by_ref(session, provider_ref)
    if provider.revoked_at is None:
        provider.revoked_at = now()
        session.flush()
    return provider


def list_providers(session: Session) -> list[dict]:
    """Every provider with when its token was issued and whether it is revoked (no secrets)."""
    return [{"id": p.id, "name": p.name, "token_issued_at": p.token_issued_at,
             "revoked_at": p.revoked_at}
            for p in session.scalars(select(Provider).order_by(Provider.name))]


def set_contact(session: Session, account: MunicipalityAccount, name: str, email: str):
    """The body's contact is now this person; the one they replace (another address) is
    kept as a former contact with the moment they lost access."""
    email = email.strip().lower()
    if account.contact_email and account.contact_email != email:
        session.add(FormerContact(ags=account.ags, name=account.contact_name,
                                  email=account.contact_email, replaced_at=now()))
    account.contact_name, account.contact_email = name, email


def register_municipality(session: Session, ags: str, contact_name: str,
                          contact_email: str) -> tuple[MunicipalityAccount, str]:
    """Register a body for the gateway (or update its contact) and issue a new API key."""
    body = session.get(Body, ags)
    if body is None:
        raise NotFound(f"no body with AGS {ags} in the register", {"ags": ["not in register"]})
    key = new_secret("lk")
    account = session.get(MunicipalityAccount, ags)
    if account is None:
        account = MunicipalityAccount(ags=ags)
        session.add(account)
    set_contact(session, account, contact_name, contact_email)
    account.api_key_hash = hash_secret(key)
    account.api_key_prefix = key[:10]
    account.key_issued_at = now()
    account.revoked_at = None  # registering again lets a revoked body in with the new key
    session.flush()
    emit_numbered(session, account, "municipality_registered", {
        "ags": ags, "name": body.name, "contact_name": contact_name,
        "contact_email": account.contact_email})
    return account, key


def authenticate_municipality(session: Session, api_key: str | None):
    if not api_key:
        raise AuthenticationFailed("API key missing")
    # A revoked key fails exactly like an unknown one: callers learn nothing from the answer.
    body = session.execute(_BODY_OF_KEY, {"key_hash": hash_secret(api_key)}).first()
    if body is None:
        raise AuthenticationFailed("unknown API key")
    return body


_ACCOUNTS = MunicipalityAccount.__table__
# The body (its columns, as a row) whose key this is: one statement, built once.
_BODY_OF_KEY = (select(Body.__table__)
                .join(_ACCOUNTS, _ACCOUNTS.c.ags == Body.__table__.c.ags)
                .where(_ACCOUNTS.c.api_key_hash == bindparam("key_hash"),
                       _ACCOUNTS.c.revoked_at.is_(None)))


def enrol_with_key(session: Session, api_key: str | None, command: dict) -> tuple:
    """Authenticate the key and enrol for its body, in one transaction."""
    body = authenticate_municipality(session, api_key)
    return body, enrol(session, body.ags, command)


def _registered_account(session: Session, ags: str) -> MunicipalityAccount:
    account = session.execute(
        select(MunicipalityAccount).where(MunicipalityAccount.ags == ags)
        .options(lazyload(MunicipalityAccount.body)).with_for_update(of=MunicipalityAccount)
    ).scalar_one_or_none()
    if account is None:
        raise NotFound(f"AGS {ags} is not registered for the gateway",
                       {"ags": ["not registered (lotsen municipality register)"]})
    return account


def rotate_municipality_key(session: Session, ags: str) -> tuple[MunicipalityAccount, str]:
    """Issue a new API key and keep the contact: the old key fails from this commit on (in a
    gateway once its key cache forgets it); a revoked body is let in again with the new key.

    Nothing is emitted: ``municipality_registered`` carries the contact, which does not change,
    and no other service knows anything about keys."""
    account = _registered_account(session, ags)
    key = new_secret("lk")
    account.api_key_hash = hash_secret(key)
    account.api_key_prefix = key[:10]
    account.key_issued_at = now()
    account.revoked_at = None
    session.flush()
    return account, key


def revoke_municipality_key(session: Session, ags: str) -> MunicipalityAccount:
    """Refuse the body's API key from this commit on (in a gateway once its key cache forgets
    it); repeating keeps the first time. The contact stays, for notices."""
    account = _registered_account(session, ags)
    if account.revoked_at is None:
        account.revoked_at = now()
        session.flush()
    return account


# --- courses (provider) ---------------------------------------------------------------------

def create_course(session: Session, provider: Provider, data: dict) -> Course:
    """With an ``id`` chosen by the provider the call is safe to repeat: the same course again
    returns the one made the first time; other content under that id is a conflict."""
    programme = programme_by_code(session, data["programme_code"])
    modules = sorted(data["modules"], key=lambda m: m["number"])
    course_id = data.get("id")
    existing = session.get(Course, course_id) if course_id is not None else None
    if existing is not None:
        wanted = (provider.id, programme.id, data["title"], data["location"], data["capacity"],
                  [(m["number"], m["title"], m["date"]) for m in modules])
        found = (existing.provider_id, existing.programme_id, existing.title,
                 existing.location, existing.capacity,
                 [(m.number, m.title, m.date) for m in existing.modules])
        if found != wanted:
            raise Conflict("another course already has this id",
                           {"id": ["already used for a different course"]})
        return existing
    course = Course(programme_id=programme.id, provider_id=provider.id, title=data["title"],
                    location=data["location"], capacity=data["capacity"],
                    status="open" if data.get("open") else "planned")
    if course_id is not None:
        course.id = course_id
    course.modules = [Module(**m) for m in modules]
    session.add(course)
    session.flush()
    session.refresh(course)
    return course


def _course_of_provider(session: Session, provider: Provider, course_id, lock=False) -> Course:
    course = _lock_course(session, course_id) if lock else session.get(Course, course_id)
    # Another provider's course answers exactly like a course that does not exist.
    if course is None or course.provider_id != provider.id:
        raise NotFound("no such course", {"course_id": ["unknown course"]})
    return course


def _lock_course(session: Session, course_id) -> Course | None:
    return session.execute(
        select(Course).where(Course.id == course_id).with_for_update(of=Course)
    ).unique().scalar_one_or_none()


COURSE_TRANSITIONS = {
    "open": {"planned", "closed"},
    "close": {"open"},
    "complete": {"open", "closed"},
}
TARGET_STATUS = {"open": "open", "close": "closed", "complete": "completed"}


def change_course_status(session: Session, provider: Provider, course_id, action: str) -> Course:
    course = _course_of_provider(session, provider, course_id, lock=True)
    if course.status == TARGET_STATUS[action]:
        return course  # already there: repeating the call changes nothing
    if course.status not in COURSE_TRANSITIONS[action]:
        raise RuleViolation(f"a {course.status} course cannot {action}",
                            {"status": [f"is {course.status}"]})
    course.status = TARGET_STATUS[action]
    return course


def cancel_course(session: Session, provider: Provider, course_id, reason: str | None) -> Course:
    course = _course_of_provider(session, provider, course_id, lock=True)
    if course.status == "cancelled":
        return course
    if course.status == "completed":
        raise RuleViolation("a completed course cannot be cancelled", {"status": ["completed"]})
    course.status = "cancelled"
    course.cancelled_reason = reason
    active = session.execute(select(Enrolment).where(
        Enrolment.course_id == course.id, Enrolment.status.in_(ACTIVE_STATUSES))
        .order_by(Enrolment.sequence)).scalars().all()
    for enrolment in active:
        _cancel(session, enrolment, "course_cancelled", reason)
    emit(session, "course_cancelled", {
        "course_id": course.id, "programme_id": course.programme_id, "title": course.title,
        "reason": reason, "cancelled_at": now(), "enrolment_ids": [e.id for e in active],
    })
    return course


def course_enrolments(session: Session, provider: Provider, course_id) -> list[dict]:
    course = _course_of_provider(session, provider, course_id)
    enrolments = session.execute(select(Enrolment).where(Enrolment.course_id == course.id)
                                 .order_by(Enrolment.sequence)).scalars().all()
    return present(session, enrolments)


# --- seats and waitlist ---------------------------------------------------------------------

def seats_taken(session: Session, course: Course) -> int:
    return session.scalar(select(func.count()).select_from(Enrolment).where(
        Enrolment.course_id == course.id, Enrolment.status.in_(SEAT_HOLDING)))


def waitlist(session: Session, course_id) -> list[uuid.UUID]:
    """The ids on the course's waitlist in promotion order: bodies without a confirmed
    participant in the programme first, then first come, first served. One statement."""
    e = _ENROLMENTS.c
    other = _ENROLMENTS.alias("other")
    served = (select(other.c.id).where(other.c.programme_id == e.programme_id,
                                       other.c.ags == e.ags,
                                       other.c.status.in_(SEAT_HOLDING)).exists())
    return list(session.scalars(
        select(e.id).where(e.course_id == course_id, e.status == "waitlisted")
        .order_by(served, e.sequence)))


def _promote(session: Session, course: Course):
    if course.status not in ("open", "closed"):
        return
    free = course.capacity - seats_taken(session, course)
    while free > 0:
        queue = waitlist(session, course.id)
        if not queue:
            return
        enrolment = session.get(Enrolment, queue[0])
        enrolment.status = "confirmed"
        enrolment.confirmed_at = now()
        session.flush()
        emit_numbered(session, enrolment, "enrolment_promoted", {
            "enrolment_id": enrolment.id, "programme_id": enrolment.programme_id,
            "course_id": enrolment.course_id, "ags": enrolment.ags,
            "confirmed_at": enrolment.confirmed_at, "participant": _participant(enrolment),
            "course": _course_info(course),
        })
        free -= 1


def _course_info(course: Course) -> dict:
    return {"title": course.title, "location": course.location,
            "provider_name": course.provider.name, "programme_code": course.programme.code,
            "programme_name": course.programme.name,
            "modules": [{"number": m.number, "title": m.title, "date": m.date}
                        for m in course.modules]}


def _participant(enrolment: Enrolment) -> dict:
    return {"given_name": enrolment.given_name, "family_name": enrolment.family_name,
            "email": enrolment.email}


def present(session: Session, enrolments: list[Enrolment]) -> list[dict]:
    """Enrolments as the API shows them, with current waitlist positions."""
    positions = {}
    for course_id in {e.course_id for e in enrolments if e.status == "waitlisted"}:
        for index, waiting in enumerate(waitlist(session, course_id), start=1):
            positions[waiting] = index
    shown = ENROLMENTS_OUT.dump(enrolments)
    for item, enrolment in zip(shown, enrolments):
        item["waitlist_position"] = positions.get(enrolment.id)
    return shown


# --- enrolment (municipality) ---------------------------------------------------------------

def _request_hash(command: dict) -> str:
    material = {k: v for k, v in command.items() if k != "idempotency_key"}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str)
                          .encode()).hexdigest()


# --- what never changes about a course --------------------------------------------------------

@dataclass(frozen=True)
class CourseCard:
    """A course's programme, provider, title, place and modules: fixed once the course exists
    (no call changes them), so each process reads them once per course instead of on every
    enrolment. Status and capacity are not on the card: they are read under the lock."""

    course_id: uuid.UUID
    programme: SimpleNamespace  # id, code, name, land, eligible_kinds, enrolment window
    title: str
    location: str
    provider_name: str
    modules: tuple

    @property
    def info(self) -> dict:
        """What an event tells of the course (``CourseInfoSchema``)."""
        return {"title": self.title, "location": self.location,
                "provider_name": self.provider_name, "programme_code": self.programme.code,
                "programme_name": self.programme.name,
                "modules": [dict(m) for m in self.modules]}


class CourseCards:
    """A bounded per-process memory of course cards."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self._cards: OrderedDict[uuid.UUID, CourseCard] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, course_id: uuid.UUID) -> CourseCard | None:
        card = self._cards.get(course_id)
        if card is None:
            card = self._read(session, course_id)
            if card is None:
                return None
            with self._lock:
                self._cards[course_id] = card
                while len(self._cards) > self.size:
                    self._cards.popitem(last=False)
        return card

    @staticmethod
    def _read(session: Session, course_id) -> CourseCard | None:
        c, p = Course.__table__.c, Programme.__table__.c
        row = session.execute(
            select(c.title, c.location, Provider.__table__.c.name.label("provider_name"),
                   p.id, p.code, p.name, p.land, p.eligible_kinds, p.enrolment_opens_on,
                   p.enrolment_closes_on, p.funded)
            .join_from(Course.__table__, Programme.__table__, p.id == c.programme_id)
            .join(Provider.__table__, Provider.__table__.c.id == c.provider_id)
            .where(c.id == course_id)).first()
        if row is None:
            return None
        m = Module.__table__.c
        modules = tuple({"number": number, "title": title, "date": day} for number, title, day in
                        session.execute(select(m.number, m.title, m.date)
                                        .where(m.course_id == course_id).order_by(m.number)))
        programme = SimpleNamespace(id=row.id, code=row.code, name=row.name, land=row.land,
                                    eligible_kinds=tuple(row.eligible_kinds),
                                    enrolment_opens_on=row.enrolment_opens_on,
                                    enrolment_closes_on=row.enrolment_closes_on,
                                    funded=row.funded)
        return CourseCard(course_id, programme, row.title, row.location, row.provider_name,
                          modules)


COURSE_CARDS = CourseCards()


def enrol(session: Session, ags: str, command: dict, today: date | None = None) -> dict:
    """Enrol a participant for a municipality: a seat if one is free, else the waitlist.

    The hot path, in few statements: the course's row lock (which also hands out the next
    place in the course's first-come order), one read of everything decided under it (the
    body, the seats taken, an active twin, an earlier request with the same key), the
    enrolment, its event and the idempotency record."""
    course_id = command["course_id"]
    key = command.get("idempotency_key")
    participant = command["participant"]
    # The lock comes first: a retry racing its original then sees the original's answer.
    # (A replayed request leaves a gap in the order; gaps change no order.)
    locked = session.execute(_LOCK_COURSE, {"course_id": course_id}).first()
    found = session.execute(_UNDER_THE_LOCK, {
        "ags": ags, "course_id": course_id, "email": participant["email"], "key": key,
        "programme_id": locked.programme_id if locked is not None else None}).first()
    if found is None:
        raise NotFound(f"no body with AGS {ags}", {"ags": ["not in register"]})
    if found.earlier is not None:
        if found.earlier != _request_hash(command):
            raise IdempotencyKeyReused("this idempotency key was used for another request",
                                       {"idempotency_key": ["used with a different body"]})
        return session.scalar(select(_IDEMPOTENCY.c.response).where(
            _IDEMPOTENCY.c.ags == ags, _IDEMPOTENCY.c.key == key))
    card = COURSE_CARDS.get(session, course_id) if locked is not None else None
    if card is None:
        raise NotFound("no such course", {"course_id": ["unknown course"]})
    programme = card.programme
    if not eligible(found, programme):
        raise RuleViolation(f"{found.name} is not eligible for programme {programme.code}",
                            {"course_id": ["programme not open to this body"]})
    if locked.status != "open":
        raise RuleViolation(f"course is {locked.status}, not open for enrolment",
                            {"course_id": [f"course is {locked.status}"]})
    today = today or course_today()
    if not programme.enrolment_opens_on <= today <= programme.enrolment_closes_on:
        raise RuleViolation(
            f"enrolment for {programme.code} is open from {programme.enrolment_opens_on} "
            f"to {programme.enrolment_closes_on}", {"course_id": ["enrolment window closed"]})
    if found.twin is not None:
        raise DuplicateEnrolment("this participant already holds an active enrolment in "
                                 f"programme {programme.code}",
                                 {"participant.email": ["already enrolled in this programme"]})
    has_seat = found.taken < locked.capacity
    enrolment = SimpleNamespace(
        id=uuid.uuid4(), programme_id=programme.id, course_id=course_id, ags=ags,
        sequence=locked.enrolment_count, given_name=participant["given_name"],
        family_name=participant["family_name"], email=participant["email"],
        department=participant.get("department"),
        status="confirmed" if has_seat else "waitlisted", enrolled_at=now(), confirmed_at=None,
        cancelled_at=None, cancelled_by=None, completed_at=None, version=1,
        # A programme that funds nothing decides nothing: "none" from the start.
        funding_status="pending" if programme.funded else "none", funding_kind=None,
        certificate_number=None,
        certificate_status=None, attendance=(), course=card)
    if has_seat:
        enrolment.confirmed_at = enrolment.enrolled_at
    writes = [(_ENROLMENTS, {name: getattr(enrolment, name) for name in _NEW_ENROLMENT_COLUMNS})]
    response = ENROLMENT_OUT.dump(enrolment)
    if not has_seat:  # its place depends on who else waits: the row must be there first
        write_together(session, writes)
        writes = []
        response["waitlist_position"] = next(
            index for index, waiting in enumerate(waitlist(session, course_id), start=1)
            if waiting == enrolment.id)
    writes.append(event_row(session, "enrolment_created", {
        "enrolment_id": enrolment.id, "programme_id": programme.id, "course_id": course_id,
        "ags": ags, "status": enrolment.status,
        "waitlist_position": response["waitlist_position"],
        "enrolled_at": enrolment.enrolled_at, "participant": _participant(enrolment),
        "course": card.info, "sequence": enrolment.version,
    }))
    if key:
        writes.append((_IDEMPOTENCY, {
            "ags": ags, "key": key, "request_hash": _request_hash(command), "response": response,
            "created_at": enrolment.enrolled_at}))
    write_together(session, writes)  # the enrolment, its event, its idempotency record
    return response


def _statements():
    """The enrol path's statements, built once: SQLAlchemy then neither builds them nor works
    out their cache keys on every call."""
    c, e, i, b = _COURSES.c, _ENROLMENTS.c, _IDEMPOTENCY.c, _BODIES.c
    lock = (update(_COURSES).where(c.id == bindparam("course_id"))
            .values(enrolment_count=c.enrolment_count + 1)
            .returning(c.status, c.capacity, c.enrolment_count, c.programme_id))
    taken = (select(func.count()).select_from(_ENROLMENTS)
             .where(e.course_id == bindparam("course_id"), e.status.in_(SEAT_HOLDING))
             .scalar_subquery())
    twin = (select(e.id).where(e.programme_id == bindparam("programme_id"),
                               e.email == bindparam("email"), e.status.in_(ACTIVE_STATUSES))
            .limit(1).scalar_subquery())
    earlier = (select(i.request_hash).where(i.ags == bindparam("ags"),
                                            i.key == bindparam("key")).scalar_subquery())
    under_the_lock = (select(b.name, b.land, b.kind, b.kreisfrei, taken.label("taken"),
                             twin.label("twin"), earlier.label("earlier"))
                      .where(b.ags == bindparam("ags")))
    return lock, under_the_lock


_LOCK_COURSE, _UNDER_THE_LOCK = _statements()


_NEW_ENROLMENT_COLUMNS = ("id", "programme_id", "course_id", "ags", "sequence", "given_name",
                          "family_name", "email", "department", "status", "enrolled_at",
                          "confirmed_at", "version", "funding_status")


def enrol_batch(session: Session, ags: str, rows: list, today: date | None = None) -> list[dict]:
    """Enrol each valid row on its own savepoint: one bad row costs only itself.

    ``rows`` holds, per request row, either a validated command or the ``LotsenError`` its
    validation raised."""
    results = []
    for index, row in enumerate(rows):
        if isinstance(row, LotsenError):
            results.append(row_error(index, row))
            continue
        try:
            with session.begin_nested():
                results.append({"row": index, "result": "created",
                                "enrolment": enrol(session, ags, row, today)})
        except LotsenError as exc:
            results.append(row_error(index, exc))
        except IntegrityError:
            results.append(row_error(index, Conflict(
                "a concurrent request changed the same data; send this row again")))
    return results


def row_error(index: int, exc: LotsenError) -> dict:
    """A batch row's failure, as every batch answers it."""
    return {"row": index, "result": "error",
            "error": {"status": exc.status, "title": exc.title, "detail": exc.message,
                      "fields": exc.fields}}


def _enrolment_for(session: Session, enrolment_id, ags: str | None = None,
                   provider: Provider | None = None) -> Enrolment:
    enrolment = session.get(Enrolment, enrolment_id)
    # Someone else's enrolment answers exactly like one that does not exist.
    if (enrolment is None or (ags is not None and enrolment.ags != ags)
            or (provider is not None and enrolment.course.provider_id != provider.id)):
        raise NotFound("no such enrolment", {"enrolment_id": ["unknown enrolment"]})
    return enrolment


def _cancel(session: Session, enrolment: Enrolment, by: str, reason: str | None):
    previous = enrolment.status
    enrolment.status = "cancelled"
    enrolment.cancelled_at = now()
    enrolment.cancelled_by = by
    enrolment.cancel_reason = reason
    session.flush()
    emit_numbered(session, enrolment, "enrolment_cancelled", {
        "enrolment_id": enrolment.id, "programme_id": enrolment.programme_id,
        "course_id": enrolment.course_id, "ags": enrolment.ags, "previous_status": previous,
        "cancelled_by": by, "reason": reason, "cancelled_at": enrolment.cancelled_at,
        "participant": _participant(enrolment), "course": _course_info(enrolment.course),
    })
    return previous


def cancel_enrolment(session: Session, enrolment_id, *, ags: str | None = None,
                     provider: Provider | None = None, reason: str | None = None) -> dict:
    """Cancel (idempotent); a freed seat goes to the head of the waitlist."""
    enrolment = _enrolment_for(session, enrolment_id, ags=ags, provider=provider)
    course = _lock_course(session, enrolment.course_id)
    session.refresh(enrolment)
    if enrolment.status == "completed":
        raise RuleViolation("a completed enrolment cannot be cancelled",
                            {"enrolment_id": ["already completed"]})
    if enrolment.status != "cancelled":
        previous = _cancel(session, enrolment, "provider" if provider else "municipality", reason)
        if previous == "confirmed":
            _promote(session, course)
    return present(session, [enrolment])[0]


# --- attendance and completion (provider) ---------------------------------------------------

def record_attendance(session: Session, provider: Provider, command: dict,
                      today: date | None = None) -> list[dict]:
    """Record that participants attended a module (repeating it changes nothing); a participant
    who has attended every module has completed.

    Attendance counts only on or after the module's date in Europe/Berlin (``today``, by
    default the current date there): nobody attends a module that has not taken place. After
    the fact is fine, e.g. a provider entering a finished course's attendance lists."""
    course = _course_of_provider(session, provider, command["course_id"], lock=True)
    if course.status not in ("open", "closed"):
        raise RuleViolation(f"attendance cannot be recorded for a {course.status} course",
                            {"course_id": [f"course is {course.status}"]})
    modules = {m.number: m for m in course.modules}
    numbers = set(modules)
    number = command["module_number"]
    if number not in numbers:
        raise ValidationFailed("the course has no such module",
                               {"module_number": [f"must be one of {sorted(numbers)}"]})
    today = today or course_today()
    module_date = modules[number].date
    if module_date > today:
        raise RuleViolation(
            f"module {number} takes place on {module_date.isoformat()}: attendance can be "
            f"recorded from that day on (today is {today.isoformat()} in Europe/Berlin), "
            "nothing recorded",
            {"module_number": [f"module {number} is on {module_date.isoformat()}, "
                               "not yet taken place"]})
    wanted = list(dict.fromkeys(command["enrolment_ids"]))
    found = {e.id: e for e in session.execute(select(Enrolment).where(
        Enrolment.id.in_(wanted), Enrolment.course_id == course.id)).scalars()}
    missing = [str(i) for i in wanted if i not in found]
    not_seated = [str(i) for i in wanted if i in found and found[i].status not in SEAT_HOLDING]
    if missing or not_seated:
        errors = {}
        if missing:
            errors["enrolment_ids"] = [f"not enrolled in this course: {', '.join(missing)}"]
        if not_seated:
            errors.setdefault("enrolment_ids", []).append(
                f"no confirmed seat (waitlisted or cancelled): {', '.join(not_seated)}")
        raise ValidationFailed("attendance refused, nothing recorded", errors)
    already = set(session.execute(select(Attendance.enrolment_id).where(
        Attendance.enrolment_id.in_(wanted),
        Attendance.module_number == command["module_number"])).scalars())
    for enrolment_id in wanted:
        if enrolment_id not in already:
            session.add(Attendance(enrolment_id=enrolment_id,
                                   module_number=command["module_number"]))
    session.flush()
    for enrolment_id in wanted:
        enrolment = found[enrolment_id]
        session.refresh(enrolment, ["attendance"])
        attended = {a.module_number for a in enrolment.attendance}
        if enrolment.status == "confirmed" and attended >= numbers:
            from services.enrolment import coaching
            milestones = coaching.completion_milestones(session, enrolment)
            if milestones is not None:  # in a coaching programme: every milestone reached
                complete(session, enrolment, course, milestones)
    return present(session, [found[i] for i in wanted])


def complete(session: Session, enrolment: Enrolment, course: Course,
             milestones: list | None = None):
    """The enrolment is completed: every module attended (and, in a coaching programme, every
    milestone reached); the certificates service issues the certificate."""
    enrolment.status = "completed"
    enrolment.completed_at = now()
    programme, body = course.programme, enrolment.body
    emit_numbered(session, enrolment, "enrolment_completed", {
        "enrolment_id": enrolment.id, "programme_id": programme.id,
        "programme_code": programme.code, "programme_name": programme.name,
        "role_name": programme.role_name, "course_id": course.id, "course_title": course.title,
        "location": course.location, "provider_name": course.provider.name,
        "ags": body.ags, "municipality_name": body.name,
        # The day where the course took place, as attendance counts it (not the UTC date).
        "completed_on": calendar_day(enrolment.completed_at),
        "modules": [{"number": m.number, "title": m.title, "date": m.date}
                    for m in course.modules],
        "participant": _participant(enrolment),
        "milestones": milestones or [],
    })


# --- queries for the gateway ----------------------------------------------------------------

def get_enrolment(session: Session, ags: str, enrolment_id) -> dict:
    return present(session, [_enrolment_for(session, enrolment_id, ags=ags)])[0]


def list_enrolments(session: Session, ags: str, filters: dict) -> dict:
    query = select(Enrolment).where(Enrolment.ags == ags)
    if filters.get("programme_code"):
        query = query.join(Programme, Programme.id == Enrolment.programme_id).where(
            Programme.code == filters["programme_code"])
    if filters.get("course_id"):
        query = query.where(Enrolment.course_id == filters["course_id"])
    if filters.get("status"):
        query = query.where(Enrolment.status == filters["status"])
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    page, per_page = filters["page"], filters["per_page"]
    items = session.execute(query.order_by(Enrolment.enrolled_at, Enrolment.sequence)
                            .offset((page - 1) * per_page).limit(per_page)).scalars().all()
    return {"items": present(session, items), "total": total, "page": page,
            "per_page": per_page}


def open_courses(session: Session, ags: str, today: date | None = None) -> list[dict]:
    """Open courses the body may enrol into, with free seats and waitlist length."""
    body = session.get(Body, ags)
    if body is None:
        raise NotFound(f"no body with AGS {ags}", {"ags": ["not in register"]})
    today = today or course_today()
    courses = session.execute(
        select(Course).join(Programme, Programme.id == Course.programme_id)
        .where(Course.status == "open", Programme.land == body.land,
               Programme.enrolment_opens_on <= today, Programme.enrolment_closes_on >= today)
        .order_by(Course.created_at)).unique().scalars().all()
    courses = [c for c in courses if eligible(body, c.programme)]
    counts = dict(session.execute(
        select(Enrolment.course_id, func.count()).where(
            Enrolment.course_id.in_([c.id for c in courses]),
            Enrolment.status.in_(SEAT_HOLDING)).group_by(Enrolment.course_id)).all())
    waiting = dict(session.execute(
        select(Enrolment.course_id, func.count()).where(
            Enrolment.course_id.in_([c.id for c in courses]),
            Enrolment.status == "waitlisted").group_by(Enrolment.course_id)).all())
    result = CourseOut(many=True).dump(courses)
    for item, course in zip(result, courses):
        item["free_seats"] = max(0, course.capacity - counts.get(course.id, 0))
        item["waitlist_length"] = waiting.get(course.id, 0)
    return result


def municipality_overview(session: Session, ags: str) -> dict:
    """The body, and per programme its enrolments and whether its guaranteed seat is used."""
    body = session.get(Body, ags)
    if body is None:
        raise NotFound(f"no body with AGS {ags}", {"ags": ["not in register"]})
    programmes = [p for p in session.execute(
        select(Programme).where(Programme.land == body.land)).scalars() if eligible(body, p)]
    rows = session.execute(select(Enrolment.programme_id, Enrolment.status,
                                  Enrolment.funding_status, Enrolment.funding_kind)
                           .where(Enrolment.ags == ags)).all()
    from services.enrolment.models import CoachingProgramme
    coached = set(session.scalars(select(CoachingProgramme.programme_id)))
    overview = []
    for programme in programmes:
        mine = [r for r in rows if r.programme_id == programme.id]
        by_status = {}
        for r in mine:
            by_status[r.status] = by_status.get(r.status, 0) + 1
        guaranteed_used = any(r.funding_kind == "guaranteed" and r.funding_status == "granted"
                              and r.status in ("confirmed", "waitlisted", "completed")
                              for r in mine)
        overview.append({"programme_code": programme.code, "programme_name": programme.name,
                         "enrolments": by_status, "guaranteed_seat_used": guaranteed_used,
                         "coaching": programme.id in coached})
    return {"body": BodyOut().dump(body), "programmes": overview}


# --- read model from other services' events --------------------------------------------------

FUNDING_STATUS = {"funding_granted": "granted", "funding_waiting": "waiting",
                  "funding_released": "released", "funding_converted": "granted"}


def _apply_if_newer(session: Session, event: Event, version: str, updated: str, values: dict,
                    what: str):
    """Copy another service's decision onto the enrolment row in one UPDATE, unless the row
    holds a newer one: by the event's ``sequence``, or by its time for events from before
    sequences existed. Only when nothing was updated is it asked whether the row exists."""
    enrolment_id = event.payload["enrolment_id"]
    sequence = event.payload.get("sequence")
    statement = _newer_update(version, updated, tuple(values), sequence is not None)
    changed = session.execute(statement, {
        **{f"new_{c}": v for c, v in values.items()}, "wanted": enrolment_id,
        "occurred": event.occurred_at, "seq": sequence}).rowcount
    e = _ENROLMENTS.c
    if not changed and session.scalar(select(e.id).where(e.id == enrolment_id)) is None:
        raise NotFound(f"{what} event for an unknown enrolment")


_NEWER_UPDATES: dict = {}


def _newer_update(version: str, updated: str, columns: tuple, sequenced: bool):
    """The conditional UPDATE of ``_apply_if_newer``, made once per shape."""
    shape = (version, updated, columns, sequenced)
    if shape not in _NEWER_UPDATES:
        e = _ENROLMENTS.c
        if sequenced:
            newer_than_held = e[version].is_(None) | (e[version] < bindparam("seq"))
            sets = {version: bindparam("seq")}
        else:
            newer_than_held = e[updated].is_(None) | (e[updated] <= bindparam("occurred"))
            sets = {}
        # (An UPDATE's parameters must not be named like its columns.)
        sets.update({updated: bindparam("occurred"),
                     **{c: bindparam(f"new_{c}") for c in columns}})
        _NEWER_UPDATES[shape] = (update(_ENROLMENTS)
                                 .where(e.id == bindparam("wanted"), newer_than_held)
                                 .values(sets))
    return _NEWER_UPDATES[shape]


def apply_funding_event(session: Session, event: Event):
    _apply_if_newer(session, event, "funding_version", "funding_updated_at", {
        "funding_status": FUNDING_STATUS[event.event_type],
        "funding_kind": event.payload.get("kind")}, "funding")


def apply_certificate_event(session: Session, event: Event):
    _apply_if_newer(session, event, "certificate_version", "certificate_updated_at", {
        "certificate_number": event.payload["certificate_number"],
        "certificate_status": ("revoked" if event.event_type == "certificate_revoked"
                               else "issued")}, "certificate")
