"""The programme office's coverage report, on the real register of Baden-Württemberg."""
import csv
import io
import uuid
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest
from sqlalchemy import update

from services.common.clock import calendar_today
from services.common.errors import NotFound
from services.enrolment import coverage, domain
from services.enrolment.models import Enrolment, InboxRecord, OutboxMessage
from services.enrolment.register import import_register, parse_register
from services.gateway.charts import coverage_map, weekly_chart
from tests.sqlite_support import migrated_sqlite

WIESLOCH, WALLDORF, NUSSLOCH = "08226098", "08226095", "08226056"
RHEIN_NECKAR, STUTTGART = "08226000", "08111000"


@pytest.fixture(scope="module")
def bw_records(register_file):
    return [b for b in parse_register(register_file) if b.land == "08"]


@pytest.fixture
def db(tmp_path, bw_records):
    handle = migrated_sqlite(tmp_path, "enrolment", OutboxMessage, InboxRecord,
                             lambda s: import_register(s, bw_records))
    yield handle
    handle.dispose()


def open_programme(db, capacity=2):
    def run(session):
        domain.create_programme(session, {
            "code": "BW-DL", "name": "Kommunale Digitallotsen", "land": "08",
            "role_name": "Digitallotse", "eligible_kinds": ["gemeinde", "kreis"],
            "enrolment_opens_on": calendar_today() - timedelta(days=30),
            "enrolment_closes_on": date(2099, 1, 1)})
        provider, _ = domain.create_provider(session, "VWA")
        return domain.create_course(session, provider, {
            "programme_code": "BW-DL", "title": "Basisseminar", "location": "Wiesloch",
            "capacity": capacity, "open": True,
            "modules": [{"number": 1, "title": "M1", "date": calendar_today() + timedelta(days=9)}]}).id
    return db.run(run)


def enrol(db, ags, course, email):
    return db.run(domain.enrol, ags, {"course_id": course, "idempotency_key": None, "participant": {
        "given_name": "Anna", "family_name": "Groß", "email": email, "department": None}})


def test_every_eligible_body_is_counted_once_in_its_kreis_and_bezirk(db):
    open_programme(db)
    report = db.run(coverage.coverage, ["BW-DL"])
    assert report["totals"]["eligible"] == 1136 and report["totals"]["none"] == 1136
    assert len(report["per_kreis"]) == 44  # 35 Landkreise and 9 Stadtkreise
    assert [row["name"] for row in report["per_bezirk"]] == [
        "Reg.-Bez. Stuttgart", "Reg.-Bez. Karlsruhe", "Reg.-Bez. Freiburg", "Reg.-Bez. Tübingen"]
    assert sum(row["eligible"] for row in report["per_kreis"]) == 1136
    assert sum(row["eligible"] for row in report["per_bezirk"]) == 1136
    assert [(r["name"], r["eligible"]) for r in report["per_land"]] == [("Baden-Württemberg", 1136)]
    rhein_neckar = next(r for r in report["per_kreis"] if r["ags"] == RHEIN_NECKAR)
    assert rhein_neckar["name"] == "Rhein-Neckar-Kreis"
    assert rhein_neckar["eligible"] == 55  # 54 Gemeinden and the Landkreis itself
    assert all(b["longitude"] is not None for b in report["bodies"])


def test_status_is_the_best_an_enrolment_reached_and_cancelling_takes_it_back(db):
    course = open_programme(db, capacity=2)
    enrol(db, WIESLOCH, course, "a@example.org")
    walldorf = enrol(db, WALLDORF, course, "b@example.org")
    enrol(db, NUSSLOCH, course, "c@example.org")  # course full: waitlisted
    enrol(db, WIESLOCH, course, "d@example.org")  # a second one on the waitlist changes nothing
    db.run(lambda s: s.execute(update(Enrolment).where(Enrolment.ags == WIESLOCH,
                                                       Enrolment.status == "confirmed")
                               .values(status="completed")))
    report = db.run(coverage.coverage, None)
    status = {b["ags"]: b["status"] for b in report["bodies"]}
    assert (status[WIESLOCH], status[WALLDORF], status[NUSSLOCH], status[STUTTGART]) == (
        "completed", "confirmed", "waitlisted", "none")
    totals = report["totals"]
    assert (totals["completed"], totals["confirmed"], totals["waitlisted"], totals["covered"]) == (
        1, 1, 1, 2)
    rhein_neckar = next(r for r in report["per_kreis"] if r["ags"] == RHEIN_NECKAR)
    assert (rhein_neckar["covered"], rhein_neckar["waitlisted"], rhein_neckar["none"]) == (2, 1, 52)
    this_week = calendar_today() - timedelta(days=calendar_today().weekday())
    assert report["weekly"][-1] == {"week_starting": this_week.isoformat(), "covered": 2}
    assert report["weekly"][0]["covered"] == 0 and len(report["weekly"]) >= 5

    db.run(domain.cancel_enrolment, uuid.UUID(walldorf["id"]), ags=WALLDORF)
    after = {b["ags"]: b["status"] for b in db.run(coverage.coverage, ["BW-DL"])["bodies"]}
    assert after[WALLDORF] == "none" and after[NUSSLOCH] == "confirmed"  # promoted to the seat


