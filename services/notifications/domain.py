"""Which notices an event causes, for whom, with which data. Plain functions, no nameko.

A notice is written in the same transaction as the inbox record of its event; the delivery
loop sends it later. Its key (event, recipient role, template) is unique, so a redelivered event
writes nothing new.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.common.errors import LotsenError, NotFound
from services.common.events import newer
from services.notifications.models import Contact, KnownEnrolment, Notice

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


def _notice(session: Session, key: str, template: str, role: str, to_email: str, to_name: str,
            context: dict, cc_email: str | None = None, certificate_number: str | None = None):
    if session.scalar(select(Notice.id).where(Notice.dedup_key == key)):
        return
    session.add(Notice(dedup_key=key, template=template, recipient_role=role, to_email=to_email,
                       to_name=to_name, cc_email=cc_email, context=_jsonable(context),
                       certificate_number=certificate_number, status="pending", attempts=0,
                       next_attempt_at=now()))


def _contact(session: Session, ags: str) -> Contact:
    contact = session.get(Contact, ags)
    if contact is None:
        raise NotReady(f"no contact known for municipality {ags} yet")
    return contact


def _enrolment(session: Session, enrolment_id) -> KnownEnrolment:
    enrolment = session.get(KnownEnrolment, enrolment_id)
    if enrolment is None:
        raise NotReady("enrolment not known yet")
    return enrolment


def _both(session, event_id, template, enrolment: KnownEnrolment, context: dict,
          participant=True, municipality=True):
    contact = _contact(session, enrolment.ags)
    base = {"participant_name": f"{enrolment.given_name} {enrolment.family_name}",
            "municipality": contact.name, "course": enrolment.course,
            "programme_name": enrolment.course.get("programme_name", "")}
    base.update(context)
    if participant:
        _notice(session, f"{event_id}:participant:{template}", template, "participant",
                enrolment.email, f"{enrolment.given_name} {enrolment.family_name}", base)
    if municipality:
        _notice(session, f"{event_id}:municipality:{template}", template, "municipality",
                contact.contact_email, contact.contact_name, base)


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


FINAL = ("cancelled", "completed")


def _remember(session: Session, payload: dict, status: str) -> KnownEnrolment:
    enrolment = session.get(KnownEnrolment, payload["enrolment_id"])
    if enrolment is None:
        course = payload.get("course")
        if course is None:
            raise NotFound("enrolment event without course details")
        participant = payload["participant"]
        first = min((m["date"] for m in course["modules"]), default=None)
        enrolment = KnownEnrolment(
            enrolment_id=payload["enrolment_id"], ags=payload["ags"],
            course_id=payload["course_id"], given_name=participant["given_name"],
            family_name=participant["family_name"], email=participant["email"], status=status,
            course=_jsonable(course), first_module_on=first, version=payload.get("sequence"))
        session.add(enrolment)
    elif enrolment.status not in FINAL and newer(payload.get("sequence"), enrolment.version):
        # Only a newer event moves the copy on (a retried promotion handled after the
        # cancellation must not make it confirmed again), and nothing undoes a cancellation.
        enrolment.status = status
        enrolment.version = payload.get("sequence") or enrolment.version
    session.flush()
    return enrolment


def enrolment_created(session: Session, payload: dict, event_id: str):
    enrolment = _remember(session, payload, payload["status"])
    template = "enrolment_confirmed" if payload["status"] == "confirmed" else "enrolment_waitlisted"
    _both(session, event_id, template, enrolment,
          {"waitlist_position": payload.get("waitlist_position")})


def enrolment_promoted(session: Session, payload: dict, event_id: str):
    enrolment = _remember(session, payload, "confirmed")
    _both(session, event_id, "enrolment_promoted", enrolment, {})


def enrolment_cancelled(session: Session, payload: dict, event_id: str):
    enrolment = _remember(session, payload, "cancelled")
    if payload["cancelled_by"] == "course_cancelled":
        return  # the course-cancelled notice says it, once
    by = {"municipality": "Ihre Kommune", "provider": "den Bildungsträger"}[payload["cancelled_by"]]
    _both(session, event_id, "enrolment_cancelled", enrolment,
          {"cancelled_by": by, "reason": payload.get("reason")})


def course_cancelled(session: Session, payload: dict, event_id: str):
    for enrolment_id in payload["enrolment_ids"]:
        enrolment = _enrolment(session, enrolment_id)
        enrolment.status = "cancelled"
        _both(session, f"{event_id}:{enrolment_id}", "course_cancelled", enrolment,
              {"reason": payload.get("reason")})


def funding_event(session: Session, event_type: str, payload: dict, event_id: str):
    enrolment = _enrolment(session, payload["enrolment_id"])
    context = {"kind": payload.get("kind"), "amount_cents": payload.get("amount_cents"),
               "amount": euros(payload.get("amount_cents"))}
    template = {"funding_granted": "funding_granted", "funding_converted": "funding_granted",
                "funding_waiting": "funding_waiting",
                "funding_released": "funding_released"}[event_type]
    context["converted"] = event_type == "funding_converted"
    _both(session, event_id, template, enrolment, context,
          participant=template == "funding_granted")


def euros(cents: int | None) -> str:
    if cents is None:
        return ""
    whole, rest = divmod(int(cents), 100)
    return f"{whole:,}".replace(",", ".") + f",{rest:02d} €"


def certificate_issued(session: Session, payload: dict, event_id: str):
    enrolment = _enrolment(session, payload["enrolment_id"])
    contact = _contact(session, enrolment.ags)
    context = {"participant_name": f"{enrolment.given_name} {enrolment.family_name}",
               "municipality": contact.name, "course": enrolment.course,
               "programme_name": enrolment.course.get("programme_name", ""),
               "number": payload["certificate_number"],
               "verification_url": payload["verification_url"]}
    _notice(session, f"{event_id}:participant:certificate_issued", "certificate_issued",
            "participant", enrolment.email, context["participant_name"], context,
            cc_email=contact.contact_email, certificate_number=payload["certificate_number"])


def certificate_revoked(session: Session, payload: dict, event_id: str):
    enrolment = _enrolment(session, payload["enrolment_id"])
    _both(session, event_id, "certificate_revoked", enrolment,
          {"number": payload["certificate_number"], "reason": payload["reason"]})


def course_reminders(session: Session, today: date) -> int:
    """Remind confirmed participants in the week before their first module (once each)."""
    due = session.execute(select(KnownEnrolment).where(
        KnownEnrolment.status == "confirmed",
        KnownEnrolment.first_module_on > today,
        KnownEnrolment.first_module_on <= today + timedelta(days=REMINDER_DAYS))).scalars().all()
    written = 0
    for enrolment in due:
        key = f"reminder:{enrolment.enrolment_id}:{enrolment.first_module_on}"
        if session.scalar(select(Notice.id).where(Notice.dedup_key == key)):
            continue
        name = f"{enrolment.given_name} {enrolment.family_name}"
        _notice(session, key, "course_reminder", "participant", enrolment.email, name,
                {"participant_name": name, "course": enrolment.course,
                 "programme_name": enrolment.course.get("programme_name", ""),
                 "days": (enrolment.first_module_on - today).days})
        written += 1
    return written


# --- delivery bookkeeping -----------------------------------------------------------------------

LEASE_SECONDS = 120


def claim_due(session: Session, limit: int, lease_seconds: float = LEASE_SECONDS) -> list[Notice]:
    """Take up to ``limit`` due notices for sending, oldest first, in one transaction.

    Rows another instance is claiming right now (row locks) or holds (a live lease) are
    skipped, so several instances share the work without sending anything twice."""
    moment = now()
    notices = session.scalars(select(Notice).where(
        Notice.status == "pending", Notice.next_attempt_at <= moment,
        Notice.lease_until.is_(None) | (Notice.lease_until < moment))
        .order_by(Notice.created_at).limit(limit)
        .with_for_update(skip_locked=True)).all()
    for notice in notices:
        notice.lease_until = moment + timedelta(seconds=lease_seconds)
    return notices


def record_sent(session: Session, notice_id):
    """Whoever sent it last, it went out: nobody sends it again."""
    session.execute(update(Notice).where(Notice.id == notice_id).values(
        status="sent", sent_at=now(), attempts=Notice.attempts + 1, lease_until=None,
        last_error=None))


def record_failure(session: Session, notice_id, lease_until: datetime, error: str,
                   permanent: bool, max_attempts: int, base_delay_s: float, max_delay_s: float):
    """Count a failed try, if the notice is still ours: an instance whose lease ran out while
    it tried must not clear the lease of the instance that took over (nor fail a sent one)."""
    notice = session.get(Notice, notice_id)
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
