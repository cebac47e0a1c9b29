"""``lotsen``: the operators' command line.

It works on the service databases directly (events it causes go through the outbox and are
published by the running services' relays), so set-up works before anything is started.
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet announces its maintenance mode on import
    import eventlet

eventlet.monkey_patch()  # noqa: E402  (before anything opens a socket)

import json
import logging
import signal
import sys
import time
from datetime import date
from pathlib import Path

import click

from services.common import config as cfg
from services.common.clock import calendar_today
from services.common.errors import LotsenError

DEFAULT_REGISTER = cfg.PROJECT_ROOT.parent / "shared" / "data" / "destatis-gv-auszug.csv"


def _fail(exc: LotsenError):
    click.echo(f"error: {exc.message}", err=True)
    for field, problems in exc.fields.items():
        click.echo(f"  {field}: {'; '.join(problems) if isinstance(problems, list) else problems}",
                   err=True)
    sys.exit(2)


class Context:
    def __init__(self, config_path):
        self.config_path = config_path
        self._config = None

    @property
    def config(self) -> dict:
        if self._config is None:
            self._config = cfg.load_config(self.config_path)
        return self._config

    def database(self, service: str):
        """A service's database, opened by the CLI (its relay publishes what we write)."""
        import importlib

        from services.common.db import open_database
        models = importlib.import_module(f"services.{service}.models")
        return open_database(self.config, service, models.OutboxMessage, models.InboxRecord)

    def enrolment_db(self):
        return self.database("enrolment")

    def funding_db(self):
        return self.database("funding")

    def run_in(self, service: str, fn, *args, **kwargs):
        handle = self.database(service)
        try:
            return handle.run(fn, *args, **kwargs)
        except LotsenError as exc:
            _fail(exc)
        finally:
            handle.dispose()

    def run_funding(self, fn, *args, **kwargs):
        return self.run_in("funding", fn, *args, **kwargs)

    def run(self, fn, *args, **kwargs):
        return self.run_in("enrolment", fn, *args, **kwargs)

@click.group()
@click.option("--config", "config_path", envvar="LOTSEN_CONFIG", default=None,
              help="nameko YAML config (default: deploy/config/local.yaml)")
@click.pass_context
def main(ctx, config_path):
    """Operate the Digitallotsen services."""
    ctx.obj = Context(config_path)


@main.command()
@click.pass_obj
def migrate(obj: Context):
    """Bring every service database to its newest schema and declare the event queues."""
    from services.common import topology
    from services.common.migrations import migrate_all

    for service, where in migrate_all(obj.config).items():
        click.echo(f"migrated {service}: {where}")
    try:
        subs = topology.declare(cfg.amqp_uri(obj.config), obj.config)
        click.echo(f"declared {len(subs)} event queues")
    except Exception as exc:  # the services declare them again before they publish
        click.echo(f"warning: could not declare event queues ({type(exc).__name__}); "
                   "each service declares them when it starts", err=True)


@main.command()
@click.option("--service", "only", multiple=True,
              help="run only this service (repeatable); default: all of them")
@click.pass_obj
def run(obj: Context, only):
    """Run the services in this one process: all of them locally, one per container."""
    from nameko.runners import ServiceRunner
    from nameko.utils.concurrency import SpawningProxy

    from services.common import topology
    from services.common.logs import configure_logging

    config = obj.config
    configure_logging(config)
    classes = topology.service_classes(config)
    if only:
        unknown = set(only) - {c.name for c in classes}
        if unknown:
            click.echo(f"error: no service {', '.join(sorted(unknown))}; choose from "
                       f"{', '.join(c.name for c in classes)}", err=True)
            sys.exit(2)
        classes = [c for c in classes if c.name in only]
    uri = cfg.amqp_uri(config)
    try:
        with cfg.amqp_connection(config, connect_timeout=5) as connection:
            cfg.ensure_connected(connection, max_retries=3)
    except Exception as exc:
        broker_at = uri.split("@")[-1]  # never the password
        refusal = cfg.untrusted_certificate(exc)
        if refusal is not None:
            reason = getattr(refusal, "verify_message", None) or refusal
            click.echo(f"error: the broker at {broker_at} shows a certificate we do not trust "
                       f"({reason}); check AMQP_SSL's ca_certs and the host name in AMQP_URI",
                       err=True)
        else:
            click.echo(f"error: RabbitMQ does not answer at {broker_at}; start it "
                       "(rabbitmq-server -detached) or set AMQP_URI", err=True)
        sys.exit(1)
    try:
        topology.declare(uri, config)
    except Exception as exc:  # a service's own broker user may declare only its part
        logging.getLogger("services.cli").info(
            "left the event topology to `lotsen broker setup` and each relay (%s)",
            type(exc).__name__)
    runner = ServiceRunner(config)
    for cls in classes:
        runner.add_service(cls)
    grace = float(cfg.setting(config, "SHUTDOWN_GRACE_S", 30))

    def stop_gracefully():
        # Running workers may finish; what is still running after the grace period is killed
        # (its message was not acked, so the broker hands it to another instance).
        with eventlet.Timeout(grace, False):
            runner.stop()
            return
        runner.kill()

    def shutdown(signum, frame):
        eventlet.spawn_n(stop_gracefully)

    signal.signal(signal.SIGTERM, shutdown)
    runner.start()
    click.echo("services running: " + ", ".join(c.name for c in classes)
               + f" (data in {cfg.lotsen_home(config)}); Ctrl-C stops")
    try:
        # nameko's runner.wait() would stop the other services without a time limit.
        SpawningProxy(runner.containers, abort_on_error=True).wait()
    except KeyboardInterrupt:
        stop_gracefully()
    except Exception as exc:
        # A service died: stop the rest and exit non-zero, so a supervisor starts us again
        # instead of a process that lives on without consuming.
        logging.getLogger("services.cli").critical(
            "a service stopped with %s; shutting down", type(exc).__name__)
        stop_gracefully()
        sys.exit(1)


