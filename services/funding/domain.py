"""The funding rule of DESIGN.md, exactly.

Per programme: budget, fee per funded seat, guaranteed seats per eligible body, reserve date.
Each body's first ``guaranteed_per_body`` confirmed enrolments are funded from the reserve held
for them; further ones from the pool while it lasts, else they wait in order. Every movement of
money is a ledger entry with a deterministic idempotency key. Every decision for a programme is
taken under that programme's row lock, so several service instances agree.

Plain functions over an SQLAlchemy session; no nameko.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.clock import calendar_day
from services.common.errors import LotsenError, NotFound, RuleViolation
from services.common.outbox import (
    emit_numbered,
    event_row,
    insert_skipping_duplicates,
    write_together,
)
from services.funding.models import (
    EligibleBody,
    Funding,
    FundingProgramme,
    LedgerEntry,
    Reminder,
)

FUNDED = ("guaranteed", "pool")
_PROGRAMMES, _FUNDINGS = FundingProgramme.__table__, Funding.__table__
_ELIGIBLE, _LEDGER = EligibleBody.__table__, LedgerEntry.__table__


class NotReady(LotsenError):
    """An event that depends on one not yet seen (the programme, its policy): retry later."""

    status = 409
    title = "Not ready"


def now() -> datetime:
    return datetime.now(timezone.utc)


# --- policy and programme copy ----------------------------------------------------------------

def set_policy(session: Session, programme_id, code: str, policy: dict) -> FundingProgramme:
    """Set a programme's policy (first time) or change it (budget changes go to the ledger)."""
    query = select(FundingProgramme).where(
        FundingProgramme.programme_id == programme_id).with_for_update()
    programme = session.execute(query).scalar_one_or_none()
    if programme is None:
        try:
            with session.begin_nested():
                session.add(FundingProgramme(
                    programme_id=programme_id, code=code, guaranteed_per_body=1,
                    granted_guaranteed_cents=0, granted_pool_cents=0, confirmations=0))
        except IntegrityError:
            pass  # programme_published made the row at the same moment: take that one
        programme = session.execute(query).scalar_one()
    if programme.fee_cents is not None and (
            policy["fee_cents"] != programme.fee_cents
            or policy["guaranteed_per_body"] != programme.guaranteed_per_body):
        if programme.granted_guaranteed_cents or programme.granted_pool_cents:
            raise RuleViolation("fee and guaranteed seats cannot change once money is granted",
                                {"fee_cents": ["fixed after the first grant"]})
    programme.fee_cents = policy["fee_cents"]
    programme.guaranteed_per_body = policy["guaranteed_per_body"]
    programme.reserve_until = policy["reserve_until"]
    if "remind_days_before" in policy:
        programme.remind_days_before = sorted(set(policy["remind_days_before"]), reverse=True)
    old_budget = programme.budget_cents or 0
    programme.budget_cents = policy["budget_cents"]
    _check_budget_covers_guarantees(session, programme)
    if policy["budget_cents"] != old_budget:
        _ledger(session, programme, "budget_change", "budget", policy["budget_cents"] - old_budget,
                key=f"budget:{programme.programme_id}:{uuid.uuid4()}",
                reason=policy.get("reason") or ("initial budget" if not old_budget else None))
    _fund_waiting(session, programme, f"policy:{uuid.uuid4()}")
    return programme


def change_budget(session: Session, code: str, new_budget_cents: int, reason: str) -> dict:
    programme = _programme_by_code(session, code, lock=True)
    if not reason:
        raise RuleViolation("a budget change needs a reason", {"reason": ["required"]})
    if programme.fee_cents is None:
        raise RuleViolation(f"programme {code} has no funding policy yet: set one first "
                            "(lotsen funding policy)", {"programme_code": ["no policy"]})
    policy = {"fee_cents": programme.fee_cents, "guaranteed_per_body": programme.guaranteed_per_body,
              "reserve_until": programme.reserve_until, "budget_cents": new_budget_cents,
              "reason": reason}
    set_policy(session, programme.programme_id, programme.code, policy)
    if programme.eligible_count is None:  # not yet published to funding: no figures yet
        return {"programme_code": code, "budget_cents": new_budget_cents,
                "eligible_bodies": None}
    return budget_state(session, code)


