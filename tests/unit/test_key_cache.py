"""The gateway's key cache: known keys are remembered for a while, unknown ones never."""
import pytest

from services.common.errors import AuthenticationFailed
from services.gateway.auth import KeyCache


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Enrolment:
    """Stands in for the enrolment service's authenticate RPC and counts the calls."""

    def __init__(self, keys):
        self.keys = keys
        self.calls = 0

    def __call__(self, key):
        self.calls += 1
        if key not in self.keys:
            raise AuthenticationFailed("unknown API key")
        return {"ags": self.keys[key]}


def test_a_known_key_is_asked_once_until_it_expires():
    clock, enrolment = Clock(), Enrolment({"lk_a": "08226098"})
    cache = KeyCache(30, 100, clock)
    assert cache.body_for("lk_a", enrolment) == {"ags": "08226098"}
    clock.now += 29
    assert cache.body_for("lk_a", enrolment) == {"ags": "08226098"}
    assert enrolment.calls == 1
    clock.now += 2
    enrolment.keys = {}  # rotated away in the meantime
    with pytest.raises(AuthenticationFailed):
        cache.body_for("lk_a", enrolment)
    assert enrolment.calls == 2


def test_unknown_keys_are_never_remembered():
    clock, enrolment = Clock(), Enrolment({})
    cache = KeyCache(30, 100, clock)
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            cache.body_for("lk_wrong", enrolment)
    assert enrolment.calls == 3
    enrolment.keys["lk_wrong"] = "08226098"  # registered now: works at once
    assert cache.body_for("lk_wrong", enrolment) == {"ags": "08226098"}


def test_zero_seconds_means_ask_every_time():
    enrolment = Enrolment({"lk_a": "08226098"})
    cache = KeyCache(0, 100, Clock())
    cache.body_for("lk_a", enrolment)
    cache.body_for("lk_a", enrolment)
    assert enrolment.calls == 2


def test_the_least_recently_used_key_makes_room():
    clock = Clock()
    enrolment = Enrolment({f"lk_{n}": f"0822{n:04d}" for n in range(3)})
    cache = KeyCache(30, 2, clock)
    cache.body_for("lk_0", enrolment)
    cache.body_for("lk_1", enrolment)
    cache.body_for("lk_0", enrolment)  # used again: lk_1 is now the oldest
    cache.body_for("lk_2", enrolment)
    assert enrolment.calls == 3
    cache.body_for("lk_0", enrolment)
    assert enrolment.calls == 3
    cache.body_for("lk_1", enrolment)
    assert enrolment.calls == 4
    assert len(cache._entries) == 2
