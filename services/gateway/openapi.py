"""The OpenAPI 3 document of the gateway, generated from the marshmallow schemas."""
from __future__ import annotations

import functools
import html as html_lib
import json

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from services.gateway import schemas

PROBLEM = {"application/problem+json": {"schema": "Problem"}}


def _error(description):
    return {"description": description, "content": PROBLEM}


COMMON_ERRORS = {"401": _error("missing or unknown API key"),
                 "503": _error("the enrolment service did not answer in time (Retry-After)")}
BODY_ERRORS = {"400": _error("malformed JSON, or a broken or incomplete body"),
               "408": _error("the body did not arrive within the read timeout"),
               "413": _error("body too large"),
               "415": _error("not application/json"),
               "422": _error("invalid input, with the field errors")}
CODE = {"name": "code", "in": "path", "required": True, "schema": {"type": "string"},
        "example": "7KQ2M-8XH4-R9TZ"}
ENROLMENT_ID = {"name": "enrolment_id", "in": "path", "required": True,
                "schema": {"type": "string", "format": "uuid"}}


def _json(schema):
    return {"application/json": {"schema": schema}}


def _ok(schema, description="OK"):
    return {"description": description, "content": _json(schema)}


PROGRAMME_CODE = "^[A-Z0-9][A-Z0-9-]*$"

