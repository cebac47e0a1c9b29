"""HTTP entrypoints for municipalities. Each one authenticates, parses the request, forwards it
to the enrolment service over RPC with a time limit, and answers JSON or a problem."""
from __future__ import annotations

import base64
import json
import re
import uuid
from contextlib import contextmanager

import eventlet
from nameko.dependency_providers import Config
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from services.common import config as cfg
from services.common.broker import BROKER_GONE, RpcProxy
from services.common.entrypoints import CallAs
from services.common.errors import LotsenError
from services.common.schemas import nul_path
from services.common.logs import LogContext
from services.common.metrics import Metrics
from services.gateway import openapi, verification
from services.gateway.auth import RememberedKeys
from services.gateway.coaching import CoachPages
from services.gateway.office import OfficePages
from services.gateway.portal import PortalPages, pdf_attachment
from services.gateway.problems import HttpProblem, http

JSON = "application/json"
MAX_PAGE = 1_000_000
CERTIFICATE_NUMBER = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,39}-\d{4}-\d{6}$")


class RpcTimeout(Exception):
    pass


def json_response(payload, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status=status, headers=headers or {},
                    content_type=f"{JSON}; charset=utf-8")


class GatewayService(PortalPages, OfficePages, CoachPages):
    """The municipality API (JSON), the portal's pages (``PortalPages``), the programme
    office's pages (``OfficePages``), the coaches' pages (``CoachPages``) and the public
    verification pages."""

    name = "gateway"

    log_context = LogContext()
    metrics = Metrics()

    enrolment = RpcProxy("enrolment")
    certificates = RpcProxy("certificates")
    config = Config()
    known_keys = RememberedKeys()
    call_as = CallAs()

    # --- helpers ---------------------------------------------------------------------------

    @property
    def _settings(self) -> dict:
        return self.config.get("GATEWAY") or {}

    def _call(self, method: str, *args, timeout: float | None = None,
              service: str = "enrolment", acting_for: str | None = None, **kwargs):
        """An RPC call that gives up after a while: nameko's proxy would wait for ever. With
        ``acting_for`` the call carries the signed assertion that the gateway acts for that
        municipality; without it, that the gateway itself calls."""
        if acting_for:
            self.call_as.municipality(acting_for)
        else:
            self.call_as.service()
        seconds = float(timeout or cfg.setting(self._settings, "rpc_timeout_s", 10))
        try:
            with eventlet.Timeout(seconds, RpcTimeout):
                return getattr(getattr(self, service), method)(*args, **kwargs)
        except RpcTimeout:
            raise HttpProblem(503, "Service unavailable",
                              f"the {service} service did not answer in time; try again shortly",
                              headers={"Retry-After": "5"}) from None
        except BROKER_GONE:
            raise HttpProblem(503, "Service unavailable",
                              "the message broker is not reachable; try again shortly",
                              headers={"Retry-After": "5"}) from None

    @staticmethod
    def _api_key(request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise HttpProblem(401, "Authentication required",
                              "send the municipality's API key as 'Authorization: Bearer <key>'",
                              headers={"WWW-Authenticate": 'Bearer realm="lotsen"'})
        return key.strip()

    @contextmanager
    def _key_checked(self):
        """A service that refused the API key answers 401 here."""
        try:
            yield
        except LotsenError as exc:
            if exc.status == 401:
                raise HttpProblem(401, "Authentication failed", "unknown API key",
                                  headers={"WWW-Authenticate": 'Bearer realm="lotsen"'}) from None
            raise

    def _municipality(self, request) -> dict:
        key = self._api_key(request)
        with self._key_checked():
            return self.known_keys.body_for(key, lambda k: self._call("authenticate", k))

    def _json_body(self, request):
        limit = int(cfg.setting(self._settings, "max_body_bytes", 1_048_576))
        if request.content_length is not None and request.content_length > limit:
            raise HttpProblem(413, "Body too large", f"request bodies are limited to {limit} bytes")
        if request.mimetype != JSON:
            raise HttpProblem(415, "Unsupported media type",
                              "send the body as application/json")
        request.max_content_length = limit
        try:
            raw = request.get_data(cache=True)
        except RequestEntityTooLarge:
            raise HttpProblem(413, "Body too large",
                              f"request bodies are limited to {limit} bytes") from None
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise HttpProblem(400, "Malformed JSON",
                              f"the body is not valid JSON: {type(exc).__name__}: {exc}") from None
        where = nul_path(body)
        if where is not None:  # no text field anywhere may hold it, and PostgreSQL cannot store it
            raise HttpProblem(422, "Invalid input", "text must not contain the NUL character",
                              {where or "_schema": ["must not contain the NUL character"]})
        return body

    @staticmethod
    def _object(body, what="the body") -> dict:
        if not isinstance(body, dict):
            raise HttpProblem(422, "Invalid input", f"{what} must be a JSON object",
                              {"_schema": ["expected an object"]})
        return body

    @staticmethod
    def _enrolment_id(value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            # An id that cannot exist answers like one that does not.
            raise HttpProblem(404, "Not found", "no such enrolment") from None

    @staticmethod
    def _flag(request, name: str) -> bool:
        value = request.args.get(name, "false").lower()
        if value not in ("true", "false", "1", "0"):
            raise HttpProblem(422, "Invalid input", f"{name} must be true or false",
                              {name: ["must be true or false"]})
        return value in ("true", "1")

    # --- API ---------------------------------------------------------------------------------

    @http("GET", "/api/v1/courses")
    def courses(self, request):
        body = self._municipality(request)
        return json_response({"items": self._call("list_open_courses", body["ags"], acting_for=body["ags"])})

    @http("POST", "/api/v1/enrolments")
    def enrol(self, request):
        api_key = self._api_key(request)
        body = self.known_keys.known(api_key)
        try:
            enrolment = self._object(self._json_body(request))
            key = request.headers.get("Idempotency-Key")
            if key is not None and "idempotency_key" in enrolment:
                raise HttpProblem(422, "Invalid input", "give the key once, as the header",
                                  {"idempotency_key": ["use the Idempotency-Key header"]})
        except HttpProblem:
            if body is None:
                self._municipality(request)  # a stranger hears 401, not what is wrong inside
            raise
        if key is not None:
            enrolment = dict(enrolment, idempotency_key=key)
        if body is not None:
            created = self._call("enrol", body["ags"], enrolment, acting_for=body["ags"])
        else:
            # A key this gateway has not seen lately: checked in the enrol call itself, not in
            # an authenticate call before it.
            with self._key_checked():
                answer = self._call("enrol_with_key", api_key, enrolment)
            self.known_keys.remember(api_key, answer["body"])
            created = answer["enrolment"]
        return json_response(created, 201, {"Location": f"/api/v1/enrolments/{created['id']}"})

    @http("POST", "/api/v1/enrolments:batch")
    def enrol_batch(self, request):
        api_key = self._api_key(request)
        body = self.known_keys.known(api_key)
        try:
            payload = self._object(self._json_body(request))
            if set(payload) - {"rows"}:
                raise HttpProblem(422, "Invalid input", "unknown fields in the batch",
                                  {f: ["Unknown field."] for f in set(payload) - {"rows"}})
            dry_run = self._flag(request, "dry_run")
        except HttpProblem:
            if body is None:
                self._municipality(request)  # a stranger hears 401, not what is wrong inside
            raise
        if body is not None:
            result = self._call("enrol_batch", body["ags"], payload.get("rows"), dry_run,
                                timeout=60, acting_for=body["ags"])
        else:
            with self._key_checked():
                answer = self._call("enrol_batch_with_key", api_key, payload.get("rows"),
                                    dry_run, timeout=60)
            self.known_keys.remember(api_key, answer["body"])
            result = answer["batch"]
        return json_response(result, 200 if result["dry_run"] else 207 if result["failed"] else 201)

    @http("GET", "/api/v1/enrolments")
    def list_enrolments(self, request):
        body = self._municipality(request)
        filters = {}
        for param, field in (("programme", "programme_code"), ("course", "course_id"),
                             ("status", "status"), ("page", "page"), ("per_page", "per_page")):
            if param in request.args:
                filters[field] = request.args[param]
        unknown = set(request.args) - {"programme", "course", "status", "page", "per_page"}
        if unknown:
            raise HttpProblem(422, "Invalid input", "unknown query parameters",
                              {p: ["Unknown parameter."] for p in sorted(unknown)})
        for name, value in request.args.items(multi=True):
            if "\x00" in value:
                raise HttpProblem(422, "Invalid input", "text must not contain the NUL character",
                                  {name: ["must not contain the NUL character"]})
        page = request.args.get("page", "1").strip()
        if not (page.isascii() and page.isdigit()) or not 1 <= int(page) <= MAX_PAGE:
            # A page far beyond the end would overflow the database's OFFSET.
            raise HttpProblem(422, "Invalid input", f"page is a number from 1 to {MAX_PAGE}",
                              {"page": [f"must be a whole number from 1 to {MAX_PAGE}"]})
        return json_response(self._call("list_enrolments", body["ags"], filters,
                                        acting_for=body["ags"]))

    @http("GET", "/api/v1/enrolments/<enrolment_id>")
    def get_enrolment(self, request, enrolment_id):
        body = self._municipality(request)
        return json_response(self._call("get_enrolment", body["ags"],
                                        self._enrolment_id(enrolment_id), acting_for=body["ags"]))

    @http("DELETE", "/api/v1/enrolments/<enrolment_id>")
    def cancel_enrolment(self, request, enrolment_id):
        body = self._municipality(request)
        return json_response(self._call("cancel_enrolment", body["ags"],
                                        self._enrolment_id(enrolment_id), acting_for=body["ags"]))

    @http("POST", "/api/v1/navigators")
    def name_navigator(self, request):
        body = self._municipality(request)
        data = self._object(self._json_body(request))
        named = self._call("name_navigator", body["ags"], data.get("programme_code"),
                           data.get("navigator"), data.get("replace", False),
                           acting_for=body["ags"])
        return json_response(named, 201)

    @http("GET", "/api/v1/navigators")
    def list_navigators(self, request):
        body = self._municipality(request)
        code = request.args.get("programme_code", "")
        if not re.fullmatch(openapi.PROGRAMME_CODE, code) or len(code) > 40:
            raise HttpProblem(422, "Invalid input", "name the programme by its code",
                              {"programme_code": ["capitals, digits and '-', e.g. SN-DN"]})
        return json_response({"items": self._call("navigators", body["ags"], code[:40],
                                                  acting_for=body["ags"])})

    @http("GET", "/api/v1/navigator-documents/<document_id>")
    def navigator_document_pdf(self, request, document_id):
        """A PDF a coach uploaded for one of the municipality's Navigators (the Agenda)."""
        body = self._municipality(request)
        try:
            document_id = str(uuid.UUID(document_id))
        except ValueError:
            raise HttpProblem(404, "Not found", "no such document") from None
        return pdf_attachment(self._call("navigator_document", body["ags"], document_id,
                                         timeout=60, acting_for=body["ags"]))

    @http("GET", "/api/v1/municipality")
    def municipality(self, request):
        body = self._municipality(request)
        return json_response(self._call("municipality", body["ags"], acting_for=body["ags"]))

    # --- certificates ----------------------------------------------------------------------

    @http("GET", "/api/v1/certificates/<number>.pdf")
    def certificate_pdf(self, request, number):
        body = self._municipality(request)
        if not CERTIFICATE_NUMBER.match(number):
            raise HttpProblem(404, "Not found", "no such certificate")
        document = self._call("get_pdf", number, body["ags"], service="certificates",
                              acting_for=body["ags"])
        return Response(base64.b64decode(document["content_base64"]),
                        content_type="application/pdf",
                        headers={"Content-Disposition":
                                 f'attachment; filename="{document["filename"]}"'})

    @http("GET", "/api/v1/verify/<code>")
    def verify_json(self, request, code):
        return json_response(self._call("verify_code", code, service="certificates"),
                             headers={"Cache-Control": "no-store"})

    @http("GET", "/verify/<code>")
    def verify_page(self, request, code):
        result = self._call("verify_code", code, service="certificates")
        return Response(verification.page(result, code), content_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    @http("POST", "/api/v1/credentials:verify")
    def verify_credential(self, request):
        payload = self._object(self._json_body(request))
        if set(payload) != {"credential"}:
            raise HttpProblem(422, "Invalid input", "send exactly {\"credential\": \"<JWS>\"}",
                              {"credential": ["required, and nothing else"]})
        return json_response(self._call("verify_credential", payload["credential"],
                                        service="certificates"))

    @http("GET", "/.well-known/jwks.json")
    def jwks(self, request):
        return json_response(self._call("jwks", service="certificates"),
                             headers={"Cache-Control": "max-age=300"})

    @http("GET", "/api/v1/openapi.json")
    def openapi_document(self, request):
        return json_response(openapi.document())

    @http("GET", "/api/docs")
    def docs(self, request):
        return Response(openapi.html(), content_type="text/html; charset=utf-8")

    # --- probes ------------------------------------------------------------------------------

    @http("GET", "/health/live")
    def live(self, request):
        return json_response({"status": "ok"})

    @http("GET", "/health/ready")
    def ready(self, request):
        try:
            health = self._call("health", timeout=cfg.setting(self._settings,
                                                              "ready_timeout_s", 2))
        except HttpProblem:
            return json_response({"status": "unavailable", "enrolment": "no answer"}, 503,
                                 {"Retry-After": "5"})
        return json_response({"status": "ok", "enrolment": health})

    @http("GET,POST,PUT,PATCH,DELETE", "/<path:anything>")
    def not_found(self, request, anything):
        raise HttpProblem(404, "Not found", f"there is nothing at /{anything}")
