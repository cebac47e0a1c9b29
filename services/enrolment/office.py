"""The programme office's way in, and onboarding the municipalities' contacts at scale.

Plain functions, no nameko. Office staff are registered by an operator (``lotsen office add``);
they sign in at the office's desk (``signin``): a single-use link mailed by notifications
(``office_sign_in_link_requested``) opens a session whose id the gateway keeps in a signed
cookie. A removed member's sessions end at once.

Onboarding registers or updates each municipality's contact from the office's CSV and invites
the contact to the portal (``colleague_invited``, from "dem Programmbüro"). A row that changes
nothing sends nothing, so the same file can be uploaded again.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.errors import LotsenError, NotFound
from services.common.outbox import emit, emit_numbered
from services.enrolment.domain import hash_secret, new_secret, now, row_error, set_contact
from services.enrolment.models import (
    Body,
    MunicipalityAccount,
    OfficeSession,
    OfficeSignInLink,
    OfficeStaff,
)
from services.enrolment.signin import Desk

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
    member.removed_at = now()
    DESK.end_sessions(session, email)
    return _staff_out(member)


def staff(session: Session) -> list[dict]:
    return [_staff_out(m) for m in session.scalars(
        select(OfficeStaff).where(OfficeStaff.removed_at.is_(None)).order_by(OfficeStaff.email))]


def _staff_out(member: OfficeStaff) -> dict:
    return {"email": member.email, "name": member.name, "added_at": member.added_at,
            "removed_at": member.removed_at}


def _member(session: Session, email: str) -> dict | None:
    member = session.get(OfficeStaff, email)
    if member is None or member.removed_at is not None:
        return None
    return {"email": member.email, "name": member.name}


DESK = Desk(OfficeSignInLink, OfficeSession, _member, "office_sign_in_link_requested")
request_sign_in, sign_in, current, sign_out = (
    DESK.request_sign_in, DESK.sign_in, DESK.current, DESK.sign_out)


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
    set_contact(session, account, name, email)
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
