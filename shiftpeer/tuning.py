"""Interpreter settings for a process that runs a node (its store, sync and verification).

Set once by the node's store service, and by the benchmarks so they measure the store as a node runs it.
"""

from __future__ import annotations

import gc
import sys

#: Container allocations between two young-generation collections (CPython's default is 700). A bulk read
#: or a received batch builds thousands of documents (a Doc, its body and nested dicts) that live until
#: the page or batch is done: at 700 each is traversed by several young and middle collections before it
#: dies. Measured: callgrind counted 6% fewer instructions for a bulk read (49.2k -> 46.1k a document, at
#: 50,000) and no change for writes; timed runs on this VM were too noisy to show more (docs/benchmarks.md).
#: Plain garbage is freed by reference counting either way; only cycles wait a little longer.
GC_YOUNG_THRESHOLD = 10_000


#: The interpreter's GIL switch interval (seconds; CPython's default is 0.005). py-lmdb releases the GIL
#: around every LMDB call, and the thread that wants it back waits up to this long while another runs
#: Python: the store writer beside a busy reactor (a pull's receiver) waited ~4 of its ~8 s of jobs for
#: the GIL at 5 ms. At 0.5 ms a pull of 50,000 shifts ran ~9% faster (median of eight interleaved pairs,
#: faster in all), and the writer's jobs took 6-18% less wall time (docs/benchmarks.md).
SWITCH_INTERVAL = 0.0005


def tune_interpreter() -> None:
    """Raise the young generation's threshold to GC_YOUNG_THRESHOLD and lower the GIL switch interval to
    SWITCH_INTERVAL (never lower an operator's threshold, nor raise an interval set lower)."""
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)
    young, middle, old = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
