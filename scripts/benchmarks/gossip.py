"""Gossip benchmark: N full peers in a random mesh of degree 4, shifts published at random peers.

All peers run in this one process (2 cores cannot host 32 processes usefully), each with its own LMDB
store (no fsync), its own Ed25519 key and real mutual TLS over TCP on 127.0.0.1 to its neighbours.
Every shift is signed beforehand by one of 16 authors; publishing writes it into a random peer's
``master`` (``PUBLISH_BATCH`` shifts every ``PUBLISH_GAP`` seconds); the clock stops when every peer
holds every shift.

Measured per mode, from the sync layer's per-connection counters (frame bytes by message type):
  body_ratio  = bytes of ``docs`` frames (plus documents carried inline in ``changes``) received
                across the mesh / ((N - 1) x bytes of all bodies)    -- the publisher needs no copy
  total_ratio = all sync frame bytes received across the mesh / that same minimum
Modes: ``lazy`` (the full-peer gossip: ids first, one body request at a time) and ``flood`` (naive
flooding: every neighbour sends every body it announces, no announce suppression). Flooding moves
four times the bodies, so it runs on the first ``--flood-shifts`` shifts (default 2,000; the ratios
are per body, so they compare).

usage: scripts/bench gossip [--quick] [--json] [--peers N,N] [--shifts K] [--flood-shifts K]
       (--quick: N=8, 1,000 shifts; default N=16 and 32, 10,000 shifts)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import cbor2  # noqa: E402
from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.defer import ensureDeferred, gatherResults  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint  # noqa: E402

from shiftpeer.gossip.core import Gossip  # noqa: E402
from shiftpeer.identity import NodeKey  # noqa: E402
from shiftpeer.identity.signing import sign_doc  # noqa: E402
from shiftpeer.identity.tls import TLSFactory, client_creator, server_creator  # noqa: E402
from shiftpeer.roles.fullpeer import firehose_check  # noqa: E402
from shiftpeer.store import Store  # noqa: E402
from shiftpeer.store.revs import compute_rev  # noqa: E402
from shiftpeer.sync import SyncFactory  # noqa: E402
from shiftpeer.sync.client import outgoing  # noqa: E402

DEGREE = 4
AUTHORS = 16
PUBLISH_BATCH = 20
PUBLISH_GAP = 0.01
TEXT = "lorem ipsum dolor sit amet " * 12   # ~320 bytes of content; a ReplDoc is ~700 bytes


class _Policy:
    def __init__(self, peer: "Peer") -> None:
        self.peer = peer

    def may_read(self, peer_id: str, dbname: str, conn) -> bool:
        return self.peer.gossip.may_read(peer_id, dbname, conn)

    def may_write(self, peer_id: str, dbname: str, conn) -> bool:
        return False


class Peer:
    """One full peer: store, key, SyncFactory with the gossip of ``master``, a TLS listener."""

    def __init__(self, directory: str, mode: str) -> None:
        self.conns: list = []
        self.store = Store(directory, reactor=reactor, sync=False)
        self.key = NodeKey.generate()
        self.gossip = Gossip(self.store, reactor, check=firehose_check, lazy=True, flood=mode == "flood",
                             suppress=mode != "flood")
        self.factory = SyncFactory(self.store, self.key, _Policy(self), reactor=reactor, roles=("full-peer",))
        self.gossip.install(self.factory)
        self.factory.on_connected.append(self.gossip.connected)
        self.factory.on_connected.append(self.conns.append)   # every connection, for its byte counters
        self.db = self.store.database("master")
        self.port = None

    async def listen(self) -> None:
        tls = TLSFactory(server_creator(self.key), False, self.factory)
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(tls)

    async def dial(self, other: "Peer") -> None:
        tls = TLSFactory(client_creator(self.key, expected_peer_id=other.key.account_id), True,
                                  outgoing(self.factory))
        wrapper = await TCP4ClientEndpoint(reactor, "127.0.0.1", other.port.getHost().port).connect(tls)
        await wrapper.wrappedProtocol.when_ready()


def random_regular(n: int, d: int, rng: random.Random) -> list[tuple[int, int]]:
    """A connected random d-regular graph on n nodes (configuration model with retries)."""
    while True:
        stubs = [i for i in range(n) for _ in range(d)]
        rng.shuffle(stubs)
        edges = set()
        ok = True
        for a, b in zip(stubs[::2], stubs[1::2]):
            if a == b or (min(a, b), max(a, b)) in edges:
                ok = False
                break
            edges.add((min(a, b), max(a, b)))
        if not ok:
            continue
        seen, todo = {0}, [0]
        adj = collections.defaultdict(list)
        for a, b in edges:
            adj[a].append(b)
            adj[b].append(a)
        while todo:
            for x in adj[todo.pop()]:
                if x not in seen:
                    seen.add(x)
                    todo.append(x)
        if len(seen) == n:
            return sorted(edges)


def make_shifts(count: int, rng: random.Random) -> list[dict]:
    """Signed public shifts (ReplDocs) by AUTHORS authors."""
    authors = [NodeKey.generate() for _ in range(AUTHORS)]
    docs = []
    for i in range(count):
        key = authors[i % AUTHORS]
        body = {"type": "shift", "author": key.account_id, "space": "Notes", "created": 1_700_000_000 + i,
                "href": f"https://example.org/{rng.randrange(1000)}", "summary": f"shift {i}",
                "content": {"text": TEXT}, "audience": {"public": True, "groups": [], "to": []}}
        docid = f"s{i:07d}"
        rev = compute_rev(None, False, body)
        docs.append({"id": docid, "rev": rev, "deleted": False, "body": body,
                     "sig": sign_doc(key, docid, rev, body, False), "history": [rev]})
    return docs


def received_bytes(peers: list[Peer]) -> tuple[int, int]:
    """(body bytes, all frame bytes) received by every peer's connections, from the sync counters."""
    body = total = 0
    for p in peers:
        for conn in p.conns:
            by_type = getattr(conn, "bytes_in_by_type", {})
            body += by_type.get("docs", 0) + by_type.get("changes_docs", 0)
            total += conn.bytes_in
    return body, total


