"""The hub's ``shared`` merges every source database into one record per id, and each source only checks
the authors it holds itself: so a key that wrote its own revision under another author's id into a
database of its own (its inbox) added its tokens to that id's record in ``shared``, and ``get`` and
queries then gave it the other author's winning revision. Ids made now name their author, which every
node checks; ids made before that (no dot) did not, and a tombstone, which names no audience and loses to
any live revision, opened such a group shift to anyone who knew its id. The merge now leaves out a
revision by another author than the one ``shared`` holds for the id, and logs it.
Real hub and users over TLS on 127.0.0.1."""

from __future__ import annotations

import time

import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from tests.helpers_identity import signed_doc

LEGACY_ID = "Zq3legacyShiftId0001"   # an id made before ids named their author: no dot


@pytest_twisted.ensureDeferred
async def test_a_revision_under_another_authors_old_id_opens_nothing_in_shared(mesh):
    await mesh.start(users=("alice", "bob", "carol"))
    alice, carol = mesh["alice"], mesh["carol"]
    await mesh.club_shift("https://example.org/warmup")   # club: alice owns it, bob reads; carol is not in it
    secret = signed_doc(alice.key, LEGACY_ID, {
        "type": "shift", "space": "Notes", "href": "https://example.org/club", "summary": "club only",
        "author": alice.account, "created": time.time(),
        "audience": {"public": False, "groups": ["club"], "to": []}})
    assert await alice.flows.link.deliver(secret, ["group:club"]) == {"group:club": "ok"}
    await eventually(lambda: LEGACY_ID in mesh.hub.ids("shared"), "the club shift in shared")

    tomb = signed_doc(carol.key, LEGACY_ID, {"type": "shift", "author": carol.account, "modified": time.time()},
                   deleted=True)
    assert await carol.flows.link.deliver(tomb, ["user:carol"]) == {"user:carol": "ok"}   # her own inbox
    inbox = mesh.hub.db("inbox/carol")
    await eventually(lambda: inbox.get(LEGACY_ID) is not None, "carol's tombstone in her inbox")
    await eventually(lambda: mesh.hub.hub.merger.merge_once("inbox/carol") is False, "the inbox merged")

    assert not (await carol.flows.link.call("get", {"ids": [LEGACY_ID]}))["rows"]
    assert not (await carol.flows.link.call("query", {"filters": {"href": "https://example.org/club"}}))["rows"]
    assert "user:carol" not in mesh.hub.db("shared").get(LEGACY_ID).vis
    assert (await mesh["bob"].flows.link.call("get", {"ids": [LEGACY_ID]}))["rows"]   # the club still reads it