@main.command()
@click.argument("service")
@click.option("--timeout", default=5.0, show_default=True)
@click.pass_obj
def health(obj: Context, service, timeout):
    """Ask a running service for its health (exit 0 if it, its broker and database answer)."""
    from nameko.standalone.rpc import ServiceRpcProxy
    try:
        with eventlet.Timeout(timeout):
            with ServiceRpcProxy(service, cfg.rpc_client_config(obj.config),
                                 timeout=timeout) as proxy:
                result = proxy.health()
    except BaseException as exc:  # eventlet.Timeout is a BaseException
        click.echo(json.dumps({"service": service, "status": "unavailable",
                               "error": type(exc).__name__}))
        sys.exit(1)
    click.echo(json.dumps(dict(result, status="ok")))


@main.command()
@click.argument("kind", type=click.Choice(["live", "ready"]))
@click.option("--timeout", default=5.0, show_default=True)
@click.pass_obj
def probe(obj: Context, kind, timeout):
    """Ask the service process on this machine (METRICS_PORT) whether it is live or ready:
    its own containers, broker connection and database, not a round trip through the queue
    (exit 0/1; for container health checks)."""
    import urllib.error
    import urllib.request

    port = int(cfg.setting(obj.config, "METRICS_PORT", 0))
    if not port:
        click.echo("error: METRICS_PORT is 0: this process serves no probes", err=True)
        sys.exit(2)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/{kind}",
                                    timeout=timeout) as response:
            click.echo(response.read().decode())
    except urllib.error.HTTPError as exc:
        click.echo(exc.read().decode())
        sys.exit(1)
    except OSError as exc:
        click.echo(json.dumps({"status": "unavailable", "error": type(exc).__name__}))
        sys.exit(1)


@main.command("import-register")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def import_register_command(obj: Context, file: Path):
    """Import or update the municipality register (Destatis Gemeindeverzeichnis CSV)."""
    from services.enrolment.register import (
        RegisterFormatError,
        import_register,
        parse_register,
    )

    started = time.perf_counter()
    try:
        records = parse_register(file)
    except RegisterFormatError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    result = obj.run(import_register, records)
    click.echo(f"register: {result.total} bodies ({result.created} new, {result.updated} "
               f"updated, {result.unchanged} unchanged) in {time.perf_counter() - started:.1f}s")


@main.group()
def programme():
    """Programmes: create from a YAML file, publish again, list."""


@programme.command("create")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def programme_create(obj: Context, file: Path):
    from services import programme_files
    from services.funding import domain as funding

    try:
        parsed = programme_files.read(file)
    except LotsenError as exc:
        _fail(exc)
    created = obj.run(programme_files.create, parsed)
    policy, milestones = parsed.policy, parsed.milestones
    click.echo(f"programme {created['code']} created: {created['bodies']} eligible bodies"
               + (f", coaching with {len(milestones)} milestones" if milestones else ""))
    if policy:
        obj.run_funding(funding.set_policy, created["id"], created["code"], policy)
        click.echo(f"funding: budget {policy['budget_cents']} cents, {policy['fee_cents']} cents "
                   f"per seat, {policy['guaranteed_per_body']} guaranteed per body, reserve "
                   f"until {policy['reserve_until']}")
    elif milestones:
        click.echo("no funding section: nothing is funded in this coaching programme")
    else:
        click.echo("no funding section: nothing is funded until a policy is set")


@programme.command("publish")
@click.argument("code")
@click.pass_obj
def programme_publish(obj: Context, code: str):
    """Announce a programme again with the current register (after an import).

    Refused, with nothing announced, if the programme's budget would no longer cover a
    guaranteed seat for every body the register now makes eligible."""
    from services.enrolment import domain
    from services.funding import domain as funding

    eligible = obj.run(lambda s: [b.ags for b in domain.eligible_bodies(
        s, domain.programme_by_code(s, code))])
    if _has_funding(obj, code):
        shortfall = obj.run_funding(funding.shortfall_for, code, eligible)
        if shortfall:
            click.echo(f"error: with {len(eligible)} eligible bodies the budget of {code} "
                       f"lacks {shortfall} cents for their guaranteed seats; raise it first "
                       f"(lotsen funding budget {code} CENTS --reason ...), then publish",
                       err=True)
            sys.exit(2)
    count = obj.run(domain.republish_programme, code)
    click.echo(f"programme {code} published again: {count} eligible bodies")


def _has_funding(obj: Context, code: str) -> bool:
    from sqlalchemy import select

    from services.funding.models import FundingProgramme
    return obj.run_funding(lambda s: s.scalar(select(FundingProgramme.fee_cents).where(
        FundingProgramme.code == code))) is not None


@programme.command("list")
@click.pass_obj
def programme_list(obj: Context):
    from sqlalchemy import select

    from services.enrolment.models import Programme
    rows = obj.run(lambda s: [(p.code, p.name, p.land, str(p.enrolment_opens_on),
                               str(p.enrolment_closes_on), f"kept {p.retention_days} days")
                              for p in s.scalars(select(Programme).order_by(Programme.code))])
    for row in rows:
        click.echo("  ".join(row))


@main.command("coverage")
@click.argument("codes", nargs=-1)
@click.option("--map", "map_file", type=click.Path(dir_okay=False, path_type=Path),
              help="write the map of every eligible body (SVG) to this file")
@click.option("--missing-csv", type=click.Path(dir_okay=False, path_type=Path),
              help="write the bodies still without a Lotse (CSV for Excel) to this file")
@click.option("--by", type=click.Choice(["land", "bezirk", "kreis"]), default="bezirk",
              show_default=True, help="which areas to list")
