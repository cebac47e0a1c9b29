"""Operations: metrics, JSON logs with correlation ids, health checks, graceful shutdown."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests
import yaml
from nameko.standalone.rpc import ClusterRpcProxy, ServiceRpcProxy
from prometheus_client import REGISTRY

from services.enrolment.service import EnrolmentService
from tests.integration.helpers import (
    SignedRpc,
    sign_for,
    count_enrolments,
    gemeinden,
    participant,
    seed,
    wait_for,
)
from tests.integration.test_gateway import free_port

REPO = Path(__file__).resolve().parents[2]


def test_metrics_count_calls_and_show_domain_figures(container_factory, service_config,
                                                     enrolment_db, register_file):
    port = free_port()
    config = dict(service_config, METRICS_PORT=port)
    seeded = seed(enrolment_db, register_file, capacity=1)
    container_factory(EnrolmentService, config).start()
    [a, b] = gemeinden(register_file, 2)

    def count(name, **labels):
        return REGISTRY.get_sample_value(name, dict(service="enrolment", **labels)) or 0
    before = {outcome: count("lotsen_handled_total", entrypoint="enrol", outcome=outcome)
              for outcome in ("ok", "failed")}
    latency_before = count("lotsen_handler_seconds_count", entrypoint="enrol")
    with SignedRpc("enrolment", config) as enrolment:
        for n, ags in enumerate((a, b)):
            enrolment.enrol(ags, {"course_id": str(seeded["courses"][0]),
                                  "participant": participant(n)})
        try:
            enrolment.enrol(a, {"course_id": "nope", "participant": participant(9)})
        except Exception:
            pass
    # nameko replies before it runs worker_result, so the last count may land a moment later.
    wait_for(lambda: count("lotsen_handler_seconds_count", entrypoint="enrol")
             - latency_before == 3, message="third call counted")
    assert count("lotsen_handled_total", entrypoint="enrol", outcome="ok") - before["ok"] == 2
    assert count("lotsen_handled_total", entrypoint="enrol", outcome="failed") \
        - before["failed"] == 1
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'lotsen_handled_total{entrypoint="enrol",outcome="ok",service="enrolment"}' in text
    assert 'lotsen_domain{figure="enrolments_confirmed",service="enrolment"} 1.0' in text
    assert 'lotsen_domain{figure="enrolments_waitlisted",service="enrolment"} 1.0' in text
    assert 'lotsen_parked_messages{service="enrolment"} 0.0' in text
    assert "lotsen_outbox_backlog" in text


def write_config(tmp_path, service_config, **extra):
    config = {k: service_config[k] for k in ("AMQP_URI", "DATABASES", "OUTBOX", "EVENT_RETRY",
                                             "CERTIFICATES", "MAIL")}
    config.update({"LOTSEN_HOME": str(tmp_path / "home"), "LOG_FORMAT": "json",
                   "WEB_SERVER_ADDRESS": f"127.0.0.1:{free_port()}"})
    config.update(extra)
    path = tmp_path / "ops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(path, *services):
    args = [sys.executable, "-m", "services.cli", "--config", str(path), "run"]
    for service in services:
        args += ["--service", service]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_sigterm_mid_load_loses_nothing_and_logs_are_json(
        service_config, enrolment_db, register_file, tmp_path):
    seeded = seed(enrolment_db, register_file, capacity=500)
    course = str(seeded["courses"][0])
    path = write_config(tmp_path, service_config, SHUTDOWN_GRACE_S=20)
    process = start(path, "enrolment")
    config = {"AMQP_URI": service_config["AMQP_URI"], "LOTSEN_HOME": str(tmp_path / "home")}
    bodies = gemeinden(register_file, 120)
    try:
        with ServiceRpcProxy("enrolment", config, timeout=60) as enrolment:
            wait_for(lambda: _healthy(enrolment), timeout=60, message="service up")
        with ClusterRpcProxy(config, timeout=120) as cluster:
            calls = []
            for n, ags in enumerate(bodies):
                sign_for(cluster, config, ags)
                calls.append(cluster.enrolment.enrol.call_async(
                    ags, {"course_id": course, "participant": participant(n)}))
            wait_for(lambda: count_enrolments(enrolment_db) >= 10, message="load under way")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
            _, stderr = process.communicate(timeout=10)
            # Whatever was not handled before the stop is still queued: a new instance takes it.
            restarted = start(path, "enrolment")
            try:
                results = [call.result() for call in calls]
            finally:
                restarted.send_signal(signal.SIGTERM)
                restarted.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert len({r["id"] for r in results}) == 120
    assert count_enrolments(enrolment_db) == 120
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert lines and all("level" in line and "message" in line for line in lines)
    assert not any("@example.org" in line for line in stderr.splitlines())


def _healthy(enrolment):
    try:
        return enrolment.health()["database"] == "ok"
    except Exception:
        return False


def test_health_command_reports_a_running_service_and_a_missing_one(
        service_config, tmp_path):
    path = write_config(tmp_path, service_config)
    process = start(path, "funding")
    try:
        cli = [sys.executable, "-m", "services.cli", "--config", str(path), "health"]
        ok = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(subprocess.run(
            cli + ["funding"], cwd=REPO, capture_output=True, text=True, timeout=60)),
            timeout=60, message="funding healthy")
        assert json.loads(ok.stdout)["database"] == "ok"
        missing = subprocess.run(cli + ["certificates", "--timeout", "2"], cwd=REPO,
                                 capture_output=True, text=True, timeout=60)
        assert missing.returncode == 1 and "unavailable" in missing.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


