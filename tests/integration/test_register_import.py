"""The full Destatis register into PostgreSQL, and a re-import that updates in place."""
from dataclasses import replace

from sqlalchemy import func, select

from services.enrolment.models import Body
from services.enrolment.register import import_register, parse_register


def test_full_register_imports_and_reimport_updates_names_in_place(enrolment_db, register_file):
    records = parse_register(register_file)
    first = enrolment_db.run(import_register, records)
    assert first.created == len(records) and first.updated == 0

    def counts(session):
        rows = session.execute(select(Body.land, Body.kind, func.count())
                               .group_by(Body.land, Body.kind)).all()
        return {(land, kind): n for land, kind, n in rows}
    by_land = enrolment_db.run(counts)
    assert by_land[("08", "gemeinde")] == 1101 and by_land[("08", "kreis")] == 35
    assert by_land[("09", "gemeinde")] == 2056 and by_land[("09", "bezirk")] == 7
    assert by_land[("14", "gemeinde")] == 419 and by_land[("14", "kreis")] == 10

    renamed = [replace(r, name="Wiesloch, Große Kreisstadt") if r.ags == "08226098" else r
               for r in records]
    second = enrolment_db.run(import_register, renamed)
    assert (second.created, second.updated, second.unchanged) == (0, 1, len(records) - 1)
    wiesloch = enrolment_db.run(lambda s: s.get(Body, "08226098"))
    assert wiesloch.name == "Wiesloch, Große Kreisstadt" and wiesloch.kind == "gemeinde"
    assert enrolment_db.run(lambda s: s.scalar(select(func.count()).select_from(Body))) == len(records)
