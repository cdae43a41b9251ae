"""--peer is for nodes that gossip (full peers and hubs): elsewhere nothing would use the connection, so
`shiftpeer init` and `twistd shiftpeer` refuse it with a message saying what to write instead."""

from __future__ import annotations

import pytest
from twisted.python import usage

from shiftpeer.cli import EXIT_USAGE
from shiftpeer.nodedir import init_node_dir, load_node_dir
from test_cli import run
from test_endpoint_checks import edited_node
from test_tap import parse

PEER = "peer.example.org:7701"


def test_cli_init_refuses_peer_without_full_peer(tmp_path, capsys):
    """`init --peer` on a plain user node is a bad command line: exit 2, a hint, nothing written."""
    status, out, err = run(capsys, "init", str(tmp_path / "n"), "--user", "u", "--peer", PEER)
    assert status == EXIT_USAGE and out == ""
    assert f"--peer {PEER}: only full peers and hubs gossip" in err and "--full-peer" in err
    assert "--connect" in err and err.count("\n") == 1
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("role", ["--full-peer", "--hub"])
def test_cli_init_accepts_peer_on_full_peers_and_hubs(tmp_path, capsys, role):
    """Full peers gossip master with --peer, hubs federate with it: both keep their peers."""
    status, out, err = run(capsys, "init", str(tmp_path / "n"), "--user", "u", role, "--peer", PEER)
    assert status == 0, err
    assert load_node_dir(tmp_path / "n").peers == [PEER]


def test_twistd_refuses_peer_flag_on_a_user_node(tmp_path):
    """`twistd shiftpeer --peer` on a user node is refused, unless --full-peer is given for the run."""
    path = init_node_dir(str(tmp_path / "node"), user="u").path
    with pytest.raises(usage.UsageError, match="only full peers and hubs gossip"):
        parse("--data", path, "--peer", PEER)
    assert parse("--data", path, "--peer", PEER, "--full-peer").overrides()["peers"] == [PEER]


def test_twistd_refuses_peers_written_into_a_user_nodes_config(tmp_path):
    """Peers edited into a user node's config.json are refused at startup the same way."""
    path = edited_node(tmp_path, peers=[PEER])
    with pytest.raises(usage.UsageError) as e:
        parse("--data", path)
    assert f'config.json: "peers" {PEER}: only full peers and hubs gossip' in str(e.value)
    assert parse("--data", path, "--full-peer").overrides()["full_peer"] is True
