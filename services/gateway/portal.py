"""The municipality portal: German web pages for the clerks who nominate staff.

Thin like the rest of the gateway: every page asks the enrolment service (sessions, sign-in
links and colleagues live there, reached with the gateway's credential) and shows what it
answers. Sign-in is by a single-use link that the notifications service mails; the session id
travels in a signed HttpOnly cookie, every form carries a CSRF token, and nothing is stored
here. Pages work without JavaScript and load nothing from elsewhere.
"""
from __future__ import annotations

import base64
import functools
import re
import uuid
from datetime import datetime, timezone
from urllib.parse import quote

from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Response

from services.common import callers
from services.common import config as cfg
from services.common.errors import LotsenError
from services.gateway import pages, upload
from services.gateway import portal_auth as auth
from services.gateway.problems import HttpProblem, ProblemHttpEntrypoint

HTML = "text/html; charset=utf-8"
# No framing, no scripts, no other origins, forms only to ourselves; no URL (a sign-in link's
# token) handed on as a referrer.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
NOTICES = {
    "link": "Wenn diese Adresse für das Portal freigeschaltet ist, ist eine E-Mail mit einem "
            "Anmeldelink unterwegs. Der Link gilt 15 Minuten und nur einmal. Kommt keine "
            "E-Mail, prüfen Sie bitte den Spam-Ordner oder fragen Sie die Kontaktperson Ihrer "
            "Kommune, ob Ihre Adresse eingetragen ist.",
    "abgemeldet": "Sie sind abgemeldet.",
    "storniert": "Die Anmeldung wurde storniert. Die Person und Ihre Kontaktperson erhalten "
                 "eine E-Mail.",
    "eingeladen": "Die Einladung ist verschickt. Die Kollegin oder der Kollege kann sich ab "
                  "sofort mit der eigenen E-Mail-Adresse anmelden.",
    "entfernt": "Der Zugang wurde entfernt; laufende Sitzungen dieser Person sind beendet.",
    "abgelaufen": "Ihre Sitzung ist abgelaufen oder wurde beendet. Bitte melden Sie sich neu an.",
    "benannt": "Der Digital-Navigator ist benannt. Das Programmbüro stellt ihm eine Lotsin oder "
               "einen Lotsen zur Seite; beide erhalten dann eine E-Mail.",
}


class PageRedirect(Exception):
    def __init__(self, location: str, cookies: list | None = None):
        super().__init__(location)
        self.location, self.cookies = location, cookies or []


