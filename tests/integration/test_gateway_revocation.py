"""Revoked and rotated API keys through the real gateway over HTTP: they stop working once the
gateway's key cache (GATEWAY.auth_cache_s) has forgotten them, and never work again."""
import pytest

from services.enrolment import domain
from services.enrolment.service import EnrolmentService
from services.gateway.service import GatewayService
from tests.integration.helpers import gemeinden, seed, wait_for
from tests.integration.test_gateway import Client, free_port

CACHE_S = 2


@pytest.fixture
def gateway(service_config, enrolment_db, register_file, container_factory):
    seed(enrolment_db, register_file, capacity=2, providers=1)
    first, second = gemeinden(register_file, 2)
    keys = {ags: enrolment_db.run(lambda s, a=ags: domain.register_municipality(
        s, a, "Hauptamt", f"hauptamt@{a}.example")[1]) for ags in (first, second)}
    config = dict(service_config)
    config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{free_port()}"
    config["GATEWAY"] = {"rpc_timeout_s": 5, "ready_timeout_s": 1, "auth_cache_s": CACHE_S}
    for service in (EnrolmentService, GatewayService):
        container_factory(service, config).start()
    return {"url": f"http://{config['WEB_SERVER_ADDRESS']}", "a": first, "b": second,
            "keys": keys}


def refused_in_the_end(client: Client) -> list[int]:
    """Ask until the gateway refuses the key (bounded by the cache time and a margin); every
    answer until then is the normal one, and the refusal stays."""
    seen = []

    def refused():
        seen.append(client.get("/api/v1/municipality").status_code)
        return seen[-1] == 401

    wait_for(refused, timeout=CACHE_S + 10, interval=0.2,
             message=f"the gateway to forget the key (cache {CACHE_S} s)")
    assert set(seen[:-1]) <= {200}, seen
    for _ in range(3):
        assert client.get("/api/v1/municipality").status_code == 401
    return seen


def test_a_revoked_key_is_refused_once_the_gateway_cache_forgets_it(gateway, enrolment_db):
    revoked = Client(gateway["url"], gateway["keys"][gateway["a"]])
    other = Client(gateway["url"], gateway["keys"][gateway["b"]])
    assert revoked.get("/api/v1/municipality").status_code == 200  # now remembered
    assert other.get("/api/v1/municipality").status_code == 200

    enrolment_db.run(domain.revoke_municipality_key, gateway["a"])
    refused_in_the_end(revoked)
    # Refused exactly like a key nobody ever had.
    forged = Client(gateway["url"], "lk_" + "z" * 43).get("/api/v1/municipality")
    answer = revoked.get("/api/v1/municipality")
    assert answer.json() == forged.json()
    assert answer.headers["WWW-Authenticate"] == forged.headers["WWW-Authenticate"]
    assert other.get("/api/v1/municipality").status_code == 200  # only that body

    # Rotating lets the body in again at once with its new key; the revoked one stays dead.
    _, fresh = enrolment_db.run(domain.rotate_municipality_key, gateway["a"])
    overview = Client(gateway["url"], fresh).get("/api/v1/municipality")
    assert overview.status_code == 200 and overview.json()["body"]["ags"] == gateway["a"]
    assert revoked.get("/api/v1/municipality").status_code == 401


def test_a_rotated_key_is_refused_once_the_gateway_cache_forgets_it(gateway, enrolment_db):
    old = Client(gateway["url"], gateway["keys"][gateway["b"]])
    assert old.get("/api/v1/municipality").status_code == 200  # now remembered

    _, new_key = enrolment_db.run(domain.rotate_municipality_key, gateway["b"])
    new = Client(gateway["url"], new_key)
    overview = new.get("/api/v1/municipality")  # unknown keys are never remembered: works at once
    assert overview.status_code == 200 and overview.json()["body"]["ags"] == gateway["b"]

    refused_in_the_end(old)
    assert new.get("/api/v1/municipality").status_code == 200
