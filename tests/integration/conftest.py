"""Real RabbitMQ (a virtual host per test, made by nameko's fixture) and real PostgreSQL
(a database per test, named after this run, migrated with the services' own migrations)."""
import itertools

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN_URL, RUN_ID, require_service

_counter = itertools.count(1)


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def rabbit_available():
    require_service("RabbitMQ", 5672)
    require_service("RabbitMQ management API", 15672)


@pytest.fixture
def rabbit_config(rabbit_available, rabbit_config):
    return rabbit_config


@pytest.fixture(scope="session")
def pg_admin():
    require_service("PostgreSQL", 5432)
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    created = []
    yield engine, created
    with engine.connect() as conn:
        for name in created:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    engine.dispose()


@pytest.fixture
def empty_pg_url(pg_admin):
    """A new, empty PostgreSQL database for this test only."""
    engine, created = pg_admin
    name = f"lotsen_test_{RUN_ID}_{next(_counter)}"
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    created.append(name)
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _migrated(pg_admin, service):
    from services.common.migrations import upgrade
    engine, created = pg_admin
    name = f"lotsen_test_{RUN_ID}_{next(_counter)}_{service}"
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    created.append(name)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    upgrade(service, url)
    return url


@pytest.fixture
def pg_url(pg_admin):
    """A migrated enrolment database on PostgreSQL."""
    return _migrated(pg_admin, "enrolment")


@pytest.fixture
def funding_pg_url(pg_admin):
    return _migrated(pg_admin, "funding")


@pytest.fixture
def certificates_pg_url(pg_admin):
    return _migrated(pg_admin, "certificates")


@pytest.fixture
def notifications_pg_url(pg_admin):
    return _migrated(pg_admin, "notifications")


@pytest.fixture
def service_config(rabbit_config, pg_url, funding_pg_url, certificates_pg_url,
                   notifications_pg_url, tmp_path):
    config = dict(rabbit_config)
    config.update({
        "LOTSEN_HOME": str(tmp_path),
        "DATABASES": {"enrolment": pg_url, "funding": funding_pg_url,
                      "certificates": certificates_pg_url,
                      "notifications": notifications_pg_url},
        "MAIL": {"transport": "file", "directory": str(tmp_path / "mail")},
        "CERTIFICATES": {"key_dir": str(tmp_path / "keys"), "issuer_name": "Programmbüro Test",
                         "issuer_url": "https://lotsen.example",
                         "public_base_url": "https://lotsen.example"},
        "OUTBOX": {"poll_interval_s": 0.1, "batch_size": 100},
        # Quick retries, but enough of them (about 4 s) for an event that overtook the one it
        # depends on.
        "EVENT_RETRY": {"max_attempts": 8, "base_delay_ms": 50, "max_delay_ms": 1000},
        "OPERATOR_TOKEN": "operator-secret-for-tests",
        "EXTRA_SERVICE_CLASSES": ["tests.integration.helpers:Recorder"],
    })
    return config


@pytest.fixture
def enrolment_db(service_config):
    from services.common.db import open_database
    from services.enrolment.models import InboxRecord, OutboxMessage
    handle = open_database(service_config, "enrolment", OutboxMessage, InboxRecord)
    yield handle
    handle.dispose()


@pytest.fixture
def funding_db(service_config):
    from services.common.db import open_database
    from services.funding.models import InboxRecord, OutboxMessage
    handle = open_database(service_config, "funding", OutboxMessage, InboxRecord)
    yield handle
    handle.dispose()
