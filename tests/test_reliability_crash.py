"""kill -9 at random moments: a hub, a writing user and a full peer as real processes on real LMDB and TLS."""

from __future__ import annotations

import os
import signal

from rel_crash import Mesh, check_stores, read_events, run_crash_loop, wait_until, CrashReport


def test_kill_9_during_writes_and_replication_loses_nothing(tmp_path):
    """After seven SIGKILLs of hub, user and peer while the user writes and replication runs, every committed
    transaction is there whole, replication resumed from checkpoints, and the three databases are identical."""
    report = run_crash_loop(str(tmp_path), 7, seed=7)
    assert report.problems == []
    assert report.crash_runs == 7 and all(report.kills.values()), report.kills
    assert report.committed_docs > 0
    assert report.lost_docs == 0 and report.partial_batches == 0
    assert report.converged
    assert report.resumed_from_checkpoint >= 1


def test_hub_restart_while_clients_are_live(tmp_path):
    """When the hub stops and comes back while the user and the peer are connected, they reconnect on their
    own, resume from their checkpoints and converge with it."""
    mesh = Mesh(str(tmp_path))
    report = CrashReport()
    try:
        for role in ("hub", "user", "peer"):
            mesh.start(role)
        wait_until(lambda: (mesh.state("peer").get("master") or [0])[0] > 20, 20, "the peer to pull some docs")
        mesh.procs["hub"].terminate()
        mesh.procs["hub"].wait(timeout=15)
        mesh.start("hub")
        wait_until(lambda: (mesh.state("hub").get("master") or [0])[0] > 0, 20, "the hub to serve again")
        mesh.procs["user"].send_signal(signal.SIGUSR1)
        wait_until(lambda: "stopped-writing" in read_events(mesh.dir("user")), 10, "the user to stop writing")
        wait_until(mesh.converged, 30, "convergence after the hub restart")
    finally:
        mesh.stop_all()
    resumes = [line for line in read_events(mesh.dir("hub")) + read_events(mesh.dir("peer"))
               if line.startswith("resume ") and int(line.split()[2]) > 0]
    assert resumes, "nobody resumed from a checkpoint"
    check_stores(mesh, report)
    assert report.problems == [] and report.converged and report.lost_docs == 0
    assert os.path.exists(os.path.join(mesh.dir("hub"), "store"))
