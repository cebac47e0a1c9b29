"""Taking turns per key, in the order of arrival, among a process's green threads.

A consumer's workers start in the order the broker delivered their messages, but when they
then wait for the same database row lock, PostgreSQL grants it in no particular order. Where
the order matters (funding: a body's first enrolment takes its guarantee), the workers take
turns here first: the first to arrive goes first. No nameko here.
"""
from __future__ import annotations

from collections import deque
from contextlib import contextmanager

import eventlet.event


class Turns:
    def __init__(self):
        self._queues: dict[object, deque] = {}

    @contextmanager
    def turn(self, key):
        queue = self._queues.setdefault(key, deque())
        mine = eventlet.event.Event()
        queue.append(mine)
        if queue[0] is not mine:
            mine.wait()
        try:
            yield
        finally:
            queue.popleft()
            if queue:
                queue[0].send()
            else:
                del self._queues[key]

    def waiting(self, key) -> int:
        return len(self._queues.get(key, ()))
