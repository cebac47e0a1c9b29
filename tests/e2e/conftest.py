"""End-to-end tests reuse the integration fixtures (real RabbitMQ, PostgreSQL, SMTP) and run
the whole system, every service in its own process."""
import pytest

from tests.e2e.system import System
from tests.integration.conftest import (  # noqa: F401
    _migrated,
    certificates_pg_url,
    empty_pg_url,
    enrolment_db,
    funding_db,
    funding_pg_url,
    notifications_pg_url,
    pg_admin,
    pg_url,
    rabbit_available,
    rabbit_config,
    service_config,
)


@pytest.fixture
def make_system(service_config, tmp_path):  # noqa: F811
    """``make_system(**config_overrides)``: a system with its own vhost, databases and SMTP
    server; every process it started is stopped afterwards."""
    made = []

    def make(**overrides):
        system = System(service_config, tmp_path, **overrides)
        made.append(system)
        return system
    yield make
    for system in made:
        system.close()
