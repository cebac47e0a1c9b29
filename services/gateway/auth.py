"""Which body an API key belongs to, remembered for a short while.

Without it every request costs a second RPC round trip (and a database query in the
enrolment service) before the real call. The price: a key that was rotated keeps working in
this gateway process for up to ``GATEWAY.auth_cache_s`` seconds. Unknown keys are never
remembered, so a new key works at once and a wrong one is refused every time."""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Callable

from nameko.extensions import DependencyProvider

from services.common import config as cfg


class KeyCache:
    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, dict]] = OrderedDict()

    def body_for(self, api_key: str, authenticate: Callable[[str], dict]) -> dict:
        """The body for ``api_key``: remembered, or asked of ``authenticate`` (which raises for
        an unknown key)."""
        body = self.known(api_key)
        if body is None:
            body = authenticate(api_key)
            self.remember(api_key, body)
        return body

    @staticmethod
    def _digest(api_key: str) -> str:
        return hashlib.sha256(api_key.encode()).hexdigest()  # the key itself is not kept

    def known(self, api_key: str) -> dict | None:
        """The remembered body for ``api_key``, or None."""
        digest = self._digest(api_key)
        remembered = self._entries.get(digest)
        if remembered is not None and remembered[0] > self.clock():
            self._entries.move_to_end(digest)
            return remembered[1]
        return None

    def remember(self, api_key: str, body: dict):
        """Remember a key that a service has just accepted."""
        if self.ttl_s > 0:
            digest = self._digest(api_key)
            self._entries[digest] = (self.clock() + self.ttl_s, body)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


class RememberedKeys(DependencyProvider):
    """One key cache per gateway process, shared by its workers."""

    def setup(self):
        settings = self.container.config.get("GATEWAY") or {}
        self.cache = KeyCache(float(cfg.setting(settings, "auth_cache_s", 30)),
                              int(cfg.setting(settings, "auth_cache_entries", 50_000)))

    def get_dependency(self, worker_ctx):
        return self.cache
