"""How fast this VM runs right now: a fixed pure-Python loop, timed before and after a benchmark.

Usage: scripts/bench machine [--quick] [--json]   (five timings of the loop, one with --quick)

The same code takes up to ~1.7x the time from one minute to the next on this VM (docs/benchmarks.md,
*The machine itself*), with no steal time reported and nothing else running. Each benchmark's JSON carries
`machine_loop_s` [before, after] so two runs can be compared for the machine's speed, not only the code's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

#: Iterations of the calibration loop: ~0.5-0.9 s on this VM, short beside any benchmark.
LOOP_N = 6_000_000


def loop_seconds(n: int = LOOP_N) -> float:
    """Wall seconds for `n` iterations of an integer-adding loop (no I/O, next to no allocation)."""
    t = time.perf_counter()
    s = 0
    for i in range(n):
        s += i
    return round(time.perf_counter() - t, 3)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="scripts/bench machine", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one timing of the loop instead of five")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args(argv)
    runs = [loop_seconds() for _ in range(1 if args.quick else 5)]
    if not args.json:
        print(f"{LOOP_N:,} iterations of a pure-Python loop: " + ", ".join(f"{s:.3f} s" for s in runs))
    print(json.dumps({"loop_n": LOOP_N, "loop_s": runs, "loop_s_min": min(runs), "loop_s_max": max(runs)}))


if __name__ == "__main__":
    main(sys.argv[1:])
