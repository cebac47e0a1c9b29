"""Codes, signatures, the PDF and the certificate rules, without a broker (SQLite)."""
import io
import json
import uuid
from datetime import date

import pytest
from pypdf import PdfReader

from services.certificates import credentials, domain
from services.certificates.credentials import KeyRing, normalise_code
from services.certificates.models import Base, InboxRecord, OutboxMessage
from services.common.clock import calendar_today
from services.common.db import DatabaseHandle
from services.common.errors import NotFound, RuleViolation

ISSUER = domain.Issuer("Programmbüro Kommunale Digitallotsen", "https://lotsen.example",
                       "https://lotsen.example")


def completed(n=1, **participant):
    person = {"given_name": "Jürgen", "family_name": "Weiß-Größler",
              "email": f"jw{n}@wiesloch.example"}
    person.update(participant)
    return {"enrolment_id": uuid.uuid4(), "programme_id": uuid.uuid4(), "programme_code": "BW-DL",
            "programme_name": "Kommunale Digitallotsen Baden-Württemberg",
            "role_name": "Digitallotse", "course_id": uuid.uuid4(),
            "course_title": "Basisseminar", "location": "Wiesloch",
            "provider_name": "Verwaltungsschule", "ags": "08226098",
            "municipality_name": "Wiesloch, Stadt", "completed_on": date(2027, 1, 20),
            "modules": [{"number": i, "title": f"Modul {i}", "date": date(2027, 1, i)}
                        for i in range(1, 6)],
            "participant": person}


@pytest.fixture
def keyring(tmp_path):
    ring = KeyRing(tmp_path / "keys")
    ring.generate()
    return ring


@pytest.fixture
def db():
    handle = DatabaseHandle("sqlite://", "certificates", OutboxMessage, InboxRecord)
    Base.metadata.create_all(handle.engine)
    yield handle
    handle.dispose()


def test_verification_codes_are_typable_and_unguessable():
    codes = {credentials.new_verification_code() for _ in range(2000)}
    assert len(codes) == 2000
    for code in list(codes)[:50]:
        assert [len(p) for p in code.split("-")] == [5, 4, 4]
        assert not set(code.replace("-", "")) & set("ILOU")
    assert len(credentials.CODE_ALPHABET) ** credentials.CODE_LENGTH >= 2 ** 60
    assert normalise_code("7kq2m 8xh4 r9tz") == "7KQ2M-8XH4-R9TZ"
    assert normalise_code("OIL2M-8XH4-R9TZ") == "011" + "2M-8XH4-R9TZ"
    assert normalise_code("7KQ2M-8XH4-R9T") is None and normalise_code("") is None


