"""Shared fixtures. eventlet is patched first, as in every service process."""
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet announces its maintenance mode on import
    import eventlet

eventlet.monkey_patch()  # noqa: E402

import os
import socket
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REGISTER_FILE = REPO.parent / "shared" / "data" / "destatis-gv-auszug.csv"
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("LOTSEN_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, port: int):
    """A missing RabbitMQ or PostgreSQL fails the run on CI and skips locally."""
    if _port_open(port):
        return
    message = f"{name} is not answering on 127.0.0.1:{port}"
    if ON_CI:
        pytest.fail(message + " (CI needs it: the integration tests must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def register_file():
    if not REGISTER_FILE.exists():
        pytest.fail(f"the municipality register is missing: {REGISTER_FILE}")
    return REGISTER_FILE


def pytest_terminal_summary(terminalreporter):
    """The end-to-end tests' counts, shown even when they pass."""
    from tests.e2e.system import TALLIES
    if TALLIES:
        terminalreporter.section("what the end-to-end runs counted")
        for line in TALLIES:
            terminalreporter.write_line(line)
