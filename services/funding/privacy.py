"""What funding holds about a participant, and their erasure. Plain functions, no nameko.

Funding never held a name or an address: a funding and its ledger entries know the enrolment
by its id, the municipality by its AGS. They stay as they are after an erasure (the public
purse must account for every euro); the service only keeps the marker, so an access request
and the ledger can say that the person behind an enrolment was erased.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common import privacy
from services.funding.domain import ledger_row
from services.funding.models import ErasedEnrolment, Funding, FundingProgramme, LedgerEntry


def participant_erased(session: Session, payload: dict):
    privacy.mark_erased(session, ErasedEnrolment.__table__, payload)


def participant_data(session: Session, enrolment_ids) -> dict:
    """The funding decisions concerning these enrolments and their ledger entries."""
    ids = privacy.as_uuids(enrolment_ids)
    if not ids:
        return {"fundings": [], "ledger_entries": []}
    codes = dict(session.execute(select(FundingProgramme.programme_id, FundingProgramme.code))
                 .all())
    fundings = session.scalars(select(Funding).where(Funding.enrolment_id.in_(ids))
                               .order_by(Funding.confirmed_at)).all()
    entries = session.scalars(select(LedgerEntry).where(LedgerEntry.enrolment_id.in_(ids))
                              .order_by(LedgerEntry.position)).all()
    return {
        "fundings": [{"enrolment_id": str(f.enrolment_id),
                      "programme_code": codes.get(f.programme_id), "ags": f.ags,
                      "state": f.state, "amount_cents": f.amount_cents,
                      "confirmed_at": f.confirmed_at.isoformat(),
                      "released_at": f.released_at.isoformat() if f.released_at else None}
                     for f in fundings],
        "ledger_entries": [dict(ledger_row(e), programme_code=codes.get(e.programme_id))
                           for e in entries]}
