"""A flood of refused connections cannot fill the log (shiftpeer/sync/refusallog.py): the first refusal for an
address, network or peer is logged, then at most one summary line per interval, while the counters stay exact.
Deterministic, on a Clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger

from shiftpeer.sync.refusallog import OTHERS, REFUSAL_LOG_INTERVAL, RefusalLog
from test_sync_limits import Mesh, accepted, serving_factory, warnings  # noqa: F401 (a fixture)
from test_sync_limits_network import accepted6


def refusal_lines(warnings: list[str]) -> list[str]:
    return [w for w in warnings if w.startswith("refused ")]


def test_a_flood_from_one_address_logs_one_line_per_interval_and_counts_every_refusal(warnings):
    """1,000 refused connections from one address: one full line at once (saying more are summed up), one
    summary line with the exact number when the interval ends, one more for the next interval's refusals,
    none when an interval passes quietly; the counters count all of them."""
    clock = Clock()
    factory = serving_factory(clock, max_connections_per_address=1)
    accepted(factory, "192.0.2.7")
    for _ in range(1000):
        accepted(factory, "192.0.2.7")
    assert factory.counters["connections_refused.address"] == 1000
    assert factory.counters["connections_refused"] == 1000
    lines = refusal_lines(warnings)
    assert len(lines) == 1, lines
    assert "refused a sync connection from 192.0.2.7" in lines[0] and "max_connections_per_address 1" in lines[0]
    assert "more like it are summed up every 60 s" in lines[0]
    clock.advance(REFUSAL_LOG_INTERVAL - 1)
    assert len(refusal_lines(warnings)) == 1
    clock.advance(1)
    lines = refusal_lines(warnings)
    assert lines[1:] == ["refused 999 more sync connections from 192.0.2.7 in the last 60 s "
                         "(max_connections_per_address 1)"], lines
    for _ in range(5):
        accepted(factory, "192.0.2.7")
    clock.advance(REFUSAL_LOG_INTERVAL)
    assert refusal_lines(warnings)[2:] == ["refused 5 more sync connections from 192.0.2.7 in the last 60 s "
                                           "(max_connections_per_address 1)"]
    clock.advance(REFUSAL_LOG_INTERVAL)     # a quiet interval: nothing to say, and the address is forgotten
    assert len(refusal_lines(warnings)) == 3 and len(factory.limits.refusals) == 0
    accepted(factory, "192.0.2.7")
    assert "refused a sync connection from 192.0.2.7" in refusal_lines(warnings)[3]
    assert factory.counters["connections_refused.address"] == 1006 and len(clock.getDelayedCalls()) == 1


def test_each_address_network_and_the_total_are_followed_apart(warnings):
    """Refusals by different caps and keys each get their first line; a summary names its key and cap."""
    clock = Clock()
    factory = serving_factory(clock, max_connections=6, max_connections_per_address=1, max_connections_per_network=2)
    for host in ("192.0.2.1", "192.0.2.2", "198.51.100.1"):
        accepted(factory, host)
    for _ in range(3):
        accepted(factory, "192.0.2.1")       # address cap
        accepted(factory, "192.0.2.3")       # network cap of 192.0.2.0/24
    for i in range(1, 4):
        accepted6(factory, f"2001:db8:{i}::1")
    for i in range(4, 8):
        accepted6(factory, f"2001:db8:{i}::1")  # total cap (6 open)
    assert [factory.counters[f"connections_refused.{cap}"] for cap in ("address", "network", "total")] == [3, 3, 4]
    lines = refusal_lines(warnings)
    assert len(lines) == 3, lines
    assert "from 192.0.2.1: 1 connections from that address" in lines[0]
    assert "its network 192.0.2.0/24" in lines[1] and "max_connections_per_network 2" in lines[1]
    assert "6 connections are open on this node (max_connections 6)" in lines[2]
    clock.advance(REFUSAL_LOG_INTERVAL)
    assert sorted(refusal_lines(warnings)[3:]) == sorted([
        "refused 2 more sync connections from 192.0.2.1 in the last 60 s (max_connections_per_address 1)",
        "refused 2 more sync connections from network 192.0.2.0/24 in the last 60 s "
        "(max_connections_per_network 2)",
        "refused 3 more sync connections from any address in the last 60 s (max_connections 6)"])


def test_a_peer_over_its_cap_again_and_again_is_summed_up(warnings):
    """An identity retrying past its cap is told each time (the error frame) but logged once per interval."""
    mesh = Mesh(max_connections_per_peer=1)
    mesh.connect("alice")
    for _ in range(4):
        assert mesh.connect("alice").client.peer_error["code"] == "too_many_connections"
    assert mesh.server.counters["connections_refused.peer"] == 4
    assert len([w for w in refusal_lines(warnings) if "from alice" in w]) == 1
    mesh.clock.advance(REFUSAL_LOG_INTERVAL)
    assert refusal_lines(warnings)[-1] == ("refused 3 more sync connections from peer alice in the last 60 s "
                                           "(max_connections_per_peer 1)")


def test_the_keys_followed_are_bounded():
    """Past max_keys, refusals of keys not followed yet are summed up under one key instead of growing the
    table (a flood of identities or networks cannot use it to grow memory)."""
    said: list[str] = []
    log = Logger(observer=lambda event: said.append(event["log_format"].format(**event)))
    clock = Clock()
    refusals = RefusalLog(clock, log, interval=10, max_keys=2)
    for key in ("a", "b", "c", "d", "d"):
        refusals.refused(key, key, "cap 1", "refused {who}", who=key)
    assert len(refusals) == 3
    assert said == ["refused a; more like it are summed up every 10 s", "refused b; more like it are summed up "
                    "every 10 s", "refused c; more like it are summed up every 10 s"]
    clock.advance(10)
    assert said[3:] == ["refused 2 more sync connections from other addresses and peers in the last 10 s (cap 1)"]
    assert OTHERS in refusals._quiet
    clock.advance(10)
    assert len(refusals) == 0 and len(said) == 4
