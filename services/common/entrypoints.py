"""Entrypoint decorators that keep errors typed and logs free of personal data.

A domain error (``LotsenError``) reaches the caller as itself and is logged as expected. Any
other exception is logged by type and traceback only (its message may quote a participant's
data, e.g. a database constraint's key), and the caller receives an ``InternalError`` with the
call id to quote to an operator.
"""
from __future__ import annotations

import functools
import hmac
import logging
import traceback

from nameko.contextdata import ContextDataProvider
from nameko.extensions import DependencyProvider

from services.common import callers
from services.common.broker import rpc as broker_rpc
from services.common.errors import AuthenticationFailed, LotsenError
from services.common.messaging import event_handler as reliable_event_handler

log = logging.getLogger(__name__)


class InternalError(LotsenError):
    status = 500
    title = "Internal error"


def guarded(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except LotsenError:
            raise
        except Exception as exc:
            frames = "".join(traceback.format_tb(exc.__traceback__))
            log.error("unexpected %s in %s.%s\n%s", type(exc).__name__,
                      getattr(self, "name", "?"), method.__name__, frames)
            raise InternalError(f"internal error ({type(exc).__name__}) in "
                                f"{method.__name__}; details are in the service log") from None
    return wrapper


def rpc(*callers_allowed):
    """``@rpc(MUNICIPALITY)``: an RPC method, who may call it (``services.common.callers``),
    typed errors and no internals in what the caller sees."""
    def decorate(method):
        return broker_rpc(*callers_allowed, expected_exceptions=(LotsenError,))(guarded(method))
    return decorate


def event_handler(source_service: str, event_type: str):
    def decorate(method):
        return reliable_event_handler(source_service, event_type,
                                      expected_exceptions=(LotsenError,))(guarded(method))
    return decorate


class ProviderToken(ContextDataProvider):
    """The education provider's token, sent in the RPC call's context data."""

    context_key = "provider_token"


class CoachToken(ContextDataProvider):
    """A coach's token (coaching programmes), sent in the RPC call's context data."""

    context_key = "coach_token"


class OperatorCheck:
    def __init__(self, expected: str, given: str):
        self.granted = bool(expected) and hmac.compare_digest(expected.encode(), given.encode())

    def require(self):
        if not self.granted:
            raise AuthenticationFailed("operator token missing or wrong (set OPERATOR_TOKEN)")


class Operator(DependencyProvider):
    """Whether the call carries the operator token (``operator_token`` in context data);
    with no OPERATOR_TOKEN configured, operator calls are off."""

    def get_dependency(self, worker_ctx):
        return OperatorCheck(self.container.config.get("OPERATOR_TOKEN") or "",
                             (worker_ctx.data or {}).get("operator_token") or "")


class CallAs(DependencyProvider):
    """Signs this worker's outgoing RPC calls: as this service, or (the gateway) as acting for
    the municipality it authenticated in this request."""

    def setup(self):
        self.key = callers.service_key(self.container.config)

    def get_dependency(self, worker_ctx):
        return Signer(worker_ctx.data, self.key, self.container.service_name)


class Signer:
    def __init__(self, context: dict, key: bytes, service_name: str):
        self.context, self.key, self.service_name = context, key, service_name

    def service(self):
        self.context[callers.ASSERTION_KEY] = callers.sign_assertion(self.key, self.service_name)

    def municipality(self, ags: str):
        self.context[callers.ASSERTION_KEY] = callers.sign_assertion(self.key, "gateway", ags)


class GroupCommits(DependencyProvider):
    """One ``GroupCommit`` per container: events that queue up while a transaction runs are
    handled together in the next one (``services.common.outbox.handle_in_group``)."""

    def __init__(self, setting: str = "events_per_transaction", default: int = 100):
        self.setting, self.default = setting, default

    def setup(self):
        from services.common import config as cfg
        from services.common.turns import GroupCommit
        section = self.container.config.get("EVENTS") or {}
        self.group = GroupCommit(int(cfg.setting(section, self.setting, self.default)))

    def get_dependency(self, worker_ctx):
        return self.group
