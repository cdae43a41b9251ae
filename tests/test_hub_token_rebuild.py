"""The rebuild of the visibility tokens in a hub's ``shared`` (roles/tokenrebuild.py), on a real store.

Each store is built the way a hub builds it: signed documents in the source databases (``master``,
``group/<g>``, ``inbox/<u>``) merged by the real merge. An older hub's leftovers are then written through the
store API as that hub's merge left them: a comment whose edit took every token of its shift's record, and
the tokens of a revision written under another author's id."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import task

from shiftpeer.identity import NodeKey
from shiftpeer.ids import bound_id
from shiftpeer.roles import tokenrebuild
from shiftpeer.roles.hub import Hub
from shiftpeer.roles.tokenrebuild import TokenRebuild, progress, rebuild_chunk
from shiftpeer.store import Store
from tests.helpers_identity import signed_doc

CLUB = {"public": False, "groups": ["club"], "to": []}
PUBLIC = {"public": True, "groups": [], "to": []}
LEGACY_ID = "Zq3legacyShiftId0002"   # an id made before ids named their author: no dot


class Party:
    """A user's key and the documents it signs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = NodeKey.generate()
        self.account = self.key.account_id

    def shift(self, aud: dict, href: str = "https://example.org/p", docid: str | None = None) -> dict:
        return signed_doc(self.key, docid or bound_id(self.account), {
            "type": "shift", "space": "Notes", "href": href, "summary": "s", "author": self.account,
            "created": time.time(), "audience": aud})

    def comment(self, shift: dict, aud: dict, text: str = "c") -> dict:
        now = time.time()
        return signed_doc(self.key, bound_id(self.account, "cm-"), {
            "type": "comment", "shift": shift["id"], "text": text, "author": self.account, "created": now,
            "modified": now, "audience": aud})

    def edit(self, doc: dict, **changes) -> dict:
        return signed_doc(self.key, doc["id"], {**doc["body"], **changes}, parent=doc["rev"])

    def tombstone(self, doc: dict) -> dict:
        body = {k: doc["body"][k] for k in ("type", "shift", "author") if k in doc["body"]}
        return signed_doc(self.key, doc["id"], {**body, "modified": time.time()}, deleted=True, parent=doc["rev"])


@pytest.fixture
def hub(tmp_path):
    store = Store(str(tmp_path / "hub"), map_size=1 << 30)
    hub = Hub(store, NodeKey.generate(), task.Clock())   # not started: each test merges and rebuilds itself
    yield hub
    store.close()


def hand_in(hub, dbname: str, *docs: dict) -> None:
    """Write ``docs`` into a hub source database and merge it into ``shared`` as the running hub does."""
    hub.store.create_database(dbname).bulk_replicated(list(docs))
    while hub.merger.merge_once(dbname):
        pass


def run_pass(store, limit: int = tokenrebuild.CHUNK, *, restart: bool = False) -> dict:
    cp = rebuild_chunk(store, limit, restart=restart)
    for _ in range(10_000):
        if cp["done"]:
            return cp
        cp = rebuild_chunk(store, limit)
    raise AssertionError("the pass did not finish")


def tokens(hub) -> dict[str, list[str]]:
    """Every document of ``shared`` with its tokens."""
    return {d.id: d.vis for d in hub.store.database("shared").docs_since(0)}


def club_thread(hub, alice: Party, bob: Party) -> tuple[dict, dict]:
    """alice's shift in the club and publicly (and in group ``other``), bob's comment for the club on it, as a
    hub running today merges them; returns (shift, comment)."""
    shift = alice.shift({"public": True, "groups": ["club", "other"], "to": []})
    for dbname in ("group/club", "group/other", "master"):
        hand_in(hub, dbname, shift)
    comment = bob.comment(shift, CLUB, "for the club")
    hand_in(hub, "group/club", comment)
    return shift, comment


