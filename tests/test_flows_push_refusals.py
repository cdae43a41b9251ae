"""A user whose push the hub's rules refuse learns it, over real TLS on 127.0.0.1: the refused revision is
on the push's Replication, in status, in the CLI's line and in the metrics, while the rest of the push goes
on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.api.metrics import NodeCollector
from shiftpeer.api.status import sync_replications
from shiftpeer.cli import print_status, refused_line
from shiftpeer.ids import new_token
from shiftpeer.shifts import domain_of, make_signer
from shiftpeer.sync.refusedrevs import RefusedRev

HREF = "https://example.org/page"


@pytest_twisted.ensureDeferred
async def test_hub_refusal_of_a_pushed_shift_reaches_the_pusher(mesh, capsys):
    """A shift in alice's user/public whose signed audience is not public is refused by the hub's rules
    for master: alice's push records it with the code "audience", status and the CLI say so, and a shift
    published afterwards still reaches master on the same connection; both sides count it in the metrics."""
    await mesh.start(users=("alice",))
    alice = mesh["alice"]
    conn = alice.flows.link.conn
    sid = new_token(16)
    body = {"type": "shift", "space": "Notes", "href": HREF, "domain": domain_of(HREF), "summary": "s",
            "content": {}, "author": alice.account, "created": 1795000000.0, "modified": 1795000000.0}
    rev = alice.store.database("user/public").put(sid, body, sign=make_signer(alice.key))
    push = alice.flows.link.push
    await eventually(lambda: push.refused_count, "the hub's refusal reaches alice")
    assert push.refused == [RefusedRev(sid, rev, "audience", "the signed audience does not name master")]
    assert sid not in mesh.hub.ids("master")
    assert alice.factory.counters["revs_refused_by_peer"] == 1
    assert mesh.hub.factory.counters["revs_refused"] == 1

    ok = alice.new_shift(HREF)
    await alice.publish(ok, public=True)
    await eventually(lambda: ok in mesh.hub.ids("master"), "a later public shift reaches master")
    assert alice.flows.link.conn is conn and not conn._closing and not push.finished
    assert push.refused_count == 1

    entry = next(r for r in sync_replications(SimpleNamespace(sync_factory=alice.factory, store=alice.store))
                 if r["direction"] == "push")
    assert entry["refused"] == 1
    assert entry["refused_latest"] == [{"id": sid, "rev": rev, "code": "audience",
                                        "reason": "the signed audience does not name master"}]
    line = f"1 revision refused by the peer; latest {sid} {rev}: audience: the signed audience does not name master"
    assert refused_line(entry) == line
    print_status({"replications": [entry], "caught_up": True})
    assert "        " + line + "\n" in capsys.readouterr().out
    for party, by in ((alice, "peer"), (mesh.hub, "here")):
        node = SimpleNamespace(store=None, api=SimpleNamespace(refused={}), sync_factory=party.factory)
        family = next(f for f in NodeCollector(node).collect() if f.name == "shiftpeer_sync_revisions_refused")
        assert {s.labels["by"]: s.value for s in family.samples if s.name.endswith("_total")}[by] == 1