@click.pass_obj
def coverage_command(obj: Context, codes, map_file, missing_csv, by):
    """How many eligible bodies have a Lotse, per area (all programmes unless CODES)."""
    from services.enrolment import coverage
    from services.gateway.charts import coverage_map
    report = obj.run(coverage.coverage, list(codes) or None)
    totals = report["totals"]
    click.echo(f"{totals['eligible']} eligible, {totals['covered']} with a Lotse "
               f"({totals['covered_percent']} %): {totals['completed']} completed, "
               f"{totals['confirmed']} confirmed, {totals['waitlisted']} only waitlisted, "
               f"{totals['none']} none")
    for row in report[f"per_{by}"]:
        click.echo(f"  {row['ags']}  {row['name'][:40]:40}  {row['covered']:>5} / "
                   f"{row['eligible']:<5} {row['covered_percent']:>5} %")
    if map_file:
        names = ", ".join(p["name"] for p in report["programmes"])
        map_file.write_text(coverage_map(report["bodies"], f"Abdeckung: {names}"),
                            encoding="utf-8")
    if missing_csv:
        missing_csv.write_text(coverage.without_lotse_csv(report), encoding="utf-8",
                               newline="")


@main.group("coaching")
def coaching_group():
    """Coaching programmes: coaches, pairing, milestones."""


@coaching_group.command("add-coach")
@click.argument("code")
@click.option("--name", required=True)
@click.option("--email", required=True)
@click.option("--max-navigators", type=int, required=True)
@click.pass_obj
def coaching_add_coach(obj: Context, code, name, email, max_navigators):
    """Register a coach (a Lotse); prints the coach's token once."""
    from services.common.schemas import load
    from services.enrolment import coaching
    from services.enrolment.schemas import CoachIn
    try:
        data = load(CoachIn(), {"programme_code": code, "name": name, "email": email,
                                "max_navigators": max_navigators}, "coach")
    except LotsenError as exc:
        _fail(exc)
    coach, token = obj.run(coaching.register_coach, data["programme_code"], data["name"],
                           data["email"], data["max_navigators"])
    click.echo(f"coach {coach.id} registered; they sign in at /coaching with {data['email']}; "
               f"token for their software's RPC (shown once): {token}")


@coaching_group.command("navigators")
@click.argument("code")
@click.option("--unpaired", is_flag=True, help="only those without a coach")
@click.pass_obj
def coaching_navigators(obj: Context, code, unpaired):
    """The programme's active Navigators: id, AGS, municipality, coach (to pair from)."""
    from services.enrolment import coaching
    for navigator in obj.run(coaching.programme_navigators, code[:40]):
        if unpaired and navigator["coach_id"]:
            continue
        click.echo(f"{navigator['id']}  {navigator['ags']}  {navigator['municipality']}  "
                   f"{navigator['coach_name'] or '(no coach)'}")


@coaching_group.command("pair")
@click.argument("navigator_id")
@click.argument("coach_id")
@click.option("--start", "started_on", default=None, help="coaching starts (default today)")
@click.pass_obj
def coaching_pair(obj: Context, navigator_id, coach_id, started_on):
    """Pair a Navigator with a coach (within the coach's maximum)."""
    from services.common.schemas import load
    from services.enrolment import coaching
    from services.enrolment.schemas import PairIn
    try:
        data = load(PairIn(), {"navigator_id": navigator_id, "coach_id": coach_id,
                               "started_on": started_on}, "pairing")
    except LotsenError as exc:
        _fail(exc)
    paired = obj.run(coaching.pair, data["navigator_id"], data["coach_id"], data["started_on"])
    click.echo(f"paired; coaching started {paired['coaching_started_on']}")


@coaching_group.command("coaches")
@click.argument("code")
@click.pass_obj
def coaching_coaches(obj: Context, code):
    """The programme's coaches: id, name, address, Navigators of their maximum."""
    from services.enrolment import coaching
    for coach in obj.run(coaching.coaches, code[:40]):
        click.echo(f"{coach['id']}  {coach['name']}  {coach['email']}  "
                   f"{coach['load']} of {coach['max_navigators']}")


@coaching_group.command("remove-coach")
@click.argument("coach_id")
@click.pass_obj
def coaching_remove_coach(obj: Context, coach_id):
    """A coach who leaves: their token and sessions end, their Navigators wait for a new one."""
    from services.common.schemas import load
    from services.enrolment import coaching
    from services.enrolment.schemas import CoachIdIn
    try:
        data = load(CoachIdIn(), {"coach_id": coach_id}, "coach")
    except LotsenError as exc:
        _fail(exc)
    removed = obj.run(coaching.remove_coach, data["coach_id"])
    click.echo(f"coach {removed['id']} removed; {len(removed['unpaired'])} Navigators now "
               f"without a coach (`lotsen coaching navigators CODE --unpaired`)")


@coaching_group.command("overview")
@click.argument("code")
@click.pass_obj
def coaching_overview(obj: Context, code):
    """Municipalities with a Navigator, with an Agenda, overdue; each coach's load."""
    from services.enrolment import coaching
    click.echo(json.dumps(obj.run(coaching.overview, code), indent=2, ensure_ascii=False))


@coaching_group.command("overdue")
@click.option("--today", default=None, help="as if it were this day (YYYY-MM-DD)")
@click.pass_obj
def coaching_overdue(obj: Context, today):
    """Report overdue milestones now (the services do it hourly), each once."""
    from services.enrolment import coaching
    day = date.fromisoformat(today) if today else None
    click.echo(f"{obj.run(coaching.report_overdue, day)} overdue milestones reported")


@main.group("office")
def office_group():
    """Who may use the programme office's pages (/buero)."""


@office_group.command("add")
@click.argument("email")
@click.option("--name", required=True, help="as the sign-in mail greets the person")
@click.pass_obj
def office_add(obj: Context, email, name):
    """Let EMAIL sign in to the office's pages (again)."""
    from marshmallow import Schema, fields, validate

    from services.common.schemas import email_field, load
    from services.enrolment import office

    class StaffIn(Schema):
        email = email_field(required=True)
        name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    try:
        data = load(StaffIn(), {"email": email.strip().lower(), "name": name.strip()},
                    "office staff")
    except LotsenError as exc:
        _fail(exc)
    obj.run(office.add_staff, data["email"], data["name"])
    click.echo("added: the person can now ask for a sign-in link at /buero/anmelden")


