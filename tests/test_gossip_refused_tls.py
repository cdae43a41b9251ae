"""Over real TLS on 127.0.0.1, the gossip neighbour that sent a refused document is told: its feeder logs
and counts the refusal (metric ``by="peer"``), the receiver's gossip pull keeps it on its Replication
(status, metric ``by="here"``), the rest of the batch is stored and the link stays up."""

from __future__ import annotations

import pytest
import pytest_twisted

from shiftpeer.api.metrics import NodeCollector
from shiftpeer.api.status import sync_replications
from shiftpeer.cli import refused_line
from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import sign_doc
from shiftpeer.store.revs import compute_rev
from shiftpeer.sync.refusedrevs import RefusedRev
from tests.helpers_node import eventually
from tests.test_fullpeer_intake import Relay, logged  # noqa: F401 (the logged fixture)
from tests.test_gossip_federation import hub_and_full_peer, registered, started  # noqa: F401
from tests.test_gossip_mesh import free_port, full_peer, master_ids

NOT_PUBLIC = "the signed audience is not public"


def put_shift(n, sid: str, *, public: bool) -> str:
    """A shift signed by ``n`` straight into its master (as a neighbour of an older version could hold it);
    returns its revision."""
    body = {"type": "shift", "space": "Notes", "href": f"https://example.org/{sid}", "summary": sid,
            "author": n.key.account_id, "created": 1795000000.0,
            "audience": {"public": public, "groups": [], "to": []}}
    rev = compute_rev(None, False, body)
    n.store.database("master").bulk_replicated(
        [{"id": sid, "rev": rev, "deleted": False, "body": body, "sig": sign_doc(n.key, sid, rev, body, False),
          "history": [rev]}])
    return rev


def revisions_refused(n) -> dict:
    """``shiftpeer_sync_revisions_refused_total`` of node ``n`` by label."""
    family = next(f for f in NodeCollector(n).collect() if f.name == "shiftpeer_sync_revisions_refused")
    return {s.labels["by"]: s.value for s in family.samples if s.name.endswith("_total")}


async def refused_by_neighbour(tmp_path, nodes: list, fill) -> tuple:
    """Full peer A (``fill(a)`` puts what B will refuse into its master, then a public shift "shown" joins
    it); full peer B dials A and gossips master (both added to ``nodes``, to be stopped). Returns (A, B, B's Gossip) once B holds "shown" and A has
    been told of a refusal."""
    pa, pb = free_port(), free_port()
    a = full_peer(tmp_path / "a", "a", NodeKey.generate(), pa, [])
    nodes.append(a)
    await a.when_ready()
    fill(a)
    put_shift(a, "shown", public=True)
    b = full_peer(tmp_path / "b", "b", NodeKey.generate(), pb, [pa])
    nodes.append(b)
    gossip = b.role("full-peer").gossip
    await eventually(lambda: a.account_id in gossip.pulls, timeout=15)
    await eventually(lambda: "shown" in master_ids(b), timeout=15)
    await eventually(lambda: a.sync_factory.counters["revs_refused_by_peer"] >= 1, timeout=15)
    return a, b, gossip


@pytest_twisted.ensureDeferred
async def test_a_full_peer_tells_its_neighbour_which_gossiped_shift_it_refused(tmp_path, started, logged):  # noqa: F811
    """Full peer A's master holds a non-public shift next to a public one; full peer B dials A and gossips
    master: B stores the public shift, leaves the other out, and A (the sender) is told: it logs B's
    refusal with the code and reason and counts it (metric by="peer"); B's gossip pull records it on its
    Replication and in status (metric by="here"); both stay neighbours."""
    a, b, gossip = await refused_by_neighbour(tmp_path, started, lambda a: put_shift(a, "hidden", public=False))
    rev = a.store.database("master").get("hidden").rev
    refused = RefusedRev("hidden", rev, "audience", NOT_PUBLIC)
    rep = gossip.pulls[a.account_id].handle
    assert rep.refused == [refused] and rep.refused_count == 1
    assert "hidden" not in master_ids(b)
    entry = next(r for r in sync_replications(b) if r["direction"] == "pull" and r["peer_id"] == a.account_id
                 and r["local"] == "master")
    assert entry["refused"] == 1 and entry["refused_latest"] == [{"id": "hidden", "rev": rev, "code": "audience",
                                                                  "reason": NOT_PUBLIC}]
    assert refused_line(entry) == f"1 revision refused by this node; latest hidden {rev}: audience: {NOT_PUBLIC}"
    assert a.sync_factory.counters["revs_refused_by_peer"] == 1 and b.sync_factory.counters["revs_refused"] == 1
    assert revisions_refused(a)["peer"] == 1 and revisions_refused(b)["here"] == 1
    told = [x for x in logged if x.startswith(f"{b.account_id} refused hidden {rev}")]
    assert told == [f"{b.account_id} refused hidden {rev} it pulled from master: audience: {NOT_PUBLIC}"]
    assert a.account_id in gossip.pulls and not gossip.scores.banned(a.account_id)
    assert b.account_id in a.role("full-peer").gossip.pulls


@pytest.mark.parametrize("target", ["full peer", "hub"])
@pytest_twisted.ensureDeferred
async def test_a_stranger_relaying_into_the_firehose_is_told_unregistered(tmp_path, started, logged, target):  # noqa: F811
    """A key never registered dials a full peer with a hub (or the hub itself) announcing the full-peer role
    and offers a public shift: intake leaves it out, and the stranger's feeder is told, with the code
    "unregistered"; the receiving gossip pull records it; the connection stays up."""
    hub, fp1, ph, p1 = hub_and_full_peer(tmp_path, started)
    await registered(fp1)
    stranger = Relay(tmp_path / "stranger", NodeKey.generate(), "from-a-stranger")
    victim = fp1 if target == "full peer" else hub
    gossip = victim.role("full-peer" if target == "full peer" else "federation").gossip
    try:
        await stranger.dial(p1 if target == "full peer" else ph)
        await eventually(lambda: stranger.factory.counters["revs_refused_by_peer"] >= 1, timeout=15)
        rep = gossip.pulls[stranger.key.account_id].handle
        assert [(r.docid, r.code) for r in rep.refused] == [(stranger.id, "unregistered")]
        assert victim.sync_factory.counters["revs_refused"] == 1 and gossip.counters["refused_unregistered"] == 1
        told = [x for x in logged if " refused " in x and stranger.id in x and "it pulled from master" in x]
        assert len(told) == 1 and ": unregistered: " in told[0]
        assert stranger.id not in master_ids(victim) and not gossip.scores.bans
        assert not stranger.proto._closing
    finally:
        stranger.close()
