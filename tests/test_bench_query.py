"""scripts/bench query (scripts/benchmarks/query.py): a full peer, and a user node asking its hub, answer
``GET /v1/feed?href=URL`` over keep-alive HTTP; every answer is checked, so a wrong one fails the run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.test_cli import CHECKOUT, _env

SCRIPT = os.path.join(CHECKOUT, "scripts", "benchmarks", "query.py")
HREF = "https://www.site1.example.org/articles/1/a-page-title.html"


@pytest.fixture(scope="module")
def query():
    """scripts/benchmarks/query.py as a module; sys.path as it was afterwards (it adds scripts/ to it)."""
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location("bench_query", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = saved


@pytest.mark.slow
def test_query_benchmark_runs_both_meshes_and_prints_its_figures():
    """A tiny run (200 shifts, 30 asks) of both scenarios exits 0 and prints the documented JSON last."""
    out = subprocess.run([sys.executable, SCRIPT, "--shifts", "200", "--asks", "30", "--json"], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (result["shifts"], result["page_urls"], result["requests_sequential"]) == (200, 20, 30)
    for prefix in ("", "hub_"):
        assert 0 < result[f"{prefix}href_p50_ms"] <= result[f"{prefix}href_p99_ms"]
        assert result[f"{prefix}href_rps_8"] > 0
    for key in ("node_cpu_us_per_req", "node_cpu_us_per_req_8", "hub_user_cpu_us_per_req",
                "hub_hub_cpu_us_per_req"):
        assert result[key] >= 0
    assert len(result["machine_loop_s"]) == 2 and "load average" in out.stderr


def answer(rows: list[str], source: str = "feed") -> bytes:
    return json.dumps({"rows": [{"href": h} for h in rows], "next_cursor": None, "source": source}).encode()


def test_the_benchmark_refuses_a_wrong_answer(query):
    """Figures for answers a Space could not use would be worthless: an error, another source, a known page
    with no shifts, an unknown page with some, or a row of another page each stop the run."""
    query.check(HREF, 200, answer([HREF, HREF]), True, "feed")
    query.check("https://unknown.example.net/", 200, answer([]), False, "feed")
    wrong = [(500, answer([HREF]), True, "feed"), (200, answer([HREF], "shared"), True, "feed"),
             (200, answer([]), True, "feed"), (200, answer([HREF]), False, "feed"),
             (200, answer([HREF, "https://other.example.org/"]), True, "feed")]
    for status, data, known, source in wrong:
        with pytest.raises(query.StepFailed):
            query.check(HREF, status, data, known, source)


def test_asks_mix_known_and_unknown_pages(query):
    """About a tenth of the asks name a page no shift is on, the rest a known page."""
    import random

    urls = query.page_urls(100)
    work = query.asks(urls, 2000, random.Random(1))
    unknown = [h for h, known in work if not known]
    assert all(h in urls for h, known in work if known) and not set(unknown) & set(urls)
    assert 100 < len(unknown) < 300
