"""Data protection helpers every service shares: pseudonyms, the keyed address hash, and
scrubbing a participant out of stored event envelopes. No nameko here.

An erased participant's rows stay where the public purse or a certificate's verification
needs them, with the identifying values replaced: names by ``ERASED_NAME`` and the erasure's
pseudonym, the address by ``<pseudonym>@erased.invalid`` (a reserved top-level domain: no mail
can ever go there), the department by nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid

from sqlalchemy import Text, cast, or_, select, update
from sqlalchemy.orm import Session

ERASED_NAME = "gelöscht"
ERASED_DOMAIN = "erased.invalid"


def in_json_text(column, value: str):
    """A condition: the JSON ``column``, read as text, holds the string ``value``. The JSON
    type writes non-ASCII characters as ``\\u`` escapes, so an address such as
    ``jürgen@…`` is looked for in both spellings."""
    text = cast(column, Text)
    return or_(*(text.contains(form) for form in {value, json.dumps(value)[1:-1]}))


def as_uuids(ids) -> list[uuid.UUID]:
    """Enrolment ids as UUIDs, whether they came as strings (JSON, the CLI) or not."""
    return [i if isinstance(i, uuid.UUID) else uuid.UUID(str(i)) for i in ids]


def new_pseudonym() -> str:
    """Random, so it says nothing about the person (not derived from any of their data)."""
    return f"erased-{secrets.token_hex(6)}"


def pseudonym_email(pseudonym: str) -> str:
    return f"{pseudonym}@{ERASED_DOMAIN}"


def erased_participant(pseudonym: str) -> dict:
    """What stands for the participant once erased, in the shape of ``ParticipantSchema``."""
    return {"given_name": ERASED_NAME, "family_name": pseudonym,
            "email": pseudonym_email(pseudonym)}


def email_key(key: bytes, email: str) -> str:
    """A keyed hash of an address (HMAC-SHA256 with the service key): without the key nobody
    can test a guessed address against it, with it a repeated request is recognised."""
    return hmac.new(key, email.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()


def scrub_participant(value, pseudonym: str):
    """A JSON value with every ``participant`` object (and its department) replaced by the
    pseudonym; anything else as it was."""
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            if name == "participant" and isinstance(item, dict):
                out[name] = dict(erased_participant(pseudonym),
                                 **({"department": None} if "department" in item else {}))
            else:
                out[name] = scrub_participant(item, pseudonym)
        return out
    if isinstance(value, list):
        return [scrub_participant(item, pseudonym) for item in value]
    return value


def scrub_envelopes(session: Session, outbox_table, pseudonyms: dict,
                    key: str = "enrolment_id") -> int:
    """Replace the participant in every stored event (published or not) about the enrolments
    of ``pseudonyms`` (enrolment id -> the pseudonym of its erasure; or the ids under another
    payload ``key``, such as a Navigator's): the outbox keeps what a service published, which
    must not keep the person.

    Found by the enrolment id in the envelope's text, in one scan however many enrolments
    (both on PostgreSQL and SQLite); erasures are rare, the outbox is not read by id
    otherwise."""
    wanted = {str(i): p for i, p in pseudonyms.items()}
    if not wanted:
        return 0
    text = cast(outbox_table.c.envelope, Text)
    changed = 0
    for start in range(0, len(wanted), 200):
        chunk = list(wanted)[start:start + 200]
        rows = session.execute(select(outbox_table.c.position, outbox_table.c.envelope).where(
            or_(*[text.contains(i) for i in chunk]))).all()
        for position, envelope in rows:
            payload = envelope.get("payload") or {}
            pseudonym = wanted.get(str(payload.get(key)))
            if pseudonym is None:
                continue
            scrubbed = dict(envelope, payload=scrub_participant(payload, pseudonym))
            if scrubbed != envelope:
                session.execute(update(outbox_table)
                                .where(outbox_table.c.position == position)
                                .values(envelope=scrubbed))
                changed += 1
    return changed


def mark_erased(session: Session, marker_table, payload: dict) -> list:
    """Record the erased enrolments of a ``participant_erased`` payload (once each); returns
    their ids."""
    from services.common.outbox import insert_skipping_duplicates
    rows = [{"enrolment_id": e["enrolment_id"], "erasure_id": payload["erasure_id"],
             "erased_at": payload["erased_at"]} for e in payload["enrolments"]]
    if rows:  # a Navigator who never enrolled has none
        insert_skipping_duplicates(session, marker_table, rows, ["enrolment_id"])
    return [e["enrolment_id"] for e in payload["enrolments"]]


def erased_ids(session: Session, marker_table, enrolment_ids) -> set:
    """Which of these enrolments are marked erased."""
    ids = list(enrolment_ids)
    if not ids:
        return set()
    return set(session.scalars(select(marker_table.c.enrolment_id)
                               .where(marker_table.c.enrolment_id.in_(ids))))


def access_document(email: str, moment, enrolment: dict, funding: dict, certificates: dict,
                    mails: dict) -> dict:
    """The answer to an access request (Art. 15 DSGVO): what every service holds about the
    person, in one document. The same shape from the CLI (reading the databases) and from
    the operator RPC (asking the services)."""
    return {"subject": email.strip().lower(), "generated_at": moment.isoformat(),
            "enrolment": enrolment, "funding": funding, "certificates": certificates,
            "mails": mails}


def lock_enrolments(session: Session, enrolment_ids) -> None:
    """Serialise an erasure with whatever else writes a copy of these enrolments' data at
    the same time (PostgreSQL advisory locks until the transaction ends, taken in one order
    so two never wait for each other; SQLite has a single writer anyway)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    from sqlalchemy import text as sql
    for enrolment_id in sorted(as_uuids(enrolment_ids)):
        key = int.from_bytes(enrolment_id.bytes[:8], "big", signed=True)
        session.execute(sql("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
