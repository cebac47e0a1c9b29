"""The programme office's pages: coverage, map, budget, onboarding and outreach.

As thin as the portal: the enrolment service keeps the office's sessions and answers coverage
and onboarding for a live session; funding answers money and reminders once enrolment has
confirmed the session (the gateway calls funding with its own credential). Here the answers are
only sorted, filtered and drawn. Same rules as the portal: sign-in by a single-use link, the
session id in a signed HttpOnly cookie (path ``/buero``), a CSRF token on every form, German
pages that work without JavaScript and load nothing from elsewhere.
"""
from __future__ import annotations

import re
from urllib.parse import urlencode

from markupsafe import Markup
from werkzeug.wrappers import Response

from services.common.broker import RpcProxy
from services.common.errors import LotsenError
from services.gateway import charts, pages, upload
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

COOKIE = "lotsen_buero"
MENU = [("abdeckung", "/buero/abdeckung", "Abdeckung"), ("karte", "/buero/karte", "Karte"),
        ("budget", "/buero/budget", "Budget"), ("kontakte", "/buero/kontakte", "Kontakte"),
        ("erinnerungen", "/buero/erinnerungen", "Erinnerungen"),
        ("coaching", "/buero/coaching", "Coaching")]
LEVELS = {"land": ("per_land", "Land"), "bezirk": ("per_bezirk", "Regierungsbezirk"),
          "kreis": ("per_kreis", "Kreis")}
SORTS = {"name": lambda r: r["name"], "anteil": lambda r: (r["covered_percent"], r["name"]),
         "ohne": lambda r: (-r["none"] - r["waitlisted"], r["name"]),
         "berechtigt": lambda r: (-r["eligible"], r["name"])}
ALL = "alle"
PROGRAMME_CODE = re.compile(r"[A-Z0-9][A-Z0-9-]{0,39}")  # as a programme's code may be
SHOWN_BODIES = 100  # bodies without a Lotse listed on the page; the CSV has all of them
OFFICE_NOTICES = dict(
    NOTICES, erinnert="Die Erinnerungen sind verschickt. Jede Kommune erhält eine Kampagne "
                      "nur einmal, auch wenn sie noch einmal gestartet wird.",
    link="Wenn diese Adresse für die Seiten des Programmbüros freigeschaltet ist, ist eine "
         "E-Mail mit einem Anmeldelink unterwegs. Der Link gilt 15 Minuten und nur einmal.",
    zugeordnet="Die Zuordnung ist gespeichert. Der Digital-Navigator und die Lotsin oder der "
               "Lotse erhalten eine E-Mail.",
    eingetragen="Die Lotsin oder der Lotse ist eingetragen und kann sich auf den Seiten für "
                "das Coaching mit der eigenen E-Mail-Adresse anmelden.",
    ausgetragen="Die Lotsin oder der Lotse ist ausgetragen; die Anmeldung auf den Seiten für "
                "das Coaching endet sofort. Die Navigatoren, die sie oder er begleitet hat, "
                "erhalten eine E-Mail und stehen unten zum Zuordnen bereit.")


class OfficeVisit(Visit):
    path = "/buero"
    notice_texts = OFFICE_NOTICES

    def render(self, template: str, status: int = 200, **context) -> Response:
        context.setdefault("menu", MENU)
        context.setdefault("layout", "office_base.html")
        return super().render(template, status, **context)


DESK = Desk("/buero", COOKIE, "office", "/buero/abdeckung", OfficeVisit, "office_sign_in.html")


def euros(cents) -> str:
    if cents is None:
        return "–"
    whole, rest = divmod(abs(int(cents)), 100)
    sign = "−" if int(cents) < 0 else ""
    return f"{sign}{whole:,}".replace(",", ".") + f",{rest:02d} €"