@office_group.command("remove")
@click.argument("email")
@click.pass_obj
def office_remove(obj: Context, email):
    """End EMAIL's access; its sessions end at once."""
    from services.enrolment import office
    obj.run(office.remove_staff, email.strip().lower())
    click.echo("removed")


@office_group.command("list")
@click.pass_obj
def office_list(obj: Context):
    from services.enrolment import office
    for member in obj.run(office.staff):
        click.echo(f"{member['email']}  {member['name']}  since {_when(member['added_at'])}")


@main.group("outreach")
def outreach():
    """Reminders to eligible bodies that have no confirmed participant yet."""


@outreach.command("remind")
@click.argument("code")
@click.option("--campaign", default=None,
              help="the campaign's name; each body receives a campaign once "
                   "(default: erinnerung-YYYY-MM-DD, today)")
@click.pass_obj
def outreach_remind(obj: Context, code, campaign):
    """Remind every eligible body of CODE that has no confirmed participant yet."""
    from services.common.schemas import load
    from services.funding import domain as funding
    from services.funding.schemas import RemindIn
    campaign = campaign or f"erinnerung-{calendar_today().isoformat()}"
    try:
        data = load(RemindIn(), {"programme_code": code, "campaign": campaign})
    except LotsenError as exc:
        _fail(exc)
    result = obj.run_funding(funding.remind_bodies_without_participant, data["programme_code"],
                             data["campaign"])
    click.echo(f"campaign {result['campaign']}: {result['reminded']} bodies reminded now, "
               f"{result['already_reminded']} reminded in this campaign before")


@outreach.command("list")
@click.argument("code")
@click.pass_obj
def outreach_list(obj: Context, code):
    """Who was reminded in which campaign, and when."""
    from services.funding import domain as funding
    for row in obj.run_funding(funding.reminders, code):
        click.echo(f"{row['ags']}  {row['campaign']:32}  {row['reminded_at']}")
@programme.command("retention")
@click.argument("code")
@click.argument("days", type=int)
@click.pass_obj
def programme_retention(obj: Context, code, days):
    """Set how many days participant data is kept after a course ended or an enrolment was
    cancelled (the daily retention run erases what is older)."""
    from services.enrolment import privacy as enrolment_privacy
    programme = obj.run(enrolment_privacy.set_retention, code, days)
    click.echo(f"programme {programme['code']}: participant data kept "
               f"{programme['retention_days']} days")


@main.group("funding")
def funding_group():
    """Budgets, the ledger and the reserve deadline."""


@funding_group.command("state")
@click.argument("code")
@click.pass_obj
def funding_state(obj: Context, code):
    """Budget, granted, reserved, pool left and seats still fundable."""
    from services.funding import domain as funding
    click.echo(json.dumps(obj.run_funding(funding.budget_state, code), indent=2))


@funding_group.command("ledger")
@click.argument("code")
@click.option("--csv", "as_csv", is_flag=True, help="every entry as CSV")
@click.option("--page", default=1, show_default=True)
@click.option("--per-page", default=100, show_default=True)
@click.pass_obj
def funding_ledger(obj: Context, code, as_csv, page, per_page):
    from services.funding import domain as funding
    from services.funding.service import ledger_csv
    if as_csv:
        click.echo(ledger_csv(obj.run_funding(funding.ledger_rows, code)), nl=False)
        return
    click.echo(json.dumps(obj.run_funding(funding.ledger_page, code, page, per_page), indent=2))


