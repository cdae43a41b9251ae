"""Revocation on live replications over in-memory TLS (no reactor): when the serving side's Policy
changes its answer, ``revocation.recheck`` ends what it no longer allows and leaves the rest running."""

from __future__ import annotations

from twisted.internet.task import Clock

from shiftpeer.roles.revocation import recheck
from shiftpeer.sync import Policy
from shiftpeer.sync.testing import MemoryStore, connect_pair

from test_sync_iosim import fill, make_factory, settle


class Switch(Policy):
    """Reads and writes allowed per database name, changeable at run time."""

    def __init__(self, read=(), write=()):
        self.read, self.write = set(read), set(write)

    def may_read(self, peer_id, dbname, conn):
        return dbname in self.read

    def may_write(self, peer_id, dbname, conn):
        return dbname in self.write


def test_recheck_ends_revoked_live_feeds_and_pushes_only():
    """After the policy stops allowing one database, recheck ends that live pull (with a forbidden
    error at the puller) and that live push, while another live pull keeps receiving changes."""
    clock = Clock()
    policy = Switch(read={"group/a", "group/b"}, write={"group/a"})
    server_store = MemoryStore()
    fill(server_store, "group/a", 2, "a")
    fill(server_store, "group/b", 2, "b")
    client_store = MemoryStore()
    fill(client_store, "outbox", 1, "o")
    server = make_factory(clock, server_store, policy)
    pair = connect_pair(make_factory(clock, client_store), server, clock)
    settle(pair.pump)
    a = pair.client.pull("group/a", "feed-a", live=True)
    b = pair.client.pull("group/b", "feed-b", live=True)
    push = pair.client.push("outbox", "group/a", live=True)
    settle(pair.pump)
    assert a.is_caught_up and b.is_caught_up and push.is_caught_up
    client = {pair.server.peer_id}
    assert recheck(server, policy, client) == 0
    policy.read.discard("group/a")
    policy.write.discard("group/a")
    assert recheck(server, policy, {"someone else"}) == 0
    assert recheck(server, policy, client, "group/b") == 0
    assert recheck(server, policy, client, "group/a") == 2
    settle(pair.pump)
    errors = []
    a.done.addErrback(lambda f: errors.append(f.value.code))
    assert a.finished and errors == ["forbidden"] and push.finished and not b.finished
    server_store.database("group/a").put("late", {"n": 9, "author": "x"})
    server_store.database("group/b").put("late", {"n": 9, "author": "x"})
    settle(pair.pump)
    assert client_store.database("feed-a").get("late") is None
    assert client_store.database("feed-b").get("late") is not None
