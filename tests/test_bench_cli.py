"""Every benchmark answers ``--help`` and refuses an unknown flag before doing any work, and the sync
benchmark's table prints every value it measured (lists included): ``scripts/bench NAME --help`` once ran
a whole 100,000-shift sync benchmark and then crashed printing its results."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(ROOT, "scripts", "benchmarks")
BENCHMARKS = sorted(f[:-3] for f in os.listdir(BENCH_DIR) if f.endswith(".py") and not f.startswith("_"))


def run_bench(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(BENCH_DIR, name + ".py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_benchmarks_are_all_here():
    assert {"store", "sync", "gossip", "reliability", "identity", "pouchdb", "status", "machine",
            "query"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_help_describes_the_flags_and_does_no_work(name):
    done = run_bench(name, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:"), done.stdout
    assert "--quick" in done.stdout and "--json" in done.stdout
    assert "installing" not in done.stdout + done.stderr   # pouchdb installs its node packages only for a run


@pytest.mark.parametrize("name", BENCHMARKS)
def test_an_unknown_flag_is_refused_at_once(name):
    done = run_bench(name, "--no-such-flag")
    assert done.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in done.stderr


def test_the_sync_table_prints_lists_and_targets():
    sys.path.insert(0, BENCH_DIR)
    try:
        from sync import result_lines, scenario_args
    finally:
        sys.path.remove(BENCH_DIR)
    lines = result_lines({"pull_docs_per_s": 9275, "machine_loop_s": [0.31, 0.29], "note": "x"},
                         {"pull_docs_per_s": ">= 10000"})
    assert lines[0].split() == ["pull_docs_per_s", "9275", ">=", "10000"]
    assert lines[1].split() == ["machine_loop_s", "[0.31,", "0.29]"]
    assert scenario_args(["--quick", "--docs", "500"]) == (True, False, 500, 100, False)
    assert scenario_args(["--json", "--user-rules"]) == (False, True, 100_000, 1000, True)
    with pytest.raises(SystemExit):
        scenario_args(["--docs", "0"])