@funding_group.command("check")
@click.argument("code")
@click.pass_obj
def funding_check(obj: Context, code):
    """Recompute the ledger and the invariants; exit 1 if anything is off."""
    from services.funding import domain as funding
    result = obj.run_funding(funding.check, code)
    click.echo(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


@funding_group.command("apply-deadline")
@click.argument("code")
@click.pass_obj
def funding_apply_deadline(obj: Context, code):
    """Release the unused reserve into the pool if the reserve date has passed."""
    from services.funding import domain as funding
    click.echo(json.dumps(obj.run_funding(funding.apply_reserve_deadline, code), indent=2))


@funding_group.command("policy")
@click.argument("code")
@click.option("--budget-cents", type=int, required=True)
@click.option("--fee-cents", type=int, required=True, help="per funded seat")
@click.option("--guaranteed-per-body", type=int, default=1, show_default=True)
@click.option("--reserve-until", required=True, help="YYYY-MM-DD: the guarantee holds until then")
@click.pass_obj
def funding_policy(obj: Context, code, budget_cents, fee_cents, guaranteed_per_body,
                   reserve_until):
    """Set a programme's funding policy, or change it (e.g. one created without a funding
    section). Refused if the budget does not cover every eligible body's guaranteed seats."""
    from services.common.schemas import load
    from services.enrolment import domain
    from services.funding import domain as funding
    from services.funding.schemas import FundingPolicyIn

    try:
        policy = load(FundingPolicyIn(), {
            "budget_cents": budget_cents, "fee_cents": fee_cents,
            "guaranteed_per_body": guaranteed_per_body, "reserve_until": reserve_until},
            "funding policy")
    except LotsenError as exc:
        _fail(exc)
    programme_id = obj.run(lambda s: domain.programme_by_code(s, code).id)
    obj.run_funding(funding.set_policy, programme_id, code, policy)
    handle = obj.funding_db()
    try:
        click.echo(json.dumps(handle.run(funding.budget_state, code), indent=2))
    except funding.NotReady:
        click.echo(f"policy of {code} set; its figures follow once the funding service has "
                   "the programme's eligible bodies")
    finally:
        handle.dispose()


@funding_group.command("budget")
@click.argument("code")
@click.argument("budget_cents", type=int)
@click.option("--reason", required=True, help="recorded in the ledger")
@click.pass_obj
def funding_budget(obj: Context, code, budget_cents, reason):
    """Change a programme's budget (a ledger entry with its reason)."""
    from services.funding import domain as funding
    click.echo(json.dumps(obj.run_funding(funding.change_budget, code, budget_cents, reason),
                          indent=2))


@main.group()
def mail():
    """E-mail notices: failed ones, resending, course reminders."""


@mail.command("failed")
@click.pass_obj
def mail_failed(obj: Context):
    """Notices that could not be delivered after every retry."""
    from services.notifications import domain as notifications
    rows = obj.run_in("notifications", notifications.failed_notices)
    for row in rows:
        click.echo(json.dumps(row, ensure_ascii=False))
    click.echo(f"{len(rows)} failed notice(s)")


@mail.command("resend")
@click.option("--id", "notice_id", default=None, help="only this notice (default: all failed)")
@click.pass_obj
def mail_resend(obj: Context, notice_id):
    """Queue failed notices again; the running service sends them with fresh retries."""
    import uuid as uuid_module

    from services.notifications import domain as notifications
    if notice_id:
        try:
            notice_id = uuid_module.UUID(notice_id)
        except ValueError:
            click.echo("error: --id must be a notice id (UUID)", err=True)
            sys.exit(2)
    count = obj.run_in("notifications", notifications.resend, notice_id)
    click.echo(f"queued {count} notice(s) again")


@mail.command("reminders")
@click.pass_obj
def mail_reminders(obj: Context):
    """Write course reminders now (the service also does it every hour)."""
    from services.notifications import domain as notifications
    count = obj.run_in("notifications", notifications.course_reminders, calendar_today())
    click.echo(f"{count} reminder(s) queued")


@mail.command("prune")
@click.option("--days", type=int, default=None,
              help="delete sent mails older than this (default: MAIL.log_retention_days, 90)")
@click.pass_obj
def mail_prune(obj: Context, days):
    """Delete sent mails from the mail log (and their files); the service does it daily."""
    from datetime import timedelta

    from services.notifications import domain as notifications
    from services.notifications import privacy as mail_privacy
    from services.notifications.service import mail_settings
    settings = mail_settings(obj.config)
    days = days if days is not None else int(cfg.setting(settings, "log_retention_days", 90))
    if days < 1:
        click.echo("error: --days must be at least 1", err=True)
        sys.exit(2)
    count = obj.run_in("notifications", mail_privacy.delete_old_mail,
                       notifications.now() - timedelta(days=days), _mail_dir(obj))
    click.echo(f"deleted {count} sent mail(s) older than {days} days")


def _mail_dir(obj: Context):
    from services.notifications.service import mail_settings
    settings = mail_settings(obj.config)
    if (settings.get("transport") or "file") != "file":
        return None
    return Path(settings.get("directory") or cfg.lotsen_home(obj.config) / "mail")


@main.group()
def privacy():
    """Data protection: a participant's access and erasure requests, retention."""


def _email_argument(email: str) -> str:
    from services.common.schemas import load
    from services.enrolment.schemas import ParticipantQueryIn
    try:
        return load(ParticipantQueryIn(), {"email": email}, "e-mail address")["email"]
    except LotsenError as exc:
        _fail(exc)


@privacy.command("erase")
@click.argument("email")
@click.option("--reason", required=True,
              help="why, for the record (e.g. 'Antrag nach Art. 17 DSGVO vom 2027-03-01')")
@click.pass_obj
def privacy_erase(obj: Context, email, reason):
    """Erase the participant with this address in every service (participant_erased).

    The address is neither printed nor logged; the running services apply the erasure when
    the event reaches them."""
    from services.common import callers
    from services.common.schemas import load
    from services.enrolment import privacy as enrolment_privacy
    from services.enrolment.schemas import ErasureIn
    try:
        data = load(ErasureIn(), {"email": email, "reason": reason}, "erasure")
    except LotsenError as exc:
        _fail(exc)
    result = obj.run(enrolment_privacy.erase_participant, data["email"], data["reason"],
                     callers.service_key(obj.config))
    if result["status"] == "already_erased":
        click.echo(f"already erased on {result['erased_at']} (erasure {result['erasure_id']})")
        return
    click.echo(f"erased {result['enrolments']} enrolment(s) as {result['pseudonym']} "
               f"(erasure {result['erasure_id']}); funding, certificates and notifications "
               "follow through participant_erased")


@privacy.command("erase-coach")
@click.argument("email")
@click.pass_obj
def privacy_erase_coach(obj: Context, email):
    """Erase a coach who left (take them out first: lotsen coaching remove-coach): their name
    and address in every programme, their sign-in links and sessions, the events and the
    mails that named them. The address is neither printed nor logged."""
    result, mails = _erase_person(obj, "coach", _email_argument(email))
    click.echo(f"erased {result['coaches']} coach row(s) as {result['pseudonym']}; "
               f"{result['events_scrubbed']} stored event(s) scrubbed; mails: "
               f"{mails['notices_dropped']} unsent dropped, {mails['notices_kept']} sent kept "
               f"without address, {mails['notices_naming']} to Navigators no longer name them")


@privacy.command("erase-office-member")
@click.argument("email")
@click.pass_obj
def privacy_erase_office_member(obj: Context, email):
    """Erase a member of the office whose access ended (lotsen office remove first): name
    and address, sign-in links and sessions, the stored link requests and the mails to them.
    The record of when their access began and ended stays, under a pseudonym."""
    result, mails = _erase_person(obj, "office", _email_argument(email))
    click.echo(f"erased as {result['pseudonym']}; {result['events_scrubbed']} stored event(s) "
               f"scrubbed; mails: {mails['notices_dropped']} unsent dropped, "
               f"{mails['notices_kept']} sent kept without address")


@privacy.command("erase-clerk")
@click.argument("email")
@click.pass_obj
def privacy_erase_clerk(obj: Context, email):
    """Erase a municipality's former contact or a colleague the contact removed (register
    the new contact first): their name and address, sign-in links and sessions, the stored
    events and the mails to them; invitations they sent no longer name them. The address is
    neither printed nor logged."""
    result, mails = _erase_person(obj, "clerk", _email_argument(email))
    click.echo(f"erased as {result['pseudonym']}; {result['colleague_rows']} colleague row(s), "
               f"{result['events_scrubbed']} stored event(s) scrubbed; mails: "
               f"{mails['notices_dropped']} unsent dropped, {mails['notices_kept']} sent kept "
               f"without address, {mails['notices_copied']} copies to them removed, "
               f"{mails['notices_naming']} to others no longer name them")


def _erase_person(obj: Context, kind: str, email: str, strict: bool = True):
    """The CLI's erasure of someone who worked on the programme: the check refuses (or gives
    what the mail log needs), then the mail log, then enrolment's rows and events. A refusal
    ends the command, or (``strict=False``, the retention run) gives None."""
    from services.common import privacy as common_privacy
    from services.enrolment import privacy as enrolment_privacy
    from services.notifications import privacy as mail_privacy
    check, erase = enrolment_privacy.staff_steps(kind, email)
    enrolment, mail_log = obj.database("enrolment"), obj.database("notifications")
    try:
        named = enrolment.run(check)
        pseudonym = common_privacy.new_pseudonym()
        mails = mail_log.run(mail_privacy.recipient_erased, email,
                             common_privacy.pseudonym_email(pseudonym),
                             mail_dir=_mail_dir(obj), **named)
        return enrolment.run(erase, email, pseudonym), mails
    except LotsenError as exc:
        if strict:
            _fail(exc)
        return None
    finally:
        enrolment.dispose()
        mail_log.dispose()


@privacy.command("export")
@click.argument("email")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the JSON document to this file (default: print it)")
@click.pass_obj
def privacy_export(obj: Context, email, output):
    """Everything every service holds about the person, as one JSON document (Art. 15)."""
    from services.certificates import domain as certificates
    from services.certificates import privacy as certificate_privacy
    from services.common import callers
    from services.common import privacy as common_privacy
    from services.enrolment import privacy as enrolment_privacy
    from services.funding import privacy as funding_privacy
    from services.notifications import privacy as mail_privacy
    from services.notifications.service import mail_settings
    email = _email_argument(email)
    mine = obj.run(enrolment_privacy.export_participant, email, callers.service_key(obj.config))
    ids = [item["id"] for item in mine["enrolments"]]
    office = cfg.setting(mail_settings(obj.config), "office_name",
                         "Ihr Programmbüro Kommunale Digitallotsen")
    document = common_privacy.access_document(
        email, enrolment_privacy.now(), mine,
        funding=obj.run_funding(funding_privacy.participant_data, ids),
        certificates=obj.run_in("certificates", certificate_privacy.participant_data, ids,
                                certificates.summary),
        mails=obj.run_in("notifications", mail_privacy.participant_data, ids, email,
                         lambda notice: mail_privacy.subject_line(notice, office)))
    text = json.dumps(document, indent=2, ensure_ascii=False, default=str)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        output.chmod(0o600)
        click.echo(f"written to {output}")
    else:
        click.echo(text)


@privacy.command("retention")
@click.option("--today", default=None,
              help="YYYY-MM-DD (default: today in Europe/Berlin); a later day erases, for "
                   "good, what would expire by then, participants and people who left alike")
@click.pass_obj
def privacy_retention(obj: Context, today):
    """Erase what has outlived its programme's retention period now, and the people who left
    more than STAFF_RETENTION_DAYS ago (the enrolment service does it daily)."""
    from services.common import callers
    from services.enrolment import privacy as enrolment_privacy
    try:
        day = date.fromisoformat(today) if today else None
    except ValueError:
        click.echo("error: --today must be a date YYYY-MM-DD", err=True)
        sys.exit(2)
    result = obj.run(enrolment_privacy.apply_retention, callers.service_key(obj.config), day)
    click.echo(f"erased {result['enrolments']} enrolment(s) of {result['people']} "
               f"participant(s) and {result['navigators']} replaced Navigator(s) whose "
               "retention period ended")
    obj.run(enrolment_privacy.forget_old_sign_ins)
    days = enrolment_privacy.staff_retention_days(obj.config)
    due = obj.run(enrolment_privacy.staff_who_left, days, day)
    erased = sum(_erase_person(obj, kind, email, strict=False) is not None
                 for kind, email in due)
    click.echo(f"erased {erased} of {len(due)} coach(es), office member(s), portal "
               f"colleague(s) and former contact(s) whose access ended more than {days} days ago"
               + ("; the others wait for events about them to be sent: run again later"
                  if erased < len(due) else ""))


@main.group()
def keys():
    """Certificate signing keys."""


@keys.command("generate")
@click.pass_obj
def keys_generate(obj: Context):
    """Make a new Ed25519 signing key; older keys stay published so old certificates verify."""
    from services.certificates.service import settings
    keyring, _ = settings(obj.config)
    kid = keyring.generate()
    click.echo(f"signing key {kid} in {keyring.directory} (now used for new certificates)")


@main.group()
def certificate():
    """Issued certificates: show, revoke, re-issue after a name correction."""


@certificate.command("show")
@click.argument("number")
@click.pass_obj
def certificate_show(obj: Context, number):
    from services.certificates import domain as certificates
    result = obj.run_in("certificates",
                        lambda s: certificates.summary(certificates.by_number(s, number)))
    result.pop("credential")
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))


