"""The gateway's HTTP server: nameko's ``WebServer`` with time limits on every socket operation,
and request bodies read in full *before* a worker is taken.

nameko runs eventlet.wsgi without a socket timeout, and its ``@http`` entrypoints share the
container's worker pool (``max_workers``) with everything else: a handler that reads a body the
client never sends holds its worker for ever, so ten such connections starve the whole gateway,
the liveness probe included. Here the body is read by the connection's own green thread, within
``GATEWAY.read_timeout_s`` in total and at most ``GATEWAY.max_body_bytes``; a chunked body
(``Transfer-Encoding: chunked``) is read the same way and handed on with its length, so werkzeug
sees it (it reads a body without ``Content-Length`` as empty)."""
from __future__ import annotations

import io
import logging
import re
import socket

import eventlet
import eventlet.semaphore
from nameko.web.server import HttpOnlyProtocol, WebServer

from services.common import config as cfg

CHUNK = 64 * 1024


def limits(config: dict, document: bool = False) -> tuple[float, int]:
    """(read timeout in seconds, body limit in bytes) from the ``GATEWAY`` settings; a form
    that uploads a document (a coach's PDF) has ``max_document_bytes`` and twice the time."""
    gateway = config.get("GATEWAY") or {}
    timeout_s = float(cfg.setting(gateway, "read_timeout_s", 10))
    if document:
        return 2 * timeout_s, int(cfg.setting(gateway, "max_document_bytes", 9 * 1_048_576))
    return timeout_s, int(cfg.setting(gateway, "max_body_bytes", 1_048_576))


LINK_TOKEN = re.compile(r"(/(?:portal|buero|coaching)/link/)[^\s?\"]+")


class HideLinkTokens(logging.Filter):
    """Access log lines name the request's path: a sign-in link's token (a credential until
    it is used; the portal's, the office's, the coaches') is replaced before the line is
    written."""

    def filter(self, record):
        if isinstance(record.msg, str) and "/link/" in record.msg:
            record.msg = LINK_TOKEN.sub(r"\1<token>", record.msg)
        return True


class GatewayWebServer(WebServer):
    """Every read and write on a client connection (request line, headers, body, answer, an
    idle keep-alive) gives up after ``GATEWAY.read_timeout_s``."""

    def get_wsgi_server(self, sock, wsgi_app, protocol=HttpOnlyProtocol, debug=False):
        server = super().get_wsgi_server(sock, wsgi_app, protocol=protocol, debug=debug)
        server.socket_timeout = limits(self.container.config)[0]
        if not any(isinstance(f, HideLinkTokens) for f in server.log.filters):
            server.log.addFilter(HideLinkTokens())
        return server


BODIES_AT_ONCE = eventlet.semaphore.Semaphore(64)
DOCUMENTS_AT_ONCE = eventlet.semaphore.Semaphore(4)  # the large ones: 4 x 9 MiB at most


class BodyRefused(Exception):
    def __init__(self, status: int, title: str, detail: str):
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


class _BodyTimeout(Exception):
    pass


def _stop_reading(environ) -> None:
    """The rest of this body will not be read: end the connection after the answer (eventlet
    would otherwise wait for the rest of the body to discard it)."""
    source = environ.get("eventlet.input")
    sock = source.get_socket() if source is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def read_body(environ: dict, limit: int, timeout_s: float,
              gate: eventlet.semaphore.Semaphore | None = None) -> None:
    """Read the request body now and put it back into ``environ`` as a complete body with a
    ``Content-Length``; raise ``BodyRefused`` for one that is too large, too slow or broken."""
    coding = environ.get("HTTP_TRANSFER_ENCODING", "").strip().lower()
    chunked = coding == "chunked"
    if coding and not chunked:
        _stop_reading(environ)
        raise BodyRefused(400, "Bad request",
                          "the only transfer coding accepted for a request body is 'chunked'")
    if chunked:
        wanted = limit + 1
    else:
        wanted = int(environ.get("CONTENT_LENGTH") or 0)  # eventlet refused malformed ones
        if wanted == 0:
            return
        if wanted > limit:
            _stop_reading(environ)  # not worth reading (and discarding) what was announced
            raise BodyRefused(413, "Body too large", f"request bodies are limited to {limit} bytes")
    stream = environ["wsgi.input"]
    parts, size = [], 0
    # Bodies are read before the key is checked: bound how many are held at once, so that many
    # connections cannot fill the memory (at most BODIES_AT_ONCE x the size limit).
    gate = BODIES_AT_ONCE if gate is None else gate
    if not gate.acquire(timeout=timeout_s):
        _stop_reading(environ)
        raise BodyRefused(503, "Service unavailable",
                          "too many request bodies are being received; try again shortly")
    try:
        with eventlet.Timeout(timeout_s, _BodyTimeout):
            while size < wanted:
                piece = stream.read(min(CHUNK, wanted - size))
                if not piece:
                    break
                parts.append(piece)
                size += len(piece)
    except (_BodyTimeout, socket.timeout):
        _stop_reading(environ)
        raise BodyRefused(408, "Request timeout",
                          f"the request body did not arrive within {timeout_s:g} s") from None
    except (ValueError, OSError):  # broken chunk framing, or the client went away
        _stop_reading(environ)
        raise BodyRefused(400, "Bad request", "the request body is malformed or incomplete") \
            from None
    finally:
        gate.release()
    if size > limit:  # the rest is read and dropped after the answer, so the client sees it
        raise BodyRefused(413, "Body too large", f"request bodies are limited to {limit} bytes")
    if not chunked and size < wanted:
        _stop_reading(environ)
        raise BodyRefused(400, "Bad request", "the request body is shorter than its Content-Length")
    body = b"".join(parts)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
