"""Test doubles that are real nameko services, and ways to seed a database."""
from __future__ import annotations

import time
from datetime import date, timedelta

from sqlalchemy import func, select

from services.common.clock import calendar_today
from services.common.entrypoints import event_handler
from services.enrolment import domain
from services.enrolment.models import Enrolment, OutboxMessage
from services.enrolment.register import import_register, parse_register

_REGISTER_CACHE = {}


def bw_records(register_file):
    if "bw" not in _REGISTER_CACHE:
        _REGISTER_CACHE["bw"] = [r for r in parse_register(register_file) if r.land == "08"]
    return _REGISTER_CACHE["bw"]


PROGRAMME = {
    "code": "BW-DL", "name": "Kommunale Digitallotsen Baden-Württemberg", "land": "08",
    "role_name": "Digitallotse", "eligible_kinds": ["gemeinde", "kreis"],
    "enrolment_opens_on": date(2026, 1, 1), "enrolment_closes_on": date(2099, 12, 31),
}


def course_data(capacity=22, modules=5, title="Basisseminar", location="Wiesloch"):
    first = calendar_today() + timedelta(days=30)
    return {"programme_code": "BW-DL", "title": title, "location": location,
            "capacity": capacity, "open": True,
            "modules": [{"number": n, "title": f"Modul {n}", "date": first + timedelta(days=n)}
                        for n in range(1, modules + 1)]}


def seed(handle, register_file, capacity=22, providers=1):
    """Register (Baden-Württemberg part), programme BW-DL, providers, one open course each."""
    def run(session):
        import_register(session, bw_records(register_file))
        programme = domain.create_programme(session, dict(PROGRAMME))
        out = {"programme_id": programme.id, "providers": [], "courses": []}
        for n in range(providers):
            provider, token = domain.create_provider(session, f"Bildungsträger {n + 1}")
            course = domain.create_course(session, provider, course_data(capacity=capacity))
            out["providers"].append({"id": provider.id, "token": token})
            out["courses"].append(course.id)
        return out
    return handle.run(run)


def gemeinden(register_file, count):
    return [r.ags for r in bw_records(register_file) if r.kind == "gemeinde"][:count]


def participant(n, domain_name="example.org"):
    return {"given_name": f"Jürgen{n}", "family_name": f"Weiß{n}",
            "email": f"teilnehmer{n}@{domain_name}", "department": "Hauptamt"}


def count_enrolments(handle, **where):
    def run(session):
        query = select(func.count()).select_from(Enrolment)
        for key, value in where.items():
            query = query.where(getattr(Enrolment, key) == value)
        return session.scalar(query)
    return handle.run(run)


def outbox_events(handle, event_type=None):
    def run(session):
        query = select(OutboxMessage).order_by(OutboxMessage.position)
        if event_type:
            query = query.where(OutboxMessage.event_type == event_type)
        return [row.envelope for row in session.scalars(query)]
    return handle.run(run)


def wait_for(predicate, timeout=15.0, interval=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


class Recorder:
    """A consumer of enrolment events that records what it was given.

    ``behaviour`` decides per call: "ok", "fail" (a transient error) or "fail_n:<k>" (fail the
    first k attempts of each event).
    """

    name = "recorder"
    received: list = []
    attempts: dict = {}
    behaviour = "ok"

    @classmethod
    def reset(cls, behaviour="ok"):
        cls.received = []
        cls.attempts = {}
        cls.behaviour = behaviour

    @event_handler("enrolment", "enrolment_created")
    def on_enrolment_created(self, envelope):
        key = envelope.get("event_id") if isinstance(envelope, dict) else repr(envelope)
        Recorder.attempts[key] = Recorder.attempts.get(key, 0) + 1
        if not isinstance(envelope, dict) or "payload" not in envelope:
            from services.common.events import parse_event
            parse_event(envelope, "enrolment_created")  # raises ContractViolation
        if Recorder.behaviour == "fail":
            raise RuntimeError("downstream unavailable")
        if Recorder.behaviour.startswith("fail_n:"):
            if Recorder.attempts[key] <= int(Recorder.behaviour.split(":")[1]):
                raise RuntimeError("downstream unavailable")
        Recorder.received.append(envelope)




class SignedRpc:
    """A standalone RPC proxy that proves its caller as the real ones do: as the gateway
    acting for the AGS each call names (``.enrol(ags, ...)``), or as the operator."""

    def __init__(self, service: str, config: dict, operator: bool = False, **options):
        from nameko.standalone.rpc import ServiceRpcProxy

        self._config = config
        data = {"operator_token": config["OPERATOR_TOKEN"]} if operator else {}
        self._proxy = ServiceRpcProxy(service, config, context_data=data, **options)
        self._sign_each = not operator

    def __enter__(self):
        self._service = self._proxy.start()
        return self

    def __exit__(self, *exc):
        self._proxy.stop()

    def __getattr__(self, method):
        target = getattr(self._service, method)
        if not self._sign_each:
            return target

        def call(ags, *args, **kwargs):
            self._proxy._worker_ctx.data.update(acting_for(self._config, ags))
            return target(ags, *args, **kwargs)
        return call


def sign_for(proxy, config: dict, ags: str | None = None):
    """Make a standalone proxy's next calls carry the gateway's assertion (for ``ags``)."""
    proxy._worker_ctx.data.update(acting_for(config, ags))


def producer_dispatcher(config: dict, user_id: str | None = "self"):
    """Publish events as their producer's relay does: to ``<service>.events``, persistent, with
    the AMQP ``user_id`` the broker checks (by default this connection's user, which is every
    producer's user when the config names no ``BROKER_USERS``). ``user_id=None`` publishes
    without it, as a forger who is merely connected would."""
    from kombu import Connection
    from nameko.standalone.events import get_event_exchange

    from services.common import config as cfg
    user = cfg.broker_user(config) if user_id == "self" else user_id

    def dispatch(service: str, event_type: str, envelope: dict):
        with Connection(cfg.amqp_uri(config),
                        transport_options={"confirm_publish": True}) as connection:
            connection.Producer().publish(
                envelope, exchange=get_event_exchange(service, config), routing_key=event_type,
                serializer="json", delivery_mode=2, retry=True,
                **({"user_id": user} if user else {}))
    return dispatch


def acting_for(config: dict, ags: str | None) -> dict:
    """Context data of a call the gateway makes for the municipality ``ags`` (None: for
    itself)."""
    from services.common import callers
    return {callers.ASSERTION_KEY: callers.sign_assertion(callers.service_key(config),
                                                          "gateway", ags)}
