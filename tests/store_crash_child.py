"""Crash-test child: writes batches to a store and prints each batch number after its commit.

Usage: python tests/store_crash_child.py STORE_DIR FIRST_BATCH BATCH_SIZE
Runs until killed. Batch k holds documents "k-0" .. "k-(size-1)", written as one replicated batch.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from shiftpeer.store import Store  # noqa: E402
from shiftpeer.store.revs import compute_rev  # noqa: E402


def main() -> None:
    path, first, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = Store(path, map_size=1 << 30)
    db = store.create_database("crash")
    print("ready", flush=True)
    batch = first
    while True:
        docs = []
        for i in range(size):
            body = {"batch": batch, "i": i, "href": f"http://crash.example/{batch}", "created": batch,
                    "pad": "x" * 500}
            rev = compute_rev(None, False, body)
            docs.append({"id": f"{batch}-{i}", "rev": rev, "body": body, "history": [rev]})
        db.bulk_replicated(docs)
        print(batch, flush=True)
        batch += 1


if __name__ == "__main__":
    main()
