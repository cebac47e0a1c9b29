"""Issuing, verifying, revoking and re-issuing certificates. Plain functions, no nameko."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.certificates import credentials, pdf, privacy
from services.certificates.models import (
    NUMBER_LENGTH,
    SEQUENCE_DIGITS,
    Certificate,
    CertificateSequence,
)
from services.common.clock import calendar_day
from services.common.errors import Gone, NotFound, RuleViolation
from services.common.outbox import emit_numbered


@dataclass(frozen=True)
class Issuer:
    name: str
    url: str
    public_base_url: str

    def verification_url(self, code: str) -> str:
        return f"{self.public_base_url.rstrip('/')}/verify/{code}"


def now() -> datetime:
    return datetime.now(timezone.utc)


def _next_number(session: Session, programme_code: str, year: int) -> int:
    """Gapless per programme and year: the number is taken under the sequence row's lock and
    given back by the rollback if the issuing transaction fails."""
    query = select(CertificateSequence).where(
        CertificateSequence.programme_code == programme_code,
        CertificateSequence.year == year).with_for_update()
    row = session.execute(query).scalar_one_or_none()
    if row is None:
        try:
            with session.begin_nested():
                session.add(CertificateSequence(programme_code=programme_code, year=year,
                                                last_number=0))
        except IntegrityError:
            pass  # another instance created it first
        row = session.execute(query).scalar_one()
    row.last_number += 1
    return row.last_number


def certificate_number(programme_code: str, year: int, sequence: int) -> str:
    """``BW-DL-2026-000123``; refused with a clear reason rather than failing in the database
    when it would not fit the number columns (a programme code created before codes were
    limited, or more than a million certificates in a programme and year)."""
    number = f"{programme_code}-{year:04d}-{sequence:0{SEQUENCE_DIGITS}d}"
    if len(number) > NUMBER_LENGTH:
        raise RuleViolation(
            f"certificate number {number} is longer than {NUMBER_LENGTH} characters",
            {"programme_code": [f"too long for certificate numbers ({len(programme_code)} "
                                "characters)"]})
    return number


def _unique_code(session: Session) -> str:
    while True:
        code = credentials.new_verification_code()
        if session.scalar(select(Certificate.id).where(Certificate.verification_code == code)) \
                is None:
            return code


def _create(session: Session, data: dict, enrolment_id, ags: str, keyring, issuer: Issuer,
            supersedes: str | None = None) -> Certificate:
    issued_at = now()
    year = calendar_day(issued_at).year  # a certificate of New Year's night counts in the new year
    sequence = _next_number(session, data["programme_code"], year)
    number = certificate_number(data["programme_code"], year, sequence)
    code = _unique_code(session)
    url = issuer.verification_url(code)
    kid, key = keyring.current()
    badge = credentials.open_badge(data, number, url, issued_at,
                                   {"name": issuer.name, "url": issuer.url})
    certificate = Certificate(
        number=number, enrolment_id=enrolment_id, ags=ags,
        programme_code=data["programme_code"], verification_code=code, status="valid",
        data=data, issued_at=issued_at, key_id=kid,
        credential_jws=credentials.sign_jws(badge, kid, key), supersedes=supersedes)
    session.add(certificate)
    session.flush()
    _emit_about(session, certificate, "certificate_issued", {
        "enrolment_id": enrolment_id, "certificate_number": number,
        "verification_url": url, "issued_at": issued_at})
    return certificate


def issue(session: Session, payload: dict, keyring, issuer: Issuer) -> Certificate | None:
    """One certificate per completed enrolment; a repeated event issues nothing new, nor one
    about an enrolment whose participant was erased."""
    existing = session.execute(select(Certificate).where(
        Certificate.enrolment_id == payload["enrolment_id"],
        Certificate.status != "superseded")).scalar_one_or_none()
    if existing is not None:
        return existing
    if privacy.is_erased(session, payload["enrolment_id"]):
        return None  # a late or replayed completion of an erased participant: nothing
    participant = payload["participant"]
    salt = secrets.token_hex(16)
    data = {
        "given_name": participant["given_name"], "family_name": participant["family_name"],
        "email_hash": credentials.identity_hash(participant["email"], salt), "salt": salt,
        "municipality_name": payload["municipality_name"], "ags": payload["ags"],
        "programme_code": payload["programme_code"],
        "programme_name": payload["programme_name"], "role_name": payload["role_name"],
        "course_title": payload["course_title"], "provider_name": payload["provider_name"],
        "location": payload["location"], "completed_on": payload["completed_on"].isoformat(),
        "modules": [{"number": m["number"], "title": m["title"], "date": m["date"].isoformat()}
                    for m in payload["modules"]],
    }
    if payload.get("milestones"):  # a coaching programme: the milestones reached
        data["milestones"] = [{"title": m["title"], "reached_on": m["reached_on"].isoformat()}
                              for m in payload["milestones"]]
    return _create(session, data, payload["enrolment_id"], payload["ags"], keyring, issuer)


def by_number(session: Session, number: str, ags: str | None = None) -> Certificate:
    certificate = session.scalar(select(Certificate).where(Certificate.number == number))
    if certificate is None or (ags is not None and certificate.ags != ags):
        raise NotFound("no such certificate", {"number": ["unknown certificate"]})
    return certificate


def holder(certificate: Certificate) -> str | None:
    """The holder's name as the certificate states it; None once their data was erased."""
    if certificate.holder_erased_at is not None:
        return None
    return f"{certificate.data['given_name']} {certificate.data['family_name']}"


