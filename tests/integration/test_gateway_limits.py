"""The gateway under clients that misbehave, over real sockets to the real gateway (with the real
enrolment and certificates services, RabbitMQ and PostgreSQL): slow uploads time out without
starving anyone, chunked bodies are read (within the size limit), and odd credentials are
answered, not crashed on."""
import io
import json
import socket
import time

import pytest
import requests

from services.certificates.credentials import b64url
from services.certificates.service import CertificatesService
from services.enrolment import domain
from services.enrolment.service import EnrolmentService
from services.gateway.service import GatewayService
from tests.integration.helpers import gemeinden, participant, seed
from tests.integration.test_gateway import Client, free_port, is_problem

READ_TIMEOUT_S = 2
MAX_BODY = 50_000
SLOW_CLIENTS = 50


def start_gateway(container_factory, service_config, enrolment_db, register_file, **settings):
    """Enrolment, certificates and gateway on a free port, one open course, one municipality
    with an API key."""
    seeded = seed(enrolment_db, register_file, capacity=5, providers=1)
    [ags] = gemeinden(register_file, 1)
    key = enrolment_db.run(lambda s: domain.register_municipality(
        s, ags, "Hauptamt", f"hauptamt@{ags}.example")[1])
    config = dict(service_config)
    port = free_port()
    config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{port}"
    config["GATEWAY"] = {"rpc_timeout_s": 5, "ready_timeout_s": 1, **settings}
    for service in (EnrolmentService, CertificatesService, GatewayService):
        container_factory(service, config).start()
    return {"url": f"http://127.0.0.1:{port}", "port": port, "key": key, "ags": ags,
            "course": str(seeded["courses"][0])}


@pytest.fixture
def gateway(container_factory, service_config, enrolment_db, register_file):
    return start_gateway(container_factory, service_config, enrolment_db, register_file,
                         read_timeout_s=READ_TIMEOUT_S, max_body_bytes=MAX_BODY)


