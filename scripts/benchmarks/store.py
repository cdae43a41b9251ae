"""Store benchmark: write shift-like ~1 KB documents in batches, read them back, look up URLs.

Usage: scripts/bench store [--quick] [--vis] [--json]

What each number measures (all wall-clock, on whatever else the machine is doing; the CPU seconds of this
process are printed beside each, and the load average, so I/O waits and contention can be told apart):
* write: 100,000 documents (10,000 with --quick) through the replicated write path a pull uses, in batches of
  1,000, fsync on (sync=True, the default), all seven indexes maintained in the same transaction. The input
  ReplDocs (bodies as dicts, as the sync code hands them over) are built before timing; the store checks,
  encodes and indexes every one. `write_docs_per_s` is the way a node writes: `bulk_replicated_async` with
  up to 8 batches in flight (a pull's window, shiftpeer.sync.replication.WINDOW), written by the store's
  writer thread, batches queued behind a commit group-committed (at most 4 per transaction), each counted
  only when its Deferred fires after its commit and fsync.
  `write_serial_docs_per_s` is one synchronous `bulk_replicated` call per batch into a second store: one
  transaction and one fsync each, nothing overlapped.
* read: every document back in changes order through `docs_since` pages of READ_PAGE (100): each record and
  the winning body decoded once (libipld's decoder, cbor2 for what it refuses), as full `Doc`s. `read_docs_per_s_page_1000` is the same
  read in pages of 1,000: a page of 1,000 decoded documents (~1.7 MB) no longer fits a core's L2 cache
  (512 KB here), and every document then costs ~1.5-2x the CPU (docs/store.md, *Reading in pages*).
* href lookup: 10,000 `query("href", url)` calls for random page URLs (about 10 documents each, every one
  returned as a decoded `Doc`), p50 and p99 of the per-call time.
* disk: pages in use after the writes, divided by the documents (and the size of a compacting copy).
* machine_loop_s: a fixed Python loop timed before and after (scripts/benchmarks/machine.py), since this
  VM's own speed moves by up to ~1.7x from one minute to the next.
--vis gives every document a "public" visibility token too (a hub's shared database: every index entry is
written twice). With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from machine import loop_seconds  # noqa: E402  (scripts/benchmarks/machine.py: the VM's speed now)
from shiftpeer.store import Store  # noqa: E402
from shiftpeer.store.codec import in_canonical_order  # noqa: E402
from shiftpeer.store.revs import compute_rev  # noqa: E402
from shiftpeer.tuning import tune_interpreter  # noqa: E402
from shiftpeer.sync.replication import WINDOW  # noqa: E402  (a pull keeps this many batches in flight)

WORDS = ("shift space note highlight image swap source edit page web climate group feed public private "
         "share comment author domain link text color font size layout update replicate peer hub").split()


def make_docs(n: int, rng: random.Random) -> tuple[list[dict], list[str]]:
    """ReplDocs shaped like real shifts: ~1 KB canonical CBOR body and a 64-byte signature."""
    domains = [f"www.site{i}.example.org" for i in range(max(10, n // 100))]
    hrefs = [f"https://{rng.choice(domains)}/articles/{i}/some-page-title-{rng.randrange(10**6)}.html"
             for i in range(max(10, n // 10))]
    authors = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(52)) for _ in range(500)]
    spaces = ["Notes", "Highlights", "ImageSwap", "SourceShift", "Comments", "Fisheye"]
    t0 = 1_700_000_000.0
    docs = []
    for i in range(n):
        href = rng.choice(hrefs)
        body = {
            "type": "shift",
            "space": rng.choice(spaces),
            "href": href,
            "domain": href.split("/")[2],
            "summary": " ".join(rng.choice(WORDS) for _ in range(12)),
            "content": {
                "text": " ".join(rng.choice(WORDS) for _ in range(100)),
                "position": {"x": rng.randrange(2000), "y": rng.randrange(8000)},
                "selector": f"#main > div.content > p:nth-child({rng.randrange(40)})",
            },
            "author": rng.choice(authors),
            "created": t0 + i * 0.5 + rng.random(),
            "modified": t0 + i * 0.5 + rng.random(),
        }
        body = in_canonical_order(body)  # as a put stores it, and every node it replicates to
        rev = compute_rev(None, False, body)
        docs.append({"id": secrets.token_urlsafe(16), "rev": rev, "deleted": False, "body": body,
                     "sig": secrets.token_bytes(64), "history": [rev]})
    return docs, hrefs


def write_pipelined(db, docs: list[dict], batch: int, vis, window: int) -> tuple[float, float]:
    """Write `docs` with bulk_replicated_async, keeping up to `window` batches in flight; returns when the
    last one is committed, with the writer thread's seconds running batches and committing. Runs the
    reactor for the duration (the writer reports back through it)."""
    from twisted.internet import defer, reactor

    batches = [docs[i : i + batch] for i in range(0, len(docs), batch)]
    failures: list = []
    busy: list = []

    async def run() -> None:
        inflight: list = []
        for b in batches:
            if len(inflight) >= window:
                await inflight.pop(0)
            inflight.append(db.bulk_replicated_async(b, vis=vis))
        for d in inflight:
            await d
        w = db._store._writer
        busy.extend((w.run_seconds, w.commit_seconds))

    def go() -> None:
        d = defer.ensureDeferred(run())
        d.addErrback(failures.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=False)
    if failures:
        failures[0].raiseException()
    return busy[0], busy[1]


#: Documents per `docs_since` page when reading back: a page's decoded documents stay in the L2 cache.
READ_PAGE = 100


def read_all(db, n: int, page_size: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to read every document of `db` in changes order, `page_size` at a time."""
    t, c = time.perf_counter(), time.process_time()
    seen, since = 0, 0
    while True:
        page = db.docs_since(since, limit=page_size)
        if not page:
            break
        seen += len(page)
        since = page[-1].seq
        del page   # the next page is built without this one alive, as a reader that moves on
    elapsed, used = time.perf_counter() - t, time.process_time() - c
    assert seen == n, (seen, n)
    return elapsed, used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 documents instead of 100,000")
    ap.add_argument("--vis", action="store_true", help='index every document under a "public" token too')
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()
    import cbor2

    # cbor2 must be its compiled decoder (cbor2 >= 6: cbor2._cbor2; 5.x: the _cbor2 module), and stored bodies are
    # read with libipld's where it is installed (shiftpeer/store/codec.py decode_body).
    c_cbor = getattr(cbor2.loads, "__module__", "") in ("cbor2._cbor2", "_cbor2")
    from shiftpeer.store.codec import BODY_DECODER as decoder
    n = 10_000 if args.quick else 100_000
    loop_before = loop_seconds()
    vis = ["public"] if args.vis else None
    batch = 1000
    rng = random.Random(1)
    docs, hrefs = make_docs(n, rng)
    from shiftpeer.store import codec

    avg_body = sum(len(codec.encode_body(d["body"])) for d in docs[:1000]) / 1000
    # The prepared input is the benchmark's, not the store's: keep the cyclic GC from rescanning it.
    gc.collect()
    gc.freeze()
    tune_interpreter()  # the interpreter settings a node's store service makes (shiftpeer/tuning.py)
    tmp = tempfile.mkdtemp(prefix="shiftpeer-bench-")
    try:
        store = Store(os.path.join(tmp, "store"))
        db = store.create_database("shared")
        load_before = os.getloadavg()[0]
        cpu = time.process_time
        t, c = time.perf_counter(), cpu()
        commits_before = store.env.info()["last_txnid"]
        writer_run_s, writer_commit_s = write_pipelined(db, docs, batch, vis, window=WINDOW)
        write_s, write_cpu = time.perf_counter() - t, cpu() - c
        commits = store.env.info()["last_txnid"] - commits_before

        serial = Store(os.path.join(tmp, "serial"))
        sdb = serial.create_database("shared")
        t = time.perf_counter()
        for i in range(0, n, batch):
            sdb.bulk_replicated(docs[i : i + batch], vis=vis)
        serial_s = time.perf_counter() - t
        serial.close()
        shutil.rmtree(os.path.join(tmp, "serial"))

        read_s, read_cpu = read_all(db, n, READ_PAGE)
        read_big_s, read_big_cpu = read_all(db, n, 1000)

        lookups = [rng.choice(hrefs) for _ in range(10_000)]
        times = []
        found = 0
        pc = time.perf_counter
        c = cpu()
        for href in lookups:
            t = pc()
            res, _ = db.query("href", href, limit=50)
            times.append(pc() - t)
            found += len(res)
        lookup_cpu = cpu() - c
        load_after = os.getloadavg()[0]
        times.sort()
        p50 = times[len(times) // 2] * 1000
        p99 = times[int(len(times) * 0.99)] * 1000

        used = store.disk_usage()["used_bytes"]
        compact_dir = os.path.join(tmp, "compact")
        os.mkdir(compact_dir)
        store.env.copy(compact_dir, compact=True)
        compact = os.path.getsize(os.path.join(compact_dir, "data.mdb"))
        stats = {}
        with store.env.begin() as txn:
            for name, h in (("docs", store._docs_db), ("idx", store._idx_db), ("log", store._log_db)):
                s = txn.stat(h)
                stats[name] = (s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]) * s["psize"] / n
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "docs": n,
        "write_docs_per_s": round(n / write_s),
        "write_serial_docs_per_s": round(n / serial_s),
        "write_commits": commits,
        "writer_busy_run_s": round(writer_run_s, 2),
        "writer_busy_commit_s": round(writer_commit_s, 2),
        "read_docs_per_s": round(n / read_s),
        "read_page_docs": READ_PAGE,
        "read_docs_per_s_page_1000": round(n / read_big_s),
        "href_lookup_p50_ms": round(p50, 4),
        "href_lookup_p99_ms": round(p99, 4),
        "disk_bytes_per_doc": round(used / n),
        "disk_bytes_per_doc_compacted": round(compact / n),
        "avg_body_bytes": round(avg_body),
        "vis_tokens": bool(vis),
        "write_cpu_us_per_doc": round(write_cpu / n * 1e6, 1),
        "read_cpu_us_per_doc": round(read_cpu / n * 1e6, 1),
        "read_cpu_us_per_doc_page_1000": round(read_big_cpu / n * 1e6, 1),
        "href_lookup_cpu_mean_ms": round(lookup_cpu / len(lookups) * 1000, 4),
        "loadavg": [round(load_before, 2), round(load_after, 2)],
        "machine_loop_s": [loop_before, loop_seconds()],
        "cbor2_c": c_cbor,
        "body_decoder": decoder,
    }
    print(f"documents:          {n:,} (avg body {avg_body:.0f} bytes CBOR + 64-byte sig), batches of {batch}")
    tokens = '"*" and "public"' if vis else '"*"'
    print(f"write:              {result['write_docs_per_s']:,} docs/s (bulk_replicated_async, {WINDOW} batches in flight, "
          f"{commits} commits with fsync, 7 indexes under {tokens}); CPU {write_cpu:.1f} s of {write_s:.1f} s")
    print(f"  writer thread:    {writer_run_s:.1f} s running the batches (the LMDB half), {writer_commit_s:.1f} s in "
          f"commits (page writes + fsync, GIL released), idle the rest")
    print(f"write, serial:      {result['write_serial_docs_per_s']:,} docs/s (one bulk_replicated call, "
          f"transaction and fsync per batch, nothing overlapped)")
    print(f"read (changes):     {result['read_docs_per_s']:,} docs/s (docs_since, record + body decoded once each, "
          f"pages of {READ_PAGE}, bodies by {decoder}, cbor2 C decoder: {'yes' if c_cbor else 'NO'}); CPU {read_cpu:.2f} s of {read_s:.2f} s")
    print(f"  pages of 1,000:   {result['read_docs_per_s_page_1000']:,} docs/s; CPU {read_big_cpu:.2f} s of "
          f"{read_big_s:.2f} s")
    print(f"href lookup:        p50 {p50:.3f} ms, p99 {p99:.3f} ms over 10,000 lookups ({found / 10_000:.1f} docs each, "
          f"decoded); CPU mean {result['href_lookup_cpu_mean_ms']:.3f} ms")
    print(f"disk per doc:       {result['disk_bytes_per_doc']:,} bytes (pages in use), "
          f"{result['disk_bytes_per_doc_compacted']:,} bytes after compacting copy")
    print("pages per doc:      " + ", ".join(f"{k} {v:.0f} B" for k, v in stats.items()))
    print(f"load average:       {load_before:.2f} before, {load_after:.2f} after ({os.cpu_count()} CPUs)")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