def _check_budget_covers_guarantees(session: Session, programme: FundingProgramme):
    """What is granted plus the reserve for every eligible body's guaranteed seats must fit
    in the budget: the pool never goes below zero."""
    granted = programme.granted_guaranteed_cents + programme.granted_pool_cents
    if programme.budget_cents < granted:
        raise RuleViolation("the budget cannot go below what is already granted",
                            {"budget_cents": [f"at least {granted}"]})
    if programme.eligible_count is not None and programme.fee_cents is not None:
        shortfall = -figures(session, programme).pool_left
        if shortfall > 0:
            raise RuleViolation(
                "the budget does not cover the guaranteed seats of every eligible body",
                {"budget_cents": [f"at least {programme.budget_cents + shortfall} for "
                                  f"{programme.eligible_count} eligible bodies"]})


def programme_published(session: Session, payload: dict):
    programme = session.execute(select(FundingProgramme).where(
        FundingProgramme.programme_id == payload["programme_id"]).with_for_update()
    ).scalar_one_or_none()
    if programme is None:
        programme = FundingProgramme(programme_id=payload["programme_id"], code=payload["code"],
                                     guaranteed_per_body=1, granted_guaranteed_cents=0,
                                     granted_pool_cents=0, confirmations=0)
        session.add(programme)
        session.flush()
    elif programme.revision is not None and programme.revision >= payload["revision"]:
        return  # an older or the same announcement
    announced = {b["ags"]: b["kind"] for b in payload["eligible_bodies"]}
    existing = set(session.scalars(select(EligibleBody.ags).where(
        EligibleBody.programme_id == programme.programme_id)))
    added = sorted(set(announced) - existing)
    removed = existing - set(announced)  # merged away, or no longer of an eligible kind
    if added:
        session.execute(EligibleBody.__table__.insert(), [
            {"programme_id": programme.programme_id, "ags": ags, "kind": announced[ags]}
            for ags in added])
    if removed:
        session.execute(delete(EligibleBody).where(
            EligibleBody.programme_id == programme.programme_id,
            EligibleBody.ags.in_(removed)))
    if (added or removed) and session.get_bind().dialect.name == "postgresql":
        # Fresh planner statistics for the bodies: until autovacuum gets round to them the
        # planner takes the table for a handful of rows, and the reserve's count of seats held
        # becomes a scan of every body per guaranteed seat (100 ms at 1,136 bodies). ANALYZE
        # counts the rows this transaction inserted.
        session.execute(text("ANALYZE eligible_bodies"))
    programme.revision = payload["revision"]
    programme.name = payload["name"]
    programme.funded = payload.get("funded", True)
    programme.eligible_count = len(announced)
    if programme.fee_cents is None:
        return  # no policy yet: its coverage is checked when it is set
    key = f"published:{programme.programme_id}:{payload['revision']}"
    if not programme.reserve_released_at:
        # A body new to the programme may already have enrolments funded from the pool or
        # waiting: its first ones take the guarantee now.
        for ags in added:
            while _guaranteed_held(session, programme, ags) < programme.guaranteed_per_body:
                if not _pass_guarantee(session, programme, ags, f"{key}:{ags}"):
                    break
    session.flush()
    _check_budget_covers_guarantees(session, programme)
    _fund_waiting(session, programme, key)  # reserve freed by bodies that left


class Unfunded(Exception):
    """A programme that funds nothing (announced so, and no policy set since)."""


def _no_policy(programme):
    if programme.funded is False:
        raise Unfunded(programme.code)
    raise NotReady(f"programme {programme.code} has no funding policy yet")


def _programme(session: Session, programme_id, lock: bool = True) -> FundingProgramme:
    query = select(FundingProgramme).where(FundingProgramme.programme_id == programme_id)
    programme = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if programme is None or programme.eligible_count is None:
        raise NotReady("programme not yet published to funding")
    if programme.fee_cents is None:
        _no_policy(programme)
    return programme


def _programme_by_code(session: Session, code: str, lock: bool = False) -> FundingProgramme:
    query = select(FundingProgramme).where(FundingProgramme.code == code)
    programme = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if programme is None:
        raise NotFound(f"no funding for programme {code} (unknown here, or no policy yet: "
                       "lotsen funding policy)", {"programme_code": ["unknown"]})
    return programme


