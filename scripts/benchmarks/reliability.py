"""Reliability benchmark: the kill -9 crash loop, the fuzz campaign and the idle-connection abuse test.

Usage: scripts/bench reliability [--quick] [--json]

1. Crash loop (tests/rel_crash.py): a hub, a writing user and a full peer as processes on real LMDB and TLS;
   one of them is SIGKILLed at a random moment 50 times (8 with --quick), restarted each time; then the
   three databases must converge, and every committed transaction must be there whole.
2. Fuzz campaign (tests/rel_fuzz.py): hypothesis-generated inputs to the frame decoder, to message
   decoding, to the hub's RPC methods and, as frame sequences, to every message handler of a
   SyncProtocol on a real store; then
   byte- and CBOR-level mutations of the generated frames, to >= 100,000 inputs (5,000 with --quick).
3. Idle abuse (tests/rel_idle.py): 1,000 authenticated idle TLS connections (200 with --quick) to a hub
   process, then p50/p99 of a small one-shot replication and of an RPC from a normal client.

With --json the last line printed is one JSON object with ``crash_runs``, ``lost_docs``, ``fuzz_inputs``,
``fuzz_failures``, ``idle_connections_held`` and ``p99_ms_under_idle_load`` (plus details).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from rel_crash import Mesh, run_crash_loop  # noqa: E402
from rel_fuzz import (HandlerTarget, RpcTarget, check_decode, check_framing, fast_settings,  # noqa: E402
                      generated_campaign, mutation_campaign, rpc_campaign)


def say(quiet: bool, *parts: object) -> None:
    if not quiet:
        print(*parts, flush=True)


def crash(base: str, kills: int, quiet: bool) -> dict:
    """Run the crash loop in meshes of at most 25 kills each; sum their reports."""
    total = {"crash_runs": 0, "lost_docs": 0, "partial_batches": 0, "converged": True, "committed_docs": 0,
             "resumed_from_checkpoint": 0, "kills": {"hub": 0, "user": 0, "peer": 0}, "problems": [], "seconds": 0.0}
    loop = 0
    while total["crash_runs"] < kills:
        n = min(25, kills - total["crash_runs"])
        d = os.path.join(base, f"crash{loop}")
        os.makedirs(d)
        r = run_crash_loop(d, n, seed=1000 + loop,
                           progress=lambda i, v: say(quiet, f"  kill -9 #{total['crash_runs'] + i}: {v}"))
        say(quiet, f"  mesh {loop}: {r.crash_runs} kills {r.kills}, {r.committed_docs} docs committed, lost "
                   f"{r.lost_docs}, partial {r.partial_batches}, converged {r.converged}, resumed "
                   f"{r.resumed_from_checkpoint}x, {r.seconds}s")
        for k in ("crash_runs", "lost_docs", "partial_batches", "committed_docs", "resumed_from_checkpoint"):
            total[k] += getattr(r, k)
        for k, v in r.kills.items():
            total["kills"][k] += v
        total["converged"] = total["converged"] and r.converged
        total["problems"] += r.problems
        total["seconds"] += r.seconds
        loop += 1
    return total


def fuzz(base: str, inputs: int, quiet: bool) -> dict:
    """Hypothesis for the decoder targets and the seed corpus, then mutations up to ``inputs`` in all."""
    from hypothesis import given, strategies as st

    from shiftpeer.identity import NodeKey
    from shiftpeer.store import Store

    t0 = time.perf_counter()
    failures: list = []
    counts = {"framing": 0, "decode": 0, "hub_rpc": 0, "handlers_generated": 0, "handlers_mutated": 0}
    share = max(500, inputs // 20)

    @fast_settings(share)
    @given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(0, 10**6), max_size=10),
           st.binary(max_size=600))
    def framing(payloads: list, cuts: list, noise: bytes) -> None:
        counts["framing"] += 1
        check_framing(payloads, cuts, noise)

    @fast_settings(share)
    @given(st.binary(max_size=200))
    def decoding(payload: bytes) -> None:
        counts["decode"] += 1
        check_decode(payload)

    for name, fn in (("framing", framing), ("decode", decoding)):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a failure is a finding to report
            failures.append((name, f"{type(e).__name__}: {e}"))
        say(quiet, f"  {name}: {counts[name]} inputs")
    hub_store = Store(os.path.join(base, "fuzz-hub"), sync=False)
    try:
        rpc = RpcTarget(hub_store)
        try:
            rpc_campaign(rpc, max(200, share // 3))
        except Exception as e:  # noqa: BLE001
            failures.append(("hub_rpc", f"{type(e).__name__}: {e}"))
        counts["hub_rpc"] = rpc.inputs
    finally:
        hub_store.close()
    say(quiet, f"  hub RPC methods: {counts['hub_rpc']} calls")
    store = Store(os.path.join(base, "fuzz-store"), sync=False)
    try:
        target = HandlerTarget(store, NodeKey.generate())
        try:
            counts["handlers_generated"] = generated_campaign(target, max(300, share // 3))
        except Exception as e:  # noqa: BLE001
            failures.append(("handlers", f"{type(e).__name__}: {e}"))
            target.errors.clear()
            target.before = target.fingerprint()
        say(quiet, f"  handlers (hypothesis): {target.inputs} frames, corpus {len(target.corpus)}")
        rest = inputs - sum(counts.values())
        counts["handlers_mutated"] = mutation_campaign(target, target.corpus, max(rest, 0), seed=7, failures=failures)
        say(quiet, f"  handlers (mutations of the corpus): {counts['handlers_mutated']} frames, "
                   f"{target.closed} connections closed by a refusal")
    finally:
        store.close()
    for where, err in failures[:5]:
        say(quiet, f"  FAILURE {where if isinstance(where, str) else repr(where)[:200]}: {err[:300]}")
    return {"fuzz_inputs": sum(counts.values()), "fuzz_failures": len(failures), "counts": counts,
            "seconds": round(time.perf_counter() - t0, 1)}


#: Keys the idle connections are spread over.
IDENTITIES = 50


def idle(base: str, n: int, rounds: int, quiet: bool) -> dict:
    """A hub process, ``n`` idle connections from this one, then a normal client's latencies."""
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import react

    from rel_idle import Client, close_all, held, measure, open_idle, raise_fd_limit
    from shiftpeer.identity import NodeKey

    limit = raise_fd_limit(n * 2 + 512)   # before the hub starts: it inherits the limit
    mesh = Mesh(os.path.join(base, "idle"))
    # Every connection comes from 127.0.0.1 and IDENTITIES keys share the idle ones, so the hub's default caps
    # (64 per address, 8 per identity) would refuse most of them: raise them to what this load needs.
    caps = {"per_address": n + 10, "per_peer": -(-n // IDENTITIES)}
    mesh.start("hub", extra=("--max-connections-per-address", str(caps["per_address"]),
                             "--max-connections-per-peer", str(caps["per_peer"])))
    hub_id = NodeKey.load(os.path.join(mesh.dir("hub"), "key")).account_id
    out: dict = {"fd_limit": limit, "hub_connection_caps": caps}
    say(quiet, f"  hub caps raised for this load: {caps['per_address']} per address, {caps['per_peer']} per identity")

    async def run(_reactor: object) -> None:
        t0 = time.perf_counter()
        baseline_conn = await Client(reactor, mesh.port, hub_id).connect()
        out["baseline"] = await measure(baseline_conn, rounds)
        say(quiet, f"  no idle load: {out['baseline']}")
        conns = await open_idle(reactor, mesh.port, hub_id, n, identities=IDENTITIES)
        out["open_seconds"] = round(time.perf_counter() - t0, 1)
        say(quiet, f"  {held(conns)} idle connections open after {out['open_seconds']}s")
        conn = await Client(reactor, mesh.port, hub_id).connect()
        out["under_load"] = await measure(conn, rounds)
        out["idle_connections_held"] = held(conns)
        say(quiet, f"  under idle load: {out['under_load']}; still held: {out['idle_connections_held']}")
        close_all(conns)
        conn.close()
        baseline_conn.close()

    try:
        react(lambda r: ensureDeferred(run(r)))
    except SystemExit as e:
        if e.code:
            raise
    finally:
        mesh.stop_all()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of results")
    args = ap.parse_args()
    quiet = False
    kills, inputs, n_idle, rounds = (8, 5_000, 200, 50) if args.quick else (50, 100_000, 1000, 200)
    base = tempfile.mkdtemp(prefix="shiftpeer-reliability-")
    t0 = time.perf_counter()
    try:
        say(quiet, f"crash loop: {kills} kill -9 runs")
        c = crash(base, kills, quiet)
        say(quiet, f"fuzz campaign: {inputs} inputs")
        f = fuzz(base, inputs, quiet)
        say(quiet, f"idle abuse: {n_idle} idle TLS connections")
        i = idle(base, n_idle, rounds, quiet)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = {
        "crash_runs": c["crash_runs"], "lost_docs": c["lost_docs"], "fuzz_inputs": f["fuzz_inputs"],
        "fuzz_failures": f["fuzz_failures"], "idle_connections_held": i.get("idle_connections_held", 0),
        "p99_ms_under_idle_load": i.get("under_load", {}).get("replication_p99_ms"),
        "rpc_p99_ms_under_idle_load": i.get("under_load", {}).get("rpc_p99_ms"),
        "p99_ms_without_load": i.get("baseline", {}).get("replication_p99_ms"),
        "hub_connection_caps": i.get("hub_connection_caps"),
        "partial_batches": c["partial_batches"], "converged": c["converged"], "kills": c["kills"],
        "committed_docs": c["committed_docs"], "resumed_from_checkpoint": c["resumed_from_checkpoint"],
        "crash_problems": c["problems"][:5], "fuzz_counts": f["counts"], "quick": args.quick,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"summary: {result['crash_runs']} kill -9 runs, {result['lost_docs']} lost docs, "
          f"{result['partial_batches']} partial transactions, converged {result['converged']}; "
          f"{result['fuzz_inputs']} fuzz inputs, {result['fuzz_failures']} failures; "
          f"{result['idle_connections_held']} idle connections held, p99 {result['p99_ms_under_idle_load']} ms "
          f"(replication), {result['rpc_p99_ms_under_idle_load']} ms (RPC); {result['seconds']}s")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
