"""Certificates of erased participants, and what an access request is shown. No nameko.

A certificate stays (third parties verify it by its code or its signed credential): its number,
status, revocation and the course facts. What names the holder goes: the name, the salted hash
of the address and its salt from the stored data, the PDF (no longer rendered), and the signed
credential, of which only its SHA-256 is kept, so a copy the holder still presents verifies.
"""
from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from services.certificates.models import Certificate, ErasedEnrolment
from services.common import privacy

HOLDER_FIELDS = ("given_name", "family_name", "email_hash", "salt")
DIGEST_PREFIX = "sha256:"


def credential_digest(jws: str) -> str:
    return DIGEST_PREFIX + hashlib.sha256(jws.strip().encode("ascii", "replace")).hexdigest()


def participant_erased(session: Session, payload: dict):
    privacy.lock_enrolments(session, [e["enrolment_id"] for e in payload["enrolments"]])
    ids = privacy.mark_erased(session, ErasedEnrolment.__table__, payload)
    for certificate in session.scalars(select(Certificate).where(
            Certificate.enrolment_id.in_(ids))):
        erase_holder(certificate, payload["erased_at"])


def erase_holder(certificate: Certificate, moment):
    """Idempotent: a certificate erased before stays as it is."""
    if certificate.holder_erased_at is not None:
        return
    certificate.data = {k: v for k, v in certificate.data.items() if k not in HOLDER_FIELDS}
    flag_modified(certificate, "data")
    certificate.credential_jws = credential_digest(certificate.credential_jws)
    certificate.holder_erased_at = moment


def is_erased(session: Session, enrolment_id) -> bool:
    """Asked before a certificate is issued, under the lock an erasure of the enrolment
    takes too: either the erasure sees the certificate or the issue sees the marker."""
    privacy.lock_enrolments(session, [enrolment_id])
    return bool(privacy.erased_ids(session, ErasedEnrolment.__table__, [enrolment_id]))


def participant_data(session: Session, enrolment_ids, summary) -> dict:
    ids = privacy.as_uuids(enrolment_ids)
    if not ids:
        return {"certificates": []}
    found = session.scalars(select(Certificate).where(Certificate.enrolment_id.in_(ids))
                            .order_by(Certificate.issued_at)).all()
    return {"certificates": [summary(c) for c in found]}
