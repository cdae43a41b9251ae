"""`shiftpeer status` (and `status --json`) on a full peer dialling another lists the neighbour, through
the node's API and the command line, in the lines docs/fullpeer.md shows: the `gossip:` summary, then
one line per neighbour (address, out/in, state, short peer id, static). Two real full-peer nodes in
this process over TLS on 127.0.0.1."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet.threads import deferToThread

from shiftpeer.identity import NodeKey
from tests.helpers_node import eventually
from tests.test_cli import run
from tests.test_gossip_mesh import free_port, full_peer
from tests.test_status_gossip import _neighbours, started  # noqa: F401 (the started fixture)


def _gossip_lines(out: str) -> list[str]:
    """The `gossip:` line and the lines under it (indented) of `shiftpeer status`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("gossip:"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


@pytest_twisted.ensureDeferred
async def test_status_lists_the_dialled_neighbour(tmp_path, started, capsys):
    pa, pb = free_port(), free_port()
    b = full_peer(tmp_path / "b", "b", NodeKey.generate(), pb, [])
    a = full_peer(tmp_path / "a", "a", NodeKey.generate(), pa, [pb])
    started += [a, b]
    await a.when_ready()
    await b.when_ready()
    await eventually(lambda: _neighbours(a).get(b.account_id, {}).get("state") == "live"
                     and _neighbours(b).get(a.account_id, {}).get("state") == "live", timeout=20)
    capsys.readouterr()

    status, out, err = await deferToThread(run, capsys, "--data", str(tmp_path / "a"), "status")
    assert status == 0, err
    lines = _gossip_lines(out)
    assert lines[0].startswith("gossip:    1 live neighbour(s) (keeps 4-8)") and lines[0].endswith(", 0 banned"), out
    assert len(lines) == 2, out
    assert lines[1].split() == [f"127.0.0.1:{pb}", "out", "live", b.account_id[:12], "(static)"], out

    status, out, err = await deferToThread(run, capsys, "--data", str(tmp_path / "a"), "status", "--json")
    assert status == 0, err
    gossip = json.loads(out)["gossip"]
    assert gossip["live"] == 1 and gossip["banned"] == 0 and gossip["bans"] == [], gossip
    [n] = gossip["neighbours"]
    assert {"address": f"127.0.0.1:{pb}", "direction": "out", "state": "live", "peer_id": b.account_id,
            "static": True, "strikes": 0}.items() <= n.items(), n

    status, out, err = await deferToThread(run, capsys, "--data", str(tmp_path / "b"), "status")
    assert status == 0, err
    [summary, line] = _gossip_lines(out)
    assert summary.startswith("gossip:    1 live neighbour(s)"), out
    address, direction, state, peer = line.split()
    assert address.startswith("127.0.0.1:") and (direction, state, peer) == ("in", "live", a.account_id[:12]), out


def test_status_shows_the_gossip_events_counted(capsys):
    """The gossip events docs/fullpeer.md says `shiftpeer status` counts (refused documents, author
    conflicts, unproven addresses...) are on a line of their own when any happened, none when none did."""
    from shiftpeer.cli.output import print_gossip

    gossip = {"live": 1, "low": 4, "high": 8, "candidates": 0, "banned": 0, "neighbours": [], "bans": [],
              "events": {"refused": 0, "refused_unregistered": 1200, "author_conflict": 2, "announce_unproven": 0}}
    print_gossip(gossip)
    assert "  events since start: author_conflict 2, refused_unregistered 1,200" in capsys.readouterr().out.splitlines()
    gossip["events"] = dict.fromkeys(gossip["events"], 0)
    print_gossip(gossip)
    assert "events" not in capsys.readouterr().out
