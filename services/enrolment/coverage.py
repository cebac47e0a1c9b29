"""How close a programme is to its aim: every eligible body with at least one trained Lotse.

Plain Python, no nameko. The enrolment service owns bodies and enrolments and keeps the
certificate numbers as a read model, so it can answer this alone. A body's status is the best
any of its enrolments in the programme reached:

* ``completed``: a participant completed every module (certificate issued);
* ``confirmed``: a participant holds a seat;
* ``waitlisted``: participants only on a waitlist;
* ``none``: nobody enrolled, or everybody cancelled.

"Covered" means confirmed or completed. The weekly series counts a body from the day its
earliest seat-holding enrolment was confirmed; a body whose participants all cancelled later
drops out of the series altogether (the series is drawn from today's enrolments, not a log).
"""
from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from services.common.clock import calendar_day
from services.common.errors import NotFound
from services.common.models import utcnow
from services.common.spreadsheet import german_csv
from services.enrolment.domain import eligible
from services.enrolment.models import Body, Enrolment, Programme

STATUSES = ("completed", "confirmed", "waitlisted", "none")
COVERED = ("completed", "confirmed")
_RANK = {"completed": 3, "confirmed": 2, "waitlisted": 1}
_STATUS_OF_RANK = {rank: status for status, rank in _RANK.items()}

LAENDER = {
    "01": "Schleswig-Holstein", "02": "Hamburg", "03": "Niedersachsen", "04": "Bremen",
    "05": "Nordrhein-Westfalen", "06": "Hessen", "07": "Rheinland-Pfalz",
    "08": "Baden-Württemberg", "09": "Bayern", "10": "Saarland", "11": "Berlin",
    "12": "Brandenburg", "13": "Mecklenburg-Vorpommern", "14": "Sachsen", "15": "Sachsen-Anhalt",
    "16": "Thüringen",
}


def bezirk_ags(ags: str) -> str:
    """The Regierungsbezirk an AGS lies in (land + rb + zeros); not every Land has them."""
    return ags[:3] + "00000"


def _programmes(session: Session, codes: list[str] | None) -> list[Programme]:
    query = select(Programme).order_by(Programme.land, Programme.code)
    if codes:
        query = query.where(Programme.code.in_(codes))
    programmes = list(session.execute(query).scalars())
    missing = sorted(set(codes or ()) - {p.code for p in programmes})
    if missing:
        raise NotFound(f"no programme {', '.join(missing)}",
                       {"programme_codes": [f"unknown programme {c}" for c in missing]})
    if not programmes:
        raise NotFound("no programme yet", {"programme_codes": ["no programme exists"]})
    return programmes


def _best_per_body(session: Session, programme_ids) -> dict[tuple, tuple[str, date | None]]:
    """(programme id, AGS) -> (best status, day first covered), in one grouped query."""
    rank = case(*((Enrolment.status == s, r) for s, r in _RANK.items()), else_=0)
    seat_since = case((Enrolment.status.in_(COVERED),
                       func.coalesce(Enrolment.confirmed_at, Enrolment.enrolled_at)), else_=None)
    rows = session.connection().execute(
        select(Enrolment.programme_id, Enrolment.ags, func.max(rank), func.min(seat_since))
        .where(Enrolment.programme_id.in_(programme_ids))
        .group_by(Enrolment.programme_id, Enrolment.ags)).all()
    best = {}
    for programme_id, ags, top, since in rows:
        if isinstance(since, str):  # SQLite hands an aggregate of a datetime back as text
            since = datetime.fromisoformat(since)
        best[(programme_id, ags)] = (_STATUS_OF_RANK.get(top, "none"),
                                     calendar_day(since) if since is not None else None)
    return best


def _tally(rows: list[dict]) -> dict:
    counts = {status: 0 for status in STATUSES}
    for row in rows:
        counts[row["status"]] += 1
    eligible_count = len(rows)
    covered = counts["completed"] + counts["confirmed"]
    return {"eligible": eligible_count, **counts, "covered": covered,
            "covered_percent": round(100 * covered / eligible_count, 1) if eligible_count else 0.0}


