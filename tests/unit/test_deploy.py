"""Deployment files: compose, Kubernetes manifests and the image, checked against the code."""
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from services.common import topology

REPO = Path(__file__).resolve().parents[2]
SERVICES = [cls.name for cls in topology.service_classes({})]


def test_every_service_is_deployed():
    assert SERVICES == ["enrolment", "funding", "certificates", "notifications", "gateway"]


def compose():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_runs_each_service_after_the_migration_with_health_checks():
    services = compose()["services"]
    assert {"rabbitmq", "postgres", "mailpit", "migrate", *SERVICES} == set(services)
    assert "management" in services["rabbitmq"]["image"]
    assert services["migrate"]["command"] == ["migrate"]
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["run", "--service", name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert service["healthcheck"]["test"][0] == "CMD"
        assert "container_name" not in service  # `--scale` needs generated names
        if name != "gateway":
            assert service["healthcheck"]["test"][1:] == ["lotsen", "health", name]
    assert services["gateway"]["ports"] == ["8000:8000"]
    assert services["notifications"]["depends_on"]["mailpit"]["condition"] == "service_healthy"
    for infra in ("rabbitmq", "postgres", "mailpit"):
        assert services[infra]["healthcheck"]
    init = services["postgres"]["volumes"][0].split(":")[0]
    script = (REPO / init).read_text()
    assert all(db in script for db in ("enrolment", "funding", "certificates", "notifications"))


@pytest.mark.skipif(subprocess.run(["docker", "compose", "version"], capture_output=True)
                    .returncode != 0 if shutil.which("docker") else True,
                    reason="the docker compose plugin is not installed here")
def test_docker_compose_config_accepts_the_file():
    subprocess.run(["docker", "compose", "config", "-q"], cwd=REPO, check=True)


def rendered():
    kustomization = REPO / "deploy" / "k8s"
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "kustomize", str(kustomization)], capture_output=True,
                             text=True, check=True).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    spec = yaml.safe_load((kustomization / "kustomization.yaml").read_text())
    docs = []
    for resource in spec["resources"]:
        docs += [d for d in yaml.safe_load_all((kustomization / resource).read_text()) if d]
    return docs


def test_every_deployment_has_probes_limits_a_service_and_a_disruption_budget():
    docs = rendered()
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    assert set(deployments) == set(SERVICES)
    services = by_kind["Service"]
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["run", "--service", name]
        assert container["readinessProbe"] and container["livenessProbe"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["securityContext"]["runAsNonRoot"] is True
        assert any(all(labels.get(k) == v for k, v in s["spec"]["selector"].items())
                   for s in services), f"no Service selects {name}"
        assert any(p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == name
                   for p in by_kind["PodDisruptionBudget"])
    assert by_kind["Job"][0]["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_autoscaling_watches_queues_that_exist():
    docs = rendered()
    queues = {s.queue_name for s in topology.subscriptions(topology.service_classes({}))}
    queues |= {f"rpc-{name}" for name in SERVICES}
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert {d["spec"]["scaleTargetRef"]["name"] for d in scaled} == {
        "enrolment", "funding", "certificates", "notifications"}
    for scaled_object in scaled:
        for trigger in scaled_object["spec"]["triggers"]:
            assert trigger["metadata"]["queueName"] in queues
    hpa_dir = REPO / "deploy" / "k8s" / "hpa"
    alternatives = [yaml.safe_load(p.read_text()) for p in hpa_dir.glob("*-hpa.yaml")]
    assert {h["spec"]["scaleTargetRef"]["name"] for h in alternatives} == {
        "enrolment", "funding", "certificates", "notifications"}


def test_image_is_multi_stage_non_root_and_exec_form():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    froms = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2 and all("python:3.11-slim" in line for line in froms)
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "gcc" not in final and "USER lotsen" in final
    assert 'ENTRYPOINT ["lotsen"]' in final