def test_a_comment_an_older_hub_widened_is_narrowed_to_its_audience(hub):
    """bob's comment for the club, on a shift that went public and to another group too: an older hub gave
    the comment's edit every token of the shift's record (``public``, ``group:other``). The pass takes those
    off, index entries too, and keeps those its audience names and its authors'."""
    alice, bob = Party("alice"), Party("bob")
    shift, comment = club_thread(hub, alice, bob)
    shared = hub.store.database("shared")
    today = shared.get(comment["id"]).vis
    assert today == sorted(["group:club", f"author:{alice.account}", f"author:{bob.account}"])
    shared.add_vis(comment["id"], ["public", "group:other"])   # the older hub's merge of the edit
    assert [d.id for d in shared.query("thread", shift["id"], vis=["public"])[0]] == [comment["id"]]

    cp = run_pass(hub.store)
    assert shared.get(comment["id"]).vis == today
    assert shared.query("thread", shift["id"], vis=["public"])[0] == []
    assert shared.query("thread", shift["id"], vis=["group:other"])[0] == []
    assert [d.id for d in shared.query("thread", shift["id"], vis=["group:club"])[0]] == [comment["id"]]
    assert hub.queries.places(comment["id"]) == {"group:club"}
    assert cp["done"] and cp["narrowed"] == 1 and cp["checked"] == 2 and progress(shared) == cp


def test_the_tokens_of_another_authors_revision_under_an_old_id_leave(hub):
    """A revision carol wrote under the old id of alice's club shift (her tombstone, in her own inbox) gave
    the record carol's tokens in an older hub's ``shared``; her ``author:`` token alone made ``get`` give her
    alice's club shift (queries now honour it only for the record's author: tests/test_hub_stale_tokens.py).
    The pass takes carol's tokens off, and she does not get it; alice still does."""
    alice, carol = Party("alice"), Party("carol")
    club = alice.shift(CLUB, docid=LEGACY_ID)
    hand_in(hub, "group/club", club)
    squat = signed_doc(carol.key, LEGACY_ID, {"type": "shift", "author": carol.account, "modified": time.time()},
                       deleted=True)
    hub.store.create_database("inbox/carol").bulk_replicated([squat])
    shared = hub.store.database("shared")
    shared.bulk_replicated([squat], vis=["user:carol", f"author:{carol.account}"])   # the older hub's merge
    assert {"user:carol", f"author:{carol.account}"} <= set(shared.get(LEGACY_ID).vis)

    run_pass(hub.store)
    assert shared.get(LEGACY_ID).vis == sorted(["group:club", f"author:{alice.account}"])
    assert hub.queries.get(carol.account, "carol", [LEGACY_ID])["rows"] == []
    assert hub.queries.get(alice.account, "alice", [LEGACY_ID])["rows"]


def test_a_store_todays_merge_wrote_is_left_as_it_is(hub):
    """Shifts and comments of every kind of place, edits, a conflict, a deleted comment, a comment answering a
    comment, as today's merge tokens them: the pass checks every document and changes none (tokens and index
    entries), and a second pass neither."""
    alice, bob, carol = Party("alice"), Party("bob"), Party("carol")
    shift, comment = club_thread(hub, alice, bob)
    edited = bob.edit(comment, text="typo fixed")
    hand_in(hub, "group/club", edited)
    everywhere = bob.comment(shift, shift["body"]["audience"], "to all")   # so far only master holds it: no
    hand_in(hub, "master", everywhere)                                      # group's token (none took it yet)
    assert "group:other" not in hub.store.database("shared").get(everywhere["id"]).vis
    hand_in(hub, "group/other", everywhere)
    assert "group:other" in hub.store.database("shared").get(everywhere["id"]).vis
    public = alice.shift(PUBLIC, "https://example.org/q")
    hand_in(hub, "master", public)
    reply, gone = carol.comment(public, PUBLIC), carol.comment(public, PUBLIC, "gone")
    hand_in(hub, "master", reply, gone)
    hand_in(hub, "master", carol.tombstone(gone))
    on_reply = bob.comment(reply, PUBLIC, "on the reply")
    hand_in(hub, "master", on_reply)
    direct = carol.shift({"public": False, "groups": [], "to": ["bob"]})
    hand_in(hub, "inbox/bob", direct)
    hand_in(hub, "inbox/bob", bob.comment(direct, direct["body"]["audience"]))
    branch = bob.edit(comment, text="another copy's edit")   # a second branch beside the edit: a conflict
    hand_in(hub, "group/club", branch)
    assert hub.store.database("shared").get(comment["id"]).conflicts

    before, entries = tokens(hub), index_entries(hub.store)
    cp = run_pass(hub.store, limit=3)
    assert tokens(hub) == before and index_entries(hub.store) == entries
    assert cp["narrowed"] == 0 and cp["checked"] == len(before)
    again = run_pass(hub.store, restart=True)
    assert again["narrowed"] == 0 and tokens(hub) == before


