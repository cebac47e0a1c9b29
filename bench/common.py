"""What every benchmark here shares: which checkout it measures, a fresh broker vhost and fresh
databases, service processes started as an operator starts them, and CPU read from /proc.

A benchmark measures the code of one checkout (``--checkout DIR``, by default this one): its
``services`` package is imported and its services are run with its own virtualenv, so the same
script measures an older commit (a ``git worktree``) and this one in the same run.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
API = "http://guest:guest@127.0.0.1:15672/api"
REGISTER = HERE.parent / "shared" / "data" / "destatis-gv-auszug.csv"


def checkout_from_argv(argv: list[str] | None = None) -> Path:
    """The checkout named by ``--checkout DIR`` (read before anything imports ``services``),
    put first on ``sys.path``."""
    argv = sys.argv if argv is None else argv
    root = HERE
    for index, arg in enumerate(argv):
        if arg == "--checkout" and index + 1 < len(argv):
            root = Path(argv[index + 1]).resolve()
        elif arg.startswith("--checkout="):
            root = Path(arg.split("=", 1)[1]).resolve()
    sys.path.insert(0, str(root))
    return root


def python_of(root: Path) -> str:
    """The interpreter of a checkout's own virtualenv (``make install`` makes it)."""
    candidate = root / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


ORDERS = ("ab", "abba")
PLACE_VARIABLE = "LOTSEN_BENCH_PLACE"  # set by each_checkout for each run of an A B B A


def each_checkout(script: str, compare: str | None, root: Path, options, order: str = "ab"
                  ) -> list:
    """Run ``script`` once per checkout (``compare`` first, if given, then ``root``), each in a
    process of its own with that checkout's interpreter, so it imports that checkout's
    services; returns what each wrote with ``--json``. ``options``: the script's options, or a
    function of the checkout that gives them.

    ``order="abba"`` measures ``compare``, ``root``, ``root``, ``compare``: each side gets a
    first and a second place, and each is measured twice, so the spread between two runs of
    the same commit is in the table next to the difference between the commits. (Measured
    twice back to back, one commit once came out a quarter dearer in CPU the second time;
    bench/results.md, 2026-12-07 afternoon.) Each run is then labelled with its place."""
    import json
    import tempfile

    if order not in ORDERS:
        raise ValueError(f"order is one of {ORDERS}, not {order!r}")
    sides = ([compare] if compare else []) + [str(root)]
    if order == "abba" and compare:
        sides = sides + sides[::-1]
    results = []
    for place, checkout in enumerate(sides, start=1):
        arguments = options(checkout) if callable(options) else options
        env = dict(os.environ, **({PLACE_VARIABLE: str(place)} if len(sides) > 2 else {}))
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run([python_of(Path(checkout)), script, "--checkout", checkout,
                            *arguments, "--json", out.name], check=True, env=env)
            result = json.loads(Path(out.name).read_text())
        if len(sides) > 2:
            result["checkout"] = f"{result['checkout']} (run {place})"
        results.append(result)
    return results


def run_suffix() -> str:
    """In an A B B A comparison, this run's place (``-run4``); else nothing. Files named after
    a run (py-spy profiles) carry it, so a side's second run does not replace its first's."""
    place = os.environ.get(PLACE_VARIABLE)
    return f"-run{place}" if place else ""


def run_name(root: Path) -> str:
    return root.name + run_suffix()


def append_results(text: str):
    print(text)
    with open(HERE / "bench" / "results.md", "a", encoding="utf-8") as f:
        f.write(text + "\n\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def describe(root: Path) -> str:
    """The commit a checkout is at, for the results."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+changes" if dirty else "")
    except Exception:
        return "?"


class Vhost:
    """A RabbitMQ virtual host of its own, deleted afterwards."""

    def __init__(self, prefix: str):
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.uri = f"pyamqp://guest:guest@127.0.0.1:5672/{self.name}"

    def __enter__(self):
        import requests
        requests.put(f"{API}/vhosts/{self.name}", timeout=10).raise_for_status()
        requests.put(f"{API}/permissions/{self.name}/guest", timeout=10,
                     json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        return self

    def __exit__(self, *exc):
        import requests
        requests.delete(f"{API}/vhosts/{self.name}", timeout=30)

    def queues(self) -> list[str]:
        import requests
        return [q["name"] for q in requests.get(f"{API}/queues/{self.name}", timeout=10).json()]

    def messages_in(self, which) -> int:
        """Messages in the queues whose names ``which`` accepts (as the management API last
        counted them)."""
        import requests
        return sum(q.get("messages", 0) for q in
                   requests.get(f"{API}/queues/{self.name}", timeout=10).json()
                   if which(q["name"]))


class Databases:
    """One fresh PostgreSQL database per name, dropped afterwards."""

    def __init__(self, prefix: str, services):
        run = uuid.uuid4().hex[:8]
        self.names = {s: f"{prefix}_{run}_{s}" for s in services}
        self.urls = {s: f"{PG}/{n}" for s, n in self.names.items()}

    def __enter__(self):
        from sqlalchemy import create_engine, text
        self.admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            for name in self.names.values():
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        return self

    def __exit__(self, *exc):
        from sqlalchemy import text
        with self.admin.connect() as conn:
            for name in self.names.values():
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": name})
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        self.admin.dispose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines()
                if line.startswith("VmHWM:")) / 1024


def pids_named(*names: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm in names:
                found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU used between ``start`` and ``stop`` by named groups of processes: a service, the
    bench's own process, every PostgreSQL process, the RabbitMQ node."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups
        self.groups.setdefault("postgresql", pids_named("postgres"))
        self.groups.setdefault("rabbitmq", pids_named("beam.smp"))
        self.groups.setdefault("bench client", [os.getpid()])

    def _read(self) -> dict[str, float]:
        totals = {}
        for group, pids in self.groups.items():
            total = 0.0
            for pid in pids:
                try:
                    total += cpu_seconds(pid)
                except (OSError, IndexError):
                    pass  # a PostgreSQL backend that ended
            totals[group] = total
        return totals

    def start(self):
        # PostgreSQL starts a backend per new connection: look again for new ones.
        self.groups["postgresql"] = pids_named("postgres")
        self._start = self._read()
        return self

    def stop(self) -> dict[str, float]:
        self.groups["postgresql"] = sorted(set(self.groups["postgresql"])
                                           | set(pids_named("postgres")))
        end = self._read()
        return {g: end[g] - self._start.get(g, 0.0) for g in end}


class ServiceProcess:
    """``python -m services.cli --config FILE run --service NAME`` from a checkout, as an
    operator runs one service per process; its log goes to a file."""

    def __init__(self, root: Path, config_path: Path, service: str, log_dir: Path,
                 module_args: list[str] | None = None):
        self.root, self.config_path, self.service = root, config_path, service
        args = module_args or ["-m", "services.cli", "--config", str(config_path), "run",
                               "--service", service]
        self.log = open(log_dir / f"{service}.log", "w")
        env = dict(os.environ, PYTHONPATH=str(root))
        self.process = subprocess.Popen([python_of(root), *args], cwd=root, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def wait(predicate, what: str, timeout_s: float = 120, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f}s for {what}")
        time.sleep(interval_s)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def machine_line() -> str:
    import platform
    from datetime import datetime, timezone
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
            f"{platform.machine()}, Python {platform.python_version()}, "
            f"{os.cpu_count()} cores")