def _erasure(certificate: Certificate) -> dict:
    erased = certificate.holder_erased_at
    return {"holder_erased": erased is not None,
            "holder_erased_at": erased.isoformat() if erased else None}


def summary(certificate: Certificate) -> dict:
    data = certificate.data
    erased = certificate.holder_erased_at is not None
    return {
        "number": certificate.number, "status": certificate.status,
        "enrolment_id": str(certificate.enrolment_id),
        "participant": holder(certificate), **_erasure(certificate),
        "municipality": data["municipality_name"], "programme": data["programme_name"],
        "role_name": data["role_name"], "course_title": data["course_title"],
        "provider": data["provider_name"], "location": data["location"],
        "completed_on": data["completed_on"], "modules": data["modules"],
        "milestones": data.get("milestones", []),
        "issued_at": certificate.issued_at.isoformat(),
        "revoked_at": certificate.revoked_at.isoformat() if certificate.revoked_at else None,
        "revocation_reason": certificate.revocation_reason,
        "superseded_by": certificate.superseded_by, "supersedes": certificate.supersedes,
        "credential": None if erased else certificate.credential_jws,
    }


def render_pdf(certificate: Certificate, issuer: Issuer) -> bytes:
    if certificate.holder_erased_at is not None:
        raise Gone("the holder's data has been erased: the certificate's PDF is no longer "
                   "available (its number still verifies)",
                   {"number": ["holder's data erased"]})
    return pdf.render(certificate.data, certificate.number,
                      issuer.verification_url(certificate.verification_code),
                      certificate.verification_code, issuer.name,
                      calendar_day(certificate.issued_at))


def verify_code(session: Session, code: str) -> dict:
    """What the public verification page says. Unknown and malformed codes look the same."""
    normal = credentials.normalise_code(code)
    certificate = None if normal is None else session.scalar(
        select(Certificate).where(Certificate.verification_code == normal))
    if certificate is None:
        return {"status": "unknown"}
    data = certificate.data
    return {"status": certificate.status, "number": certificate.number,
            "participant": holder(certificate), **_erasure(certificate),
            "municipality": data["municipality_name"], "programme": data["programme_name"],
            "role_name": data["role_name"], "course_title": data["course_title"],
            "provider": data["provider_name"], "completed_on": data["completed_on"],
            "issued_at": certificate.issued_at.isoformat(),
            "revoked_at": certificate.revoked_at.isoformat() if certificate.revoked_at else None,
            "revocation_reason": certificate.revocation_reason,
            "superseded_by": certificate.superseded_by}


