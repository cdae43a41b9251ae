"""Strikes and bans that cannot be turned against honest peers: the audit's squatted shift id, the node's
own hub protected, bans listed in status and lifted with `shiftpeer gossip unban` (real LMDB, real TLS)."""

from __future__ import annotations

import json
import os

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher

from shiftpeer.api.metrics import NodeCollector
from shiftpeer.api.token import read_token
from shiftpeer.gossip.core import Gossip
from shiftpeer.gossip.scores import PeerScores, Refusal
from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import sign_doc, signing_payload
from shiftpeer.ids import new_token
from shiftpeer.node import Node
from shiftpeer.roles.fullpeer import BANS_FILE, firehose_check
from shiftpeer.shifts import make_signer
from shiftpeer.store import Store
from shiftpeer.store.revs import compute_rev
from tests.helpers_node import ApiTestClient, eventually, node_cli
from tests.test_gossip_federation import hub_certs, node, registered
from tests.test_gossip_mesh import free_port, full_peer, master_ids, publish


@pytest.fixture
def started():
    nodes: list[Node] = []
    yield nodes
    pytest_twisted.blockon(gatherResults([n.stopService() for n in reversed(nodes) if n.running]))


@pytest.fixture
def logged():
    """Every log line emitted while the test runs, formatted."""
    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def squat(genuine: dict, attacker: NodeKey) -> dict:
    """The audit's takeover: a revision of the victim's shift signed by ``attacker`` as author, whose
    history claims the victim's real revisions, so they look held and are never fetched. (Shift ids now
    name their author, so every node refuses this document, and ``sign_doc`` will not sign it: it is signed
    by hand and put straight into the store, as a node of an older version could have kept it.)"""
    body = dict(genuine["body"], author=attacker.account_id, summary="HACKED via gossip")
    rev = compute_rev(genuine["rev"], False, body)
    return {"id": genuine["id"], "rev": rev, "deleted": False, "body": body,
            "sig": attacker.sign(signing_payload(genuine["id"], rev, body, False)),
            "history": [rev] + genuine["history"]}


async def publish_legacy(n: Node, summary: str) -> str:
    """A public shift under an id of the kind made before ids named their author: only such ids can still be
    squatted (a bound id's squat is refused by every node's signature check, tests/test_ids.py)."""
    sid = new_token(16)
    now = 1795000000.0
    body = {"type": "shift", "space": "Notes", "href": f"https://example.org/{summary}", "domain": "example.org",
            "summary": summary, "content": {}, "author": n.account_id, "created": now, "modified": now}
    n.store.database("user/private").put(sid, body, sign=make_signer(n.key))
    await n.role("flows").flows.publish(sid, public=True)
    return sid


def leaf(n: Node, dbname: str, sid: str) -> dict:
    """The winning revision of ``sid`` in ``dbname`` as a replicated document ({} while not held)."""
    docs = n.store.database(dbname).get_repl_docs([(sid, None)])
    return max(docs, key=lambda d: (int(d["rev"].split("-")[0]), d["rev"])) if docs else {"rev": ""}


def summary(n: Node, sid: str) -> str | None:
    return leaf(n, "master", sid).get("body", {}).get("summary")


