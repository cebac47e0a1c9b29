"""Which notices an event causes, for whom, with which data. Plain functions, no nameko.

A notice is written in the same transaction as the inbox record of its event; the delivery
loop sends it later. Its key (event, recipient role, template) is unique, so a redelivered event
writes nothing new. Every write on the hot paths is one statement: the notices of an event in
one ``INSERT ... ON CONFLICT DO NOTHING``, the copy of a new enrolment likewise.

A funding event can arrive before its enrolment's first event (two producers, two queues).
Instead of failing and going round the retry queue, its facts wait in
``early_funding_events``, recorded with its inbox record; the event that makes the enrolment
known writes their notices in its own transaction and removes them. The two sides never miss
each other on PostgreSQL, where both may run at once: the funding side locks the municipality's
contact row (``FOR UPDATE``) before it looks again for the enrolment and parks the event; the
enrolment side writes the copy first and then reads the contact with ``FOR KEY SHARE``, which
waits for that lock, and only then takes the waiting events. Whoever comes second sees what the
first committed. (SQLite has a single writer: transactions never overlap there.)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from uuid import uuid4
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.orm import Session

from services.common.clock import PROGRAMME_TIMEZONE
from services.common.errors import LotsenError, NotFound
from services.common.events import newer
from services.common.outbox import insert_skipping_duplicates
from services.notifications.models import Contact, EarlyFundingEvent, KnownEnrolment, Notice

REMINDER_DAYS = 7


class NotReady(LotsenError):
    """The event refers to something this service has not heard of yet: retry later."""

    status = 409
    title = "Not ready"


def now() -> datetime:
    return datetime.now(timezone.utc)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if hasattr(value, "hex") and not isinstance(value, (bytes, str)):
        return str(value)
    return value


# --- what notices need: the enrolment's copy and the municipality's contact --------------------

@dataclass(frozen=True)
class Copy:
    """Notifications' copy of an enrolment, as the notices need it."""

    enrolment_id: object
    ags: str
    given_name: str
    family_name: str
    email: str
    status: str
    course: dict
    version: int | None

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.family_name}"


@dataclass(frozen=True)
class Who:
    """The municipality's contact."""

    municipality: str
    contact_name: str
    contact_email: str


# Built once, on the tables themselves (no ORM objects are made from them): these run for
# nearly every event.
_K, _C, _E = KnownEnrolment.__table__.c, Contact.__table__.c, EarlyFundingEvent.__table__.c
_COPY = (_K.enrolment_id, _K.ags, _K.given_name, _K.family_name, _K.email, _K.status, _K.course,
         _K.version)
_WHO = (_C.name, _C.contact_name, _C.contact_email)
_COPY_AND_CONTACT = (select(*_COPY, *_WHO).select_from(KnownEnrolment.__table__)
                     .outerjoin(Contact.__table__, _C.ags == _K.ags)
                     .where(_K.enrolment_id == bindparam("enrolment_id")))
_CONTACT = select(*_WHO).where(_C.ags == bindparam("ags"))
# The two halves of the early-funding handshake (module docstring).
_CONTACT_KEY_SHARE = _CONTACT.with_for_update(read=True, key_share=True)
_CONTACT_FOR_UPDATE = _CONTACT.with_for_update()
_TAKE_EARLY = (delete(EarlyFundingEvent.__table__)
               .where(_E.enrolment_id == bindparam("enrolment_id"))
               .returning(_E.event_id, _E.event_type, _E.payload, _E.received_at))


def _copy_of(row) -> Copy:
    return Copy(*row[:8])


def _who_of(row) -> Who | None:
    # contact_email is never NULL in contacts: NULL here is the outer join finding none
    return None if row is None or row[-1] is None else Who(*row[-3:])


def _known(session: Session, enrolment_id) -> tuple[Copy, Who | None] | None:
    """The enrolment's copy and its contact in one query; None if the enrolment is unknown."""
    row = session.execute(_COPY_AND_CONTACT, {"enrolment_id": enrolment_id}).first()
    return None if row is None else (_copy_of(row), _who_of(row))


