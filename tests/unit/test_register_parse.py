"""Reading the Destatis register: which records become bodies, and how."""
from collections import Counter

import pytest

from services.enrolment.register import RegisterFormatError, parse_register


@pytest.fixture(scope="module")
def bodies(register_file):
    return parse_register(register_file)


def test_counts_per_land_match_the_published_figures(bodies):
    counts = Counter((b.land, b.kind) for b in bodies)
    assert counts[("08", "gemeinde")] == 1101 and counts[("08", "kreis")] == 35
    assert counts[("09", "gemeinde")] == 2056 and counts[("09", "kreis")] == 71
    assert counts[("09", "bezirk")] == 7
    assert counts[("14", "gemeinde")] == 419 and counts[("14", "kreis")] == 10
    assert len({b.ags for b in bodies}) == len(bodies)


def test_kreisfreie_stadt_is_one_body(bodies):
    stuttgart = [b for b in bodies if b.ags == "08111000"]
    assert len(stuttgart) == 1
    assert (stuttgart[0].kind, stuttgart[0].kreisfrei, stuttgart[0].designation) == (
        "gemeinde", True, "Stadtkreis")
    assert sum(1 for b in bodies if b.land == "08" and b.kreisfrei) == 9
    assert sum(1 for b in bodies if b.land == "09" and b.kreisfrei) == 25


def test_population_with_space_separator_and_landkreis_kind(bodies):
    by_ags = {b.ags: b for b in bodies}
    assert by_ags["01001000"].population == 90164  # " 90 164" in the file
    assert by_ags["08226000"].kind == "kreis" and by_ags["08226000"].designation == "Landkreis"
    assert by_ags["08226098"].kreis_ags == "08226000"


def test_gemeindefreie_gebiete_are_left_out(register_file, bodies):
    import csv
    with open(register_file, encoding="utf-8-sig") as handle:
        unadministered = {r["land"] + r["rb"] + r["kreis"] + r["gemeinde"]
                          for r in csv.DictReader(handle)
                          if r["satzart"] == "60" and r["textkennzeichen"] in ("65", "66")}
    assert unadministered  # the file has some
    assert not unadministered & {b.ags for b in bodies}


def test_malformed_file_names_the_line(tmp_path):
    broken = tmp_path / "broken.csv"
    broken.write_text(
        "satzart,textkennzeichen,land,rb,kreis,vb,gemeinde,gemeindename,flaeche,bevoelkerung,"
        "maennlich,weiblich,jekm2,postleitzahl\n"
        "60,64,08,2,26,5010,098,Wiesloch,,,,,,69168\n"
        "60,64,0X,2,26,5010,099,Kaputt,,,,,,69168\n", encoding="utf-8")
    with pytest.raises(RegisterFormatError, match="line 3"):
        parse_register(broken)
    missing = tmp_path / "missing.csv"
    missing.write_text("satzart,land\n60,08\n", encoding="utf-8")
    with pytest.raises(RegisterFormatError, match="missing columns"):
        parse_register(missing)


def test_positions_from_the_register_and_areas_at_the_centre_of_their_gemeinden(bodies):
    by_ags = {b.ags: b for b in bodies}
    assert (by_ags["01001000"].longitude, by_ags["01001000"].latitude) == (9.43751, 54.78252)
    gemeinden = [b for b in bodies if b.kind == "gemeinde" and b.kreis_ags == "08226000"]
    rhein_neckar = by_ags["08226000"]
    assert rhein_neckar.longitude == pytest.approx(
        sum(g.longitude for g in gemeinden) / len(gemeinden), abs=1e-5)
    assert rhein_neckar.latitude == pytest.approx(
        sum(g.latitude for g in gemeinden) / len(gemeinden), abs=1e-5)
    assert all(b.longitude is not None and b.latitude is not None for b in bodies)
    assert 5.8 < min(b.longitude for b in bodies) and max(b.longitude for b in bodies) < 15.1