@certificate.command("revoke")
@click.argument("number")
@click.option("--reason", required=True)
@click.pass_obj
def certificate_revoke(obj: Context, number, reason):
    from services.certificates import domain as certificates
    status = obj.run_in("certificates",
                        lambda s: certificates.revoke(s, number, reason, "operator").status)
    click.echo(f"certificate {number}: {status}")


@certificate.command("reissue")
@click.argument("number")
@click.option("--given-name", required=True)
@click.option("--family-name", required=True)
@click.pass_obj
def certificate_reissue(obj: Context, number, given_name, family_name):
    from services.certificates import domain as certificates
    from services.certificates.service import settings
    keyring, issuer = settings(obj.config)
    new = obj.run_in("certificates", lambda s: certificates.reissue(
        s, number, given_name, family_name, keyring, issuer).number)
    click.echo(f"certificate {number} superseded by {new}")


@main.group()
def provider():
    """Education providers."""


@provider.command("create")
@click.argument("name")
@click.pass_obj
def provider_create(obj: Context, name: str):
    """Create a provider and print its token (shown once, stored hashed)."""
    from services.enrolment import domain
    provider_id, token = obj.run(lambda s: (lambda p, t: (str(p.id), t))(
        *domain.create_provider(s, name)))
    click.echo(f"provider {provider_id}\ntoken: {token}\n(store it now: it is not shown again)")


