"""`shift publish --group` then `shift edit` while the hub is unreachable: on reconnect the edit reaches the group
and its readers, nothing lost, and it is delivered exactly once (the outbox records it; later reconnects and
commits send nothing again). tests/test_flows_publish.py covers the same for a user target (an inbox)."""

from __future__ import annotations

import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)

HREF = "https://example.org/offline-group-edit"


def counting(publisher) -> list[tuple[str, str, tuple]]:
    """Record every delivery the publisher makes: (id, rev, targets)."""
    sent: list[tuple[str, str, tuple]] = []
    deliver = publisher._deliver

    def recorded(doc, targets):
        d = deliver(doc, targets)
        d.addCallback(lambda r: (sent.append((doc["id"], doc["rev"], tuple(targets))), r)[1])
        return d

    publisher._deliver = recorded
    return sent


async def go_offline(user) -> None:
    user.disconnect()
    await eventually(lambda: not user.flows.link.connected, f"{user.name} offline")


@pytest_twisted.ensureDeferred
async def test_an_edit_made_offline_reaches_the_group_once(mesh):
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = await mesh.club_shift(HREF)
    publisher = alice.flows.publisher
    await eventually(lambda: publisher.pending() == [], "the publish delivered")
    sent = counting(publisher)

    await go_offline(alice)
    first = alice.shifts.edit(sid, {"summary": "offline one"})
    last = alice.shifts.edit(sid, {"summary": "offline two"})
    assert [(p[0], p[1]["rev"], p[2]) for p in publisher.pending()] == [(sid, last["rev"], ["group:club"])]

    await alice.connect(mesh.hub)
    club = mesh.hub.db("group/club")
    await eventually(lambda: club.get(sid).rev == last["rev"], "the group holds the last edit")
    await eventually(lambda: bob.feed().get(sid) is not None and bob.feed().get(sid).rev == last["rev"],
                     "bob's feed holds it")
    assert club.get(sid).conflicts == [] and bob.feed().get(sid).body["summary"] == "offline two"
    # the history came with it: the first offline edit is an ancestor, not lost
    held = club.get_repl_docs([(sid, [last["rev"]])])[0]["history"]
    assert held[:2] == [last["rev"], first["rev"]]
    assert sent == [(sid, last["rev"], ("group:club",))]
    assert publisher.targets(sid)["group:club"]["rev"] == last["rev"] and publisher.pending() == []

    # another drop and reconnect, and a commit of something else, send nothing again
    await go_offline(alice)
    await alice.connect(mesh.hub)
    await eventually(lambda: alice.flows.link.connected and alice.flows.link.account.get("name"), "alice back")
    alice.new_shift(HREF + "/unpublished")
    await publisher.flush()
    assert sent == [(sid, last["rev"], ("group:club",))]
