"""JSON log lines with service, entrypoint, call id and correlation id; no personal data.

``LogContext`` (a dependency every service declares) puts the worker's identity into context
variables, which greenlets keep apart; the formatter adds them to every line. E-mail addresses
that slip into a message are masked, as a last line of defence.
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import datetime, timezone

from nameko.extensions import DependencyProvider

_service = contextvars.ContextVar("service", default=None)
_entrypoint = contextvars.ContextVar("entrypoint", default=None)
_call_id = contextvars.ContextVar("call_id", default=None)
_correlation_id = contextvars.ContextVar("correlation_id", default=None)

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")


def mask(text: str) -> str:
    return EMAIL.sub("<e-mail>", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname, "logger": record.name,
            "message": mask(record.getMessage()),
            "service": _service.get(), "entrypoint": _entrypoint.get(),
            "call_id": _call_id.get(), "correlation_id": _correlation_id.get(),
        }
        if record.exc_info:
            line["exception"] = record.exc_info[0].__name__  # type only: messages may quote data
        return json.dumps({k: v for k, v in line.items() if v is not None}, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def configure_logging(config: dict):
    fmt = (config.get("LOG_FORMAT") or "json").lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((config.get("LOG_LEVEL") or "INFO").upper())


def correlation_id_of(worker_ctx) -> str | None:
    data = worker_ctx.data or {}
    return data.get("correlation_id") or (worker_ctx.call_id_stack or [None])[0]


class LogContext(DependencyProvider):
    def worker_setup(self, worker_ctx):
        _service.set(worker_ctx.service_name)
        _entrypoint.set(worker_ctx.entrypoint.method_name)
        _call_id.set(worker_ctx.call_id)
        _correlation_id.set(correlation_id_of(worker_ctx))

    def worker_teardown(self, worker_ctx):
        for var in (_entrypoint, _call_id, _correlation_id):
            var.set(None)
