"""Deterministic sync protocol tests: two nodes over in-memory TLS (iosim) with a shared Clock."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from shiftpeer.sync import AllowAll, DenyAll, SyncFactory, StaticPolicy
from shiftpeer.sync.testing import MemoryStore, accept_all, connect_pair, peer_id_of, reject_marked


def make_factory(clock, store=None, policy=None, validator=accept_all, **kw):
    return SyncFactory(store if store is not None else MemoryStore(), None, policy or AllowAll(), reactor=clock,
                       roles=("user",), validator=validator, peer_id_of=peer_id_of, **kw)


def fill(store, name, n, prefix="d"):
    db = store.create_database(name)
    for i in range(n):
        db.put(f"{prefix}{i}", {"n": i, "author": "x"})
    return db


def settle(pump, n=200):
    for _ in range(n):
        if not pump.pump():
            break


def result_of(d):
    out = []
    d.addBoth(out.append)
    return out


class Env:
    def __init__(self, cpolicy=None, spolicy=None, cvalidator=accept_all, svalidator=accept_all, **kw):
        self.clock = Clock()
        self.cstore, self.sstore = MemoryStore(), MemoryStore()
        self.cf = make_factory(self.clock, self.cstore, cpolicy, cvalidator, **kw)
        self.sf = make_factory(self.clock, self.sstore, spolicy, svalidator, **kw)
        self.connect()

    def connect(self):
        self.pair = connect_pair(self.cf, self.sf, self.clock)
        self.c, self.s, self.pump = self.pair.client, self.pair.server, self.pair.pump
        settle(self.pump)
        return self.pair


def test_handshake_over_tls():
    """After the TLS handshake both sides know each other's certificate identity and roles."""
    env = Env()
    assert env.c.peer_id == "server" and env.s.peer_id == "client"
    assert env.c.peer_roles == ("user",)


def test_pull_copies_everything_and_checkpoints():
    """A one-shot pull copies every document with its history and stores a checkpoint keyed by peer."""
    env = Env(window=2, batch_changes=7)
    src = fill(env.sstore, "master", 50)
    src.put("d0", {"n": "edited"}, parent=src.get("d0").rev)
    rep = env.c.pull("master", "feed", live=False)
    caught = result_of(rep.caught_up)
    settle(env.pump)
    assert caught == [src.update_seq()]
    dst = env.cstore.database("feed")
    assert dst.snapshot() == src.snapshot()
    assert dst.get_checkpoint("server", "master")["seq"] == src.update_seq()
    assert rep.finished
