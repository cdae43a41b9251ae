"""Audience, write rules, policy and the shared merge, without a reactor (a task.Clock drives the merge)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import sign_doc
from shiftpeer.roles import audience
from shiftpeer.roles.accounts import Accounts
from shiftpeer.roles.groups import Groups, join
from shiftpeer.roles.merge import SharedMerger
from shiftpeer.roles.names import FlowError
from shiftpeer.roles.policy import HubPolicy, UserPolicy
from shiftpeer.roles.validation import HubRules, refusal
from shiftpeer.store import Store
from shiftpeer.store.revs import compute_rev


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"))
    yield s
    s.close()


def signed(key: NodeKey, docid: str, body: dict, parent: str | None = None, deleted: bool = False) -> dict:
    """A replicated document signed by ``key``."""
    rev = compute_rev(parent, deleted, body)
    return {"id": docid, "rev": rev, "deleted": deleted, "body": body,
            "sig": sign_doc(key, docid, rev, body, deleted), "history": [rev] + ([parent] if parent else [])}


def shift(key: NodeKey, **aud) -> dict:
    return {"type": "shift", "author": key.account_id, "href": "https://x.example/", "created": 1.0,
            "audience": {"public": False, "groups": [], "to": [], **aud}}


def test_widen_keeps_earlier_targets():
    """Publishing again is a union: nothing published before is taken back."""
    first = audience.widen(audience.empty(), to=["bob"])
    second = audience.widen(first, public=True, groups=["club"])
    assert second == {"public": True, "groups": ["club"], "to": ["bob"]}
    assert audience.targets(second) == ["group:club", "user:bob"]
    with pytest.raises(FlowError, match="not valid"):
        audience.widen(first, groups=["../x"])


def test_audience_admits_only_named_databases():
    """A signed audience names exactly the hub databases that may hold the document."""
    aud = {"public": False, "groups": ["club"], "to": ["bob"]}
    assert audience.admits(aud, "group/club") and audience.admits(aud, "inbox/bob")
    assert not audience.admits(aud, "master") and not audience.admits(aud, "inbox/carol")
    assert not audience.admits(aud, "group/other") and not audience.admits(aud, "shared")
    assert audience.vis_token("inbox/bob") == "user:bob" and audience.vis_token("messages/bob") is None


def test_refusal_checks_signature_and_same_author(store):
    """A forged signature is refused; a valid signature by a different author than the held one is refused."""
    alice, bob = NodeKey.generate(), NodeKey.generate()
    db = store.create_database("inbox/bob")
    doc = signed(alice, "s1", shift(alice, to=["bob"]))
    assert refusal(db, doc) is None
    db.bulk_replicated([doc])
    takeover = signed(bob, "s1", shift(bob, to=["bob"]), parent=doc["rev"])
    assert "author" in refusal(db, takeover)
    tampered = {**doc, "body": {**doc["body"], "href": "https://evil.example/"}}
    assert "signature" in refusal(db, tampered)


def test_hub_rules_follow_the_audience_and_membership(store):
    """The hub stores a document only where its audience points and only from publishing members."""
    accounts, groups = Accounts(store), Groups(store)
    alice, rita = NodeKey.generate(), NodeKey.generate()
    accounts.register("alice", alice.account_id)
    accounts.register("rita", rita.account_id)
    groups.create("club", "alice", open=True, join_level="read")
    groups.update("club", lambda g: join(g, "rita"))
    rules = HubRules(accounts, groups)
    db = store.create_database("scratch")
    public = signed(alice, "p", shift(alice, public=True))
    assert rules.check(db, "master", alice.account_id, public) is None
    assert "does not name" in rules.check(db, "group/club", alice.account_id, public)
    assert "wrote" in rules.check(db, "master", rita.account_id, public)
    by_rita = signed(rita, "r", shift(rita, groups=["club"]))
    assert "may not publish" in rules.check(db, "group/club", rita.account_id, by_rita)
    comment = signed(rita, "c", {**shift(rita, groups=["club"]), "type": "comment", "shift": "p"})
    assert rules.check(db, "group/club", rita.account_id, comment) is None
    to_ghost = signed(alice, "g", shift(alice, to=["ghost"]))
    assert rules.check(db, "inbox/ghost", alice.account_id, to_ghost) is not None


def test_policies_deny_by_default(store):
    """The hub never serves user/*, shared or hub/*; a user node serves only user/public to its hub."""
    accounts, groups = Accounts(store), Groups(store)
    key = NodeKey.generate().account_id
    accounts.register("alice", key)
    policy = HubPolicy(accounts, groups)
    for name in ("user/private", "user/public", "shared", "hub/accounts", "inbox/bob", "inbox/alice/..",
                 "messages/alice/", "group/none"):
        assert not policy.may_read(key, name, None), name
        assert not policy.may_write(key, name, None), name
    assert policy.may_read(key, "inbox/alice", None) and policy.may_write(key, "master", None)
    user = UserPolicy({"hub"})
    assert user.may_read("hub", "user/public", None)
    assert not user.may_read("hub", "user/private", None) and not user.may_read("x", "user/public", None)
    assert not user.may_write("hub", "user/feed", None)


def test_merge_gives_visibility_tokens_and_comments_inherit_them(store):
    """Merging tags documents by source and author; a comment carries its shift's tokens; a new
    comment is reported once."""
    clock = Clock()
    fresh = []
    merger = SharedMerger(store, clock, on_new=fresh.extend)
    merger.start()
    alice, bob = NodeKey.generate(), NodeKey.generate()
    shift_doc = signed(alice, "s", shift(alice, groups=["club"]))
    store.create_database("group/club").bulk_replicated([shift_doc])
    clock.advance(0)
    assert store.database("shared").get("s").vis == ["author:" + alice.account_id, "group:club"]
    comment = signed(bob, "c", {**shift(bob, groups=["club"]), "type": "comment", "shift": "s"})
    store.database("group/club").bulk_replicated([comment])
    store.create_database("inbox/bob").bulk_replicated([shift_doc])
    clock.advance(0)
    assert set(store.database("shared").get("c").vis) == {"author:" + alice.account_id,
                                                          "author:" + bob.account_id, "group:club"}
    assert "user:bob" in store.database("shared").get("s").vis
    assert [d["id"] for d in fresh] == ["c"]
    docs, _ = store.database("shared").query("href", "https://x.example/", vis=["user:bob"])
    assert [d.id for d in docs] == ["s"]
    merger.stop()


def test_merge_reports_edits_and_tombstones_of_held_comments_apart_from_new_ones(store):
    """A comment's edit and its tombstone reach shared and are reported as revisions of a comment already
    held (so nobody is notified again); a comment deleted before it was ever merged is reported nowhere."""
    clock = Clock()
    fresh, revised = [], []
    merger = SharedMerger(store, clock, on_new=fresh.extend, on_revised=revised.extend)
    merger.start()
    bob = NodeKey.generate()
    group = store.create_database("group/club")
    body = {**shift(bob, groups=["club"]), "type": "comment", "shift": "s", "text": "v1"}
    first = signed(bob, "c", body)
    group.bulk_replicated([first])
    clock.advance(0)
    edit = signed(bob, "c", {**body, "text": "v2"}, parent=first["rev"])
    group.bulk_replicated([edit])
    clock.advance(0)
    assert store.database("shared").get("c").body["text"] == "v2"
    tomb = signed(bob, "c", {"type": "comment", "shift": "s", "author": bob.account_id}, parent=edit["rev"],
                  deleted=True)
    group.bulk_replicated([tomb])
    never = signed(bob, "gone", {**body, "text": "never merged"})
    group.bulk_replicated([never, signed(bob, "gone", tomb["body"], parent=never["rev"], deleted=True)])
    clock.advance(0)
    assert store.database("shared").get("c").deleted
    assert [d["id"] for d in fresh] == ["c"]
    assert [(d["id"], d["rev"], d["deleted"]) for d in revised] == [("c", edit["rev"], False),
                                                                   ("c", tomb["rev"], True)]
    merger.stop()


def test_merge_catch_up_at_start_yields_between_sources_and_skips_empty_ones(store, monkeypatch):
    """A hub restarting with many inboxes catches up in many short reactor turns (here one source a turn),
    merges every inbox that changed while it was down, and never opens the empty ones."""
    from shiftpeer.roles import following

    alice = NodeKey.generate()
    for i in range(30):
        store.create_database(f"inbox/u{i:02d}")
    changed = [f"inbox/u{i:02d}" for i in (3, 11, 29)]
    for name in changed:
        store.database(name).bulk_replicated([signed(alice, name[-3:], shift(alice, to=[name[6:]]))])
    store._databases.clear()      # as after a restart: nothing opened yet
    monkeypatch.setattr(following, "STEP_SECONDS", 0.0)
    clock = Clock()
    merger = SharedMerger(store, clock)
    steps = []
    step = merger._step
    monkeypatch.setattr(merger, "_step", lambda: (steps.append(1), step()))
    merger.start()
    clock.advance(0)
    shared = store.database("shared")
    assert sorted(d.id for d in shared.docs_since(0)) == ["u03", "u11", "u29"]
    # one listed database a turn (empty ones are passed over, not opened), then one finds the listing's end
    assert len(steps) == store.database_count() + 1
    assert not any(f"inbox/u{i:02d}" in store._databases for i in range(30) if i not in (3, 11, 29))
    merger.stop()


def test_a_source_longer_than_a_batch_is_merged_whole_and_a_restart_resumes(store):
    """A source with more changes than one merge batch is merged completely, a batch a step; a merger
    stopped half way (the hub restarting) resumes from its checkpoint and loses nothing; when_idle fires
    once nothing waits."""
    clock = Clock()
    alice = NodeKey.generate()
    docs = [signed(alice, f"s{i}", shift(alice, groups=["club"])) for i in range(7)]
    store.create_database("group/club").bulk_replicated(docs)
    first = SharedMerger(store, clock, batch=3)
    assert first.merge_once("group/club") is True      # one batch; more wait (the hub stops here)
    shared = store.database("shared")
    assert shared.doc_count() == 3
    merger = SharedMerger(store, clock, batch=3)
    merger.start()
    idle = []
    merger.when_idle().addCallback(idle.append)
    for _ in range(10):
        if idle:
            break
        clock.advance(0)
    assert idle == [None] and shared.doc_count() == 7
    assert {d.id for d in shared.docs_since(0)} == {f"s{i}" for i in range(7)}
    assert all(d.vis == sorted(["author:" + alice.account_id, "group:club"]) for d in shared.docs_since(0))
    merger.stop()
