"""A flood of protocol violations cannot fill the log (``SyncFactory.violation_log``, a ``RefusalLog`` of
shiftpeer/sync/refusallog.py): the first connection closed on a violation is logged for a peer (an address
before its hello), then at most one summary line per interval, while every violation is still counted and
its connection closed. Deterministic on a Clock, then once over real TLS on 127.0.0.1.
"""

from __future__ import annotations

import struct

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure

from rel_idle import Client
from shiftpeer.sync.refusallog import MAX_KEYS, MAX_REASONS, OTHER_REASONS, RefusalLog
from test_sync_iosim import settle
import test_sync_limits
from test_sync_limits import Mesh, accepted, serving_factory
from test_sync_network import bounded, until

hub, warnings = test_sync_limits.hub, test_sync_limits.warnings   # the fixtures, as this module's

INTERVAL = 60.0
BAD_CBOR = struct.pack(">I", 5) + b"\xff\xfe\xfd\xfc\xfb"   # a whole frame that is not CBOR
TOO_LARGE = b"\xff\xff\xff\xff"                             # a prefix past max_frame


def closing_lines(warnings: list[str]) -> list[str]:
    return [w for w in warnings if w.startswith("closing the connection to ")]


def summary_lines(warnings: list[str]) -> list[str]:
    return [w for w in warnings if w.startswith("closed ") and "on protocol violations" in w]


def bad_frame_from(factory, host: str, port: int, frame: bytes):
    """A connection from ``host`` that sends ``frame`` first; returns its transport once the node has closed it
    and the connection is gone (its slots freed, as a real close does)."""
    proto, transport = accepted(factory, host, port)
    proto.dataReceived(frame)
    assert transport.disconnecting, "a bad frame must close the connection"
    proto.connectionLost(Failure(ConnectionDone()))
    return transport


def test_a_hundred_bad_frames_from_one_address_log_one_line_per_interval_and_count_every_one(warnings):
    """100 connections from one address each send a bad frame before any hello: each is counted by its code
    and closed with an error frame, but only the first is logged in full (saying more are summed up); the
    interval's end sums up the other 99 by code; a quiet interval forgets the address."""
    clock = Clock()
    factory = serving_factory(clock)
    transports = [bad_frame_from(factory, "192.0.2.7", 4000 + i, BAD_CBOR if i % 5 else TOO_LARGE)
                  for i in range(100)]
    assert factory.counters["violations"] == 100
    assert factory.counters["violation.bad_cbor"] == 80 and factory.counters["violation.frame_too_large"] == 20
    assert all(b'bad_cbor' in t.value() or b'frame_too_large' in t.value() for t in transports)
    lines = closing_lines(warnings)
    assert len(lines) == 1, lines
    assert "frame_too_large" in lines[0] and lines[0].endswith("; more like it are summed up every 60 s")
    clock.advance(INTERVAL - 1)
    assert summary_lines(warnings) == []
    clock.advance(1)
    assert summary_lines(warnings) == ["closed 99 more sync connections with 192.0.2.7 on protocol violations in "
                                       "the last 60 s (bad_cbor 80, frame_too_large 19)"]
    for i in range(3):
        bad_frame_from(factory, "192.0.2.7", 5000 + i, BAD_CBOR)
    clock.advance(INTERVAL)
    assert summary_lines(warnings)[1:] == ["closed 3 more sync connections with 192.0.2.7 on protocol violations "
                                           "in the last 60 s (bad_cbor)"]
    clock.advance(INTERVAL)     # a quiet interval: nothing to say, and the address is forgotten
    assert len(summary_lines(warnings)) == 2 and len(factory.violation_log) == 0
    bad_frame_from(factory, "192.0.2.7", 6000, BAD_CBOR)
    assert len(closing_lines(warnings)) == 2 and factory.counters["violations"] == 104
    assert len(warnings) == 4, warnings     # first, two summaries, first again: nothing else


def test_two_peers_on_one_address_are_followed_apart_by_identity(warnings):
    """After the hello a violation is keyed by the authenticated peer, not its address: alice and bob, both on
    127.0.0.1 over in-memory TLS, each get their first line and their own summary."""
    mesh = Mesh()
    for name, times in (("alice", 4), ("bob", 2)):
        for _ in range(times):
            pair = mesh.connect(name)
            pair.client.transport.write(BAD_CBOR)
            settle(pair.pump)
            assert pair.client.peer_error["code"] == "bad_cbor", pair.client.peer_error
    assert mesh.server.counters["violation.bad_cbor"] == 6
    lines = closing_lines(warnings)
    assert [line.split(":")[0] for line in lines] == ["closing the connection to alice",
                                                       "closing the connection to bob"], lines
    mesh.clock.advance(INTERVAL)
    assert sorted(summary_lines(warnings)) == [
        "closed 1 more sync connections with peer bob on protocol violations in the last 60 s (bad_cbor)",
        "closed 3 more sync connections with peer alice on protocol violations in the last 60 s (bad_cbor)"]


