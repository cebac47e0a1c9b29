"""Who may call an RPC method, and the proof each kind of caller brings.

Being connected to the broker proves nothing: context data travels as message headers that the
caller writes itself. So every RPC method names the callers it answers, and each kind brings a
proof the service can check:

* ``PUBLIC``: anyone (certificate verification, the JWKS, health).
* ``MUNICIPALITY``: the gateway acting for the municipality it authenticated in this request.
  It sends a short-lived *assertion* "gateway acts for AGS until T", signed with the service key
  (HMAC-SHA256), and the method's ``ags`` argument must be that AGS.
* ``GATEWAY``: the gateway itself (turning an API key into a municipality).
* ``SERVICE``: one of our services (the same assertion, with the service's name as subject).
* ``PROVIDER``: an education provider's token. Its presence is checked here; the domain looks
  it up and lets the provider touch only its own courses and certificates.
* ``COACH``: a coach's token (coaching programmes). Its presence is checked here; the domain
  looks it up and lets the coach touch only the Navigators they coach.
* ``OPERATOR``: the operator token.

No nameko here: the RPC entrypoint (``services.common.broker.Rpc``) calls ``identify``.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from services.common import config as cfg
from services.common.errors import AuthenticationFailed

PUBLIC = "public"
MUNICIPALITY = "municipality"
GATEWAY = "gateway"
SERVICE = "service"
PROVIDER = "provider"
OPERATOR = "operator"
COACH = "coach"
KINDS = (PUBLIC, MUNICIPALITY, GATEWAY, SERVICE, PROVIDER, COACH, OPERATOR)

ASSERTION_KEY = "lotsen_caller"  # context data key of a signed assertion
PROVIDER_KEY = "provider_token"
COACH_KEY = "coach_token"
OPERATOR_KEY = "operator_token"
ASSERTION_TTL_S = 60  # long enough for clock skew between pods, too short to be worth stealing
_VERSION = "v1"


class CallerRefused(Exception):
    """A call without the proof its method asks for; ``reason`` is a short label for the log,
    the metric and the caller's ``AuthenticationFailed``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    def for_caller(self, method: str, kinds) -> AuthenticationFailed:
        return AuthenticationFailed(f"{method} answers {' or '.join(kinds)} callers only "
                                    f"({self.reason})", {"caller": [self.reason]})


@dataclass(frozen=True)
class Caller:
    kind: str
    subject: str | None = None  # "gateway", a service name; None for tokens
    ags: str | None = None


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_assertion(key: bytes, subject: str, ags: str | None = None,
                   ttl_s: float = ASSERTION_TTL_S, now: float | None = None) -> str:
    """``subject`` (gateway or a service) vouches that it acts for ``ags`` until now + ttl."""
    expires = int((now if now is not None else time.time()) + ttl_s)
    message = f"{_VERSION}|{subject}|{ags or '-'}|{expires}"
    return f"{message}|{_mac(key, message)}"


def verify_assertion(key: bytes, assertion, now: float | None = None) -> Caller:
    if not isinstance(assertion, str) or len(assertion) > 200:
        raise CallerRefused("malformed_assertion")
    message, _, mac = assertion.rpartition("|")
    parts = message.split("|")
    if len(parts) != 4 or parts[0] != _VERSION or not parts[3].isdigit():
        raise CallerRefused("malformed_assertion")
    if len(mac) != 64 or not hmac.compare_digest(mac.encode("utf-8", "replace"),
                                                 _mac(key, message).encode("ascii")):
        raise CallerRefused("bad_signature")
    if int(parts[3]) < (now if now is not None else time.time()):
        raise CallerRefused("expired_assertion")
    return Caller(kind=GATEWAY if parts[1] == "gateway" else SERVICE, subject=parts[1],
                  ags=None if parts[2] == "-" else parts[2])


def identify(kinds: tuple[str, ...], context: dict, arguments: dict, *, service_key: bytes,
             operator_token: str, now: float | None = None) -> Caller:
    """The caller of a method that answers ``kinds``, proven from the call's context data;
    ``arguments`` are the call's arguments by name (``ags`` is checked against the assertion).
    Raises ``CallerRefused`` with the reason when no allowed kind is proven."""
    context = context or {}
    if PUBLIC in kinds:
        return Caller(PUBLIC)
    reason = "no_credential"
    if OPERATOR in kinds and context.get(OPERATOR_KEY):
        given = context[OPERATOR_KEY]
        if operator_token and isinstance(given, str) and hmac.compare_digest(
                operator_token.encode(), given.encode()):
            return Caller(OPERATOR)
        reason = "wrong_operator_token"
    if PROVIDER in kinds and context.get(PROVIDER_KEY):
        if isinstance(context[PROVIDER_KEY], str):
            return Caller(PROVIDER)
        reason = "malformed_provider_token"
    if COACH in kinds and context.get(COACH_KEY):
        if isinstance(context[COACH_KEY], str):
            return Caller(COACH)
        reason = "malformed_coach_token"
    if {MUNICIPALITY, GATEWAY, SERVICE} & set(kinds) and context.get(ASSERTION_KEY):
        caller = verify_assertion(service_key, context[ASSERTION_KEY], now)
        if MUNICIPALITY in kinds and caller.subject == "gateway" and caller.ags is not None:
            if arguments.get("ags") == caller.ags:
                return Caller(MUNICIPALITY, caller.subject, caller.ags)
            reason = "other_municipality"
        if GATEWAY in kinds and caller.subject == "gateway":
            return caller
        if SERVICE in kinds and caller.kind == SERVICE:
            return caller
        reason = reason if reason == "other_municipality" else "caller_not_allowed"
    raise CallerRefused(reason)


def service_key(config: dict) -> bytes:
    """The key that signs assertions. Configured (``SERVICE_KEY``) everywhere but the embedded
    default, which makes one in ``LOTSEN_HOME/secrets`` and shares it between the processes of
    this machine."""
    configured = config.get("SERVICE_KEY")
    if configured:
        if len(str(configured)) < 32:
            raise RuntimeError("SERVICE_KEY must be at least 32 characters long")
        return str(configured).encode("utf-8")
    if config.get("REQUIRE_SECRETS"):
        raise RuntimeError("SERVICE_KEY is not set: every service and the gateway need the same "
                           "secret key (e.g. python -c 'import secrets; "
                           "print(secrets.token_urlsafe(32))')")
    return _local_key(cfg.lotsen_home(config) / "secrets" / "service.key")


def _local_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        candidate = path.with_name(f".{path.name}.{os.getpid()}")
        candidate.write_text(secrets.token_urlsafe(48), encoding="ascii")
        candidate.chmod(0o600)
        try:
            os.link(candidate, path)  # the first process to get here wins; others read its key
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_text(encoding="ascii").strip().encode("ascii")