# --- figures ----------------------------------------------------------------------------------

@dataclass
class Figures:
    budget: int
    granted_guaranteed: int
    granted_pool: int
    reserved: int

    @property
    def pool_left(self) -> int:
        return self.budget - self.granted_guaranteed - self.reserved - self.granted_pool


def figures(session: Session, programme: FundingProgramme) -> Figures:
    reserved = 0
    if not programme.reserve_released_at:
        # Guaranteed seats held by bodies that are eligible now (one that left the register
        # keeps what it was granted, but no longer counts against the reserve).
        held = session.scalar(select(func.count()).select_from(Funding).join(
            EligibleBody, (EligibleBody.programme_id == Funding.programme_id)
            & (EligibleBody.ags == Funding.ags)).where(
            Funding.programme_id == programme.programme_id, Funding.state == "guaranteed")) or 0
        seats = programme.eligible_count * programme.guaranteed_per_body - held
        reserved = max(0, seats) * programme.fee_cents
    return Figures(programme.budget_cents, programme.granted_guaranteed_cents,
                   programme.granted_pool_cents, reserved)


def _guaranteed_held(session: Session, programme: FundingProgramme, ags: str) -> int:
    return session.scalar(select(func.count()).select_from(Funding).where(
        Funding.programme_id == programme.programme_id, Funding.ags == ags,
        Funding.state == "guaranteed")) or 0


def _eligible(session: Session, programme: FundingProgramme, ags: str) -> bool:
    return session.get(EligibleBody, (programme.programme_id, ags)) is not None


# --- ledger -----------------------------------------------------------------------------------

def _ledger(session: Session, programme: FundingProgramme, kind: str, pot: str, amount: int,
            key: str, enrolment_id=None, ags=None, reason=None):
    session.add(LedgerEntry(programme_id=programme.programme_id, kind=kind, pot=pot,
                            amount_cents=amount, enrolment_id=enrolment_id, ags=ags,
                            idempotency_key=key, reason=reason))
    if pot == "guaranteed":
        programme.granted_guaranteed_cents -= amount
    elif pot == "pool":
        programme.granted_pool_cents -= amount


def _grant(session, programme, funding: Funding, kind: str, key: str):
    funding.state = kind
    funding.amount_cents = programme.fee_cents
    _ledger(session, programme, "grant", kind, -programme.fee_cents, f"{key}:grant:{kind}",
            funding.enrolment_id, funding.ags)
    emit_numbered(session, funding, "funding_granted", {
        "enrolment_id": funding.enrolment_id, "programme_id": programme.programme_id,
        "ags": funding.ags, "kind": kind, "amount_cents": programme.fee_cents})


def _wait(session, programme, funding: Funding):
    funding.state = "waiting"
    funding.amount_cents = 0
    emit_numbered(session, funding, "funding_waiting", {"enrolment_id": funding.enrolment_id,
                                      "programme_id": programme.programme_id, "ags": funding.ags})


# --- decisions --------------------------------------------------------------------------------

def _locked_policy(session: Session, programme_id):
    """The programme's row, locked, as a plain row (the decision below writes with Core)."""
    row = session.execute(_LOCK_PROGRAMME, {"programme_id": programme_id}).first()
    if row is None or row.eligible_count is None:
        raise NotReady("programme not yet published to funding")
    if row.fee_cents is None:
        _no_policy(row)
    return row


def enrolment_confirmed(session: Session, payload: dict, key: str) -> str:
    """A seat was confirmed: guaranteed seat, pool seat, or wait for funding, in that order."""
    return decide_confirmations(session, [(payload, key, None)])[0]