def test_the_addresses_followed_are_bounded(warnings):
    """Past max_keys (4,096 by default) violations from addresses not followed yet are summed up under one key,
    so a flood from many addresses or identities cannot grow the table (or the log) without bound."""
    clock = Clock()
    factory = serving_factory(clock)
    assert factory.violation_log.max_keys == MAX_KEYS
    factory.violation_log.max_keys = 3
    for i in range(10):
        bad_frame_from(factory, f"198.51.100.{i}", 4000, BAD_CBOR)
    assert len(factory.violation_log) == 4 and factory.counters["violations"] == 10
    assert len(closing_lines(warnings)) == 4       # three addresses, then the first of the others
    clock.advance(INTERVAL)
    assert summary_lines(warnings) == ["closed 6 more sync connections with other addresses and peers on protocol "
                                       "violations in the last 60 s (bad_cbor)"]
    clock.advance(INTERVAL)
    assert len(factory.violation_log) == 0


def test_the_reasons_one_summary_names_are_bounded():
    """One key's summary names at most MAX_REASONS reasons, each with its count, most first; the rest are
    counted together."""
    said: list[str] = []
    log = Logger(observer=lambda event: said.append(event["log_format"].format(**event)))
    clock = Clock()
    summed = RefusalLog(clock, log, interval=10, summary="{more} more: {why}")
    summed.refused("k", "k", "first", "first")
    for i in range(MAX_REASONS + 4):
        summed.refused("k", "k", f"r{i:02}", "unused")
    clock.advance(10)
    assert said[1:] == [f"{MAX_REASONS + 4} more: {OTHER_REASONS} 4, "
                        + ", ".join(f"r{i:02} 1" for i in range(MAX_REASONS))]


@pytest_twisted.ensureDeferred
async def test_over_tls_a_peer_sending_bad_frames_is_logged_once_and_counted_each_time(hub, warnings):
    """Over real TLS on 127.0.0.1: five connections of alice each send a bad frame and are closed with an error
    she reads; the hub counts five and logs one line for her; bob's violation gets his own line."""
    port = hub.port.getHost().port
    alice, bob = Client(reactor, port, hub.id), Client(reactor, port, hub.id)
    for client in (alice, alice, alice, alice, alice, bob):
        conn = await bounded(client.connect())
        conn.transport.write(BAD_CBOR)
        await bounded(conn.when_closed(), what="the hub to close the connection")
        assert conn.peer_error["code"] == "bad_cbor", conn.peer_error
    await until(lambda: hub.factory.counters["violation.bad_cbor"] == 6, what="six violations counted")
    lines = closing_lines(warnings)
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"closing the connection to {alice.key.account_id}: bad_cbor")
    assert lines[1].startswith(f"closing the connection to {bob.key.account_id}: bad_cbor")


def test_a_peer_whose_rpc_calls_fail_at_wire_speed_is_logged_once_then_summed_up(warnings):
    """A failing RPC needs no new connection: 50 calls a handler refuses (a bad argument, say) give one
    warning, then one summary by method at the interval's end; every caller still gets its error answer."""
    from test_sync_iosim import Env, result_of

    env = Env()

    def refuse(conn, args):
        raise ValueError("no such group")

    env.sf.rpc_handlers["refuse"] = refuse
    env.sf.rpc_handlers["boom"] = lambda conn, args: 1 / 0
    answers = [result_of(env.c.call("refuse", {})) for _ in range(50)] + [result_of(env.c.call("boom", {}))]
    settle(env.pump)
    assert all(a and "no such group" in str(a[0].value) for a in answers[:50])
    assert "ZeroDivisionError" in str(answers[50][0].value)
    failed = [w for w in warnings if w.startswith("RPC ")]
    assert failed == ["RPC refuse from client failed: no such group; more like it are summed up every 60 s"], failed
    env.clock.advance(INTERVAL)
    assert [w for w in warnings if "more RPC calls" in w] == [
        "50 more RPC calls from peer client failed in the last 60 s (refuse 49, boom 1)"]


def test_a_peer_closing_connection_after_connection_with_an_error_is_logged_once_then_summed_up(warnings):
    """A peer that answers every connection with an error frame (as a violation costs it, a handshake each)
    is named once in full, then summed up by code at the interval's end; each connection still closes."""
    from twisted.internet.task import Clock

    from shiftpeer.sync.testing import connect_pair
    from test_sync_iosim import make_factory

    clock = Clock()
    ours, theirs = make_factory(clock), make_factory(clock)
    pairs = []
    for i in range(5):
        pair = connect_pair(ours, theirs, clock)
        settle(pair.pump)
        pair.server.send("error", code="busy" if i < 4 else "gone", msg="come back later", db=None)
        settle(pair.pump)
        pairs.append(pair)
    assert all(p.client.peer_error is not None for p in pairs)
    closed = [w for w in warnings if " closed the connection: " in w]
    assert closed == ["server closed the connection: busy: come back later; more like it are summed up every 60 s"]
    clock.advance(INTERVAL)
    assert [w for w in warnings if "more sync connections with an error" in w] == [
        "peer server closed 4 more sync connections with an error in the last 60 s (busy 3, gone 1)"]
