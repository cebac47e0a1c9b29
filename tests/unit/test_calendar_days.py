"""Every rule about a day counts German calendar days, whatever zone the server runs in.

Between midnight in Berlin and midnight UTC (one hour in winter, two in summer) the two dates
differ. Each test sets the services' clock into that gap and checks one rule on each side of
it: the enrolment window, a milestone recorded "today", the reserve deadline, the retention
period of a cancellation, the coverage's date, and a certificate issued on New Year's night.
"""
import io
import uuid
from datetime import date, datetime, timezone

import pytest
from pypdf import PdfReader

from services.certificates import domain as certificates
from services.certificates.credentials import KeyRing
from services.certificates.models import Base as CertificateBase
from services.certificates.models import InboxRecord as CertificateInbox
from services.certificates.models import OutboxMessage as CertificateOutbox
from services.common.clock import calendar_day
from services.common.db import DatabaseHandle
from services.common.errors import RuleViolation
from services.enrolment import coaching, coverage, domain, privacy
from services.enrolment.models import Body, Enrolment, InboxRecord, OutboxMessage
from services.funding import domain as funding
from services.funding.models import InboxRecord as FundingInbox
from services.funding.models import OutboxMessage as FundingOutbox
from services.gateway import verification
from tests.funding_support import bodies, confirmed, policy, publish
from tests.sqlite_support import migrated_sqlite

# 1 July 2027 in Berlin (summer time, UTC+2) begins at 22:00 UTC on 30 June.
FIRST_OF_JULY = date(2027, 7, 1)
JUST_AFTER_MIDNIGHT = datetime(2027, 6, 30, 22, 30, tzinfo=timezone.utc)  # 00:30 in Berlin
JUST_BEFORE_MIDNIGHT = datetime(2027, 6, 30, 21, 30, tzinfo=timezone.utc)  # 23:30 in Berlin
WIESLOCH, LEIPZIG = "08226098", "14713000"


def clock(monkeypatch, module, moment):
    monkeypatch.setattr(module, "now", lambda: moment)


def test_the_day_of_a_moment_is_the_day_in_berlin():
    assert calendar_day(JUST_AFTER_MIDNIGHT) == FIRST_OF_JULY
    assert calendar_day(JUST_BEFORE_MIDNIGHT) == date(2027, 6, 30)
    # Winter time (UTC+1): 23:30 UTC on 31 December is already New Year's Day.
    assert calendar_day(datetime(2026, 12, 31, 23, 30, tzinfo=timezone.utc)) == date(2027, 1, 1)
    assert calendar_day(datetime(2026, 12, 31, 22, 30, tzinfo=timezone.utc)) == date(2026, 12, 31)


@pytest.fixture
def enrolment_db(tmp_path):
    def seed(session):
        session.add_all([
            Body(ags=WIESLOCH, name="Wiesloch, Stadt", kind="gemeinde",
                 designation="Große Kreisstadt", kreisfrei=False, land="08",
                 kreis_ags="08226000"),
            Body(ags=LEIPZIG, name="Leipzig, Stadt", kind="gemeinde", designation="Stadt",
                 kreisfrei=True, land="14", kreis_ags="14713000")])
    handle = migrated_sqlite(tmp_path, "enrolment", OutboxMessage, InboxRecord, seed)
    yield handle
    handle.dispose()


def programme(session, code, land, opens_on, retention_days=None):
    fields = {"code": code, "name": f"Programm {code}", "land": land, "role_name": "Lotse",
              "eligible_kinds": ["gemeinde"], "enrolment_opens_on": opens_on,
              "enrolment_closes_on": date(2099, 1, 1)}
    if retention_days is not None:
        fields["retention_days"] = retention_days
    return domain.create_programme(session, fields)


def course(session, code, first_module):
    provider, _ = domain.create_provider(session, f"Anbieter {uuid.uuid4().hex[:6]}")
    return domain.create_course(session, provider, {
        "programme_code": code, "title": "Basisseminar", "location": "Wiesloch",
        "capacity": 22, "open": True,
        "modules": [{"number": 1, "title": "Modul 1", "date": first_module}]}).id


def enrol(session, course_id, n=1):
    return domain.enrol(session, WIESLOCH, {
        "course_id": course_id, "idempotency_key": None, "participant": {
            "given_name": f"Anna{n}", "family_name": "Groß", "email": f"anna{n}@example.org",
            "department": None}})


@pytest.mark.parametrize("moment, accepted", [(JUST_AFTER_MIDNIGHT, True),
                                              (JUST_BEFORE_MIDNIGHT, False)])
def test_enrolment_opens_at_midnight_in_berlin(enrolment_db, monkeypatch, moment, accepted):
    course_id = enrolment_db.run(lambda s: (programme(s, "BW-DL", "08", FIRST_OF_JULY),
                                            course(s, "BW-DL", date(2027, 9, 1)))[1])
    clock(monkeypatch, domain, moment)
    if accepted:
        assert enrolment_db.run(enrol, course_id)["status"] == "confirmed"
    else:
        with pytest.raises(RuleViolation) as refused:
            enrolment_db.run(enrol, course_id)
        assert "2027-07-01" in str(refused.value)
        assert enrolment_db.run(lambda s: s.query(Enrolment).count()) == 0


