"""Configuration: one nameko YAML file per deployment, with ``${VAR:default}`` values.

Every setting has a default that works for the embedded case (SQLite files under
``LOTSEN_HOME``, RabbitMQ on localhost), so an empty config is a valid config.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

DEFAULT_AMQP_URI = "pyamqp://guest:guest@localhost:5672/"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "deploy" / "config" / "local.yaml"


def load_config(path: str | os.PathLike | None = None) -> dict:
    """Read a nameko config file, expanding ``${VAR:default}`` the way ``nameko run`` does."""
    from nameko.cli.main import setup_yaml_parser

    setup_yaml_parser()
    path = Path(path or os.environ.get("LOTSEN_CONFIG") or DEFAULT_CONFIG_FILE)
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def lotsen_home(config: dict) -> Path:
    home = Path(config.get("LOTSEN_HOME") or os.environ.get("LOTSEN_HOME") or "./var")
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


def amqp_uri(config: dict) -> str:
    return config.get("AMQP_URI") or DEFAULT_AMQP_URI


def database_url(config: dict, service: str) -> str:
    """The service's own database; an SQLite file in the run directory unless configured."""
    url = (config.get("DATABASES") or {}).get(service)
    if url:
        return url
    return f"sqlite:///{lotsen_home(config) / (service + '.sqlite')}"


def setting(config: dict, name: str, default):
    value = config.get(name)
    return default if value in (None, "") else value