def decide_confirmations(session: Session, confirmations: list[tuple]) -> list[str]:
    """Confirmed seats of one programme, ``(payload, key, correlation id)`` each, decided in
    order as ``enrolment_confirmed`` decides one: guaranteed seat, pool seat, or wait.

    However many there are, in few statements: the programme's row lock, one read of the
    fundings they may have already, one of their bodies' eligibility and guaranteed seats held,
    the reserve still held if one needs the pool, and one write of every funding, ledger entry
    and event with the programme's new totals. Under the lock nobody else decides for this
    programme, so what the earlier ones in the list change is carried forward here."""
    try:
        programme = _locked_policy(session, confirmations[0][0]["programme_id"])
    except Unfunded:
        return ["unfunded"] * len(confirmations)
    programme_id, fee = programme.programme_id, programme.fee_cents
    enrolment_ids = list({p["enrolment_id"] for p, _, _ in confirmations})
    bodies = list({p["ags"] for p, _, _ in confirmations})
    states = dict(session.execute(_STATES, {"ids": enrolment_ids}).all())
    held = dict(session.execute(_ELIGIBLE_AND_HELD, {"programme_id": programme_id,
                                                     "bodies": bodies}).all())
    guaranteeing = not programme.reserve_released_at
    granted = {"guaranteed": programme.granted_guaranteed_cents,
               "pool": programme.granted_pool_cents}
    reserve = None  # the reserve still held, read once if a decision needs the pool
    new_guarantees = 0  # granted in this run, not yet in the database
    counted = programme.confirmations
    writes, outcomes = [], []
    moment = now()
    for payload, key, correlation_id in confirmations:
        enrolment_id, ags = payload["enrolment_id"], payload["ags"]
        if enrolment_id in states:
            outcomes.append(states[enrolment_id])  # seen before (or cancelled before)
            continue
        if guaranteeing and ags in held and held[ags] < programme.guaranteed_per_body:
            kind = "guaranteed"
        else:
            if reserve is None:
                reserve = max(0, figures(session, programme).reserved - new_guarantees * fee)
            pool_left = programme.budget_cents - granted["guaranteed"] - granted["pool"] - reserve
            kind = "pool" if pool_left >= fee else None
        if kind == "guaranteed":
            held[ags] += 1  # an eligible body: its seat leaves the reserve
            new_guarantees += 1
            if reserve is not None:
                reserve = max(0, reserve - fee)
        if kind:
            granted[kind] += fee
        counted += 1
        writes.append((_FUNDINGS, {
            "enrolment_id": enrolment_id, "programme_id": programme_id, "ags": ags,
            "sequence": counted, "state": kind or "waiting",
            "amount_cents": fee if kind else 0, "confirmed_at": moment, "version": 1}))
        if kind:
            writes.append((_LEDGER, {
                "programme_id": programme_id, "kind": "grant", "pot": kind,
                "amount_cents": -fee, "enrolment_id": enrolment_id, "ags": ags,
                "idempotency_key": f"{key}:grant:{kind}", "created_at": moment}))
            writes.append(event_row(session, "funding_granted", {
                "enrolment_id": enrolment_id, "programme_id": programme_id, "ags": ags,
                "kind": kind, "amount_cents": fee, "sequence": 1}, correlation_id))
        else:
            writes.append(event_row(session, "funding_waiting", {
                "enrolment_id": enrolment_id, "programme_id": programme_id, "ags": ags,
                "sequence": 1}, correlation_id))
        states[enrolment_id] = kind or "waiting"
        outcomes.append(kind or "waiting")
    if writes:
        # Every funding, ledger entry and event, and the programme's new totals: one round
        # trip on PostgreSQL.
        write_together(session, writes, then=(_NEW_TOTALS, {
            "programme": programme_id, "counted": counted,
            "guaranteed": granted["guaranteed"], "pool": granted["pool"]}))
    return outcomes


def _statements():
    """The decision's statements, built once (no building, no cache key per call)."""
    p, f, eb = _PROGRAMMES.c, _FUNDINGS.c, _ELIGIBLE.c
    lock = select(_PROGRAMMES).where(p.programme_id == bindparam("programme_id")) \
        .with_for_update()
    states = select(f.enrolment_id, f.state).where(
        f.enrolment_id.in_(bindparam("ids", expanding=True)))
    held = select(func.count()).select_from(_FUNDINGS).where(
        f.programme_id == eb.programme_id, f.ags == eb.ags,
        f.state == "guaranteed").scalar_subquery()
    eligible_and_held = select(eb.ags, held).where(
        eb.programme_id == bindparam("programme_id"),
        eb.ags.in_(bindparam("bodies", expanding=True)))
    # (An UPDATE's parameters must not be named like its columns.)
    totals = update(_PROGRAMMES).where(p.programme_id == bindparam("programme")).values(
        confirmations=bindparam("counted"), granted_guaranteed_cents=bindparam("guaranteed"),
        granted_pool_cents=bindparam("pool"))
    return lock, states, eligible_and_held, totals


