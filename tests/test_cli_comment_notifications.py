"""What `shiftpeer messages` shows the shift's author (and an earlier commenter) when a comment they were
notified of is edited or deleted (docs/flows.md, Comments): the one notification quotes the new text,
keeps its read mark and notifies nobody again; a deleted comment's notification is gone, with its
text. Real hub and user nodes in this process over TLS on 127.0.0.1, read through the command line."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.helpers_node import eventually_async
from tests.test_cli import run
from tests.test_flows_nodes import _caller, _hub_and_users, nodes  # noqa: F401 (the nodes fixture)

HREF = "https://example.org/notified"


def _messages(capsys, tmp_path, user: str):
    """``messages`` and ``messages --json`` of ``user``: ([(mark, from, text)], unread count)."""
    def both() -> tuple[list, int]:
        status, out, err = run(capsys, "--data", str(tmp_path / user), "messages")
        assert status == 0, err
        lines = []
        for line in out.splitlines():
            if line == "(no messages)":
                continue
            _when, who, text = line[2:].split("  ", 2)   # MARK WHEN  FROM  TEXT; MARK "*" when unread
            lines.append((line[0], who, text))
        status, out, err = run(capsys, "--data", str(tmp_path / user), "messages", "--json")
        assert status == 0, err
        return sorted(lines), json.loads(out)["unread"]
    return deferToThread(both)


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_messages_follow_an_edited_then_deleted_comment(nodes, capsys):
    hub, _, api = await _hub_and_users(nodes, ("alice", "bob", "carol"))
    tmp_path, _ = nodes
    capsys.readouterr()   # what making the certificates printed
    call = _caller(api)
    sid = (await call("alice", "POST", "/v1/shifts", {"space": "Notes", "href": HREF}, want=201))["id"]
    await call("alice", "POST", f"/v1/shifts/{sid}/publish", {"public": True})
    await eventually_async(lambda: api["carol"].request("POST", f"/v1/shifts/{sid}/comments", {"text": "first"}),
                           lambda answer: answer[0] == 200)

    def seen(user, want, unread=None):
        return eventually_async(lambda: _messages(capsys, tmp_path, user),
                                lambda got: got[0] == want and (unread is None or got[1] == unread), timeout=20)

    await seen("alice", [("*", "carol", "first")], 1)
    made = await call("bob", "POST", f"/v1/shifts/{sid}/comments", {"text": "v1"})
    await seen("alice", [("*", "bob", "v1"), ("*", "carol", "first")], 2)
    await seen("carol", [("*", "bob", "v1")], 1)   # an earlier commenter is notified too
    status, out, err = await deferToThread(run, capsys, "--data", str(tmp_path / "alice"), "messages", "--mark-read")
    assert status == 0 and out == "all read (0 unread)\n", (out, err)

    await call("bob", "PATCH", f"/v1/comments/{made['id']}", {"text": "v2"})
    await seen("carol", [("*", "bob", "v2")], 1)
    await seen("alice", [(" ", "bob", "v2"), (" ", "carol", "first")], 0)   # still read, not notified again

    await call("bob", "DELETE", f"/v1/comments/{made['id']}")
    await seen("carol", [], 0)
    await seen("alice", [(" ", "carol", "first")], 0)
    status, out, err = await deferToThread(run, capsys, "--data", str(tmp_path / "carol"), "messages")
    assert status == 0 and out == "(no messages)\n", (out, err)
