"""Entrypoints of the notifications service, and the loop that delivers its notices."""
from __future__ import annotations

import base64
import logging
import threading
import uuid
from datetime import timedelta

import eventlet
from marshmallow import Schema, fields, validate
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.timer import timer
from sqlalchemy import func, select, text

from services.common import callers
from services.common import config as cfg
from services.common.db import Database
from services.common.callers import OPERATOR, PUBLIC
from services.common.clock import calendar_today
from services.common.entrypoints import GroupCommits, Operator, event_handler, rpc
from services.common.errors import ValidationFailed
from services.common.events import parse_event
from services.common.schemas import EnrolmentIdsIn, ags_field, load
from services.common.logs import LogContext
from services.common.metrics import Metrics
from services.common.outbox import handle_in_group, handle_once
from services.notifications import delivery, domain, privacy
from services.notifications.models import InboxRecord, Notice, OutboxMessage

log = logging.getLogger(__name__)


class ExportIn(EnrolmentIdsIn):
    email = fields.Email(load_default=None, allow_none=True)


EXPORT_IN = ExportIn()


class RecipientErasureIn(Schema):
    email = fields.Email(required=True)
    stand_in = fields.Email(required=True, validate=validate.Regexp(r".*@erased\.invalid$"))
    coach_ids = fields.List(fields.UUID(), load_default=list, validate=validate.Length(max=100))
    # a former contact's names, and the bodies' names they were the contact of (a shared
    # office may have been the contact of a whole Kreis)
    names = fields.List(fields.String(validate=validate.Length(min=1, max=200)),
                        load_default=list, validate=validate.Length(max=100))
    municipalities = fields.List(fields.String(validate=validate.Length(min=1, max=200)),
                                 load_default=list, validate=validate.Length(max=12_000))
    bodies = fields.List(ags_field(), load_default=list, validate=validate.Length(max=12_000))


RECIPIENT_ERASURE_IN = RecipientErasureIn()


ROUND_SIZE = 20  # notices per delivery round: also the most a crash can send twice
STOP = object()


def mail_settings(config: dict) -> dict:
    section = dict(config.get("MAIL") or {})
    section.setdefault("transport", "file")
    return section


def mail_figures(session) -> dict:
    rows = session.execute(select(Notice.status, func.count()).group_by(Notice.status))
    return {f"mails_{status}": count for status, count in rows}