def _contact(session: Session, ags: str, statement=_CONTACT) -> Who:
    who = _who_of(session.execute(statement, {"ags": ags}).first())
    if who is None:
        raise NotReady(f"no contact known for municipality {ags} yet")
    return who


def _enrolment(session: Session, enrolment_id) -> tuple[Copy, Who]:
    """An enrolment this service must know already, with its contact."""
    found = _known(session, enrolment_id)
    if found is None:
        raise NotReady("enrolment not known yet")
    copy, who = found
    if who is None:
        raise NotReady(f"no contact known for municipality {copy.ags} yet")
    return copy, who


# --- notices --------------------------------------------------------------------------------------

def _notice(key: str, template: str, role: str, to_email: str, to_name: str, context: dict,
            moment: datetime, cc_email: str | None = None,
            certificate_number: str | None = None, enrolment_id=None) -> dict:
    return {"id": uuid4(), "dedup_key": key, "template": template, "recipient_role": role,
            "to_email": to_email, "to_name": to_name, "cc_email": cc_email,
            "context": _jsonable(context), "certificate_number": certificate_number,
            "enrolment_id": enrolment_id,
            "status": "pending", "attempts": 0, "next_attempt_at": moment,
            "lease_until": None, "last_error": None, "created_at": moment, "sent_at": None}


def _write(session: Session, notices: list[dict], returning: bool = False):
    """Every notice of a transaction in one statement; a key that exists already (a
    redelivered event) is skipped."""
    if not notices:
        return []
    written = insert_skipping_duplicates(session, Notice.__table__, notices, ["dedup_key"],
                                         returning=[Notice.id] if returning else None)
    return written.all() if returning else []


def _both(event_id, template: str, copy: Copy, who: Who, context: dict, moment: datetime,
          participant=True, municipality=True) -> list[dict]:
    base = {"participant_name": copy.name, "municipality": who.municipality,
            "course": copy.course, "programme_name": copy.course.get("programme_name", "")}
    base.update(context)
    notices = []
    if participant:
        notices.append(_notice(f"{event_id}:participant:{template}", template, "participant",
                               copy.email, copy.name, base, moment,
                               enrolment_id=copy.enrolment_id))
    if municipality:
        notices.append(_notice(f"{event_id}:municipality:{template}", template, "municipality",
                               who.contact_email, who.contact_name, base, moment,
                               enrolment_id=copy.enrolment_id))
    return notices


def municipality_registered(session: Session, payload: dict, event_id: str):
    contact = session.get(Contact, payload["ags"])
    if contact is not None and not newer(payload.get("sequence"), contact.version):
        return  # an older registration arriving late: the newer contact stays
    contact = contact or Contact(ags=payload["ags"])
    contact.version = payload.get("sequence") or contact.version
    contact.name = payload["name"]
    contact.contact_name = payload["contact_name"]
    contact.contact_email = payload["contact_email"]
    session.add(contact)


# --- enrolment events -----------------------------------------------------------------------------

ERASED = "erased"
FINAL = ("cancelled", "completed", ERASED)
# (Not past a final state written meanwhile: an erasure committed since the read stays. An
# UPDATE's parameters must not be named like its columns.)
_MOVE_ON = (update(KnownEnrolment.__table__)
            .where(_K.enrolment_id == bindparam("enrolment"), _K.status.not_in(FINAL))
            .values(status=bindparam("new_status"), version=bindparam("new_version")))


