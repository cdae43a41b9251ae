"""A hub's quota by day (hub.json "quota", roles/quota.py), without a reactor: a task.Clock is the time, the store
a real LMDB in tmp_path (not fsynced, so a small batch is stored at once). What the hub's puller stores through
``Hub.store_batch`` and what ``deliver`` stores count against the author; over the quota a revision is refused
with the code ``quota``, nothing stored, and the count survives a restart and starts again at 00:00 UTC."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from shiftpeer.api.metrics import NodeCollector
from shiftpeer.identity import NodeKey
from shiftpeer.ids import bound_id
from shiftpeer.roles.flowroles import load_hub_config
from shiftpeer.roles.hub import Hub
from shiftpeer.roles.names import FlowError
from shiftpeer.roles.quota import DAY, DailyQuota, body_bytes
from shiftpeer.store import Store
from shiftpeer.sync import Policy, SyncFactory
from tests.helpers_identity import signed_doc

#: 2026-11-18 12:00 UTC: noon, so the tests move to the next day on purpose only
NOON = 1795000000 - 1795000000 % DAY + DAY // 2


class Party:
    """A hub on a store in ``path`` with alice and bob registered, its factory's counters for the metrics."""

    def __init__(self, path, clock: Clock, key: NodeKey, quota: dict) -> None:
        self.store = Store(str(path), sync=False)
        self.hub = Hub(self.store, key, clock, quota=quota)
        self.factory = SyncFactory(self.store, key, Policy(), reactor=clock)
        self.hub.install(self.factory)

    def close(self) -> None:
        self.hub.stop()
        self.store.close()


@pytest.fixture
def world(tmp_path):
    clock = Clock()
    clock.advance(NOON)
    keys = SimpleNamespace(hub=NodeKey.generate(), alice=NodeKey.generate(), bob=NodeKey.generate())
    parties: list[Party] = []

    def open_hub(**quota) -> Party:
        party = Party(tmp_path / "hub", clock, keys.hub, quota)
        parties.append(party)
        for name in ("alice", "bob"):
            party.hub.accounts.register(name, getattr(keys, name).account_id)
        return party

    yield SimpleNamespace(clock=clock, keys=keys, open_hub=open_hub)
    for party in parties:
        if not party.store._closed:
            party.close()


def public(key: NodeKey, text: str = "s") -> dict:
    body = {"type": "shift", "author": key.account_id, "href": "https://x.example/", "summary": text,
            "created": 1.0, "audience": {"public": True, "groups": [], "to": []}}
    return signed_doc(key, bound_id(key.account_id), body)


def push(party: Party, key: NodeKey, docs: list, db: str = "master") -> list:
    """What the hub's puller does with a batch ``key`` pushed into ``db``: the (document, why) pairs left out."""
    fired = []
    party.hub.store_batch(party.store, party.store.database(db), docs, key.account_id, "user/public",
                          {"seq": 1}).addCallback(fired.append)
    assert len(fired) == 1, "a small batch on a store that does not fsync is stored at once"
    return fired[0] if type(fired[0]) is list else []


def held(party: Party, docs: list, db: str = "master") -> set[str]:
    return {d["id"] for d in docs if party.store.database(db).get(d["id"]) is not None}


def test_an_author_past_docs_per_day_is_refused_with_the_reason_and_another_is_not(world):
    """With 3 documents a day, alice's batch of 5 stores 3 and refuses 2 with the code quota and a reason saying
    the limit and when it starts again; bob's 3 are stored; the refusals count in the metrics by limit."""
    hub = world.open_hub(docs_per_day=3)
    mine = [public(world.keys.alice, str(i)) for i in range(5)]
    refused = push(hub, world.keys.alice, mine)
    assert [doc["id"] for doc, _ in refused] == [d["id"] for d in mine[3:]]
    why = refused[0][1]
    assert why.code == "quota"
    assert str(why) == ("its author's quota of 3 documents a day on this hub is used up; it starts again at "
                        "00:00 UTC")
    assert held(hub, mine) == {d["id"] for d in mine[:3]}
    theirs = [public(world.keys.bob, str(i)) for i in range(3)]
    assert push(hub, world.keys.bob, theirs) == []
    assert held(hub, theirs) == {d["id"] for d in theirs}

    node = SimpleNamespace(store=None, api=SimpleNamespace(refused={}), sync_factory=hub.factory)
    family = next(f for f in NodeCollector(node).collect() if f.name == "shiftpeer_quota_refused")
    assert {s.labels["limit"]: s.value for s in family.samples if s.name.endswith("_total")} == {"docs": 2, "bytes": 0}
    assert hub.hub.quota.status() == {"docs_per_day": 3, "bytes_per_day": None, "day": "2026-11-18",
                                      "accounts_today": 2, "refused_today": 2}


