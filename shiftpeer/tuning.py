"""Interpreter settings for a process that runs a node (its store, sync and verification).

Set once by the node's store service, and by the benchmarks so they measure the store as a node runs it.
"""

from __future__ import annotations

import gc

#: Container allocations between two young-generation collections (CPython's default is 700). A bulk read
#: or a received batch builds thousands of documents (a Doc, its body and nested dicts) that live until
#: the page or batch is done: at 700 each is traversed by several young and middle collections before it
#: dies. Measured: callgrind counted 6% fewer instructions for a bulk read (49.2k -> 46.1k a document, at
#: 50,000) and no change for writes; timed runs on this VM were too noisy to show more (docs/benchmarks.md).
#: Plain garbage is freed by reference counting either way; only cycles wait a little longer.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Raise the young generation's threshold to GC_YOUNG_THRESHOLD (never lower an operator's setting)."""
    young, middle, old = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