def _remember(session: Session, payload: dict, status: str) -> tuple[Copy, bool]:
    """The enrolment's copy after this event, and whether the event made it known."""
    course = payload.get("course")
    if course is not None:
        participant = payload["participant"]
        first = min((m["date"] for m in course["modules"]), default=None)
        row = {"enrolment_id": payload["enrolment_id"], "ags": payload["ags"],
               "course_id": payload["course_id"], "given_name": participant["given_name"],
               "family_name": participant["family_name"], "email": participant["email"],
               "status": status, "course": _jsonable(course), "first_module_on": first,
               "version": payload.get("sequence")}
        if insert_skipping_duplicates(session, KnownEnrolment.__table__, [row],
                                      ["enrolment_id"],
                                      returning=[KnownEnrolment.enrolment_id]).first():
            return Copy(**{k: row[k] for k in Copy.__dataclass_fields__}), True
    found = _known(session, payload["enrolment_id"])
    if found is None:
        raise NotFound("enrolment event without course details")
    copy = found[0]
    if copy.status not in FINAL and newer(payload.get("sequence"), copy.version):
        # Only a newer event moves the copy on (a retried promotion handled after the
        # cancellation must not make it confirmed again), and nothing undoes a cancellation.
        copy = replace(copy, status=status, version=payload.get("sequence") or copy.version)
        session.execute(_MOVE_ON, {"enrolment": copy.enrolment_id, "new_status": copy.status,
                                   "new_version": copy.version})
    return copy, False


def _enrolment_event(session: Session, payload: dict, status: str, notices_for):
    """Apply an enrolment event to the copy and write its notices (``notices_for(copy, who,
    moment)``), and those of funding events that waited for the enrolment to become known."""
    copy, new = _remember(session, payload, status)
    if copy.status == ERASED:
        return  # a late or replayed event about an erased participant: no notice, no data
    moment = now()
    if new:  # the copy is written: now the contact (waiting for a funding side's lock) ...
        who = _contact(session, copy.ags, _CONTACT_KEY_SHARE)
        notices = notices_for(copy, who, moment)
        notices += _waiting_funding(session, copy, who, moment)  # ... then what waited
    else:
        who = _contact(session, copy.ags)
        notices = notices_for(copy, who, moment)
    _write(session, notices)


def enrolment_created(session: Session, payload: dict, event_id: str):
    template = "enrolment_confirmed" if payload["status"] == "confirmed" else "enrolment_waitlisted"
    _enrolment_event(session, payload, payload["status"], lambda copy, who, moment: _both(
        event_id, template, copy, who, {"waitlist_position": payload.get("waitlist_position")},
        moment))


def enrolment_promoted(session: Session, payload: dict, event_id: str):
    _enrolment_event(session, payload, "confirmed", lambda copy, who, moment: _both(
        event_id, "enrolment_promoted", copy, who, {}, moment))


def enrolment_cancelled(session: Session, payload: dict, event_id: str):
    def notices(copy, who, moment):
        if payload["cancelled_by"] == "course_cancelled":
            return []  # the course-cancelled notice says it, once
        by = {"municipality": "Ihre Kommune",
              "provider": "den Bildungsträger"}[payload["cancelled_by"]]
        return _both(event_id, "enrolment_cancelled", copy, who,
                     {"cancelled_by": by, "reason": payload.get("reason")}, moment)
    _enrolment_event(session, payload, "cancelled", notices)


def course_cancelled(session: Session, payload: dict, event_id: str):
    moment = now()
    notices = []
    for enrolment_id in payload["enrolment_ids"]:
        copy, who = _enrolment(session, enrolment_id)
        if copy.status == ERASED:
            continue
        session.execute(update(KnownEnrolment).where(KnownEnrolment.enrolment_id == enrolment_id,
                                                     KnownEnrolment.status != ERASED)
                        .values(status="cancelled"))
        notices += _both(f"{event_id}:{enrolment_id}", "course_cancelled", copy, who,
                         {"reason": payload.get("reason")}, moment)
    _write(session, notices)


# --- funding events -------------------------------------------------------------------------------

FUNDING_TEMPLATES = {"funding_granted": "funding_granted", "funding_converted": "funding_granted",
                     "funding_waiting": "funding_waiting", "funding_released": "funding_released"}


