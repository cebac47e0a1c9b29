"""Signing in by a mailed single-use link, for the people who work on the programme rather
than for a municipality: the office's staff and the coaches. Plain functions, no nameko.

A ``Desk`` is one such way in: the tables of its links and sessions and who may use it. Only
hashes of link tokens and session ids are stored (the link's event keeps the link only
until the broker has it), so a copy of the database lets nobody in.
A link is valid for ``LINK_MINUTES`` and once; at most ``MAX_OPEN_LINKS`` are open per
address (more requests mail nothing, so the form cannot flood an inbox); old links and
sessions are deleted as the portal's are. The municipality portal has its own rules (one
link per body, colleagues) in ``portal``.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from services.common.errors import AuthenticationFailed
from services.common.outbox import emit
from services.enrolment.domain import hash_secret, now
from services.enrolment.portal import (
    KEEP_LINKS,
    KEEP_SESSIONS,
    LINK_MINUTES,
    MAX_OPEN_LINKS,
)


@dataclass(frozen=True)
class Desk:
    link_model: type  # token_hash, email, created_at, expires_at, used_at
    session_model: type  # id_hash, email, created_at, expires_at, ended_at
    member: Callable[[Session, str], dict | None]  # {"email", "name"} of who may sign in
    event: str  # the event that has notifications mail the link

    def request_sign_in(self, session: Session, email: str, link_base: str) -> int:
        """Mail a link if ``email`` may sign in here; 0 or 1 (the caller answers the same)."""
        moment = now()
        self.forget_old(session, moment)
        member = self.member(session, email)
        if member is None:
            return 0
        Link = self.link_model
        open_links = session.scalars(select(Link.token_hash).where(
            Link.email == email, Link.used_at.is_(None), Link.expires_at > moment)).all()
        if len(open_links) >= MAX_OPEN_LINKS:
            return 0
        token = secrets.token_urlsafe(32)
        link = Link(token_hash=hash_secret(token), email=email, created_at=moment,
                    expires_at=moment + timedelta(minutes=LINK_MINUTES))
        session.add(link)
        session.flush()
        emit(session, self.event, {"email": email, "name": member["name"],
                                   "link": link_base + token, "expires_at": link.expires_at})
        return 1

    def sign_in(self, session: Session, token: str, session_hours: float) -> dict:
        Link = self.link_model
        link = session.scalar(select(Link).where(Link.token_hash == hash_secret(token))
                              .with_for_update())
        moment = now()
        if link is None or link.used_at is not None or link.expires_at <= moment:
            raise AuthenticationFailed("this sign-in link is unknown, used or expired",
                                       {"token": ["unknown, used or expired"]})
        link.used_at = moment
        if self.member(session, link.email) is None:
            raise AuthenticationFailed("this address may no longer sign in",
                                       {"token": ["unknown, used or expired"]})
        session_id = secrets.token_urlsafe(32)
        session.add(self.session_model(id_hash=hash_secret(session_id), email=link.email,
                                       created_at=moment,
                                       expires_at=moment + timedelta(hours=session_hours)))
        session.flush()
        return dict(self.current(session, session_id), session_id=session_id)

    def current(self, session: Session, session_id: str) -> dict:
        """Who is behind a live session; ``AuthenticationFailed`` otherwise."""
        found = session.get(self.session_model, hash_secret(session_id))
        member = self.member(session, found.email) if found is not None else None
        if (found is None or found.ended_at is not None or found.expires_at <= now()
                or member is None):
            raise AuthenticationFailed("no such session, or it has ended",
                                       {"session": ["ended or unknown"]})
        return {"email": member["email"], "name": member["name"],
                "expires_at": found.expires_at}

    def sign_out(self, session: Session, session_id: str) -> dict:
        Model = self.session_model
        session.execute(update(Model).where(Model.id_hash == hash_secret(session_id),
                                            Model.ended_at.is_(None)).values(ended_at=now()))
        return {"signed_out": True}

    def forget_old(self, session: Session, moment):
        """Used and expired links, and sessions that ended, after the portal's delays: they
        let nobody in, and they hold the person's address."""
        Link, Model = self.link_model, self.session_model
        session.execute(delete(Link).where(Link.expires_at < moment - KEEP_LINKS))
        session.execute(delete(Model).where(or_(Model.expires_at < moment - KEEP_SESSIONS,
                                                Model.ended_at < moment - KEEP_SESSIONS)))

    def end_sessions(self, session: Session, email: str):
        """Whoever loses access is signed out everywhere at once."""
        Model = self.session_model
        session.execute(update(Model).where(Model.email == email, Model.ended_at.is_(None))
                        .values(ended_at=now()))