_LOCK_PROGRAMME, _STATES, _ELIGIBLE_AND_HELD, _NEW_TOTALS = _statements()


def enrolment_cancelled(session: Session, payload: dict, key: str) -> str | None:
    """Money back; a released guaranteed seat passes to the body's next enrolment; freed pool
    money funds whoever waits longest."""
    if payload["previous_status"] != "confirmed" and session.scalar(
            select(Funding.state).where(Funding.enrolment_id == payload["enrolment_id"])) is None:
        return None  # a waitlisted enrolment was never funded
    # The lock first, then the funding row as it is now: a decision that held the lock before
    # us may have changed it (passed a guarantee on to it, funded it from the pool).
    try:
        programme = _programme(session, payload["programme_id"])
    except Unfunded:
        return None
    funding = session.get(Funding, payload["enrolment_id"], populate_existing=True)
    if funding is None:
        # Cancelled before its confirmation reached us: remember, so it is never funded.
        programme.confirmations += 1
        session.add(Funding(enrolment_id=payload["enrolment_id"],
                            programme_id=programme.programme_id, ags=payload["ags"],
                            sequence=programme.confirmations, state="released", amount_cents=0,
                            released_at=now()))
        return "released"
    if funding.state == "released":
        return "released"
    previous = funding.state
    funding.state = "released"
    funding.released_at = now()
    amount = funding.amount_cents if previous in FUNDED else 0
    funding.amount_cents = 0
    if previous in FUNDED:
        _ledger(session, programme, "release", previous, amount, f"{key}:release",
                funding.enrolment_id, funding.ags)
    emit_numbered(session, funding, "funding_released", {"enrolment_id": funding.enrolment_id,
                                       "programme_id": programme.programme_id,
                                       "ags": funding.ags, "amount_cents": amount})
    session.flush()
    if previous == "guaranteed" and not programme.reserve_released_at \
            and _eligible(session, programme, funding.ags):  # not a body that left the register
        _pass_guarantee(session, programme, funding.ags, key)
    _fund_waiting(session, programme, key)
    return previous


def _pass_guarantee(session: Session, programme: FundingProgramme, ags: str, key: str):
    successor = session.execute(select(Funding).where(
        Funding.programme_id == programme.programme_id, Funding.ags == ags,
        Funding.state.in_(("pool", "waiting"))).order_by(Funding.sequence).limit(1)
    ).scalar_one_or_none()
    if successor is None:
        return False  # the seat goes back to the reserve
    if successor.state == "pool":
        successor.state = "guaranteed"
        _ledger(session, programme, "conversion", "pool", programme.fee_cents,
                f"{key}:convert:{successor.enrolment_id}:pool", successor.enrolment_id, ags)
        _ledger(session, programme, "conversion", "guaranteed", -programme.fee_cents,
                f"{key}:convert:{successor.enrolment_id}:guaranteed", successor.enrolment_id, ags)
        emit_numbered(session, successor, "funding_converted", {
            "enrolment_id": successor.enrolment_id, "programme_id": programme.programme_id,
            "ags": ags, "kind": "guaranteed"})
    else:
        _grant(session, programme, successor, "guaranteed",
               f"{key}:successor:{successor.enrolment_id}")
    session.flush()
    return True


def _fund_waiting(session: Session, programme: FundingProgramme, key: str) -> int:
    if programme.fee_cents is None or programme.eligible_count is None:
        return 0
    funded = 0
    while figures(session, programme).pool_left >= programme.fee_cents:
        waiting = session.execute(select(Funding).where(
            Funding.programme_id == programme.programme_id, Funding.state == "waiting")
            .order_by(Funding.sequence).limit(1)).scalar_one_or_none()
        if waiting is None:
            break
        _grant(session, programme, waiting, "pool", f"{key}:waiting:{waiting.enrolment_id}")
        session.flush()
        funded += 1
    return funded


