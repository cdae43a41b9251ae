"""`shiftpeer follow`, `favorite`, `feed --following/--favorites`, `messages --unread` and the group commands
between real nodes: a hub and two users in this process over TLS on 127.0.0.1, each user driven by the
command line against its node's API (POST /v1/follows, /v1/shifts/ID/favorite, /v1/groups/NAME/remove and
/level had no test through the API)."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet.threads import deferToThread

from shiftpeer.cli import EXIT_ERROR
from tests.helpers_node import eventually_async, node_cli
from tests.test_flows_nodes import _hub_and_users, nodes  # noqa: F401 (the nodes fixture)


async def _alice_and_bob(started_nodes, capsys) -> tuple:
    """A hub with alice and bob registered; a command-line runner for each user's node."""
    await _hub_and_users(started_nodes, users=("alice", "bob"))
    tmp_path, _ = started_nodes
    capsys.readouterr()   # what making the certificates printed
    return node_cli(capsys, str(tmp_path / "alice")), node_cli(capsys, str(tmp_path / "bob"))


async def run(cli, *argv: str) -> tuple[int, str]:
    """One command through `cli`, in a thread: the nodes run on this reactor."""
    return await deferToThread(cli, *argv)



@pytest_twisted.ensureDeferred
async def test_follow_and_favorite_from_the_command_line(nodes, capsys):
    """bob follows alice and favorites her shift: his feed --following and --favorites show exactly it; a
    follow of himself or of nobody is one line, exit 1, and follows nothing; --off undoes each."""
    alice, bob = await _alice_and_bob(nodes, capsys)

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


@pytest_twisted.ensureDeferred
async def test_group_levels_members_and_removal_from_the_command_line(nodes, capsys):
    """An open group joined at its join level; the owner raises a member, lists the members, removes one;
    removing, raising or leaving as a non-member is one line, exit 1, naming the user and the group."""
    alice, bob = await _alice_and_bob(nodes, capsys)

    assert await run(alice, "group", "new", "club", "--open", "--join-level", "publish") == (0, "created group club\n")
    assert await run(bob, "group", "join", "club") == (0, "joined club as publish\n")
    assert await run(alice, "group", "level", "club", "bob", "admin") == (0, "bob is now admin in club\n")
    assert await run(bob, "group", "members", "club") == (0, "alice  owner\nbob  admin\n")
    assert await run(alice, "group", "remove", "club", "bob") == (0, "removed bob from club\n")
    assert await run(alice, "group", "members", "club") == (0, "alice  owner\n")
    for cli, argv, words in [
        (alice, ("group", "remove", "club", "bob"), "'bob' is not a member of 'club'"),
        (alice, ("group", "level", "club", "bob", "read"), "'bob' is not a member of 'club' (invite them first)"),
        (bob, ("group", "leave", "club"), "you are not a member of 'club'"),
    ]:
        status, out = await run(cli, *argv)
        assert status == EXIT_ERROR and out.count("\n") == 1 and words in out, (argv, out)
    assert await run(alice, "group", "members", "club") == (0, "alice  owner\n")
