"""RPC and event entrypoints of the enrolment service: validate, call the domain, return."""
from __future__ import annotations

import json
import logging

import eventlet
from marshmallow.experimental.context import Context
from nameko.dependency_providers import Config
from nameko.exceptions import UnknownService
from nameko.timer import timer
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from services.common import callers
from services.common import privacy as common_privacy
from services.common.broker import RpcProxy
from services.common.db import Database, run_in_group
from services.common.callers import (
    COACH,
    GATEWAY,
    MUNICIPALITY,
    OPERATOR,
    PROVIDER,
    PUBLIC,
    SERVICE,
)
from services.common.entrypoints import (
    CoachToken,
    GroupCommits,
    Operator,
    ProviderToken,
    event_handler,
    rpc,
)
from services.common.errors import LotsenError, Unavailable, ValidationFailed
from services.common.events import parse_event
from services.common.logs import LogContext
from services.common.metrics import Metrics
from services.common.outbox import handle_in_group
from services.common.schemas import load, mail_smtputf8
from services.common import config as cfg
from services.enrolment import coaching, coverage, domain, office, portal, privacy, schemas
from services.enrolment.models import Enrolment, InboxRecord, OutboxMessage

log = logging.getLogger(__name__)

AGS_SCHEMA = schemas.MunicipalityIn(only=("ags",))
# Made once: building a marshmallow schema costs more than using it.
ENROL_IN = schemas.EnrolIn()
BATCH_IN = schemas.EnrolBatchIn()
CANCEL_IN = schemas.CancelIn()
ENROLMENT_ID_IN = schemas.CancelIn(only=("enrolment_id",))
FILTERS_IN = schemas.EnrolmentFilterIn()
ERASURE_IN = schemas.ErasureIn()
PARTICIPANT_IN = schemas.ParticipantQueryIn()
# What an access request gathers from each other service, and how long each may take.
EXPORT_PARTS = (("funding", "funding"), ("certificates", "certificates"),
                ("notifications", "mails"))
EXPORT_TIMEOUT_S = 30
BODY_OUT = schemas.BodyOut()
ENROL_LANES = 4
COVERAGE_IN = schemas.CoverageIn()
PROGRAMME_CODE_IN = schemas.NameNavigatorIn(only=("programme_code",))
CONTACT_ROW_IN = schemas.ContactRowIn()
ONBOARD_IN = schemas.OnboardIn()
SIGN_IN_REQUEST_IN = schemas.SignInRequestIn()
SECRET_IN = schemas.SecretIn()
COLLEAGUE_IN = schemas.ColleagueIn()
COLLEAGUE_ID_IN = schemas.ColleagueIdIn()
PERSON_OUT = schemas.PortalPersonOut()
COLLEAGUE_OUT = schemas.ColleagueOut()


def enrolment_figures(session) -> dict:
    rows = session.execute(select(Enrolment.status, func.count()).group_by(Enrolment.status))
    return {f"enrolments_{status}": count for status, count in rows}


def _enrol_with_key(session, api_key, command) -> dict:
    body, created = domain.enrol_with_key(session, api_key, command)
    return {"body": BODY_OUT.dump(body), "enrolment": created}


