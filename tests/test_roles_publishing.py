"""The publisher and its outbox without a network: a task.Clock and a recording deliver function."""

from __future__ import annotations

import pytest
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock

from shiftpeer.identity import NodeKey
from shiftpeer.roles.names import FlowError
from shiftpeer.roles.publishing import NotConnected, Publisher
from shiftpeer.roles.user import LocalReplication
from shiftpeer.shifts import Shifts, make_signer
from shiftpeer.store import Store


class Hub:
    """Records deliveries; answers "ok" to groups and known users; may be offline or refuse every call."""

    def __init__(self) -> None:
        self.online = True
        self.unregistered = False
        self.known = {"bob"}
        self.got: list[tuple[str, str, list[str]]] = []

    def deliver(self, doc: dict, targets: list[str]):
        if not self.online:
            return fail(NotConnected("offline"))
        if self.unregistered:
            return fail(FlowError("this key is not registered on this hub: run 'shiftpeer register' first"))
        self.got.append((doc["id"], doc["rev"], list(targets)))
        return succeed({t: "ok" if t.startswith("group:") or t[5:] in self.known
                        else f"error: there is no user '{t[5:]}' on this hub" for t in targets})


@pytest.fixture
def world(tmp_path):
    store = Store(str(tmp_path / "s"))
    key = NodeKey.generate()
    clock = Clock()
    hub = Hub()
    publisher = Publisher(store, key, clock, hub.deliver)
    publisher.start()
    shifts = Shifts(store, key.account_id, make_signer(key), clock)
    yield store, shifts, publisher, hub, clock
    publisher.stop()
    store.close()


def _result(d):
    out = []
    d.addBoth(out.append)
    return out[0]


def test_public_publish_leaves_one_live_copy_in_the_feed(world):
    """The public revision and the private sibling tombstone meet in the feed: one live copy, no conflict."""
    store, shifts, publisher, hub, clock = world
    sid = shifts.create({"space": "Notes", "href": "https://e.example/"})["id"]
    result = _result(publisher.publish(sid, public=True))
    for source in ("user/private", "user/public"):
        LocalReplication(store, source, "user/feed", clock).pump_once()
    feed = store.database("user/feed").get(sid)
    assert feed.rev == result["rev"] and not feed.deleted and feed.conflicts == []
    assert store.database("user/feed").doc_count() == 1
    assert store.database("user/private").get(sid).deleted
    assert hub.got == []  # public goes by replication, not by delivery


def test_targets_accumulate_and_every_new_revision_is_delivered(world):
    """Publishing again keeps earlier targets; an edit is delivered to all of them; an unknown user fails
    alone, leaves the signed audience (a new revision goes to the others) and is never tried again."""
    store, shifts, publisher, hub, clock = world
    sid = shifts.create({"space": "Notes", "href": "https://e.example/"})["id"]
    first = _result(publisher.publish(sid, to=["bob", "ghost"]))
    assert first["targets"] == {"user:bob": "ok", "user:ghost": "error: there is no user 'ghost' on this hub"}
    assert first["audience"] == {"public": False, "groups": [], "to": ["bob"]}
    assert store.database("user/private").get(sid).body["audience"]["to"] == ["bob"]
    assert hub.got[-1] == (sid, first["rev"], ["user:bob"])
    second = _result(publisher.publish(sid, groups=["club"]))
    assert second["audience"] == {"public": False, "groups": ["club"], "to": ["bob"]}
    assert second["targets"] == {"group:club": "ok", "user:bob": "ok"}
    hub.got.clear()
    edit = shifts.edit(sid, {"summary": "v2"})
    clock.advance(0)
    assert [(i, r, sorted(t)) for i, r, t in hub.got] == [(sid, edit["rev"], ["group:club", "user:bob"])]
    hub.got.clear()
    clock.advance(0)
    assert hub.got == []


def test_a_refused_target_named_again_is_tried_again(world):
    """Naming a refused target again (say the user registered since) puts it back in the audience."""
    store, shifts, publisher, hub, clock = world
    sid = shifts.create({"space": "Notes", "href": "https://e.example/"})["id"]
    assert "error" in _result(publisher.publish(sid, to=["ghost"]))["targets"]["user:ghost"]
    assert publisher.pending() == [] and store.database("user/private").get(sid).body["audience"]["to"] == []
    hub.known.add("ghost")
    again = _result(publisher.publish(sid, to=["ghost"]))
    assert again["targets"] == {"user:ghost": "ok"} and again["audience"]["to"] == ["ghost"]


def test_a_refusal_of_the_whole_call_is_retried(world):
    """When the hub refuses the whole delivery (not registered yet), no target is dropped: the next
    revision is delivered to every target."""
    store, shifts, publisher, hub, clock = world
    hub.unregistered = True
    sid = shifts.create({"space": "Notes", "href": "https://e.example/"})["id"]
    result = _result(publisher.publish(sid, to=["bob"]))
    assert "register" in result["targets"]["user:bob"]
    assert store.database("user/private").get(sid).body["audience"]["to"] == ["bob"]
    hub.unregistered = False
    edit = shifts.edit(sid, {"summary": "v2"})
    clock.advance(0)
    assert hub.got[-1] == (sid, edit["rev"], ["user:bob"])
    assert publisher.pending() == []


def test_offline_revisions_wait_in_the_outbox(world):
    """While the hub is unreachable nothing is lost: the pending list keeps the revision until a flush."""
    store, shifts, publisher, hub, clock = world
    hub.online = False
    sid = shifts.create({"space": "Notes", "href": "https://e.example/"})["id"]
    result = _result(publisher.publish(sid, to=["bob"]))
    assert result["targets"]["user:bob"].startswith("pending")
    assert [p[0] for p in publisher.pending()] == [sid]
    hub.online = True
    _result(publisher.flush())
    assert publisher.pending() == [] and hub.got[0][0] == sid


def test_only_the_author_publishes(world):
    """A shift that is not the user's own, or does not exist, cannot be published."""
    store, shifts, publisher, hub, clock = world
    with pytest.raises(FlowError, match="no shift"):
        publisher.publish("missing", public=True)
    other = NodeKey.generate()
    store.database("user/private").put("theirs", {"type": "shift", "author": other.account_id})
    with pytest.raises(FlowError, match="only its author"):
        publisher.publish("theirs", public=True)
    with pytest.raises(FlowError, match="say where"):
        publisher.publish("theirs")