def test_documents_held_already_or_refused_by_the_rules_count_nothing(world):
    """A revision master holds already (pushed again, or by another connection), one the rules refuse (an
    audience that does not name master) and the hub's own account's count nothing."""
    hub = world.open_hub(docs_per_day=2)
    first = [public(world.keys.alice, "a"), public(world.keys.alice, "b")]
    assert push(hub, world.keys.alice, first) == []
    assert push(hub, world.keys.alice, first) == []          # duplicates: no charge, no refusal
    private = public(world.keys.alice, "p")
    private = signed_doc(world.keys.alice, private["id"], {**private["body"], "audience": {
        "public": False, "groups": [], "to": ["bob"]}})
    refused = push(hub, world.keys.alice, [private])
    assert [why.code for _, why in refused] == ["audience"]
    assert hub.hub.quota.used(world.keys.alice.account_id)[0] == 2
    own = [public(world.keys.hub, str(i)) for i in range(3)]
    hub.hub.accounts.register("operator", world.keys.hub.account_id, operator=True)
    assert push(hub, world.keys.hub, own) == []             # the hub's own account has no quota
    assert held(hub, own) == {d["id"] for d in own}


def test_bytes_per_day_counts_the_bodies_stored(world):
    """With a byte quota, a document whose body would pass it is refused (reason: the bytes), a smaller one
    that fits is still taken the same day."""
    big = public(world.keys.alice, "x" * 400)
    also_big = public(world.keys.alice, "y" * 400)
    small = public(world.keys.alice, "z")
    limit = body_bytes(big) + body_bytes(small)
    assert body_bytes(big) + body_bytes(also_big) > limit
    hub = world.open_hub(bytes_per_day=limit)
    refused = push(hub, world.keys.alice, [big, also_big, small])
    assert [doc["id"] for doc, _ in refused] == [also_big["id"]]
    assert str(refused[0][1]).startswith(f"it would pass its author's quota of {limit:,} bytes a day")
    assert hub.hub.quota.used(world.keys.alice.account_id) == [2, limit]
    assert held(hub, [big, also_big, small]) == {big["id"], small["id"]}
    assert hub.factory.counters["quota_refused.bytes"] == 1


