"""The coaches' pages: a Lotse who coaches Navigators sees them and records their milestones.

Thin like the office's pages: the enrolment service keeps the coaches' sessions (a desk of
its own, ``/coaching``, signed in by a mailed single-use link), answers only for the coach's
own Navigators, and keeps the PDFs uploaded for a milestone (the Digitale Agenda). German pages
that work without JavaScript and load nothing from elsewhere.
"""
from __future__ import annotations

import base64
import re
from datetime import date

from werkzeug.wrappers import Response

from services.common.clock import calendar_today
from services.common.errors import LotsenError
from services.gateway import pages
from services.gateway.desks import Desk
from services.gateway.portal import (
    NOTICES,
    PageError,
    PageRedirect,
    Visit,
    _form,
    _nul_free,
    page,
    page_id,
    uploaded_document,
)

COOKIE = "lotsen_coaching"
MENU = [("navigatoren", "/coaching/navigatoren", "Meine Navigatoren")]
COACH_NOTICES = dict(
    NOTICES, erfasst="Der Meilenstein ist erfasst. Der Digital-Navigator erhält eine E-Mail.",
    link="Wenn diese Adresse als Lotsin oder Lotse eingetragen ist, ist eine E-Mail mit einem "
         "Anmeldelink unterwegs. Der Link gilt 15 Minuten und nur einmal.")
FIELDS = ("key", "reached_on", "note", "document_ref")


class CoachVisit(Visit):
    path = "/coaching"
    notice_texts = COACH_NOTICES

    def render(self, template: str, status: int = 200, **context) -> Response:
        context.setdefault("menu", MENU)
        context.setdefault("layout", "coach_base.html")
        return super().render(template, status, **context)


DESK = Desk("/coaching", COOKIE, "coach", "/coaching/navigatoren", CoachVisit,
            "coach_sign_in.html")


def _german_day(text: str) -> str | None:
    """The ISO day from a date field (``2026-12-03``, or ``03.12.2026`` typed by hand)."""
    found = re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{4})", text)
    if found:
        day, month, year = (int(g) for g in found.groups())
        try:
            return date(year, month, day).isoformat()
        except ValueError:
            return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        return None