def _when(moment) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else "-"


@provider.command("rotate-token")
@click.argument("ref")
@click.pass_obj
def provider_rotate_token(obj: Context, ref: str):
    """Issue a new token (id or exact name); the old one is refused at once, a revoked provider
    is let in again. Prints the token once."""
    from services.enrolment import domain
    provider_id, token = obj.run(lambda s: (lambda p, t: (str(p.id), t))(
        *domain.rotate_provider_token(s, ref)))
    click.echo(f"provider {provider_id}\ntoken: {token}\n(store it now: it is not shown again)")


@provider.command("revoke")
@click.argument("ref")
@click.pass_obj
def provider_revoke(obj: Context, ref: str):
    """Refuse a provider's token (id or exact name) until it is rotated."""
    from services.enrolment import domain
    provider_id, revoked_at = obj.run(lambda s: (lambda p: (str(p.id), p.revoked_at))(
        domain.revoke_provider(s, ref)))
    click.echo(f"provider {provider_id} revoked since {_when(revoked_at)}: its token is refused "
               "(rotate-token issues a new one)")


@provider.command("list")
@click.pass_obj
def provider_list(obj: Context):
    """Providers: id, name, when the token was issued, when it was revoked (never the token)."""
    from services.enrolment import domain
    for row in obj.run(domain.list_providers):
        click.echo(f"{row['id']}  {row['name']}  issued {_when(row['token_issued_at'])}  "
                   f"revoked {_when(row['revoked_at'])}")


@main.group()
def municipality():
    """Municipalities that use the gateway."""


@municipality.command("register")
@click.argument("ags")
@click.option("--contact-name", required=True)
@click.option("--contact-email", required=True)
@click.pass_obj
def municipality_register(obj: Context, ags, contact_name, contact_email):
    """Register a body for the gateway (or rotate its key) and print its API key once."""
    from services.common.schemas import load
    from services.enrolment import domain
    from services.enrolment.schemas import MunicipalityIn
    try:
        data = load(MunicipalityIn(), {"ags": ags, "contact_name": contact_name,
                                       "contact_email": contact_email}, "municipality")
    except LotsenError as exc:
        _fail(exc)
    key = obj.run(lambda s: domain.register_municipality(
        s, data["ags"], data["contact_name"], data["contact_email"])[1])
    click.echo(f"API key for {ags}: {key}\n(store it now: it is not shown again)")


def _ags_argument(ags: str) -> str:
    from services.common.schemas import load
    from services.enrolment.schemas import MunicipalityIn
    try:
        return load(MunicipalityIn(only=("ags",)), {"ags": ags}, "AGS")["ags"]
    except LotsenError as exc:
        _fail(exc)


def _cache_note(obj: Context, which: str) -> str:
    seconds = cfg.setting(obj.config.get("GATEWAY") or {}, "auth_cache_s", 30)
    return f"(a running gateway may still accept {which} for up to {seconds} s)"


@municipality.command("rotate-key")
@click.argument("ags")
@click.pass_obj
def municipality_rotate_key(obj: Context, ags):
    """Issue a new API key and keep the contact; prints the key once. A revoked body is let in
    again."""
    from services.enrolment import domain
    ags = _ags_argument(ags)
    key = obj.run(lambda s: domain.rotate_municipality_key(s, ags)[1])
    click.echo(f"API key for {ags}: {key}\n(store it now: it is not shown again)\n"
               + _cache_note(obj, "the old key"))


@municipality.command("revoke-key")
@click.argument("ags")
@click.pass_obj
def municipality_revoke_key(obj: Context, ags):
    """Refuse a body's API key until rotate-key or register issues a new one."""
    from services.enrolment import domain
    ags = _ags_argument(ags)
    revoked_at = obj.run(lambda s: domain.revoke_municipality_key(s, ags).revoked_at)
    click.echo(f"API key for {ags} revoked since {_when(revoked_at)}\n" + _cache_note(obj, "it"))


@main.group()
def parked():
    """Event messages that failed every retry."""


def _queues(obj: Context, queue: str | None, own: bool = False) -> list[str]:
    """Consumer queues; ``own``: only those of services that run as this broker user."""
    from services.common import topology
    me = cfg.broker_user(obj.config)
    subscriptions = topology.subscriptions(topology.service_classes(obj.config))
    names = [s.queue_name for s in subscriptions
             if not own or cfg.producer_user(obj.config, s.consumer_service) == me]
    if len(names) < len(subscriptions) and not queue:
        others = sorted({s.consumer_service for s in subscriptions
                         if s.queue_name not in names})
        click.echo(f"note: only the queues of services that run as broker user {me}; run "
                   f"this again as the user of {', '.join(others)} for theirs", err=True)
    if queue:
        if queue not in names:
            click.echo(f"error: no consumer queue {queue}", err=True)
            sys.exit(2)
        return [queue]
    return names


@parked.command("list")
@click.option("--queue", default=None, help="only this consumer queue")
@click.pass_obj
def parked_list(obj: Context, queue):
    from services.common.messaging import list_parked
    found = list_parked(cfg.amqp_uri(obj.config), _queues(obj, queue, own=True),
                        ssl=cfg.amqp_ssl(obj.config))
    for item in found:
        click.echo(json.dumps(item, ensure_ascii=False))
    click.echo(f"{len(found)} parked message(s)")