class Mailer(DependencyProvider):
    """Sends due notices in the background, a round at a time: claim up to ``round_size``
    notices (one statement), send them (no transaction open), record the round (one
    transaction). Several instances share the work through leases.

    The crash window: a mail is recorded as sent when its round ends, so an instance that dies
    in the middle of a round (SIGKILL, power) leaves that round's mails leased but not marked;
    once the lease ends they go again, with the same Message-ID. At most ``round_size`` mails
    can arrive twice that way. A graceful stop finishes the round first."""

    def setup(self):
        config = self.container.config
        self.settings = mail_settings(config)
        self.service_key = callers.service_key(config)
        self.transport = delivery.transport_from(self.settings, cfg.lotsen_home(config))
        self.sender = (cfg.setting(self.settings, "sender_name", "Programmbüro Digitallotsen"),
                       cfg.setting(self.settings, "sender", "noreply@lotsen.example"))
        self.office_name = cfg.setting(self.settings, "office_name",
                                       "Ihr Programmbüro Kommunale Digitallotsen")
        self.max_attempts = int(cfg.setting(self.settings, "max_attempts", 8))
        self.base_delay = float(cfg.setting(self.settings, "base_delay_s", 5))
        self.max_delay = float(cfg.setting(self.settings, "max_delay_s", 600))
        self.poll = float(cfg.setting(self.settings, "poll_interval_s", 1.0))
        self.round_size = max(1, int(cfg.setting(self.settings, "round_size", ROUND_SIZE)))
        # Sent mails are deleted from the mail log (and their files) after this many days.
        self.log_retention_days = max(14, int(cfg.setting(self.settings, "log_retention_days",
                                                          90)))
        # Notices claimed by an instance that dies are sent by another once the lease ends. A
        # notice is only sent while a quarter of its lease is left, never after another
        # instance could have taken it over.
        self.lease_s = float(cfg.setting(self.settings, "lease_s", domain.LEASE_SECONDS))
        self.lease_margin = timedelta(seconds=self.lease_s / 4)
        self._wake = threading.Event()
        self._finished = threading.Event()
        self._finished.set()  # no loop running yet
        self._stopped = False
        self.sent = 0

    def start(self):
        self._finished.clear()
        self.container.spawn_managed_thread(self._loop, identifier="mail-delivery")

    def stop(self):
        """Let the round under way finish and be recorded (for at most a quarter of the lease,
        when sending stops anyway), rather than killing it half-way."""
        self._stopped = True
        self._wake.set()
        self._finished.wait(self.lease_margin.total_seconds())

    def kill(self):
        self._stopped = True
        self._wake.set()

    def wake(self):
        self._wake.set()

    def get_dependency(self, worker_ctx):
        return self

    @property
    def mail_dir(self):
        """Where mails are written as files (the embedded default), else None."""
        return getattr(self.transport, "directory", None)

    def subject(self, notice) -> str | None:
        return privacy.subject_line(notice, self.office_name)

    @property
    def handle(self):
        """The service's own database (the Database dependency beside this one)."""
        return next(d for d in self.container.dependencies if isinstance(d, Database)).handle

    def _loop(self):
        try:
            while not self._stopped:
                try:
                    done = self.deliver_due()
                except Exception as exc:
                    log.warning("mail delivery round failed (%s)", type(exc).__name__)
                    done = 0
                if done < self.round_size:  # a full round: more may be due at once
                    self._wake.wait(self.poll)
                    self._wake.clear()
        finally:
            self.transport.close()
            self._finished.set()

    def deliver_due(self, limit: int | None = None) -> int:
        try:
            return self._deliver(limit or self.round_size)
        finally:
            self.transport.end_round()

    def _deliver(self, limit: int) -> int:
        handle = self.handle
        sent, failures, forget = [], [], {}
        try:
            for notice in handle.run(domain.claim_due, limit, self.lease_s):
                if self._stopped:
                    break  # the rest waits for its lease to end (or for the next instance)
                outcome = self._send(notice)
                if outcome is None:
                    sent.append(notice.id)
                    kept = domain.without_secrets(notice)
                    if kept is not None:
                        forget[notice.id] = kept
                elif outcome is STOP:
                    break  # the rest of the batch waits for its lease to end, then goes again
                else:
                    failures.append(outcome)
        finally:
            if sent or failures:
                recorded = self._record(domain.record_round, sent, failures,
                                        self.max_attempts, self.base_delay, self.max_delay,
                                        forget)
                self.sent += len(sent)
                # A notice erased while its mail was on the way: its file goes too.
                privacy.remove_files(self.mail_dir, set(sent) - set(recorded or ()))
        return len(sent)

    def _send(self, notice):
        """Send one notice; None when it went out, else ``STOP`` or the failure to record."""
        notice_id, lease_until = notice.id, notice.lease_until
        try:
            attachment = self._attachment(notice)
            context = dict(notice.context, recipient_role=notice.recipient_role,
                           to_name=notice.to_name, office_name=self.office_name)
            message = delivery.build_message(notice, self.sender, context, attachment)
            # Only while the lease is ours, and never past it: after that another instance
            # may take the notice over.
            left = (lease_until - self.lease_margin - domain.now()).total_seconds()
            if left <= 0:
                return STOP
            with eventlet.Timeout(left, delivery.TransientFailure("lease running out")):
                self.transport.send(notice_id, message)
        except delivery.PermanentFailure as exc:
            log.error("notice %s (%s) refused permanently: %s", notice_id, notice.template, exc)
            return (notice_id, lease_until, str(exc), True)
        except Exception as exc:
            self.transport.close()  # whatever state the session is in, start afresh
            log.warning("notice %s (%s) not sent yet: %s", notice_id, notice.template,
                        type(exc).__name__)
            return (notice_id, lease_until, f"{type(exc).__name__}: {exc}", False)
        return None

    def _record(self, fn, *args):
        """Bookkeeping after a round must land: an unrecorded send goes out again once the
        lease ends. The records are safe to repeat, so a dropped connection is retried."""
        return self.handle.run(fn, *args, retry_lost_connection=True)

    def _attachment(self, notice):
        if not notice.certificate_number:
            return None
        config = cfg.rpc_client_config(self.container.config)
        assertion = callers.sign_assertion(self.service_key, self.container.service_name)
        with ServiceRpcProxy("certificates", config, timeout=20,
                             context_data={callers.ASSERTION_KEY: assertion}) as certificates:
            document = certificates.get_pdf(notice.certificate_number)
        return document["filename"], base64.b64decode(document["content_base64"])


