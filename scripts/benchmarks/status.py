"""Status benchmark: status and metrics of a node whose store holds a hub's million logical databases.

Usage: scripts/bench status [--quick] [--databases N] [--json]

Creates N empty inboxes (1,000,000; 20,000 with --quick) plus 500 holding 1-7 documents, in one write
transaction, then measures:

1. the walk status made before it was bounded (every database's counts on the reactor thread) and the
   size of its JSON, as the baseline;
2. on a running node: the census (databases and documents counted in a thread), ``node.status()``
   (min of 20) and its JSON size, a metrics scrape's size, one ``?databases=inbox/`` page (in a thread),
   and how late a 1 ms reactor timer fires while a census runs.

With --json the last line printed is one JSON object with those figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)

from shiftpeer.api.metrics import NodeCollector  # noqa: E402
from shiftpeer.identity import NodeKey  # noqa: E402
from shiftpeer.node import Node  # noqa: E402
from shiftpeer.nodesettings import NodeSettings  # noqa: E402
from shiftpeer.store import Store  # noqa: E402


def make_store(path: str, n: int) -> float:
    """N inboxes, every n//500th with a few documents, in one write transaction; returns seconds."""
    t = time.perf_counter()
    store = Store(path, sync=False, reactor=reactor)
    try:
        with store.write_txn() as w:
            for i in range(n):
                db = store.create_database(f"inbox/u{i:07d}", txn=w)
                if i % max(1, n // 500) == 0:
                    for j in range(i % 7 + 1):
                        db.put(f"d{j}", {"n": j}, txn=w)
    finally:
        store.close()
    return time.perf_counter() - t


def old_walk(path: str) -> tuple[float, int]:
    """What status did before: the counts of every database, on the calling (reactor) thread."""
    store = Store(path, sync=False, reactor=reactor)
    try:
        t = time.perf_counter()
        databases = {}
        for name in store.list_databases():
            db = store.database(name)
            databases[name] = {"docs": db.doc_count(), "seq": db.update_seq()}
        return time.perf_counter() - t, len(json.dumps({"databases": databases}))
    finally:
        store.close()


def scrape_bytes(node: Node) -> int:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    return len(generate_latest(registry))


async def main(args: argparse.Namespace, say) -> dict:
    n = args.databases or (20_000 if args.quick else 1_000_000)
    tmp = tempfile.mkdtemp(prefix="shiftpeer-bench-")
    try:
        path = os.path.join(tmp, "store")
        out: dict = {"databases": n, "create_s": round(make_store(path, n), 2)}
        say(f"created {n:,} databases in {out['create_s']}s")
        walk_s, walk_bytes = old_walk(path)
        out.update(old_status_ms=round(walk_s * 1000), old_status_bytes=walk_bytes)
        say(f"before: status {walk_s * 1000:,.0f} ms on the reactor thread, {walk_bytes:,} bytes of JSON")

        node = Node(NodeSettings(directory=tmp, store_path=path), NodeKey.generate(), reactor=reactor)
        node.startService()
        try:
            await node.when_ready()
            while node.census.as_of is None:
                await task.deferLater(reactor, 0.05, lambda: None)
            runs = []
            for _ in range(20):
                t = time.perf_counter()
                st = node.status()
                runs.append(time.perf_counter() - t)
            out.update(census_s=round(node.census.seconds, 2), status_ms=round(min(runs) * 1000, 2),
                       status_bytes=len(json.dumps(st)), shown=len(st["databases"]),
                       metrics_bytes=scrape_bytes(node))
            say(f"after: census {node.census.count:,} databases, {node.census.docs:,} docs in "
                f"{out['census_s']}s (thread); status {out['status_ms']} ms, {out['status_bytes']:,} bytes "
                f"({out['shown']} databases shown); metrics {out['metrics_bytes']:,} bytes")
            t = time.perf_counter()
            page = await node.census.page("inbox/", 100, f"inbox/u{n // 2:07d}")
            out["page_ms"] = round((time.perf_counter() - t) * 1000)
            say(f"page of {len(page['rows'])} of {page['total']:,} under inbox/: {out['page_ms']} ms (thread)")
            late = []
            scan = node.census.refresh(force=True)
            while not scan.called:
                t = time.perf_counter()
                await task.deferLater(reactor, 0.001, lambda: None)
                late.append(time.perf_counter() - t)
            late.sort()
            out.update(timer_1ms_p50_ms=round(late[len(late) // 2] * 1000, 1),
                       timer_1ms_p99_ms=round(late[int(len(late) * 0.99)] * 1000, 1),
                       timer_1ms_max_ms=round(late[-1] * 1000, 1), census2_s=round(node.census.seconds, 2))
            say(f"a 1 ms timer during a census of {out['census2_s']}s: p50 {out['timer_1ms_p50_ms']} ms, "
                f"p99 {out['timer_1ms_p99_ms']} ms, max {out['timer_1ms_max_ms']} ms")
        finally:
            await node.stopService()
        out["loadavg"] = os.getloadavg()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 databases instead of 1,000,000")
    ap.add_argument("--databases", type=int, default=0, metavar="N", help="this many databases")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()
    result: dict = {}

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    def done(r: dict) -> None:
        result.update(r)
        reactor.stop()

    def failed(f) -> None:
        print(f.getTraceback(), file=sys.stderr)
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(main(args, say)).addCallbacks(done, failed))
    reactor.run()
    if not result:
        sys.exit(1)
    if args.json:
        print(json.dumps(result))