def _funding_notices(event_type: str, payload: dict, event_id, copy: Copy, who: Who,
                     moment: datetime) -> list[dict]:
    context = {"kind": payload.get("kind"), "amount_cents": payload.get("amount_cents"),
               "amount": euros(payload.get("amount_cents")),
               "converted": event_type == "funding_converted"}
    template = FUNDING_TEMPLATES[event_type]
    return _both(event_id, template, copy, who, context, moment,
                 participant=template == "funding_granted")


def funding_event(session: Session, event_type: str, payload: dict, event_id: str):
    found = _known(session, payload["enrolment_id"])
    if found is None:
        # Not known yet: hold the contact's lock, look again, and let the event wait.
        _contact(session, payload["ags"], _CONTACT_FOR_UPDATE)
        found = _known(session, payload["enrolment_id"])
        if found is None:
            insert_skipping_duplicates(session, EarlyFundingEvent.__table__, [{
                "event_id": event_id, "enrolment_id": payload["enrolment_id"],
                "event_type": event_type, "payload": _jsonable(payload),
                "received_at": now()}], ["event_id"])
            return
    copy, who = found
    if copy.status == ERASED:
        return
    if who is None:
        raise NotReady(f"no contact known for municipality {copy.ags} yet")
    _write(session, _funding_notices(event_type, payload, event_id, copy, who, now()))


def _waiting_funding(session: Session, copy: Copy, who: Who, moment: datetime) -> list[dict]:
    """The notices of funding events that waited for this enrolment (and they wait no more)."""
    waiting = session.execute(_TAKE_EARLY, {"enrolment_id": copy.enrolment_id}).all()
    notices = []
    for event_id, event_type, payload, _ in sorted(waiting, key=lambda row: row[3]):
        notices += _funding_notices(event_type, payload, event_id, copy, who, moment)
    return notices


def euros(cents: int | None) -> str:
    if cents is None:
        return ""
    whole, rest = divmod(int(cents), 100)
    return f"{whole:,}".replace(",", ".") + f",{rest:02d} €"


# --- certificate events ---------------------------------------------------------------------------

def certificate_issued(session: Session, payload: dict, event_id: str):
    copy, who = _enrolment(session, payload["enrolment_id"])
    if copy.status == ERASED:
        return
    context = {"participant_name": copy.name, "municipality": who.municipality,
               "course": copy.course, "programme_name": copy.course.get("programme_name", ""),
               "number": payload["certificate_number"],
               "verification_url": payload["verification_url"]}
    _write(session, [_notice(f"{event_id}:participant:certificate_issued", "certificate_issued",
                             "participant", copy.email, copy.name, context, now(),
                             cc_email=who.contact_email,
                             certificate_number=payload["certificate_number"],
                             enrolment_id=copy.enrolment_id)])


def certificate_revoked(session: Session, payload: dict, event_id: str):
    copy, who = _enrolment(session, payload["enrolment_id"])
    if copy.status == ERASED:
        return
    _write(session, _both(event_id, "certificate_revoked", copy, who,
                          {"number": payload["certificate_number"],
                           "reason": payload["reason"]}, now()))


def body_reminded(session: Session, payload: dict, event_id: str) -> int:
    """The reminder to a body still without a confirmed participant, to its contact. Keyed by
    programme, campaign and body, so a body receives each campaign once even if funding's
    event arrived twice. A body with no registered contact has nobody to write to: nothing is
    sent (the office sees it in the coverage report as reminded without a contact)."""
    who = _who_of(session.execute(_CONTACT, {"ags": payload["ags"]}).first())
    if who is None:
        return 0
    context = {"municipality": who.municipality, "programme_name": payload["programme_name"],
               "reserve_until": payload["reserve_until"], "ags": payload["ags"]}
    key = f"reminder:{payload['programme_id']}:{payload['campaign']}:{payload['ags']}"
    _write(session, [_notice(key, "body_reminded", "municipality", who.contact_email,
                             who.contact_name, context, now())])
    return 1


# --- the municipality portal ---------------------------------------------------------------------

PORTAL_SIGN_OFF = "Portal für Kommunen"