async def run(n: int, count: int, mode: str, seed: int, docs: list[dict]) -> dict:
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix=f"gossip-{mode}-{n}-")
    peers = [Peer(os.path.join(tmp, f"p{i}"), mode) for i in range(n)]
    try:
        for p in peers:
            await p.listen()
        edges = random_regular(n, DEGREE, random.Random(seed))
        await gatherResults([ensureDeferred(peers[a].dial(peers[b])) for a, b in edges])
        min_body = sum(len(cbor2.dumps(d)) for d in docs) * (n - 1)
        t0 = time.monotonic()
        for start in range(0, count, PUBLISH_BATCH):
            byp = collections.defaultdict(list)
            for d in docs[start:start + PUBLISH_BATCH]:
                byp[rng.randrange(n)].append(d)
            for i, ds in byp.items():
                peers[i].db.bulk_replicated(ds)
            await task.deferLater(reactor, PUBLISH_GAP, lambda: None)
        publish_s = time.monotonic() - t0
        deadline = t0 + max(120.0, count * n / 200.0)
        shown = time.monotonic()
        while True:
            counts = [p.db.doc_count() for p in peers]
            if min(counts) >= count:
                break
            if time.monotonic() - shown > 15:
                shown = time.monotonic()
                print(f"  {mode} N={n}: {time.monotonic() - t0:.0f} s, held min {min(counts)} max {max(counts)}"
                      f" of {count}", file=sys.stderr, flush=True)
            if time.monotonic() > deadline:
                raise SystemExit(f"{mode} N={n}: no convergence by the deadline: {counts}")
            await task.deferLater(reactor, 0.05, lambda: None)
        converge_s = time.monotonic() - t0
        body, total = received_bytes(peers)
        stats = collections.Counter()
        for p in peers:
            stats.update(p.gossip.inflight.counters)
        return {"mode": mode, "peers": n, "shifts": count, "converge_s": round(converge_s, 2),
                "publish_s": round(publish_s, 2), "body_ratio": round(body / min_body, 3),
                "total_ratio": round(total / min_body, 3), "min_body_bytes": min_body,
                "body_bytes": body, "total_bytes": total, "registry": dict(stats)}
    finally:
        for p in peers:
            for c in list(p.factory.connections):
                c.close()
        await task.deferLater(reactor, 0.2, lambda: None)
        for p in peers:
            if p.port is not None:
                await p.port.stopListening()
            p.store.close()
        shutil.rmtree(tmp, ignore_errors=True)


async def main(args: argparse.Namespace) -> dict:
    sizes = [8] if args.quick else [int(x) for x in args.peers.split(",")]
    count = args.shifts or (1000 if args.quick else 10_000)
    docs = make_shifts(count, random.Random(1))
    flood_count = min(count, args.flood_shifts or (1000 if args.quick else 2000))
    runs = []
    for n in sizes:
        lazy = await run(n, count, "lazy", 7, docs)
        print(json.dumps(lazy), file=sys.stderr if args.json else sys.stdout, flush=True)
        flood = await run(n, flood_count, "flood", 7, docs[:flood_count])
        print(json.dumps(flood), file=sys.stderr if args.json else sys.stdout, flush=True)
        row = {"peers": n, "converge_s": lazy["converge_s"], "body_ratio": lazy["body_ratio"],
               "total_ratio": lazy["total_ratio"], "flood_body_ratio": flood["body_ratio"],
               "flood_total_ratio": flood["total_ratio"], "flood_converge_s": flood["converge_s"],
               "shifts": count, "flood_shifts": flood_count, "registry": lazy["registry"]}
        runs.append(row)
    top = dict(runs[-1])
    top["runs"] = runs
    top["mode"] = "one process, real TLS over 127.0.0.1, LMDB without fsync"
    top["loadavg"] = os.getloadavg()
    return top


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--peers", default="16,32")
    ap.add_argument("--shifts", type=int, default=0)
    ap.add_argument("--flood-shifts", type=int, default=0)
    args = ap.parse_args()
    out: dict = {}

    def done(result):
        out.update(result)
        reactor.stop()

    def failed(f):
        print(f.getTraceback(), file=sys.stderr)
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(main(args)).addCallbacks(done, failed))
    reactor.run()
    if not out:
        sys.exit(1)
    print(json.dumps(out))
