"""`shift resolve ID [--keep REV]` where the branches were published to different places, over real TLS to a real
hub. Another copy of alice's account (a backup restored from before she published to group club) edited the shift
and sent its branch to group other; alice reads other, so her feed brings it back and `shift show` lists it.
A resolve picks the content; it never narrows where the shift is published: the kept revision takes the union of
the live branches' signed audiences (a new signed revision when it names fewer), and every place gets it.

Before, keeping the backup's branch tombstoned the shift in club (the kept revision's audience did not name
club, so the hub refused it there and club became a refused target for good), and keeping alice's revision
left the backup's branch live in other, which the outbox did not know; a public shift kept from a branch that
was not public was tombstoned in master."""

from __future__ import annotations

import cbor2
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.shifts import make_signer
from shiftpeer.store import codec
from shiftpeer.store.revs import compute_rev

HREF = "https://example.org/resolve-audience"


def branch(user, base: dict, **changes) -> dict:
    """The revision another copy of ``user``'s account writes on ``base`` (a repl doc), signed by the key."""
    body = {**base["body"], **changes, "modified": base["body"]["modified"] + 1}
    rev = compute_rev(base["rev"], False, body)
    return {"id": base["id"], "rev": rev, "deleted": False, "body": body, "history": [rev, *base["history"]],
            "sig": make_signer(user.key)(base["id"], rev, body, False)}


def only(db, docid: str) -> dict | None:
    """The one live revision of a document (its body and rev), None when it has none or more than one."""
    doc = db.get(docid)
    if doc is None or doc.deleted or doc.conflicts:
        return None
    return {"rev": doc.rev, **doc.body}


async def groups(mesh) -> None:
    """alice owns club (bob reads it) and other (carol reads it)."""
    alice = mesh["alice"]
    for group, reader in (("club", "bob"), ("other", "carol")):
        await alice.flows.group("new", group)
        await alice.flows.group("invite", group, user=reader, level="read")
        await mesh[reader].flows.group("join", group)


async def backup_branch_in_other(mesh, **publish) -> tuple[str, str]:
    """alice's shift, published (``publish``) by this copy; the backup's branch, made on the revision before
    that publish and sent to group other, back in alice's feed. Returns (shift id, the backup's rev)."""
    alice = mesh["alice"]
    await groups(mesh)
    sid = alice.new_shift(HREF, summary="before")
    before = alice.store.database("user/private").get_repl_docs([(sid, None)])[0]
    await alice.publish(sid, **publish)
    theirs = branch(alice, before, summary="from the backup",
                    audience={"public": False, "groups": ["other"], "to": []})
    assert await alice.flows.link.deliver(theirs, ["group:other"]) == {"group:other": "ok"}
    await eventually(lambda: theirs["rev"] in alice.shifts.show(sid).conflicts, "alice's show lists the branch")
    return sid, theirs["rev"]


async def everywhere(mesh, sid: str, places: dict, summary: str, rev: str) -> None:
    """Each of ``places`` ({name: database}) holds the shift at ``rev`` alone, with ``summary``."""
    for where, db in places.items():
        await eventually(lambda d=db: (only(d, sid) or {}).get("rev") == rev, f"{where} holds the kept revision")
        assert only(db, sid)["summary"] == summary, where


@pytest_twisted.ensureDeferred
async def test_keeping_a_branch_from_before_the_publish_keeps_the_shift_in_the_group(mesh):
    await mesh.start(users=("alice", "bob", "carol"))
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid, theirs = await backup_branch_in_other(mesh, groups=["club"])
    answer = alice.shifts.resolve(sid, keep=theirs)
    kept = alice.shifts.show(sid)
    assert answer["rev"] == kept.rev and kept.conflicts == []
    await everywhere(mesh, sid, {"club": mesh.hub.db("group/club"), "other": mesh.hub.db("group/other"),
                                 "bob's feed": bob.feed(), "carol's feed": carol.feed(),
                                 "alice's feed": alice.feed()}, "from the backup", kept.rev)
    assert kept.body["audience"] == {"public": False, "groups": ["club", "other"], "to": []}
    publisher = alice.flows.publisher
    await eventually(lambda: publisher.pending() == [], "nothing left to deliver")
    assert publisher.refused(sid) == {} and set(publisher.targets(sid)) == {"group:club", "group:other"}