def _link_notice(key: str, template: str, payload: dict, municipality: str,
                 sign_off: str) -> dict:
    """A sign-in link's mail, to the address that asked (and may sign in)."""
    until = payload["expires_at"].astimezone(PROGRAMME_TIMEZONE).strftime("%H:%M")
    return _notice(key, template, "municipality", payload["email"], payload["name"],
                   {"municipality": municipality, "link": payload["link"],
                    "valid_until": until, "programme_name": sign_off}, now())


def sign_in_link_requested(session: Session, payload: dict, event_id: str):
    _write(session, [_link_notice(f"{event_id}:portal:sign_in_link", "sign_in_link", payload,
                                  payload["municipality"], PORTAL_SIGN_OFF)])


def office_sign_in_link_requested(session: Session, payload: dict, event_id: str):
    """The link mail for a member of the programme office."""
    _write(session, [_link_notice(f"{event_id}:office:sign_in_link", "office_sign_in_link",
                                  payload, "Programmbüro", "Seiten des Programmbüros")])


def coach_sign_in_link_requested(session: Session, payload: dict, event_id: str):
    """The link mail for a coach."""
    _write(session, [_link_notice(f"{event_id}:coach:sign_in_link", "coach_sign_in_link",
                                  payload, "Coaching", "Seiten für das Coaching")])


def colleague_invited(session: Session, payload: dict, event_id: str):
    _write(session, [_notice(f"{event_id}:portal:colleague_invited", "colleague_invited",
                             "municipality", payload["email"], payload["name"],
                             {"municipality": payload["municipality"], "ags": payload["ags"],
                              "invited_by": payload["invited_by"],
                              "portal_url": payload["portal_url"],
                              "programme_name": PORTAL_SIGN_OFF}, now())])


# --- coaching programmes -------------------------------------------------------------------------

def _coaching_pair(key: str, template: str, payload: dict, context: dict) -> list[dict]:
    """One notice to the Navigator and one to the coach, each greeted by name."""
    person = payload["participant"]
    navigator = f"{person['given_name']} {person['family_name']}"
    base = dict(navigator_name=navigator, coach_name=payload["coach_name"],
                coach_email=payload["coach_email"], municipality=payload["municipality"],
                programme_name=payload["programme_name"], **context)
    return [
        _notice(f"{key}:navigator", template, "navigator", person["email"], navigator,
                dict(base, participant_name=navigator), now()),
        _notice(f"{key}:coach", template, "coach", payload["coach_email"],
                payload["coach_name"], dict(base, participant_name=payload["coach_name"]),
                now()),
    ]


def _to_navigator(key: str, template: str, payload: dict, context: dict) -> dict:
    person = payload["participant"]
    name = f"{person['given_name']} {person['family_name']}"
    return _notice(key, template, "navigator", person["email"], name,
                   dict(participant_name=name, navigator_name=name,
                        municipality=payload["municipality"],
                        programme_name=payload["programme_name"], **context), now())


def navigator_named(session: Session, payload: dict, event_id: str):
    """The named person learns that they are their municipality's Navigator (once per
    Navigator, whichever delivery of the event comes first)."""
    _write(session, [_to_navigator(f"named:{payload['navigator_id']}", "navigator_named",
                                   payload, {"replaces": bool(payload.get("replaces_id"))})])


def milestone_reached(session: Session, payload: dict, event_id: str):
    """The Navigator gets the coach's record of a milestone (once per milestone)."""
    _write(session, [_to_navigator(
        f"reached:{payload['navigator_id']}:{payload['key']}", "milestone_reached", payload,
        {"title": payload["title"], "reached_on": payload["reached_on"],
         "coach_name": payload["coach_name"], "coach_email": payload["coach_email"],
         "with_document": bool(payload.get("document_ref"))})])