class PageError(Exception):
    """An error page in German."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def page_response(body: str, status: int = 200) -> Response:
    return Response(body, status=status, content_type=HTML, headers=dict(PAGE_HEADERS))


# Each set of pages has its own header and start page, error pages included.
AREAS = {"/portal": ("base.html", "Zur Startseite des Portals"),
         "/buero": ("office_base.html", "Zur Startseite des Programmbüros"),
         "/coaching": ("coach_base.html", "Zur Startseite für das Coaching")}


def area_of(path: str) -> str:
    return next((a for a in AREAS if path == a or path.startswith(a + "/")), "/portal")


def error_page(status: int, title: str, message: str, area: str = "/portal") -> Response:
    layout, home_text = AREAS[area]
    return page_response(pages.render("error.html", title=title, message=message, person=None,
                                      csrf="", nav="", notices=[], layout=layout,
                                      home=area, home_text=home_text), status)


def _redirect(location: str, cookies=()) -> Response:
    response = Response("", status=303, headers={"Location": location, **PAGE_HEADERS})
    for set_cookie in cookies:
        set_cookie(response)
    return response


class PageEntrypoint(ProblemHttpEntrypoint):
    """``@page``: like the API's entrypoint, but what goes wrong is a German HTML page."""

    def __init__(self, method, url, **kwargs):
        kwargs.setdefault("expected_exceptions",
                          (LotsenError, HttpProblem, PageRedirect, PageError))
        self.area = area_of(url)
        super().__init__(method, url, **kwargs)

    def body_refused(self, exc):
        if exc.status == 413 and self.document:
            return error_page(413, "Datei zu groß", "Das Dokument ist zu groß. Ein PDF darf "
                              "höchstens 8 MB groß sein.", self.area)
        if exc.status == 413:
            return error_page(413, "Datei zu groß", "Die Datei ist zu groß. Bitte laden Sie "
                              "höchstens 500 Zeilen auf einmal hoch.", self.area)
        return error_page(exc.status, "Anfrage nicht angekommen", "Die Anfrage kam nicht "
                          "vollständig an. Bitte versuchen Sie es noch einmal.", self.area)

    def response_from_exception(self, exc):
        if isinstance(exc, PageRedirect):
            return _redirect(exc.location, exc.cookies)
        if isinstance(exc, PageError):
            return error_page(exc.status, exc.title, exc.message, self.area)
        status = getattr(exc, "status", 500)
        if status == 503:
            return error_page(503, "Dienst nicht erreichbar", "Der Dienst antwortet gerade "
                              "nicht. Bitte versuchen Sie es in einigen Sekunden noch einmal.",
                              self.area)
        portal = self.area == "/portal"
        if status == 404:
            return error_page(404, "Nicht gefunden", "Diese Seite oder Anmeldung gibt es nicht "
                              "(oder sie gehört nicht zu Ihrer Kommune)." if portal else
                              "Diese Seite gibt es nicht.", self.area)
        if status == 401:
            return _redirect(f"{self.area}/anmelden?hinweis=abgelaufen")
        if status == 403:
            return error_page(403, "Nicht erlaubt", "Das darf nur die Kontaktperson Ihrer "
                              "Kommune." if portal else "Das ist nicht erlaubt.", self.area)
        if isinstance(exc, (LotsenError, HttpProblem)):
            return error_page(status, "Das hat nicht geklappt", "Die Anfrage konnte nicht "
                              "ausgeführt werden. Bitte prüfen Sie Ihre Angaben.", self.area)
        return error_page(500, "Fehler", "Etwas ist auf unserer Seite schiefgegangen. Bitte "
                          "versuchen Sie es später noch einmal.", self.area)


def page(method: str, url: str, **kwargs):
    """``@page("GET", "/portal/...")``: a portal page. Redirects and German error pages are
    answers, not failures: they are turned into responses here, before nameko would log them
    as errors."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(self, request, *args, **kw):
            try:
                return fn(self, request, *args, **kw)
            except PageRedirect as exc:
                return _redirect(exc.location, exc.cookies)
            except PageError as exc:
                return error_page(exc.status, exc.title, exc.message, area_of(request.path))
        return PageEntrypoint.decorator(method, url, **kwargs)(wrapper)
    return decorate


class PortalSecrets(DependencyProvider):
    """The portal's signing key (derived from the service key) and its settings."""

    def setup(self):
        config = self.container.config
        self.key = auth.portal_key(callers.service_key(config))
        settings = config.get("PORTAL") or {}
        self.public_url = str(cfg.setting(
            settings, "public_url", cfg.setting(config.get("CERTIFICATES") or {},
                                                "public_base_url", "http://127.0.0.1:8000"))
        ).rstrip("/")
        secure = str(cfg.setting(settings, "secure_cookies", "auto")).lower()
        self.secure = (self.public_url.startswith("https://") if secure == "auto"
                       else secure in ("1", "true", "yes", "on"))

    def get_dependency(self, worker_ctx):
        return self


class Visit:
    """One request's view of the portal: who is signed in, the CSRF token for its forms."""

    path = "/portal"  # where the form cookie is sent
    notice_texts = NOTICES  # what ``?hinweis=`` may show

    def __init__(self, secrets: PortalSecrets, request, person: dict | None):
        self.secrets, self.request, self.person = secrets, request, person
        self.cookies = []
        if person is not None:
            self.bound_to = person["session_id"]
        else:  # before sign-in: a random value in a cookie of its own binds the forms
            self.bound_to = auth.session_id_from(secrets.key, request.cookies.get(
                auth.FORM_COOKIE))
            if self.bound_to is None:
                self.bound_to = auth.new_form_secret()
                value = auth.session_cookie(secrets.key, self.bound_to)
                self.cookies.append(lambda r: r.set_cookie(
                    auth.FORM_COOKIE, value, httponly=True, secure=secrets.secure,
                    samesite="Lax", path=self.path))

    @property
    def csrf(self) -> str:
        return auth.csrf_token(self.secrets.key, self.bound_to)

    def form_is_ours(self) -> bool:
        return auth.csrf_valid(self.secrets.key, self.bound_to, self.request.form.get("csrf"))

    def render(self, template: str, status: int = 200, **context) -> Response:
        hinweis = self.request.args.get("hinweis")
        notices = [self.notice_texts[hinweis]] if hinweis in self.notice_texts else []
        context.setdefault("nav", "")
        context.setdefault("errors", {})
        response = page_response(pages.render(template, person=self.person, csrf=self.csrf,
                                              notices=notices, **context), status)
        for set_cookie in self.cookies:
            set_cookie(response)
        return response