def verify_presented(session: Session, token: str, jwks: dict) -> dict:
    try:
        header, payload = credentials.verify_jws(token, jwks)
    except credentials.InvalidCredential as exc:
        return {"valid": False, "reason": str(exc)}
    number = next((e.get("description") for e in payload.get("evidence", [])), None)
    certificate = session.scalar(select(Certificate).where(Certificate.number == number)) \
        if number else None
    # Once the holder's data was erased, only the credential's digest is kept to compare.
    erased = certificate is not None and certificate.holder_erased_at is not None
    held = privacy.credential_digest(token) if erased else token.strip()
    if certificate is None or certificate.credential_jws != held:
        return {"valid": False, "reason": "signature valid but no such certificate issued here",
                "key_id": header.get("kid")}
    return {"valid": certificate.status == "valid", "status": certificate.status,
            "number": certificate.number, "key_id": header["kid"], **_erasure(certificate),
            "revoked_at": certificate.revoked_at.isoformat() if certificate.revoked_at else None,
            "revocation_reason": certificate.revocation_reason,
            "superseded_by": certificate.superseded_by}


def _emit_about(session: Session, certificate: Certificate, event_type: str, payload: dict):
    """An event about an enrolment's certificate, numbered per enrolment (a re-issue continues
    the count), so that enrolment applies only newer ones."""
    held = session.scalar(select(func.max(Certificate.version)).where(
        Certificate.enrolment_id == certificate.enrolment_id)) or 0
    emit_numbered(session, certificate, event_type, payload, after=held)


def revoke(session: Session, number: str, reason: str, revoked_by: str,
           provider_name: str | None = None) -> Certificate:
    certificate = session.execute(select(Certificate).where(Certificate.number == number)
                                  .with_for_update()).scalar_one_or_none()
    if certificate is None or (provider_name is not None
                               and certificate.data["provider_name"] != provider_name):
        raise NotFound("no such certificate", {"number": ["unknown certificate"]})
    if certificate.status == "revoked":
        return certificate
    if certificate.status == "superseded":
        raise RuleViolation("a superseded certificate is no longer current; revoke "
                            f"{certificate.superseded_by}", {"number": ["superseded"]})
    certificate.status = "revoked"
    certificate.revoked_at = now()
    certificate.revocation_reason = reason
    certificate.revoked_by = revoked_by
    _emit_about(session, certificate, "certificate_revoked", {
        "enrolment_id": certificate.enrolment_id, "certificate_number": certificate.number,
        "reason": reason, "revoked_at": certificate.revoked_at})
    return certificate


def reissue(session: Session, number: str, given_name: str, family_name: str, keyring,
            issuer: Issuer) -> Certificate:
    """A corrected name gets a new certificate; the old one stays, marked superseded."""
    old = session.execute(select(Certificate).where(Certificate.number == number)
                          .with_for_update()).scalar_one_or_none()
    if old is None:
        raise NotFound("no such certificate", {"number": ["unknown certificate"]})
    if old.status != "valid":
        raise RuleViolation(f"only a valid certificate can be re-issued; this one is {old.status}",
                            {"number": [old.status]})
    if old.holder_erased_at is not None:
        raise RuleViolation("the holder's data has been erased: nothing to re-issue",
                            {"number": ["holder's data erased"]})
    old.status = "superseded"
    session.flush()
    data = dict(old.data, given_name=given_name, family_name=family_name)
    new = _create(session, data, old.enrolment_id, old.ags, keyring, issuer,
                  supersedes=old.number)
    old.superseded_by = new.number
    return new