def apply_reserve_deadline(session: Session, code: str, today: date | None = None) -> dict:
    """After the reserve date, unused reserve joins the pool and waiting enrolments are funded."""
    programme = _programme_by_code(session, code, lock=True)
    today = today or calendar_day(now())
    if programme.reserve_released_at or not programme.reserve_until \
            or today <= programme.reserve_until or programme.fee_cents is None \
            or programme.eligible_count is None:
        return {"programme_code": code, "released": False, "funded": 0}
    released = figures(session, programme).reserved
    programme.reserve_released_at = now()
    _ledger(session, programme, "reserve_release", "budget", 0,
            f"reserve:{programme.programme_id}", reason=f"{released} cents of unused reserve "
            "joined the pool")
    funded = _fund_waiting(session, programme, f"reserve:{programme.programme_id}")
    return {"programme_code": code, "released": True, "released_cents": released,
            "funded": funded}


def shortfall_for(session: Session, code: str, eligible_ags) -> int:
    """How many cents the budget would lack if exactly ``eligible_ags`` were eligible (0: it
    covers every guarantee); for checking a register update before it is announced."""
    programme = _programme_by_code(session, code)
    if programme.fee_cents is None or programme.reserve_released_at:
        return 0
    eligible = set(eligible_ags)
    per_body = programme.guaranteed_per_body
    counts: dict[str, dict[str, int]] = {}
    for ags, state, count in session.execute(
            select(Funding.ags, Funding.state, func.count()).where(
                Funding.programme_id == programme.programme_id,
                Funding.state.in_(("guaranteed", "pool"))).group_by(Funding.ags, Funding.state)):
        counts.setdefault(ags, {})[state] = count
    reserved = 0
    for ags in eligible:
        held = counts.get(ags, {}).get("guaranteed", 0)
        # A body's pool-funded seats convert to its guarantee without new money.
        converting = min(max(0, per_body - held), counts.get(ags, {}).get("pool", 0))
        reserved += max(0, per_body - held - converting) * programme.fee_cents
    granted = programme.granted_guaranteed_cents + programme.granted_pool_cents
    return max(0, granted + reserved - programme.budget_cents)


def due_programmes(session: Session, today: date) -> list[str]:
    return list(session.scalars(select(FundingProgramme.code).where(
        FundingProgramme.reserve_released_at.is_(None),
        FundingProgramme.reserve_until < today)))


# --- outreach -----------------------------------------------------------------------------------

CONFIRMED_STATES = ("guaranteed", "pool", "waiting")  # a confirmed participant, funded or not


def remind_bodies_without_participant(session: Session, code: str, campaign: str) -> dict:
    """Remind every eligible body that has no confirmed participant yet, once per campaign:
    a body reminded in this campaign before is not reminded again, however often it runs.

    One ``body_reminded`` event per body newly reminded; notifications mails its contact."""
    programme = _programme_by_code(session, code, lock=True)
    if programme.eligible_count is None:
        raise NotReady(f"programme {code} has not been published to funding yet")
    if programme.reserve_released_at is not None:
        raise RuleViolation("the reserve date has passed: no guarantee left to remind of",
                            {"programme_code": ["reserve already released"]})
    confirmed = select(Funding.ags).where(Funding.programme_id == programme.programme_id,
                                          Funding.state.in_(CONFIRMED_STATES))
    due = list(session.scalars(
        select(EligibleBody.ags).where(EligibleBody.programme_id == programme.programme_id,
                                       EligibleBody.ags.not_in(confirmed))
        .order_by(EligibleBody.ags)))
    moment = now()
    written = insert_skipping_duplicates(
        session, Reminder.__table__,
        [{"programme_id": programme.programme_id, "campaign": campaign, "ags": ags,
          "reminded_at": moment} for ags in due],
        ["programme_id", "campaign", "ags"], returning=[Reminder.ags]).all() if due else []
    events = [event_row(session, "body_reminded", {
        "programme_id": programme.programme_id, "programme_code": programme.code,
        "programme_name": programme.name or programme.code, "ags": ags, "campaign": campaign,
        "reserve_until": programme.reserve_until, "reminded_at": moment}) for (ags,) in written]
    if events:
        session.execute(insert(events[0][0]), [row for _, row in events])
    return {"programme_code": code, "campaign": campaign, "reminded": len(written),
            "already_reminded": len(due) - len(written)}


