"""A hub node's quota by day from its ``hub.json``, with real hub and user nodes in this process over TLS on
127.0.0.1 and the real CLI: ``shiftpeer shift publish`` past the quota prints the hub's reason, exits 1 and says
the target stays in the shift's audience (it is not refused for good); the hub's ``status`` shows the quota and
today's refusals."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread

from shiftpeer.cli import EXIT_ERROR
from shiftpeer.cli.output import quota_line
from shiftpeer.roles.quota import DAY
from tests.test_cli import run
from tests import test_flows_nodes
from tests.test_flows_nodes import _caller, _hub_and_users

HREF = "https://example.org/quota-cli"
nodes = test_flows_nodes.nodes   # the fixture
REASON = "its author's quota of 1 documents a day on this hub is used up; it starts again at 00:00 UTC"


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_publish_past_the_quota_prints_the_reason_and_keeps_the_target(nodes, capsys):
    """hub.json allows 1 document a day: alice's first shift to bob is delivered, her second is refused as a whole
    (exit 1, the reason, the target kept in the audience); the hub's status shows the quota and the refusal."""
    tmp_path, _ = nodes
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "hub.json").write_text(json.dumps({"quota": {"docs_per_day": 1}}))
    hub, hub_api, api = await _hub_and_users(nodes, ("alice", "bob"))
    clock = Clock()     # a fixed noon (UTC): the test cannot cross midnight while it runs
    clock.advance(1795000000 - 1795000000 % DAY + DAY // 2)
    hub.role("hub").hub.quota.clock = clock
    call = _caller(api)
    alice = str(tmp_path / "alice")
    first, second = [(await call("alice", "POST", "/v1/shifts", {"space": "Notes", "href": HREF}, want=201))["id"]
                     for _ in range(2)]
    capsys.readouterr()

    status, out, err = await deferToThread(run, capsys, "--data", alice, "shift", "publish", first, "--to", "bob")
    assert status == 0, (out, err)
    status, out, err = await deferToThread(run, capsys, "--data", alice, "shift", "publish", second, "--to", "bob")
    assert status == EXIT_ERROR, (out, err)
    assert err.splitlines() == [f"shiftpeer: not published to user:bob: {REASON}",
                                "shiftpeer: the hub refused 1 of 1 target(s) for now; they stay in the shift's "
                                "audience and get its next revision"], err
    assert (await call("alice", "GET", f"/v1/shifts/{second}"))["audience"]["to"] == ["bob"]
    inbox = hub.store.database("inbox/bob")
    assert inbox.get(first) is not None and inbox.get(second) is None

    code, st = await hub_api.request("GET", "/v1/status")
    assert code == 200 and st["quota"] == {"docs_per_day": 1, "bytes_per_day": None, "day": "2026-11-18",
                                           "accounts_today": 1, "refused_today": 1}
    assert quota_line(st["quota"]) == ("quota:     1 documents a day per account; today (2026-11-18 UTC) 1 accounts "
                                       "counted, 1 documents refused")
