"""The programme office's way in, and onboarding the municipalities' contacts at scale.

Plain functions, no nameko. Office staff are registered by an operator (``lotsen office add``);
they sign in like the clerks do, by a single-use link of 15 minutes mailed by notifications
(``office_sign_in_link_requested``), into a session whose id the gateway keeps in a signed
cookie. Only hashes of link tokens and session ids are stored. A removed member's sessions end
at once.

Onboarding registers or updates each municipality's contact from the office's CSV and invites
the contact to the portal (``colleague_invited``, from "dem Programmbüro"). A row that changes
nothing sends nothing, so the same file can be uploaded again.
"""
from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.common.errors import AuthenticationFailed, LotsenError, NotFound
from services.common.outbox import emit, emit_numbered
from services.enrolment.domain import hash_secret, new_secret, now, row_error
from services.enrolment.models import (
    Body,
    MunicipalityAccount,
    OfficeSession,
    OfficeSignInLink,
    OfficeStaff,
)
from services.enrolment.portal import LINK_MINUTES, MAX_OPEN_LINKS

INVITED_BY = "Das Programmbüro"


def add_staff(session: Session, email: str, name: str) -> dict:
    """Register (or re-admit) a member of the office."""
    member = session.get(OfficeStaff, email)
    if member is None:
        member = OfficeStaff(email=email, name=name, added_at=now())
        session.add(member)
    member.name, member.removed_at = name, None
    session.flush()
    return _staff_out(member)


def remove_staff(session: Session, email: str) -> dict:
    member = session.get(OfficeStaff, email)
    if member is None or member.removed_at is not None:
        raise NotFound("no such member of the office", {"email": ["not registered"]})
    moment = now()
    member.removed_at = moment
    session.execute(update(OfficeSession).where(OfficeSession.email == email,
                                                OfficeSession.ended_at.is_(None))
                    .values(ended_at=moment))
    return _staff_out(member)


def staff(session: Session) -> list[dict]:
    return [_staff_out(m) for m in session.scalars(
        select(OfficeStaff).where(OfficeStaff.removed_at.is_(None)).order_by(OfficeStaff.email))]


def _staff_out(member: OfficeStaff) -> dict:
    return {"email": member.email, "name": member.name, "added_at": member.added_at,
            "removed_at": member.removed_at}


def _active(session: Session, email: str) -> OfficeStaff | None:
    member = session.get(OfficeStaff, email)
    return member if member is not None and member.removed_at is None else None


def request_sign_in(session: Session, email: str, link_base: str) -> int:
    """Mail a link if ``email`` belongs to the office; 0 or 1 (the caller answers the same)."""
    member = _active(session, email)
    if member is None:
        return 0
    moment = now()
    open_links = session.scalars(select(OfficeSignInLink.token_hash).where(
        OfficeSignInLink.email == email, OfficeSignInLink.used_at.is_(None),
        OfficeSignInLink.expires_at > moment)).all()
    if len(open_links) >= MAX_OPEN_LINKS:
        return 0
    token = secrets.token_urlsafe(32)
    link = OfficeSignInLink(token_hash=hash_secret(token), email=email, created_at=moment,
                            expires_at=moment + timedelta(minutes=LINK_MINUTES))
    session.add(link)
    session.flush()
    emit(session, "office_sign_in_link_requested", {
        "email": email, "name": member.name, "link": link_base + token,
        "expires_at": link.expires_at})
    return 1


def sign_in(session: Session, token: str, session_hours: float) -> dict:
    link = session.scalar(select(OfficeSignInLink).where(
        OfficeSignInLink.token_hash == hash_secret(token)).with_for_update())
    moment = now()
    if link is None or link.used_at is not None or link.expires_at <= moment:
        raise AuthenticationFailed("this sign-in link is unknown, used or expired",
                                   {"token": ["unknown, used or expired"]})
    link.used_at = moment
    if _active(session, link.email) is None:
        raise AuthenticationFailed("this address may no longer sign in",
                                   {"token": ["unknown, used or expired"]})
    session_id = secrets.token_urlsafe(32)
    session.add(OfficeSession(id_hash=hash_secret(session_id), email=link.email,
                              created_at=moment,
                              expires_at=moment + timedelta(hours=session_hours)))
    session.flush()
    return dict(current(session, session_id), session_id=session_id)


def current(session: Session, session_id: str) -> dict:
    """The member behind a live session; ``AuthenticationFailed`` otherwise."""
    found = session.get(OfficeSession, hash_secret(session_id))
    member = _active(session, found.email) if found is not None else None
    if found is None or found.ended_at is not None or found.expires_at <= now() or member is None:
        raise AuthenticationFailed("no such session, or it has ended",
                                   {"session": ["ended or unknown"]})
    return {"email": member.email, "name": member.name, "expires_at": found.expires_at}


def sign_out(session: Session, session_id: str) -> dict:
    session.execute(update(OfficeSession).where(
        OfficeSession.id_hash == hash_secret(session_id), OfficeSession.ended_at.is_(None))
        .values(ended_at=now()))
    return {"signed_out": True}


# --- onboarding --------------------------------------------------------------------------------

def _onboard_one(session: Session, ags: str, name: str, email: str, portal_url: str) -> str:
    body = session.get(Body, ags)
    if body is None:
        raise NotFound(f"no body with AGS {ags} in the register", {"ags": ["not in register"]})
    account = session.get(MunicipalityAccount, ags)
    if account is not None and (account.contact_name, account.contact_email) == (name, email):
        return "unchanged"
    result = "updated" if account is not None else "created"
    if account is None:
        # A key is needed for the API; nobody sees this one: `lotsen municipality rotate-key`
        # issues one to show when the municipality asks for machine access.
        key = new_secret("lk")
        account = MunicipalityAccount(ags=ags, api_key_hash=hash_secret(key),
                                      api_key_prefix=key[:10], key_issued_at=now())
        session.add(account)
    account.contact_name, account.contact_email = name, email
    session.flush()
    emit_numbered(session, account, "municipality_registered", {
        "ags": ags, "name": body.name, "contact_name": name, "contact_email": email})
    emit(session, "colleague_invited", {
        "ags": ags, "municipality": body.name, "email": email, "name": name,
        "invited_by": INVITED_BY, "portal_url": portal_url})
    return result


def onboard_contacts(session: Session, rows: list, portal_url: str) -> list[dict]:
    """Each row (``{"ags", "contact_name", "contact_email"}`` or the ``LotsenError`` its
    validation raised) registers or updates that body's contact; the report says per row
    what happened, and a row that fails changes nothing else."""
    report = []
    for index, row in enumerate(rows):
        if isinstance(row, LotsenError):
            report.append(row_error(index, row))
            continue
        try:
            with session.begin_nested():
                result = _onboard_one(session, row["ags"], row["contact_name"],
                                      row["contact_email"], portal_url)
        except LotsenError as exc:
            report.append(dict(row_error(index, exc), ags=row["ags"]))
            continue
        report.append({"row": index, "ags": row["ags"], "result": result})
    return report
