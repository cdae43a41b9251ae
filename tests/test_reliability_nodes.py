"""kill -9 of real `twistd -n shiftpeer` nodes: a hub, a user publishing through the CLI, and a full peer."""

from __future__ import annotations

import json
import os
import signal
import socket

import pytest

from shiftpeer.cli import main
from tests.test_cli import run, start_node, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(capsys, node: str) -> dict:
    status, out, _ = run(capsys, "--data", node, "status", "--json")
    return json.loads(out) if status == 0 else {}


def _docs(capsys, node: str, db: str) -> int:
    return _status(capsys, node).get("databases", {}).get(db, {}).get("docs", -1)


def _connected(capsys, node: str) -> bool:
    peers = _status(capsys, node).get("peers") or [{}]
    return bool(peers[0].get("connected"))


@pytest.mark.slow
def test_kill_9_real_nodes_while_publishing(tmp_path, capsys):
    """When the hub, the user and the full peer are each SIGKILLed while the user publishes, every shift the
    user was told is published ends in its user/public, the hub's master and the full peer's feed."""
    from shiftpeer.identity.makecerts import main as make_certs

    certs = tmp_path / "certs"
    assert make_certs([str(certs), "--host", "127.0.0.1", "--new-ca"]) == 0
    hub, alice, peer = (str(tmp_path / n) for n in ("hub", "alice", "peer"))
    port = _free_port()
    assert main(["init", hub, "--user", "op", "--hub", "--tls-cert", str(certs / "127.0.0.1.pem"),
                 "--tls-key", str(certs / "127.0.0.1.key"), "--listen", f"tcp:{port}:interface=127.0.0.1"]) == 0
    for d, name, extra in ((alice, "alice", []), (peer, "fp", ["--full-peer"])):
        assert main(["init", d, "--user", name, "--connect", f"127.0.0.1:{port}", "--ca",
                     str(certs / "ca.pem"), *extra]) == 0
    capsys.readouterr()
    procs = {n: start_node(d, str(tmp_path / f"{n}.log")) for n, d in (("hub", hub), ("alice", alice),
                                                                         ("peer", peer))}
    dirs = {"hub": hub, "alice": alice, "peer": peer}
    published: list[str] = []
    try:
        wait_for(lambda: _connected(capsys, alice) and _connected(capsys, peer), timeout=30)
        assert run(capsys, "--data", alice, "register")[0] == 0
        for victim in ("hub", "alice", "peer"):
            for i in range(3):
                status, out, err = run(capsys, "--data", alice, "shift", "new", "--space", "Notes", "--href",
                                       f"https://example.org/{victim}/{i}", "--summary", f"before {victim} dies")
                assert status == 0, err
                sid = out.strip()
                status, _, err = run(capsys, "--data", alice, "shift", "publish", sid, "--public")
                assert status == 0, err
                published.append(sid)
            os.kill(procs[victim].pid, signal.SIGKILL)   # while the publications replicate
            procs[victim].wait(timeout=10)
            procs[victim] = start_node(dirs[victim], str(tmp_path / f"{victim}.log"))
        wait_for(lambda: _docs(capsys, hub, "master") == len(published), timeout=60)
        wait_for(lambda: _docs(capsys, alice, "user/public") == len(published), timeout=30)

        def peer_has_all() -> bool:
            status, out, _ = run(capsys, "--data", peer, "feed", "--json", "--limit", "100")
            rows = json.loads(out) if status == 0 else {}
            ids = {r["id"] for r in (rows.get("rows", rows) if isinstance(rows, dict) else rows)}
            return set(published) <= ids

        wait_for(peer_has_all, timeout=60)
        for sid in published:
            status, out, _ = run(capsys, "--data", alice, "shift", "show", sid, "--json")
            assert status == 0 and "user/public" in json.loads(out)["databases"], sid
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - last resort in teardown
                proc.kill()
