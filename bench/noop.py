"""The baseline: nameko services that do nothing but pass messages on.

``Noop.call`` is an RPC round trip with no work; ``start_chain`` starts an event chain of the
same length as an enrolment's (RPC, then enrolment_created to funding, then funding_granted to
the services that react), so the chain's rate is what the broker and nameko alone allow.

Run as its own process, as the real services are: ``python bench/noop.py CONFIG [Noop ...]``.
"""
from __future__ import annotations

import time

from nameko.events import EventDispatcher, event_handler
from nameko.rpc import rpc


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
    ended = 0
    last = 0.0

    @event_handler("noop_hop", "hop2")
    def hop2(self, payload):
        NoopEnd.ended += 1
        NoopEnd.last = time.time()

    @rpc
    def tally(self):
        """How many chains ended, and when the last one did (wall clock)."""
        return {"ended": NoopEnd.ended, "last": NoopEnd.last}


SERVICES = (Noop, NoopHop, NoopEnd)


def chain_rate(config: dict, chains: int, timeout_s: float = 600) -> float:
    """Chains per second: ``chains`` started at once, timed until the last one ends (the
    no-op services must be running, e.g. each in its own process)."""
    from nameko.standalone.rpc import ClusterRpcProxy

    with ClusterRpcProxy(config) as cluster:
        before = cluster.noop_end.tally()["ended"]
        started = time.time()
        for i in range(chains):
            cluster.noop.start_chain.call_async(i)
        deadline = time.monotonic() + timeout_s
        while True:
            tally = cluster.noop_end.tally()
            if tally["ended"] - before >= chains or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    return (tally["ended"] - before) / (tally["last"] - started)


def serve(config_path: str, names: list[str]):
    """Run the named no-op services (all by default) in this process until SIGTERM."""
    import signal

    import eventlet
    import yaml
    from nameko.runners import ServiceRunner

    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    runner = ServiceRunner(config)
    for cls in SERVICES:
        if not names or cls.__name__ in names:
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
    serve(sys.argv[1], sys.argv[2:])