def test_a_milestone_reached_today_is_accepted_just_after_midnight(enrolment_db, monkeypatch):
    def setup(session):
        coaching.define(session, programme(session, "SN-DN", "14", date(2027, 1, 1)),
                        [{"key": "situation", "title": "Situation erfasst", "due_days": 42}])
    enrolment_db.run(setup)
    clock(monkeypatch, coaching, JUST_BEFORE_MIDNIGHT)
    coach, token = enrolment_db.run(coaching.register_coach, "SN-DN", "Lotse Lehmann",
                                    "lehmann@ssg.example", 5)
    navigator = enrolment_db.run(coaching.name_navigator, LEIPZIG, "SN-DN", {
        "given_name": "Karin", "family_name": "Krause", "email": "karin@leipzig.example",
        "department": None})
    enrolment_db.run(coaching.pair, uuid.UUID(navigator["id"]), coach.id, date(2027, 6, 1))

    def record(session, reached_on):
        return coaching.record_milestone(session, coaching.coach_by_token(session, token),
                                         uuid.UUID(navigator["id"]), "situation", reached_on,
                                         None, None)
    with pytest.raises(RuleViolation) as refused:  # 1 July has not begun in Berlin
        enrolment_db.run(record, FIRST_OF_JULY)
    assert list(refused.value.fields) == ["reached_on"]
    clock(monkeypatch, coaching, JUST_AFTER_MIDNIGHT)
    reached = enrolment_db.run(record, FIRST_OF_JULY)
    assert reached["milestones"][0]["reached_on"] == FIRST_OF_JULY


def test_a_cancellation_just_after_midnight_counts_on_the_new_day(enrolment_db, monkeypatch):
    """Retention runs from the day of the cancellation in Berlin: 1 July, not 30 June."""
    course_id = enrolment_db.run(lambda s: (
        programme(s, "BW-DL", "08", date(2027, 1, 1), retention_days=30),
        course(s, "BW-DL", date(2027, 9, 1)))[1])
    clock(monkeypatch, domain, JUST_AFTER_MIDNIGHT)
    enrolled = enrolment_db.run(enrol, course_id)
    enrolment_db.run(domain.cancel_enrolment, uuid.UUID(enrolled["id"]), ags=WIESLOCH)
    key = b"k" * 32
    assert enrolment_db.run(privacy.apply_retention, key, date(2027, 7, 31))["enrolments"] == 0
    assert enrolment_db.run(privacy.apply_retention, key, date(2027, 8, 1))["enrolments"] == 1


def test_the_coverage_is_as_of_the_day_in_berlin(enrolment_db, monkeypatch):
    enrolment_db.run(programme, "BW-DL", "08", date(2027, 1, 1))
    monkeypatch.setattr(coverage, "utcnow", lambda: JUST_AFTER_MIDNIGHT)
    assert enrolment_db.run(coverage.coverage, ["BW-DL"])["as_of"] == "2027-07-01"


@pytest.fixture
def funding_db(tmp_path):
    handle = migrated_sqlite(tmp_path, "funding", FundingOutbox, FundingInbox)
    yield handle
    handle.dispose()


@pytest.mark.parametrize("moment, released", [(JUST_AFTER_MIDNIGHT, True),
                                              (JUST_BEFORE_MIDNIGHT, False)])
def test_the_reserve_is_released_once_its_last_day_has_ended_in_berlin(funding_db, monkeypatch,
                                                                       moment, released):
    programme_id, eligible = uuid.uuid4(), bodies(3)
    funding_db.run(lambda s: publish(s, programme_id, eligible))
    funding_db.run(funding.set_policy, programme_id, "BW-DL",
                   policy(3 * 50_000, reserve_until=date(2027, 6, 30)))
    funding_db.run(funding.enrolment_confirmed, confirmed(programme_id, eligible[0]), "e1")
    funding_db.run(funding.enrolment_confirmed, confirmed(programme_id, eligible[0]), "e2")
    clock(monkeypatch, funding, moment)
    outcome = funding_db.run(funding.apply_reserve_deadline, "BW-DL")
    assert outcome["released"] is released
    assert outcome.get("funded", 0) == (1 if released else 0)


@pytest.fixture
def certificates_db():
    handle = DatabaseHandle("sqlite://", "certificates", CertificateOutbox, CertificateInbox)
    CertificateBase.metadata.create_all(handle.engine)
    yield handle
    handle.dispose()


@pytest.mark.parametrize("moment, year, day", [
    # 00:30 on 1 January 2027 in Berlin (winter time, UTC+1), still 2026 in UTC.
    (datetime(2026, 12, 31, 23, 30, tzinfo=timezone.utc), 2027, "1. Januar 2027"),
    (datetime(2026, 12, 31, 22, 30, tzinfo=timezone.utc), 2026, "31. Dezember 2026")])
def test_a_certificate_of_new_years_night_is_numbered_and_dated_in_berlin(
        certificates_db, tmp_path, monkeypatch, moment, year, day):
    from tests.unit.test_certificates import ISSUER, completed
    ring = KeyRing(tmp_path / "keys")
    ring.generate()
    clock(monkeypatch, certificates, moment)
    certificate = certificates_db.run(lambda s: certificates.issue(s, completed(), ring, ISSUER))
    assert certificate.number == f"BW-DL-{year}-000001"
    content = certificates_db.run(lambda s: certificates.render_pdf(
        certificates.by_number(s, certificate.number), ISSUER))
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)
    assert f"Ausgestellt am {day}" in text
    # The public verification page says the same day as the PDF.
    shown = certificates_db.run(certificates.verify_code, certificate.verification_code)
    assert f"<dt>Ausgestellt am</dt><dd>{day}</dd>" in verification.page(
        shown, certificate.verification_code)