def coaching_paired(session: Session, payload: dict, event_id: str):
    """Both are told, once per pairing: the Navigator's change count in the key lets a move
    back to an earlier coach (or a re-admitted one) be mailed too. A Navigator whose coaching
    goes on with another coach is told that it goes on (v1 events knew no such case)."""
    _write(session, _coaching_pair(
        f"paired:{payload['navigator_id']}:{payload['coach_id']}:{payload['sequence']}",
        "coaching_paired", payload,
        {"started_on": payload["started_on"], "continues": payload.get("continues", False),
         "paired_on": payload.get("paired_on") or payload["started_on"]}))


def coaching_unpaired(session: Session, payload: dict, event_id: str):
    """The Navigator learns that their coach left and that their coaching goes on (once per
    departure)."""
    _write(session, [_to_navigator(
        f"unpaired:{payload['navigator_id']}:{payload['coach_id']}:{payload['sequence']}",
        "coaching_unpaired", payload, {"coach_name": payload["coach_name"]})])


def milestone_overdue(session: Session, payload: dict, event_id: str):
    """Keyed by Navigator and milestone: each is reminded of once, even if the event came
    twice."""
    _write(session, _coaching_pair(
        f"overdue:{payload['navigator_id']}:{payload['key']}", "milestone_overdue", payload,
        {"title": payload["title"], "due_on": payload["due_on"]}))


def course_reminders(session: Session, today: date) -> int:
    """Remind confirmed participants in the week before their first module (once each)."""
    due = session.execute(select(KnownEnrolment).where(
        KnownEnrolment.status == "confirmed",
        KnownEnrolment.first_module_on > today,
        KnownEnrolment.first_module_on <= today + timedelta(days=REMINDER_DAYS))).scalars().all()
    moment = now()
    notices = []
    for enrolment in due:
        name = f"{enrolment.given_name} {enrolment.family_name}"
        notices.append(_notice(
            f"reminder:{enrolment.enrolment_id}:{enrolment.first_module_on}", "course_reminder",
            "participant", enrolment.email, name,
            {"participant_name": name, "course": enrolment.course,
             "programme_name": enrolment.course.get("programme_name", ""),
             "days": (enrolment.first_module_on - today).days}, moment,
            enrolment_id=enrolment.enrolment_id))
    written = 0
    for start in range(0, len(notices), 500):
        written += len(_write(session, notices[start:start + 500], returning=True))
    return written


# --- delivery bookkeeping -----------------------------------------------------------------------

LEASE_SECONDS = 120


def _delivery_statements():
    """The delivery round's statements on the table itself, built once. Through the ORM each
    UPDATE ... RETURNING also built ORM objects and synchronised the session, about a twentieth
    of the notifications process in the burst benchmark; nothing here needs either."""
    n, k = Notice.__table__.c, KnownEnrolment.__table__.c
    claimed = (n.id, n.template, n.recipient_role, n.to_email, n.to_name, n.cc_email,
               n.context, n.certificate_number, n.lease_until, n.created_at)
    # A notice written about an enrolment in the moment its participant was erased (an event
    # handled at the same time as the erasure, which did not see it yet) is never sent; the
    # daily sweep (``privacy.delete_old_mail``) deletes it.
    not_erased = ~(select(k.enrolment_id).where(k.enrolment_id == n.enrolment_id,
                                                k.status == ERASED).exists())
    due = (select(n.id).where(
        n.status == "pending", n.next_attempt_at <= bindparam("moment"),
        or_(n.lease_until.is_(None), n.lease_until < bindparam("moment")), not_erased)
        .order_by(n.created_at).limit(bindparam("limit")))

    def claim(candidates):
        return (update(Notice.__table__).where(n.id.in_(candidates))
                .values(lease_until=bindparam("lease")).returning(*claimed))
    # (An UPDATE's parameters must not be named like its columns.)
    sent = (update(Notice.__table__).where(n.id.in_(bindparam("ids", expanding=True)))
            .values(status="sent", sent_at=bindparam("moment"), attempts=n.attempts + 1,
                    lease_until=None, last_error=None).returning(n.id))
    return {"postgresql": claim(due.with_for_update(skip_locked=True)),
            "sqlite": claim(due)}, sent


_CLAIM, _RECORD_SENT = _delivery_statements()


