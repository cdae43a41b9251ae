"""Crash safety: a writer killed with SIGKILL at random moments never leaves a partial batch."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from shiftpeer.store import Store

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store_crash_child.py")
BATCH = 40
ROUNDS = 24


def read_lines_until(proc, lines: list[str], buf: bytearray, want: int, deadline: float) -> None:
    """Collect the child's output lines until there are `want` of them, or fail at the deadline."""
    fd = proc.stdout.fileno()
    while len(lines) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"child produced {len(lines)} lines, wanted {want}, before the deadline")
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"child exited early ({proc.wait()}) after {lines}")
        buf.extend(chunk)
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            lines.append(line.decode())


def check(path: str, committed: set[int]) -> set[int]:
    """Every committed batch is whole; any batch present is whole. Returns the batches present."""
    store = Store(path, map_size=1 << 30)
    try:
        db = store.database("crash")
        counts: dict[int, int] = {}
        for ch in db.changes():
            b, _, _ = ch.id.partition("-")
            counts[int(b)] = counts.get(int(b), 0) + 1
        partial = {b: n for b, n in counts.items() if n != BATCH}
        assert not partial, f"partial batches after SIGKILL: {partial}"
        missing = committed - set(counts)
        assert not missing, f"committed batches lost: {sorted(missing)}"
        assert db.update_seq() == sum(counts.values()) == db.doc_count()
        for b in committed:
            assert db.query("href", f"http://crash.example/{b}", limit=BATCH + 1)[0].__len__() == BATCH
        return set(counts)
    finally:
        store.close()


@pytest.mark.slow
def test_sigkill_never_leaves_partial_batch(tmp_path):
    """When a writing process is SIGKILLed at random moments (24 times), on reopen every batch it reported
    committed is whole and no batch is partly there."""
    path = str(tmp_path / "store")
    rng = random.Random()
    committed: set[int] = set()
    for rnd in range(ROUNDS):
        first = rnd * 10_000
        proc = subprocess.Popen([sys.executable, CHILD, path, str(first), str(BATCH)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            lines: list[str] = []
            buf = bytearray()
            deadline = time.monotonic() + 30
            read_lines_until(proc, lines, buf, 1 + rng.randint(1, 6), deadline)
            # kill at a random point of a later batch: spin (no sleep) for a random sub-batch time
            spin_until = time.monotonic() + rng.random() * 0.01
            while time.monotonic() < spin_until:
                pass
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            # lines printed before death are commits; drain whatever was already written
            try:
                read_lines_until(proc, lines, buf, 10**9, time.monotonic() + 5)
            except AssertionError:
                pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
        assert lines[0] == "ready"
        committed.update(int(x) for x in lines[1:] if x)
        present = check(path, committed)
        assert committed <= present
