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


def test_push_is_the_peer_pulling():
    """A push replicates our database into the peer's, and its caught_up fires once the peer stored it all."""
    env = Env(window=3, batch_changes=5)
    src = fill(env.cstore, "user/public", 23)
    rep = env.c.push("user/public", "master", live=False)
    caught = result_of(rep.caught_up)
    settle(env.pump)
    assert caught == [src.update_seq()]
    assert env.sstore.database("master").snapshot() == src.snapshot()


def test_both_directions_and_many_databases_at_once():
    """One connection replicates several databases both ways at the same time."""
    env = Env(window=2, batch_changes=4)
    a = fill(env.cstore, "a", 17, "a")
    b = fill(env.sstore, "b", 19, "b")
    c = fill(env.sstore, "c", 11, "c")
    reps = [env.c.push("a", "a2", live=False), env.c.pull("b", "b2", live=False), env.s.push("c", "c2", live=False),
            env.s.pull("a", "a3", live=False)]
    results = [result_of(r.caught_up) for r in reps]
    settle(env.pump)
    assert all(len(r) == 1 and isinstance(r[0], int) for r in results), results
    assert env.sstore.database("a2").snapshot() == a.snapshot()
    assert env.cstore.database("b2").snapshot() == b.snapshot()
    assert env.cstore.database("c2").snapshot() == c.snapshot()
    assert env.sstore.database("a3").snapshot() == a.snapshot()


def test_live_streams_new_changes():
    """After caught_up, a live pull receives each new change as soon as it commits."""
    env = Env()
    src = fill(env.sstore, "master", 3)
    rep = env.c.pull("master", "feed", live=True)
    settle(env.pump)
    assert rep.is_caught_up and not rep.finished
    src.put("new", {"x": 1})
    settle(env.pump)
    assert env.cstore.database("feed").get("new") is not None
    rep.stop()
    settle(env.pump)
    src.put("later", {"x": 2})
    settle(env.pump)
    assert env.cstore.database("feed").get("later") is None
    assert not env.s.replications.feeders


def test_a_live_change_reaches_the_peer_without_waiting_for_a_reactor_turn():
    """A live change goes to TLS and the wire when it commits, not a reactor turn later (Twisted's default
    TLS protocol holds small writes until the next turn: one more on the path of every live change)."""
    env = Env()
    src = fill(env.sstore, "master", 3)
    rep = env.c.pull("master", "feed", live=True)
    settle(env.pump)
    assert rep.is_caught_up
    src.put("new", {"x": 1})
    for _ in range(10):   # move bytes only: the clock never advances
        if not env.pump.pump(advanceClock=False):
            break
    assert env.cstore.database("feed").get("new") is not None


def test_resume_after_disconnect_loses_and_duplicates_nothing():
    """A pull cut off mid-way resumes from its checkpoint on a new connection and ends identical."""
    env = Env(window=1, batch_changes=5)
    src = fill(env.sstore, "master", 40)
    env.c.pull("master", "feed", live=False)
    for _ in range(6):
        env.pump.pump()
    env.pair.client_tls.transport.loseConnection()
    env.pump.pump()
    settle(env.pump)
    dst = env.cstore.database("feed")
    partial = dst.get_checkpoint("server", "master")["seq"]
    assert 0 < partial < src.update_seq()
    seq_before = dst.update_seq()
    env.connect()
    rep = env.c.pull("master", "feed", live=False)
    settle(env.pump)
    assert rep.is_caught_up
    assert dst.snapshot() == src.snapshot()
    # nothing stored twice: every doc written exactly once overall
    assert dst.update_seq() == seq_before + (40 - len([c for c in dst.changes(0) if c.seq <= seq_before]))


def test_new_epoch_forces_full_comparison():
    """When the source database is recreated, the stale checkpoint is ignored and everything is compared."""
    env = Env()
    fill(env.sstore, "master", 5)
    rep = env.c.pull("master", "feed", live=False)
    settle(env.pump)
    env.sstore.delete_database("master")
    src = fill(env.sstore, "master", 3, "z")
    rep = env.c.pull("master", "feed", live=False)
    settle(env.pump)
    assert rep.is_caught_up
    dst = env.cstore.database("feed")
    assert all(dst.get(f"z{i}") for i in range(3))
    assert dst.get_checkpoint("server", "master")["epoch"] == src.epoch