class CoachPages:
    """The coaches' entrypoints; mixed into ``GatewayService`` (its ``_call`` and secrets)."""

    @page("GET", "/coaching")
    def coach_home(self, request):
        return DESK.home_page(self, request)

    @page("GET", "/coaching/anmelden")
    def coach_sign_in_form(self, request):
        return DESK.sign_in_form(self, request)

    @page("POST", "/coaching/anmelden")
    def coach_sign_in_request(self, request):
        return DESK.sign_in_request(self, request)

    @page("GET", "/coaching/link/<token>")
    def coach_link_page(self, request, token):
        return DESK.link_page(self, request, token)

    @page("POST", "/coaching/link")
    def coach_link_use(self, request):
        return DESK.link_use(self, request)

    @page("POST", "/coaching/abmelden")
    def coach_sign_out(self, request):
        return DESK.sign_out(self, request)

    # --- the coach's Navigators -----------------------------------------------------------

    def _desk_of(self, visit) -> list[dict]:
        return self._call("coach_desk", visit.person["session_id"])

    @page("GET", "/coaching/navigatoren")
    def coach_navigators_page(self, request):
        visit = DESK.open(self, request)
        return visit.render("coach_navigators.html", title="Meine Navigatoren",
                            nav="navigatoren", programmes=self._desk_of(visit))

    def _coached(self, visit, navigator_id: str) -> tuple[dict, dict]:
        """(programme, Navigator) of one of this coach's Navigators."""
        for programme in self._desk_of(visit):
            for navigator in programme["navigators"]:
                if navigator["id"] == navigator_id:
                    return programme, navigator
        raise PageError(404, "Nicht gefunden", "Diesen Digital-Navigator begleiten Sie nicht.")

    def _navigator_detail(self, visit, navigator_id, values, errors, status=200):
        programme, navigator = self._coached(visit, navigator_id)
        open_ones = [m for m in navigator["milestones"] if not m["reached_on"]]
        if not values.get("key") and open_ones:
            values = dict(values, key=open_ones[0]["key"])
        return visit.render("coach_navigator.html", status, title=(
            f"{navigator['participant']['given_name']} {navigator['participant']['family_name']}"),
            nav="navigatoren", programme=programme, navigator=navigator,
            open_milestones=open_ones, values=values, errors=errors)

    @page("GET", "/coaching/navigatoren/<navigator_id>")
    def coach_navigator_page(self, request, navigator_id):
        visit = DESK.open(self, request)
        return self._navigator_detail(visit, page_id(navigator_id, "Diesen Digital-Navigator"),
                                      {"reached_on": calendar_today().isoformat()}, {})

    @page("POST", "/coaching/navigatoren/<navigator_id>", document=True)
    def coach_record_milestone(self, request, navigator_id):
        navigator_id = page_id(navigator_id, "Diesen Digital-Navigator")
        visit = DESK.posted(self, request)
        values = _nul_free(_form(request, *FIELDS))
        errors = {}
        reached_on = _german_day(values["reached_on"])
        if reached_on is None:
            errors["reached_on"] = ("Bitte geben Sie das Datum an, zum Beispiel "
                                    "03.12.2026.")
        if not values["key"]:
            errors["key"] = "Bitte wählen Sie einen Meilenstein aus."
        file = request.files.get("dokument")
        document = None
        if file is not None and file.filename:
            content = file.read()
            if not content.startswith(b"%PDF-"):
                errors["dokument"] = "Bitte laden Sie das Dokument als PDF hoch."
            document = {"filename": file.filename.replace("\x00", "")[-200:],
                        "content": base64.b64encode(content).decode("ascii")}
            if values["document_ref"]:
                errors["document_ref"] = ("Bitte geben Sie entweder einen Verweis an oder "
                                          "laden Sie ein PDF hoch, nicht beides.")
        if errors:
            return self._navigator_detail(visit, navigator_id, values, errors, 422)
        try:
            self._call("coach_record_milestone", visit.person["session_id"], {
                "navigator_id": navigator_id, "key": values["key"], "reached_on": reached_on,
                "note": values["note"] or None, "document_ref": values["document_ref"] or None,
                "document": document}, timeout=60)
        except LotsenError as exc:
            if exc.status not in (409, 422):
                raise
            errors = self._milestone_errors(exc, values)
            return self._navigator_detail(visit, navigator_id, values, errors, 422)
        raise PageRedirect(f"/coaching/navigatoren/{navigator_id}?hinweis=erfasst")

    @staticmethod
    def _milestone_errors(exc: LotsenError, values: dict) -> dict:
        fields = exc.fields or {}
        if "document_ref" in fields and exc.status == 422 and not values["document_ref"]:
            return {"document_ref": "Für diesen Meilenstein geben Sie das Dokument an: einen "
                                    "Verweis (zum Beispiel das Aktenzeichen) oder ein PDF."}
        if "document" in fields:
            return {"dokument": "Das Dokument ist kein PDF oder größer als 8 MB."}
        if "reached_on" in fields:
            return {"reached_on": "Das Datum liegt vor dem Beginn des Coachings oder in der "
                                  "Zukunft."}
        if "key" in fields and exc.status == 409:
            return {"key": "Dieser Meilenstein ist schon erfasst."}
        return pages.field_errors(fields, values) or {"_form": "Das ist so nicht möglich."}

    @page("GET", "/coaching/dokumente/<document_id>")
    def coach_document(self, request, document_id):
        visit = DESK.open(self, request)
        return uploaded_document(lambda: self._call(
            "coach_document", visit.person["session_id"],
            page_id(document_id, "Dieses Dokument"), timeout=60))

    @page("GET,POST", "/coaching/<path:rest>")
    def coach_not_found(self, request, rest):
        raise PageError(404, "Nicht gefunden", "Diese Seite gibt es nicht.")
