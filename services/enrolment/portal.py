"""Who may use the municipality portal, and how they get in: plain functions, no nameko.

A body's contact (the address the operator registered) and the colleagues the contact invited
may sign in for that body. Signing in is by a single-use link, valid for ``LINK_MINUTES``,
mailed by the notifications service (the ``sign_in_link_requested`` event); the link opens a
session whose id the gateway keeps in a signed cookie. Only hashes of link tokens and session
ids are stored, and the link's event keeps the link only until the broker has it
(``SECRET_FIELDS``), so a copy of this database lets nobody in. A session ends when it
expires, at sign-out, or as soon as its person loses access (a removed colleague, a changed
contact).
"""
from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from services.common.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied
from services.common.outbox import emit
from services.enrolment.domain import hash_secret, now
from services.enrolment.models import (
    Body,
    MunicipalityAccount,
    PortalColleague,
    PortalSession,
    PortalSignInLink,
)

LINK_MINUTES = 15
# Unused links an address may hold for one body at once: more requests mail nothing (so the
# sign-in form cannot be used to flood a clerk's inbox).
MAX_OPEN_LINKS = 3
CONTACT, COLLEAGUE = "contact", "colleague"
# Used and expired links, and sessions that ended, are deleted after this long (they let
# nobody in; the delay keeps them for a look when someone asks why a link did not work).
KEEP_LINKS = timedelta(days=1)
KEEP_SESSIONS = timedelta(days=30)


def _access(session: Session, ags: str, email: str) -> tuple[str, str] | None:
    """(role, name) of ``email`` for the body ``ags``, or None if it may not sign in."""
    account = session.get(MunicipalityAccount, ags)
    if account is None:
        return None
    if account.contact_email == email:
        return CONTACT, account.contact_name
    colleague = session.scalar(select(PortalColleague).where(
        PortalColleague.ags == ags, PortalColleague.email == email,
        PortalColleague.removed_at.is_(None)))
    return (COLLEAGUE, colleague.name) if colleague is not None else None


def _bodies_of(session: Session, email: str) -> list[str]:
    """Every registered body this address may sign in for."""
    contacts = session.scalars(select(MunicipalityAccount.ags).where(
        MunicipalityAccount.contact_email == email)).all()
    colleagues = session.scalars(
        select(PortalColleague.ags).join(MunicipalityAccount,
                                         MunicipalityAccount.ags == PortalColleague.ags)
        .where(PortalColleague.email == email, PortalColleague.removed_at.is_(None))).all()
    return sorted(set(contacts) | set(colleagues))


def request_sign_in(session: Session, email: str, link_base: str) -> int:
    """Make a link for each body ``email`` may sign in for and have it mailed; the number of
    links made is for tests and metrics only: the caller must answer the same either way."""
    moment = now()
    forget_old(session, moment)
    made = 0
    for ags in _bodies_of(session, email):
        open_links = session.scalar(select(func.count()).select_from(PortalSignInLink).where(
            PortalSignInLink.ags == ags, PortalSignInLink.email == email,
            PortalSignInLink.used_at.is_(None), PortalSignInLink.expires_at > moment))
        if open_links >= MAX_OPEN_LINKS:
            continue
        role, name = _access(session, ags, email)
        token = secrets.token_urlsafe(32)
        link = PortalSignInLink(token_hash=hash_secret(token), ags=ags, email=email,
                                created_at=moment,
                                expires_at=moment + timedelta(minutes=LINK_MINUTES))
        session.add(link)
        session.flush()
        emit(session, "sign_in_link_requested", {
            "ags": ags, "municipality": session.get(Body, ags).name, "email": email,
            "name": name, "link": link_base + token, "expires_at": link.expires_at})
        made += 1
    return made


def forget_old(session: Session, moment: datetime):
    session.execute(delete(PortalSignInLink).where(
        PortalSignInLink.expires_at < moment - KEEP_LINKS))
    session.execute(delete(PortalSession).where(or_(
        PortalSession.expires_at < moment - KEEP_SESSIONS,
        PortalSession.ended_at < moment - KEEP_SESSIONS)))


