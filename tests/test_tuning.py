"""The interpreter settings a node runs with (shiftpeer/tuning.py)."""

from __future__ import annotations

import gc
import sys

import pytest
import pytest_twisted

from shiftpeer.tuning import GC_YOUNG_THRESHOLD, SWITCH_INTERVAL, tune_interpreter
from tests.helpers_node import make_node


@pytest.fixture
def gc_threshold():
    """Put the process's GC thresholds and GIL switch interval back after the test."""
    saved, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.set_threshold(*saved)
    sys.setswitchinterval(interval)


def test_tune_interpreter_raises_the_young_threshold_and_keeps_an_operators_choice(gc_threshold):
    """CPython's default 700 becomes GC_YOUNG_THRESHOLD; a higher setting, or 0 (automatic collection
    off), is left alone, and the older generations keep theirs."""
    gc.set_threshold(700, 11, 12)
    tune_interpreter()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 11, 12)
    gc.set_threshold(GC_YOUNG_THRESHOLD * 5, 10, 10)
    tune_interpreter()
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD * 5
    gc.set_threshold(0, 10, 10)
    tune_interpreter()
    assert gc.get_threshold()[0] == 0


def test_the_switch_interval_is_lowered_and_a_lower_one_kept(gc_threshold):
    """CPython's 5 ms GIL switch interval becomes SWITCH_INTERVAL (a thread back from an LMDB call waits
    that long for the GIL beside a busy one); an interval already set lower is left alone."""
    sys.setswitchinterval(0.005)
    tune_interpreter()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    sys.setswitchinterval(SWITCH_INTERVAL / 5)
    tune_interpreter()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL / 5)


@pytest_twisted.ensureDeferred
async def test_a_started_node_runs_with_the_tuned_gc(tmp_path, gc_threshold):
    """Starting a node's store service applies the settings (twistd runs nothing else first)."""
    gc.set_threshold(700, 10, 10)
    sys.setswitchinterval(0.005)
    node = make_node(str(tmp_path / "n"))
    node.startService()
    try:
        await node.when_ready()
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    finally:
        await node.stopService()
