"""Caller proofs and the broker permission sets, without a broker."""
import re

import pytest

from services.common import broker_access, callers, topology
from services.common.callers import (
    GATEWAY, MUNICIPALITY, OPERATOR, PROVIDER, PUBLIC, SERVICE, CallerRefused, identify,
    sign_assertion,
)

KEY = b"k" * 40


def check(kinds, context, arguments=None, now=1_000_000):
    return identify(kinds, context, arguments or {}, service_key=KEY,
                    operator_token="op-secret", now=now)


def test_the_gateway_acts_only_for_the_body_it_names_and_only_briefly():
    assertion = sign_assertion(KEY, "gateway", "08226098", ttl_s=60, now=1_000_000)
    context = {callers.ASSERTION_KEY: assertion}
    assert check((MUNICIPALITY,), context, {"ags": "08226098"}).ags == "08226098"
    for arguments, now, reason in (({"ags": "08226095"}, 1_000_000, "other_municipality"),
                                   ({"ags": "08226098"}, 1_000_061, "expired_assertion")):
        with pytest.raises(CallerRefused) as refused:
            check((MUNICIPALITY,), context, arguments, now)
        assert refused.value.reason == reason
    tampered = assertion.replace("08226098", "08226095")
    with pytest.raises(CallerRefused, match="bad_signature"):
        check((MUNICIPALITY,), {callers.ASSERTION_KEY: tampered}, {"ags": "08226095"})


def test_each_kind_needs_its_own_proof():
    gateway = {callers.ASSERTION_KEY: sign_assertion(KEY, "gateway", now=1_000_000)}
    service = {callers.ASSERTION_KEY: sign_assertion(KEY, "notifications", now=1_000_000)}
    assert check((GATEWAY,), gateway).kind == GATEWAY
    assert check((SERVICE,), service).subject == "notifications"
    assert check((OPERATOR,), {"operator_token": "op-secret"}).kind == OPERATOR
    assert check((PROVIDER,), {"provider_token": "lp_x"}).kind == PROVIDER
    assert check((PUBLIC,), {}).kind == PUBLIC
    for kinds, context in (((GATEWAY,), service), ((SERVICE,), gateway),
                           ((OPERATOR,), {"operator_token": "guess"}),
                           ((OPERATOR,), {"provider_token": "lp_x"}),
                           ((MUNICIPALITY,), gateway),  # no AGS in it
                           ((PROVIDER,), {"operator_token": "op-secret"}),
                           ((PROVIDER, OPERATOR), {})):
        with pytest.raises(CallerRefused):
            check(kinds, context, {"ags": "08226098"})


def test_no_operator_token_configured_means_no_operator():
    with pytest.raises(CallerRefused):
        identify((OPERATOR,), {"operator_token": ""}, {}, service_key=KEY, operator_token="")


def test_the_embedded_key_is_made_once_and_shared(tmp_path):
    config = {"LOTSEN_HOME": str(tmp_path)}
    first = callers.service_key(config)
    assert callers.service_key(config) == first and len(first) >= 32
    assert (tmp_path / "secrets" / "service.key").stat().st_mode & 0o077 == 0
    with pytest.raises(RuntimeError, match="SERVICE_KEY"):
        callers.service_key({"LOTSEN_HOME": str(tmp_path), "REQUIRE_SECRETS": True})
    with pytest.raises(RuntimeError, match="32"):
        callers.service_key({"SERVICE_KEY": "short"})


def test_every_rpc_method_names_its_callers_and_only_verification_is_public():
    methods = broker_access.rpc_methods(topology.service_classes({}))
    public = {name for name, kinds in methods.items() if PUBLIC in kinds}
    assert public == {("certificates", "verify_code"), ("certificates", "verify_credential"),
                      ("certificates", "jwks"), ("enrolment", "health"), ("funding", "health"),
                      ("certificates", "health"), ("notifications", "health")}
    for method in ("enrol", "enrol_batch", "cancel_enrolment", "get_enrolment",
                   "list_enrolments", "list_open_courses", "municipality"):
        assert methods[("enrolment", method)] == (MUNICIPALITY,)
    assert methods[("enrolment", "authenticate")] == (GATEWAY,)
    assert PROVIDER in methods[("certificates", "revoke")]


def test_a_provider_user_may_publish_provider_calls_only_and_bind_only_its_replies():
    access = broker_access.provider_access("provider-vwa", topology.service_classes({}))
    write, read = access.topic["nameko-rpc"]
    assert re.match(write, "enrolment.create_course")
    assert re.match(write, "enrolment.record_attendance")
    assert re.match(write, "certificates.revoke")
    for key in ("enrolment.enrol", "enrolment.authenticate", "enrolment.create_provider",
                "certificates.get_pdf", "funding.set_policy", "enrolment.create_course.x"):
        assert not re.match(write, key), key
    reply = "provider-vwa.0f5e3c1a-3b8e-4d8e-9a51-4c1e2b3a4d5e"
    assert re.match(read, reply)
    for key in ("#", "enrolment.*", "0f5e3c1a-3b8e-4d8e-9a51-4c1e2b3a4d5e",
                "provider-other.0f5e3c1a-3b8e-4d8e-9a51-4c1e2b3a4d5e"):
        assert not re.match(read, key), key
    for name in ("amq.default", "enrolment.events", "rpc-enrolment"):
        assert not any(re.match(p, name) for p in (access.configure, access.write, access.read))
    with pytest.raises(ValueError):
        broker_access.provider_access("lotsen-enrolment", [])


def test_a_service_publishes_events_only_to_its_own_exchange():
    classes = topology.service_classes({})
    subs = topology.subscriptions(classes)
    for access in broker_access.definitions(classes, subs):
        service = access.user.removeprefix("lotsen-")
        others = [f"{c.name}.events" for c in classes if c.name != service]
        assert not any(re.match(access.write, name) for name in others), service
    assert broker_access.provider_user("VWA Baden-Württemberg") == "provider-vwa-baden-wuerttemberg"


def test_tls_to_the_broker_comes_from_configuration(tmp_path, monkeypatch):
    import ssl

    from services.common import config as cfg
    path = tmp_path / "c.yaml"
    path.write_text("AMQP_URI: amqps://lotsen-enrolment:pw@broker:5671/\n"
                    "AMQP_SSL:\n  ca_certs: ${AMQP_CA_CERTS:}\n")
    monkeypatch.delenv("AMQP_CA_CERTS", raising=False)
    assert "AMQP_SSL" not in cfg.load_config(path)  # an empty section would still mean TLS
    monkeypatch.setenv("AMQP_CA_CERTS", "/etc/lotsen/amqp-ca/ca.pem")
    config = cfg.load_config(path)
    # server_hostname present (None: the URI's host), so the certificate's name is checked too
    assert config["AMQP_SSL"] == {"ca_certs": "/etc/lotsen/amqp-ca/ca.pem",
                                  "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    assert cfg.rpc_client_config(config)["AMQP_SSL"] == config["AMQP_SSL"]
    assert cfg.broker_user(config) == "lotsen-enrolment"
    connection = cfg.amqp_connection(config)
    assert connection.ssl == config["AMQP_SSL"] and connection.port == 5671
