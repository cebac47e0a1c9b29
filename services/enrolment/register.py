"""The municipality register: Destatis' Gemeindeverzeichnis extract (GV-ISys CSV) as bodies.

Plain Python, no nameko. Which records become bodies (DESIGN.md, shared/data/README.md):
Gemeinden (type 60) except the gemeindefreie Gebiete (text codes 65, 66), which have no
administration; Kreise (type 40); Regierungsbezirke (type 20) as Bezirke. A kreisfreie Stadt
or Stadtkreis appears as both type 40 and type 60 with one AGS and is one body.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from services.common.models import utcnow

TEXT_CODES = {
    "41": "kreisfreie Stadt", "42": "Stadtkreis", "43": "Kreis", "44": "Landkreis",
    "45": "Regionalverband", "60": "Markt", "61": "kreisfreie Stadt", "62": "Stadtkreis",
    "63": "Stadt", "64": "kreisangehörige Gemeinde", "67": "Große Kreisstadt",
}
REQUIRED = ("satzart", "textkennzeichen", "land", "rb", "kreis", "gemeinde", "gemeindename",
            "bevoelkerung", "postleitzahl")
NO_ADMINISTRATION = {"65", "66"}
KREISFREI_CODES = {"41", "42"}


class RegisterFormatError(ValueError):
    pass


@dataclass(frozen=True)
class BodyRecord:
    ags: str
    name: str
    kind: str
    designation: str
    kreisfrei: bool
    land: str
    kreis_ags: str | None
    population: int | None
    postal_code: str | None
    # WGS84 degrees from the register; a Kreis or Bezirk (no coordinates there) gets the
    # centre of its Gemeinden.
    longitude: float | None = None
    latitude: float | None = None


@dataclass
class ImportResult:
    created: int
    updated: int
    unchanged: int

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged


def _digits(value: str, width: int, column: str, line: int) -> str:
    value = (value or "").strip()
    if not value.isdigit() or len(value) > width:
        raise RegisterFormatError(f"line {line}: column {column} must be up to {width} digits, "
                                  f"got {value!r}")
    return value.zfill(width)


def _population(value: str) -> int | None:
    digits = (value or "").replace(" ", "").replace("\u00a0", "")
    return int(digits) if digits.isdigit() else None


def _degrees(value: str | None) -> float | None:
    """``"9,43751"`` (German decimal comma) as a float; None when empty or not a number."""
    text = (value or "").strip().replace(",", ".")
    try:
        return round(float(text), 6) if text else None
    except ValueError:
        return None


def _centres(bodies: dict[str, BodyRecord]) -> dict[str, tuple[float, float]]:
    """The mean position of the Gemeinden in each Kreis and each Bezirk."""
    sums: dict[str, list[float]] = {}
    for body in bodies.values():
        if body.kind != "gemeinde" or body.longitude is None or body.latitude is None:
            continue
        for area in {body.kreis_ags, body.ags[:3] + "00000"} - {None, body.ags}:
            total = sums.setdefault(area, [0.0, 0.0, 0])
            total[0] += body.longitude
            total[1] += body.latitude
            total[2] += 1
    return {area: (round(lon / n, 6), round(lat / n, 6)) for area, (lon, lat, n) in sums.items()}


def parse_register(path: str | Path) -> list[BodyRecord]:
    bodies: dict[str, BodyRecord] = {}
    kreisfrei: dict[str, str] = {}  # AGS -> designation, from the type-40 record
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise RegisterFormatError(f"line 1: missing columns {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            kind_code = (row["satzart"] or "").strip()
            text_code = (row["textkennzeichen"] or "").strip()
            if kind_code not in ("20", "40", "60"):
                continue
            land = _digits(row["land"], 2, "land", line)
            rb = _digits(row["rb"], 1, "rb", line)
            name = (row["gemeindename"] or "").strip()
            if not name:
                raise RegisterFormatError(f"line {line}: gemeindename is empty")
            if kind_code == "20":
                ags = f"{land}{rb}00000"
                bodies[ags] = BodyRecord(ags, name, "bezirk", "Regierungsbezirk", False, land,
                                         None, None, None)
                continue
            kreis = _digits(row["kreis"], 2, "kreis", line)
            kreis_ags = f"{land}{rb}{kreis}000"
            if kind_code == "40":
                if text_code in KREISFREI_CODES:
                    kreisfrei[kreis_ags] = TEXT_CODES[text_code]
                    continue
                bodies.setdefault(kreis_ags, BodyRecord(
                    kreis_ags, name, "kreis", TEXT_CODES.get(text_code, "Kreis"), False, land,
                    kreis_ags, None, None))
                continue
            if text_code in NO_ADMINISTRATION:
                continue
            ags = f"{land}{rb}{kreis}{_digits(row['gemeinde'], 3, 'gemeinde', line)}"
            postal = (row["postleitzahl"] or "").strip() or None
            bodies[ags] = BodyRecord(ags, name, "gemeinde", TEXT_CODES.get(text_code, "Gemeinde"),
                                     False, land, kreis_ags, _population(row["bevoelkerung"]),
                                     postal, _degrees(row.get("laengengrad")),
                                     _degrees(row.get("breitengrad")))
    for ags, designation in kreisfrei.items():
        city = bodies.get(ags)
        if city is None:
            raise RegisterFormatError(f"kreisfreie Stadt {ags} has no Gemeinde record")
        bodies[ags] = BodyRecord(**{**asdict(city), "kreisfrei": True,
                                    "designation": designation})
    for area, (longitude, latitude) in _centres(bodies).items():
        if area in bodies and bodies[area].longitude is None:
            bodies[area] = BodyRecord(**{**asdict(bodies[area]), "longitude": longitude,
                                         "latitude": latitude})
    return [bodies[ags] for ags in sorted(bodies)]


def import_register(session: Session, source: str | Path | Iterable[BodyRecord]) -> ImportResult:
    """Insert new bodies and update changed ones in place (AGS stay, names change).

    Does not commit: the caller's unit of work does."""
    from services.enrolment.models import Body

    records = parse_register(source) if isinstance(source, (str, Path)) else list(source)
    fields = [f for f in BodyRecord.__dataclass_fields__ if f != "ags"]
    existing = {row.ags: row for row in session.execute(
        select(Body.ags, *[getattr(Body, f) for f in fields])).all()}
    now = utcnow()
    new, changed = [], []
    for record in records:
        values = asdict(record)
        current = existing.get(record.ags)
        if current is None:
            new.append({**values, "updated_at": now})
        elif any(getattr(current, f) != values[f] for f in fields):
            changed.append({**values, "updated_at": now})
    if new:
        session.execute(insert(Body), new)
    for values in changed:
        session.execute(update(Body).where(Body.ags == values["ags"]).values(**values))
    session.flush()
    return ImportResult(created=len(new), updated=len(changed),
                        unchanged=len(records) - len(new) - len(changed))