@pytest_twisted.ensureDeferred
async def test_keeping_this_copy_reaches_the_group_only_the_other_branch_went_to(mesh):
    await mesh.start(users=("alice", "bob", "carol"))
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    sid, theirs = await backup_branch_in_other(mesh, groups=["club"])
    answer = alice.shifts.resolve(sid)
    kept = alice.shifts.show(sid)
    assert answer["rev"] == kept.rev and answer["removed"] == [theirs] and kept.conflicts == []
    await everywhere(mesh, sid, {"club": mesh.hub.db("group/club"), "other": mesh.hub.db("group/other"),
                                 "bob's feed": bob.feed(), "carol's feed": carol.feed(),
                                 "alice's feed": alice.feed()}, "before", kept.rev)
    assert kept.body["audience"]["groups"] == ["club", "other"]
    await eventually(lambda: alice.flows.publisher.pending() == [], "nothing left to deliver")


@pytest_twisted.ensureDeferred
async def test_keeping_a_branch_that_was_not_public_keeps_a_public_shift_public(mesh):
    await mesh.start(users=("alice", "bob", "carol"))
    alice, carol = mesh["alice"], mesh["carol"]
    sid, theirs = await backup_branch_in_other(mesh, public=True)
    answer = alice.shifts.resolve(sid, keep=theirs)
    kept = alice.shifts.show(sid)
    assert answer["database"] == "user/public" and kept.rev == answer["rev"]
    await everywhere(mesh, sid, {"master": mesh.hub.db("master"), "shared": mesh.hub.db("shared"),
                                 "other": mesh.hub.db("group/other"), "carol's feed": carol.feed(),
                                 "alice's feed": alice.feed()}, "from the backup", kept.rev)
    assert kept.body["audience"] == {"public": True, "groups": ["other"], "to": []}
    found = await mesh["bob"].flows.query({"filters": {"href": HREF}})
    assert [r["rev"] for r in found["rows"]] == [kept.rev]
    await eventually(lambda: alice.flows.publisher.pending() == [], "nothing left to deliver")


@pytest_twisted.ensureDeferred
async def test_a_resolve_that_widens_nothing_writes_no_new_revision(mesh):
    """Both branches name the same places: the kept revision is kept as it is (tests/test_flows_resolve.py)."""
    await mesh.start(users=("alice", "bob", "carol"))
    alice = mesh["alice"]
    await groups(mesh)
    sid = alice.new_shift(HREF, summary="before")
    await alice.publish(sid, groups=["other"])
    base = alice.store.database("user/private").get_repl_docs([(sid, None)])[0]
    alice.shifts.edit(sid, {"summary": "here"})
    theirs = branch(alice, base, summary="from the backup")
    assert await alice.flows.link.deliver(theirs, ["group:other"]) == {"group:other": "ok"}
    await eventually(lambda: theirs["rev"] in alice.shifts.show(sid).conflicts, "alice's show lists the branch")
    answer = alice.shifts.resolve(sid, keep=theirs["rev"])
    assert answer["rev"] == theirs["rev"] and alice.shifts.show(sid).rev == theirs["rev"]
    await everywhere(mesh, sid, {"other": mesh.hub.db("group/other"), "carol's feed": mesh["carol"].feed()},
                     "from the backup", theirs["rev"])