def _form(request, *names) -> dict:
    return {name: request.form.get(name, "").strip() for name in names}


def _nul_free(values: dict) -> dict:
    return {k: v.replace("\x00", "") if isinstance(v, str) else v for k, v in values.items()}


UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def page_id(value: str, what: str) -> str:
    """An id from a page's path, or the 404 page that says ``what`` does not exist."""
    if not UUID_TEXT.fullmatch(value):
        raise PageError(404, "Nicht gefunden", f"{what} gibt es nicht.")
    return value


def uploaded_document(fetch) -> Response:
    """An uploaded PDF (a milestone's document) to save. ``fetch()`` asks the enrolment service;
    a document that does not exist and one the caller may not see both give the 404 page."""
    try:
        found = fetch()
    except LotsenError as exc:
        if exc.status not in (404, 422):
            raise
        raise PageError(404, "Nicht gefunden", "Dieses Dokument gibt es nicht.") from None
    return pdf_attachment(found)


def pdf_attachment(found: dict) -> Response:
    """An uploaded PDF (``filename``, base64 ``content``) to save, never shown inline: the
    file came from a person's upload."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", found["filename"])[-100:] or "dokument.pdf"
    return Response(base64.b64decode(found["content"]), content_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{safe}"',
                             "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                             "Content-Security-Policy": "default-src 'none'; sandbox"})


class PortalPages:
    """The portal's entrypoints; mixed into ``GatewayService`` (its ``_call`` and config)."""

    portal = PortalSecrets()

    # --- who is here ----------------------------------------------------------------------

    def _person(self, request) -> dict | None:
        session_id = auth.session_id_from(self.portal.key,
                                          request.cookies.get(auth.SESSION_COOKIE))
        if session_id is None:
            return None
        try:
            person = self._call("portal_session", session_id)
        except LotsenError as exc:
            if exc.status in (401, 422):
                return None
            raise
        return dict(person, session_id=session_id)

    def _visit(self, request, signed_in: bool = True) -> Visit:
        person = self._person(request)
        if signed_in and person is None:
            expired = request.cookies.get(auth.SESSION_COOKIE)
            raise PageRedirect("/portal/anmelden" + ("?hinweis=abgelaufen" if expired else ""),
                               [lambda r: r.delete_cookie(auth.SESSION_COOKIE, path="/portal")]
                               if expired else [])
        return Visit(self.portal, request, person)

    def _checked_post(self, request, signed_in: bool = True) -> Visit:
        visit = self._visit(request, signed_in)
        if not visit.form_is_ours():
            raise PageError(403, "Formular abgelaufen", "Dieses Formular ist abgelaufen oder "
                            "kam nicht von dieser Seite. Bitte laden Sie die Seite neu und "
                            "senden Sie es noch einmal.")
        return visit

    def _for(self, visit: Visit, method: str, *args, **kwargs):
        """A call for the signed-in municipality."""
        ags = visit.person["ags"]
        return self._call(method, ags, *args, acting_for=ags, **kwargs)

    # --- assets and the way in ------------------------------------------------------------

    @page("GET", "/portal/static/portal.css")
    def portal_css(self, request):
        return Response((pages.STATIC / "portal.css").read_bytes(),
                        content_type="text/css; charset=utf-8",
                        headers={"Cache-Control": "max-age=3600",
                                 "X-Content-Type-Options": "nosniff"})

    @page("GET", "/portal")
    def portal_home(self, request):
        person = self._person(request)
        raise PageRedirect("/portal/uebersicht" if person else "/portal/anmelden")

    @page("GET", "/portal/anmelden")
    def sign_in_form(self, request):
        visit = self._visit(request, signed_in=False)
        if visit.person is not None:
            raise PageRedirect("/portal/uebersicht")
        return visit.render("sign_in.html", title="Anmelden", values={"email": ""})

    @page("POST", "/portal/anmelden")
    def sign_in_request(self, request):
        visit = self._visit(request, signed_in=False)
        values = _nul_free(_form(request, "email"))
        if not visit.form_is_ours():
            return visit.render("sign_in.html", 400, title="Anmelden", values=values, errors={
                "_form": "Das Formular war abgelaufen. Bitte senden Sie es noch einmal."})
        if not values["email"]:
            return visit.render("sign_in.html", 422, title="Anmelden", values=values,
                                errors={"email": "Bitte geben Sie Ihre E-Mail-Adresse ein."})
        try:
            self._call("portal_request_sign_in", values["email"],
                       self.portal.public_url + "/portal/link/")
        except LotsenError as exc:
            if exc.status != 422:
                raise
            return visit.render("sign_in.html", 422, title="Anmelden", values=values, errors={
                "email": pages.field_errors(exc.fields).get("email")
                or "Bitte geben Sie eine gültige E-Mail-Adresse an."})
        # The same answer whether or not the address may sign in.
        raise PageRedirect("/portal/anmelden?hinweis=link", visit.cookies)

    @page("GET", "/portal/link/<token>")
    def link_page(self, request, token):
        """Shows a button instead of signing in at once: mail programs and virus scanners
        open links by themselves, and would use up the single-use link."""
        visit = self._visit(request, signed_in=False)
        return visit.render("link.html", title="Anmeldung bestätigen", token=token[:100])

    @page("POST", "/portal/link")
    def link_use(self, request):
        visit = self._checked_post(request, signed_in=False)
        try:
            person = self._call("portal_sign_in", request.form.get("token", "")[:200])
        except LotsenError as exc:
            if exc.status not in (401, 422):
                raise
            return visit.render("link_invalid.html", 400, title="Link ungültig")
        value = auth.session_cookie(self.portal.key, person["session_id"])
        seconds = int((datetime.fromisoformat(person["expires_at"])
                       - datetime.now(timezone.utc)).total_seconds())
        raise PageRedirect("/portal/uebersicht", [lambda r: r.set_cookie(
            auth.SESSION_COOKIE, value, max_age=max(seconds, 0), httponly=True,
            secure=self.portal.secure, samesite="Lax", path="/portal")])

    @page("POST", "/portal/abmelden")
    def sign_out(self, request):
        visit = self._checked_post(request)
        self._call("portal_sign_out", visit.person["session_id"])
        raise PageRedirect("/portal/anmelden?hinweis=abgemeldet", [
            lambda r: r.delete_cookie(auth.SESSION_COOKIE, path="/portal")])

    # --- what the municipality has --------------------------------------------------------

    def _all_enrolments(self, visit: Visit) -> list[dict]:
        items, page_number = [], 1
        while True:
            answer = self._for(visit, "list_enrolments", {"page": page_number, "per_page": 500})
            items += answer["items"]
            if len(items) >= answer["total"] or not answer["items"] or page_number >= 20:
                return items
            page_number += 1

    @page("GET", "/portal/uebersicht")
    def overview(self, request):
        visit = self._visit(request)
        municipality = self._for(visit, "municipality")
        enrolments = self._all_enrolments(visit)
        places = {c["id"]: c["location"] for c in self._for(visit, "list_open_courses")}
        return visit.render("overview.html", title="Übersicht", nav="uebersicht",
                            municipality=municipality, enrolments=enrolments, places=places)

    @page("GET", "/portal/kurse")
    def courses_page(self, request):
        visit = self._visit(request)
        return visit.render("courses.html", title="Offene Seminare", nav="kurse",
                            courses=self._for(visit, "list_open_courses"))

    # --- enrol one ------------------------------------------------------------------------

    ENROL_FIELDS = ("course_id", "given_name", "family_name", "email", "department")

    @page("GET", "/portal/anmeldung")
    def enrol_form(self, request):
        visit = self._visit(request)
        values = dict.fromkeys(self.ENROL_FIELDS, "")
        values["course_id"] = request.args.get("kurs", "")[:40]
        return self._enrol_page(visit, values, {}, str(uuid.uuid4()))

    def _enrol_page(self, visit, values, errors, key, status=200):
        return visit.render("enrol.html", status, title="Person anmelden", nav="anmeldung",
                            courses=self._for(visit, "list_open_courses"), values=values,
                            errors=errors, key=key)

    @page("POST", "/portal/anmeldung")
    def enrol_submit(self, request):
        visit = self._checked_post(request)
        values = _nul_free(_form(request, *self.ENROL_FIELDS))
        key = request.form.get("key", "")[:80] or str(uuid.uuid4())
        try:
            created = self._for(visit, "enrol", {
                "course_id": values["course_id"], "idempotency_key": f"portal-{key}",
                "participant": {"given_name": values["given_name"],
                                "family_name": values["family_name"],
                                "email": values["email"],
                                "department": values["department"] or None}})
        except LotsenError as exc:
            if exc.status not in (409, 422):
                raise
            errors = pages.field_errors(exc.fields, values)
            if "idempotency_key" in exc.fields:  # this form was sent before, with other data
                key = str(uuid.uuid4())
                errors = {"_form": "Dieses Formular wurde schon einmal gesendet. Bitte prüfen "
                                   "Sie die Angaben und senden Sie es noch einmal."}
            return self._enrol_page(visit, values, errors or {
                "_form": "Die Anmeldung ist nicht möglich."}, key, 422)
        raise PageRedirect(f"/portal/anmeldung/{created['id']}?neu=1")

    def _enrolment(self, visit: Visit, enrolment_id: str) -> dict:
        try:
            enrolment_id = str(uuid.UUID(enrolment_id))
        except ValueError:
            raise PageError(404, "Nicht gefunden", "Diese Anmeldung gibt es nicht.") from None
        return self._for(visit, "get_enrolment", enrolment_id)

    @page("GET", "/portal/anmeldung/<enrolment_id>")
    def enrolment_page(self, request, enrolment_id):
        visit = self._visit(request)
        enrolment = self._enrolment(visit, enrolment_id)
        return visit.render("enrolment.html", title="Anmeldung", nav="uebersicht",
                            enrolment=enrolment, new=request.args.get("neu") == "1")

    @page("GET", "/portal/anmeldung/<enrolment_id>/stornieren")
    def cancel_form(self, request, enrolment_id):
        visit = self._visit(request)
        return visit.render("cancel.html", title="Anmeldung stornieren", nav="uebersicht",
                            enrolment=self._enrolment(visit, enrolment_id),
                            values={"reason": ""})

    @page("POST", "/portal/anmeldung/<enrolment_id>/stornieren")
    def cancel_submit(self, request, enrolment_id):
        visit = self._checked_post(request)
        enrolment = self._enrolment(visit, enrolment_id)
        values = _nul_free(_form(request, "reason"))
        try:
            self._for(visit, "cancel_enrolment", enrolment["id"], values["reason"] or None)
        except LotsenError as exc:
            if exc.status != 422:
                raise
            errors = pages.field_errors(exc.fields)
            if "enrolment_id" in errors:
                errors["_form"] = errors.pop("enrolment_id")
            return visit.render("cancel.html", 422, title="Anmeldung stornieren",
                                nav="uebersicht", enrolment=enrolment, values=values,
                                errors=errors)
        raise PageRedirect("/portal/uebersicht?hinweis=storniert")

    # --- enrol many (CSV) -----------------------------------------------------------------

    @page("GET", "/portal/hochladen")
    def upload_form(self, request):
        visit = self._visit(request)
        return self._upload_page(visit, {"course_id": request.args.get("kurs", "")[:40]}, {})

    def _upload_page(self, visit, values, errors, status=200):
        return visit.render("upload.html", status, title="Liste hochladen", nav="hochladen",
                            courses=self._for(visit, "list_open_courses"), values=values,
                            errors=errors)

    @page("POST", "/portal/hochladen")
    def upload_preview(self, request):
        visit = self._checked_post(request)
        values = _nul_free(_form(request, "course_id"))
        errors = {}
        if not values["course_id"]:
            errors["course_id"] = "Bitte wählen Sie ein Seminar aus."
        file = request.files.get("datei")
        rows = []
        if file is None or not file.filename:
            errors["datei"] = "Bitte wählen Sie eine CSV-Datei aus."
        else:
            try:
                rows = upload.parse(file.read())
            except upload.UploadProblem as exc:
                errors["datei"] = str(exc)
        if errors:
            return self._upload_page(visit, values, errors, 422)
        batch_id = uuid.uuid4().hex
        requests = [upload.enrolment_row(row, values["course_id"],
                                         f"portal-upload-{batch_id}-{row.line}") for row in rows]
        checked = self._for(visit, "enrol_batch", requests, True, timeout=60)
        good, shown = [], []
        for row, request_row, result in zip(rows, requests, checked["results"]):
            problems = dict(row.problems)
            if result["result"] == "error":
                problems.update(pages.row_problems(result["error"], row.values))
            if "course_id" in problems and "_form" not in problems:
                # The same for every row: say it once, at the course field.
                errors["course_id"] = problems["course_id"]
            shown.append({"line": row.line, "cells": row.values, "problems": problems,
                          "enrolment": result.get("enrolment")})
            if not problems:
                good.append(request_row)
        if errors.get("course_id"):
            return self._upload_page(visit, values, errors, 422)
        course = next((c for c in self._for(visit, "list_open_courses")
                       if c["id"] == values["course_id"]), None)
        return visit.render("preview.html", title="Liste prüfen", nav="hochladen", rows=shown,
                            course=course, good=len(good),
                            data=auth.sign_data(self.portal.key, visit.bound_to,
                                                {"rows": good}))

    @page("POST", "/portal/hochladen/speichern")
    def upload_confirm(self, request):
        visit = self._checked_post(request)
        data = auth.signed_data(self.portal.key, visit.bound_to, request.form.get("daten"))
        if not data or not data.get("rows"):
            raise PageError(400, "Nichts zu speichern", "Diese Vorschau ist nicht mehr gültig. "
                            "Bitte laden Sie die Liste noch einmal hoch.")
        stored = self._for(visit, "enrol_batch", data["rows"], False, timeout=60)
        results = []
        for row, result in zip(data["rows"], stored["results"]):
            results.append({"participant": row["participant"],
                            "enrolment": result.get("enrolment"),
                            "problems": pages.row_problems(result["error"])
                            if result["result"] == "error" else {}})
        return visit.render("stored.html", title="Liste gespeichert", nav="hochladen",
                            results=results, succeeded=stored["succeeded"])

    # --- certificates ---------------------------------------------------------------------

    @page("GET", "/portal/zertifikate/<number>.pdf")
    def certificate_download(self, request, number):
        visit = self._visit(request)
        from services.gateway.service import CERTIFICATE_NUMBER
        if not CERTIFICATE_NUMBER.match(number):
            raise PageError(404, "Nicht gefunden", "Dieses Zertifikat gibt es nicht.")
        document = self._call("get_pdf", number, visit.person["ags"], service="certificates",
                              acting_for=visit.person["ags"])
        return Response(base64.b64decode(document["content_base64"]),
                        content_type="application/pdf",
                        headers={"Content-Disposition":
                                 f'attachment; filename="{quote(document["filename"])}"',
                                 "Cache-Control": "no-store"})

    # --- colleagues -----------------------------------------------------------------------

    def _colleagues_page(self, visit, values, errors, status=200):
        return visit.render("colleagues.html", status, title="Kolleginnen und Kollegen",
                            nav="kollegen", team=self._for(visit, "portal_colleagues"),
                            values=values, errors=errors)

    @page("GET", "/portal/kollegen")
    def colleagues_page(self, request):
        visit = self._visit(request)
        return self._colleagues_page(visit, {"name": "", "email": ""}, {})

    @page("POST", "/portal/kollegen")
    def invite_colleague(self, request):
        visit = self._checked_post(request)
        values = _nul_free(_form(request, "name", "email"))
        try:
            self._for(visit, "portal_invite_colleague", visit.person["session_id"],
                      dict(values, portal_url=self.portal.public_url + "/portal/anmelden"))
        except LotsenError as exc:
            if exc.status not in (409, 422):
                raise
            return self._colleagues_page(visit, values, pages.field_errors(exc.fields, values) or {
                "_form": "Die Einladung ist nicht möglich."}, 422)
        raise PageRedirect("/portal/kollegen?hinweis=eingeladen")

    def _colleague(self, visit, colleague_id) -> dict:
        team = self._for(visit, "portal_colleagues")
        found = next((c for c in team["colleagues"] if c["id"] == colleague_id), None)
        if found is None:
            raise PageError(404, "Nicht gefunden", "Diese Person hat keinen Zugang (mehr).")
        return found

    @page("GET", "/portal/kollegen/<colleague_id>/entfernen")
    def remove_colleague_form(self, request, colleague_id):
        visit = self._visit(request)
        return visit.render("remove.html", title="Zugang entfernen", nav="kollegen",
                            colleague=self._colleague(visit, colleague_id))

    @page("POST", "/portal/kollegen/<colleague_id>/entfernen")
    def remove_colleague(self, request, colleague_id):
        visit = self._checked_post(request)
        colleague = self._colleague(visit, colleague_id)
        self._for(visit, "portal_remove_colleague", visit.person["session_id"], colleague["id"])
        raise PageRedirect("/portal/kollegen?hinweis=entfernt")

    # --- coaching programmes: the municipality's Navigator ---------------------------------

    NAVIGATOR_FIELDS = ("given_name", "family_name", "email", "department")

    def _navigator_page(self, visit, code, values, errors, status=200):
        try:
            navigators = self._for(visit, "navigators", code[:40])
        except LotsenError as exc:
            if exc.status not in (404, 422):
                raise
            raise PageError(404, "Nicht gefunden", "Dieses Programm hat keine "
                            "Digital-Navigatoren.") from None
        current = next((n for n in navigators if n["replaced_at"] is None), None)
        return visit.render("navigator.html", status, title="Digital-Navigator",
                            nav="uebersicht", code=code[:40], current=current,
                            history=[n for n in navigators if n is not current],
                            values=values, errors=errors)

    @page("GET", "/portal/navigator/<code>")
    def navigator_page(self, request, code):
        visit = self._visit(request)
        return self._navigator_page(visit, code, dict.fromkeys(self.NAVIGATOR_FIELDS, ""), {})

    @page("POST", "/portal/navigator/<code>")
    def navigator_submit(self, request, code):
        visit = self._checked_post(request)
        values = _nul_free(_form(request, *self.NAVIGATOR_FIELDS))
        replace = request.form.get("ersetzen") == "ja"
        try:
            self._for(visit, "name_navigator", code[:40], {
                "given_name": values["given_name"], "family_name": values["family_name"],
                "email": values["email"], "department": values["department"] or None},
                replace)
        except LotsenError as exc:
            if exc.status not in (409, 422):
                raise
            errors = pages.field_errors(exc.fields, values)
            if "navigator" in (exc.fields or {}):
                errors = {"_form": "Ihre Kommune hat schon einen Digital-Navigator. Wenn eine "
                                   "andere Person die Aufgabe übernimmt, wählen Sie „Ersetzen“."}
            elif "email" in (exc.fields or {}) and exc.status == 409:
                errors = {"email": "Diese Person ist bereits Ihr Digital-Navigator."}
            return self._navigator_page(visit, code, values, errors or {
                "_form": "Das ist so nicht möglich."}, 422)
        raise PageRedirect(f"/portal/navigator/{code[:40]}?hinweis=benannt")

    @page("GET", "/portal/dokumente/<document_id>")
    def navigator_document_download(self, request, document_id):
        """A PDF the coach uploaded for the municipality's Navigator (the Digitale Agenda)."""
        visit = self._visit(request)
        return uploaded_document(lambda: self._for(
            visit, "navigator_document", page_id(document_id, "Dieses Dokument"), timeout=60))

    @page("GET,POST", "/portal/<path:rest>")
    def portal_not_found(self, request, rest):
        raise PageError(404, "Nicht gefunden", "Diese Seite gibt es nicht.")