PATHS = {
    "/api/v1/courses": {"get": {
        "summary": "Open courses the municipality may enrol into", "operationId": "listCourses",
        "responses": {"200": _ok("CourseList"), **COMMON_ERRORS}}},
    "/api/v1/enrolments": {
        "post": {
            "summary": "Enrol one participant", "operationId": "enrol",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                            "description": "the same key and body return the first answer"}],
            "requestBody": {"required": True, "content": _json("EnrolmentRequest")},
            "responses": {"201": _ok("Enrolment", "enrolled: a seat or the waitlist"),
                          **BODY_ERRORS, **COMMON_ERRORS,
                          "404": _error("no such course"),
                          "409": _error("participant already enrolled in the programme")}},
        "get": {
            "summary": "The municipality's own enrolments", "operationId": "listEnrolments",
            "parameters": [
                {"name": "programme", "in": "query",
                 "schema": {"type": "string", "pattern": "^[^\\x00]*$"}},
                {"name": "course", "in": "query", "schema": {"type": "string", "format": "uuid"}},
                {"name": "status", "in": "query", "schema": {
                    "type": "string", "enum": ["confirmed", "waitlisted", "cancelled", "completed"]}},
                {"name": "page", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1_000_000}},
                {"name": "per_page", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
            "responses": {"200": _ok("EnrolmentPage"), "422": _error("bad filter"),
                          **COMMON_ERRORS}}},
    "/api/v1/enrolments:batch": {"post": {
        "summary": "Enrol up to 500 participants; one result per row",
        "operationId": "enrolBatch",
        "parameters": [{"name": "dry_run", "in": "query", "schema": {"type": "boolean"},
                        "description": "check every row, store nothing"}],
        "requestBody": {"required": True, "content": _json("BatchRequest")},
        "responses": {"201": _ok("BatchResult", "every row enrolled"),
                      "207": _ok("BatchResult", "some rows failed; see each row"),
                      "200": _ok("BatchResult", "dry run"), **BODY_ERRORS, **COMMON_ERRORS}}},
    "/api/v1/navigators": {
        "get": {"summary": "The municipality's Navigators in a coaching programme",
                "operationId": "listNavigators",
                "parameters": [{"name": "programme_code", "in": "query", "required": True,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 40,
                                           "pattern": PROGRAMME_CODE},
                                "example": "SN-DN"}],
                "responses": {"200": _ok("NavigatorList"),
                              "404": _error("no such programme"),
                              "422": _error("not a coaching programme"), **COMMON_ERRORS}},
        "post": {"summary": "Name the municipality's one Navigator (or replace them)",
                 "operationId": "nameNavigator",
                 "requestBody": {"required": True, "content": _json("NavigatorRequest")},
                 "responses": {"201": _ok("Navigator"),
                               "404": _error("no such programme"),
                               "409": _error("a Navigator is named already (send replace)"),
                               **BODY_ERRORS, **COMMON_ERRORS}}},
    "/api/v1/navigator-documents/{document_id}": {"get": {
        "summary": "A PDF a coach uploaded for one of the municipality's Navigators (the "
                   "Digitale Agenda); the Navigator's milestones name it document:<id>",
        "operationId": "getNavigatorDocument",
        "parameters": [{"name": "document_id", "in": "path", "required": True,
                        "schema": {"type": "string", "format": "uuid"}}],
        "responses": {"200": {"description": "the document",
                              "content": {"application/pdf": {"schema": {"type": "string",
                                                                         "format": "binary"}}}},
                      "404": _error("no such document of this municipality's Navigators"),
                      **COMMON_ERRORS}}},
    "/api/v1/enrolments/{enrolment_id}": {
        "parameters": [ENROLMENT_ID],
        "get": {"summary": "One of the municipality's enrolments", "operationId": "getEnrolment",
                "responses": {"200": _ok("Enrolment"), "404": _error("no such enrolment"),
                              **COMMON_ERRORS}},
        "delete": {"summary": "Cancel an enrolment (repeating it is harmless)",
                   "operationId": "cancelEnrolment",
                   "responses": {"200": _ok("Enrolment"), "404": _error("no such enrolment"),
                                 "422": _error("completed enrolments cannot be cancelled"),
                                 **COMMON_ERRORS}}},
    "/api/v1/municipality": {"get": {
        "summary": "The municipality, its enrolments and funding per programme",
        "operationId": "getMunicipality",
        "responses": {"200": _ok("Municipality"), **COMMON_ERRORS}}},
    "/api/v1/certificates/{number}.pdf": {"get": {
        "summary": "One of the municipality's certificates as PDF", "operationId": "getCertificatePdf",
        "parameters": [{"name": "number", "in": "path", "required": True,
                        "schema": {"type": "string"}, "example": "BW-DL-2026-000123"}],
        "responses": {"200": {"description": "the certificate",
                              "content": {"application/pdf": {"schema": {"type": "string",
                                                                         "format": "binary"}}}},
                      "404": _error("no such certificate of this municipality"),
                      "410": _error("the holder's data has been erased: no PDF any more"),
                      **COMMON_ERRORS}}},
    "/api/v1/verify/{code}": {"get": {
        "summary": "Verify a certificate by its code (public)", "operationId": "verifyCode",
        "security": [], "parameters": [CODE],
        "responses": {"200": _ok("Verification", "status valid, revoked, superseded or unknown; "
                                       "holder_erased: the holder's data was erased "
                                       "(participant is then null)"),
                      "503": COMMON_ERRORS["503"]}}},
    "/verify/{code}": {"get": {
        "summary": "The verification page for people (public)", "operationId": "verifyPage",
        "security": [], "parameters": [CODE],
        "responses": {"200": {"description": "HTML",
                              "content": {"text/html": {"schema": {"type": "string"}}}},
                      "503": COMMON_ERRORS["503"]}}},
    "/api/v1/credentials:verify": {"post": {
        "summary": "Verify a presented signed credential (JWS, public)",
        "operationId": "verifyCredential", "security": [],
        "requestBody": {"required": True, "content": _json("CredentialCheck")},
        "responses": {"200": _ok("CredentialResult"), **BODY_ERRORS,
                      "503": COMMON_ERRORS["503"]}}},
    "/.well-known/jwks.json": {"get": {
        "summary": "Public keys of every certificate signing key (public)",
        "operationId": "jwks", "security": [],
        "responses": {"200": {"description": "JWKS",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                      "503": COMMON_ERRORS["503"]}}},
    "/api/v1/openapi.json": {"get": {
        "summary": "This document", "operationId": "getOpenApi", "security": [],
        "responses": {"200": {"description": "OpenAPI 3 document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    "/api/docs": {"get": {
        "summary": "This document for people", "operationId": "getDocs", "security": [],
        "responses": {"200": {"description": "HTML",
                              "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    "/health/live": {"get": {"summary": "The gateway process runs", "operationId": "live",
                             "security": [], "responses": {"200": _ok("Health")}}},
    "/health/ready": {"get": {
        "summary": "Broker and enrolment service answer", "operationId": "ready", "security": [],
        "responses": {"200": _ok("Health"), "503": _ok("Health", "not ready")}}},
}


@functools.lru_cache(maxsize=1)
def document() -> dict:
    spec = APISpec(
        title="Digitallotsen gateway", version="1.0.0", openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Municipalities enrol their staff in Digitallotsen seminars. "
                             "Authenticate with 'Authorization: Bearer <API key>'. Errors are "
                             "application/problem+json (RFC 9457)."},
    )
    spec.components.security_scheme("apiKey", {"type": "http", "scheme": "bearer"})
    for name in ("Problem", "CourseList", "EnrolmentRequest", "Enrolment", "EnrolmentPage",
                 "BatchRequest", "BatchResult", "Municipality", "Health", "Verification",
                 "NavigatorRequest", "Navigator", "NavigatorList",
                 "CredentialCheck", "CredentialResult"):
        spec.components.schema(name, schema=getattr(schemas, name))
    for path, operations in PATHS.items():
        operations = json.loads(json.dumps(operations))  # apispec edits what it is given
        spec.path(path=path, parameters=operations.pop("parameters", None),
                  operations=operations)
    result = spec.to_dict()
    result["security"] = [{"apiKey": []}]
    return result


def html() -> str:
    """A self-contained page (no scripts from elsewhere) listing every operation."""
    doc = document()
    rows = []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            codes = ", ".join(sorted(operation.get("responses", {})))
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>"
                        f"{html_lib.escape(path)}</code></td><td>"
                        f"{html_lib.escape(operation.get('summary', ''))}</td><td>{codes}</td></tr>")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{html_lib.escape(doc['info']['title'])}</title><style>body{{font-family:sans-serif;"
            "margin:2em;max-width:70em}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;"
            "text-align:left}</style></head><body>"
            f"<h1>{html_lib.escape(doc['info']['title'])} {doc['info']['version']}</h1>"
            f"<p>{html_lib.escape(doc['info']['description'])}</p>"
            "<p>Machine-readable: <a href='/api/v1/openapi.json'>/api/v1/openapi.json</a></p>"
            "<table><tr><th>method</th><th>path</th><th>what</th><th>answers</th></tr>"
            + "".join(rows) + "</table></body></html>")
