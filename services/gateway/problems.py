"""RFC 9457 problem details for every error the gateway answers, and the entrypoint that uses
them: nameko's ``@http`` answers unexpected errors with plain text and never limits a body."""
from __future__ import annotations

import json
import logging

from nameko.exceptions import BadRequest as NamekoBadRequest
from nameko.web.handlers import HttpRequestHandler
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from services.common.errors import LotsenError
from services.gateway import web

log = logging.getLogger(__name__)

PROBLEM_TYPES = {
    400: "bad-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
    405: "method-not-allowed", 408: "request-timeout", 409: "conflict", 413: "body-too-large",
    415: "unsupported-media-type", 422: "unprocessable", 500: "internal-error",
    503: "unavailable",
}


class HttpProblem(Exception):
    """An error the gateway itself finds (before or instead of calling a service)."""

    def __init__(self, status: int, title: str, detail: str, fields: dict | None = None,
                 headers: dict | None = None):
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.fields = fields or {}
        self.headers = headers or {}


def field_errors(fields: dict) -> list[dict]:
    errors = []
    for name, problems in sorted(fields.items()):
        for problem in problems if isinstance(problems, list) else [problems]:
            errors.append({"field": name, "message": str(problem)})
    return errors


def problem_body(status: int, title: str, detail: str, fields: dict | None = None,
                 kind: str | None = None) -> dict:
    body = {"type": f"/problems/{kind or PROBLEM_TYPES.get(status, 'error')}", "title": title,
            "status": status, "detail": detail}
    if fields:
        body["errors"] = field_errors(fields)
    return body


def problem_response(status: int, title: str, detail: str, fields: dict | None = None,
                     headers: dict | None = None, kind: str | None = None) -> Response:
    return Response(json.dumps(problem_body(status, title, detail, fields, kind),
                               ensure_ascii=False),
                    status=status, headers=headers or {},
                    content_type="application/problem+json; charset=utf-8")


def response_for(exc: BaseException) -> Response:
    if isinstance(exc, HttpProblem):
        return problem_response(exc.status, exc.title, exc.detail, exc.fields, exc.headers)
    if isinstance(exc, LotsenError):
        kind = "duplicate" if type(exc).__name__ == "DuplicateEnrolment" else None
        return problem_response(exc.status, exc.title, exc.message, exc.fields, kind=kind)
    if isinstance(exc, HTTPException):  # werkzeug's own: size limit, bad form data, ...
        return problem_response(exc.code or 400, exc.name, exc.description or exc.name)
    if isinstance(exc, NamekoBadRequest):
        return problem_response(400, "Bad request", "the request does not fit this endpoint")
    log.error("unexpected %s in the gateway", type(exc).__name__)
    return problem_response(500, "Internal error", "something went wrong on our side; "
                            "the operators have the details")


class ProblemHttpEntrypoint(HttpRequestHandler):
    server = web.GatewayWebServer()

    def __init__(self, method, url, document=False, **kwargs):
        kwargs.setdefault("expected_exceptions", (LotsenError, HttpProblem))
        self.document = document  # a form that uploads a document: the larger limit
        super().__init__(method, url, **kwargs)

    def handle_request(self, request):
        # Runs in the connection's green thread: the body is read (with its time and size
        # limits) before a worker of the shared pool is taken.
        timeout_s, limit = web.limits(self.container.config, self.document)
        try:
            web.read_body(request.environ, limit, timeout_s,
                          web.DOCUMENTS_AT_ONCE if self.document else None)
        except web.BodyRefused as exc:
            return self.body_refused(exc)
        return super().handle_request(request)

    def body_refused(self, exc: web.BodyRefused) -> Response:
        return problem_response(exc.status, exc.title, exc.detail, headers={
            "Retry-After": "5"} if exc.status == 503 else None)

    def response_from_exception(self, exc):
        return response_for(exc)


http = ProblemHttpEntrypoint.decorator