def test_csv_of_bodies_without_a_lotse_opens_in_a_german_excel(db):
    course = open_programme(db, capacity=1)
    enrol(db, WIESLOCH, course, "a@example.org")
    enrol(db, WALLDORF, course, "b@example.org")
    text = coverage.without_lotse_csv(db.run(coverage.coverage, ["BW-DL"]))
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:]), delimiter=";"))
    assert rows[0][:3] == ["Programm", "AGS", "Name"]
    by_ags = {r[1]: r for r in rows[1:]}
    assert len(by_ags) == 1135 and WIESLOCH not in by_ags
    assert by_ags[WALLDORF][4:] == ["Rhein-Neckar-Kreis", "Reg.-Bez. Karlsruhe",
                                    "Baden-Württemberg", "nur auf der Warteliste"]


def test_unknown_programme_is_named(db):
    open_programme(db)
    with pytest.raises(NotFound) as caught:
        db.run(coverage.coverage, ["BW-DL", "XX-NO"])
    assert caught.value.fields == {"programme_codes": ["unknown programme XX-NO"]}


def test_map_has_a_mark_per_body_shaped_and_coloured_by_status(db):
    course = open_programme(db, capacity=1)
    enrol(db, WIESLOCH, course, "a@example.org")
    enrol(db, WALLDORF, course, "b@example.org")
    report = db.run(coverage.coverage, ["BW-DL"])
    svg = coverage_map(report["bodies"], "Abdeckung Baden-Württemberg")
    root = ET.fromstring(svg)  # well-formed, names escaped
    ns = "{http://www.w3.org/2000/svg}"
    marks = [el for el in root.iter() if el.find(f"{ns}title") is not None and el is not root]
    legend = [el for el in root.iter(f"{ns}g")][0]
    body_marks = [m for m in marks if m not in list(legend)]
    assert len(body_marks) == 1136
    classes = [m.get("class").split()[0] for m in body_marks]
    assert classes.count("confirmed") == 1 and classes.count("waitlisted") == 1
    assert classes.count("none") == 1134
    assert sum(1 for m in body_marks if m.tag == f"{ns}rect") == 35  # the Landkreise
    wiesloch = next(m for m in body_marks if "Wiesloch" in m.find(f"{ns}title").text)
    walldorf = next(m for m in body_marks if "Walldorf" in m.find(f"{ns}title").text)
    # Walldorf (waitlisted: a triangle from its top corner) lies west of Wiesloch, a little north.
    top_x, top_y = (float(v) for v in walldorf.get("d")[1:].split("l")[0].split())
    assert top_x < float(wiesloch.get("cx")) and top_y < float(wiesloch.get("cy"))
    assert "noch niemand: 1134" in "".join(t.text for t in legend.iter(f"{ns}text"))
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<style" not in svg  # the pages' CSP allows no inline styles: attributes only
    assert wiesloch.get("fill") == "#0072B2" and walldorf.get("fill") == "#E69F00"


def test_weekly_chart_draws_one_point_per_week():
    series = [{"week_starting": f"2026-0{m}-01", "covered": v} for m, v in [(1, 0), (2, 3), (3, 9)]]
    svg = weekly_chart(series, [("covered", "Kommunen mit Lotse", "#0072B2")], "Verlauf")
    root = ET.fromstring(svg)
    [line] = root.iter("{http://www.w3.org/2000/svg}polyline")
    ys = [float(p.split(",")[1]) for p in line.get("points").split()]
    assert len(ys) == 3 and ys[0] > ys[1] > ys[2]  # rising: smaller y is higher up
    assert line.get("fill") == "none" and "<style" not in svg
    assert "01.03.2026" in svg  # the last week, as German dates are written