def sign_in(session: Session, token: str, session_hours: float) -> dict:
    """Use a link (once) and open a session; ``session_id`` is the secret for the cookie."""
    link = session.scalar(select(PortalSignInLink).where(
        PortalSignInLink.token_hash == hash_secret(token)).with_for_update())
    moment = now()
    if link is None or link.used_at is not None or link.expires_at <= moment:
        raise AuthenticationFailed("this sign-in link is unknown, used or expired",
                                   {"token": ["unknown, used or expired"]})
    link.used_at = moment
    if _access(session, link.ags, link.email) is None:
        raise AuthenticationFailed("this address may no longer sign in",
                                   {"token": ["unknown, used or expired"]})
    session_id = secrets.token_urlsafe(32)
    session.add(PortalSession(id_hash=hash_secret(session_id), ags=link.ags, email=link.email,
                              created_at=moment,
                              expires_at=moment + timedelta(hours=session_hours)))
    session.flush()
    return dict(current(session, session_id), session_id=session_id)


def current(session: Session, session_id: str) -> dict:
    """The person behind a live session; ``AuthenticationFailed`` for an ended, expired or
    unknown one, and for one whose person lost access meanwhile."""
    found = session.get(PortalSession, hash_secret(session_id))
    if found is None or found.ended_at is not None or found.expires_at <= now():
        raise AuthenticationFailed("no such session, or it has ended",
                                   {"session": ["ended or unknown"]})
    access = _access(session, found.ags, found.email)
    if access is None:
        raise AuthenticationFailed("no such session, or it has ended",
                                   {"session": ["ended or unknown"]})
    body = session.get(Body, found.ags)
    return {"ags": found.ags, "municipality": body.name, "email": found.email,
            "name": access[1], "role": access[0], "expires_at": found.expires_at}


def sign_out(session: Session, session_id: str) -> dict:
    """End the session (repeating is harmless; an unknown id changes nothing)."""
    session.execute(update(PortalSession).where(
        PortalSession.id_hash == hash_secret(session_id), PortalSession.ended_at.is_(None))
        .values(ended_at=now()))
    return {"signed_out": True}


def _as_contact(session: Session, ags: str, session_id: str) -> dict:
    me = current(session, session_id)
    if me["ags"] != ags:
        raise AuthenticationFailed("this session is not for this municipality",
                                   {"session": ["other municipality"]})
    if me["role"] != CONTACT:
        raise PermissionDenied("only the municipality's contact may invite or remove colleagues",
                               {"session": ["not the contact"]})
    return me


def _colleague_out(colleague: PortalColleague) -> dict:
    return {"id": str(colleague.id), "name": colleague.name, "email": colleague.email,
            "invited_at": colleague.invited_at}


def colleagues(session: Session, ags: str) -> dict:
    account = session.get(MunicipalityAccount, ags)
    if account is None:
        raise NotFound("not registered for the portal", {"ags": ["not registered"]})
    rows = session.scalars(select(PortalColleague).where(
        PortalColleague.ags == ags, PortalColleague.removed_at.is_(None))
        .order_by(PortalColleague.invited_at)).all()
    return {"contact": {"name": account.contact_name, "email": account.contact_email},
            "colleagues": [_colleague_out(c) for c in rows]}


def invite_colleague(session: Session, ags: str, session_id: str, name: str, email: str,
                     portal_url: str) -> dict:
    me = _as_contact(session, ags, session_id)
    if _access(session, ags, email) is not None:
        raise Conflict("this address may sign in already", {"email": ["has access already"]})
    colleague = PortalColleague(id=uuid.uuid4(), ags=ags, name=name, email=email,
                                invited_at=now())
    session.add(colleague)
    session.flush()
    emit(session, "colleague_invited", {
        "ags": ags, "municipality": me["municipality"], "email": email, "name": name,
        "invited_by": me["name"], "portal_url": portal_url})
    return _colleague_out(colleague)


def remove_colleague(session: Session, ags: str, session_id: str, colleague_id) -> dict:
    """Remove a colleague's access: their sessions end and their links stop working at once."""
    _as_contact(session, ags, session_id)
    colleague = session.get(PortalColleague, uuid.UUID(str(colleague_id)))
    if colleague is None or colleague.ags != ags or colleague.removed_at is not None:
        raise NotFound("no such colleague", {"colleague_id": ["unknown colleague"]})
    moment: datetime = now()
    colleague.removed_at = moment
    session.execute(update(PortalSession).where(
        PortalSession.ags == ags, PortalSession.email == colleague.email,
        PortalSession.ended_at.is_(None)).values(ended_at=moment))
    session.flush()
    return _colleague_out(colleague)