def test_a_comment_takes_no_place_of_its_shifts_that_did_not_take_it(hub):
    """carol's comment on alice's shift (public, in the club, sent to bob) names the club, which refused her
    (she cannot read it): only the places that took it give it their tokens, whether her node's next revision
    leaves the club out or (an older or a hostile node) never does. The merge gave the first revision the club's
    token from the shift's record, and kept it until her node narrowed it: a store that merge wrote loses it to
    the pass (version 3)."""
    alice, carol = Party("alice"), Party("carol")
    shift = alice.shift({"public": True, "groups": ["club"], "to": ["bob"]})
    for dbname in ("group/club", "master", "inbox/bob"):
        hand_in(hub, dbname, shift)
    first = carol.comment(shift, shift["body"]["audience"], "from outside the club")
    hand_in(hub, "master", first)
    shared = hub.store.database("shared")
    authors = [f"author:{alice.account}", f"author:{carol.account}"]
    assert shared.get(first["id"]).vis == sorted(["public", *authors])
    hand_in(hub, "inbox/bob", first)   # bob's inbox takes it: its token, still not the club's
    today = sorted(["public", "user:bob", *authors])
    assert shared.get(first["id"]).vis == today
    assert shared.query("thread", shift["id"], vis=["group:club"])[0] == []
    narrowed = carol.edit(first, audience={"public": True, "groups": [], "to": ["bob"]})
    hand_in(hub, "master", narrowed)
    hand_in(hub, "inbox/bob", narrowed)
    assert shared.get(first["id"]).vis == today
    assert run_pass(hub.store)["narrowed"] == 0

    shared.add_vis(first["id"], ["group:club"])   # what the merge before version 3 gave the first revision
    cp = run_pass(hub.store, restart=True)
    assert cp["narrowed"] == 1 and shared.get(first["id"]).vis == today


@pytest_twisted.ensureDeferred
async def test_a_store_an_older_pass_finished_is_rebuilt_under_this_version(hub):
    """A hub whose store the pass of version 1 finished runs it again: that pass kept a comment's club token
    (the comment's audience named the club, and the shift is there) though the club never took it."""
    alice, carol = Party("alice"), Party("carol")
    shift = alice.shift({"public": True, "groups": ["club"], "to": []})
    for dbname in ("group/club", "master"):
        hand_in(hub, dbname, shift)
    comment = carol.comment(shift, shift["body"]["audience"], "from outside the club")
    hand_in(hub, "master", comment)
    shared = hub.store.database("shared")
    shared.add_vis(comment["id"], ["group:club"])   # the merge before version 3
    shared.set_checkpoint(*tokenrebuild.PASS, {"version": 1, "seq": shared.update_seq(), "checked": 2,
                                               "narrowed": 0, "done": True, "of": shared.update_seq()})
    assert progress(shared) == {}
    cp = await TokenRebuild(hub.store).start()
    assert cp["done"] and cp["narrowed"] == 1 and "group:club" not in shared.get(comment["id"]).vis


def index_entries(store) -> int:
    with store.env.begin() as txn:
        return txn.stat(store._idx_db)["entries"]


