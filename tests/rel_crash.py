"""The kill -9 crash loop: a hub, a writing user and a full peer as processes, killed at random moments.

``run_crash_loop(base, kills)`` starts the three nodes (``tests/rel_node.py``), then ``kills`` times
waits a random moment, kills one of them with SIGKILL (while the user writes and replication runs),
restarts it and waits until it is back. Then the user stops writing, the mesh must converge, every node
is stopped and the stores are checked in this process:

* every transaction the user reported committed is in its store (``lost_docs`` counts what is not);
* no transaction is partial: each batch has all its documents at one version (``partial_batches``);
* the hub's and the peer's ``master`` equal the user's ``user/public`` (``converged``);
* restarted replications resumed from a checkpoint above 0 (``resumed_from_checkpoint``).

Used by tests/test_reliability_crash.py (a few kills) and scripts/benchmarks/reliability.py (>= 50).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from ports import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)
ROLES = ("hub", "user", "peer")


def child_env() -> dict:
    """The environment of a node process: this checkout's code first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = CHECKOUT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def read_events(directory: str) -> list[str]:
    try:
        with open(os.path.join(directory, "events")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def wait_until(check: Any, timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll ``check()`` until truthy, raising after ``timeout`` seconds (a bounded loop, no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


@dataclass
class CrashReport:
    crash_runs: int = 0
    kills: dict = field(default_factory=lambda: {r: 0 for r in ROLES})
    committed_batches: int = 0
    committed_docs: int = 0
    lost_docs: int = 0
    partial_batches: int = 0
    converged: bool = False
    resumed_from_checkpoint: int = 0
    docs: dict = field(default_factory=dict)
    seconds: float = 0.0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.converged and not self.lost_docs and not self.partial_batches and not self.problems)


class Mesh:
    """The three node processes of one crash loop."""

    def __init__(self, base: str, batch: int = 5, interval: float = 0.01) -> None:
        from shiftpeer.identity import NodeKey

        self.base = base
        self.port = free_port()
        self.batch, self.interval = batch, interval
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Any] = {}
        for role in ROLES:
            d = self.dir(role)
            os.makedirs(os.path.join(d, "key"), exist_ok=True)
            NodeKey.generate().save(os.path.join(d, "key"))

    def dir(self, role: str) -> str:
        return os.path.join(self.base, role)

    def start(self, role: str, timeout: float = 20.0, extra: tuple[str, ...] = ()) -> None:
        """Start ``role``'s process (``extra``: more rel_node.py arguments) and wait until it is ready."""
        before = read_events(self.dir(role)).count("ready")
        log = self.logs.get(role) or open(os.path.join(self.dir(role), "stderr.log"), "ab")
        self.logs[role] = log
        cmd = [sys.executable, os.path.join(HERE, "rel_node.py"), role, self.dir(role), "--port", str(self.port),
               "--hub-port", str(self.port), "--batch", str(self.batch), "--interval", str(self.interval), *extra]
        self.procs[role] = subprocess.Popen(cmd, env=child_env(), stdout=log, stderr=log, cwd=self.base)

        def ready() -> bool:
            if self.procs[role].poll() is not None:
                raise AssertionError(f"{role} exited with {self.procs[role].returncode}: {self.stderr(role)}")
            return read_events(self.dir(role)).count("ready") > before

        wait_until(ready, timeout, f"{role} to start")

    def stderr(self, role: str) -> str:
        with open(os.path.join(self.dir(role), "stderr.log"), "rb") as f:
            return f.read()[-3000:].decode(errors="replace")

    def kill(self, role: str) -> None:
        proc = self.procs[role]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def state(self, role: str) -> dict:
        for line in reversed(read_events(self.dir(role))):
            if line.startswith("state "):
                return json.loads(line[6:])
        return {}

    def converged(self) -> bool:
        user = self.state("user").get("user/public")
        hub = self.state("hub").get("master")
        peer = self.state("peer").get("master")
        return bool(user) and user[0] > 0 and user[1:] == (hub or [None])[1:] == (peer or [None])[1:]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for role, proc in self.procs.items():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for log in self.logs.values():
            log.close()


def check_stores(mesh: Mesh, report: CrashReport) -> None:
    """Open the three stores here (every node stopped) and compare them with what the user committed."""
    from shiftpeer.store import Store

    committed: dict[str, tuple[int, int]] = {}
    for line in read_events(mesh.dir("user")):
        if line.startswith("commit "):
            _, bid, v, n = line.split()
            committed[bid] = (max(int(v), committed.get(bid, (0, 0))[0]), int(n))
    report.committed_batches = len(committed)
    report.committed_docs = sum(n for _, n in committed.values())
    snaps = {}
    for role, name in (("user", "user/public"), ("hub", "master"), ("peer", "master")):
        store = Store(os.path.join(mesh.dir(role), "store"), sync=False)
        try:
            db = store.database(name)
            docs = {d.id: d for d in db.docs_since(0)}
            snaps[role] = {i: (d.rev, d.deleted, tuple(d.conflicts)) for i, d in docs.items()}
            report.docs[role] = len(docs)
            if db.doc_count() != sum(1 for d in docs.values() if not d.deleted):
                report.problems.append(f"{role}: doc_count {db.doc_count()} disagrees with its changes feed")
            if len(db.changes(0)) != len(docs) or db.update_seq() < len(docs):
                report.problems.append(f"{role}: changes feed and update_seq disagree with the documents")
            batches: dict[str, list] = {}
            for d in docs.values():
                batches.setdefault(d.body["batch"], []).append(d.body)
            for bid, bodies in batches.items():
                if len(bodies) != bodies[0]["n"] or len({b["v"] for b in bodies}) != 1:
                    report.partial_batches += 1
                    report.problems.append(f"{role}: batch {bid} is partial: {[b['v'] for b in bodies]}")
            if role == "user":
                for bid, (v, n) in committed.items():
                    got = batches.get(bid, [])
                    report.lost_docs += sum(1 for j in range(n) if f"{bid}-{j}" not in docs)
                    if got and got[0]["v"] < v:
                        report.lost_docs += n
                        report.problems.append(f"user: batch {bid} is at v{got[0]['v']}, committed v{v}")
        finally:
            store.close()
    report.converged = snaps["user"] == snaps["hub"] == snaps["peer"]
    for role in ("hub", "peer"):
        missing = len(set(snaps["user"]) - set(snaps[role]))
        report.lost_docs += missing
        if snaps[role] != snaps["user"]:
            report.problems.append(f"{role}: differs from the user's database ({missing} documents missing)")


def run_crash_loop(base: str, kills: int, *, seed: int | None = None, min_wait: float = 0.1,
                   max_wait: float = 0.8, converge_timeout: float = 60.0, victims: tuple = ROLES,
                   progress: Any = None) -> CrashReport:
    """Start the mesh, SIGKILL a random node ``kills`` times at random moments, converge and check."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    report = CrashReport()
    mesh = Mesh(base)
    try:
        for role in ROLES:
            mesh.start(role)
        order = rng.sample(list(victims), len(victims))   # every role dies at least once when kills allow
        for i in range(kills):
            time.sleep(rng.uniform(min_wait, max_wait))   # the random moment of the crash
            victim = order[i] if i < len(order) else rng.choice(victims)
            mesh.kill(victim)
            report.kills[victim] += 1
            report.crash_runs += 1
            mesh.start(victim)
            if progress:
                progress(i + 1, victim)
        os.kill(mesh.procs["user"].pid, signal.SIGUSR1)
        wait_until(lambda: "stopped-writing" in read_events(mesh.dir("user")), 10, "the user to stop writing")
        wait_until(mesh.converged, converge_timeout, "the three databases to converge")
    except AssertionError as e:
        report.problems.append(str(e))
    finally:
        mesh.stop_all()
    for role in ("hub", "peer"):
        report.resumed_from_checkpoint += sum(
            1 for line in read_events(mesh.dir(role)) if line.startswith("resume ") and int(line.split()[2]) > 0)
    check_stores(mesh, report)
    report.seconds = round(time.monotonic() - t0, 1)
    return report