@pytest_twisted.ensureDeferred
async def test_a_squatted_shift_id_does_not_turn_the_full_peer_against_its_hub_and_peers(tmp_path, started,
                                                                                          logged):
    """A new full peer V holds a revision of alice's public shift squatted by mallory (before it met its hub).
    Alice then edits her shift three times; the hub and the honest full peer B relay the edits to V, which
    refuses them (ours is the odd copy) but strikes and bans no one: it logs an author conflict naming the
    shift, both authors and the relay, counts it, keeps gossiping with both and still publishes through
    its hub."""
    ph, pb = free_port(), free_port()
    certs = hub_certs(tmp_path / "ca")
    ca = str(tmp_path / "ca" / "ca.pem")
    hub = node(tmp_path / "hub", "op", port=ph, hub=True, **certs)
    started.append(hub)
    alice = node(tmp_path / "alice", "alice", connect=f"127.0.0.1:{ph}", ca=ca)
    started.append(alice)
    await registered(alice)
    sid = await publish_legacy(alice, "pub 1")
    alice.shifts.edit(sid, {"summary": "pub 2"})
    await eventually(lambda: summary(hub, sid) == "pub 2", timeout=15)
    b = node(tmp_path / "b", "b", port=pb, connect=f"127.0.0.1:{ph}", ca=ca, full_peer=True)
    started.append(b)
    await eventually(lambda: sid in master_ids(b), timeout=15)
    hub_pid = b.role("full-peer").hub_conn.peer_id     # the key of the hub's TLS certificate

    mallory = NodeKey.generate()
    vdir = tmp_path / "v"
    os.makedirs(vdir)
    store = Store(str(vdir / "store"))          # what mallory left in V's master before V met its hub
    store.create_database("master")
    store.database("master").bulk_replicated([squat(leaf(hub, "master", sid), mallory)])
    store.close()
    (vdir / BANS_FILE).write_text(json.dumps({hub_pid: "3 refused documents"}))  # the old rule's ban
    v = node(vdir, "v", connect=f"127.0.0.1:{ph}", ca=ca, full_peer=True, peers=[f"127.0.0.1:{pb}"])
    started.append(v)
    gossip = v.role("full-peer").gossip
    await eventually(lambda: {hub_pid, b.account_id} <= set(gossip.pulls), timeout=15)
    assert leaf(v, "master", sid)["body"]["author"] == mallory.account_id
    assert any("lifting the gossip ban of our own hub" in line for line in logged)

    for k in (3, 4, 5):
        alice.shifts.edit(sid, {"summary": f"pub {k}"})
        await eventually(lambda k=k: summary(b, sid) == f"pub {k}", timeout=15)
    await eventually(lambda: gossip.counters["author_conflict"] >= 3, timeout=15)

    assert gossip.scores.bans == {} and json.loads((vdir / BANS_FILE).read_text()) == {}
    assert gossip.scores.score(hub_pid) == 0 and gossip.scores.score(b.account_id) == 0
    assert {hub_pid, b.account_id} <= set(gossip.pulls)
    warnings = [line for line in logged if "author conflict" in line and sid in line]
    assert warnings and all(mallory.account_id in w and alice.account_id in w for w in warnings)
    assert any(hub_pid in w or b.account_id in w for w in warnings)
    assert v.status()["gossip"]["events"]["author_conflict"] >= 3 and v.status()["gossip"]["bans"] == []
    family = next(m for m in NodeCollector(v).collect() if m.name == "shiftpeer_gossip_events")
    assert {smp.labels["event"]: smp.value for smp in family.samples}["author_conflict"] >= 3

    await registered(v)                         # the hub link still carries V's own flows
    own = await publish(v, "v still publishes")
    await eventually(lambda: own in master_ids(hub), timeout=15)


class _Conn:
    """Just enough of a sync connection for Gossip.connected's ban decision (a banned firehose peer):
    nothing past it runs, so no pull is started."""

    def __init__(self, peer_id: str) -> None:
        self.peer_id, self.peer_roles, self.closed = peer_id, ("hub",), False

    def close(self) -> None:
        self.closed = True


def test_the_own_hub_is_never_banned_and_an_old_ban_of_it_is_lifted(tmp_path):
    """A ban list that names the node's hub (left by the old strike rule) is lifted when the hub connects
    as kind "hub"; the hub connection is not closed, and refused documents from it never strike it; a
    banned plain neighbour's connection is closed on a full peer and left up (gossip off) on a hub."""
    from shiftpeer.sync.testing import MemoryStore

    path = str(tmp_path / BANS_FILE)
    old = PeerScores(path)
    old.ban("hubid", "3 refused documents")
    old.ban("peerid", "3 refused documents")
    clock = Clock()
    g = Gossip(MemoryStore(), clock, scores=PeerScores(path, now=clock.seconds))
    peer_conn = _Conn("peerid")
    g.connected(peer_conn, "peer")
    assert peer_conn.closed
    g.scores.protect("hubid")            # what connected(conn, "hub") does first (the mesh test runs that)
    assert not g.scores.banned("hubid") and json.load(open(path)).keys() == {"peerid"}
    for _ in range(5):
        g.refused("hubid", {"id": "x", "rev": "1-a", "body": {}}, Refusal("not public", "rule"))
    clock.advance(1)
    assert g.scores.score("hubid") == 0 and not g.scores.banned("hubid")
    for _ in range(3):
        g.refused("other", {"id": "x", "rev": "1-a", "body": {}}, Refusal("not public", "rule"))
    clock.advance(1)
    assert g.scores.banned("other") and g.counters["refused"] == 8

    on_hub = Gossip(MemoryStore(), clock, scores=PeerScores(path), close_banned=False)
    kept = _Conn("peerid")
    assert not on_hub.connected(kept, "incoming") and not kept.closed