class NotificationsService:
    name = "notifications"
    log_context = LogContext()
    metrics = Metrics(mail_figures)

    db = Database("notifications", OutboxMessage, InboxRecord, relay=False)
    group = GroupCommits()
    mailer = Mailer()
    config = Config()
    operator = Operator()

    def _on(self, envelope, event_type, fn):
        """Each event once (the inbox), its notices written in the same transaction. Events
        that queue up while a transaction runs are handled together in the next one: one
        inbox statement and one COMMIT for all of them; if that fails, each is tried alone."""
        event = parse_event(envelope, event_type)
        handle_in_group(self.group, self.db, "notices", event, f"{self.name}.{event_type}",
                        lambda session, e: fn(session, e.payload, str(e.event_id)))
        self.mailer.wake()

    @event_handler("enrolment", "municipality_registered")
    def on_municipality_registered(self, envelope):
        self._on(envelope, "municipality_registered", domain.municipality_registered)

    @event_handler("enrolment", "enrolment_created")
    def on_enrolment_created(self, envelope):
        self._on(envelope, "enrolment_created", domain.enrolment_created)

    @event_handler("enrolment", "enrolment_promoted")
    def on_enrolment_promoted(self, envelope):
        self._on(envelope, "enrolment_promoted", domain.enrolment_promoted)

    @event_handler("enrolment", "enrolment_cancelled")
    def on_enrolment_cancelled(self, envelope):
        self._on(envelope, "enrolment_cancelled", domain.enrolment_cancelled)

    @event_handler("enrolment", "course_cancelled")
    def on_course_cancelled(self, envelope):
        self._on(envelope, "course_cancelled", domain.course_cancelled)

    def _funding(self, envelope, event_type):
        self._on(envelope, event_type,
                 lambda s, payload, key: domain.funding_event(s, event_type, payload, key))

    @event_handler("funding", "funding_granted")
    def on_funding_granted(self, envelope):
        self._funding(envelope, "funding_granted")

    @event_handler("funding", "funding_waiting")
    def on_funding_waiting(self, envelope):
        self._funding(envelope, "funding_waiting")

    @event_handler("funding", "funding_released")
    def on_funding_released(self, envelope):
        self._funding(envelope, "funding_released")

    @event_handler("funding", "funding_converted")
    def on_funding_converted(self, envelope):
        self._funding(envelope, "funding_converted")

    @event_handler("funding", "body_reminded")
    def on_body_reminded(self, envelope):
        self._on(envelope, "body_reminded", domain.body_reminded)

    @event_handler("certificates", "certificate_issued")
    def on_certificate_issued(self, envelope):
        self._on(envelope, "certificate_issued", domain.certificate_issued)

    @event_handler("certificates", "certificate_revoked")
    def on_certificate_revoked(self, envelope):
        self._on(envelope, "certificate_revoked", domain.certificate_revoked)

    @event_handler("enrolment", "sign_in_link_requested")
    def on_sign_in_link_requested(self, envelope):
        self._on(envelope, "sign_in_link_requested", domain.sign_in_link_requested)

    @event_handler("enrolment", "office_sign_in_link_requested")
    def on_office_sign_in_link_requested(self, envelope):
        self._on(envelope, "office_sign_in_link_requested",
                 domain.office_sign_in_link_requested)

    @event_handler("enrolment", "colleague_invited")
    def on_colleague_invited(self, envelope):
        self._on(envelope, "colleague_invited", domain.colleague_invited)
    @event_handler("enrolment", "coach_sign_in_link_requested")
    def on_coach_sign_in_link_requested(self, envelope):
        self._on(envelope, "coach_sign_in_link_requested", domain.coach_sign_in_link_requested)

    @event_handler("enrolment", "navigator_named")
    def on_navigator_named(self, envelope):
        self._on(envelope, "navigator_named", domain.navigator_named)

    @event_handler("enrolment", "milestone_reached")
    def on_milestone_reached(self, envelope):
        self._on(envelope, "milestone_reached", domain.milestone_reached)

    @event_handler("enrolment", "coaching_paired")
    def on_coaching_paired(self, envelope):
        self._on(envelope, "coaching_paired", domain.coaching_paired)

    @event_handler("enrolment", "coaching_unpaired")
    def on_coaching_unpaired(self, envelope):
        self._on(envelope, "coaching_unpaired", domain.coaching_unpaired)

    @event_handler("enrolment", "milestone_overdue")
    def on_milestone_overdue(self, envelope):
        self._on(envelope, "milestone_overdue", domain.milestone_overdue)

    @event_handler("enrolment", "participant_erased")
    def on_participant_erased(self, envelope):
        event = parse_event(envelope, "participant_erased")
        self.db.run(handle_once, event, f"{self.name}.participant_erased",
                    lambda session, e: privacy.participant_erased(session, e.payload,
                                                                  self.mailer.mail_dir))

    @timer(interval=86400)
    def mail_log_retention_timer(self):
        """Daily: sent mails older than MAIL.log_retention_days leave the mail log."""
        try:
            self.db.run(privacy.delete_old_mail,
                        domain.now() - timedelta(days=self.mailer.log_retention_days),
                        self.mailer.mail_dir)
        except Exception as exc:  # by type only: a database error may quote a row
            log.error("mail log retention failed (%s); tried again tomorrow",
                      type(exc).__name__)

    @timer(interval=3600)
    def course_reminder_timer(self):
        """Hourly; each participant is reminded once, in the week before the first module."""
        if self.db.run(domain.course_reminders, calendar_today()):
            self.mailer.wake()

    # --- RPC ---------------------------------------------------------------------------------

    @rpc(OPERATOR)
    def failed_notices(self):
        self.operator.require()
        return self.db.run(domain.failed_notices)

    @rpc(OPERATOR)
    def resend_failed(self, notice_id=None):
        self.operator.require()
        if notice_id is not None:
            try:
                notice_id = uuid.UUID(str(notice_id))
            except ValueError:
                raise ValidationFailed("not a notice id", {"notice_id": ["not a UUID"]}) from None
        count = self.db.run(domain.resend, notice_id)
        self.mailer.wake()
        return {"queued_again": count}

    @rpc(OPERATOR)
    def send_course_reminders(self):
        self.operator.require()
        count = self.db.run(domain.course_reminders, calendar_today())
        self.mailer.wake()
        return {"reminders": count}

    @rpc(OPERATOR)
    def participant_data(self, enrolment_ids, email=None):
        """For an access request: the copies of these enrolments and the mails about them."""
        self.operator.require()
        data = load(EXPORT_IN, {"enrolment_ids": enrolment_ids, "email": email},
                    "access request")
        return self.db.run(privacy.participant_data, data["enrolment_ids"], data["email"],
                           self.mailer.subject)

    @rpc(OPERATOR)
    def erase_recipient_mail(self, email, stand_in, coach_ids=None, names=None,
                             municipalities=None, bodies=None):
        """The erasure of a coach, office member or municipal clerk who left: the mails to
        them and the values that name them in others' mails (enrolment calls this first,
        then erases its own rows)."""
        self.operator.require()
        data = load(RECIPIENT_ERASURE_IN, {"email": email, "stand_in": stand_in,
                                           "coach_ids": coach_ids or [], "names": names or [],
                                           "municipalities": municipalities or [],
                                           "bodies": bodies or []}, "erasure")
        return self.db.run(privacy.recipient_erased, data["email"], data["stand_in"],
                           data["coach_ids"], self.mailer.mail_dir, data["names"],
                           data["municipalities"], data["bodies"])

    @rpc(PUBLIC)
    def health(self):
        with self.db.transaction() as session:
            session.execute(text("SELECT 1"))
        return {"service": self.name, "database": "ok", "broker": "ok",
                "mail_transport": self.mailer.settings["transport"]}

