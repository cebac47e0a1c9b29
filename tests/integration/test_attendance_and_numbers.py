"""Issue 15 on real RabbitMQ and PostgreSQL, through the callers' own interfaces: attendance
counts only from a module's date on, and the longest programme code the enrolment service
accepts still gets certificates (one character more is refused when the programme is made)."""
from datetime import date, timedelta

import pytest
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import func, select

from services.certificates.models import Certificate
from services.certificates.service import CertificatesService
from services.common.clock import calendar_today
from services.common.errors import RuleViolation, ValidationFailed
from services.enrolment.models import Attendance
from services.enrolment.register import import_register
from services.enrolment.service import EnrolmentService
from tests.integration.helpers import SignedRpc, bw_records, gemeinden, participant, wait_for
from tests.integration.test_certificates import certificates_db

# 28 characters: the most a certificate number of 40 ("<code>-2026-000001") leaves for the code.
LONGEST_CODE = "BW-KOMMUNALE-DIGITALLOTSEN-1"


def programme(code):
    return {"code": code, "name": "Kommunale Digitallotsen Baden-Württemberg", "land": "08",
            "role_name": "Digitallotse", "eligible_kinds": ["gemeinde", "kreis"],
            "enrolment_opens_on": "2026-01-01", "enrolment_closes_on": "2099-12-31"}


def course(code, first_module: date):
    return {"programme_code": code, "title": "Basisseminar", "location": "Wiesloch",
            "capacity": 5, "open": True,
            "modules": [{"number": n, "title": f"Modul {n}",
                         "date": (first_module + timedelta(days=7 * (n - 1))).isoformat()}
                        for n in range(1, 6)]}


def test_attendance_from_the_module_date_on_and_the_longest_code_gets_its_certificate(
        container_factory, service_config, enrolment_db, register_file):
    config = service_config
    for service in (EnrolmentService, CertificatesService):
        container_factory(service, config).start()
    enrolment_db.run(import_register, bw_records(register_file))
    assert len(LONGEST_CODE) == 28

    # The programme office: one character more than the numbers allow is refused, clearly.
    with SignedRpc("enrolment", config, operator=True) as operator:
        with pytest.raises(ValidationFailed) as refused:
            operator.create_programme(programme(LONGEST_CODE + "X"))
        assert list(refused.value.fields) == ["code"]
        assert "at most 28 characters" in refused.value.fields["code"][0]
        operator.create_programme(programme(LONGEST_CODE))
        token = operator.create_provider("Verwaltungsschule")["token"]

    # The provider runs one course that took place and one that begins next week.
    today = calendar_today()
    with ServiceRpcProxy("enrolment", config, context_data={"provider_token": token}) as provider:
        past = provider.create_course(course(LONGEST_CODE, today - timedelta(days=40)))["id"]
        coming = provider.create_course(course(LONGEST_CODE, today + timedelta(days=7)))["id"]
    ags = gemeinden(register_file, 1)[0]
    with SignedRpc("enrolment", config) as enrolment:
        early = enrolment.enrol(ags, {"course_id": coming, "participant": participant(1)})
        done = enrolment.enrol(ags, {"course_id": past, "participant": participant(2)})

    with ServiceRpcProxy("enrolment", config, context_data={"provider_token": token}) as provider:
        # A module that has not taken place: refused, naming the module, nothing recorded.
        with pytest.raises(RuleViolation) as not_yet:
            provider.record_attendance(coming, 1, [early["id"]])
        assert list(not_yet.value.fields) == ["module_number"]
        assert (today + timedelta(days=7)).isoformat() in not_yet.value.message
        assert enrolment_db.run(lambda s: s.scalar(
            select(func.count()).select_from(Attendance))) == 0
        # A course that took place: attendance after the fact completes it.
        for module in range(1, 6):
            [result] = provider.record_attendance(past, module, [done["id"]])
        assert result["status"] == "completed"

    with SignedRpc("enrolment", config) as enrolment:
        certificate = wait_for(lambda: enrolment.get_enrolment(ags, done["id"])["certificate"],
                               timeout=30, message="certificate issued and known to enrolment")
        assert enrolment.get_enrolment(ags, early["id"])["status"] == "confirmed"
    number = certificate["number"]
    assert number == f"{LONGEST_CODE}-{today.year}-000001" and len(number) == 40
    handle = certificates_db(config)
    try:
        stored = handle.run(lambda s: s.scalars(select(Certificate.number)).all())
    finally:
        handle.dispose()
    assert stored == [number]
