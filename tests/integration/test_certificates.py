"""Certificates end to end: completion issues one, numbers stay gapless with two instances,
and anyone can verify through the gateway, by eye or by machine."""
import uuid
from datetime import date, timedelta

import eventlet
import requests
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import select

from services.certificates import credentials
from services.certificates.models import Certificate
from services.certificates.service import CertificatesService
from services.common.clock import calendar_today
from services.common.events import build_event
from services.enrolment import domain as enrolment_domain
from services.enrolment.service import EnrolmentService
from services.gateway.service import GatewayService
from tests.integration.helpers import SignedRpc, producer_dispatcher, gemeinden, participant, seed, wait_for
from tests.integration.test_gateway import free_port


def completed_event(n):
    return build_event("enrolment", "enrolment_completed", {
        "enrolment_id": uuid.uuid4(), "programme_id": uuid.uuid4(), "programme_code": "BW-DL",
        "programme_name": "Kommunale Digitallotsen Baden-Württemberg",
        "role_name": "Digitallotse", "course_id": uuid.uuid4(), "course_title": "Basisseminar",
        "location": "Wiesloch", "provider_name": "VWA", "ags": "08226098",
        "municipality_name": "Wiesloch, Stadt", "completed_on": date(2027, 1, 20),
        "modules": [{"number": 1, "title": "Modul 1", "date": date(2027, 1, 1)}],
        "participant": participant(n), "sequence": 2})


def certificates_db(service_config):
    from services.certificates.models import InboxRecord, OutboxMessage
    from services.common.db import open_database
    return open_database(service_config, "certificates", OutboxMessage, InboxRecord)


def test_numbers_are_gapless_and_unique_with_two_instances_and_duplicates(
        container_factory, service_config):
    for _ in range(2):
        container_factory(CertificatesService, service_config).start()
    events = [completed_event(n) for n in range(30)]
    dispatch = producer_dispatcher(service_config)
    pool = eventlet.GreenPool(15)
    for envelope in events + events[:8]:  # eight delivered twice
        pool.spawn_n(dispatch, "enrolment", "enrolment_completed", envelope)
    pool.waitall()
    handle = certificates_db(service_config)
    try:
        numbers = wait_for(lambda: (lambda n: n if len(n) == 30 else None)(
            handle.run(lambda s: list(s.scalars(select(Certificate.number))))),
            timeout=60, message="30 certificates")
        eventlet.sleep(0.5)  # duplicates still in flight would show up as extra rows
        numbers = handle.run(lambda s: sorted(s.scalars(select(Certificate.number))))
    finally:
        handle.dispose()
    year = calendar_today().year
    assert numbers == [f"BW-DL-{year}-{n:06d}" for n in range(1, 31)]


def test_completion_to_verification_through_the_gateway(
        container_factory, service_config, enrolment_db, register_file):
    config = dict(service_config, WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}")
    for service in (EnrolmentService, CertificatesService, GatewayService):
        container_factory(service, config).start()
    base = f"http://{config['WEB_SERVER_ADDRESS']}"
    seeded = seed(enrolment_db, register_file, capacity=5)
    token = seeded["providers"][0]["token"]
    # A course that took place (attendance counts only from a module's date on).
    first_module = calendar_today() - timedelta(days=40)
    with ServiceRpcProxy("enrolment", config, context_data={"provider_token": token}) as provider:
        course = provider.create_course({
            "programme_code": "BW-DL", "title": "Basisseminar", "location": "Wiesloch",
            "capacity": 5, "open": True,
            "modules": [{"number": n, "title": f"Modul {n}",
                         "date": (first_module + timedelta(days=7 * (n - 1))).isoformat()}
                        for n in range(1, 6)]})["id"]
    mine, other = gemeinden(register_file, 2)
    keys = {ags: enrolment_db.run(lambda s, a=ags: enrolment_domain.register_municipality(
        s, a, "Hauptamt", f"h@{a}.example")[1]) for ags in (mine, other)}

    with SignedRpc("enrolment", config) as enrolment:
        person = dict(participant(1), given_name="Jürgen", family_name="Weiß-Größler")
        enrolled = enrolment.enrol(mine, {"course_id": course, "participant": person})
    with ServiceRpcProxy("enrolment", config, context_data={"provider_token": token}) as provider:
        for module in range(1, 6):
            provider.record_attendance(course, module, [enrolled["id"]])
    with SignedRpc("enrolment", config) as enrolment:
        certificate = wait_for(lambda: enrolment.get_enrolment(mine, enrolled["id"])["certificate"],
                               timeout=30, message="certificate issued and known to enrolment")
    number = certificate["number"]
    with SignedRpc("certificates", config, operator=True) as certificates:
        issued = certificates.get_certificate(number)
    assert issued["participant"] == "Jürgen Weiß-Größler"

    handle = certificates_db(config)
    code = handle.run(lambda s: s.scalar(select(Certificate.verification_code)
                                         .where(Certificate.number == number)))
    handle.dispose()

    page = requests.get(f"{base}/verify/{code}", timeout=10)
    assert page.status_code == 200 and "Zertifikat gültig" in page.text
    assert "Jürgen Weiß-Größler" in page.text
    assert requests.get(f"{base}/api/v1/verify/{code.lower()}", timeout=10).json()["status"] == "valid"

    jwks = requests.get(f"{base}/.well-known/jwks.json", timeout=10).json()
    _, claims = credentials.verify_jws(issued["credential"], jwks)
    assert claims["evidence"][0]["description"] == number
    checked = requests.post(f"{base}/api/v1/credentials:verify",
                            json={"credential": issued["credential"]}, timeout=10).json()
    assert checked["valid"] is True and checked["number"] == number

    pdf = requests.get(f"{base}/api/v1/certificates/{number}.pdf",
                       headers={"Authorization": f"Bearer {keys[mine]}"}, timeout=10)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    foreign = requests.get(f"{base}/api/v1/certificates/{number}.pdf",
                           headers={"Authorization": f"Bearer {keys[other]}"}, timeout=10)
    assert foreign.status_code == 404

    with ServiceRpcProxy("certificates", config, context_data={"provider_token": token}) as by_provider:
        by_provider.revoke(number, "Teilnahme nachträglich aberkannt")
    revoked = requests.get(f"{base}/api/v1/verify/{code}", timeout=10).json()
    assert revoked["status"] == "revoked"
    assert revoked["revocation_reason"] == "Teilnahme nachträglich aberkannt"
    assert "widerrufen" in requests.get(f"{base}/verify/{code}", timeout=10).text
    rechecked = requests.post(f"{base}/api/v1/credentials:verify",
                              json={"credential": issued["credential"]}, timeout=10).json()
    assert rechecked["valid"] is False and rechecked["status"] == "revoked"

    tampered = code[:-1] + ("A" if code[-1] != "A" else "B")
    for unknown in (tampered, credentials.new_verification_code()):
        assert requests.get(f"{base}/api/v1/verify/{unknown}", timeout=10).json() == {
            "status": "unknown"}
        assert "Unbekannter Prüfcode" in requests.get(f"{base}/verify/{unknown}", timeout=10).text
    with SignedRpc("enrolment", config) as enrolment:
        wait_for(lambda: enrolment.get_enrolment(mine, enrolled["id"])["certificate"]["status"]
                 == "revoked", message="enrolment learns of the revocation")