def _download(text: str, name: str) -> Response:
    """A CSV file to save (the name made of letters, digits and '-' only)."""
    safe = re.sub(r"[^A-Za-z0-9-]", "", name) or "liste"
    return Response(text.encode("utf-8"), content_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{safe}.csv"',
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def _codes(programme: str) -> list[str] | None:
    return None if programme in ("", ALL) else [programme[:40]]


class OfficePages:
    """The office's entrypoints; mixed into ``GatewayService`` (its ``_call`` and secrets)."""

    funding = RpcProxy("funding")

    def _office_visit(self, request, signed_in: bool = True) -> OfficeVisit:
        return DESK.open(self, request, signed_in)

    def _office_post(self, request, signed_in: bool = True) -> OfficeVisit:
        return DESK.posted(self, request, signed_in)

    def _coverage(self, visit: OfficeVisit, programme: str) -> dict:
        return self._call("office_coverage", visit.person["session_id"], _codes(programme),
                          timeout=30)

    @staticmethod
    def _programme_of(request, report: dict | None = None) -> str:
        chosen = request.args.get("programm", "")
        if chosen and chosen != ALL and not PROGRAMME_CODE.fullmatch(chosen):
            raise PageError(404, "Nicht gefunden", "Dieses Programm gibt es nicht.")
        if chosen:
            return chosen
        return report["programmes"][0]["code"] if report and report["programmes"] else ALL

    # --- the way in -----------------------------------------------------------------------

    @page("GET", "/buero")
    def office_home(self, request):
        return DESK.home_page(self, request)

    @page("GET", "/buero/anmelden")
    def office_sign_in_form(self, request):
        return DESK.sign_in_form(self, request)

    @page("POST", "/buero/anmelden")
    def office_sign_in_request(self, request):
        return DESK.sign_in_request(self, request)

    @page("GET", "/buero/link/<token>")
    def office_link_page(self, request, token):
        return DESK.link_page(self, request, token)

    @page("POST", "/buero/link")
    def office_link_use(self, request):
        return DESK.link_use(self, request)

    @page("POST", "/buero/abmelden")
    def office_sign_out(self, request):
        return DESK.sign_out(self, request)

    # --- coverage and map -----------------------------------------------------------------

    @page("GET", "/buero/abdeckung")
    def office_coverage(self, request):
        visit = self._office_visit(request)
        programme = self._programme_of(request)
        report = self._coverage(visit, programme)
        level = request.args.get("ebene", "kreis")
        level = level if level in LEVELS else "kreis"
        sort = request.args.get("sortierung", "ohne")
        sort = sort if sort in SORTS else "ohne"
        search = request.args.get("suche", "").strip()[:80]
        areas = [r for r in report[LEVELS[level][0]]
                 if not search or search.lower() in r["name"].lower() or r["ags"] == search]
        areas.sort(key=SORTS[sort])
        area = request.args.get("gebiet", "")[:8]
        missing = [b for b in report["bodies"] if b["status"] not in ("completed", "confirmed")
                   and (not area or area in (b["kreis_ags"], b["bezirk_ags"], b["land"]))
                   and (not search or area or search.lower() in b["name"].lower())]
        reminded = self._reminders(report)
        area_name = next((r["name"] for key in ("per_kreis", "per_bezirk", "per_land")
                          for r in report[key] if r["ags"] == area), "")
        coaching = self._coaching_overview(programme)
        chart = charts.weekly_chart(
            report["weekly"], [("covered", "Kommunen mit Lotse (angemeldet oder ausgebildet)",
                                "#0072B2")], "Kommunen mit Lotse je Woche seit Programmbeginn")

        def link(**changes):
            query = {"programm": programme, "ebene": level, "sortierung": sort, "suche": search,
                     "gebiet": area}
            query.update(changes)
            return "/buero/abdeckung?" + urlencode({k: v for k, v in query.items() if v})
        return visit.render(
            "office_coverage.html", title="Abdeckung", nav="abdeckung", report=report,
            programme=programme, level=level, level_name=LEVELS[level][1], levels=LEVELS,
            sort=sort, search=search, areas=areas, missing=missing[:SHOWN_BODIES],
            missing_total=len(missing), area=area, area_name=area_name, reminded=reminded,
            chart=Markup(chart), link=link, values={"suche": search}, coaching=coaching)

    def _coaching_overview(self, programme: str) -> dict | None:
        """For a coaching programme: Navigators, Agendas, overdue, each coach's load."""
        if programme in ("", ALL):
            return None
        try:
            return self._call("coaching_overview", programme)
        except LotsenError as exc:
            if exc.status in (404, 422):  # a seminar programme
                return None
            raise

    def _reminder_rows(self, report: dict):
        """(programme code, reminder) over the report's programmes."""
        for programme in report["programmes"]:
            try:
                rows = self._call("reminders", programme["code"], service="funding")
            except LotsenError as exc:
                if exc.status != 404:  # a programme funding does not know: nobody reminded
                    raise
                continue
            for row in rows:
                yield programme["code"], row

    def _reminders(self, report: dict) -> dict:
        """AGS -> [(campaign, when)] over the report's programmes."""
        found: dict[str, list] = {}
        for _, row in self._reminder_rows(report):
            found.setdefault(row["ags"], []).append((row["campaign"], row["reminded_at"]))
        return found

    @page("GET", "/buero/ohne-lotse.csv")
    def office_missing_csv(self, request):
        visit = self._office_visit(request)
        programme = self._programme_of(request)
        return _download(self._call("office_without_lotse_csv", visit.person["session_id"],
                                    _codes(programme), timeout=30), f"ohne-lotse-{programme}")

    @page("GET", "/buero/karte")
    def office_map(self, request):
        visit = self._office_visit(request)
        programme = self._programme_of(request)
        report = self._coverage(visit, programme)
        names = ", ".join(p["land_name"] for p in report["programmes"])
        svg = charts.coverage_map(report["bodies"], f"Förderfähige Kommunen: {names}")
        return visit.render("office_map.html", title="Karte", nav="karte", report=report,
                            programme=programme, svg=Markup(svg))

    # --- budget -----------------------------------------------------------------------------

    @page("GET", "/buero/budget")
    def office_budget(self, request):
        visit = self._office_visit(request)
        report = self._coverage(visit, ALL)
        codes = [p["code"] for p in report["programmes"]]
        programme = request.args.get("programm", "") or (codes[0] if codes else "")
        if programme not in codes:
            raise PageError(404, "Nicht gefunden", "Dieses Programm gibt es nicht.")
        try:
            state = self._call("budget_state", programme, service="funding")
        except LotsenError as exc:
            if exc.status not in (404, 409, 422):
                raise
            state = None  # no funding for this programme (or not set up yet)
        money = self._call("commitments", programme, service="funding") if state else None
        chart = Markup(charts.weekly_chart(
            money["weekly"], [("committed_cents", "Bewilligt insgesamt", "#0072B2"),
                              ("guaranteed_cents", "davon garantierte Plätze", "#009E73"),
                              ("pool_cents", "davon weitere Plätze", "#E69F00")],
            "Bewilligte Mittel je Woche", unit=euros)) if money and money["weekly"] else None
        return visit.render("office_budget.html", title="Budget", nav="budget",
                            programmes=report["programmes"], programme=programme, state=state,
                            chart=chart, euros=euros)

    @page("GET", "/buero/ledger.csv")
    def office_ledger_csv(self, request):
        self._office_visit(request)
        programme = self._programme_of(request)
        return _download(self._call("ledger_csv", programme, service="funding", timeout=30),
                         f"ledger-{programme}")

    # --- onboarding -------------------------------------------------------------------------

    @page("GET", "/buero/kontakte")
    def office_contacts_form(self, request):
        visit = self._office_visit(request)
        return visit.render("office_contacts.html", title="Kontakte eintragen", nav="kontakte")

    @page("POST", "/buero/kontakte")
    def office_contacts_upload(self, request):
        visit = self._office_post(request)
        file = request.files.get("datei")
        try:
            if file is None or not file.filename:
                raise upload.UploadProblem("Bitte wählen Sie eine CSV-Datei aus.")
            rows = upload.parse(file.read(), upload.CONTACTS)
        except upload.UploadProblem as exc:
            return visit.render("office_contacts.html", 422, title="Kontakte eintragen",
                                nav="kontakte", errors={"datei": str(exc)})
        answer = self._call("office_onboard", visit.person["session_id"],
                            [r.values for r in rows], self.portal.public_url + "/portal",
                            timeout=120)
        report = []
        for row, result in zip(rows, answer["rows"]):
            problems = (pages.row_problems(result["error"], None).values()
                        if result["result"] == "error" else [])
            report.append({"line": row.line, "cells": row.values, "result": result["result"],
                           "problems": " ".join(problems)})
        return visit.render("office_contacts_report.html", title="Kontakte eingetragen",
                            nav="kontakte", report=report, counts=answer["counts"])

    # --- coaching: coaches and pairing -----------------------------------------------------

    COACH_FIELDS = ("name", "email", "max_navigators")

    def _coaching_programmes(self, visit) -> list[dict]:
        return [p for p in self._coverage(visit, ALL)["programmes"]
                if self._coaching_overview(p["code"]) is not None]

    def _coaching_page(self, visit, request, values=None, errors=None, status=200,
                       pair_errors=None):
        programmes = self._coaching_programmes(visit)
        chosen = request.args.get("programm") or request.form.get("programm") or (
            programmes[0]["code"] if programmes else "")
        if chosen not in {p["code"] for p in programmes}:
            chosen = programmes[0]["code"] if programmes else ""
        view = (self._call("office_coaching", visit.person["session_id"], chosen)
                if chosen else None)
        free = [c for c in view["overview"]["coaches"] if c["load"] < c["max_navigators"]] \
            if view else []
        return visit.render("office_coaching.html", status, title="Coaching", nav="coaching",
                            programmes=programmes, programme=chosen, view=view,
                            free_coaches=free, values=values or dict.fromkeys(
                                self.COACH_FIELDS, ""), errors=errors or {},
                            pair_errors=pair_errors or {})

    @page("GET", "/buero/coaching")
    def office_coaching(self, request):
        visit = self._office_visit(request)
        return self._coaching_page(visit, request)

    @page("POST", "/buero/coaching/lotsen")
    def office_add_coach(self, request):
        visit = self._office_post(request)
        values = _nul_free(_form(request, "programm", *self.COACH_FIELDS))
        errors = {}
        if not values["max_navigators"].isdigit():
            errors["max_navigators"] = "Bitte geben Sie eine ganze Zahl von 1 bis 500 an."
        if not errors:
            try:
                self._call("office_register_coach", visit.person["session_id"], {
                    "programme_code": values["programm"][:40], "name": values["name"],
                    "email": values["email"], "max_navigators": int(values["max_navigators"])})
            except LotsenError as exc:
                if exc.status not in (409, 422):
                    raise
                errors = pages.field_errors(exc.fields, values)
                if exc.status == 409:
                    errors = {"email": "Diese Adresse ist in diesem Programm schon eingetragen."}
                elif "max_navigators" in (exc.fields or {}):
                    errors["max_navigators"] = "Bitte geben Sie eine ganze Zahl von 1 bis 500 an."
                errors = errors or {"_form": "Das ist so nicht möglich."}
        if errors:
            return self._coaching_page(visit, request, values, errors, 422)
        raise PageRedirect(f"/buero/coaching?programm={values['programm'][:40]}"
                           "&hinweis=eingetragen")

    @page("POST", "/buero/coaching/zuordnen")
    def office_pair_navigator(self, request):
        visit = self._office_post(request)
        values = _nul_free(_form(request, "programm", "navigator_id", "coach_id"))
        try:
            self._call("office_pair", visit.person["session_id"], values["navigator_id"][:40],
                       values["coach_id"][:40])
        except LotsenError as exc:
            if exc.status not in (404, 422):
                raise
            message = ("Diese Lotsin oder dieser Lotse begleitet schon so viele Navigatoren "
                       "wie vorgesehen." if "coach_id" in (exc.fields or {})
                       and exc.status == 422 else
                       "Bitte wählen Sie eine Lotsin oder einen Lotsen aus.")
            return self._coaching_page(visit, request, status=422,
                                       pair_errors={values["navigator_id"][:40]: message})
        raise PageRedirect(f"/buero/coaching?programm={values['programm'][:40]}"
                           "&hinweis=zugeordnet")

    def _coach_to_remove(self, visit, coach_id) -> tuple[str, dict, list[dict]]:
        """(programme, the coach, the Navigators they coach) as the office's page lists them."""
        programme = visit.request.values.get("programm", "")[:40]
        coach = None
        if PROGRAMME_CODE.fullmatch(programme):
            try:
                view = self._call("office_coaching", visit.person["session_id"], programme)
            except LotsenError as exc:
                if exc.status not in (404, 422):  # no such (coaching) programme
                    raise
            else:
                coach = next((c for c in view["overview"]["coaches"] if c["id"] == coach_id),
                             None)
        if coach is None:
            raise PageError(404, "Nicht gefunden",
                            "Diese Lotsin oder diesen Lotsen gibt es in diesem Programm nicht "
                            "(mehr).")
        return programme, coach, [n for n in view["navigators"] if n["coach_id"] == coach_id]

    @page("GET", "/buero/coaching/lotsen/<coach_id>/entfernen")
    def office_remove_coach_form(self, request, coach_id):
        visit = self._office_visit(request)
        programme, coach, navigators = self._coach_to_remove(visit, coach_id)
        return visit.render("office_remove_coach.html", title="Lotsin oder Lotse austragen",
                            nav="coaching", programme=programme, coach=coach,
                            navigators=navigators)

    @page("POST", "/buero/coaching/lotsen/<coach_id>/entfernen")
    def office_remove_coach(self, request, coach_id):
        visit = self._office_post(request)
        programme, coach, _ = self._coach_to_remove(visit, coach_id)
        self._call("office_remove_coach", visit.person["session_id"], coach["id"])
        raise PageRedirect(f"/buero/coaching?programm={programme}&hinweis=ausgetragen")

    @page("GET", "/buero/coaching/navigatoren/<navigator_id>")
    def office_navigator(self, request, navigator_id):
        """One Navigator: their milestones, the documents uploaded for them, who came before."""
        visit = self._office_visit(request)
        programme = request.args.get("programm", "")[:40]
        unknown = PageError(404, "Nicht gefunden",
                            "Diesen Digital-Navigator gibt es in diesem Programm nicht.")
        if not PROGRAMME_CODE.fullmatch(programme):
            raise unknown
        try:
            navigator = self._call("office_navigator", visit.person["session_id"], programme,
                                   page_id(navigator_id, "Diesen Digital-Navigator"))
        except LotsenError as exc:
            if exc.status not in (404, 422):
                raise
            raise unknown from None
        name = f"{navigator['participant']['given_name']} {navigator['participant']['family_name']}"
        return visit.render("office_navigator.html", title=f"Digital-Navigator {name}",
                            nav="coaching", programme=programme, n=navigator)

    @page("GET", "/buero/coaching/navigatoren.csv")
    def office_navigators_csv(self, request):
        visit = self._office_visit(request)
        programme = request.args.get("programm", "")[:40]
        unknown = PageError(404, "Nicht gefunden", "Dieses Programm gibt es nicht.")
        if not PROGRAMME_CODE.fullmatch(programme):
            raise unknown
        try:
            text = self._call("office_navigators_csv", visit.person["session_id"], programme,
                              timeout=30)
        except LotsenError as exc:
            if exc.status not in (404, 422):
                raise
            raise unknown from None
        return _download(text, f"navigatoren-{programme}")

    @page("GET", "/buero/coaching/dokumente/<document_id>")
    def office_document(self, request, document_id):
        visit = self._office_visit(request)
        return uploaded_document(lambda: self._call(
            "office_document", visit.person["session_id"],
            page_id(document_id, "Dieses Dokument"), timeout=60))

    # --- outreach ---------------------------------------------------------------------------

    @page("GET", "/buero/erinnerungen")
    def office_reminders(self, request):
        visit = self._office_visit(request)
        report = self._coverage(visit, ALL)
        return self._reminders_page(visit, report, {"kampagne": "", "programm": ""}, {})

    def _reminders_page(self, visit, report, values, errors, status=200):
        campaigns: dict[tuple, int] = {}
        for code, row in self._reminder_rows(report):
            campaigns[(code, row["campaign"])] = campaigns.get((code, row["campaign"]), 0) + 1
        return visit.render("office_reminders.html", status, title="Erinnerungen",
                            nav="erinnerungen", programmes=report["programmes"],
                            campaigns=sorted(campaigns.items()), values=values, errors=errors)

    @page("POST", "/buero/erinnerungen")
    def office_send_reminders(self, request):
        visit = self._office_post(request)
        values = _nul_free(_form(request, "programm", "kampagne"))
        try:
            self._call("remind_bodies_without_participant", values["programm"],
                       values["kampagne"], service="funding", timeout=60)
        except LotsenError as exc:
            if exc.status not in (404, 409, 422):
                raise
            errors = {}
            fields = exc.fields or {}
            if "campaign" in fields:
                errors["kampagne"] = ("Bitte nur Kleinbuchstaben, Ziffern und Bindestriche, "
                                      "mindestens 3 Zeichen, zum Beispiel erinnerung-2027-05.")
            if "programme_code" in fields:
                errors["programm"] = ("Für dieses Programm sind keine Erinnerungen möglich "
                                      "(keine Förderung oder die Reservierungsfrist ist vorbei).")
            report = self._coverage(visit, ALL)
            return self._reminders_page(visit, report, values, errors or {
                "_form": "Die Erinnerungen konnten nicht verschickt werden."}, 422)
        raise PageRedirect("/buero/erinnerungen?hinweis=erinnert")
