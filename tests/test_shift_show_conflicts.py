"""`shiftpeer shift show` of a shift with two live revisions (a concurrent edit made on another copy of the
account, or under a restored backup; nothing replicates into user/private, so the test merges the other
branch in with `bulk_replicated`): the winning revision is shown and the other one is named on a
`conflicts:` line (docs/api.md: `conflicts` are the other live leaf revisions). A real node
in this process, driven by the command line."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from shiftpeer.node import Node
from shiftpeer.nodedir import init_node_dir
from shiftpeer.shifts import PRIVATE, make_signer
from shiftpeer.store.revs import compute_rev
from tests.helpers_node import node_cli


@pytest_twisted.ensureDeferred
async def test_show_names_the_conflicting_revision(tmp_path, capsys):
    d = str(tmp_path / "n")
    init_node_dir(d, user="cora")
    node = Node.from_directory(d, reactor=reactor)
    node.startService()
    try:
        await node.when_ready()
        made = node.shifts.create({"space": "Notes", "href": "https://e.org/c", "summary": "base"})
        mine = node.shifts.edit(made["id"], {"summary": "here"})["rev"]
        private = node.store.database(PRIVATE)
        body = {**private.get(made["id"]).body, "summary": "elsewhere"}
        other = compute_rev(made["rev"], False, body)
        sig = make_signer(node.key)(made["id"], other, body, False)
        private.bulk_replicated([{"id": made["id"], "rev": other, "deleted": False, "body": body, "sig": sig,
                                  "history": [other, made["rev"]]}])
        winner, loser = max(mine, other), min(mine, other)   # same depth: the higher hash wins
        cli = node_cli(capsys, d)
        status, out = await deferToThread(cli, "shift", "show", made["id"])
        assert status == 0, out
        lines = dict(line.split(":", 1) for line in out.splitlines())
        assert lines["rev"].strip() == winner and lines["conflicts"].strip() == loser
        assert lines["summary"].strip() == ("here" if winner == mine else "elsewhere")
        status, out = await deferToThread(cli, "shift", "show", made["id"], "--json")
        assert status == 0 and json.loads(out)["conflicts"] == [loser]
    finally:
        await node.stopService()