def test_signed_credential_verifies_and_fails_after_any_change(keyring):
    kid, key = keyring.current()
    token = credentials.sign_jws({"name": "Zertifikat für Jürgen"}, kid, key)
    header, payload = credentials.verify_jws(token, keyring.jwks())
    assert header["kid"] == kid and payload["name"] == "Zertifikat für Jürgen"
    head, body, signature = token.split(".")
    raw = bytearray(credentials.b64url_decode(body))
    for index in (0, len(raw) // 2, len(raw) - 1):
        changed = bytearray(raw)
        changed[index] ^= 0x01
        forged = ".".join([head, credentials.b64url(bytes(changed)), signature])
        with pytest.raises(credentials.InvalidCredential):
            credentials.verify_jws(forged, keyring.jwks())


def test_old_certificates_verify_after_key_rotation(keyring):
    old_kid, old_key = keyring.current()
    token = credentials.sign_jws({"n": 1}, old_kid, old_key)
    new_kid = keyring.generate()
    assert keyring.current()[0] == new_kid != old_kid
    assert {k["kid"] for k in keyring.jwks()["keys"]} == {old_kid, new_kid}
    credentials.verify_jws(token, keyring.jwks())
    other = KeyRing(keyring.directory.parent / "elsewhere")
    other.generate()
    with pytest.raises(credentials.InvalidCredential):
        credentials.verify_jws(token, other.jwks())


def test_one_certificate_per_enrolment_with_consecutive_numbers(db, keyring):
    payload = completed()
    first = db.run(lambda s: domain.issue(s, payload, keyring, ISSUER).number)
    again = db.run(lambda s: domain.issue(s, payload, keyring, ISSUER).number)
    second = db.run(lambda s: domain.issue(s, completed(2), keyring, ISSUER).number)
    year = calendar_today().year
    assert first == again == f"BW-DL-{year}-000001"
    assert second == f"BW-DL-{year}-000002"


def test_credential_carries_no_email_in_clear(db, keyring):
    payload = completed()
    token = db.run(lambda s: domain.issue(s, payload, keyring, ISSUER).credential_jws)
    _, claims = credentials.verify_jws(token, keyring.jwks())
    text = json.dumps(claims, ensure_ascii=False)
    assert "jw1@wiesloch.example" not in text
    identifier = claims["credentialSubject"]["identifier"][0]
    assert identifier["identityHash"] == credentials.identity_hash("JW1@wiesloch.example",
                                                                   identifier["salt"])
    assert claims["type"] == ["VerifiableCredential", "OpenBadgeCredential"]


def test_pdf_states_name_number_and_verification_url(db, keyring):
    certificate = db.run(lambda s: domain.issue(s, completed(), keyring, ISSUER))
    content = db.run(lambda s: domain.render_pdf(domain.by_number(s, certificate.number),
                                                 ISSUER))
    reader = PdfReader(io.BytesIO(content))
    text = " ".join(page.extract_text() for page in reader.pages)
    assert len(reader.pages) == 1
    assert "Jürgen Weiß-Größler" in text
    assert certificate.number in text
    assert f"https://lotsen.example/verify/{certificate.verification_code}" in text
    fonts = [str(f) for f in reader.pages[0]["/Resources"]["/Font"].values()]
    assert fonts  # embedded TrueType subsets, not the 14 standard fonts
    assert all("/FontFile2" in str(ref.get_object()["/DescendantFonts"][0].get_object()
                                   ["/FontDescriptor"].get_object())
               for ref in reader.pages[0]["/Resources"]["/Font"].values())


def test_revocation_and_reissue_keep_the_history(db, keyring):
    certificate = db.run(lambda s: domain.issue(s, completed(), keyring, ISSUER))
    code, number = certificate.verification_code, certificate.number
    assert db.run(domain.verify_code, code.lower().replace("-", ""))["status"] == "valid"
    new = db.run(lambda s: domain.reissue(s, number, "Jürgen", "Weiß", keyring, ISSUER))
    old = db.run(domain.verify_code, code)
    assert (old["status"], old["superseded_by"]) == ("superseded", new.number)
    with pytest.raises(RuleViolation):
        db.run(lambda s: domain.revoke(s, number, "Fehler", "operator"))
    db.run(lambda s: domain.revoke(s, new.number, "Täuschung festgestellt", "operator"))
    revoked = db.run(domain.verify_code, new.verification_code)
    assert (revoked["status"], revoked["revocation_reason"]) == ("revoked",
                                                                 "Täuschung festgestellt")
    assert db.run(domain.verify_code, credentials.new_verification_code()) == {"status": "unknown"}
    assert db.run(domain.verify_code, "nonsense") == {"status": "unknown"}
    with pytest.raises(NotFound):
        db.run(lambda s: domain.by_number(s, new.number, "08226095"))
    issued = db.run(lambda s: [m.envelope["event_type"] for m in s.query(OutboxMessage)])
    assert issued.count("certificate_issued") == 2 and issued.count("certificate_revoked") == 1
    # One count per enrolment across its certificates: issue, re-issue, revocation.
    sequences = db.run(lambda s: [m.envelope["payload"]["sequence"] for m in
                                  s.query(OutboxMessage).order_by(OutboxMessage.position)])
    assert sequences == [1, 2, 3]


def test_a_navigators_certificate_lists_the_milestones_reached(db, keyring):
    payload = completed()
    payload["milestones"] = [
        {"title": "Situation vor Ort erfasst", "reached_on": date(2027, 2, 20)},
        {"title": "Digitale Agenda geschrieben", "reached_on": date(2027, 5, 4)}]
    certificate = db.run(lambda s: domain.issue(s, payload, keyring, ISSUER))
    content = db.run(lambda s: domain.render_pdf(domain.by_number(s, certificate.number),
                                                 ISSUER))
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)
    assert "Meilensteine" in text and "Digitale Agenda geschrieben" in text
    assert "4. Mai 2027" in text
    summary = db.run(lambda s: domain.summary(domain.by_number(s, certificate.number)))
    assert [m["title"] for m in summary["milestones"]] == ["Situation vor Ort erfasst",
                                                            "Digitale Agenda geschrieben"]
    plain = db.run(lambda s: domain.issue(s, completed(2), keyring, ISSUER))
    assert "Meilensteine" not in " ".join(p.extract_text() for p in PdfReader(io.BytesIO(
        db.run(lambda s: domain.render_pdf(domain.by_number(s, plain.number), ISSUER)))).pages)
