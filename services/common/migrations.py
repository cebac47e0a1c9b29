"""Alembic, per service: each service keeps its migrations in ``services/<name>/migrations``."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, pool

from services.common import config as cfg

SERVICES_DIR = Path(__file__).resolve().parents[1]
MIGRATED_SERVICES = ["enrolment", "funding", "certificates", "notifications"]


def alembic_config(service: str, url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    config.attributes["url"] = url
    return config


def upgrade(service: str, url: str, revision: str = "head"):
    command.upgrade(alembic_config(service, url), revision)


def migrate_all(config: dict) -> dict[str, str]:
    """Bring every service database to its newest schema; returns the URLs (without secrets)."""
    done = {}
    for service in MIGRATED_SERVICES:
        url = cfg.database_url(config, service)
        upgrade(service, url)
        done[service] = url.split("@")[-1]
    return done


def run_env(context, target_metadata):
    """Body of every service's ``migrations/env.py``."""
    url = context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                          render_as_batch=url.startswith("sqlite"))
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=url.startswith("sqlite"))
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
