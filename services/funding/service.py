"""Entrypoints of the funding service: events in, decisions out; RPC for state and operators."""
from __future__ import annotations

import csv
import io
import logging

from nameko.dependency_providers import Config
from nameko.timer import timer
from sqlalchemy import func, select, text

from services.common.clock import calendar_day
from services.common.db import Database
from services.common.callers import GATEWAY, MUNICIPALITY, OPERATOR, PUBLIC
from services.common.entrypoints import GroupCommits, Operator, event_handler, rpc
from services.common.events import parse_event
from services.common.logs import LogContext
from services.common.metrics import Metrics
from services.common.outbox import Together, handle_in_group, handle_once
from services.common.schemas import load
from services.funding import domain, privacy, schemas
from services.funding.models import (
    Funding,
    FundingProgramme,
    InboxRecord,
    OutboxMessage,
)

log = logging.getLogger(__name__)


def _with_key(decision):
    """Funding decisions take the payload and the event id (the ledger's idempotency key)."""
    return lambda session, event: decision(session, event.payload, str(event.event_id))



def _confirmations(session, events) -> list[None]:
    """Seats confirmed (enrolment_created with a seat, enrolment_promoted) that queued up for
    one programme: decided together, in order. A waitlisted enrolment is funded once it gets
    its seat."""
    seats = [(e.payload, str(e.event_id), correlation_id) for e, correlation_id in events
             if e.event_type == "enrolment_promoted" or e.payload["status"] == "confirmed"]
    if seats:
        domain.decide_confirmations(session, seats)
    return [None] * len(events)


CONFIRMATIONS = Together(_confirmations)


def funding_figures(session) -> dict:
    rows = dict(session.execute(select(Funding.state, func.count()).group_by(Funding.state)).all())
    figures = {f"fundings_{state}": count for state, count in rows.items()}
    pool_left = 0
    for programme in session.scalars(select(FundingProgramme)):
        if programme.fee_cents is not None and programme.eligible_count is not None:
            pool_left += domain.figures(session, programme).pool_left
    figures["pool_left_cents"] = pool_left
    return figures


