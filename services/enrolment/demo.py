"""Demo data for ``make run``: a Baden-Württemberg programme, a provider, two open courses, a
course that took place (with one participant from each municipality, waiting for the provider
to record attendance) and three registered municipalities, so the running system has
something real to show, up to a certificate."""
from __future__ import annotations

import json
import os
import uuid
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import func, select

from services import programme_files
from services.common.config import PROJECT_ROOT
from services.enrolment import domain
from services.enrolment.models import Body, Programme

PROGRAMME_FILE = PROJECT_ROOT / "deploy" / "programmes" / "bw-digitallotsen.yaml"

# Used only when no register file is at hand: real bodies around the Wiesloch seminar.
FALLBACK_BODIES = [
    ("08226098", "Wiesloch, Stadt", "gemeinde", "Große Kreisstadt", False),
    ("08226095", "Walldorf, Stadt", "gemeinde", "Stadt", False),
    ("08226041", "Leimen, Stadt", "gemeinde", "Große Kreisstadt", False),
    ("08226000", "Rhein-Neckar-Kreis", "kreis", "Landkreis", False),
    ("08221000", "Heidelberg, Stadt", "gemeinde", "Stadtkreis", True),
    ("08111000", "Stuttgart, Landeshauptstadt", "gemeinde", "Stadtkreis", True),
]

MUNICIPALITIES = [
    ("08226098", "Hauptamt Wiesloch", "digital@wiesloch.example"),
    ("08226095", "Hauptamt Walldorf", "digital@walldorf.example"),
    ("08226000", "Landratsamt Rhein-Neckar-Kreis", "digital@rhein-neckar-kreis.example"),
]

MODULES = ["Digitale Verwaltung und OZG", "Prozesse erkennen und modellieren",
           "Projekte und Veränderung", "Kommunikation und Beteiligung",
           "Praxisprojekt und Netzwerk"]


# Made-up participants of the course that took place, one per demo municipality.
PAST_PARTICIPANTS = {
    "08226098": ("Anna", "Beispiel", "anna.beispiel@wiesloch.example", "Hauptamt"),
    "08226095": ("Jürgen", "Weiß", "juergen.weiss@walldorf.example", "Bauamt"),
    "08226000": ("Lena", "Muster", "lena.muster@rhein-neckar-kreis.example", "IT"),
}


DEMO_OFFICE = "buero@lotsen.example"  # may sign in to the programme office's pages


DEMO_COACH = "lotse@lotsen.example"  # may sign in to the coaches' pages
COACHING_FILE = PROJECT_ROOT / "deploy" / "programmes" / "sn-digital-navigatoren.yaml"
PIRNA = "14628270"


def _coaching(session) -> dict | None:
    """Sachsen's coaching programme, when the real register brought Sachsen's bodies: Pirna
    registered, its Navigator named and paired with the demo coach three weeks ago."""
    from services.enrolment import coaching
    if session.get(Body, PIRNA) is None:
        return None
    programme_files.create(session, programme_files.read(COACHING_FILE))
    domain.register_municipality(session, PIRNA, "Hauptamt Pirna", "digital@pirna.example")
    named = coaching.name_navigator(session, PIRNA, "SN-DN", {
        "given_name": "Karin", "family_name": "Beispiel",
        "email": "karin.beispiel@pirna.example", "department": "Hauptamt"})
    coach, _ = coaching.register_coach(session, "SN-DN", "Lotse (Demo)", DEMO_COACH, 20)
    coaching.pair(session, uuid.UUID(named["id"]), coach.id,
                  domain.course_today() - timedelta(days=21))
    return {"programme": "SN-DN", "coach": DEMO_COACH, "municipality": PIRNA}


def _modules(first: date) -> list[dict]:
    return [{"number": n, "title": title, "date": first + timedelta(days=7 * (n - 1))}
            for n, title in enumerate(MODULES, start=1)]


