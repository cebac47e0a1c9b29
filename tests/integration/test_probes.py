"""Each service process answers its own liveness and readiness next to its metrics: while its
workers are all busy, when its broker connection is gone, and when a container died."""
import eventlet
import requests

from services.common import metrics
from services.common.callers import PUBLIC
from services.common.entrypoints import rpc
from services.common.metrics import Metrics
from services.enrolment.service import EnrolmentService
from tests.integration.helpers import wait_for
from tests.integration.test_broker_outage import BrokerLink
from tests.integration.test_gateway import free_port


class Busy:
    """Keeps its only worker busy."""

    name = "busy"
    metrics = Metrics()

    @rpc(PUBLIC)
    def work(self, seconds):
        eventlet.sleep(seconds)
        return seconds


def probe(kind):
    response = requests.get(f"http://127.0.0.1:{metrics.serving_port()}/health/{kind}",
                            timeout=3)
    return response.status_code, response.json()


def test_live_and_ready_answer_while_every_worker_is_busy(container_factory, service_config):
    config = dict(service_config, METRICS_PORT=free_port(), max_workers=1)
    container_factory(EnrolmentService, config).start()
    busy = container_factory(Busy, config)
    busy.start()
    from nameko.standalone.rpc import ClusterRpcProxy
    with ClusterRpcProxy(config, timeout=30) as cluster:
        calls = [cluster.busy.work.call_async(3) for _ in range(5)]  # 15 s of queued work
        eventlet.sleep(0.5)
        status, live = probe("live")
        assert status == 200 and live["services"]["busy"] == "ok"
        status, ready = probe("ready")
        assert status == 200, ready
        assert ready["services"]["enrolment"] == "ok"  # its database answered, too
        # The same from the command line, as the compose health check asks it.
        import yaml
        from click.testing import CliRunner

        from services.cli import main
        path = config["LOTSEN_HOME"] + "/probe.yaml"
        with open(path, "w") as handle:
            yaml.safe_dump({"METRICS_PORT": metrics.serving_port()}, handle)
        answer = CliRunner().invoke(main, ["--config", path, "probe", "ready"])
        assert answer.exit_code == 0 and '"status": "ok"' in answer.output
        for call in calls[:1]:
            assert call.result() == 3


def test_not_ready_without_the_broker_and_not_live_once_a_container_died(
        container_factory, service_config):
    link = BrokerLink()
    vhost = service_config["AMQP_URI"].rsplit("/", 1)[1]
    config = dict(service_config, METRICS_PORT=free_port(),
                  AMQP_URI=f"pyamqp://guest:guest@127.0.0.1:{link.port}/{vhost}")
    busy = container_factory(Busy, config)
    busy.start()
    try:
        wait_for(lambda: probe("ready")[0] == 200, message="ready")
        link.cut()
        wait_for(lambda: probe("ready")[0] == 503, message="not ready without the broker")
        status, ready = probe("ready")
        assert ready["services"]["busy"] == "broker connection down"
        assert probe("live")[0] == 200  # a broker outage is no reason to restart the process
        link.restore()
        wait_for(lambda: probe("ready")[0] == 200, timeout=30, message="ready again")
    finally:
        link.close()
    try:
        raise RuntimeError("a service died")
    except RuntimeError:
        import sys
        busy.kill(sys.exc_info())  # as nameko does when an extension fails
    status, live = probe("live")
    assert status == 503 and live["services"]["busy"] == "died"
    from services.common.probes import PROBES
    for container in PROBES.containers():  # the next test's process is a healthy one again
        if container.service_name == "busy":
            PROBES.forget(container)


def test_certificates_are_ready_only_while_they_can_sign(container_factory, service_config,
                                                         tmp_path):
    from pathlib import Path

    from services.certificates.service import CertificatesService
    keys = tmp_path / "signing"
    config = dict(service_config, METRICS_PORT=free_port(),
                  CERTIFICATES=dict(service_config["CERTIFICATES"], key_dir=str(keys)))
    container_factory(CertificatesService, config).start()  # makes its first key
    wait_for(lambda: probe("ready")[0] == 200, message="ready with a key it can use")
    [key_file] = list(Path(keys).glob("*.pem"))
    key_file.write_text("not a key: unreadable, as a root-owned 0400 file is for the pod\n")
    status, ready = probe("ready")
    assert status == 503 and ready["services"]["certificates"].startswith("cannot sign")
    assert probe("live")[0] == 200
