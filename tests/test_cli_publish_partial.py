"""`shiftpeer shift publish` when the hub refuses some targets at delivery, after the precheck passed
(docs/api.md, Publishing): the targets that worked on standard output, one `not published to TARGET`
line per refused target and a count on standard error, exit 1, and the refused target is no longer in
the shift's signed audience. Real hub and user nodes in this process over TLS on 127.0.0.1; the race
(the group's owner removes the publisher between the precheck and the delivery) is made deterministic
by running the removal just before the publish writes anything."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread

from shiftpeer.cli import EXIT_ERROR
from tests.test_cli import run
from tests.test_flows_nodes import _caller, _hub_and_users, nodes  # noqa: F401 (the nodes fixture)

HREF = "https://example.org/partial"


def _removed_before_delivery(publisher, remove) -> None:
    """Make ``publisher.publish`` (called after the hub's precheck said yes) first run ``remove()``."""
    real = publisher.publish

    def publish(*args, **kw):
        async def go():
            await remove()
            return await real(*args, **kw)
        return ensureDeferred(go())

    publisher.publish = publish


REFUSED = "shiftpeer: not published to group:club: the author may not publish in group club"


async def _club_race(nodes) -> tuple:
    """Bob's club with alice at publish level, a shift of alice's, and bob removing alice from the club
    between the precheck and the delivery of her next publish: (alice's data dir, shift id, call)."""
    hub, _, api = await _hub_and_users(nodes, ("alice", "bob"))
    call = _caller(api)
    await call("bob", "POST", "/v1/groups", {"name": "club"})
    await call("bob", "POST", "/v1/groups/club/invite", {"user": "alice", "level": "publish"})
    await call("alice", "POST", "/v1/groups/club/join", {})
    sid = (await call("alice", "POST", "/v1/shifts", {"space": "Notes", "href": HREF}, want=201))["id"]
    tmp_path, started = nodes
    alice = next(n for n in started if n.settings.directory == str(tmp_path / "alice"))
    _removed_before_delivery(alice.role("flows").flows.publisher,
                             lambda: call("bob", "POST", "/v1/groups/club/remove", {"user": "alice"}))
    return str(tmp_path / "alice"), sid, call


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_publish_prints_the_targets_the_hub_refused_after_the_precheck(nodes, capsys):
    alice, sid, call = await _club_race(nodes)
    capsys.readouterr()

    status, out, err = await deferToThread(run, capsys, "--data", alice,
                                           "shift", "publish", sid, "--group", "club", "--to", "bob")

    assert status == EXIT_ERROR, (out, err)
    assert out.splitlines() == [f"published {sid}", "  user:bob: ok"], out
    assert err.splitlines() == [REFUSED, "shiftpeer: the hub refused 1 of 2 target(s); they are left out of "
                                "the shift's audience"], err
    shown = await call("alice", "GET", f"/v1/shifts/{sid}")
    assert shown["audience"]["groups"] == [] and shown["audience"]["to"] == ["bob"], shown
    assert "club" not in json.dumps(shown["audience"])


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_publish_json_with_its_only_target_refused(nodes, capsys):
    """--json: the answer on standard output (the refused target's error in it, the narrowed audience),
    the same lines on standard error, exit 1; nothing says "published" when no target took it."""
    alice, sid, call = await _club_race(nodes)
    capsys.readouterr()

    status, out, err = await deferToThread(run, capsys, "--data", alice, "shift", "publish", sid,
                                           "--group", "club", "--json")

    assert status == EXIT_ERROR, (out, err)
    answer = json.loads(out)
    assert answer["targets"] == {"group:club": "error: the author may not publish in group club"}, answer
    assert answer["audience"]["groups"] == [] and answer["public"] is False, answer
    assert err.splitlines() == [REFUSED, "shiftpeer: the hub refused 1 of 1 target(s); they are left out of "
                                "the shift's audience"], err
    shown = await call("alice", "GET", f"/v1/shifts/{sid}")
    assert shown["rev"] == answer["rev"] and shown["audience"] == answer["audience"], (shown, answer)
