"""`shiftpeer shift resolve ID [--keep REV]` and `POST /v1/shifts/{id}/resolve` on a real node (real LMDB, the
real API over HTTP, the command line in a thread): a shift with two live revisions (made as in
test_shift_show_conflicts.py) ends with one, the winner or the one kept, and every refusal changes nothing."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from shiftpeer.api.token import read_token
from shiftpeer.identity import NodeKey
from shiftpeer.ids import bound_id
from shiftpeer.node import Node
from shiftpeer.nodedir import init_node_dir
from shiftpeer.shifts import FEED, PRIVATE, make_signer
from shiftpeer.store.revs import compute_rev
from tests.helpers_node import ApiTestClient, eventually, node_cli


def add_branch(db, shift_id: str, parent: str, key, **changes) -> str:
    """A revision beside the current one (a child of ``parent``), signed by ``key``, replicated in: what a
    concurrent edit made on another copy of the account leaves. Returns its rev."""
    body = {**db.get(shift_id).body, **changes}
    rev = compute_rev(parent, False, body)
    db.bulk_replicated([{"id": shift_id, "rev": rev, "deleted": False, "body": body,
                         "sig": make_signer(key)(shift_id, rev, body, False), "history": [rev, parent]}])
    return rev


def conflicted(node) -> tuple[str, str, str, str]:
    """A private shift with two live revisions of the same depth: (id, winner, loser, base rev)."""
    made = node.shifts.create({"space": "Notes", "href": "https://e.org/r", "summary": "base"})
    mine = node.shifts.edit(made["id"], {"summary": "here"})["rev"]
    other = add_branch(node.store.database(PRIVATE), made["id"], made["rev"], node.key, summary="elsewhere")
    winner, loser = max(mine, other), min(mine, other)   # same depth: the higher hash wins
    doc = node.store.database(PRIVATE).get(made["id"])
    assert (doc.rev, doc.conflicts) == (winner, [loser])
    return made["id"], winner, loser, made["rev"]


def state(node, shift_id: str) -> list:
    """Every leaf of the shift in user/private (rev, deleted, body): what a refusal must leave as it was."""
    return [(d["rev"], d["deleted"], d["body"]) for d in node.store.database(PRIVATE).get_repl_docs([(shift_id, None)])]


@pytest.fixture
def cora(tmp_path):
    """A real node (every role twistd runs) for user cora, its directory; stopped after the test."""
    d = str(tmp_path / "cora")
    init_node_dir(d, user="cora")
    node = Node.from_directory(d, reactor=reactor)
    node.startService()
    yield node, d
    pytest_twisted.blockon(node.stopService())


@pytest_twisted.ensureDeferred
async def test_resolve_keeps_the_winner_and_clears_the_conflict(cora, capsys):
    node, d = cora
    await node.when_ready()
    sid, winner, loser, _ = conflicted(node)
    cli = node_cli(capsys, d)
    status, out = await deferToThread(cli, "shift", "resolve", sid)
    assert status == 0 and out.strip() == winner, out
    status, out = await deferToThread(cli, "shift", "show", sid, "--json")
    shown = json.loads(out)
    assert status == 0 and shown["rev"] == winner and shown["conflicts"] == []
    leaves = {r: deleted for r, deleted, _ in state(node, sid)}
    assert leaves[winner] is False and loser not in leaves
    assert sum(1 for deleted in leaves.values() if deleted) == 1   # the loser's signed tombstone
    tomb = [doc for doc in node.store.database(PRIVATE).get_repl_docs([(sid, None)]) if doc["deleted"]][0]
    assert tomb["history"][1] == loser and tomb["body"]["author"] == node.account_id
    # the feed follows (user/private -> user/feed): one live revision there too
    await eventually(lambda: node.store.database(FEED).get(sid).conflicts == [])
    status, out = await deferToThread(cli, "shift", "resolve", sid)
    assert status == 1 and "no conflicts" in out, out


@pytest_twisted.ensureDeferred
async def test_keep_makes_a_losing_revision_win(cora, capsys):
    node, d = cora
    await node.when_ready()
    sid, winner, loser, _ = conflicted(node)
    losing_summary = node.store.database(PRIVATE).get(sid, rev=loser).body["summary"]
    cli = node_cli(capsys, d)
    status, out = await deferToThread(cli, "shift", "resolve", sid, "--keep", loser, "--json")
    answer = json.loads(out)
    assert status == 0 and answer["rev"] == loser and answer["removed"] == [winner], out
    status, out = await deferToThread(cli, "shift", "show", sid)
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["rev"].strip() == loser and "conflicts" not in lines
    assert lines["summary"].strip() == losing_summary
    # the kept revision is the shift now: an edit continues it
    status, out = await deferToThread(cli, "shift", "edit", sid, "--summary", "settled", "--rev", loser)
    assert status == 0 and out.strip().startswith("3-"), out


@pytest_twisted.ensureDeferred
async def test_three_live_revisions_keep_one(cora):
    """Every other live leaf goes, not only the first conflict: the API answer names each."""
    node, _ = cora
    api = ApiTestClient(await node.when_ready(), read_token(node.settings.directory))
    sid, winner, loser, base = conflicted(node)
    third = add_branch(node.store.database(PRIVATE), sid, base, node.key, summary="a third place")
    code, answer = await api.request("POST", f"/v1/shifts/{sid}/resolve", {"keep": loser})
    assert code == 200 and answer["rev"] == loser, answer
    assert sorted(answer["removed"]) == sorted([winner, third]) and len(answer["tombstones"]) == 2
    code, shown = await api.request("GET", f"/v1/shifts/{sid}")
    assert (shown["rev"], shown["conflicts"]) == (loser, [])


@pytest_twisted.ensureDeferred
async def test_refusals_change_nothing(cora, capsys):
    node, d = cora
    await node.when_ready()
    sid, winner, loser, base = conflicted(node)
    plain = node.shifts.create({"space": "Notes", "href": "https://e.org/plain"})["id"]
    # someone else's shift in this node's feed, with a conflict of its own
    other = NodeKey.generate()
    theirs = bound_id(other.account_id)
    body = {"type": "shift", "space": "Notes", "href": "https://e.org/t", "domain": "e.org", "summary": "t",
            "content": {}, "author": other.account_id, "created": 1.0, "modified": 1.0}
    rev = compute_rev(None, False, body)
    feed = node.store.database(FEED)
    feed.bulk_replicated([{"id": theirs, "rev": rev, "deleted": False, "body": body,
                           "sig": make_signer(other)(theirs, rev, body, False), "history": [rev]}])
    add_branch(feed, theirs, rev, other, summary="t2")
    add_branch(feed, theirs, rev, other, summary="t3")
    before = (state(node, sid), state(node, plain), feed.get_repl_docs([(theirs, None)]))

    api = ApiTestClient(await node.when_ready(), read_token(node.settings.directory))
    cases = [
        (f"/v1/shifts/{sid}/resolve", {"keep": "9-" + "0" * 32}, 400, "bad_request", "not a live revision"),
        (f"/v1/shifts/{sid}/resolve", {"keep": base}, 400, "bad_request", "not a live revision"),
        (f"/v1/shifts/{sid}/resolve", {"keep": 7}, 400, "bad_request", "keep must be"),
        (f"/v1/shifts/{sid}/resolve", {"kept": loser}, 400, "bad_request", "unknown field"),
        (f"/v1/shifts/{plain}/resolve", {}, 409, "no_conflicts", "has no conflicts"),
        ("/v1/shifts/nosuchshift/resolve", {}, 404, "not_found", "no shift nosuchshift"),
        (f"/v1/shifts/{theirs}/resolve", {}, 403, "not_author", "only its author"),
    ]
    for path, body, status, code, words in cases:
        got, answer = await api.request("POST", path, body)
        assert (got, answer.get("code")) == (status, code) and words in answer["error"], (path, body, answer)

    cli = node_cli(capsys, d)
    for argv, words in (((sid, "--keep", "1-" + "f" * 32), "not a live revision"),
                        ((plain,), "has no conflicts"), (("nosuchshift",), "no shift nosuchshift"),
                        ((theirs,), "only its author")):
        status, out = await deferToThread(cli, "shift", "resolve", *argv)
        assert status == 1 and words in out, (argv, out)
    assert (state(node, sid), state(node, plain), feed.get_repl_docs([(theirs, None)])) == before
    assert node.store.database(PRIVATE).get(sid).conflicts == [loser]


@pytest_twisted.ensureDeferred
async def test_keep_a_branch_only_the_feed_holds(cora, capsys):
    """A branch of cora's own shift that reached only her user/feed (made by another copy of her account and
    pulled back from the hub) is listed by `shift show`; `--keep` it and it joins user/private and wins
    there. A branch whose signature does not verify under her key is not hers and is not listed."""
    node, d = cora
    await node.when_ready()
    made = node.shifts.create({"space": "Notes", "href": "https://e.org/f", "summary": "base"})
    sid = made["id"]
    mine = node.shifts.edit(sid, {"summary": "here"})["rev"]
    feed = node.store.database(FEED)
    await eventually(lambda: feed.get(sid) is not None and feed.get(sid).rev == mine)
    theirs = add_branch(feed, sid, made["rev"], node.key, summary="from the other copy")
    body = {**feed.get(sid).body, "summary": "forged"}
    forged = compute_rev(made["rev"], False, body)
    feed.bulk_replicated([{"id": sid, "rev": forged, "deleted": False, "body": body, "sig": bytes(64),
                           "history": [forged, made["rev"]]}])
    cli = node_cli(capsys, d)
    status, out = await deferToThread(cli, "shift", "show", sid, "--json")
    assert status == 0 and json.loads(out)["conflicts"] == [theirs] and forged not in out, out
    status, out = await deferToThread(cli, "shift", "resolve", sid, "--keep", theirs)
    assert status == 0 and out.strip() == theirs, out
    private = node.store.database(PRIVATE).get(sid)
    assert (private.rev, private.conflicts, private.body["summary"]) == (theirs, [], "from the other copy")
    status, out = await deferToThread(cli, "shift", "show", sid, "--json")
    assert json.loads(out)["rev"] == theirs and json.loads(out)["conflicts"] == []


@pytest_twisted.ensureDeferred
async def test_a_conflicted_shift_is_published_only_once_resolved(cora, capsys):
    """Publishing re-signs or moves the winner only: moving it public used to leave the other branch as
    user/private's live winner, which `shift show` and edits then found instead of the published shift. The
    publish is refused (nothing written) until the conflict is resolved."""
    node, d = cora
    await node.when_ready()
    sid, winner, loser, _ = conflicted(node)
    before = state(node, sid)
    cli = node_cli(capsys, d)
    status, out = await deferToThread(cli, "shift", "publish", sid, "--public")
    assert status == 1 and f"shiftpeer shift resolve {sid}" in out and loser in out, out
    assert state(node, sid) == before and node.store.database("user/public").get(sid) is None
    status, out = await deferToThread(cli, "shift", "resolve", sid)
    assert status == 0 and out.strip() == winner
    status, out = await deferToThread(cli, "shift", "publish", sid, "--public", "--json")
    published = json.loads(out)["rev"]
    status, out = await deferToThread(cli, "shift", "show", sid, "--json")
    shown = json.loads(out)
    assert (shown["rev"], shown["conflicts"], shown["audience"]["public"]) == (published, [], True)
    assert shown["databases"][0] == "user/public"