class FundingService:
    name = "funding"
    log_context = LogContext()
    metrics = Metrics(funding_figures)

    db = Database("funding", OutboxMessage, InboxRecord)
    config = Config()
    operator = Operator()
    # Decisions of one programme in the order their events were delivered, those that queued
    # up meanwhile together in one transaction. They wait for the programme's row lock anyway
    # (which PostgreSQL grants in no particular order), and a body's first enrolment must
    # take its guarantee; one lock and one COMMIT for many decisions lets funding keep up.
    group = GroupCommits()

    def _on(self, envelope, event_type, method, fn):
        event = parse_event(envelope, event_type)
        handle_in_group(self.group, self.db, event.payload["programme_id"], event,
                        f"{self.name}.{method}", _with_key(fn))

    @event_handler("enrolment", "programme_published")
    def on_programme_published(self, envelope):
        self._on(envelope, "programme_published", "on_programme_published",
                 lambda s, payload, key: domain.programme_published(s, payload))

    def _on_confirmation(self, envelope, event_type, method):
        event = parse_event(envelope, event_type)
        handle_in_group(self.group, self.db, event.payload["programme_id"], event,
                        f"{self.name}.{method}", CONFIRMATIONS)

    @event_handler("enrolment", "enrolment_created")
    def on_enrolment_created(self, envelope):
        self._on_confirmation(envelope, "enrolment_created", "on_enrolment_created")

    @event_handler("enrolment", "enrolment_promoted")
    def on_enrolment_promoted(self, envelope):
        self._on_confirmation(envelope, "enrolment_promoted", "on_enrolment_promoted")

    @event_handler("enrolment", "enrolment_cancelled")
    def on_enrolment_cancelled(self, envelope):
        self._on(envelope, "enrolment_cancelled", "on_enrolment_cancelled",
                 domain.enrolment_cancelled)

    @event_handler("enrolment", "participant_erased")
    def on_participant_erased(self, envelope):
        event = parse_event(envelope, "participant_erased")
        self.db.run(handle_once, event, f"{self.name}.on_participant_erased",
                    lambda session, e: privacy.participant_erased(session, e.payload))

    @timer(interval=3600)
    def reserve_deadline_timer(self):
        """Hourly, so a deadline takes effect within the hour after its day has passed."""
        today = calendar_day(domain.now())
        for code in self.db.run(domain.due_programmes, today):
            self.db.run(domain.apply_reserve_deadline, code, today)
        self.send_due_reminders(today)

    def send_due_reminders(self, today):
        """The automatic campaigns (``remind_days_before`` of the policy) due today; a body
        already reminded in a campaign is not reminded again, so running hourly is harmless."""
        for code, campaign in self.db.run(domain.due_reminder_campaigns, today, commit=False):
            result = self.db.run(domain.remind_bodies_without_participant, code, campaign)
            if result["reminded"]:
                log.info("reminded %d bodies of %s (campaign %s)", result["reminded"], code,
                            campaign)

    # --- RPC ---------------------------------------------------------------------------------

    # Methods the office's pages read answer the gateway too: it calls them only for a member
    # of the office whose session the enrolment service has just confirmed.

    @rpc(OPERATOR, GATEWAY)
    def budget_state(self, programme_code):
        return self.db.run(domain.budget_state, str(programme_code))

    @rpc(MUNICIPALITY, OPERATOR)
    def body_state(self, programme_code, ags):
        data = load(schemas.BodyQueryIn(), {"programme_code": programme_code, "ags": ags})
        return self.db.run(domain.body_state, data["programme_code"], data["ags"])

    @rpc(OPERATOR)
    def ledger(self, programme_code, page=1, per_page=100):
        data = load(schemas.LedgerQueryIn(), {"programme_code": programme_code, "page": page,
                                              "per_page": per_page})
        return self.db.run(domain.ledger_page, data["programme_code"], data["page"],
                           data["per_page"])

    @rpc(OPERATOR, GATEWAY)
    def remind_bodies_without_participant(self, programme_code, campaign):
        """On demand: every eligible body without a confirmed participant, once per campaign."""
        data = load(schemas.RemindIn(), {"programme_code": programme_code, "campaign": campaign})
        return self.db.run(domain.remind_bodies_without_participant, data["programme_code"],
                           data["campaign"])

    @rpc(OPERATOR, GATEWAY)
    def reminders(self, programme_code):
        return self.db.run(domain.reminders, str(programme_code), commit=False)

    @rpc(OPERATOR, GATEWAY)
    def commitments(self, programme_code):
        return self.db.run(domain.commitments, str(programme_code), commit=False)

    @rpc(OPERATOR, GATEWAY)
    def ledger_csv(self, programme_code):
        return ledger_csv(self.db.run(domain.ledger_rows, str(programme_code)))

    @rpc(OPERATOR)
    def check_ledger(self, programme_code):
        return self.db.run(domain.check, str(programme_code))

    @rpc(OPERATOR)
    def set_policy(self, policy):
        self.operator.require()
        data = load(schemas.SetPolicyIn(), policy, "funding policy")
        self.db.run(domain.set_policy, data["programme_id"], data["programme_code"], data)
        return self.db.run(domain.budget_state, data["programme_code"]) \
            if self._ready(data["programme_code"]) else {"programme_code": data["programme_code"]}

    def _ready(self, code):
        try:
            self.db.run(domain.budget_state, code)
            return True
        except domain.NotReady:
            return False

    @rpc(OPERATOR)
    def change_budget(self, programme_code, budget_cents, reason):
        self.operator.require()
        data = load(schemas.BudgetChangeIn(), {"programme_code": programme_code,
                                               "budget_cents": budget_cents, "reason": reason})
        return self.db.run(domain.change_budget, data["programme_code"], data["budget_cents"],
                           data["reason"])

    @rpc(OPERATOR)
    def apply_reserve_deadline(self, programme_code):
        self.operator.require()
        return self.db.run(domain.apply_reserve_deadline, str(programme_code))

    @rpc(OPERATOR)
    def participant_data(self, enrolment_ids):
        """For an access request: the funding decisions concerning these enrolments."""
        self.operator.require()
        ids = load(schemas.EnrolmentIdsIn(), {"enrolment_ids": enrolment_ids},
                   "enrolment ids")["enrolment_ids"]
        return self.db.run(privacy.participant_data, ids)

    @rpc(PUBLIC)
    def health(self):
        with self.db.transaction() as session:
            session.execute(text("SELECT 1"))
        return {"service": self.name, "database": "ok", "broker": "ok"}


def ledger_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["position", "created_at", "kind", "pot",
                                             "amount_cents", "enrolment_id", "ags", "reason",
                                             "idempotency_key"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