@parked.command("replay")
@click.option("--queue", default=None, help="only this consumer queue")
@click.option("--message-id", default=None, help="only this message (default: all)")
@click.pass_obj
def parked_replay(obj: Context, queue, message_id):
    """Send parked messages back to their consumer, with fresh retries.

    Run it as the consuming service's broker user (its AMQP_URI): a consumer believes only
    replays from itself. Events refused as not coming from their producer stay parked."""
    from services.common.messaging import replay_parked
    count = replay_parked(cfg.amqp_uri(obj.config), _queues(obj, queue, own=True), message_id,
                          ssl=cfg.amqp_ssl(obj.config), user_id=cfg.broker_user(obj.config))
    click.echo(f"replayed {count} message(s)")


@main.group()
def broker():
    """RabbitMQ users and permissions: one user per service and per education provider."""


def _management() -> "object":
    import os

    from services.common.broker_access import Management
    url = os.environ.get("RABBITMQ_MANAGEMENT_URL")
    if not url:
        click.echo("error: set RABBITMQ_MANAGEMENT_URL to the management API with an "
                   "administrator's login, e.g. http://admin:PASSWORD@rabbitmq:15672", err=True)
        sys.exit(2)
    return Management(url)


def _vhost(config: dict) -> str:
    from kombu.utils.url import url_to_parts
    return url_to_parts(cfg.amqp_uri(config)).path or "/"


@broker.command("permissions")
@click.option("--provider", "providers", multiple=True, help="also this provider user")
@click.pass_obj
def broker_permissions(obj: Context, providers):
    """Print every user's permissions and topic permissions as JSON (what `setup` applies)."""
    from dataclasses import asdict

    from services.common import broker_access, topology
    classes = topology.service_classes(obj.config)
    subs = topology.subscriptions(classes)
    access = broker_access.definitions(classes, subs, _service_users(obj.config))
    access += [broker_access.provider_access(broker_access.provider_user(p), classes)
               for p in providers]
    click.echo(json.dumps([asdict(a) for a in access], indent=2))


@broker.command("setup")
@click.pass_obj
def broker_setup(obj: Context):
    """Create the vhost, the event topology and one user per service with its permissions.

    Passwords come from ENROLMENT_BROKER_PASSWORD, FUNDING_BROKER_PASSWORD, ... (one per
    service); a service whose password is not set keeps its user as it is."""
    import os

    from services.common import broker_access, topology
    classes = topology.service_classes(obj.config)
    subs = topology.subscriptions(classes)
    plan = []  # everything is checked before anything changes on the broker
    accesses = broker_access.definitions(classes, subs, _service_users(obj.config))
    for cls, access in zip(classes, accesses):  # definitions keep the order of the classes
        password = os.environ.get(f"{cls.name.upper()}_BROKER_PASSWORD") or None
        plan.append((access, password, cls.name))
    management = _management()
    for access, password, service in plan:
        if password is None and not management.user_exists(access.user):
            click.echo(f"error: {service.upper()}_BROKER_PASSWORD is not set and user "
                       f"{access.user} does not exist yet", err=True)
            sys.exit(2)
    vhost = _vhost(obj.config)
    management.declare_topology(vhost, subs, [c.name for c in classes],
                                cfg.queue_arguments(obj.config))
    for access, password, _ in plan:
        if password:
            management.put_user(access.user, password)
        management.grant(vhost, access)
        click.echo(f"{access.user}: permissions on {vhost} set")
    click.echo(f"declared {len(subs)} event queues on {vhost}")


def _service_users(config: dict) -> dict:
    """The services' broker users from BROKER_USERS; guest is never given a service's narrow
    permissions (the embedded default runs everything as guest: nothing to set up)."""
    users = {k: v for k, v in (config.get("BROKER_USERS") or {}).items() if v}
    if "guest" in users.values():
        click.echo("error: BROKER_USERS names guest; give each service its own user "
                   "(ENROLMENT_BROKER_USER=lotsen-enrolment, ...) before `broker setup`",
                   err=True)
        sys.exit(2)
    return users


@broker.command("add-provider")
@click.argument("name")
@click.pass_obj
def broker_add_provider(obj: Context, name):
    """Create (or reset) a provider's broker user; prints its password once."""
    import secrets

    from services.common import broker_access, topology
    management = _management()
    try:
        user = broker_access.provider_user(name)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    password = secrets.token_urlsafe(24)
    management.put_user(user, password)
    management.grant(_vhost(obj.config),
                     broker_access.provider_access(user, topology.service_classes(obj.config)))
    click.echo(f"broker user: {user}\npassword: {password}\n(store it now: it is not shown "
               "again; the provider connects with amqp://USER:PASSWORD@HOST/VHOST)")


@broker.command("remove-provider")
@click.argument("name")
@click.pass_obj
def broker_remove_provider(obj: Context, name):
    """Delete a provider's broker user; its open connections are closed at once."""
    from services.common import broker_access
    user = broker_access.provider_user(name)
    _management().delete_user(user)
    click.echo(f"broker user {user} removed")


@main.command()
@click.option("--register", "register_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help=f"register to import if none is loaded (default: {DEFAULT_REGISTER})")
@click.pass_obj
def demo(obj: Context, register_file):
    """Load a demo programme, provider, courses and municipalities (once)."""
    from services.enrolment.demo import load_demo
    home = cfg.lotsen_home(obj.config)
    register_file = register_file or (DEFAULT_REGISTER if DEFAULT_REGISTER.exists() else None)
    try:
        summary = load_demo(obj.enrolment_db(), register_file, home / "demo-credentials.json",
                            obj.funding_db())
    except LotsenError as exc:
        _fail(exc)
    click.echo(summary)


if __name__ == "__main__":
    main()
