"""A service keeps working when its broker connections are reset and the broker refuses new
ones for a while, as during a RabbitMQ restart. The service reaches RabbitMQ through a TCP link
in this test that can cut every connection (the service sees a reset) and refuse new ones."""
from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import eventlet
import pytest
import yaml
from nameko.standalone.rpc import ServiceRpcProxy

from services.common.callers import PUBLIC
from services.common.entrypoints import rpc
from tests.integration.helpers import wait_for
from tests.integration.test_gateway import gateway_config, world  # noqa: F401  (fixtures)
from tests.integration.test_gateway import Client, is_problem

BROKER = ("127.0.0.1", 5672)
REPO = Path(__file__).resolve().parents[2]


class Forwarding:
    """One connection through the link: a green thread per direction.

    Sockets are closed only after both threads are gone: eventlet does not tell a thread
    waiting on a socket that another thread closed it, and the stale wait would later trip
    over whatever reuses the file descriptor."""

    def __init__(self, client, upstream):
        self.client, self.upstream = client, upstream
        self.threads = [eventlet.spawn(self._pipe, client, upstream),
                        eventlet.spawn(self._pipe, upstream, client)]
        self.closed = False

    def _pipe(self, source, target):
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except (OSError, EOFError):  # eventlet raises EOFError on a socket closed under it
            pass
        self.close(reset=False)

    def close(self, reset: bool):
        if self.closed:
            return
        self.closed = True
        for thread in self.threads:
            if thread is not eventlet.getcurrent():
                thread.kill()
        if reset:  # linger 0: the service gets a reset, as when the broker's node goes down
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.client.close()
        self.upstream.close()


class BrokerLink:
    """Forwards TCP connections to RabbitMQ until it is cut."""

    def __init__(self):
        self.listener = eventlet.listen(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[Forwarding] = []
        self._server = eventlet.spawn(self._serve)

    def _serve(self):
        while True:
            client, _ = self.listener.accept()
            self.connections.append(Forwarding(client, eventlet.connect(BROKER)))

    def cut(self):
        """Reset every connection and refuse new ones until ``restore``."""
        self._server.kill()
        self.listener.close()
        for connection in self.connections:
            connection.close(reset=True)
        self.connections.clear()

    def restore(self):
        self.listener = eventlet.listen(("127.0.0.1", self.port))
        self._server = eventlet.spawn(self._serve)

    def close(self):
        self.cut()


class SlowEcho:
    """Answers after a pause, so that the link can be cut while a call is being worked on."""

    name = "slow_echo"
    calls: list[int] = []

    @rpc(PUBLIC)
    def echo(self, value: int) -> int:
        SlowEcho.calls.append(value)
        eventlet.sleep(0.5)
        return value


@pytest.fixture
def link():
    """Closed after the containers (ask for it before ``container_factory``)."""
    link = BrokerLink()
    yield link
    link.close()


def through(link, uri: str) -> str:
    linked = uri.replace(f"@localhost:{BROKER[1]}", f"@127.0.0.1:{link.port}")
    assert linked != uri
    return linked


def test_a_reply_lost_with_the_broker_is_sent_when_the_call_comes_again(
        link, container_factory, rabbit_config, caplog):
    SlowEcho.calls = []
    direct_uri = rabbit_config["AMQP_URI"]
    container = container_factory(SlowEcho, dict(rabbit_config,
                                                 AMQP_URI=through(link, direct_uri)))
    container.start()

    with ServiceRpcProxy("slow_echo", {"AMQP_URI": direct_uri}, timeout=90) as caller:
        call = eventlet.spawn(caller.echo, 7)
        wait_for(lambda: SlowEcho.calls, message="call being worked on")
        link.cut()
        # The broker stays away until nameko has given up sending the reply.
        wait_for(lambda: any("could not send the reply" in r.getMessage()
                             for r in caplog.records), timeout=60, interval=0.2,
                 message="the reply given up")
        link.restore()
        # The call was never acked, so the broker hands it out again after the reconnect.
        assert call.wait() == 7
        assert SlowEcho.calls == [7, 7]
        # And the container lives on: it answers a new call.
        assert caller.echo(8) == 8
    container.stop()  # while the link is up: nameko's fixture kills only after it is closed


def test_a_service_told_to_stop_while_the_broker_is_away_stops(link, rabbit_config, tmp_path):
    from click.testing import CliRunner

    from services.cli import main

    config = {"AMQP_URI": through(link, rabbit_config["AMQP_URI"]),
              "LOTSEN_HOME": str(tmp_path / "var"), "DATABASES": {"enrolment": None},
              "SHUTDOWN_GRACE_S": 2, "LOGGING": {"version": 1, "root": {"level": "WARNING"}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert CliRunner().invoke(main, ["--config", str(path), "migrate"]).exit_code == 0
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "--config", str(path),
                                "run", "--service", "enrolment"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def healthy():
            try:
                with ServiceRpcProxy("enrolment", {"AMQP_URI": rabbit_config["AMQP_URI"]},
                                     timeout=5) as enrolment:
                    return enrolment.health()
            except Exception:
                assert process.poll() is None, process.stdout.read()
                return None
        wait_for(healthy, timeout=60, interval=0.5, message="enrolment running")
        link.cut()
        eventlet.sleep(1)  # the consumer is now reconnecting, and being refused
        assert process.poll() is None  # still running: losing the broker did not end it
        process.send_signal(signal.SIGTERM)
        # The grace period (2 s) plus the consumer's kill wait (5 s), with room to spare; before,
        # the process waited for the broker for ever.
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_gateway_answers_503_while_the_broker_is_away(
        link, container_factory, gateway_config, world):  # noqa: F811
    from services.enrolment.service import EnrolmentService
    from services.gateway.service import GatewayService

    container_factory(EnrolmentService, gateway_config).start()
    # A long RPC timeout: the answer below comes from the broker error, not from the timeout.
    linked = dict(gateway_config, AMQP_URI=through(link, gateway_config["AMQP_URI"]),
                  GATEWAY=dict(gateway_config["GATEWAY"], rpc_timeout_s=60))
    container_factory(GatewayService, linked).start()
    client = Client(f"http://{gateway_config['WEB_SERVER_ADDRESS']}",
                    world["keys"][world["a"]])
    assert client.get("/api/v1/courses").status_code == 200

    link.cut()
    body = is_problem(client.get("/api/v1/courses", timeout=90), 503)
    assert "broker" in body["detail"]
    link.restore()
    wait_for(lambda: client.get("/api/v1/courses").status_code == 200, timeout=90, interval=1,
             message="gateway answering again")