def test_firehose_check_says_which_refusals_are_the_relays_fault(tmp_path):
    """firehose_check: another author than the held one is a conflict naming both authors (not the relay's
    fault); a non-public audience is a rule any relay checks."""
    alice, mallory = NodeKey.generate(), NodeKey.generate()
    store = Store(str(tmp_path / "store"))
    try:
        store.create_database("master")
        db = store.database("master")
        body = {"type": "shift", "space": "Notes", "href": "https://example.org/a", "summary": "a",
                "author": alice.account_id, "created": 1.0, "audience": {"public": True, "groups": [], "to": []}}
        rev = compute_rev(None, False, body)
        genuine = {"id": "s1", "rev": rev, "deleted": False, "body": body,
                   "sig": sign_doc(alice, "s1", rev, body, False), "history": [rev]}
        db.bulk_replicated([genuine])
        why = firehose_check(db, squat(genuine, mallory))
        assert why.kind == "conflict" and why.details == {"held": alice.account_id, "offered": mallory.account_id}
        hidden = dict(body, audience={"public": False, "groups": [], "to": []}, summary="b")
        hrev = compute_rev(rev, False, hidden)
        why = firehose_check(db, {"id": "s1", "rev": hrev, "deleted": False, "body": hidden, "history": [hrev, rev],
                                  "sig": sign_doc(alice, "s1", hrev, hidden, False)})
        assert why.kind == "rule" and "not public" in why
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_status_lists_bans_and_gossip_unban_lifts_them(tmp_path, started, capsys):
    """`shiftpeer status` (and --json) lists each banned peer with why and since when; `shiftpeer gossip
    unban ID` lifts one (memory and DIR/gossip-bans.json), an id not banned is an error that changes
    nothing, `--all` lifts the rest, and a lifted neighbour is gossiped with again."""
    pa, pb = free_port(), free_port()
    b = full_peer(tmp_path / "b", "b", NodeKey.generate(), pb, [])
    a = full_peer(tmp_path / "a", "a", NodeKey.generate(), pa, [pb])
    started += [a, b]
    await a.when_ready()
    gossip = a.role("full-peer").gossip
    await eventually(lambda: b.account_id in gossip.pulls, timeout=15)
    gossip.strike(b.account_id, "refused")
    gossip.strike(b.account_id, "refused")
    gossip.strike(b.account_id, "refused")          # the third refused document bans it, and drops it
    gossip.scores.ban("zzother", "forged: bad signature")
    await eventually(lambda: b.account_id not in gossip.pulls, timeout=10)
    d = a.settings.directory
    cli = node_cli(capsys, d)

    status, out = await deferToThread(cli, "status")
    assert status == 0 and "2 banned" in out
    assert f"banned {b.account_id}  3 refused documents, since " in out and " ago)" in out
    assert "banned zzother  forged: bad signature" in out and "shiftpeer gossip unban" in out
    status, out = await deferToThread(cli, "status", "--json")
    bans = {r["peer_id"]: r for r in json.loads(out)["gossip"]["bans"]}
    assert bans[b.account_id]["why"] == "3 refused documents" and isinstance(bans[b.account_id]["since"], float)

    status, out = await deferToThread(cli, "gossip", "unban", "nobody", b.account_id)
    assert status != 0 and "not banned: nobody" in out and gossip.scores.banned(b.account_id)
    status, out = await deferToThread(cli, "gossip", "unban")
    assert status == 2 and "--all" in out
    status, out = await deferToThread(cli, "gossip", "unban", b.account_id)
    assert status == 0 and f"lifted 1 ban(s)\n  {b.account_id}\n1 still banned" in out
    assert set(json.load(open(os.path.join(d, BANS_FILE)))) == {"zzother"}
    await eventually(lambda: b.account_id in gossip.pulls, timeout=20)     # its --peer service redials
    status, out = await deferToThread(cli, "gossip", "unban", "--all", "--json")
    assert status == 0 and json.loads(out) == {"lifted": ["zzother"], "banned": 0}
    assert json.load(open(os.path.join(d, BANS_FILE))) == {}
    status, out = await deferToThread(cli, "status")
    assert "0 banned" in out and "banned zz" not in out


@pytest_twisted.ensureDeferred
async def test_unban_through_the_api_refuses_bad_requests_and_keeps_the_bans(tmp_path, started):
    """POST /v1/gossip/unban from a client other than the command (which checks first): each malformed body
    is 400 saying what to send, a peer that is not banned is 404, and the bans stay as they were."""
    a = full_peer(tmp_path / "a", "a", NodeKey.generate(), free_port(), [])
    started.append(a)
    api = ApiTestClient(await a.when_ready(), read_token(a.settings.directory))
    gossip = a.role("full-peer").gossip
    gossip.scores.ban("zzbanned", "forged: bad signature")
    for body, code, words in [
        ({"peers": ["zzbanned"], "colour": "red"}, 400, "unknown field(s): colour (use peers or all)"),
        ({"all": "yes"}, 400, "all must be true or false"),
        ({}, 400, "give either peers (a list of peer ids) or all: true"),
        ({"peers": ["zzbanned"], "all": True}, 400, "give either peers"),
        ({"peers": []}, 400, "peers must be a non-empty list of peer ids"),
        ({"peers": "zzbanned"}, 400, "peers must be a non-empty list of peer ids"),
        ({"peers": ["zzbanned", ""]}, 400, "peers must be a non-empty list of peer ids"),
        ({"peers": ["zzbanned", "nobody"]}, 404, "not banned: nobody"),
    ]:
        status, answer = await api.request("POST", "/v1/gossip/unban", body)
        assert status == code and words in answer["error"], (body, answer)
        assert gossip.scores.banned("zzbanned"), body
    status, answer = await api.request("POST", "/v1/gossip/unban", {"peers": ["zzbanned"]})
    assert status == 200 and answer == {"lifted": ["zzbanned"], "banned": 0}
