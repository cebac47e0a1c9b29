"""End-to-end tests reuse the integration fixtures (real RabbitMQ, PostgreSQL, SMTP)."""
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
