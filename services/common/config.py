"""Configuration: one nameko YAML file per deployment, with ``${VAR:default}`` values.

Every setting has a default that works for the embedded case (SQLite files under
``LOTSEN_HOME``, RabbitMQ on localhost), so an empty config is a valid config.
"""
from __future__ import annotations

import os
import ssl
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
        config = yaml.safe_load(handle) or {}
    # nameko hands AMQP_SSL to kombu as it is, and an empty section would still mean TLS.
    if "AMQP_SSL" in config:
        config["AMQP_SSL"] = amqp_ssl(config)
        if config["AMQP_SSL"] is None:
            del config["AMQP_SSL"]
    return config


def lotsen_home(config: dict) -> Path:
    home = Path(config.get("LOTSEN_HOME") or os.environ.get("LOTSEN_HOME") or "./var")
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


def amqp_uri(config: dict) -> str:
    return config.get("AMQP_URI") or DEFAULT_AMQP_URI


def amqp_ssl(config: dict):
    """TLS options for the broker (nameko's ``AMQP_SSL``): a CA file makes ``amqps://`` check
    the broker's certificate against it; None without TLS settings."""
    options = {k: v for k, v in (config.get("AMQP_SSL") or {}).items() if v not in (None, "")}
    if options.get("ca_certs"):
        options.setdefault("cert_reqs", ssl.CERT_REQUIRED)
        # Present and None: kombu puts the URI's host name here, and only then does the TLS
        # layer check that the certificate names the broker we meant to reach.
        options.setdefault("server_hostname", None)
    return options or None


def amqp_connection(config: dict, **kwargs):
    """A kombu connection to the broker with the configured TLS settings."""
    from kombu import Connection
    return Connection(amqp_uri(config), ssl=amqp_ssl(config), **kwargs)


def _give_up_on_untrusted_certificate(exc, interval):
    if isinstance(exc, ssl.SSLCertVerificationError):
        raise exc


def ensure_connected(connection, max_retries: int):
    """kombu's ``ensure_connection``, except that a broker certificate we do not trust (another
    CA, another host name) fails at once: every retry would meet the same certificate, and kombu
    waits 2, 4, 6 s between them. Raises kombu's ``OperationalError`` either way."""
    return connection.ensure_connection(max_retries=max_retries,
                                        errback=_give_up_on_untrusted_certificate)


def untrusted_certificate(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate refusal behind a failed connection, if that is what it was."""
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def rpc_client_config(config: dict) -> dict:
    """What a standalone RPC proxy needs to reach the broker as this process does."""
    out = {"AMQP_URI": amqp_uri(config)}
    if amqp_ssl(config):
        out["AMQP_SSL"] = amqp_ssl(config)
    return out


def broker_user(config: dict) -> str:
    """The broker user this process connects as (from ``AMQP_URI``)."""
    from kombu.utils.url import url_to_parts
    return url_to_parts(amqp_uri(config)).username or "guest"


def producer_user(config: dict, service: str) -> str:
    """The broker user whose messages are ``service``'s events. Without ``BROKER_USERS`` every
    service is taken to run as this process's user (the embedded default)."""
    return (config.get("BROKER_USERS") or {}).get(service) or broker_user(config)


def database_url(config: dict, service: str) -> str:
    """The service's own database; an SQLite file in the run directory unless configured."""
    url = (config.get("DATABASES") or {}).get(service)
    if url:
        return url
    return f"sqlite:///{lotsen_home(config) / (service + '.sqlite')}"


def setting(config: dict, name: str, default):
    value = config.get(name)
    return default if value in (None, "") else value


def queue_arguments(config: dict) -> dict:
    """Arguments for every durable queue this system declares. ``QUEUE_TYPE: quorum`` makes
    them quorum queues (replicated on a RabbitMQ cluster); a queue's type is fixed when it is
    declared, so a policy cannot change it later."""
    kind = str(setting(config, "QUEUE_TYPE", "classic")).lower()
    if kind not in ("classic", "quorum"):
        raise ValueError(f"QUEUE_TYPE is classic or quorum, not {kind!r}")
    return {"x-queue-type": "quorum"} if kind == "quorum" else {}