def claim_due(session: Session, limit: int, lease_seconds: float = LEASE_SECONDS) -> list:
    """Take up to ``limit`` due notices for sending, oldest first: one statement.

    ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n) RETURNING ...``:
    rows another instance is claiming right now (row locks) or holds (a live lease) are
    skipped, so several instances share the work without sending anything twice. SQLite has
    one writer (the transaction began with BEGIN IMMEDIATE), so there it needs no row locks.
    The pending notices are found through a partial index of them by age."""
    moment = now()
    dialect = "postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"
    claimed = session.execute(_CLAIM[dialect], {
        "moment": moment, "limit": limit,
        "lease": moment + timedelta(seconds=lease_seconds)}).all()
    return sorted(claimed, key=lambda notice: notice.created_at)


def record_sent(session: Session, notice_ids):
    """Whoever sent them last, they went out: nobody sends them again. One statement for a
    whole delivery round; returns the ids it recorded (a notice erased while its mail was
    on the way is no longer there)."""
    ids = list(notice_ids)
    if not ids:
        return []
    return list(session.scalars(_RECORD_SENT, {"ids": ids, "moment": now()}))


# Mails that carry a sign-in link: once sent, the notice forgets the link (it lets whoever
# holds it in; the mail log keeps that the mail went out, not the secret).
LINK_TEMPLATES = frozenset({"sign_in_link", "office_sign_in_link", "coach_sign_in_link"})


def without_secrets(notice) -> dict | None:
    """The context a sent notice keeps, if it carried a secret; None otherwise."""
    if notice.template not in LINK_TEMPLATES:
        return None
    return dict(notice.context or {}, link="")  # blank, so its subject still renders


def record_round(session: Session, sent, failures, max_attempts: int, base_delay_s: float,
                 max_delay_s: float, forget: dict | None = None):
    """What a delivery round did, in one transaction: the mails that went out (one
    statement), the contexts that forget their secret (``forget``, notice id -> context;
    rare), and the failed tries (``(notice_id, lease_until, error, permanent)``; rare)."""
    recorded = record_sent(session, sent)
    for notice_id in set(recorded) & set(forget or ()):
        session.execute(update(Notice).where(Notice.id == notice_id)
                        .values(context=forget[notice_id]))
    for notice_id, lease_until, error, permanent in failures:
        record_failure(session, notice_id, lease_until, error, permanent, max_attempts,
                       base_delay_s, max_delay_s)
    return recorded


def record_failure(session: Session, notice_id, lease_until: datetime, error: str,
                   permanent: bool, max_attempts: int, base_delay_s: float, max_delay_s: float):
    """Count a failed try, if the notice is still ours: an instance whose lease ran out while
    it tried must not clear the lease of the instance that took over (nor fail a sent one)."""
    notice = session.get(Notice, notice_id)
    if notice is None:
        return  # erased (its participant's data) while it was being tried
    if notice.status != "pending" or notice.lease_until != lease_until:
        return
    notice.attempts += 1
    notice.last_error = error[:500]
    notice.lease_until = None
    if permanent or notice.attempts >= max_attempts:
        notice.status = "failed"
    else:
        delay = min(max_delay_s, base_delay_s * 2 ** (notice.attempts - 1))
        notice.next_attempt_at = now() + timedelta(seconds=delay)


def failed_notices(session: Session) -> list[dict]:
    rows = session.execute(select(Notice).where(Notice.status == "failed")
                           .order_by(Notice.created_at)).scalars()
    return [{"id": str(n.id), "template": n.template, "recipient_role": n.recipient_role,
             "attempts": n.attempts, "last_error": n.last_error,
             "created_at": n.created_at.isoformat()} for n in rows]


def resend(session: Session, notice_id=None) -> int:
    query = update(Notice).where(Notice.status == "failed")
    if notice_id is not None:
        query = query.where(Notice.id == notice_id)
    return session.execute(query.values(status="pending", attempts=0, next_attempt_at=now(),
                                        lease_until=None)).rowcount
