"""`lotsen provider rotate-token|revoke|list` and `lotsen municipality rotate-key|revoke-key` on
the embedded default (SQLite files in a fresh LOTSEN_HOME)."""
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from services.cli import main
from services.common.db import DatabaseHandle
from services.common.errors import AuthenticationFailed
from services.enrolment import domain
from services.enrolment.models import Body, InboxRecord, OutboxMessage

AGS = "08226098"


@pytest.fixture
def home(tmp_path, rabbit_config):
    config = {"AMQP_URI": rabbit_config["AMQP_URI"], "LOTSEN_HOME": str(tmp_path / "var"),
              "DATABASES": {"enrolment": None}, "GATEWAY": {"auth_cache_s": 7},
              "LOGGING": {"version": 1, "root": {"level": "WARNING"}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert invoke(path, "migrate").exit_code == 0
    handle = DatabaseHandle(f"sqlite:///{Path(config['LOTSEN_HOME']) / 'enrolment.sqlite'}",
                            "enrolment", OutboxMessage, InboxRecord)
    handle.run(lambda s: s.add(Body(ags=AGS, name="Wiesloch, Stadt", kind="gemeinde",
                                    designation="Stadt", kreisfrei=False, land="08",
                                    kreis_ags="08226000")))
    yield path, handle
    handle.dispose()


def invoke(path, *args):
    return CliRunner().invoke(main, ["--config", str(path), *args])


def accepted(handle, fn, secret) -> bool:
    try:
        handle.run(fn, secret)
        return True
    except AuthenticationFailed:
        return False


def test_provider_tokens_are_rotated_revoked_and_listed(home):
    path, db = home
    created = invoke(path, "provider", "create", "VWA Baden")
    assert created.exit_code == 0, created.output
    provider_id = re.search(r"^provider (\S+)$", created.output, re.M).group(1)
    first = re.search(r"^token: (\S+)$", created.output, re.M).group(1)

    rotated = invoke(path, "provider", "rotate-token", "VWA Baden")
    assert rotated.exit_code == 0, rotated.output
    assert re.search(r"^provider (\S+)$", rotated.output, re.M).group(1) == provider_id
    second = re.search(r"^token: (\S+)$", rotated.output, re.M).group(1)
    assert second != first and "not shown again" in rotated.output
    assert not accepted(db, domain.authenticate_provider, first)
    assert accepted(db, domain.authenticate_provider, second)

    revoked = invoke(path, "provider", "revoke", provider_id)
    assert revoked.exit_code == 0, revoked.output
    assert provider_id in revoked.output and "revoked" in revoked.output
    assert not accepted(db, domain.authenticate_provider, second)

    listed = invoke(path, "provider", "list")
    assert listed.exit_code == 0, listed.output
    [line] = listed.output.splitlines()
    assert line.startswith(f"{provider_id}  VWA Baden  issued 20")
    assert re.search(r"revoked 20\d\d-\d\d-\d\dT[\d:]+\+00:00$", line)
    assert first not in listed.output and second not in listed.output
    assert "lp_" not in listed.output

    third = re.search(r"^token: (\S+)$", invoke(path, "provider", "rotate-token", provider_id)
                      .output, re.M).group(1)
    assert accepted(db, domain.authenticate_provider, third)
    assert invoke(path, "provider", "list").output.rstrip().endswith("revoked -")

    for command in ("rotate-token", "revoke"):
        unknown = invoke(path, "provider", command, "Niemand")
        assert unknown.exit_code == 2
        assert "error: no provider Niemand" in unknown.output and "provider:" in unknown.output


def test_municipality_keys_are_rotated_and_revoked(home):
    path, db = home
    registered = invoke(path, "municipality", "register", AGS, "--contact-name", "Hauptamt",
                        "--contact-email", "digital@wiesloch.example")
    assert registered.exit_code == 0, registered.output
    first = re.search(rf"^API key for {AGS}: (\S+)$", registered.output, re.M).group(1)

    rotated = invoke(path, "municipality", "rotate-key", AGS)
    assert rotated.exit_code == 0, rotated.output
    second = re.search(rf"^API key for {AGS}: (\S+)$", rotated.output, re.M).group(1)
    assert second != first and "not shown again" in rotated.output
    assert "up to 7 s" in rotated.output  # the gateway's key cache, from this config
    assert not accepted(db, domain.authenticate_municipality, first)
    assert accepted(db, domain.authenticate_municipality, second)

    revoked = invoke(path, "municipality", "revoke-key", AGS)
    assert revoked.exit_code == 0, revoked.output
    assert second not in revoked.output
    assert not accepted(db, domain.authenticate_municipality, second)
    third = re.search(rf"^API key for {AGS}: (\S+)$",
                      invoke(path, "municipality", "rotate-key", AGS).output, re.M).group(1)
    assert accepted(db, domain.authenticate_municipality, third)

    for command in ("rotate-key", "revoke-key"):
        unregistered = invoke(path, "municipality", command, "08226095")
        assert unregistered.exit_code == 2 and "not registered" in unregistered.output
        malformed = invoke(path, "municipality", command, "0822")
        assert malformed.exit_code == 2 and "ags" in malformed.output
    assert accepted(db, domain.authenticate_municipality, third)
