"""The baseline: nameko services that do nothing but pass messages on.

``Noop.call`` is an RPC round trip with no work; ``start_chain`` starts an event chain of the
same length as an enrolment's (RPC, then enrolment_created to funding, then funding_granted to
the services that react), so the chain's rate is what the broker and nameko alone allow.
"""
from __future__ import annotations

import time

from nameko.events import EventDispatcher, event_handler
from nameko.rpc import rpc

CHAIN_DONE: list[float] = []


class Noop:
    name = "noop"
    dispatch = EventDispatcher()

    @rpc
    def call(self, payload):
        return payload

    @rpc
    def start_chain(self, n):
        self.dispatch("hop1", {"n": n})


class NoopHop:
    name = "noop_hop"
    dispatch = EventDispatcher()

    @event_handler("noop", "hop1")
    def hop1(self, payload):
        self.dispatch("hop2", payload)


class NoopEnd:
    name = "noop_end"

    @event_handler("noop_hop", "hop2")
    def hop2(self, payload):
        CHAIN_DONE.append(time.perf_counter())


SERVICES = (Noop, NoopHop, NoopEnd)


def chain_rate(cluster, chains: int, timeout_s: float = 300) -> float:
    """Chains per second: ``chains`` started at once, timed until the last one ends."""
    import eventlet

    CHAIN_DONE.clear()
    started = time.perf_counter()
    for i in range(chains):
        cluster.noop.start_chain.call_async(i)
    while len(CHAIN_DONE) < chains and time.perf_counter() - started < timeout_s:
        eventlet.sleep(0.01)
    return len(CHAIN_DONE) / (max(CHAIN_DONE) - started)


def serve(config_path: str):
    """Run the no-op services in this process until SIGTERM, as a service process runs."""
    import signal

    import eventlet
    import yaml
    from nameko.runners import ServiceRunner

    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    runner = ServiceRunner(config)
    for cls in SERVICES:
        runner.add_service(cls)
    signal.signal(signal.SIGTERM, lambda *_: eventlet.spawn_n(runner.stop))
    runner.start()
    runner.wait()


if __name__ == "__main__":
    import sys
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import eventlet
    eventlet.monkey_patch()
    serve(sys.argv[1])
