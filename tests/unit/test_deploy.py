"""Deployment files: compose, Kubernetes manifests and the image, checked against the code."""
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml


class PlainLoader(yaml.SafeLoader):
    """YAML as written: nameko's config parser (loaded by other tests) teaches SafeLoader to
    expand ${VAR:default}, which would hide what the deployment files say."""


PlainLoader.yaml_implicit_resolvers = {
    key: list(value) for key, value in yaml.resolver.Resolver.yaml_implicit_resolvers.items()}


def _plain(text):
    return yaml.load(text, Loader=PlainLoader)


def _plain_all(text):
    return yaml.load_all(text, Loader=PlainLoader)

from services.common import topology

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
SERVICES = [cls.name for cls in topology.service_classes({})]
BROKER_PASSWORDS = [f"{name.upper()}_BROKER_PASSWORD" for name in SERVICES]
# Variables compose must never have a default for.
COMPOSE_SECRETS = {"OPERATOR_TOKEN", "SERVICE_KEY", "RABBITMQ_ADMIN_PASSWORD", *BROKER_PASSWORDS}


def test_every_service_is_deployed():
    assert SERVICES == ["enrolment", "funding", "certificates", "notifications", "gateway"]


def compose():
    return _plain((REPO / "docker-compose.yml").read_text())


def test_compose_runs_each_service_after_the_migration_with_health_checks():
    services = compose()["services"]
    assert {"rabbitmq", "postgres", "mailpit", "broker-setup", "migrate",
            *SERVICES} == set(services)
    assert "management" in services["rabbitmq"]["image"]
    assert services["broker-setup"]["command"] == ["broker", "setup"]
    assert services["broker-setup"]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["migrate"]
    assert (services["migrate"]["depends_on"]["broker-setup"]["condition"]
            == "service_completed_successfully")
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["run", "--service", name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert (service["depends_on"]["broker-setup"]["condition"]
                == "service_completed_successfully")
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert service["healthcheck"]["test"][0] == "CMD"
        assert "container_name" not in service  # `--scale` needs generated names
        # the process's own readiness, not an RPC through the shared queue
        assert service["healthcheck"]["test"][1:] == ["lotsen", "probe", "ready"]
    assert services["gateway"]["ports"] == ["8000:8000"]
    assert services["notifications"]["depends_on"]["mailpit"]["condition"] == "service_healthy"
    for infra in ("rabbitmq", "postgres", "mailpit"):
        assert services[infra]["healthcheck"]
    init = services["postgres"]["volumes"][0].split(":")[0]
    script = (REPO / init).read_text()
    assert all(db in script for db in ("enrolment", "funding", "certificates", "notifications"))


def test_compose_has_no_working_default_for_any_secret():
    text = (REPO / "docker-compose.yml").read_text()
    assert "guest" not in text.lower()
    references = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}", text)
    assert COMPOSE_SECRETS <= {name for name, _ in references}
    for name, modifier in references:
        if name in COMPOSE_SECRETS:  # required: `up` stops and prints the message
            assert re.fullmatch(r":\?.*\S.*", modifier), f"${{{name}{modifier}}} has a default"
    for name in COMPOSE_SECRETS:  # no unbraced $VAR either
        assert not re.search(rf"\${name}\b", text)
    required = r"\$\{%s:\?[^}]+\}"
    services = compose()["services"]
    for service_name, service in services.items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), service_name
        for key, value in environment.items():
            if key in COMPOSE_SECRETS:
                assert re.fullmatch(required % key, str(value)), (service_name, key)
        if service_name != "broker-setup":  # the admin and the others' passwords stay there
            assert not {"RABBITMQ_MANAGEMENT_URL", *BROKER_PASSWORDS} & set(environment)
    rabbitmq = services["rabbitmq"]
    assert re.fullmatch(required % "RABBITMQ_ADMIN_PASSWORD",
                        rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"])
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"]
    assert rabbitmq["ports"] and all(p.startswith("127.0.0.1:") for p in rabbitmq["ports"])
    assert any(p.split(":")[-1] == "15672" for p in rabbitmq["ports"])
    setup = services["broker-setup"]["environment"]
    assert re.fullmatch(r"http://\$\{RABBITMQ_ADMIN_USER[^}]*\}:%s@rabbitmq:15672"
                        % (required % "RABBITMQ_ADMIN_PASSWORD"),
                        setup["RABBITMQ_MANAGEMENT_URL"])
    for password in BROKER_PASSWORDS:
        assert re.fullmatch(required % password, setup[password])
    for name in SERVICES + ["migrate"]:
        user = "enrolment" if name == "migrate" else name
        uri = services[name]["environment"]["AMQP_URI"]
        password = required % f"{user.upper()}_BROKER_PASSWORD"
        assert re.fullmatch(rf"pyamqp://lotsen-{user}:{password}@rabbitmq:5672/", uri), (name, uri)
    for name in ("OPERATOR_TOKEN", "SERVICE_KEY"):
        assert all(name in services[s]["environment"] for s in SERVICES)


def test_real_env_files_are_not_committed():
    if not (shutil.which("git") and (REPO / ".git").exists()):
        pytest.skip("not a git checkout")
    for path in (".env", "deploy/k8s/secrets.env"):
        assert subprocess.run(["git", "check-ignore", "-q", "--no-index", path],
                              cwd=REPO).returncode == 0, f"{path} is not gitignored"
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path], cwd=REPO,
                                 capture_output=True)
        assert tracked.returncode != 0, f"{path} is in the repository"


