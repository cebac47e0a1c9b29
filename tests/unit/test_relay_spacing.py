"""The relay's cadence, on a clock of the test's own (no broker, no database, no timing): under
a steady stream of commits its batches begin ``spacing_s`` apart; woken after a quiet spell it
waits only the linger."""

import pytest

from services.common import messaging
from services.common.messaging import OutboxRelay


class Clock:
    def __init__(self):
        self.now = 1000.0
        self.slept = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


class Wake:
    """Stands in for the relay's threading.Event: ``commits`` says what each wait sees."""

    def __init__(self, clock, quiet_for):
        self.clock, self.quiet_for, self.flag = clock, quiet_for, False

    def set(self):
        self.flag = True

    def clear(self):
        self.flag = False

    def wait(self, timeout):
        if not self.flag:  # nothing committed since the batch: the next commit comes later
            self.clock.now += self.quiet_for
        return True


def relay_on(clock, monkeypatch, batches, busy_s, spacing_s=0.1, quiet_for=0.0,
             commit_during_batch=True):
    monkeypatch.setattr(messaging.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(messaging.time, "sleep", clock.sleep)
    relay = OutboxRelay(None, "enrolment", {
        "AMQP_URI": "pyamqp://guest:guest@127.0.0.1:1//",
        "OUTBOX": {"linger_s": 0.02, "spacing_s": spacing_s}})
    relay.declare_topology = lambda: None
    relay._wake = Wake(clock, quiet_for)
    began = []

    def publish_pending():
        began.append(clock.now)
        clock.now += busy_s  # reading, publishing and marking the batch
        if commit_during_batch:
            relay.wake()
        if len(began) == batches:
            relay.stop()
        return 1

    relay.publish_pending = publish_pending
    relay.run()
    return began


def test_under_a_stream_of_commits_batches_begin_the_spacing_apart(monkeypatch):
    clock = Clock()
    began = relay_on(clock, monkeypatch, batches=6, busy_s=0.03)
    gaps = [later - earlier for earlier, later in zip(began, began[1:])]
    assert gaps == pytest.approx([0.1] * 5)
    # Each pause is what the spacing leaves after the batch's own 30 ms, never the bare linger.
    assert clock.slept == pytest.approx([0.07] * 5)


def test_a_batch_slower_than_the_spacing_is_followed_after_the_linger(monkeypatch):
    clock = Clock()
    began = relay_on(clock, monkeypatch, batches=4, busy_s=0.25)
    assert clock.slept == pytest.approx([0.02] * 3)
    assert [b - a for a, b in zip(began, began[1:])] == pytest.approx([0.27] * 3)


def test_a_quiet_relay_waits_only_the_linger(monkeypatch):
    clock = Clock()
    relay_on(clock, monkeypatch, batches=4, busy_s=0.01, quiet_for=5.0,
             commit_during_batch=False)
    assert clock.slept == pytest.approx([0.02] * 3)


def test_spacing_zero_is_the_linger_alone(monkeypatch):
    clock = Clock()
    began = relay_on(clock, monkeypatch, batches=4, busy_s=0.03, spacing_s=0)
    assert clock.slept == pytest.approx([0.02] * 3)
    assert [b - a for a, b in zip(began, began[1:])] == pytest.approx([0.05] * 3)