class EnrolmentService:
    name = "enrolment"
    log_context = LogContext()
    metrics = Metrics(enrolment_figures)

    db = Database("enrolment", OutboxMessage, InboxRecord)
    config = Config()
    provider_token = ProviderToken()
    coach_token = CoachToken()
    operator = Operator()
    # Other services' decisions copied onto enrolments: those that queue up while one
    # transaction runs go together in the next.
    group = GroupCommits()
    # Access requests gather what the other services hold (the operator's token travels on
    # in the call's context data, so each checks it itself).
    funding = RpcProxy("funding")
    certificates = RpcProxy("certificates")
    notifications = RpcProxy("notifications")

    # --- helpers (not entrypoints) ------------------------------------------------------------

    def _as_provider(self, fn, *args):
        token = self.provider_token
        return self.db.run(lambda s: fn(s, domain.authenticate_provider(s, token), *args))

    def _mail_context(self):
        """Whether the mail server takes addresses with umlauts before the @ (SMTPUTF8), as
        this service's own configuration says."""
        return Context({"smtputf8": mail_smtputf8(self.config)})

    @staticmethod
    def _ags(ags) -> str:
        return load(AGS_SCHEMA, {"ags": ags}, "AGS")["ags"]

    # --- education providers (token in context data) -----------------------------------------

    @rpc(PROVIDER)
    def create_course(self, course):
        self.db.run(domain.authenticate_provider, self.provider_token)  # strangers learn nothing
        data = load(schemas.CourseIn(), course, "course")
        created = self._as_provider(domain.create_course, data)
        return schemas.CourseOut().dump(created)

    @rpc(PROVIDER)
    def open_course(self, course_id):
        return self._course_action(course_id, "open")

    @rpc(PROVIDER)
    def close_course(self, course_id):
        return self._course_action(course_id, "close")

    @rpc(PROVIDER)
    def complete_course(self, course_id):
        return self._course_action(course_id, "complete")

    def _course_action(self, course_id, action):
        data = load(schemas.AttendanceIn(only=("course_id",)), {"course_id": course_id})
        course = self._as_provider(domain.change_course_status, data["course_id"], action)
        return schemas.CourseOut().dump(course)

    @rpc(PROVIDER)
    def cancel_course(self, course_id, reason=None):
        data = load(schemas.AttendanceIn(only=("course_id",)), {"course_id": course_id})
        course = self._as_provider(domain.cancel_course, data["course_id"], reason)
        return schemas.CourseOut().dump(course)

    @rpc(PROVIDER)
    def course_enrolments(self, course_id):
        data = load(schemas.AttendanceIn(only=("course_id",)), {"course_id": course_id})
        return self._as_provider(domain.course_enrolments, data["course_id"])

    @rpc(PROVIDER)
    def provider_cancel_enrolment(self, enrolment_id, reason=None):
        data = load(schemas.CancelIn(), {"enrolment_id": enrolment_id, "reason": reason})
        token = self.provider_token
        return self.db.run(lambda s: domain.cancel_enrolment(
            s, data["enrolment_id"], provider=domain.authenticate_provider(s, token),
            reason=data["reason"]))

    @rpc(PROVIDER)
    def record_attendance(self, course_id, module_number, enrolment_ids):
        data = load(schemas.AttendanceIn(), {"course_id": course_id,
                                             "module_number": module_number,
                                             "enrolment_ids": enrolment_ids}, "attendance")
        return self._as_provider(domain.record_attendance, data)

    # --- the gateway (acting for an authenticated municipality) ------------------------------

    @rpc(SERVICE)
    def authenticate_provider(self, token):
        """For other services that act for providers (certificate revocation)."""
        provider = self.db.run(domain.authenticate_provider, token)
        return {"id": str(provider.id), "name": provider.name}

    @rpc(GATEWAY)
    def authenticate(self, api_key):
        body = self.db.run(domain.authenticate_municipality, api_key)
        return BODY_OUT.dump(body)

    @rpc(MUNICIPALITY)
    def enrol(self, ags, enrolment):
        ags = self._ags(ags)
        with self._mail_context():
            command = load(ENROL_IN, enrolment, "enrolment")
        return self._enrol(command, domain.enrol, ags, command)

    @rpc(GATEWAY)
    def enrol_with_key(self, api_key, enrolment):
        """``enrol`` for the municipality whose API key the gateway has not yet seen: the key
        is checked in the same transaction instead of an ``authenticate`` call before."""
        try:
            with self._mail_context():
                command = load(ENROL_IN, enrolment, "enrolment")
        except ValidationFailed:
            self.db.run(domain.authenticate_municipality, api_key)  # strangers learn nothing
            raise

        return self._enrol(command, _enrol_with_key, api_key, command)

    def _enrol(self, command, fn, *args):
        """Enrolments that arrive while another one's transaction runs share the next one
        (one BEGIN, one COMMIT), taking their courses' locks in the order of the course ids."""
        try:
            course_id = command["course_id"]
            return run_in_group(self.group, self.db, ("enrol", course_id.int % ENROL_LANES), fn,
                                *args, lock_order=course_id)
        except IntegrityError:
            # A concurrent twin (same key or same participant) committed first: run again to
            # answer as the rules say (the first result, or a clear duplicate error).
            return self.db.run(fn, *args)

    @rpc(MUNICIPALITY)
    def enrol_batch(self, ags, rows, dry_run=False):
        """Up to 500 enrolments; per row the enrolment or its error. A dry run checks every row
        against the current state and then rolls everything back."""
        ags = self._ags(ags)
        dry_run, commands = self._batch(rows, dry_run)
        return self._batch_answer(dry_run, self.db.run(domain.enrol_batch, ags, commands,
                                                       commit=not dry_run))

    @rpc(GATEWAY)
    def enrol_batch_with_key(self, api_key, rows, dry_run=False):
        """``enrol_batch`` for a municipality's API key the gateway has not yet seen: the key is
        checked in the same transaction instead of an ``authenticate`` call before."""
        try:
            dry_run, commands = self._batch(rows, dry_run)
        except ValidationFailed:
            self.db.run(domain.authenticate_municipality, api_key)  # strangers learn nothing
            raise

        def run(session):
            body = domain.authenticate_municipality(session, api_key)
            return BODY_OUT.dump(body), domain.enrol_batch(session, body.ags, commands)
        body, results = self.db.run(run, commit=not dry_run)
        return {"body": body, "batch": self._batch_answer(dry_run, results)}

    def _batch(self, rows, dry_run):
        batch = load(BATCH_IN, {"rows": rows, "dry_run": dry_run}, "batch")
        commands = []
        with self._mail_context():
            for index, row in enumerate(batch["rows"]):
                try:
                    commands.append(load(ENROL_IN, row, f"row {index}"))
                except ValidationFailed as exc:
                    commands.append(exc)
        return batch["dry_run"], commands

    @staticmethod
    def _batch_answer(dry_run, results):
        if dry_run:
            for row in results:
                if row["result"] == "created":
                    row["result"] = "would_create"
        succeeded = sum(1 for r in results if r["result"] != "error")
        return {"dry_run": dry_run, "succeeded": succeeded, "failed": len(results) - succeeded,
                "results": results}

    @rpc(MUNICIPALITY)
    def cancel_enrolment(self, ags, enrolment_id, reason=None):
        ags = self._ags(ags)
        data = load(CANCEL_IN, {"enrolment_id": enrolment_id, "reason": reason})
        return self.db.run(lambda s: domain.cancel_enrolment(
            s, data["enrolment_id"], ags=ags, reason=data["reason"]))

    @rpc(MUNICIPALITY)
    def get_enrolment(self, ags, enrolment_id):
        ags = self._ags(ags)
        data = load(ENROLMENT_ID_IN, {"enrolment_id": enrolment_id})
        return self.db.run(domain.get_enrolment, ags, data["enrolment_id"])

    @rpc(MUNICIPALITY)
    def list_enrolments(self, ags, filters=None):
        ags = self._ags(ags)
        data = load(FILTERS_IN, filters or {}, "filters")
        return self.db.run(domain.list_enrolments, ags, data)

    @rpc(MUNICIPALITY)
    def list_open_courses(self, ags):
        return self.db.run(domain.open_courses, self._ags(ags))

    @rpc(MUNICIPALITY)
    def municipality(self, ags):
        return self.db.run(domain.municipality_overview, self._ags(ags))

    # --- the municipality portal (the gateway; sessions and links live here) -----------------

    def _secret(self, value, what: str) -> str:
        return load(SECRET_IN, {"secret": value}, what)["secret"]

    @rpc(GATEWAY)
    def portal_request_sign_in(self, email, link_base):
        """Mail a sign-in link if the address may sign in; the answer is the same either way."""
        with self._mail_context():
            data = load(SIGN_IN_REQUEST_IN, {"email": email, "link_base": link_base},
                        "sign-in request")
        self.db.run(portal.request_sign_in, data["email"], data["link_base"])
        return {"requested": True}

    @rpc(GATEWAY)
    def portal_sign_in(self, token):
        """Use a sign-in link once: the session (with its id, for the cookie) or
        ``AuthenticationFailed``."""
        token = self._secret(token, "sign-in link")
        hours = float(cfg.setting(self.config.get("PORTAL") or {}, "session_hours", 8))
        return PERSON_OUT.dump(self.db.run(portal.sign_in, token, hours))

    @rpc(GATEWAY)
    def portal_session(self, session_id):
        """Who a live session belongs to; ``AuthenticationFailed`` once it has ended."""
        session_id = self._secret(session_id, "session")
        return PERSON_OUT.dump(self.db.run(portal.current, session_id))

    @rpc(GATEWAY)
    def portal_sign_out(self, session_id):
        return self.db.run(portal.sign_out, self._secret(session_id, "session"))

    @rpc(MUNICIPALITY)
    def portal_colleagues(self, ags):
        answer = self.db.run(portal.colleagues, self._ags(ags))
        answer["colleagues"] = COLLEAGUE_OUT.dump(answer["colleagues"], many=True)
        return answer

    @rpc(MUNICIPALITY)
    def portal_invite_colleague(self, ags, session_id, colleague):
        """Only the body's contact may invite (its session says who is asking)."""
        ags = self._ags(ags)
        session_id = self._secret(session_id, "session")
        with self._mail_context():
            data = load(COLLEAGUE_IN, colleague, "colleague")
        return COLLEAGUE_OUT.dump(self.db.run(portal.invite_colleague, ags, session_id,
                                              data["name"], data["email"], data["portal_url"]))

    @rpc(MUNICIPALITY)
    def portal_remove_colleague(self, ags, session_id, colleague_id):
        ags = self._ags(ags)
        session_id = self._secret(session_id, "session")
        data = load(COLLEAGUE_ID_IN, {"colleague_id": colleague_id}, "colleague")
        return COLLEAGUE_OUT.dump(self.db.run(portal.remove_colleague, ags, session_id,
                                              data["colleague_id"]))

    # --- coaching programmes ---------------------------------------------------------------

    @rpc(MUNICIPALITY)
    def name_navigator(self, ags, programme_code, navigator, replace=False):
        """The municipality's one Navigator; ``replace`` ends the current one's term."""
        ags = self._ags(ags)
        with self._mail_context():
            data = load(schemas.NameNavigatorIn(), {"programme_code": programme_code,
                                                    "navigator": navigator,
                                                    "replace": replace}, "navigator")
        return self._out(self.db.run(coaching.name_navigator, ags, data["programme_code"],
                                     data["navigator"], replace=data["replace"]))

    @rpc(MUNICIPALITY)
    def navigators(self, ags, programme_code):
        """The body's Navigator and the ones before (with their milestones)."""
        code = load(PROGRAMME_CODE_IN, {"programme_code": programme_code},
                    "programme")["programme_code"]
        return self._out(self.db.run(coaching.navigators_of, self._ags(ags), code,
                                     commit=False))

    @rpc(MUNICIPALITY)
    def navigator_document(self, ags, document_id):
        """A PDF uploaded for one of the body's Navigators (their Digitale Agenda)."""
        ags = self._ags(ags)
        document_id = load(schemas.DocumentIdIn(), {"document_id": document_id},
                           "document")["document_id"]
        return self.db.run(lambda s: coaching.document_out(coaching.document_of_body(
            s, ags, document_id)), commit=False)

    @rpc(OPERATOR)
    def register_coach(self, coach):
        data = load(schemas.CoachIn(), coach, "coach")
        made, token = self.db.run(coaching.register_coach, data["programme_code"],
                                  data["name"], data["email"], data["max_navigators"])
        return {"id": str(made.id), "name": made.name, "token": token}

    @rpc(OPERATOR)
    def pair_navigator(self, navigator_id, coach_id, started_on=None):
        data = load(schemas.PairIn(), {"navigator_id": navigator_id, "coach_id": coach_id,
                                       "started_on": started_on}, "pairing")
        return self._out(self.db.run(coaching.pair, data["navigator_id"], data["coach_id"],
                                     data["started_on"]))

    @rpc(OPERATOR)
    def coaches(self, programme_code):
        """The programme's coaches who have not left, with their load."""
        code = load(PROGRAMME_CODE_IN, {"programme_code": programme_code},
                    "programme")["programme_code"]
        return self._out(self.db.run(coaching.coaches, code, commit=False))

    @rpc(OPERATOR)
    def remove_coach(self, coach_id):
        """A coach who leaves: access ends, their Navigators wait to be paired again."""
        data = load(schemas.CoachIdIn(), {"coach_id": coach_id}, "coach")
        return self._out(self.db.run(coaching.remove_coach, data["coach_id"]))

    @rpc(OPERATOR, GATEWAY)
    def coaching_overview(self, programme_code):
        code = load(PROGRAMME_CODE_IN, {"programme_code": programme_code},
                    "programme")["programme_code"]
        return self.db.run(coaching.overview, code, commit=False)

    @rpc(OPERATOR)
    def report_overdue_milestones(self, today=None):
        day = load(schemas.CoachingDayIn(), {"today": today}, "day")["today"]
        return {"reported": self.db.run(coaching.report_overdue, day)}

    @timer(interval=3600)
    def overdue_milestones_timer(self):
        """Hourly; each overdue milestone is reported once."""
        self.db.run(coaching.report_overdue)

    @rpc(COACH)
    def coach_navigators(self):
        """The calling coach's Navigators with their milestones."""
        return self._out(self.db.run(lambda s: coaching.coach_navigators(
            s, coaching.coach_by_token(s, self.coach_token)), commit=False))

    @rpc(COACH)
    def record_milestone(self, milestone):
        data = load(schemas.MilestoneIn(), milestone, "milestone")
        return self._out(self.db.run(lambda s: coaching.record_milestone(
            s, coaching.coach_by_token(s, self.coach_token), data["navigator_id"], data["key"],
            data["reached_on"], data["note"], data["document_ref"])))

    # --- the coaches' pages (the gateway; coach sessions live here) ---------------------------

    def _coach(self, session, session_id) -> str:
        """The address of the coach whose live session this is, or ``AuthenticationFailed``."""
        return coaching.DESK.current(session, session_id)["email"]

    @rpc(GATEWAY)
    def coach_request_sign_in(self, email, link_base):
        """Mail a sign-in link if the address is a coach's; the same answer always."""
        return self._desk_request(coaching.DESK, email, link_base)

    @rpc(GATEWAY)
    def coach_sign_in(self, token):
        return self._desk_sign_in(coaching.DESK, token)

    @rpc(GATEWAY)
    def coach_session(self, session_id):
        session_id = self._secret(session_id, "session")
        return PERSON_OUT.dump(self.db.run(coaching.DESK.current, session_id, commit=False))

    @rpc(GATEWAY)
    def coach_sign_out(self, session_id):
        return self.db.run(coaching.DESK.sign_out, self._secret(session_id, "session"))

    @rpc(GATEWAY)
    def coach_desk(self, session_id):
        """The signed-in coach's Navigators, per programme, with their milestones."""
        session_id = self._secret(session_id, "session")
        return self._out(self.db.run(lambda s: coaching.desk(s, self._coach(s, session_id)),
                                     commit=False))

    @rpc(GATEWAY)
    def coach_record_milestone(self, session_id, milestone):
        """A milestone recorded by the signed-in coach, with a reference or a PDF."""
        session_id = self._secret(session_id, "session")
        data = load(schemas.CoachMilestoneIn(), milestone, "milestone")

        def record(session):
            coach = coaching.coach_of(session, self._coach(session, session_id),
                                      data["navigator_id"])
            return coaching.record_milestone(
                session, coach, data["navigator_id"], data["key"], data["reached_on"],
                data["note"], data["document_ref"], data["document"])
        return self._out(self.db.run(record))

    @rpc(GATEWAY)
    def coach_document(self, session_id, document_id):
        """An uploaded document for its Navigator's coach: name and base64 content."""
        session_id = self._secret(session_id, "session")
        document_id = load(schemas.DocumentIdIn(), {"document_id": document_id},
                           "document")["document_id"]

        return self.db.run(lambda s: coaching.document_out(coaching.document_for(
            s, self._coach(s, session_id), document_id)), commit=False)

    @staticmethod
    def _out(value):
        """Dates and times as ISO strings, as every RPC answer carries them."""
        return json.loads(json.dumps(value, default=lambda v: v.isoformat()))

    # --- the programme office's pages (the gateway; office sessions live here) --------------

    def _office(self, session_id) -> dict:
        """The office member whose live session this is, or ``AuthenticationFailed``."""
        return self.db.run(office.current, self._secret(session_id, "session"), commit=False)

    def _desk_request(self, desk, email, link_base):
        with self._mail_context():
            data = load(SIGN_IN_REQUEST_IN, {"email": email, "link_base": link_base},
                        "sign-in request")
        self.db.run(desk.request_sign_in, data["email"], data["link_base"])
        return {"requested": True}

    def _desk_sign_in(self, desk, token):
        token = self._secret(token, "sign-in link")
        hours = float(cfg.setting(self.config.get("PORTAL") or {}, "session_hours", 8))
        return PERSON_OUT.dump(self.db.run(desk.sign_in, token, hours))

    @rpc(GATEWAY)
    def office_request_sign_in(self, email, link_base):
        """Mail a sign-in link if the address belongs to the office; the same answer always."""
        return self._desk_request(office.DESK, email, link_base)

    @rpc(GATEWAY)
    def office_sign_in(self, token):
        return self._desk_sign_in(office.DESK, token)

    @rpc(GATEWAY)
    def office_session(self, session_id):
        return PERSON_OUT.dump(self._office(session_id))

    @rpc(GATEWAY)
    def office_sign_out(self, session_id):
        return self.db.run(office.sign_out, self._secret(session_id, "session"))

    @rpc(GATEWAY)
    def office_coverage(self, session_id, programme_codes=None):
        """``coverage`` for a signed-in member of the office."""
        self._office(session_id)
        data = load(COVERAGE_IN, {"programme_codes": programme_codes}, "coverage")
        return self.db.run(coverage.coverage, data["programme_codes"], commit=False)

    @rpc(GATEWAY)
    def office_without_lotse_csv(self, session_id, programme_codes=None):
        self._office(session_id)
        data = load(COVERAGE_IN, {"programme_codes": programme_codes}, "coverage")
        return coverage.without_lotse_csv(
            self.db.run(coverage.coverage, data["programme_codes"], commit=False))

    @rpc(GATEWAY)
    def office_coaching(self, session_id, programme_code):
        """A coaching programme for the office: the overview, the coaches and every active
        Navigator, to pair from."""
        self._office(session_id)
        code = load(PROGRAMME_CODE_IN, {"programme_code": programme_code},
                    "programme")["programme_code"]
        return self._out(self.db.run(lambda s: {
            "overview": coaching.overview(s, code),
            "navigators": coaching.programme_navigators(s, code)}, commit=False))

    @rpc(GATEWAY)
    def office_navigator(self, session_id, programme_code, navigator_id):
        """One Navigator of a coaching programme, their milestones and documents."""
        self._office(session_id)
        data = load(schemas.ProgrammeNavigatorIn(), {"programme_code": programme_code,
                                                     "navigator_id": navigator_id}, "navigator")
        return self._out(self.db.run(coaching.navigator_for_office, data["programme_code"],
                                     data["navigator_id"], commit=False))

    @rpc(GATEWAY)
    def office_navigators_csv(self, session_id, programme_code):
        """The programme's Navigators and their milestones as a CSV file for the office."""
        self._office(session_id)
        code = load(PROGRAMME_CODE_IN, {"programme_code": programme_code},
                    "programme")["programme_code"]
        return self.db.run(coaching.navigators_csv, code, commit=False)

    @rpc(GATEWAY)
    def office_document(self, session_id, document_id):
        """A PDF a coach uploaded, for the office."""
        self._office(session_id)
        document_id = load(schemas.DocumentIdIn(), {"document_id": document_id},
                           "document")["document_id"]
        return self.db.run(lambda s: coaching.document_out(coaching.document_for_office(
            s, document_id)), commit=False)

    @rpc(GATEWAY)
    def office_register_coach(self, session_id, coach):
        """A coach the office registers (they sign in by address; no token is shown)."""
        self._office(session_id)
        data = load(schemas.CoachIn(), coach, "coach")
        made, _ = self.db.run(coaching.register_coach, data["programme_code"], data["name"],
                              data["email"], data["max_navigators"])
        return {"id": str(made.id), "name": made.name}

    @rpc(GATEWAY)
    def office_pair(self, session_id, navigator_id, coach_id, started_on=None):
        self._office(session_id)
        data = load(schemas.PairIn(), {"navigator_id": navigator_id, "coach_id": coach_id,
                                       "started_on": started_on}, "pairing")
        return self._out(self.db.run(coaching.pair, data["navigator_id"], data["coach_id"],
                                     data["started_on"]))

    @rpc(GATEWAY)
    def office_remove_coach(self, session_id, coach_id):
        self._office(session_id)
        data = load(schemas.CoachIdIn(), {"coach_id": coach_id}, "coach")
        return self._out(self.db.run(coaching.remove_coach, data["coach_id"]))

    @rpc(GATEWAY)
    def office_onboard(self, session_id, rows, portal_url):
        """Register or update each row's municipality contact and invite it to the portal;
        a report per row (``created``, ``updated``, ``unchanged`` or the error)."""
        self._office(session_id)
        data = load(ONBOARD_IN, {"rows": rows, "portal_url": portal_url}, "onboarding")
        checked = []
        with self._mail_context():
            for index, row in enumerate(data["rows"]):
                try:
                    checked.append(load(CONTACT_ROW_IN, row, f"row {index}"))
                except ValidationFailed as exc:
                    checked.append(exc)
        report = self.db.run(office.onboard_contacts, checked, data["portal_url"])
        counts = {}
        for entry in report:
            counts[entry["result"]] = counts.get(entry["result"], 0) + 1
        return {"counts": counts, "rows": report}

    # --- operators (operator token in context data) ------------------------------------------

    @rpc(OPERATOR)
    def create_programme(self, programme):
        self.operator.require()
        data = load(schemas.ProgrammeIn(), programme, "programme")
        return schemas.ProgrammeOut().dump(self.db.run(domain.create_programme, data))

    @rpc(OPERATOR)
    def create_provider(self, name):
        self.operator.require()
        data = load(schemas.ProviderIn(), {"name": name}, "provider")
        provider, token = self.db.run(domain.create_provider, data["name"])
        return {"id": str(provider.id), "name": provider.name, "token": token}

    @rpc(OPERATOR)
    def register_municipality(self, ags, contact_name, contact_email):
        self.operator.require()
        data = load(schemas.MunicipalityIn(), {"ags": ags, "contact_name": contact_name,
                                               "contact_email": contact_email}, "municipality")
        account, key = self.db.run(domain.register_municipality, data["ags"],
                                   data["contact_name"], data["contact_email"])
        return {"ags": account.ags, "api_key": key, "api_key_prefix": account.api_key_prefix}

    @rpc(OPERATOR)
    def coverage(self, programme_codes=None):
        """Bodies with and without a Lotse, per area, over time, and each body's position."""
        self.operator.require()
        data = load(COVERAGE_IN, {"programme_codes": programme_codes}, "coverage")
        return self.db.run(coverage.coverage, data["programme_codes"], commit=False)

    @rpc(OPERATOR)
    def bodies_without_lotse_csv(self, programme_codes=None):
        self.operator.require()
        data = load(COVERAGE_IN, {"programme_codes": programme_codes}, "coverage")
        return coverage.without_lotse_csv(
            self.db.run(coverage.coverage, data["programme_codes"], commit=False))
    # --- data protection (operators) -----------------------------------------------------------

    def _service_key(self) -> bytes:
        return callers.service_key(self.config)

    @rpc(OPERATOR)
    def erase_participant(self, email, reason):
        """Erase the participant with this address in every service (participant_erased)."""
        self.operator.require()
        data = load(ERASURE_IN, {"email": email, "reason": reason}, "erasure")
        return self.db.run(privacy.erase_participant, data["email"], data["reason"],
                           self._service_key())

    @rpc(OPERATOR)
    def erase_coach(self, email):
        """Erase a coach who left, here and in notifications' mail log."""
        self.operator.require()
        return self._erase_staff("coach", load(PARTICIPANT_IN, {"email": email},
                                               "erasure")["email"])

    @rpc(OPERATOR)
    def erase_office_member(self, email):
        """Erase a member of the office whose access ended, here and in the mail log."""
        self.operator.require()
        return self._erase_staff("office", load(PARTICIPANT_IN, {"email": email},
                                                "erasure")["email"])

    @rpc(OPERATOR)
    def erase_clerk(self, email):
        """Erase a municipality's former contact or removed colleague, here and in the mail
        log."""
        self.operator.require()
        return self._erase_staff("clerk", load(PARTICIPANT_IN, {"email": email},
                                               "erasure")["email"])

    def _erase_staff(self, kind, email):
        """Someone who worked on the programme and left: their refusal checked first, then
        the mail log in notifications (repeating that is harmless), then, once it answered,
        the rows and events here; a refusal touches neither."""
        check, erase = privacy.staff_steps(kind, email)
        named = self.db.run(check, commit=False)
        pseudonym = common_privacy.new_pseudonym()
        seconds = float(self.config.get("EXPORT_TIMEOUT_S") or EXPORT_TIMEOUT_S)
        unavailable = Unavailable(f"notifications did not answer within {seconds:g} s; "
                                  "nothing is erased here yet, try again",
                                  {"service": ["notifications"]})
        try:
            with eventlet.Timeout(seconds, unavailable):
                mails = self.notifications.erase_recipient_mail(
                    email, common_privacy.pseudonym_email(pseudonym), **named)
        except UnknownService:
            raise unavailable from None
        return dict(self.db.run(erase, email, pseudonym), mails=mails)

    @rpc(OPERATOR)
    def export_participant(self, email):
        """Everything every service holds about the person, as one document (Art. 15)."""
        self.operator.require()
        data = load(PARTICIPANT_IN, {"email": email}, "access request")
        mine = self.db.run(privacy.export_participant, data["email"], self._service_key())
        ids = [item["id"] for item in mine["enrolments"]]
        parts = {}
        for service, part in EXPORT_PARTS:
            # Notifications also looks the address up, for mails from before it kept their
            # enrolment's id; the others need nothing but the ids.
            extra = (data["email"],) if service == "notifications" else ()
            seconds = float(self.config.get("EXPORT_TIMEOUT_S") or EXPORT_TIMEOUT_S)
            unavailable = Unavailable(f"{service} did not answer within {seconds:g} s; the "
                                      "access request was not answered, try again",
                                      {"service": [service]})
            try:
                with eventlet.Timeout(seconds, unavailable):
                    parts[part] = getattr(self, service).participant_data(ids, *extra)
            except UnknownService:  # no instance has ever run: its queue does not exist
                raise unavailable from None
        return common_privacy.access_document(data["email"], privacy.now(), mine, **parts)

    @rpc(OPERATOR)
    def apply_retention(self, today=None):
        self.operator.require()
        day = load(schemas.RetentionIn(), {"today": today}, "retention")["today"]
        done = self.db.run(privacy.apply_retention, self._service_key(), day)
        self.db.run(privacy.forget_old_sign_ins)
        return dict(done, staff=self._retire_staff(day))

    def _retire_staff(self, today=None) -> int:
        """Erase the coaches, office members, portal colleagues and former contacts whose
        access ended more than STAFF_RETENTION_DAYS ago; one that cannot be erased now
        (events about them still being sent, notifications not answering) is tried again on
        the next run."""
        days = privacy.staff_retention_days(self.config)
        erased = 0
        for kind, email in self.db.run(privacy.staff_who_left, days, today, commit=False):
            try:
                self._erase_staff(kind, email)
                erased += 1
            except Unavailable:  # notifications does not answer: nobody else either
                log.warning("retention: notifications did not answer; the people who left "
                            "are erased on the next run")
                break
            except LotsenError as exc:
                log.warning("retention: a %s who left was not erased yet (%s)", kind,
                            type(exc).__name__)
        return erased

    @timer(interval=86400)
    def retention_timer(self):
        """Daily: erase what has outlived its programme's retention period, and the people
        who left the programme's work long enough ago."""
        try:
            done = self.db.run(privacy.apply_retention, self._service_key())
        except Exception as exc:  # by type only: a database error may quote a row
            log.error("retention run failed (%s); tried again tomorrow", type(exc).__name__)
        else:
            if done["enrolments"] or done["navigators"]:
                log.info("retention: erased %d enrolment(s) of %d participant(s), %d replaced "
                         "Navigator(s)", done["enrolments"], done["people"],
                         done["navigators"])
        try:
            self.db.run(privacy.forget_old_sign_ins)
            staff = self._retire_staff()
        except Exception as exc:
            log.error("retention of the people who left failed (%s); tried again tomorrow",
                      type(exc).__name__)
            return
        if staff:
            log.info("retention: erased %d person(s) who left", staff)

    @rpc(PUBLIC)
    def health(self):
        with self.db.transaction() as session:
            session.execute(text("SELECT 1"))
        return {"service": self.name, "database": "ok", "broker": "ok"}

    # --- events from other services: the read model of funding and certificates --------------

    def _funding(self, envelope, event_type, method):
        event = parse_event(envelope, event_type)
        handle_in_group(self.group, self.db, "read model", event, f"{self.name}.{method}",
                        domain.apply_funding_event)

    @event_handler("funding", "funding_granted")
    def on_funding_granted(self, envelope):
        self._funding(envelope, "funding_granted", "on_funding_granted")

    @event_handler("funding", "funding_waiting")
    def on_funding_waiting(self, envelope):
        self._funding(envelope, "funding_waiting", "on_funding_waiting")

    @event_handler("funding", "funding_released")
    def on_funding_released(self, envelope):
        self._funding(envelope, "funding_released", "on_funding_released")

    @event_handler("funding", "funding_converted")
    def on_funding_converted(self, envelope):
        self._funding(envelope, "funding_converted", "on_funding_converted")

    @event_handler("certificates", "certificate_issued")
    def on_certificate_issued(self, envelope):
        event = parse_event(envelope, "certificate_issued")
        handle_in_group(self.group, self.db, "read model", event,
                        f"{self.name}.on_certificate_issued", domain.apply_certificate_event)

    @event_handler("certificates", "certificate_revoked")
    def on_certificate_revoked(self, envelope):
        event = parse_event(envelope, "certificate_revoked")
        handle_in_group(self.group, self.db, "read model", event,
                        f"{self.name}.on_certificate_revoked", domain.apply_certificate_event)
