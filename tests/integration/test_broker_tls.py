"""TLS to the broker from configuration alone: ``amqps://`` and the CA that signed the broker's
certificate. A TLS endpoint in this process (certificates made here) forwards to the local
RabbitMQ, so the services, the relay, RPC callers and the provider client all speak TLS to it."""
from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import sys

import eventlet
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kombu.exceptions import OperationalError
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import func, select

from services.common import config as cfg
from services.common import topology
from services.common.messaging import OutboxRelay
from services.enrolment.models import OutboxMessage
from services.enrolment.service import EnrolmentService
from services.provider_client import ProviderClient
from tests.integration.helpers import seed, wait_for
from tests.integration.test_broker_outage import BROKER, BrokerLink, Forwarding


def _certificate(subject: str, key, issuer_name, issuer_key, ca: bool, sans=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                         subject)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(path, obj):
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(path)


@pytest.fixture
def tls(tmp_path):
    """A CA, a broker certificate it signed (localhost, 127.0.0.1), and an unrelated CA."""
    ca_key, other_key, server_key, stranger_key = (ec.generate_private_key(ec.SECP256R1())
                                                    for _ in range(4))
    ca = _certificate("Lotsen Test CA", ca_key, None, None, ca=True)
    other = _certificate("Someone Else's CA", other_key, None, None, ca=True)
    server = _certificate("localhost", server_key, ca.subject, ca_key, ca=False, sans=(
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))))
    # Signed by the right CA, but for another host: a certificate that is not the broker's.
    stranger = _certificate("mail.example", stranger_key, ca.subject, ca_key, ca=False,
                            sans=(x509.DNSName("mail.example"),))
    return {"ca": _pem(tmp_path / "ca.pem", ca), "other_ca": _pem(tmp_path / "other.pem", other),
            "stranger_cert": _pem(tmp_path / "stranger.pem", stranger),
            "stranger_key": _pem(tmp_path / "stranger.key", stranger_key),
            "cert": _pem(tmp_path / "server.pem", server),
            "key": _pem(tmp_path / "server.key", server_key)}


class TlsBrokerLink(BrokerLink):
    """The broker behind a TLS listener, as a broker with `listeners.ssl` would be."""

    def __init__(self, certfile: str, keyfile: str):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        super().__init__()

    def _serve(self):
        while True:
            client, _ = self.listener.accept()
            eventlet.spawn_n(self._handshake, client)

    def _handshake(self, client):
        try:
            secured = eventlet.green.ssl.GreenSSLSocket(client, server_side=True,
                                                        _context=self.context)
            secured.do_handshake()
        except (OSError, ssl.SSLError):
            client.close()  # a client that does not trust us goes away
            return
        self.connections.append(Forwarding(secured, eventlet.connect(BROKER)))


@pytest.fixture
def tls_link(tls):
    link = TlsBrokerLink(tls["cert"], tls["key"])
    yield link
    link.close()


def _over_tls(config: dict, link: TlsBrokerLink, ca: str) -> dict:
    vhost = config["AMQP_URI"].rsplit("/", 1)[1]
    return dict(config, AMQP_URI=f"amqps://guest:guest@localhost:{link.port}/{vhost}",
                AMQP_SSL={"ca_certs": ca, "cert_reqs": ssl.CERT_REQUIRED})


def test_services_relay_and_callers_speak_tls_with_the_configured_ca(
        container_factory, service_config, enrolment_db, register_file, tls, tls_link):
    config = _over_tls(service_config, tls_link, tls["ca"])
    container = container_factory(EnrolmentService, config)
    container.start()
    seeded = seed(enrolment_db, register_file, capacity=5)  # publishes programme_published
    wait_for(lambda: enrolment_db.run(lambda s: s.scalar(
        select(func.count()).select_from(OutboxMessage)
        .where(OutboxMessage.published_at.is_(None)))) == 0,
        timeout=30, message="the relay published over TLS")
    with ServiceRpcProxy("enrolment", cfg.rpc_client_config(config), timeout=20) as anyone:
        assert anyone.health()["broker"] == "ok"
    with ProviderClient(config["AMQP_URI"], seeded["providers"][0]["token"], timeout=20,
                        ca_certs=tls["ca"]) as provider:
        assert provider.course_enrolments(str(seeded["courses"][0])) == []
    assert tls_link.connections  # everything above went through the TLS listener
    # Stopped here, while the listener is up: nameko's fixture kills it only after the link is
    # closed, and the kill then waits 5 s for a broker that has gone.
    container.stop()


def test_a_broker_certificate_from_another_ca_is_refused(
        service_config, enrolment_db, register_file, tls, tls_link, tmp_path):
    config = _over_tls(service_config, tls_link, tls["other_ca"])
    with pytest.raises(OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        with cfg.amqp_connection(config, connect_timeout=5) as connection:
            cfg.ensure_connected(connection, max_retries=1)
    # An operator starting a service with the wrong CA is told so, not that the broker is down.
    path = tmp_path / "wrong-ca.yaml"
    path.write_text(yaml.safe_dump(dict(config, AMQP_SSL={"ca_certs": tls["other_ca"]})))
    started = subprocess.run([sys.executable, "-m", "services.cli", "--config", str(path), "run",
                              "--service", "enrolment"], capture_output=True, text=True,
                             timeout=120)
    assert started.returncode == 1, started.stderr
    assert "shows a certificate we do not trust (unable to get local issuer certificate)" \
        in started.stderr, started.stderr
    assert "does not answer" not in started.stderr and "Traceback" not in started.stderr
    # The right CA, but a certificate for another host name: refused as well, by us and by
    # the providers' client.
    stranger = TlsBrokerLink(tls["stranger_cert"], tls["stranger_key"])
    try:
        impostor = _over_tls(service_config, stranger, tls["ca"])
        with pytest.raises(OperationalError, match="mismatch"):
            with cfg.amqp_connection(impostor, connect_timeout=5) as connection:
                cfg.ensure_connected(connection, max_retries=1)
        with pytest.raises(Exception, match="mismatch"):
            ProviderClient(impostor["AMQP_URI"], "lp_x", ca_certs=tls["ca"]).connect()
    finally:
        stranger.close()
    # The outbox relay takes the CA from the same configuration: with the wrong one it
    # publishes nothing (and keeps the events), with the right one everything.
    seed(enrolment_db, register_file, capacity=5)
    topology.declare(service_config["AMQP_URI"], service_config)
    wrong = OutboxRelay(enrolment_db, "enrolment", config)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        wrong.publish_pending()
    right = OutboxRelay(enrolment_db, "enrolment", _over_tls(service_config, tls_link, tls["ca"]))
    try:
        assert right.publish_pending() >= 1
    finally:
        right.close()
        wrong.close()