@pytest_twisted.ensureDeferred
async def test_a_public_branch_elsewhere_makes_the_kept_revision_public(mesh):
    """The backup published its branch publicly (and to other, which brings it to alice's feed) while this copy
    sent the shift to club only: keeping this copy's revision moves the shift to user/public with the union
    audience, and the backup's public branch is tombstoned in master too, so no place keeps it live."""
    await mesh.start(users=("alice", "bob", "carol"))
    alice, bob, carol = mesh["alice"], mesh["bob"], mesh["carol"]
    await groups(mesh)
    sid = alice.new_shift(HREF, summary="before")
    before = alice.store.database("user/private").get_repl_docs([(sid, None)])[0]
    await alice.publish(sid, groups=["club"])
    theirs = branch(alice, before, summary="from the backup",
                    audience={"public": True, "groups": ["other"], "to": []})
    mesh.hub.db("master").bulk_replicated([theirs])   # what the backup's user/public push leaves in master
    assert await alice.flows.link.deliver(theirs, ["group:other"]) == {"group:other": "ok"}
    await eventually(lambda: theirs["rev"] in alice.shifts.show(sid).conflicts, "alice's show lists the branch")
    await eventually(lambda: sid in mesh.hub.ids("shared"), "the backup's branch is public on the hub")

    answer = alice.shifts.resolve(sid)
    kept = alice.shifts.show(sid)
    assert kept.rev == answer["rev"] and kept.conflicts == []
    stored = alice.store.database("user/public").get(sid).body     # stored as a put stores: checked once
    assert cbor2.dumps(stored) == codec.encode_canonical(stored)   # wherever it goes (test_publish_canonical)
    await everywhere(mesh, sid, {"master": mesh.hub.db("master"), "shared": mesh.hub.db("shared"),
                                 "club": mesh.hub.db("group/club"), "other": mesh.hub.db("group/other"),
                                 "bob's feed": bob.feed(), "carol's feed": carol.feed(),
                                 "alice's feed": alice.feed()}, "before", kept.rev)
    assert kept.body["audience"] == {"public": True, "groups": ["club", "other"], "to": []}
    assert answer["database"] == "user/public" and kept.databases == ["user/public", "user/feed"]
    await eventually(lambda: alice.flows.publisher.pending() == [], "nothing left to deliver")
    edited = alice.shifts.edit(sid, {"summary": "after"})   # edits continue in user/public
    assert edited["database"] == "user/public"
    await eventually(lambda: (only(mesh.hub.db("master"), sid) or {}).get("summary") == "after", "the edit public")


@pytest_twisted.ensureDeferred
async def test_a_branch_from_before_a_refusal_does_not_bring_the_refused_name_back(mesh):
    """The hub refused user zed (no such user), so zed left the audience; the backup's branch still names zed.
    Keeping it writes a revision without zed: zed stays refused, so a user who registers that name later
    receives nothing, even after another publish."""
    await mesh.start(users=("alice", "bob", "carol"))
    alice = mesh["alice"]
    await groups(mesh)
    sid = alice.new_shift(HREF, summary="before")
    before = alice.store.database("user/private").get_repl_docs([(sid, None)])[0]
    alice.disconnect()   # offline, nothing is checked: the publish names zed, the hub refuses it on delivery
    await eventually(lambda: not alice.flows.link.connected, "alice offline")
    await alice.publish(sid, groups=["club"], to=["zed"])
    await alice.connect(mesh.hub)
    publisher = alice.flows.publisher
    await eventually(lambda: "user:zed" in publisher.refused(sid), "the hub refused zed")
    theirs = branch(alice, before, summary="from the backup",
                    audience={"public": False, "groups": ["club"], "to": ["zed"]})
    assert await alice.flows.link.deliver(theirs, ["group:club"]) == {"group:club": "ok"}
    await eventually(lambda: theirs["rev"] in alice.shifts.show(sid).conflicts, "alice's show lists the branch")

    answer = alice.shifts.resolve(sid, keep=theirs["rev"])
    kept = alice.shifts.show(sid)
    assert answer["rev"] == kept.rev != theirs["rev"] and kept.body["summary"] == "from the backup"
    assert kept.body["audience"] == {"public": False, "groups": ["club"], "to": []}
    await everywhere(mesh, sid, {"club": mesh.hub.db("group/club"), "bob's feed": mesh["bob"].feed()},
                     "from the backup", kept.rev)
    await eventually(lambda: publisher.pending() == [], "nothing left to deliver")
    assert "user:zed" in publisher.refused(sid) and "user:zed" not in publisher.targets(sid)
