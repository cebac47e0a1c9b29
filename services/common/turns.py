"""Taking turns per key, in the order of arrival, among a process's green threads, and doing
the work that queued up meanwhile in one go.

A consumer's workers start in the order the broker delivered their messages, but when they
then wait for the same database row lock, PostgreSQL grants it in no particular order. Where
the order matters (funding: a body's first enrolment takes its guarantee), the workers take
turns here first: the first to arrive goes first.

``GroupCommit`` goes further: whoever's turn it is handles every item waiting for that key (in
order of arrival, up to a limit) in one unit of work, e.g. one database transaction with one
lock and one COMMIT, and each worker gets its own item's result. If the unit of work fails,
each item is tried again alone, so one bad item fails only itself. No nameko here.
"""
from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from typing import Callable

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


class _Slot:
    __slots__ = ("item", "done", "lead")

    def __init__(self, item):
        self.item = item
        self.done = eventlet.event.Event()  # sends (result, exception)
        self.lead = eventlet.event.Event()  # sent when it is this slot's turn to lead


class GroupCommit:
    """``run(key, item, handle_all)`` returns ``handle_all([... item ...])``'s result for
    ``item``; ``handle_all`` gets the items in order of arrival and returns their results in
    the same order."""

    def __init__(self, max_items: int = 100):
        self.max_items = max_items
        self._queues: dict[object, deque] = {}
        self._busy: set = set()
        self.batches = 0  # units of work run (for tests and metrics)

    def run(self, key, item, handle_all: Callable[[list], list]):
        queue = self._queues.setdefault(key, deque())
        slot = _Slot(item)
        queue.append(slot)
        if key in self._busy:
            slot.lead.wait()  # someone else leads now; it may handle this slot too
            if slot.done.ready():
                return self._outcome(slot)
        self._busy.add(key)
        try:
            batch = [queue.popleft() for _ in range(min(self.max_items, len(queue)))]
            self._handle(batch, handle_all)
        finally:
            self._pass_on(key)
        return self._outcome(slot)

    def _pass_on(self, key):
        queue = self._queues.get(key)
        if queue:
            if not queue[0].lead.ready():
                queue[0].lead.send()  # the next in line leads
        else:
            self._busy.discard(key)
            self._queues.pop(key, None)

    def _handle(self, batch: list[_Slot], handle_all):
        self.batches += 1
        try:
            results = handle_all([s.item for s in batch])
        except Exception as exc:
            if len(batch) == 1:
                self._finish(batch[0], None, exc)
                return
            for slot in batch:  # alone, so that a bad item fails only itself
                self._handle([slot], handle_all)
            return
        except BaseException:  # the leading worker is being killed: the others try again
            for slot in batch:
                self._finish(slot, None, RuntimeError("the worker handling this item stopped"))
            raise
        for slot, result in zip(batch, results):
            self._finish(slot, result, None)

    @staticmethod
    def _finish(slot: _Slot, result, exc):
        if not slot.done.ready():
            slot.done.send((result, exc))
        if not slot.lead.ready():
            slot.lead.send()  # wakes its worker, which finds its outcome

    @staticmethod
    def _outcome(slot):
        result, exc = slot.done.wait()
        if exc is not None:
            raise exc
        return result