def test_concurrent_edits_converge_with_same_conflicts():
    """Both sides edit the same docs, then replicate both ways: identical winners and conflicts."""
    env = Env(window=2, batch_changes=3)
    a = fill(env.cstore, "db", 10)
    env.c.push("db", "db", live=False)
    settle(env.pump)
    b = env.sstore.database("db")
    for i in range(10):
        a.put(f"d{i}", {"side": "a", "i": i}, parent=a.get(f"d{i}").rev)
        b.put(f"d{i}", {"side": "b", "i": i}, parent=b.get(f"d{i}").rev)
    b.put("only-b", {"x": 1})
    r1, r2 = env.c.pull("db", "db", live=False), env.c.push("db", "db", live=False)
    settle(env.pump)
    assert r1.is_caught_up and r2.is_caught_up
    assert a.snapshot() == b.snapshot()
    assert all(len(a.get(f"d{i}").conflicts) == 1 for i in range(10))


def test_rpc_round_trip_and_unknown_method():
    """call() reaches the peer's handler; an unknown method or a failing handler is an error result."""
    env = Env()
    env.sf.rpc_handlers["add"] = lambda conn, args: {"sum": args["a"] + args["b"], "peer": conn.peer_id}
    env.sf.rpc_handlers["boom"] = lambda conn, args: 1 / 0
    ok, unknown, boom = (result_of(env.c.call("add", {"a": 1, "b": 2})), result_of(env.c.call("nope", {})),
                         result_of(env.c.call("boom", {})))
    settle(env.pump)
    assert ok == [{"sum": 3, "peer": "client"}]
    assert "unknown method" in str(unknown[0].value)
    assert "ZeroDivisionError" in str(boom[0].value)
    assert env.c.peer_id and not env.c._closing


def test_connected_hook_runs_after_authentication():
    """on_connected hooks run once the peer is authenticated, and can start replications."""
    clock = Clock()
    cf, sf = make_factory(clock), make_factory(clock)
    fill(sf.store, "master", 4)
    seen = []
    cf.on_connected.append(lambda conn: seen.append((conn.peer_id, conn.pull("master", "feed"))))
    pair = connect_pair(cf, sf, clock)
    settle(pair.pump)
    assert seen[0][0] == "server" and seen[0][1].is_caught_up
    assert cf.store.database("feed").doc_count() == 4


def test_slow_receiver_slows_the_sender():
    """When the receiver's store never finishes, the sender stops after WINDOW batches instead of buffering."""
    from twisted.internet.defer import Deferred
    env = Env(window=2, batch_changes=5)
    fill(env.sstore, "master", 100)
    stuck = []
    env.c.replications._store_batch = lambda *a: stuck.append(Deferred()) or stuck[-1]
    rep = env.c.pull("master", "feed", live=False)
    settle(env.pump)
    feeder = next(iter(env.s.replications.feeders.values()))
    assert len(feeder.unacked) == 2 and feeder.sent == 10
    assert len(stuck) == 1 and not rep.is_caught_up
    for _ in range(30):
        pending = [d for d in stuck if not d.called]
        if not pending:
            break
        pending[0].callback(None)
        settle(env.pump)
    settle(env.pump)
    assert feeder.sent > 10


def test_resumed_push_reports_the_peers_checkpoint_as_acknowledged():
    """A push resumed on a new connection starts from the peer's checkpoint: once caught up its handle says
    the peer holds everything (seq = the database's head), so status shows no lag and `sync --wait` ends."""
    env = Env(window=2, batch_changes=5)
    src = fill(env.cstore, "user/public", 12)
    first = env.c.push("user/public", "master", live=False)
    settle(env.pump)
    assert first.is_caught_up and first.seq == src.update_seq()
    env.pair.client_tls.transport.loseConnection()
    env.pump.pump()
    settle(env.pump)
    env.connect()
    again = env.c.push("user/public", "master", live=True)
    settle(env.pump)
    assert again.is_caught_up
    assert again.docs == 0                      # nothing sent twice
    assert again.seq == src.update_seq()        # was 0 before: lag 12 until the next local change


def test_a_long_catch_up_is_logged_with_its_count_and_speed():
    """A pull that brings many documents says in the log how many it stored, how long it took and how fast
    (a full peer joining late otherwise shows its progress only in status); a short one stays quiet."""
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []
    observer = lambda event: lines.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        env = Env(window=2, batch_changes=50)
        fill(env.sstore, "master", 150)
        fill(env.sstore, "small", 3)
        rep = env.c.pull("master", "feed", live=False)
        for _ in range(8):                   # the pull takes two seconds of the shared Clock
            env.pump.pump()
            env.clock.advance(0.25)
        settle(env.pump)
        assert rep.is_caught_up
        env.c.pull("small", "small", live=False)
        settle(env.pump)
    finally:
        globalLogPublisher.removeObserver(observer)
    caught = [line for line in lines if line.startswith("caught up")]
    assert len(caught) == 1, caught
    assert caught[0].startswith("caught up feed from master at server: 150 documents in ")
    assert caught[0].endswith("/s)")