def load_demo(handle, register_file: Path | None, credentials_path: Path,
              funding_handle=None) -> str:
    from services.enrolment.register import import_register, parse_register

    def already(session):
        return session.scalar(select(Programme.id).where(Programme.code == "BW-DL"))

    if handle.run(already):
        return f"demo data already loaded; credentials in {credentials_path}"

    def bodies(session):
        if session.scalar(select(func.count()).select_from(Body)):
            return "register already loaded"
        if register_file:
            result = import_register(session, parse_register(register_file))
            return f"register imported from {register_file.name}: {result.total} bodies"
        for ags, name, kind, designation, kreisfrei in FALLBACK_BODIES:
            session.add(Body(ags=ags, name=name, kind=kind, designation=designation,
                             kreisfrei=kreisfrei, land="08", kreis_ags=ags[:5] + "000"))
        return f"no register file: {len(FALLBACK_BODIES)} demo bodies loaded"

    register_note = handle.run(bodies)
    parsed = programme_files.read(PROGRAMME_FILE)
    policy = parsed.policy

    def setup(session):
        programme_files.create(session, parsed)
        provider, token = domain.create_provider(
            session, "Verwaltungsschule des Gemeindetags Baden-Württemberg")
        start = domain.course_today() + timedelta(days=30)
        courses = []
        for title, location, capacity, first in [
            ("Basisseminar Kommunale Digitallotsen", "Wiesloch", 22, start),
            ("Basisseminar Kommunale Digitallotsen", "Stuttgart", 20, start + timedelta(days=14)),
        ]:
            course = domain.create_course(session, provider, {
                "programme_code": "BW-DL", "title": title, "location": location,
                "capacity": capacity, "modules": _modules(first), "open": True})
            courses.append({"id": str(course.id), "location": location})
        keys = []
        for ags, contact, email in MUNICIPALITIES:
            _, key = domain.register_municipality(session, ags, contact, email)
            keys.append({"ags": ags, "contact": contact, "api_key": key})
        # A course whose five modules lie in the past (the last one two weeks ago): attendance
        # counts only from a module's date on, so this is the one to record attendance for
        # and see certificates right away. Closed: nobody enrols any more.
        past = domain.create_course(session, provider, {
            "programme_code": "BW-DL", "title": "Basisseminar Kommunale Digitallotsen",
            "location": "Heidelberg", "capacity": 22,
            "modules": _modules(domain.course_today() - timedelta(days=42)), "open": True})
        enrolment_ids = []
        for ags, (given, family, email, department) in PAST_PARTICIPANTS.items():
            enrolment = domain.enrol(session, ags, {"course_id": past.id, "participant": {
                "given_name": given, "family_name": family, "email": email,
                "department": department}})
            enrolment_ids.append(enrolment["id"])
        domain.change_course_status(session, provider, past.id, "close")
        from services.enrolment import office
        office.add_staff(session, DEMO_OFFICE, "Programmbüro (Demo)")
        return {"office": DEMO_OFFICE, "coaching": _coaching(session),
                "provider": {"name": provider.name, "token": token}, "courses": courses,
                "course_that_took_place": {
                    "id": str(past.id), "location": "Heidelberg",
                    "modules": [{"number": m.number, "date": m.date.isoformat()}
                                for m in past.modules],
                    "enrolment_ids": enrolment_ids},
                "municipalities": keys}

    credentials = handle.run(setup)
    if funding_handle is not None and policy:
        from services.funding import domain as funding
        programme_id = handle.run(lambda s: s.scalar(select(Programme.id).where(
            Programme.code == "BW-DL")))
        funding_handle.run(funding.set_policy, programme_id, "BW-DL", policy)
    credentials_path.parent.mkdir(parents=True, exist_ok=True)
    credentials_path.write_text(json.dumps(credentials, indent=2, ensure_ascii=False),
                                encoding="utf-8")
    os.chmod(credentials_path, 0o600)
    return (f"{register_note}\ndemo programme BW-DL with {len(credentials['courses'])} open "
            f"courses, a course that took place (Heidelberg, "
            f"{len(credentials['course_that_took_place']['enrolment_ids'])} participants to "
            f"record attendance for) and {len(credentials['municipalities'])} municipalities loaded"
            f"{', funding policy set' if funding_handle is not None and policy else ''}\n"
            + (f"coaching programme SN-DN: Pirna's Navigator paired with "
               f"{DEMO_COACH} (sign in at /coaching)\n" if credentials["coaching"] else "")
            + f"provider token and API keys: {credentials_path}")
