"""Replication progress: what the status route reports while a pull is under way (over an in-memory TLS
connection), and how `status --watch` and `sync --wait` turn samples into a bar, docs/s and an ETA."""

from __future__ import annotations

import io
import json
import sys
import time
import types

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from shiftpeer import cli
from shiftpeer.api import status as progress
from shiftpeer.sync import AllowAll, SyncFactory
from shiftpeer.sync.testing import MemoryStore, accept_all, connect_pair, peer_id_of


def _factory(clock, store, **kw):
    return SyncFactory(store, None, AllowAll(), reactor=clock, roles=("user",), validator=accept_all,
                       peer_id_of=peer_id_of, **kw)


def _settle(pump, n=200):
    for _ in range(n):
        if not pump.pump():
            break


def test_status_reports_a_pull_under_way_then_caught_up():
    """While a large pull waits on the store, status shows its checkpoint, the source's head, the lag and
    not caught up; once the store catches up, lag 0 and caught up."""
    clock = Clock()
    src_store, dst_store = MemoryStore(), MemoryStore()
    src = src_store.create_database("master")
    for i in range(100):
        src.put(f"d{i}", {"n": i, "author": "x"})
    client = _factory(clock, dst_store, window=2, batch_changes=5)
    pair = connect_pair(client, _factory(clock, src_store, window=2, batch_changes=5), clock)
    _settle(pair.pump)
    held: list[Deferred] = []
    inner = pair.client.replications._store_batch
    pair.client.replications._store_batch = lambda *a: held.append(Deferred()) or held[-1]
    handle = pair.client.pull("master", "user/feed", live=True)
    _settle(pair.pump)
    node = types.SimpleNamespace(sync_factory=client, store=dst_store, peer_clients={}, roles=[])

    [r] = progress.replications(node)
    assert (r["direction"], r["remote"], r["local"]) == ("pull", "master", "user/feed")
    assert r["seq"] == 0 and r["remote_seq"] == 100 and r["lag"] == 100 and not r["caught_up"]
    assert r["peer"] == "server" and r["peer_id"] == "server"

    pair.client.replications._store_batch = inner
    while held:
        d = held.pop(0)
        d.callback(None)
        _settle(pair.pump)
    _settle(pair.pump)
    [r] = progress.replications(node)
    assert r["seq"] == r["remote_seq"] == 100 and r["lag"] == 0 and r["caught_up"] and handle.is_caught_up

    src.put("late", {"n": -1, "author": "x"})   # live: the head moves, the lag follows it back to 0
    _settle(pair.pump)
    [r] = progress.replications(node)
    assert r["remote_seq"] == 101 and r["lag"] == 0 and r["docs"] == 101


def _sample(t: float, seq: int, docs: int, head: int = 1000, connected: bool = True) -> dict:
    caught = seq >= head
    return {"time": t, "peers": [{"address": "hub:7701", "kind": "hub", "connected": connected}],
            "replications": [{"direction": "pull", "local": "user/feed", "remote": "master", "peer": "hub:7701",
                              "peer_id": "h", "seq": seq, "remote_seq": head, "lag": head - seq,
                              "caught_up": caught, "docs": docs, "live": True}]}


class _Scripted:
    """Stands in for ApiClient: answers GET /status with the given samples, the last one repeated."""

    def __init__(self, samples):
        self.samples = list(samples)

    def call(self, method, path, body=None, query=None):
        assert (method, path) == ("GET", "/status")
        return self.samples.pop(0) if len(self.samples) > 1 else self.samples[0]


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_sync_wait_draws_a_bar_with_rate_and_eta_on_a_terminal(monkeypatch):
    """On a terminal, `sync --wait` redraws one line with a bar, docs/s and the ETA, then says it is in step."""
    client = _Scripted([_sample(0, 0, 0), _sample(1, 250, 250), _sample(2, 500, 500), _sample(3, 1000, 1000)])
    err, out = _Tty(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    args = types.SimpleNamespace(wait=True, timeout=None, json=False)
    assert cli.cmd_sync(client, args) == 0
    drawn = err.getvalue()
    assert "\r\x1b[K[" in drawn and "250/1,000  250 docs/s  ETA 0:03" in drawn
    assert "500/1,000  250 docs/s  ETA 0:02" in drawn and "[############............]  50%" in drawn
    assert out.getvalue() == "in step: 1 peer(s) connected, 1 replication(s) caught up\n"


def test_sync_wait_prints_plain_lines_when_not_a_terminal_and_gives_up_at_the_timeout(monkeypatch):
    """Off a terminal `sync --wait` prints plain progress lines (no escapes), and --timeout ends it with
    exit 1 and the reason on standard error."""
    clock = iter(range(0, 100, 3))
    client = _Scripted([_sample(0, 0, 0, connected=False)])
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    args = types.SimpleNamespace(wait=True, timeout=5.0, json=False)
    try:
        cli.cmd_sync(client, args)
    except cli.CliError as e:
        assert e.status == cli.EXIT_ERROR and "not in step after 5s: not connected to hub hub:7701" in e.message
    else:
        raise AssertionError("sync --wait did not time out")
    assert "\x1b" not in err.getvalue() and "0/1,000  - docs/s  ETA --:--  (not connected to hub hub:7701)" in err.getvalue()


def test_status_watch_shows_rates_for_what_is_behind(monkeypatch):
    """`status --watch` (not a terminal) prints each refresh with the replication's progress line."""
    client = _Scripted([_sample(0, 100, 100), _sample(2, 300, 300)])
    out = io.StringIO()
    naps = []

    def nap(s):
        naps.append(s)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(time, "sleep", nap)
    args = types.SimpleNamespace(watch=1.0, json=False, databases=None, limit=None, after=None)
    assert cli.cmd_status(client, args) == 0
    text = out.getvalue()
    assert "pull  master -> user/feed @hub:7701" in text and "lag 700, catching up" in text
    assert "300/1,000  100 docs/s  ETA 0:07" in text and "\x1b" not in text


def test_status_json_of_replications_is_one_document(monkeypatch):
    """status --json prints the route's answer, replications included, as one JSON document."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    args = types.SimpleNamespace(watch=None, json=True, databases=None, limit=None, after=None)
    assert cli.cmd_status(_Scripted([_sample(0, 5, 5)]), args) == 0
    assert json.loads(out.getvalue())["replications"][0]["lag"] == 995


def test_sync_wait_says_what_it_waits_for_before_a_replication_starts(monkeypatch):
    """Before the hub connection is up the terminal line says what it waits for; a replication that starts
    later gets its docs/s from its own first sample."""
    offline = dict(_sample(0, 0, 0, connected=False), replications=[])
    client = _Scripted([offline, _sample(1, 0, 0), _sample(2, 400, 400), _sample(3, 1000, 1000)])
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(time, "sleep", lambda s: None)
    assert cli.cmd_sync(client, types.SimpleNamespace(wait=True, timeout=None, json=False)) == 0
    drawn = err.getvalue()
    assert "\r\x1b[Kwaiting: not connected to hub hub:7701" in drawn
    assert "400/1,000  400 docs/s  ETA 0:02" in drawn
