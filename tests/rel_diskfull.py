"""Fill a store until it is full, then check it: run in a child process, because a store that maps its file
writable (LMDB writemap) dies of SIGBUS when the filesystem fills, and that must not take pytest with it.

``python tests/rel_diskfull.py STORE_DIR FILLER [--map-size BYTES]`` writes transactions of 20 documents
until a write fails, deletes FILLER (space comes back), writes again, and prints one JSON line:
``{"error": type, "message": str, "committed": n, "intact": bool, "after_space": bool}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from shiftpeer.store import Store, StoreError
from shiftpeer.store.store import DEFAULT_MAP_SIZE


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("filler")
    ap.add_argument("--map-size", type=int, default=DEFAULT_MAP_SIZE)
    args = ap.parse_args(argv)
    out = {"error": None, "message": None, "committed": 0, "intact": False, "after_space": False}
    store = Store(args.store, map_size=args.map_size, reactor=_NoReactor())
    db = store.create_database("master")
    for i in range(100_000):   # bounded: a 1 KiB * 20 batch each, far past any test filesystem
        try:
            with store.write_txn() as txn:
                for j in range(20):
                    db.put(f"d{i}-{j}", {"text": "y" * 1000, "i": i}, txn=txn)
        except Exception as e:  # what kind of error is the point of the test
            out["error"], out["message"] = type(e).__name__, str(e)
            out["store_error"] = isinstance(e, StoreError)
            break
        out["committed"] = i + 1
    n = out["committed"] * 20
    out["intact"] = db.doc_count() == n and all(db.get(f"d{i}-0") is not None for i in range(out["committed"]))
    if os.path.exists(args.filler):
        os.unlink(args.filler)
    try:
        with store.write_txn() as txn:
            db.put("after", {"text": "space is back"}, txn=txn)
        out["after_space"] = db.get("after") is not None and db.doc_count() == n + 1
    except Exception as e:
        out["after_error"] = f"{type(e).__name__}: {e}"
    store.close()
    print(json.dumps(out), flush=True)


class _NoReactor:
    """The store only needs a reactor for its writer thread and notifications, neither used here."""

    running = False

    def callFromThread(self, f, *a):  # pragma: no cover - not used without subscribers
        f(*a)


if __name__ == "__main__":
    main(sys.argv[1:])
