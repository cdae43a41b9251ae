"""The command line across real processes: a hub and a user, each `twistd -n shiftpeer`, over TLS."""

from __future__ import annotations

import json

import pytest

from shiftpeer.cli import main
from tests.test_cli import run, start_node, stop_node, wait_for
from tests.ports import free_port


@pytest.mark.slow
def test_publish_public_reaches_the_hub(tmp_path, capsys):
    """init a hub and a user, run both, register, create and publish: the hub's master holds the shift."""
    from shiftpeer.identity.makecerts import main as make_certs

    certs = tmp_path / "certs"
    assert make_certs([str(certs), "--host", "127.0.0.1", "--new-ca"]) == 0
    hub, alice = str(tmp_path / "hub"), str(tmp_path / "alice")
    port = free_port()
    assert main(["init", hub, "--user", "op", "--hub", "--tls-cert", str(certs / "127.0.0.1.pem"),
                 "--tls-key", str(certs / "127.0.0.1.key"), "--listen", f"tcp:{port}:interface=127.0.0.1"]) == 0
    assert main(["init", alice, "--user", "alice", "--connect", f"127.0.0.1:{port}",
                 "--ca", str(certs / "ca.pem")]) == 0
    capsys.readouterr()
    procs = [start_node(hub, str(tmp_path / "hub.log"))]
    try:
        procs.append(start_node(alice, str(tmp_path / "alice.log")))

        def connected():
            _, out, _ = run(capsys, "--data", alice, "status", "--json")
            return json.loads(out)["peers"][0]["connected"]

        wait_for(connected, timeout=20)
        status, out, err = run(capsys, "--data", alice, "register")
        assert status == 0, err
        status, out, err = run(capsys, "--data", alice, "shift", "new", "--space", "Notes",
                               "--href", "https://example.org/p", "--summary", "public one")
        sid = out.strip()
        status, out, err = run(capsys, "--data", alice, "shift", "publish", sid, "--public")
        assert status == 0, err

        def on_hub():
            _, out, _ = run(capsys, "--data", hub, "status", "--json")
            return json.loads(out)["databases"].get("master", {}).get("docs", 0) == 1

        wait_for(on_hub, timeout=10)
        status, out, err = run(capsys, "--data", alice, "shift", "show", sid, "--json")
        assert "user/public" in json.loads(out)["databases"]
    finally:
        for proc in reversed(procs):
            stop_node(proc)
