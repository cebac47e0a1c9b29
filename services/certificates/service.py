"""Entrypoints of the certificates service."""
from __future__ import annotations

import base64
import logging
from pathlib import Path

from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from sqlalchemy import func, select, text

from services.certificates import domain, privacy, schemas
from services.certificates.credentials import KeyRing
from services.certificates.models import Certificate, InboxRecord, OutboxMessage
from services.common import config as cfg
from services.common.broker import RpcProxy
from services.common.db import Database
from services.common.callers import MUNICIPALITY, OPERATOR, PROVIDER, PUBLIC, SERVICE
from services.common.entrypoints import CallAs, Operator, ProviderToken, event_handler, rpc
from services.common.errors import AuthenticationFailed
from services.common.events import parse_event
from services.common.logs import LogContext
from services.common.metrics import Metrics
from services.common.outbox import handle_once
from services.common.schemas import load

log = logging.getLogger(__name__)


def settings(config: dict) -> tuple[KeyRing, domain.Issuer]:
    section = config.get("CERTIFICATES") or {}
    key_dir = cfg.setting(section, "key_dir", None) or str(cfg.lotsen_home(config) / "keys")
    issuer = domain.Issuer(
        name=cfg.setting(section, "issuer_name", "Programmbüro Kommunale Digitallotsen"),
        url=cfg.setting(section, "issuer_url", "http://127.0.0.1:8000"),
        public_base_url=cfg.setting(section, "public_base_url", "http://127.0.0.1:8000"))
    return KeyRing(Path(key_dir)), issuer



def certificate_figures(session) -> dict:
    rows = session.execute(select(Certificate.status, func.count()).group_by(Certificate.status))
    return {f"certificates_{status}": count for status, count in rows}


class Signing(DependencyProvider):
    """The key ring and issuer; the embedded default makes its first key itself."""

    def setup(self):
        self.keyring, self.issuer = settings(self.container.config)
        if not self.keyring.key_ids():
            kid = self.keyring.generate()
            log.info("no signing key found: generated key %s", kid)

    def get_dependency(self, worker_ctx):
        return self

    def readiness(self) -> str | None:
        """None if the newest key signs (and its signature verifies), else why not: counting
        key files says nothing about whether this process can read them."""
        try:
            kid, key = self.keyring.current()
            probe = b"lotsen readiness"
            key.public_key().verify(key.sign(probe), probe)
        except Exception as exc:
            return f"cannot sign ({type(exc).__name__})"
        return None


class CertificatesService:
    name = "certificates"
    log_context = LogContext()
    metrics = Metrics(certificate_figures)

    db = Database("certificates", OutboxMessage, InboxRecord)
    signing = Signing()
    config = Config()
    enrolment = RpcProxy("enrolment")
    call_as = CallAs()
    operator = Operator()
    provider_token = ProviderToken()

    @event_handler("enrolment", "enrolment_completed")
    def on_enrolment_completed(self, envelope):
        event = parse_event(envelope, "enrolment_completed")
        self.db.run(handle_once, event, f"{self.name}.on_enrolment_completed",
                    lambda session, e: domain.issue(session, e.payload, self.signing.keyring,
                                                    self.signing.issuer))

    @event_handler("enrolment", "participant_erased")
    def on_participant_erased(self, envelope):
        event = parse_event(envelope, "participant_erased")
        self.db.run(handle_once, event, f"{self.name}.on_participant_erased",
                    lambda session, e: privacy.participant_erased(session, e.payload))

    @rpc(OPERATOR)
    def participant_data(self, enrolment_ids):
        """For an access request: the certificates of these enrolments."""
        self.operator.require()
        ids = load(schemas.EnrolmentIdsIn(), {"enrolment_ids": enrolment_ids},
                   "enrolment ids")["enrolment_ids"]
        return self.db.run(privacy.participant_data, ids, domain.summary)

    # --- queries ---------------------------------------------------------------------------

    @rpc(MUNICIPALITY, OPERATOR)
    def get_certificate(self, number, ags=None):
        data = load(schemas.NumberIn(), {"number": number, "ags": ags}, "certificate")
        return self.db.run(lambda s: domain.summary(domain.by_number(s, data["number"],
                                                                     data["ags"])))

    @rpc(MUNICIPALITY, OPERATOR, SERVICE)
    def get_pdf(self, number, ags=None):
        """The PDF, base64-encoded (RPC payloads are JSON)."""
        data = load(schemas.NumberIn(), {"number": number, "ags": ags}, "certificate")
        content = self.db.run(lambda s: domain.render_pdf(
            domain.by_number(s, data["number"], data["ags"]), self.signing.issuer))
        return {"number": data["number"], "filename": f"Zertifikat-{data['number']}.pdf",
                "content_base64": base64.b64encode(content).decode("ascii")}

    @rpc(PUBLIC)
    def verify_code(self, code):
        return self.db.run(domain.verify_code, str(code)[:64])

    @rpc(PUBLIC)
    def verify_credential(self, credential):
        data = load(schemas.CredentialIn(), {"credential": credential}, "credential")
        return self.db.run(domain.verify_presented, data["credential"],
                           self.signing.keyring.jwks())

    @rpc(PUBLIC)
    def jwks(self):
        return self.signing.keyring.jwks()

    # --- changes ---------------------------------------------------------------------------

    @rpc(PROVIDER, OPERATOR)
    def revoke(self, number, reason):
        """By an operator, or by the provider that ran the course (its token in context)."""
        data = load(schemas.RevokeIn(), {"number": number, "reason": reason}, "revocation")
        if self.operator.granted:
            by, provider_name = "operator", None
        elif self.provider_token:
            self.call_as.service()
            provider = self.enrolment.authenticate_provider(self.provider_token)
            by, provider_name = f"provider:{provider['name']}", provider["name"]
        else:
            raise AuthenticationFailed("operator or provider token required")
        certificate = self.db.run(domain.revoke, data["number"], data["reason"], by,
                                  provider_name)
        return domain.summary(certificate)

    @rpc(OPERATOR)
    def reissue(self, number, given_name, family_name):
        self.operator.require()
        data = load(schemas.ReissueIn(), {"number": number, "given_name": given_name,
                                          "family_name": family_name}, "re-issue")
        certificate = self.db.run(domain.reissue, data["number"], data["given_name"],
                                  data["family_name"], self.signing.keyring, self.signing.issuer)
        return domain.summary(certificate)

    @rpc(PUBLIC)
    def health(self):
        with self.db.transaction() as session:
            session.execute(text("SELECT 1"))
        return {"service": self.name, "database": "ok", "broker": "ok",
                "signing_keys": len(self.signing.keyring.key_ids()),
                "signing": self.signing.readiness() or "ok"}