def _areas(bodies: list[dict], key: str, names: dict[str, str]) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for body in bodies:
        if body[key] in names:
            groups.setdefault(body[key], []).append(body)
    return [{"ags": area, "name": names[area], **_tally(rows)}
            for area, rows in sorted(groups.items())]


def _weekly(bodies: list[dict], opened: date, today: date) -> list[dict]:
    """Covered bodies at the end of each week (Monday to Sunday) since the programme opened."""
    first_week = opened - timedelta(days=opened.weekday())
    last_week = today - timedelta(days=today.weekday())
    per_week: dict[date, int] = {}
    for body in bodies:
        since = body["covered_since"]
        if since is not None:
            week = max(first_week, since - timedelta(days=since.weekday()))
            per_week[week] = per_week.get(week, 0) + 1
    series, covered, week = [], 0, first_week
    while week <= last_week:
        covered += per_week.get(week, 0)
        series.append({"week_starting": week.isoformat(), "covered": covered})
        week += timedelta(days=7)
    return series


def coverage(session: Session, codes: list[str] | None = None, today: date | None = None) -> dict:
    """Coverage of the given programmes (all when None): totals, per Land, Regierungsbezirk
    and Kreis, every eligible body with its position and status, and the weekly series."""
    today = today or calendar_day(utcnow())
    programmes = _programmes(session, codes)
    in_land: dict[str, list] = {}
    for body in session.connection().execute(  # plain rows: no ORM loading for 11,000 bodies
            select(Body.ags, Body.name, Body.kind, Body.designation, Body.kreisfrei, Body.land,
                   Body.kreis_ags, Body.longitude, Body.latitude)
            .where(Body.land.in_({p.land for p in programmes})).order_by(Body.ags)):
        in_land.setdefault(body.land, []).append(body)
    best = _best_per_body(session, [p.id for p in programmes])
    names = {b.ags: b.name for rows in in_land.values() for b in rows}
    bodies = []
    for programme in programmes:
        for body in in_land.get(programme.land, ()):
            if not eligible(body, programme):
                continue
            status, since = best.get((programme.id, body.ags), ("none", None))
            bodies.append({
                "programme_code": programme.code, "ags": body.ags, "name": body.name,
                "kind": body.kind, "designation": body.designation, "land": body.land,
                "bezirk_ags": bezirk_ags(body.ags), "kreis_ags": body.kreis_ags or body.ags,
                "longitude": body.longitude, "latitude": body.latitude,
                "status": status, "covered_since": since if status in COVERED else None,
            })
    opened = min(p.enrolment_opens_on for p in programmes)
    report = {
        "programmes": [{"code": p.code, "name": p.name, "land": p.land,
                        "land_name": LAENDER.get(p.land, p.land),
                        "opens_on": p.enrolment_opens_on.isoformat(),
                        "closes_on": p.enrolment_closes_on.isoformat()} for p in programmes],
        "as_of": today.isoformat(),
        "totals": _tally(bodies),
        "per_land": _areas(bodies, "land", LAENDER),
        "per_bezirk": _areas(bodies, "bezirk_ags", names),
        "per_kreis": _areas(bodies, "kreis_ags", names),
        "weekly": _weekly(bodies, opened, today),
        "bodies": bodies,
    }
    for body in bodies:
        body["covered_since"] = body["covered_since"].isoformat() if body["covered_since"] else None
    return report


STATUS_LABELS = {"completed": "Lotse ausgebildet", "confirmed": "Lotse angemeldet",
                 "waitlisted": "nur auf der Warteliste", "none": "noch niemand"}


def without_lotse_csv(report: dict) -> str:
    """The bodies still without a confirmed Lotse, one row per body and programme."""
    names = {row["ags"]: row["name"] for row in report["per_kreis"] + report["per_bezirk"]}
    return german_csv(
        ["Programm", "AGS", "Name", "Art", "Kreis", "Regierungsbezirk", "Land", "Stand"],
        ([body["programme_code"], body["ags"], body["name"], body["designation"],
          names.get(body["kreis_ags"], ""), names.get(body["bezirk_ags"], ""),
          LAENDER.get(body["land"], body["land"]), STATUS_LABELS[body["status"]]]
         for body in report["bodies"] if body["status"] not in COVERED))
