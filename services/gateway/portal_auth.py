"""The portal's cookies and form tokens: signed with a key derived from the service key, so
that the gateway keeps nothing and any gateway instance can check them.

* The session cookie carries the session id (a secret the enrolment service knows only as a
  hash) and a MAC over it: a cookie that was not made here is refused without a call.
* Every form carries a CSRF token bound to the session (signed in) or to a random per-browser
  value in its own cookie (the sign-in forms, before there is a session).
* Data a page hands to its next step (the rows of an upload's preview) is signed too, so the
  confirmation stores exactly what the preview showed.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

SESSION_COOKIE = "lotsen_sitzung"
FORM_COOKIE = "lotsen_formular"


def portal_key(service_key: bytes) -> bytes:
    """A key of its own for the portal (never the service key itself)."""
    return hmac.new(service_key, b"lotsen portal cookies v1", hashlib.sha256).digest()


def _mac(key: bytes, purpose: str, value: str) -> str:
    digest = hmac.new(key, f"{purpose}|{value}".encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _valid(key: bytes, purpose: str, value: str, mac: str) -> bool:
    return hmac.compare_digest(_mac(key, purpose, value).encode(), mac.encode("utf-8", "replace"))


def session_cookie(key: bytes, session_id: str) -> str:
    return f"{session_id}.{_mac(key, 'session', session_id)}"


def session_id_from(key: bytes, cookie: str | None) -> str | None:
    """The session id in a cookie made here, or None."""
    if not cookie or len(cookie) > 200:
        return None
    session_id, _, mac = cookie.rpartition(".")
    if not session_id or not _valid(key, "session", session_id, mac):
        return None
    return session_id


def new_form_secret() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(key: bytes, bound_to: str) -> str:
    """The token every form of this session (or this browser, before sign-in) carries."""
    return _mac(key, "csrf", bound_to)


def csrf_valid(key: bytes, bound_to: str | None, token: str | None) -> bool:
    return bool(bound_to and token) and _valid(key, "csrf", bound_to, token)


def sign_data(key: bytes, bound_to: str, data) -> str:
    """JSON data for a hidden field, signed and bound to the session."""
    text = base64.urlsafe_b64encode(json.dumps(data, ensure_ascii=False).encode()).decode()
    return f"{text}.{_mac(key, 'data|' + bound_to, text)}"


def signed_data(key: bytes, bound_to: str, value: str | None):
    """The data of ``sign_data``, or None if it was not made here for this session."""
    text, _, mac = (value or "").rpartition(".")
    if not text or not _valid(key, "data|" + bound_to, text, mac):
        return None
    return json.loads(base64.urlsafe_b64decode(text.encode()))
