"""A user pins its hub's key (`init --connect HOST:PORT --hub-id ACCOUNT`): a hub without a CA certificate
is then reached by key, a wrong pin is refused and status says why (real nodes, real TLS on 127.0.0.1)."""

from __future__ import annotations

import pytest
import pytest_twisted

from shiftpeer.nodedir import init_node_dir
from shiftpeer.tap import Options
from test_cli import run
from tests.helpers_node import eventually, listening_port
from tests.test_peer_errors import LISTEN, _start, nodes  # noqa: F401  (nodes is a fixture)


async def _self_signed_hub(tmp_path, started) -> tuple:
    hub = await _start(started, init_node_dir(tmp_path / "hub", user="op", hub=True, listen=[LISTEN]).path)
    listener = next(s for s in hub.getServiceNamed("sync") if s.name.startswith("listen"))
    return hub, (await listening_port(listener)).getHost().port


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_a_pinned_hub_is_reached_by_key_and_a_wrong_pin_is_refused(tmp_path, nodes):  # noqa: F811
    """With --hub-id and no --ca, alice reaches a hub that has only its self-signed certificate and
    registers; bob, pinning another key, is refused in the handshake and his status names the mismatch."""
    hub, port = await _self_signed_hub(tmp_path, nodes)
    alice = await _start(nodes, init_node_dir(tmp_path / "alice", user="alice", connect=f"127.0.0.1:{port}",
                                              hub_id=hub.account_id).path)
    await eventually(lambda: alice.role("flows").flows.link.connected, timeout=10)
    result = await alice.role("flows").flows.register()
    assert result["name"] == "alice"
    assert hub.role("hub").hub.accounts.id_of("alice") == alice.account_id

    bob = await _start(nodes, init_node_dir(tmp_path / "bob", user="bob", connect=f"127.0.0.1:{port}",
                                            hub_id=alice.account_id).path)
    peer = await eventually(lambda: next((p for p in bob.status()["peers"] if p["last_error"]), None),
                            timeout=10)
    assert peer["connected"] is False and "pinned peer id mismatch" in peer["last_error"]
    assert hub.role("hub").hub.accounts.id_of("bob") is None


def test_init_refuses_a_malformed_pin_or_one_without_a_hub(tmp_path, capsys):
    """A pin that is not a peer id, or one with no --connect to pin, is a usage error (exit 2, nothing
    written); a good one is kept in config.json and reaches twistd, whose --hub-id overrides it."""
    status, _, err = run(capsys, "init", str(tmp_path / "a"), "--user", "a", "--connect", "127.0.0.1:7701",
                         "--hub-id", "not-a-key")
    assert status == 2 and "is not a peer id" in err and not (tmp_path / "a").exists()
    key = "a" * 52
    status, _, err = run(capsys, "init", str(tmp_path / "b"), "--user", "b", "--hub-id", key)
    assert status == 2 and "give --connect HOST:PORT too" in err
    status, _, _ = run(capsys, "init", str(tmp_path / "c"), "--user", "c", "--connect", "127.0.0.1:7701",
                       "--hub-id", key)
    assert status == 0
    opts = Options()
    opts.parseOptions(["--data", str(tmp_path / "c")])
    assert opts.overrides()["hub_id"] is None
    other = "b" * 52
    opts = Options()
    opts.parseOptions(["--data", str(tmp_path / "c"), "--hub-id", other])
    assert opts.overrides()["hub_id"] == other
    from shiftpeer.node import Node
    node = Node.from_directory(str(tmp_path / "c"), opts.overrides())
    assert node.settings.hub_id == other
    assert Node.from_directory(str(tmp_path / "c")).settings.hub_id == key
