"""Demo data for ``make run``: a Baden-Württemberg programme, a provider, two courses and three
registered municipalities, so the running system has something real to show."""
from __future__ import annotations

import json
import os
from datetime import date, timedelta
from pathlib import Path

import yaml
from sqlalchemy import func, select

from services.common.config import PROJECT_ROOT
from services.common.schemas import load
from services.enrolment import domain
from services.enrolment.models import Body, Programme
from services.enrolment.schemas import ProgrammeIn

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
    raw = yaml.safe_load(PROGRAMME_FILE.read_text(encoding="utf-8"))
    policy = raw.pop("funding", None)
    programme = load(ProgrammeIn(), {k: v.isoformat() if isinstance(v, date) else v
                                     for k, v in raw.items()}, "demo programme")

    def setup(session):
        domain.create_programme(session, programme)
        provider, token = domain.create_provider(
            session, "Verwaltungsschule des Gemeindetags Baden-Württemberg")
        start = date.today() + timedelta(days=30)
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
        return {"provider": {"name": provider.name, "token": token}, "courses": courses,
                "municipalities": keys}

    credentials = handle.run(setup)
    if funding_handle is not None and policy:
        from services.funding import domain as funding
        from services.funding.schemas import FundingPolicyIn
        checked = load(FundingPolicyIn(), {k: v.isoformat() if isinstance(v, date) else v
                                           for k, v in policy.items()}, "demo funding policy")
        programme_id = handle.run(lambda s: s.scalar(select(Programme.id).where(
            Programme.code == "BW-DL")))
        funding_handle.run(funding.set_policy, programme_id, "BW-DL", checked)
    credentials_path.parent.mkdir(parents=True, exist_ok=True)
    credentials_path.write_text(json.dumps(credentials, indent=2, ensure_ascii=False),
                                encoding="utf-8")
    os.chmod(credentials_path, 0o600)
    return (f"{register_note}\ndemo programme BW-DL with {len(credentials['courses'])} open "
            f"courses and {len(credentials['municipalities'])} municipalities loaded"
            f"{', funding policy set' if funding_handle is not None and policy else ''}\n"
            f"provider token and API keys: {credentials_path}")
