"""scripts/demo's driver end to end: four real twistd nodes walked through the flows, always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.test_cli import CHECKOUT, _env, sigint_as_in_a_terminal

DRIVER = os.path.join(CHECKOUT, "scripts", "demo.py")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_demo_walks_every_flow_and_passes_quickly(tmp_path):
    """The demo (hub, two users, a full peer) sees every step through and exits 0 in well under a minute,
    leaving no node running and, without --keep, no mesh directory."""
    mesh = tmp_path / "demo-mesh"
    pids = tmp_path / "pids"
    started = time.monotonic()
    out = subprocess.run([sys.executable, DRIVER, "--dir", str(mesh)], env={**_env(), "SHIFTPEER_DEMO_PIDS": str(pids)},
                         capture_output=True, text=True, timeout=90)
    took = time.monotonic() - started
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all steps saw what they should" in out.stdout and took < 60, f"took {took:.1f}s"
    for step in ("== 4. alice publishes the first one publicly", "fullpeer  still 1", "Nice note!"):
        assert step in out.stdout
    assert not mesh.exists() and pids.read_text() == ""


@pytest.mark.slow
def test_demo_interrupted_stops_every_node(tmp_path):
    """Ctrl-C while the nodes run stops all of them, exits 130 and keeps the --dir mesh for inspection."""
    mesh = tmp_path / "demo-mesh"
    pids_file = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, DRIVER, "--dir", str(mesh)],
                            env={**_env(), "SHIFTPEER_DEMO_PIDS": str(pids_file)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_in_a_terminal)
    try:
        deadline = time.monotonic() + 30
        pids: list[int] = []
        while len(pids) < 4:
            assert time.monotonic() < deadline and proc.poll() is None, "the demo did not start four nodes"
            text = pids_file.read_text() if pids_file.exists() else ""
            pids = [int(p) for p in text.split()] if text.endswith("\n") else []
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in err
    assert not any(_alive(pid) for pid in pids)
    assert (mesh / "hub.log").exists()