def widened_comments(hub, n: int) -> tuple[list[str], list[str]]:
    """``n`` club comments an older hub widened; returns (their ids, the tokens each keeps)."""
    alice, bob = Party("alice"), Party("bob")
    shift, _ = club_thread(hub, alice, bob)
    made = [bob.comment(shift, CLUB, f"c{i}") for i in range(n)]
    hand_in(hub, "group/club", *made)
    shared = hub.store.database("shared")
    keep = shared.get(made[0]["id"]).vis
    for c in made:
        shared.add_vis(c["id"], ["public"])
    return [c["id"] for c in made], keep


def test_the_pass_resumes_after_an_interruption(hub, tmp_path, monkeypatch):
    """A chunk commits its documents and its progress together: a chunk that fails half way writes neither,
    and the pass, started again on the reopened store, goes on from the last chunk that committed and
    checks each document once."""
    ids, keep = widened_comments(hub, 7)
    shared = hub.store.database("shared")
    first = rebuild_chunk(hub.store, 4)   # the shift, its first comment and two of these
    assert not first["done"] and first["checked"] == 4
    narrowed = [i for i in ids if shared.get(i).vis == keep]
    assert len(narrowed) == 2

    real, calls = tokenrebuild.Judge.unjustified, []

    def failing(judge, doc):
        calls.append(doc.id)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(judge, doc)

    monkeypatch.setattr(tokenrebuild.Judge, "unjustified", failing)
    with pytest.raises(RuntimeError):
        rebuild_chunk(hub.store, 4)
    assert shared.get(calls[0]).vis != keep, "the failed chunk's first document stays as it was"
    assert progress(shared) == first
    monkeypatch.undo()

    path = hub.store.path
    hub.store.close()
    hub.store = Store(path, map_size=1 << 30)
    cp = run_pass(hub.store, 4)
    shared = hub.store.database("shared")
    assert all(shared.get(i).vis == keep for i in ids)
    assert cp["checked"] == 9 and cp["narrowed"] == 7


@pytest_twisted.ensureDeferred
async def test_a_hub_runs_the_pass_once_in_its_writer_and_on_demand_again(hub, monkeypatch):
    """``TokenRebuild.start`` runs the pass through the store's writer, chunk after chunk, logging its
    progress; once ``shared`` records it done, a start does nothing (nothing written); ``rebuild`` runs it
    again from the first document."""
    ids, keep = widened_comments(hub, 5)
    shared = hub.store.database("shared")
    lines: list[str] = []
    monkeypatch.setattr(tokenrebuild, "LOG_SECONDS", 0.0)
    monkeypatch.setattr(tokenrebuild.log, "info", lambda fmt, **kw: lines.append(fmt.format(**kw)))
    rebuild = TokenRebuild(hub.store, chunk=2)
    cp = await rebuild.start()
    assert cp["done"] and cp["narrowed"] == 5 and all(shared.get(i).vis == keep for i in ids)
    assert any(line.startswith("rebuilding the visibility tokens of shared: 2 documents checked") for line in lines)
    assert lines[-1] == "rebuilt the visibility tokens of shared: 7 documents checked, 5 narrowed"

    shared.add_vis(ids[0], ["public"])   # written after the pass: not ours, and a done pass does not look
    assert await TokenRebuild(hub.store).start() == cp
    assert "public" in shared.get(ids[0]).vis
    again = await rebuild.rebuild()
    assert again["done"] and again["narrowed"] == 1 and shared.get(ids[0]).vis == keep


@pytest_twisted.ensureDeferred
async def test_a_hub_started_on_a_store_an_older_version_wrote_rebuilds_its_tokens(hub):
    """An older hub's store records no pass: the hub's start runs it (in the writer, while it serves) and
    records it done; a store a hub of this version made records it at its first start."""
    ids, keep = widened_comments(hub, 3)
    shared = hub.store.database("shared")
    assert progress(shared) == {}
    hub.start()
    try:
        cp = await hub.tokens.start()   # joins the pass the start began
    finally:
        hub.stop()
    assert cp["done"] and cp["narrowed"] == 3 and progress(shared) == cp
    assert all(shared.get(i).vis == keep for i in ids)
