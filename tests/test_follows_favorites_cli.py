"""`shiftpeer follow`, `favorite`, `feed --following/--favorites` and `messages --unread` between real
nodes: a hub and two users in this process over TLS on 127.0.0.1, each user driven by the command line
against its node's API (POST /v1/follows and /v1/shifts/ID/favorite had no test through the API)."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet.threads import deferToThread

from shiftpeer.cli import EXIT_ERROR
from tests.helpers_node import eventually_async, node_cli
from tests.test_flows_nodes import _hub_and_users, nodes  # noqa: F401 (the nodes fixture)


@pytest_twisted.ensureDeferred
async def test_follow_and_favorite_from_the_command_line(nodes, capsys):
    """bob follows alice and favorites her shift: his feed --following and --favorites show exactly it; a
    follow of himself or of nobody is one line, exit 1, and follows nothing; --off undoes each."""
    hub, hub_api, api = await _hub_and_users(nodes, users=("alice", "bob"))
    tmp_path, started = nodes
    capsys.readouterr()   # what making the certificates printed
    alice = node_cli(capsys, str(tmp_path / "alice"))
    bob = node_cli(capsys, str(tmp_path / "bob"))

    async def run(cli, *argv: str) -> tuple[int, str]:
        return await deferToThread(cli, *argv)

    status, out = await run(alice, "shift", "new", "--space", "Notes", "--href", "https://e.org/follow")
    assert status == 0, out
    sid = out.strip()
    status, out = await run(alice, "shift", "publish", sid, "--public")
    assert status == 0, out

    async def feed(*flags: str) -> list[str]:
        status, out = await run(bob, "feed", *flags, "--json")
        assert status == 0, out
        return [r["id"] for r in json.loads(out)["rows"]]

    await eventually_async(lambda: feed(), lambda ids: sid in ids)
    assert await feed("--following") == []
    assert await feed("--favorites") == []

    assert await run(bob, "follow", "alice") == (0, "following alice\n")
    assert await feed("--following") == [sid]
    for who, words in (("bob", "you cannot follow yourself"), ("nobody", "there is no user 'nobody' on this hub")):
        status, out = await run(bob, "follow", who)
        assert status == EXIT_ERROR and out.count("\n") == 1 and words in out, out
    assert await run(bob, "follow", "alice", "--off") == (0, "unfollowed alice\n")
    assert await feed("--following") == []

    assert await run(bob, "favorite", sid) == (0, f"favorited {sid}\n")
    assert await feed("--favorites") == [sid]
    status, out = await run(bob, "favorite", sid, "--off", "--json")
    assert status == 0 and json.loads(out)["count"] == 0
    assert await feed("--favorites") == []

    assert await run(bob, "messages", "--unread") == (0, "(no messages)\n")