def due_reminder_campaigns(session: Session, today: date) -> list[tuple[str, str]]:
    """(programme code, campaign) of every automatic reminder due today: from the configured
    number of days before the reserve date until that date."""
    due = []
    for programme in session.scalars(select(FundingProgramme).where(
            FundingProgramme.reserve_released_at.is_(None),
            FundingProgramme.reserve_until >= today,
            FundingProgramme.eligible_count.is_not(None))):
        for days in programme.remind_days_before or ():
            if today >= programme.reserve_until - timedelta(days=days):
                due.append((programme.code, f"reserve-{programme.reserve_until:%Y%m%d}-{days}d"))
    return due


def reminders(session: Session, code: str) -> list[dict]:
    """Who was reminded in which campaign, and when."""
    programme = _programme_by_code(session, code)
    rows = session.execute(select(Reminder.ags, Reminder.campaign, Reminder.reminded_at).where(
        Reminder.programme_id == programme.programme_id)
        .order_by(Reminder.ags, Reminder.reminded_at)).all()
    return [{"ags": ags, "campaign": campaign, "reminded_at": at.isoformat()}
            for ags, campaign, at in rows]


# --- queries ----------------------------------------------------------------------------------

def budget_state(session: Session, code: str) -> dict:
    programme = _programme_by_code(session, code)
    if programme.fee_cents is None or programme.eligible_count is None:
        raise NotReady(f"programme {code} is not fully set up for funding")
    f = figures(session, programme)
    waiting = session.scalar(select(func.count()).select_from(Funding).where(
        Funding.programme_id == programme.programme_id, Funding.state == "waiting"))
    fee = programme.fee_cents
    return {
        "programme_code": code, "budget_cents": f.budget, "fee_cents": fee,
        "guaranteed_per_body": programme.guaranteed_per_body,
        "eligible_bodies": programme.eligible_count,
        "reserve_until": programme.reserve_until.isoformat() if programme.reserve_until else None,
        "reserve_released": programme.reserve_released_at is not None,
        "granted_guaranteed_cents": f.granted_guaranteed, "granted_pool_cents": f.granted_pool,
        "reserved_cents": f.reserved, "pool_left_cents": f.pool_left,
        "pool_seats_left": max(0, f.pool_left) // fee,
        "seats_still_fundable": (f.budget - f.granted_guaranteed - f.granted_pool) // fee,
        "fundable_seats_total": f.budget // fee, "waiting": waiting,
    }


def body_state(session: Session, code: str, ags: str) -> dict:
    programme = _programme_by_code(session, code)
    rows = session.execute(select(Funding).where(
        Funding.programme_id == programme.programme_id, Funding.ags == ags)
        .order_by(Funding.sequence)).scalars().all()
    held = sum(1 for r in rows if r.state == "guaranteed")
    return {"programme_code": code, "ags": ags,
            "eligible": _eligible(session, programme, ags),
            "guaranteed_seats": programme.guaranteed_per_body, "guaranteed_used": held,
            "guaranteed_free": max(0, programme.guaranteed_per_body - held)
            if not programme.reserve_released_at else 0,
            "enrolments": [{"enrolment_id": str(r.enrolment_id), "state": r.state,
                            "amount_cents": r.amount_cents} for r in rows]}


def commitments(session: Session, code: str, today: date | None = None) -> dict:
    """Money granted (net of releases and conversions) at the end of each week, per pot, from
    the first ledger entry's week to this one: the office's chart of money committed."""
    programme = _programme_by_code(session, code)
    rows = session.execute(
        select(LedgerEntry.created_at, LedgerEntry.pot, LedgerEntry.amount_cents)
        .where(LedgerEntry.programme_id == programme.programme_id,
               LedgerEntry.pot.in_(("guaranteed", "pool")))
        .order_by(LedgerEntry.position)).all()
    today = today or calendar_day(now())
    changes: dict[date, dict[str, int]] = {}
    for created_at, pot, amount in rows:
        day = calendar_day(created_at)
        week = day - timedelta(days=day.weekday())
        changes.setdefault(week, {"guaranteed": 0, "pool": 0})[pot] -= amount
    series = []
    if changes:
        week, last = min(changes), today - timedelta(days=today.weekday())
        totals = {"guaranteed": 0, "pool": 0}
        while week <= max(last, max(changes)):
            for pot, change in changes.get(week, {}).items():
                totals[pot] += change
            series.append({"week_starting": week.isoformat(),
                           "guaranteed_cents": totals["guaranteed"], "pool_cents": totals["pool"],
                           "committed_cents": totals["guaranteed"] + totals["pool"]})
            week += timedelta(days=7)
    return {"programme_code": code, "budget_cents": programme.budget_cents, "weekly": series}