def test_the_count_survives_a_restart_and_starts_again_at_midnight_utc(world):
    """The counts are in the store: a hub reopened on it still refuses alice's fourth document of the day (and
    logs the first refusal of hers once, summing up the rest); at 00:00 UTC she gets her 3 again."""
    hub = world.open_hub(docs_per_day=3)
    assert push(hub, world.keys.alice, [public(world.keys.alice, str(i)) for i in range(3)]) == []
    hub.close()

    hub = world.open_hub(docs_per_day=3)
    lines: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "shiftpeer.roles.quota":
            lines.append(event["log_format"])

    globalLogPublisher.addObserver(observe)
    try:
        late = [public(world.keys.alice, f"late {i}") for i in range(4)]
        assert [why.code for _, why in push(hub, world.keys.alice, late)] == ["quota"] * 4
        assert len(lines) == 1, "the first refusal of an author is logged, the rest summed up"
        world.clock.advance(60)
        assert len(lines) == 2 and "more documents by" in lines[1]
    finally:
        globalLogPublisher.removeObserver(observe)
    assert held(hub, late) == set()

    world.clock.advance(DAY // 2)     # past 00:00 UTC
    assert [(doc["id"], why.code) for doc, why in push(hub, world.keys.alice, late)] == [(late[3]["id"], "quota")]
    assert held(hub, late) == {d["id"] for d in late[:3]}


def test_deliver_over_the_quota_refuses_the_whole_call_and_stores_nothing(world):
    """alice's shift sent to bob and to carol needs two copies; with one left today the whole call is refused
    (code quota, so her node refuses no target for good), nothing stored; with two left it is taken."""
    hub = world.open_hub(docs_per_day=3)
    hub.hub.accounts.register("carol", NodeKey.generate().account_id)
    assert push(hub, world.keys.alice, [public(world.keys.alice, str(i)) for i in range(2)]) == []
    body = {"type": "shift", "author": world.keys.alice.account_id, "href": "https://x.example/", "created": 1.0,
            "audience": {"public": False, "groups": [], "to": ["bob", "carol"]}}
    doc = signed_doc(world.keys.alice, bound_id(world.keys.alice.account_id), body)
    conn = SimpleNamespace(peer_id=world.keys.alice.account_id)
    with pytest.raises(FlowError) as refused:
        hub.hub.rpc_deliver(conn, {"doc": doc, "targets": ["user:bob", "user:carol"]})
    assert refused.value.code == "quota" and "quota of 3 documents a day" in refused.value.message
    assert hub.store.database("inbox/bob").get(doc["id"]) is None
    assert hub.store.database("inbox/carol").get(doc["id"]) is None
    assert hub.hub.quota.used(world.keys.alice.account_id)[0] == 2

    world.clock.advance(DAY)
    assert hub.hub.rpc_deliver(conn, {"doc": doc, "targets": ["user:bob", "user:carol"]}) == {
        "user:bob": "ok", "user:carol": "ok"}
    assert hub.hub.quota.used(world.keys.alice.account_id)[0] == 2
    hub.close()
    hub = world.open_hub(docs_per_day=3)
    assert hub.hub.quota.used(world.keys.alice.account_id)[0] == 2, "deliver's count is stored with the copies"


def test_no_quota_by_default_and_hub_json_is_checked(tmp_path, world):
    """Without "quota" in hub.json nothing is counted; a bad value or an unknown key stops the hub naming the
    file and the setting."""
    assert load_hub_config(str(tmp_path))["quota"] == {}
    hub = world.open_hub()
    assert not hub.hub.quota.on
    assert push(hub, world.keys.alice, [public(world.keys.alice, str(i)) for i in range(16)]) == []
    path = tmp_path / "hub.json"
    path.write_text(json.dumps({"quota": {"docs_per_day": 10000, "bytes_per_day": None}}))
    assert load_hub_config(str(tmp_path))["quota"] == {"docs_per_day": 10000, "bytes_per_day": None}
    for bad, said in (({"docs_per_day": 0}, "docs_per_day must be a whole number of at least 1"),
                      ({"docs_per_day": "many"}, "docs_per_day must be"),
                      ({"bytes_per_day": 1.5}, "bytes_per_day must be"),
                      ({"docs_a_day": 5}, "unknown setting(s) 'docs_a_day'"),
                      ([5], '"quota" must be a JSON object')):
        path.write_text(json.dumps({"quota": bad}))
        with pytest.raises(ValueError) as e:
            load_hub_config(str(tmp_path))
        assert str(path) in str(e.value) and said in str(e.value)


def test_a_failed_write_gives_the_charge_back(tmp_path):
    """A batch whose write fails stores nothing, so it counts nothing: what it charged is given back."""
    clock = Clock()
    clock.advance(NOON)
    store = Store(str(tmp_path / "s"), sync=False)
    try:
        quota = DailyQuota(store, clock, docs_per_day=2)
        db = store.create_database("master")
        key = NodeKey.generate()
        docs = [public(key, "a"), public(key, "b")]
        failed = []
        bad_cp = {"seq": object()}    # the checkpoint cannot be encoded: the transaction fails
        quota.store_batch(store, db, docs, key.account_id, "user/public", bad_cp).addErrback(failed.append)
        assert failed and db.get(docs[0]["id"]) is None
        assert quota.used(key.account_id) == [0, 0]
        assert store.get_meta("quota:" + key.account_id) is None
    finally:
        store.close()
