"""Certificate numbers fit every column that stores them, in every service (issue 15: a
programme code over 28 characters made every issuance fail on PostgreSQL)."""
import pytest
from sqlalchemy import create_engine, inspect

from services.common.errors import RuleViolation, ValidationFailed
from services.common.migrations import upgrade
from services.common.schemas import load
from services.enrolment.schemas import ProgrammeIn

PROGRAMME = {"name": "Digitallotsen", "land": "08", "role_name": "Digitallotse",
             "eligible_kinds": ["gemeinde"], "enrolment_opens_on": "2026-01-01",
             "enrolment_closes_on": "2027-12-31"}
LONGEST = "BW-" + "X" * 25  # 28 characters: 40 minus "-2026-000123"


def test_programme_codes_up_to_28_characters_are_accepted_and_longer_ones_refused():
    assert len(LONGEST) == 28
    assert load(ProgrammeIn(), dict(PROGRAMME, code=LONGEST))["code"] == LONGEST
    with pytest.raises(ValidationFailed) as refused:
        load(ProgrammeIn(), dict(PROGRAMME, code=LONGEST + "X"))
    assert list(refused.value.fields) == ["code"]
    assert "at most 28 characters" in refused.value.fields["code"][0]


def test_the_limits_agree_across_services():
    from services.certificates.models import NUMBER_LENGTH, PROGRAMME_CODE_MAX
    from services.enrolment import schemas
    assert schemas.PROGRAMME_CODE_MAX == PROGRAMME_CODE_MAX == 28
    assert NUMBER_LENGTH == 40


def test_the_longest_number_is_40_characters_and_anything_longer_is_refused():
    from services.certificates.domain import certificate_number
    assert certificate_number("BW-DL", 2026, 123) == "BW-DL-2026-000123"
    assert len(certificate_number(LONGEST, 2026, 999_999)) == 40
    with pytest.raises(RuleViolation) as too_long:  # a code made before codes were limited
        certificate_number(LONGEST + "X", 2026, 1)
    assert "programme_code" in too_long.value.fields
    with pytest.raises(RuleViolation):  # the millionth certificate of a programme in a year
        certificate_number(LONGEST, 2026, 1_000_000)


# Every column (after each service's migrations) that holds a certificate number or a
# programme code, and what it must hold.
NUMBER_COLUMNS = {
    "enrolment": [("enrolments", "certificate_number")],
    "certificates": [("certificates", "number"), ("certificates", "supersedes"),
                     ("certificates", "superseded_by")],
    "notifications": [("notices", "certificate_number")],
}
CODE_COLUMNS = {
    "enrolment": [("programmes", "code")],
    "funding": [("funding_programmes", "code")],
    "certificates": [("certificates", "programme_code"),
                     ("certificate_sequences", "programme_code")],
}


@pytest.mark.parametrize("service", ["enrolment", "funding", "certificates", "notifications"])
def test_every_migrated_column_holds_the_longest_number_and_code(tmp_path, service):
    url = f"sqlite:///{tmp_path / f'{service}.sqlite'}"
    upgrade(service, url)
    engine = create_engine(url)
    try:
        schema = inspect(engine)
        lengths = {(table, column["name"]): column["type"].length
                   for table in schema.get_table_names()
                   for column in schema.get_columns(table)
                   if getattr(column["type"], "length", None)}
    finally:
        engine.dispose()
    for column in NUMBER_COLUMNS.get(service, []):
        assert lengths[column] >= 40, column
    for column in CODE_COLUMNS.get(service, []):
        assert lengths[column] >= 28, column
    # A column added later under one of these names is held to the same lengths.
    assert all(n >= 40 for (_, name), n in lengths.items() if name == "certificate_number")
    assert all(n >= 28 for (_, name), n in lengths.items() if name == "programme_code")
