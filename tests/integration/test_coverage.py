"""The programme office's figures over RPC: coverage from enrolment, money from funding, both
for the operator only."""
from datetime import date

import pytest

from services.common.errors import AuthenticationFailed, ValidationFailed
from services.enrolment.service import EnrolmentService
from services.funding import domain as funding_domain
from services.funding.service import FundingService
from tests.funding_support import policy
from tests.integration.helpers import SignedRpc, gemeinden, participant, seed, wait_for

FEE = 50_000


def test_office_sees_coverage_and_money_committed_after_enrolments(
        container_factory, service_config, enrolment_db, funding_db, register_file):
    for service in (EnrolmentService, FundingService):
        container_factory(service, service_config).start()
    seeded = seed(enrolment_db, register_file, capacity=3)
    course = str(seeded["courses"][0])
    funding_db.run(funding_domain.set_policy, seeded["programme_id"], "BW-DL",
                   policy(80_000_000, FEE, 1, date(2027, 6, 30)))
    first, second, third, fourth = gemeinden(register_file, 4)
    with SignedRpc("enrolment", service_config) as enrolment:
        for n, ags in enumerate((first, second, third, third, fourth)):
            enrolment.enrol(ags, {"course_id": course, "participant": participant(n)})
        with pytest.raises(AuthenticationFailed):  # a municipality may not read the report
            enrolment.coverage(first)
    with SignedRpc("funding", service_config, operator=True) as funding, \
            SignedRpc("enrolment", service_config, operator=True) as office:
        def funded():
            money = funding.commitments("BW-DL")
            weeks = money["weekly"]
            return money if weeks and weeks[-1]["committed_cents"] == 3 * FEE else None
        committed = wait_for(funded, message="three seats funded")
        report = office.coverage(["BW-DL"])
        csv_text = office.bodies_without_lotse_csv(["BW-DL"])
        with pytest.raises(ValidationFailed) as caught:
            office.coverage("BW-DL")  # a list of codes, not one
        assert "programme_codes" in caught.value.fields
    assert committed["weekly"][-1]["guaranteed_cents"] == 3 * FEE
    assert committed["weekly"][-1]["pool_cents"] == 0
    status = {b["ags"]: b["status"] for b in report["bodies"]}
    assert [status[a] for a in (first, second, third, fourth)] == [
        "confirmed", "confirmed", "confirmed", "waitlisted"]
    assert report["totals"]["eligible"] == 1136 and report["totals"]["covered"] == 3
    assert csv_text.count("\r\n") == 1 + 1136 - 3
