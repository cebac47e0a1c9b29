"""Rendering the portal's German pages, and saying in German what the services answered.

The pages are server-rendered HTML (Jinja2, autoescaped) that work without JavaScript; the
gateway serves their one stylesheet itself. Errors arrive from the enrolment service as field
names and English reasons: here they become German sentences next to the field they concern.
"""
from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.common.clock import PROGRAMME_TIMEZONE, calendar_day

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def german_date(value) -> str:
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        value = calendar_day(value)
    return value.strftime("%d.%m.%Y")


def german_time(value) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(PROGRAMME_TIMEZONE).strftime("%d.%m.%Y, %H:%M Uhr")


STATUS = {"confirmed": "Platz bestätigt", "waitlisted": "Warteliste", "cancelled": "Storniert",
          "completed": "Abgeschlossen"}


def status_text(enrolment: dict) -> str:
    if enrolment["status"] == "waitlisted" and enrolment.get("waitlist_position"):
        return f"Warteliste, Platz {enrolment['waitlist_position']}"
    return STATUS.get(enrolment["status"], enrolment["status"])


def funding_text(funding: dict | None) -> str:
    funding = funding or {}
    status, kind = funding.get("status"), funding.get("kind")
    if status == "granted" and kind == "guaranteed":
        return "Gefördert (garantierter Platz der Kommune)"
    if status == "granted":
        return "Gefördert (aus weiteren Mitteln)"
    if status == "waiting":
        return "Wartet auf Förderung (zurzeit keine Mittel frei)"
    if status == "released":
        return "Förderung freigegeben"
    if status == "none":
        return "Keine Förderung (das Programm sieht keine vor)"
    return "Wird geprüft"


_env.filters.update(datum=german_date, zeit=german_time, status=status_text,
                    foerderung=funding_text)


def render(template: str, **context) -> str:
    return _env.get_template(template).render(**context)


# --- errors in German ----------------------------------------------------------------------------

_MESSAGES = [
    (re.compile(r"Missing data|must not be blank|Shorter than minimum length 1\b|Field may not "
                r"be null"), "Bitte ausfüllen."),
    (re.compile(r"Not a valid email"), "Bitte geben Sie eine gültige E-Mail-Adresse an, zum "
                                       "Beispiel name@gemeinde.de."),
    (re.compile(r"beyond ASCII|SMTPUTF8"), "Adressen mit Umlauten vor dem @ kann der Mailserver "
                                           "des Programms nicht zustellen. Bitte geben Sie eine "
                                           "Adresse ohne Umlaute an."),
    (re.compile(r"IDNA|punycode"), "Diese E-Mail-Adresse ist so nicht zustellbar."),
    (re.compile(r"Longer than maximum length (\d+)|Length must be between \d+ and (\d+)"),
     "Höchstens {0} Zeichen."),
    (re.compile(r"already enrolled in this programme"),
     "Diese Person ist in diesem Programm bereits angemeldet."),
    (re.compile(r"has access already"), "Diese Adresse hat bereits Zugang zum Portal."),
    (re.compile(r"course is (closed|planned|completed|cancelled)"),
     "Dieses Seminar nimmt keine Anmeldungen an."),
    (re.compile(r"enrolment window closed"), "Der Anmeldezeitraum des Programms ist vorbei."),
    (re.compile(r"programme not open to this body"),
     "Ihre Kommune kann an diesem Programm nicht teilnehmen."),
    (re.compile(r"unknown course|Not a valid UUID"), "Bitte wählen Sie ein Seminar aus."),
    (re.compile(r"already completed"), "Eine abgeschlossene Teilnahme kann nicht storniert "
                                       "werden."),
    (re.compile(r"must not contain the NUL"), "Diese Angabe enthält ein unzulässiges Zeichen."),
]

FIELD_NAMES = {"participant.given_name": "given_name", "participant.family_name": "family_name",
               "participant.email": "email", "participant.department": "department",
               "course_id": "course_id", "enrolment_id": "enrolment_id",
               "reason": "reason", "name": "name", "email": "email",
               "navigator.given_name": "given_name", "navigator.family_name": "family_name",
               "navigator.email": "email", "navigator.department": "department"}


def german(message: str) -> str:
    for pattern, text in _MESSAGES:
        found = pattern.search(str(message))
        if found:
            return text.format(*[g for g in found.groups() if g is not None])
    return "Diese Angabe ist ungültig."


def field_errors(fields: dict, values: dict | None = None) -> dict[str, str]:
    """The service's ``{"participant.email": ["..."]}`` as ``{"email": "<German>"}``; what
    concerns no field of the form goes under ``_form``. A field the form sent empty is asked
    for, whatever the reason said (the service's length rule covers both ends)."""
    errors: dict[str, str] = {}
    for name, problems in (fields or {}).items():
        problems = problems if isinstance(problems, list) else [problems]
        target = FIELD_NAMES.get(name, "_form")
        if target in errors or not problems:
            continue
        if values is not None and target in values and not str(values[target] or "").strip():
            errors[target] = "Bitte ausfüllen."
        else:
            errors[target] = german(problems[0])
    return errors


def row_problems(error: dict, values: dict | None = None) -> dict[str, str]:
    """A batch row's error (``{"status", "title", "detail", "fields"}``) in German."""
    found = field_errors(error.get("fields") or {}, values)
    if not found:
        if error.get("status") == 409:
            found["_form"] = ("Diese Zeile konnte wegen einer gleichzeitigen Änderung nicht "
                              "gespeichert werden; bitte erneut hochladen.")
        else:
            found["_form"] = "Diese Zeile kann nicht angemeldet werden."
    return found
