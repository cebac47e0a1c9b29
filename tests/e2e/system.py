"""The whole system for end-to-end tests, run as an operator runs it: every service in its own
process started by the CLI, an SMTP server in this process, a programme set up through the CLI.

``settle`` is how every journey and fault test ends: it waits until everything that was
published has been handled and mailed, then counts what was sent, handled, parked, lost and
duplicated, and checks the funding invariants with ``lotsen funding check``.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import eventlet
import requests
import yaml
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from services.certificates import models as certificate_models
from services.common import topology
from services.common.db import open_database
from services.common.messaging import list_parked
from services.enrolment import models as enrolment_models
from services.funding import models as funding_models
from services.notifications import models as notification_models
from tests.integration.helpers import wait_for
from tests.integration.test_gateway import free_port
from tests.integration.test_notifications import Inbox

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["enrolment", "funding", "certificates", "notifications", "gateway"]
MODELS = {"enrolment": enrolment_models, "funding": funding_models,
          "certificates": certificate_models, "notifications": notification_models}
FEE = 50_000
TALLIES: list[str] = []  # one line per settled run, printed at the end of the test session

# Subjects of the German notices, to sort received mail by what it says.
SUBJECTS = {  # the first prefix that matches names the kind
    "office_sign_in": "Ihr Anmeldelink für die Seiten des Programmbüros",
    "reminder": "Noch kein geförderter Platz",
    "confirmed": "Anmeldung bestätigt", "waitlisted": "Warteliste", "promoted": "Nachgerückt",
    "cancelled": "Abmeldung", "course_cancelled": "Seminar abgesagt",
    "granted": "Förderung bewilligt", "waiting": "Förderung zurzeit nicht möglich",
    "released": "Förderung freigegeben", "certificate": "Herzlichen Glückwunsch",
    "revoked": "Zertifikat ", "sign_in": "Ihr Anmeldelink", "invited": "Einladung in das Portal",
}


def expected_mails(events: list[tuple[str, dict]], complete: bool = True) -> Counter:
    """The mails a person should get for these published events, as (kind, address): the
    notification rules of DESIGN.md, written out independently of the notifications service.
    ``events`` in the order they were published, so an enrolment is known before its funding.

    ``complete=False`` while some events are not yet marked published: a relay marks its rows
    only after the broker confirmed them (and a dropped database connection can delay that),
    so a consumer's reaction may be marked before the event it reacts to. Such events are left
    out of the count until their cause shows; a complete list knows every enrolment."""
    contacts, enrolments = {}, {}
    expected = Counter()

    def both(kind, enrolment_id, participant=True):
        if not complete and (str(enrolment_id) not in enrolments
                             or enrolments[str(enrolment_id)][1] not in contacts):
            return
        email, ags = enrolments[str(enrolment_id)]
        if participant:
            expected[(kind, email)] += 1
        expected[(kind, contacts[ags])] += 1

    for event_type, payload in events:
        if event_type == "municipality_registered":
            contacts[payload["ags"]] = payload["contact_email"]
        elif event_type == "enrolment_created":
            enrolments[str(payload["enrolment_id"])] = (payload["participant"]["email"],
                                                        payload["ags"])
            both(payload["status"], payload["enrolment_id"])
        elif event_type == "enrolment_promoted":
            both("promoted", payload["enrolment_id"])
        elif event_type == "enrolment_cancelled" and payload["cancelled_by"] != "course_cancelled":
            both("cancelled", payload["enrolment_id"])
        elif event_type == "course_cancelled":
            for enrolment_id in payload["enrolment_ids"]:
                both("course_cancelled", enrolment_id)
        elif event_type in ("funding_granted", "funding_converted"):
            both("granted", payload["enrolment_id"])
        elif event_type == "funding_waiting":  # the municipality decides whether to pay itself
            both("waiting", payload["enrolment_id"], participant=False)
        elif event_type == "funding_released":
            both("released", payload["enrolment_id"], participant=False)
        elif event_type == "certificate_issued":  # to the participant, the municipality in copy
            if complete or str(payload["enrolment_id"]) in enrolments:
                expected[("certificate", enrolments[str(payload["enrolment_id"])][0])] += 1
        elif event_type == "certificate_revoked":
            both("revoked", payload["enrolment_id"])
        elif event_type == "sign_in_link_requested":  # to the address that asked, only
            expected[("sign_in", payload["email"])] += 1
        elif event_type == "colleague_invited":
            expected[("invited", payload["email"])] += 1
        elif event_type == "office_sign_in_link_requested":
            expected[("office_sign_in", payload["email"])] += 1
        elif event_type == "body_reminded" and payload["ags"] in contacts:
            expected[("reminder", contacts[payload["ags"]])] += 1
    return expected


def kind_of(message) -> tuple[str, str]:
    """(kind, address) of a received mail, by its German subject and its To address."""
    subject = str(message["Subject"])
    kind = next((kind for kind, prefix in SUBJECTS.items() if subject.startswith(prefix)),
                subject)
    return kind, message["To"].addresses[0].addr_spec


def by_kind(mails: Counter) -> dict:
    totals = Counter()
    for (kind, _), n in mails.items():
        totals[kind] += n
    return dict(totals)


@dataclass
class Tally:
    """What a run counted; ``lost`` and ``duplicated`` must be zero."""

    sent: int = 0
    due: int = 0  # deliveries owed: each event once to each of its consumers
    handled: int = 0
    parked: list = field(default_factory=list)
    lost: int = 0
    mails_expected: Counter = field(default_factory=Counter)
    mails_received: Counter = field(default_factory=Counter)
    duplicated: int = 0  # mails for an event beyond what it owes (a second notice, say)
    resent: int = 0  # the same mail (same Message-ID) again: a sender killed mid-send
    unpublished: int = 0
    pending_notices: int = 0
    missing: dict = field(default_factory=dict)  # (consumer, event type): events not handled

    def line(self) -> str:
        return (f"sent {self.sent} events, {self.due} deliveries due, handled {self.handled}, "
                f"parked {len(self.parked)}, lost {self.lost}, duplicated {self.duplicated}; "
                f"mails expected {sum(self.mails_expected.values())}, received "
                f"{sum(self.mails_received.values())}, resent with the same Message-ID "
                f"{self.resent}")


class System:
    """One whole system of this test: own vhost and databases (from ``service_config``), own
    SMTP server, its service processes."""

    def __init__(self, service_config: dict, tmp_path: Path, **overrides):
        self.inbox = Inbox()
        self.smtp = Controller(self.inbox, hostname="127.0.0.1", port=free_port())
        self.smtp.start()
        address = f"127.0.0.1:{free_port()}"
        config = {k: service_config[k] for k in ("AMQP_URI", "DATABASES", "EVENT_RETRY",
                                                 "OPERATOR_TOKEN")}
        config.update({
            "LOTSEN_HOME": str(tmp_path / "home"), "WEB_SERVER_ADDRESS": address,
            "OUTBOX": {"poll_interval_s": 0.2, "batch_size": 200}, "LOG_FORMAT": "json",
            "SHUTDOWN_GRACE_S": 5,
            "CERTIFICATES": {"public_base_url": f"http://{address}",
                             "issuer_name": "Programmbüro Kommunale Digitallotsen"},
            "MAIL": {"transport": "smtp", "host": "127.0.0.1", "port": self.smtp.port,
                     "max_attempts": 10, "base_delay_s": 0.2, "max_delay_s": 2,
                     "poll_interval_s": 0.2, "lease_s": 10}})
        for key, value in overrides.items():
            config[key] = dict(config.get(key) or {}, **value) if isinstance(value, dict) \
                else value
        self.config = config
        self.path = tmp_path / "system.yaml"
        self.path.write_text(yaml.safe_dump(config, allow_unicode=True))
        self.tmp = tmp_path
        self.base = f"http://{address}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.handles = {}

    # --- running it -----------------------------------------------------------------------

    def cli(self, *args, check: bool = True) -> str:
        result = subprocess.run([sys.executable, "-m", "services.cli", "--config",
                                 str(self.path), *args], cwd=REPO, capture_output=True,
                                text=True, timeout=300)
        if check:
            assert result.returncode == 0, result.stderr + result.stdout
        return result.stdout

    def start(self, *services: str):
        for service in services or SERVICES:
            log = open(self.tmp / f"{service}.log", "a")
            self.processes[service] = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "--config", str(self.path), "run",
                 "--service", service], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, *services: str):
        """Every service asked at once (the health CLI is a process of its own each time)."""
        def ready(service):
            if service == "gateway":
                wait_for(lambda: _ok(self.base + "/health/ready"), timeout=60,
                         message="gateway ready")
            else:
                wait_for(lambda: subprocess.run(
                    [sys.executable, "-m", "services.cli", "--config", str(self.path),
                     "health", service], cwd=REPO, capture_output=True,
                    timeout=60).returncode == 0, timeout=90, message=f"{service} healthy")
        list(eventlet.GreenPool().imap(ready, services or SERVICES))

    def kill(self, service: str):
        """SIGKILL: no shutdown, no acks, whatever was in flight is in flight."""
        process = self.processes.pop(service)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def close(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
        for handle in self.handles.values():
            handle.dispose()
        self.smtp.stop()

    def db(self, service: str):
        if service not in self.handles:
            models = MODELS[service]
            self.handles[service] = open_database(self.config, service, models.OutboxMessage,
                                                  models.InboxRecord)
        return self.handles[service]

    # --- setting up a programme -----------------------------------------------------------

    def set_up_programme(self, register_file: Path, bodies: dict[str, str],
                         extra_seats: int) -> dict:
        """The programme office's part: migrate, import the register, the BW programme with
        money for every guaranteed seat and ``extra_seats`` more, a provider, one key per body.
        ``bodies`` maps AGS to a short town name used in contact addresses."""
        self.cli("migrate")
        self.cli("import-register", str(register_file))
        programme = dict(yaml.safe_load(
            (REPO / "deploy/programmes/bw-digitallotsen.yaml").read_text()))
        programme["funding"]["budget_cents"] = (1136 + extra_seats) * FEE
        path = self.tmp / "programme.yaml"
        path.write_text(yaml.safe_dump(programme, allow_unicode=True))
        assert "1136 eligible bodies" in self.cli("programme", "create", str(path))
        # The provider and the bodies are independent of each other: registered side by side,
        # as several people in the office could, each CLI call its own process.
        calls = [("provider", "create", "VWA Baden")] + [
            ("municipality", "register", ags, "--contact-name", f"Hauptamt {town}",
             "--contact-email", f"hauptamt@{town}.example") for ags, town in bodies.items()]
        provider, *registered = eventlet.GreenPool(4).imap(lambda args: self.cli(*args), calls)
        token = re.search(r"token: (\S+)", provider).group(1)
        keys = {ags: re.search(r": (lk_\S+)", output).group(1)
                for ags, output in zip(bodies, registered)}
        return {"code": programme["code"], "budget": programme["funding"]["budget_cents"],
                "provider_token": token, "keys": keys, "towns": bodies}

    # --- what happened --------------------------------------------------------------------

    def published(self) -> tuple[list[tuple[str, str, dict]], int]:
        """Every event the producers published (source, type, payload), and how many still wait
        in an outbox."""
        events, unpublished = [], 0
        for service in ("enrolment", "funding", "certificates"):
            outbox = MODELS[service].OutboxMessage
            rows = self.db(service).run(lambda s, o=outbox: s.execute(
                select(o.event_type, o.envelope, o.published_at).order_by(o.position)).all())
            for event_type, envelope, published_at in rows:
                if published_at is None:
                    unpublished += 1
                else:
                    events.append((service, event_type, envelope["payload"]))
        return events, unpublished

    def tally(self) -> Tally:
        # What was handled is read before what was published: an event published in between
        # then counts as owed and not yet handled, never as handled and not owed.
        notice = notification_models.Notice
        pending_notices = self.db("notifications").run(lambda s: s.scalar(
            select(func.count()).select_from(notice).where(notice.status != "sent")))
        messages = list(self.inbox.messages)
        handled = {}
        for consumer in ("enrolment", "funding", "certificates", "notifications"):
            inbox = MODELS[consumer].InboxRecord
            handled[consumer] = dict(self.db(consumer).run(lambda s, i=inbox: s.execute(
                select(i.event_type, func.count()).group_by(i.event_type)).all()))
        events, unpublished = self.published()
        tally = Tally(sent=len(events), unpublished=unpublished, pending_notices=pending_notices)
        per_type = Counter((source, event_type) for source, event_type, _ in events)
        subscriptions = topology.subscriptions(topology.service_classes())
        for sub in subscriptions:
            if sub.consumer_service in handled:
                expected = per_type[(sub.source_service, sub.event_type)]
                got = handled[sub.consumer_service].get(sub.event_type, 0)
                tally.due += expected
                tally.handled += got
                tally.lost += max(0, expected - got)
                if got != expected:
                    tally.missing[(sub.consumer_service, sub.event_type)] = expected - got
        tally.parked = list_parked(self.config["AMQP_URI"],
                                   [s.queue_name for s in subscriptions])
        tally.mails_expected = expected_mails([(t, p) for _, t, p in events],
                                              complete=unpublished == 0)
        first_copies = {m["Message-ID"]: m for m in messages}
        tally.mails_received = Counter(kind_of(m) for m in first_copies.values())
        tally.resent = len(messages) - len(first_copies)
        tally.duplicated = sum((tally.mails_received - tally.mails_expected).values())
        return tally

    def settle(self, timeout: float = 180, allowed_resends: int = 0) -> Tally:
        """Wait until every event is published, handled and mailed, then check the lot.

        ``allowed_resends``: mails that may arrive twice with the same Message-ID, because the
        process sending them was killed between the SMTP server's 250 and recording it: SMTP
        has no way to ask whether a mail arrived, so that copy is sent again, and the shared
        Message-ID lets mail programs drop it."""
        previous = []

        def done():
            t = self.tally()
            if t.parked:
                return True  # will not settle by itself: fail below with what is parked
            complete = (t.unpublished == 0 and t.lost == 0 and t.pending_notices == 0
                        and t.mails_received == t.mails_expected)
            # Twice the same complete picture, so nothing was still on its way.
            same = bool(previous) and (previous[-1].sent, previous[-1].handled) == (t.sent,
                                                                                   t.handled)
            previous.append(t)
            return complete and same
        try:
            wait_for(done, timeout=timeout, interval=0.5,
                     message="every event handled and mailed")
        except AssertionError:
            tally = self.tally()
            raise AssertionError(f"not settled after {timeout:.0f}s: {tally.line()}; "
                                 f"unhandled {tally.missing}, unpublished {tally.unpublished}, "
                                 f"notices unsent {tally.pending_notices}, mails expected "
                                 f"{by_kind(tally.mails_expected)}, received "
                                 f"{by_kind(tally.mails_received)}") from None
        time.sleep(1.5)  # a doubled event or mail would show now
        tally = self.tally()
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split(" ")[0]
        TALLIES.append(f"{test}: {tally.line()}")
        print(f"\n{tally.line()}")
        assert tally.parked == [], tally.parked
        assert (tally.unpublished, tally.lost, tally.pending_notices) == (0, 0, 0)
        assert tally.mails_received == tally.mails_expected
        assert (tally.lost, tally.duplicated) == (0, 0)
        assert tally.resent <= allowed_resends
        check = yaml.safe_load(self.cli("funding", "check", "BW-DL"))
        assert check["ok"] is True, check
        return tally


def _ok(url) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False
