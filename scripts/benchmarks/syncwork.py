"""The work a pull costs both nodes, per document, measured the same on a busy or a quiet machine.

Usage: scripts/bench syncwork [--quick] [--json] [--docs N] [--need] [--callgrind]

One process holds both nodes: a source and a receiver, each with its real LMDB store, connected over
in-memory TLS (twisted.test.iosim), and pulls every shift of the source's ``master``. Everything the sync
path does runs (frames, TLS, decoding, revs_diff, the signature check's payload and revision hash, the
store's write with its indexes, checkpoints, acks) except the Ed25519 check itself, stubbed to "valid":
that is a fixed ~60 us a document in the verification processes (``scripts/bench identity``). Store
writes are inline and without fsync.

What it reports is work per document, not wall time: ``scripts/bench sync`` measures the real thing over
real sockets, but this VM's speed swings by up to 3x between minutes (docs/benchmarks.md), so a change of
10% in the code's work is lost in it. ``instructions_per_doc`` (``--callgrind``, valgrind installed) counts
the instructions a document costs over two pull sizes (their difference, so imports and setup cancel out):
the same number on a busy machine as on an idle one, to within a fraction of a percent, and the figure to
compare two versions by. ``cpu_us_per_doc`` is the process CPU time the same way, and swings with the
machine as much as wall time does (56 to 88 us for the same code in one hour): a rough size only.
``--need`` pulls the way a peer built before eager pulls does (changes, need, docs).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

TEXT = "lorem ipsum dolor sit amet, consectetur adipiscing elit " * 16   # ~1 KB shifts, as scripts/bench sync


def fill(directory: str, n: int) -> None:
    """A source store with `n` signed shifts in ``master``."""
    from shiftpeer.identity import NodeKey
    from shiftpeer.identity.signing import sign_doc
    from shiftpeer.store import Store

    key = NodeKey.generate()
    store = Store(os.path.join(directory, "source"), sync=False, map_size=1 << 30)
    db = store.create_database("master")
    sign = functools.partial(sign_doc, key)
    with store.write_txn() as txn:
        for i in range(n):
            body = {"author": key.account_id, "type": "shift", "space": "notes",
                    "href": f"http://example.com/p{i % 500}", "created": 1_700_000_000 + i,
                    "summary": f"shift {i}", "content": {"text": TEXT}}
            db.put(f"shift-{i:08d}", body, sign=sign, txn=txn)
    store.close()


def pull(template: str, need: bool) -> dict:
    """Pull a copy of `template`'s source into an empty receiver; the CPU seconds the pull took."""
    from twisted.internet.defer import succeed
    from twisted.internet.task import Clock

    import shiftpeer.sync.replication as replication
    from shiftpeer.identity import signing
    from shiftpeer.store import Store
    from shiftpeer.sync import AllowAll, SyncFactory, messages
    from shiftpeer.sync.testing import connect_pair, peer_id_of
    from shiftpeer.tuning import tune_interpreter

    tune_interpreter()
    replication.INLINE_STORE_DOCS = 10**9          # every batch stored in this (the only) thread
    signing.check_signature = lambda pk, msg, sig: True   # the Ed25519 check is not what is counted here
    work = tempfile.mkdtemp(prefix="shiftpeer-bench-syncwork-")
    try:
        shutil.copytree(os.path.join(template, "source"), os.path.join(work, "source"))
        clock = Clock()
        source = Store(os.path.join(work, "source"), sync=False, map_size=1 << 30)
        receiver = Store(os.path.join(work, "receiver"), sync=False, map_size=1 << 30)
        features = tuple(f for f in messages.FEATURES if not (need and f == "eager"))

        def factory(store, features=messages.FEATURES):
            return SyncFactory(store, None, AllowAll(), reactor=clock, roles=("user",), peer_id_of=peer_id_of,
                               validator=lambda docs: succeed(signing.verify_chunk(docs)), features=features)

        pair = connect_pair(factory(receiver), factory(source, features), clock)

        def settle() -> None:
            for _ in range(1_000_000):
                if not pair.pump.pump():
                    return

        settle()
        cpu = time.process_time()
        rep = pair.client.pull("master", "feed", live=False)
        done: list = []
        rep.caught_up.addBoth(done.append)
        settle()
        cpu = time.process_time() - cpu
        n = receiver.database("feed").doc_count()
        assert done == [source.database("master").update_seq()] and n == source.database("master").doc_count(), \
            (done, n)
        source.close()
        receiver.close()
        return {"docs": n, "cpu_s": cpu}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def callgrind_instructions(template: str, need: bool) -> int:
    """Instructions the whole process ran for one pull of `template` (valgrind's callgrind)."""
    out = tempfile.mktemp(prefix="shiftpeer-callgrind-")
    try:
        done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                               __file__, "--pull-only", template] + (["--need"] if need else []),
                              capture_output=True, text=True)
        found = re.search(r"Collected : ([\d,]+)", done.stderr)
        if done.returncode != 0 or not found:
            raise SystemExit(f"callgrind failed: {done.stderr[-2000:]}")
        return int(found.group(1).replace(",", ""))
    finally:
        if os.path.exists(out):
            os.unlink(out)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="scripts/bench syncwork", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pulls of 1,000 and 3,000 shifts (default 2,000 and 6,000)")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--docs", type=int, metavar="N", help="the larger pull (the smaller is a third of it)")
    ap.add_argument("--need", action="store_true", help="pull as a peer without eager pulls does")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions with valgrind (slow)")
    ap.add_argument("--pull-only", metavar="TEMPLATE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.pull_only:
        print(json.dumps(pull(args.pull_only, args.need)))
        return
    big = args.docs or (3_000 if args.quick else 6_000)
    small = big // 3
    if small < 1:
        ap.error("--docs must be at least 3")
    if args.callgrind and shutil.which("valgrind") is None:
        ap.error("--callgrind needs valgrind (apt install valgrind)")
    tmp = tempfile.mkdtemp(prefix="shiftpeer-bench-syncwork-")
    try:
        templates = {}
        for n in (small, big):
            templates[n] = os.path.join(tmp, str(n))
            os.makedirs(templates[n])
            fill(templates[n], n)
        runs = {}
        for n in (small, big):   # each pull in a process of its own, as the callgrind counts are
            out = subprocess.run([sys.executable, __file__, "--pull-only", templates[n]]
                                 + (["--need"] if args.need else []), capture_output=True, text=True, check=True)
            runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
        results = {"docs": [small, big], "mode": "need" if args.need else "eager",
                   "cpu_us_per_doc": round((runs[big]["cpu_s"] - runs[small]["cpu_s"]) / (big - small) * 1e6, 1)}
        if args.callgrind:
            counts = {n: callgrind_instructions(templates[n], args.need) for n in (small, big)}
            results["instructions_per_doc"] = round((counts[big] - counts[small]) / (big - small))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.json:
        for k, v in results.items():
            print(f"{k:24} {v}")
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
