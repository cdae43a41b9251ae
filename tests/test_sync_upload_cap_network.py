"""The upload cap between two real nodes: real TLS on 127.0.0.1, LMDB stores, signature checks. A node capped
at 2 MB/s serves a pull of several MB: it completes, everything arrives, it takes about as long as the cap
says, and an RPC answered by the capped node during the pull does not wait behind it."""

from __future__ import annotations

import time

import pytest_twisted

from test_sync_network import Nodes, bounded, snapshot, until

CAP = 2_000_000   # bytes a second


@pytest_twisted.ensureDeferred
async def test_a_capped_node_serves_a_pull_at_its_cap_over_real_tls(tmp_path):
    """A node capped at 2 MB/s serves ~5 MB over real TLS: the pull completes with every document, takes at
    least 70% of what the cap says, and an RPC answered by the capped node meanwhile takes under a second
    (queued first-in first-out behind the pull's docs it took about two)."""
    async with Nodes(tmp_path) as nodes:
        a, b = nodes("a"), nodes("b", max_upload_bytes_per_second=CAP)
        b.factory.rpc_handlers["echo"] = lambda conn, args: args
        await b.listen()
        src = b.fill("master", 1_500, "m", size=3_000)
        reps = {}
        svc = a.connect(b, on_connected=lambda conn: reps.setdefault("pull", conn.pull("master", "feed")))
        conn = await bounded(svc.when_authenticated(), what="the connection")
        started = time.monotonic()
        await until(lambda: a.store.has_database("feed") and a.store.database("feed").doc_count() > 100,
                    timeout=30, what="the first documents")
        asked = time.monotonic()
        assert await bounded(conn.call("echo", {"x": 1}), what="the RPC answer") == {"x": 1}
        answered = time.monotonic() - asked
        await bounded(reps["pull"].caught_up, seconds=60, what="the pull to catch up")
        elapsed = time.monotonic() - started
        served = next(iter(b.factory.connections))
        sent = served.bytes_out
        assert sent > 4_500_000
        assert snapshot(a.store.database("feed")) == snapshot(src)
        assert elapsed >= 0.7 * sent / CAP, (elapsed, sent)
        assert answered < 1.0, answered      # not behind the megabytes the pull had queued
        assert b.factory.upload_cap.paused_seconds() >= 0.5 * sent / CAP
