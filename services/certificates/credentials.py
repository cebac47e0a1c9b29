"""Verification codes, Ed25519 keys, JWS and the Open Badges 3.0 style credential.

Plain Python (cryptography), no nameko. Private keys live as PEM files in a key directory, one
per key id; the newest is used for signing, and every key's public half stays published in the
JWKS, so certificates signed before a rotation keep verifying.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

# Crockford's base32: no I, L, O or U, so a person copying the code cannot confuse letters.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 13  # 65 bits
CODE_GROUPS = (5, 4, 4)


def new_verification_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    parts, start = [], 0
    for size in CODE_GROUPS:
        parts.append(raw[start:start + size])
        start += size
    return "-".join(parts)


def normalise_code(text: str) -> str | None:
    """Accept what a person types: any case, spaces or dashes, O for 0, I or L for 1."""
    cleaned = "".join(ch for ch in (text or "").upper() if ch not in " -")
    cleaned = cleaned.translate(str.maketrans({"O": "0", "I": "1", "L": "1"}))
    if len(cleaned) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in cleaned):
        return None
    out, start = [], 0
    for size in CODE_GROUPS:
        out.append(cleaned[start:start + size])
        start += size
    return "-".join(out)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class InvalidCredential(Exception):
    pass


class KeyRing:
    """The signing keys in a directory: ``<kid>.pem`` files (private keys, mode 0600)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def generate(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Names sort by creation time (microseconds), so the newest key is the last one.
        kid = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}"
        existing = self.key_ids()
        if existing and kid <= existing[-1]:
            raise InvalidCredential("the clock is behind the newest key; not generating")
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        path = self.directory / f"{kid}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return kid

    def key_ids(self) -> list[str]:
        if not self.directory.exists():
            return []
        return sorted(p.stem for p in self.directory.glob("*.pem"))

    def private_key(self, kid: str) -> Ed25519PrivateKey:
        pem = (self.directory / f"{kid}.pem").read_bytes()
        return serialization.load_pem_private_key(pem, password=None)

    def current(self) -> tuple[str, Ed25519PrivateKey]:
        kids = self.key_ids()
        if not kids:
            raise InvalidCredential(f"no signing key in {self.directory}: run 'lotsen keys generate'")
        return kids[-1], self.private_key(kids[-1])

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return {kid: self.private_key(kid).public_key() for kid in self.key_ids()}

    def jwks(self) -> dict:
        keys = []
        for kid, public in self.public_keys().items():
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            keys.append({"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "kid": kid,
                         "use": "sig", "alg": "EdDSA"})
        return {"keys": keys}


def sign_jws(payload: dict, kid: str, key: Ed25519PrivateKey) -> str:
    header = {"alg": "EdDSA", "typ": "vc+jwt", "kid": kid}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(payload, separators=(",", ":"),
                                         ensure_ascii=False).encode("utf-8")))
    return signing_input + "." + b64url(key.sign(signing_input.encode("ascii")))


def verify_jws(token: str, jwks: dict) -> tuple[dict, dict]:
    """Check a compact JWS against a JWKS; returns (header, payload) or raises."""
    try:
        header_b64, payload_b64, signature_b64 = token.strip().split(".")
        header = json.loads(b64url_decode(header_b64))
        payload = json.loads(b64url_decode(payload_b64))
        signature = b64url_decode(signature_b64)
    except (ValueError, AttributeError, RecursionError) as exc:
        raise InvalidCredential(f"not a compact JWS: {type(exc).__name__}") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise InvalidCredential("not a compact JWS: header and payload must be JSON objects")
    if header.get("alg") != "EdDSA":
        raise InvalidCredential("only EdDSA (Ed25519) signatures are accepted")
    jwk = next((k for k in jwks.get("keys", []) if k.get("kid") == header.get("kid")), None)
    if jwk is None:
        raise InvalidCredential(f"unknown key id {header.get('kid')!r}")
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    try:
        public.verify(signature, f"{header_b64}.{payload_b64}".encode("ascii"))
    except InvalidSignature:
        raise InvalidCredential("signature does not match") from None
    return header, payload


def identity_hash(email: str, salt: str) -> str:
    return "sha256$" + hashlib.sha256((email.strip().lower() + salt).encode()).hexdigest()


def open_badge(data: dict, number: str, verification_url: str, issued_at: datetime,
               issuer: dict) -> dict:
    """An OpenBadgeCredential (Open Badges 3.0 shape); the participant appears only as a salted
    hash of the e-mail address, never in clear."""
    return {
        "@context": ["https://www.w3.org/ns/credentials/v2",
                     "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"],
        "id": verification_url,
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": f"{data['role_name']} – {data['programme_name']}",
        "issuer": {"id": issuer["url"], "type": ["Profile"], "name": issuer["name"]},
        "validFrom": issued_at.isoformat(),
        "credentialSubject": {
            "type": ["AchievementSubject"],
            "identifier": [{"type": "IdentityObject", "identityType": "emailAddress",
                            "hashed": True, "identityHash": data["email_hash"],
                            "salt": data["salt"]}],
            "achievement": {
                "id": f"{issuer['url']}/achievements/{data['programme_code']}",
                "type": ["Achievement"],
                "name": f"{data['role_name']} ({data['programme_name']})",
                "description": f"Qualifizierung „{data['course_title']}“ bei "
                               f"{data['provider_name']} in {data['location']}.",
                "criteria": {"narrative": "Teilnahme an allen Modulen: " + "; ".join(
                    f"{m['number']}. {m['title']} ({m['date']})" for m in data["modules"])},
            },
        },
        "evidence": [{"type": ["Evidence"], "name": "Zertifikatsnummer", "description": number}],
    }
