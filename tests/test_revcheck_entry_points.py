"""Every way a document enters a node refuses a revision that does not check, under a signature that
verifies, on its own (docs/protocol.md section 9, code ``bad_revision``): a user's push into the hub (told in
a ``refused`` frame), the hub's ``deliver`` RPC, a gossip neighbour's firehose (no strike, no ban), and a
hub's query rows on a user node (left out of the page, the rest shown). Each is logged naming the peer and
the document and counted (``shiftpeer_bad_revisions_total``); the rest goes on. Over real TLS on 127.0.0.1
with LMDB stores (tests/test_sync_revcheck.py has the pull, push and live cases of the sync layer)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.logger import formatEvent, globalLogPublisher

import flowmesh
from flowmesh import eventually
from shiftpeer.api.metrics import NodeCollector
from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import BAD_REVISION, STEMMED_HISTORY, sign_doc
from shiftpeer.roles import queries
from shiftpeer.store.revs import compute_rev, rev_depth
from tests import test_fullpeer_intake, test_gossip_federation
from tests.test_gossip_refused_tls import put_shift, refused_by_neighbour

HREF = "https://example.org/revcheck"

#: The fixtures these tests use (bound here, not imported by name: a name the tests' arguments shadow).
mesh, logged, started = flowmesh.mesh, test_fullpeer_intake.logged, test_gossip_federation.started


def bad_revision(author: NodeKey, real: dict, how: str) -> dict:
    """A later edit of ``real`` (a replicated document), genuinely signed by its author, whose revision does
    not check: ``regrafted`` names another parent at the same depth as the real one, ``stemmed`` names none
    (as a node built before the check may have stored either)."""
    body = {**real["body"], "summary": "edited"}
    rev = compute_rev(real["rev"], False, body)
    other = f"{rev_depth(real['rev'])}-" + "ab" * 16
    return {"id": real["id"], "rev": rev, "deleted": False, "body": body,
            "sig": sign_doc(author, real["id"], rev, body, False),
            "history": [rev, other] if how == "regrafted" else [rev]}


def bad_revisions(factory, via: str) -> float:
    """``shiftpeer_bad_revisions_total{via}`` of the node whose SyncFactory is ``factory``."""
    node = SimpleNamespace(store=None, api=SimpleNamespace(refused={}), sync_factory=factory)
    family = next(f for f in NodeCollector(node).collect() if f.name == "shiftpeer_bad_revisions")
    return {s.labels["via"]: s.value for s in family.samples if s.name.endswith("_total")}[via]


class Logged:
    """The formatted log lines while a block runs."""

    def __init__(self):
        self.lines: list[str] = []

    def __enter__(self):
        globalLogPublisher.addObserver(self._add)
        return self

    def __exit__(self, *exc):
        globalLogPublisher.removeObserver(self._add)

    def _add(self, event: dict) -> None:
        self.lines.append(formatEvent(event))

    def naming(self, *parts: str) -> list[str]:
        return [line for line in self.lines if all(p in line for p in parts)]


@pytest.mark.parametrize("how", ["regrafted", "stemmed"])
@pytest_twisted.ensureDeferred
async def test_a_pushed_revision_that_does_not_check_is_refused_and_the_pusher_told(mesh, how):
    """Alice's user/public holds a revision of her public shift that does not check (an older build of her
    node stored it as it came): her push into the hub's master is refused for that revision alone, with the
    code bad_revision, on her push's Replication; the hub logs it naming her and the shift and counts it;
    her connection stays up and a shift she publishes afterwards reaches master."""
    await mesh.start(users=("alice",))
    alice = mesh["alice"]
    conn = alice.flows.link.conn
    [sid] = await mesh.public_shifts(HREF, n=1)
    public = alice.store.database("user/public")
    bad = bad_revision(alice.key, public.get_repl_docs([(sid, None)])[0], how)
    push = alice.flows.link.push
    with Logged() as log:
        public.bulk_replicated([bad])
        await eventually(lambda: push.refused_count, "the hub's refusal reaches alice")
    why = STEMMED_HISTORY if how == "stemmed" else BAD_REVISION
    assert [(r.docid, r.rev, r.code, r.reason) for r in push.refused] == [(sid, bad["rev"], "bad_revision", str(why))]
    assert mesh.hub.db("master").get(sid, bad["rev"]) is None
    assert mesh.hub.factory.counters["bad_revision.sync"] == 1 and bad_revisions(mesh.hub.factory, "sync") == 1
    assert len(log.naming("refused", sid, bad["rev"], alice.account, "not held against the peer")) == 1
    ok = alice.new_shift(HREF)
    await alice.publish(ok, public=True)
    await eventually(lambda: ok in mesh.hub.ids("master"), "a later public shift reaches master")
    assert alice.flows.link.conn is conn and not conn._closing and not push.finished
    assert not any(k.startswith("violation.") for k in mesh.hub.factory.counters)


@pytest.mark.parametrize("how", ["regrafted", "stemmed"])
@pytest_twisted.ensureDeferred
async def test_the_hub_refuses_a_delivered_revision_that_does_not_check(mesh, how):
    """The deliver RPC (publishing to a group or a user) refuses such a revision for every target with the
    reason, logs it once naming the caller and the shift and counts it (via="deliver"); the genuine revision
    is delivered."""
    await mesh.start(users=("alice", "bob"))
    alice = mesh["alice"]
    sid = alice.new_shift(HREF)
    await alice.publish(sid, to=["bob"])
    await eventually(lambda: sid in mesh.hub.ids("inbox/bob"), "the genuine delivery")
    real = mesh.hub.db("inbox/bob").get_repl_docs([(sid, None)])[0]
    bad = bad_revision(alice.key, real, how)
    with Logged() as log:
        result = await alice.flows.link.call("deliver", {"doc": bad, "targets": ["user:bob"]})
    why = STEMMED_HISTORY if how == "stemmed" else BAD_REVISION
    assert result == {"user:bob": f"error: {why}"}
    assert mesh.hub.db("inbox/bob").get(sid, bad["rev"]) is None and mesh.hub.db("inbox/bob").get(sid).rev == real["rev"]
    assert mesh.hub.factory.counters["bad_revision.deliver"] == 1 and bad_revisions(mesh.hub.factory, "deliver") == 1
    assert len(log.naming("refused", sid, bad["rev"], alice.account, "(deliver)")) == 1


async def _hub_holds_a_bad_revision(mesh, how: str) -> tuple[list[str], str, dict]:
    """Alice publishes three public shifts on HREF; the hub's shared then holds, for the first, a later
    revision that does not check (as a hub built before the check stored it). Returns (the shifts, the bad
    one's id, its bad revision)."""
    await mesh.start(users=("alice", "bob"))
    made = await mesh.public_shifts(HREF, n=3)
    shared = mesh.hub.db("shared")
    bad = bad_revision(mesh["alice"].key, shared.get_repl_docs([(made[0], None)])[0], how)
    shared.bulk_replicated([bad], vis=list(shared.get(made[0]).vis))
    assert shared.get(made[0]).rev == bad["rev"]            # the winner the hub answers with
    return made, made[0], bad


async def _page(user) -> list[str]:
    answer = await user.flows.query({"filters": {"href": HREF}})
    assert answer["source"] == "shared"
    return [r["id"] for r in answer["rows"]]


@pytest.mark.parametrize("how", ["regrafted", "stemmed"])
@pytest_twisted.ensureDeferred
async def test_a_user_node_leaves_a_hub_row_that_does_not_check_out_of_its_page(mesh, how):
    """Bob's page of HREF from the hub shows alice's genuine shifts and leaves out the one whose winning
    revision does not check (the hub's rows name the parent, so a stemmed one is refused too); so does
    asking the hub for it by id. Bob's node logs it naming the hub and the shift, and counts it (via="query")."""
    made, sid, bad = await _hub_holds_a_bad_revision(mesh, how)
    bob = mesh["bob"]
    hub = mesh.hub.key.account_id
    assert queries.ROW_PARENTS in bob.flows.link.conn.peer_features
    with Logged() as log:
        assert sorted(await _page(bob)) == sorted(made[1:])
        assert await bob.flows.from_hub(sid) is None
        assert (await bob.flows.from_hub(made[1]))["id"] == made[1]
    assert bob.factory.counters["bad_revision.query"] == 2 and bad_revisions(bob.factory, "query") == 2
    if how == "regrafted":
        assert len(log.naming("refused", sid, bad["rev"], hub, "its answer to query")) == 1
        assert len(log.naming("refused", sid, bad["rev"], hub, "its answer to get")) == 1
    else:
        assert len(log.naming(hub, "rows whose history names no parent", sid, "query")) == 1


@pytest_twisted.ensureDeferred
async def test_a_hub_that_names_no_parents_still_answers_with_signed_rows(mesh, monkeypatch):
    """A hub built before rows named their parent sends every row as [rev] (and no +row_parents in its
    hello): bob's node takes them with their signature checked (the stemmed revision the hub holds among
    them: the residue docs/security.md *Known gaps* names), says so once per connection, and still leaves
    out a row whose signature does not verify."""
    made, sid, bad = await _hub_holds_a_bad_revision(mesh, "stemmed")
    bob = mesh["bob"]
    bob.flows.link.conn.peer_features = bob.flows.link.conn.peer_features - {queries.ROW_PARENTS}
    monkeypatch.setattr(queries, "history", lambda doc: [doc.rev])     # the older hub's rows
    with Logged() as log:
        assert sorted(await _page(bob)) == sorted(made)
        assert sorted(await _page(bob)) == sorted(made)
    assert len(log.naming(mesh.hub.key.account_id, "built before query rows named their parent")) == 1
    assert bob.factory.counters["bad_revision.query"] == 0
    monkeypatch.setattr(queries, "stored_row", lambda doc: queries.row(doc) if doc.id != made[1] else
                        {**queries.row(doc), "sig": bytes(64)})
    assert sorted(await _page(bob)) == sorted([made[0], made[2]])


@pytest_twisted.ensureDeferred
async def test_a_gossip_neighbour_sending_a_revision_that_does_not_check_is_not_banned(tmp_path, started, logged):
    """Full peer A's master holds a public shift whose later revision does not check (A is an older build
    that stored what came) next to a genuine one; full peer B gossips master from A: B stores the genuine
    shift, refuses the other revision on its own (logged naming A, counted, also among the gossip events of
    B's status, A told with bad_revision), and neither strikes nor bans A: both stay neighbours."""
    bad: dict = {}

    def fill(a) -> None:
        put_shift(a, "first", public=True)
        master = a.store.database("master")
        bad.update(bad_revision(a.key, master.get_repl_docs([("first", None)])[0], "stemmed"))
        master.bulk_replicated([bad])

    a, b, gossip = await refused_by_neighbour(tmp_path, started, fill)
    rep = gossip.pulls[a.account_id].handle
    assert [(r.docid, r.rev, r.code) for r in rep.refused] == [("first", bad["rev"], "bad_revision")]
    assert b.store.database("master").get("first", bad["rev"]) is None
    assert b.sync_factory.counters["bad_revision.sync"] == 1
    assert b.status()["gossip"]["events"]["bad_revision"] == 1            # gossip's own status counts it too
    assert b.sync_factory.counters["gossip.bad_revision"] == 1            # shiftpeer_gossip_events_total
    assert [x for x in logged if "refused first" in x and a.account_id in x and "not held against" in x]
    assert not gossip.scores.banned(a.account_id) and gossip.scores.score(a.account_id) == 0
    assert a.account_id in gossip.pulls and b.account_id in a.role("full-peer").gossip.pulls
    assert not any(k.startswith("violation.") for k in b.sync_factory.counters)