def slow_upload(port: int) -> socket.socket:
    """A public POST that announces a body and never sends it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"POST /api/v1/credentials:verify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    return sock


def answer_or_eof(sock: socket.socket, within_s: float) -> bytes:
    """Everything the server sends until it closes the connection (bounded in time)."""
    sock.settimeout(within_s)
    received = b""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        piece = sock.recv(65536)  # raises socket.timeout if the server neither answers nor closes
        if not piece:
            return received
        received += piece
    raise AssertionError("the connection stayed open")


def test_slow_uploads_neither_starve_the_liveness_probe_nor_stay_open(gateway):
    slow = [slow_upload(gateway["port"]) for _ in range(SLOW_CLIENTS)]
    try:
        opened = time.monotonic()
        live = requests.get(gateway["url"] + "/health/live", timeout=READ_TIMEOUT_S * 2)
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        assert time.monotonic() - opened < READ_TIMEOUT_S  # answered while the uploads hang

        # Every slow upload ends after the read timeout: an answer (408 problem), then EOF.
        for sock in slow:
            received = answer_or_eof(sock, READ_TIMEOUT_S + 10)
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), received[:200]
            assert b"application/problem+json" in head
            assert json.loads(body)["status"] == 408
    finally:
        for sock in slow:
            sock.close()
    # And the gateway still works for everybody.
    assert requests.get(gateway["url"] + "/health/live", timeout=5).status_code == 200


def test_a_body_that_stops_halfway_times_out(gateway):
    with socket.create_connection(("127.0.0.1", gateway["port"]), timeout=5) as sock:
        sock.sendall(b"POST /api/v1/credentials:verify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\n{\"cre\r\n")
        received = answer_or_eof(sock, READ_TIMEOUT_S + 10)
    assert received.startswith(b"HTTP/1.1 408"), received[:200]


def chunks(data: bytes, size: int = 7):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_chunked_bodies_are_read_within_the_limit(gateway):
    client = Client(gateway["url"], gateway["key"])
    enrolment = json.dumps({"course_id": gateway["course"], "participant": participant(1)},
                           ensure_ascii=False).encode("utf-8")
    created = client.post("/api/v1/enrolments", data=chunks(enrolment),
                          headers={"Content-Type": "application/json"})
    assert created.request.headers["Transfer-Encoding"] == "chunked"
    assert created.status_code == 201, created.text
    assert created.json()["participant"]["family_name"] == "Weiß1"

    huge = json.dumps({"credential": "x" * MAX_BODY}).encode()
    too_large = requests.post(gateway["url"] + "/api/v1/credentials:verify",
                              data=chunks(huge, 4096), timeout=30,
                              headers={"Content-Type": "application/json"})
    assert too_large.request.headers["Transfer-Encoding"] == "chunked"
    assert is_problem(too_large, 413)["type"] == "/problems/body-too-large"

    # A chunked body of exactly the limit is still read whole.
    exact = json.dumps({"credential": "x" * (MAX_BODY - 20)}).encode()
    exact += b" " * (MAX_BODY - len(exact))
    answered = requests.post(gateway["url"] + "/api/v1/credentials:verify",
                             data=chunks(exact, 4096), timeout=30,
                             headers={"Content-Type": "application/json"})
    is_problem(answered, 422, "credential")  # too long a credential, but read and understood


def test_a_chunked_body_with_broken_framing_is_a_problem(gateway):
    with socket.create_connection(("127.0.0.1", gateway["port"]), timeout=5) as sock:
        sock.sendall(b"POST /api/v1/credentials:verify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"zz\r\n{}\r\n0\r\n\r\n")
        received = answer_or_eof(sock, READ_TIMEOUT_S + 10)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/problem+json" in head
    assert json.loads(body)["status"] == 400


def jws(header, payload=b"{}") -> str:
    header = header if isinstance(header, bytes) else json.dumps(header).encode()
    return f"{b64url(header)}.{b64url(payload)}.{b64url(b'x' * 64)}"


@pytest.mark.parametrize("header", [[1, 2], "EdDSA", 7, None, b"[" * 5000 + b"]" * 5000],
                         ids=["list", "string", "number", "null", "deeply-nested"])
def test_a_credential_whose_header_is_no_object_is_answered_as_invalid(gateway, header):
    response = requests.post(gateway["url"] + "/api/v1/credentials:verify",
                             json={"credential": jws(header)}, timeout=30)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["valid"] is False and "JWS" in result["reason"]



def test_bodies_received_at_once_are_bounded(monkeypatch):
    """More bodies than the gateway holds at once are turned away, not read into memory."""
    import eventlet.semaphore

    from services.gateway import web
    monkeypatch.setattr(web, "BODIES_AT_ONCE", eventlet.semaphore.Semaphore(0))  # all taken
    environ = {"CONTENT_LENGTH": "10", "wsgi.input": None}
    try:
        web.read_body(environ, limit=100, timeout_s=0.1)
    except web.BodyRefused as refused:
        assert refused.status == 503
    else:
        raise AssertionError("a body was read although none may be held")


def test_a_document_upload_has_its_own_larger_limit_and_its_own_bound():
    """Only a form that uploads a document (a coach's PDF) may send more than
    ``max_body_bytes``; such bodies are held at most four at a time."""
    import eventlet.semaphore

    from services.gateway import web
    config = {"GATEWAY": {"max_body_bytes": 1000, "max_document_bytes": 5000,
                          "read_timeout_s": 3}}
    assert web.limits(config) == (3.0, 1000)
    assert web.limits(config, document=True) == (6.0, 5000)
    body = b"x" * 3000
    environ = {"CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    web.read_body(environ, limit=5000, timeout_s=6.0, gate=web.DOCUMENTS_AT_ONCE)
    assert environ["wsgi.input"].read() == body
    try:
        web.read_body({"CONTENT_LENGTH": "3000", "wsgi.input": io.BytesIO(body)},
                      limit=1000, timeout_s=3.0)
    except web.BodyRefused as refused:
        assert refused.status == 413
    else:
        raise AssertionError("a body above max_body_bytes was read")
    try:
        web.read_body({"CONTENT_LENGTH": "10", "wsgi.input": None}, 100, 0.1,
                      gate=eventlet.semaphore.Semaphore(0))
    except web.BodyRefused as refused:
        assert refused.status == 503
    else:
        raise AssertionError("a document was read although none may be held")