def ledger_page(session: Session, code: str, page: int, per_page: int) -> dict:
    programme = _programme_by_code(session, code)
    query = select(LedgerEntry).where(LedgerEntry.programme_id == programme.programme_id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    entries = session.execute(query.order_by(LedgerEntry.position)
                              .offset((page - 1) * per_page).limit(per_page)).scalars()
    return {"programme_code": code, "total": total, "page": page, "per_page": per_page,
            "items": [ledger_row(e) for e in entries]}


def ledger_row(entry: LedgerEntry) -> dict:
    return {"position": entry.position, "created_at": entry.created_at.isoformat(),
            "kind": entry.kind, "pot": entry.pot, "amount_cents": entry.amount_cents,
            "enrolment_id": str(entry.enrolment_id) if entry.enrolment_id else None,
            "ags": entry.ags, "reason": entry.reason, "idempotency_key": entry.idempotency_key}


def ledger_rows(session: Session, code: str) -> list[dict]:
    programme = _programme_by_code(session, code)
    return [ledger_row(e) for e in session.execute(select(LedgerEntry).where(
        LedgerEntry.programme_id == programme.programme_id)
        .order_by(LedgerEntry.position)).scalars()]


def check(session: Session, code: str) -> dict:
    """Recompute everything from the ledger and the fundings, and compare with the totals."""
    programme = _programme_by_code(session, code)
    # SUM of BIGINT is NUMERIC on PostgreSQL: back to int cents.
    sums = {pot: int(total) for pot, total in session.execute(
        select(LedgerEntry.pot, func.sum(LedgerEntry.amount_cents))
        .where(LedgerEntry.programme_id == programme.programme_id)
        .group_by(LedgerEntry.pot)).all()}
    held = {state: int(total or 0) for state, total in session.execute(
        select(Funding.state, func.sum(Funding.amount_cents))
        .where(Funding.programme_id == programme.programme_id)
        .group_by(Funding.state)).all()}
    per_body = session.execute(select(Funding.ags, func.count()).where(
        Funding.programme_id == programme.programme_id, Funding.state == "guaranteed")
        .group_by(Funding.ags)).all()
    lacking = session.execute(select(Funding.ags).where(
        Funding.programme_id == programme.programme_id,
        Funding.state.in_(("pool", "waiting")))).scalars().all()
    budget = programme.budget_cents or 0
    granted = programme.granted_guaranteed_cents + programme.granted_pool_cents
    problems = []
    if sum(sums.values()) != budget - granted:
        problems.append("ledger balance differs from budget minus granted")
    if sums.get("budget", 0) != budget:
        problems.append("budget entries do not sum to the budget")
    if -sums.get("guaranteed", 0) != programme.granted_guaranteed_cents \
            or (held.get("guaranteed") or 0) != programme.granted_guaranteed_cents:
        problems.append("guaranteed grants differ between ledger, fundings and totals")
    if -sums.get("pool", 0) != programme.granted_pool_cents \
            or (held.get("pool") or 0) != programme.granted_pool_cents:
        problems.append("pool grants differ between ledger, fundings and totals")
    if granted > budget:
        problems.append("more granted than the budget")
    over = [ags for ags, n in per_body if n > programme.guaranteed_per_body]
    if over:
        problems.append(f"bodies over their guarantee: {', '.join(sorted(over))}")
    if not programme.reserve_released_at:
        counts = dict(per_body)
        short = sorted({ags for ags in lacking if counts.get(ags, 0) < programme.guaranteed_per_body
                        and session.get(EligibleBody, (programme.programme_id, ags))})
        if short:
            problems.append(f"bodies without their guaranteed funding: {', '.join(short)}")
    return {"programme_code": code, "ok": not problems, "problems": problems,
            "balance_cents": sum(sums.values()), "granted_cents": granted}