def filled(path: Path) -> dict[str, str]:
    """The example env file with every empty value filled in, as an operator would."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value or f"{key.lower().replace('_', '-')}-0123456789abcdef0123456789"
    return values


def docker_compose():
    """Debian's docker-compose 1.29 (scripts/ensure-services installs it): it checks the file
    offline, without a Docker daemon."""
    exe = shutil.which("docker-compose")
    if exe is None:
        reason = "docker-compose is not installed (scripts/ensure-services installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    return exe


def compose_config(tmp_path, env: dict, env_file: Path | None = None, quiet=True):
    """`docker-compose config` with exactly this environment; a developer's .env plays no part."""
    if env_file is None:
        env_file = tmp_path / "empty.env"
        env_file.write_text("")
    return subprocess.run(
        [docker_compose(), "--project-directory", str(REPO), "-f", str(REPO / "docker-compose.yml"),
         "--env-file", str(env_file), "config", *(["-q"] if quiet else [])],
        env={**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120)


def test_docker_compose_refuses_to_start_without_each_secret(tmp_path):
    example = REPO / "deploy" / "compose.env.example"
    secrets = filled(example)
    assert COMPOSE_SECRETS <= set(secrets)
    for name in sorted(COMPOSE_SECRETS):
        missing = compose_config(tmp_path, {k: v for k, v in secrets.items() if k != name})
        assert missing.returncode != 0, f"compose starts without {name}"
        assert "Missing mandatory value" in missing.stderr, missing.stderr
        assert name in missing.stderr, missing.stderr  # the message says what to set
    unfilled = compose_config(tmp_path, {}, env_file=example)  # copied but not filled in
    assert unfilled.returncode != 0 and "Missing mandatory value" in unfilled.stderr


def test_docker_compose_accepts_the_file_with_the_secrets_set(tmp_path):
    example = REPO / "deploy" / "compose.env.example"
    secrets = filled(example)
    from_environment = compose_config(tmp_path, secrets, quiet=False)
    assert from_environment.returncode == 0, from_environment.stderr
    env_file = tmp_path / "operator.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    from_env_file = compose_config(tmp_path, {}, env_file=env_file, quiet=False)
    assert from_env_file.returncode == 0, from_env_file.stderr
    assert from_env_file.stdout == from_environment.stdout
    services = _plain(from_environment.stdout)["services"]
    for name in SERVICES:
        password = secrets[f"{name.upper()}_BROKER_PASSWORD"]
        assert (services[name]["environment"]["AMQP_URI"]
                == f"pyamqp://lotsen-{name}:{password}@rabbitmq:5672/")
        assert services[name]["environment"]["SERVICE_KEY"] == secrets["SERVICE_KEY"]
        assert services[name]["environment"]["OPERATOR_TOKEN"] == secrets["OPERATOR_TOKEN"]
    rabbitmq = services["rabbitmq"]
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"] != "guest"
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"] == secrets["RABBITMQ_ADMIN_PASSWORD"]
    for port in rabbitmq["ports"]:
        assert (port.get("host_ip") == "127.0.0.1" if isinstance(port, dict)
                else port.startswith("127.0.0.1:")), port
    setup = services["broker-setup"]["environment"]
    assert setup["RABBITMQ_MANAGEMENT_URL"] == (
        f"http://{secrets['RABBITMQ_ADMIN_USER']}:{secrets['RABBITMQ_ADMIN_PASSWORD']}"
        "@rabbitmq:15672")


def rendered(with_secrets=True):
    """The manifests as `kubectl apply -k` sends them, built from a copy of deploy/k8s with the
    example secrets.env filled in (a real deploy/k8s/secrets.env is never read)."""
    with tempfile.TemporaryDirectory() as tmp:
        kustomization = Path(tmp) / "k8s"
        shutil.copytree(K8S, kustomization, ignore=shutil.ignore_patterns("secrets.env"))
        if with_secrets:
            values = filled(K8S / "secrets.env.example")
            (kustomization / "secrets.env").write_text(
                "".join(f"{k}={v}\n" for k, v in values.items()))
        if shutil.which("kubectl"):
            out = subprocess.run(["kubectl", "kustomize", str(kustomization)],
                                 capture_output=True, text=True, check=True).stdout
            return [d for d in _plain_all(out) if d]
        spec = _plain((kustomization / "kustomization.yaml").read_text())
        docs = []
        for resource in spec["resources"]:
            docs += [d for d in _plain_all((kustomization / resource).read_text()) if d]
        for generator in spec.get("secretGenerator", []):
            data = {}
            for env_file in generator["envs"]:
                data.update(filled(kustomization / env_file))
            docs.append({"kind": "Secret", "metadata": {"name": generator["name"]},
                         "stringData": data})
        return docs


def workloads(docs):
    """(kind, name, container) of every Deployment and Job."""
    return [(d["kind"], d["metadata"]["name"], container)
            for d in docs if d["kind"] in ("Deployment", "Job")
            for container in d["spec"]["template"]["spec"]["containers"]]


def secret_refs(container) -> dict[str, tuple[str, str]]:
    """env name -> (secret, key) for every env value the container takes from a secret."""
    refs = {}
    for env in container.get("env", []):
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            refs[env["name"]] = (ref["name"], ref["key"])
    return refs


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
        assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready",
                                                          "port": "metrics"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health/live",
                                                         "port": "metrics"}
        assert any(p.get("name") == "metrics" and p["containerPort"] == 9100
                   for p in container["ports"])
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["securityContext"]["runAsNonRoot"] is True
        assert any(all(labels.get(k) == v for k, v in s["spec"]["selector"].items())
                   for s in services), f"no Service selects {name}"
        assert any(p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == name
                   for p in by_kind["PodDisruptionBudget"])
    jobs = {j["metadata"]["name"]: j for j in by_kind["Job"]}
    [migrate] = jobs["lotsen-migrate"]["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["migrate"]


def test_kubernetes_secrets_come_from_the_operator_not_from_the_repository():
    spec = _plain((K8S / "kustomization.yaml").read_text())
    assert "secret.template.yaml" not in spec["resources"]
    for resource in spec["resources"]:
        assert all(d["kind"] != "Secret"
                   for d in _plain_all((K8S / resource).read_text()) if d), resource
    [generator] = spec["secretGenerator"]
    assert generator["name"] == "lotsen-secrets" and generator["envs"] == ["secrets.env"]
    example = K8S / "secrets.env.example"
    assert not any("=" in line and line.split("=", 1)[1].strip()
                   for line in example.read_text().splitlines() if not line.startswith("#")), \
        "the example holds no value that would work"
    if shutil.which("kubectl"):  # without the operator's secrets.env there is nothing to apply
        with pytest.raises(subprocess.CalledProcessError) as failed:
            rendered(with_secrets=False)
        assert "secrets.env" in failed.value.stderr


def test_every_workload_connects_as_its_own_broker_user_from_the_secret():
    docs = rendered()
    [secret] = [d for d in docs
                if d["kind"] == "Secret" and d["metadata"]["name"] == "lotsen-secrets"]
    keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
    for config_map in (d for d in docs if d["kind"] == "ConfigMap"):
        assert not {"AMQP_URI", "OPERATOR_TOKEN", "SERVICE_KEY"} & set(config_map["data"])
    broker_secrets = {"RABBITMQ_MANAGEMENT_URL", *BROKER_PASSWORDS,
                      *(f"{s.upper()}_AMQP_URI" for s in SERVICES)}
    seen = set()
    for kind, name, container in workloads(docs):
        seen.add(name)
        assert not any("secretRef" in source for source in container.get("envFrom", [])), \
            f"{name} takes the whole secret, other services' broker users included"
        assert all("value" not in e for e in container.get("env", []) if e["name"] == "AMQP_URI")
        refs = secret_refs(container)
        assert refs["AMQP_URI"][0] == "lotsen-secrets", name
        assert {key for _, key in refs.values()} <= keys, f"{name} needs a key the example lacks"
        if kind == "Deployment":
            own = f"{name.upper()}_AMQP_URI"
            assert refs["AMQP_URI"] == ("lotsen-secrets", own)
            assert refs["SERVICE_KEY"] == ("lotsen-secrets", "SERVICE_KEY")
            assert refs["OPERATOR_TOKEN"] == ("lotsen-secrets", "OPERATOR_TOKEN")
            assert {key for _, key in refs.values()} & broker_secrets == {own}
    assert {*SERVICES, "lotsen-migrate", "lotsen-broker-setup"} <= seen
    [keda] = [d for d in docs if d["kind"] == "TriggerAuthentication"]
    assert {r["key"] for r in keda["spec"]["secretTargetRef"]} <= keys


def test_broker_setup_job_runs_with_the_admin_and_the_service_passwords():
    jobs = {name: c for kind, name, c in workloads(rendered()) if kind == "Job"}
    setup = jobs["lotsen-broker-setup"]
    assert setup["args"] == ["broker", "setup"]
    assert setup["securityContext"]["runAsNonRoot"] is True
    refs = secret_refs(setup)
    for name in ["RABBITMQ_MANAGEMENT_URL", *BROKER_PASSWORDS]:
        assert refs[name] == ("lotsen-secrets", name)
    assert refs["AMQP_URI"][1].endswith("_AMQP_URI")  # the services' virtual host


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
    alternatives = [_plain(p.read_text()) for p in hpa_dir.glob("*-hpa.yaml")]
    assert {h["spec"]["scaleTargetRef"]["name"] for h in alternatives} == {
        "enrolment", "funding", "certificates", "notifications"}


def test_image_is_multi_stage_non_root_and_exec_form():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    froms = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2 and all("python:3.11-slim" in line for line in froms)
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "gcc" not in final and "USER lotsen" in final
    assert 'ENTRYPOINT ["lotsen"]' in final


def test_signing_keys_are_readable_by_the_user_the_certificates_pod_runs_as():
    [deployment] = [d for d in rendered() if d["kind"] == "Deployment"
                    and d["metadata"]["name"] == "certificates"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    user = container["securityContext"]["runAsUser"]
    [keys] = [v for v in pod["volumes"] if v["name"] == "signing-keys"]
    mode = keys["secret"]["defaultMode"]
    # Secret files belong to root: the pod's user reads them only through the group.
    assert pod["securityContext"]["fsGroup"] == user
    assert mode & 0o040 and not mode & 0o007, oct(mode)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "signing-keys")
    assert mount["mountPath"] == "/var/lib/lotsen/keys"


def test_the_image_has_the_key_directory_the_compose_volume_mounts():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "install -d -o lotsen -g lotsen -m 0700 /var/lib/lotsen/keys" in final
    volumes = compose()["services"]["certificates"]["volumes"]
    assert any(v.endswith(":/var/lib/lotsen/keys") for v in volumes)
