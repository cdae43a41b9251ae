"""Sync benchmark: two nodes in two processes over real mutual TLS on 127.0.0.1.

The source node (a child process) holds N signed ~1 KB shifts; this process is the receiver, with
fsync on and every signature verified.

(a) one-shot pull of N shifts into an empty node        -> pull_docs_per_s, and the CPU it took:
                                                            pull_receiver_cpu_s (split: _main_s the reactor
                                                            thread, _verify_s verification threads,
                                                            _verify_procs_s verification processes, _writer_s
                                                            the store writer, _other_s), pull_source_cpu_s
(b) 1,000 more shifts after that, pulled on the connection -> incremental_1000_s
(c) reconnect when nothing changed: new TLS connection, pull, caught_up
                                                         -> noop_reconnect_ms, noop_reconnect_bytes (raw TLS),
                                                            noop_reconnect_frame_bytes
(d) live: a write on the source until it is committed here, over 1,000 writes 3 ms apart
    -> live_fsync_p50_ms / live_fsync_p99_ms (receiver fsyncs each commit),
       live_p50_ms / live_p99_ms (receiver reopened without fsync; the source never fsyncs)

machine_loop_s: a fixed Python loop timed before and after (scripts/benchmarks/machine.py): this VM's own
speed moves by up to ~1.7x from one minute to the next, so compare runs with it in view.

usage: scripts/bench sync [--quick] [--json] [--user-rules]     (--quick: 10,000 shifts, 100 live writes)

--user-rules: the receiver stores through a user node's rules (``filtering_store_batch(refusal)``, what
every user node's and hub's sync does: the same author as the revisions held, and a signature the
validator has not checked already), not straight into the store.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from machine import loop_seconds  # noqa: E402  (scripts/benchmarks/machine.py: the VM's speed now)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory  # noqa: E402

TUNING = json.loads(os.environ.get("SHIFTPEER_SYNC_TUNING", "{}"))  # e.g. {"window": 16}
TEXT = "lorem ipsum dolor sit amet " * 40   # ~1 KB body with the other fields


class CountingProtocol(ProtocolWrapper):
    def dataReceived(self, data: bytes) -> None:
        self.factory.bytes_in += len(data)
        super().dataReceived(data)

    def write(self, data: bytes) -> None:
        self.factory.bytes_out += len(data)
        super().write(data)

    def writeSequence(self, data) -> None:
        for d in data:
            self.write(d)


class CountingFactory(WrappingFactory):
    """Counts raw (TLS) bytes on the wire."""
    protocol = CountingProtocol

    def __init__(self, wrapped) -> None:
        super().__init__(wrapped)
        self.bytes_in = self.bytes_out = 0


def shift(key, i: int, t: int | None = None) -> tuple[str, dict]:
    """A ~1 KB shift without floats, as the pulled ones; a live write carries its start (``t``,
    time.monotonic_ns(), an int like JavaScript's Date.now(): a float would make the put encode the body
    with cbor2's canonical encoder, ~15 us warm, instead of libipld, codec.encode_body)."""
    body = {"author": key.account_id, "type": "shift", "space": "notes", "href": f"http://example.com/p{i % 500}",
            "created": 1_700_000_000 + i, "summary": f"shift {i}", "content": {"text": TEXT}}
    if t is not None:
        body["t"] = t
    return f"shift-{i:08d}", body


# ------------------------------------------------------------------------------------------ source process
def source_main(directory: str, n: int) -> None:
    from twisted.internet import reactor, stdio
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.protocols.basic import LineReceiver

    from shiftpeer.identity import NodeKey
    from shiftpeer.identity.signing import sign_doc
    from shiftpeer.identity.tls import server_creator
    from shiftpeer.store import Store
    from shiftpeer.sync import AllowAll, SyncFactory
    from shiftpeer.sync.client import tls_server_endpoint
    from shiftpeer.tuning import tune_interpreter

    tune_interpreter()  # the interpreter settings a node's store service makes
    key = NodeKey.generate()
    # the source's own durability is not what is measured: its commits skip fsync
    store = Store(os.path.join(directory, "source"), reactor=reactor, sync=False)
    db = store.create_database("master")
    sign = functools.partial(sign_doc, key)
    count = [0]
    live_count = [0]

    def add(k: int) -> None:
        with store.write_txn() as txn:
            for _ in range(k):
                docid, body = shift(key, count[0])
                db.put(docid, body, sign=sign, txn=txn)
                count[0] += 1

    t0 = time.monotonic()
    for _ in range(0, n, 5000):
        add(min(5000, n - count[0]))
    fill_s = time.monotonic() - t0
    factory = SyncFactory(store, key, AllowAll(), reactor=reactor, roles=("hub",), **TUNING)

    class Commands(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            cmd, *args = line.decode().split()
            if cmd == "add":
                add(int(args[0]))
                self.sendLine(b"ok")
            elif cmd == "live":
                k, gap = int(args[0]), float(args[1])
                if os.environ.get("BENCH_GC_FREEZE"):
                    import gc
                    gc.collect()
                    gc.freeze()

                def one(i: int) -> None:
                    live_count[0] += 1
                    docid, body = shift(key, 10_000_000 + live_count[0], t=time.monotonic_ns())
                    db.put(docid, body, sign=sign)
                    if i + 1 < k:
                        reactor.callLater(gap, one, i + 1)
                    else:
                        self.sendLine(b"ok")
                one(0)
            elif cmd == "cpu":
                import resource
                ru = resource.getrusage(resource.RUSAGE_SELF)
                self.sendLine(json.dumps(ru.ru_utime + ru.ru_stime).encode())
            elif cmd == "quit":
                store.close()
                reactor.stop()

    def listening(port) -> None:
        print(json.dumps({"port": port.getHost().port, "peer": key.account_id, "fill_s": fill_s}), flush=True)
        stdio.StandardIO(Commands())

    ep = tls_server_endpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), server_creator(key))
    ep.listen(factory).addCallback(listening)
    reactor.run()


# ------------------------------------------------------------------------------------------ receiver (driver)
def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of each live thread of this process, by kind (main, verify, writer, other)."""
    import threading
    tick = os.sysconf("SC_CLK_TCK")
    kinds = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = kinds.get(int(tid), "")
        kind = ("main" if name == "MainThread" else "verify" if "verify" in name
                else "writer" if "writer" in name else "other")
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def helper_cpu(source_pid: int) -> dict[int, float]:
    """CPU seconds so far of each child process of this one but the source (the node's verification
    processes), by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    out: dict[int, float] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == source_pid:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            out[int(pid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def scenario_args(argv: list[str], prog: str = "scripts/bench sync", doc: str | None = None,
                  user_rules: bool = True) -> tuple[bool, bool, int, int, bool]:
    """(quick, as_json, documents, live writes, user_rules) from the command line; scripts/bench pouchdb
    runs the same scenarios, so it reads them here too. An unknown flag or ``--help`` stops before any work."""
    ap = argparse.ArgumentParser(prog=prog, description=(doc or __doc__).splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 shifts and 100 live writes")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--docs", type=int, metavar="N", help="shifts to pull (default 100,000; 10,000 with --quick)")
    if user_rules:
        ap.add_argument("--user-rules", action="store_true",
                        help="store through a user node's rules, not straight into the store")
    args = ap.parse_args(argv)
    n = args.docs if args.docs is not None else (10_000 if args.quick else 100_000)
    if n < 1:
        ap.error("--docs must be at least 1")
    return args.quick, args.json, n, 100 if args.quick else 1000, getattr(args, "user_rules", False)


def result_lines(results: dict, targets: dict[str, str]) -> list[str]:
    """The human-readable table: one line a key, its value (lists as they are) and its target if any."""
    return [f"{k:34} {v if isinstance(v, (int, float, str)) else json.dumps(v):>12}   {targets.get(k, '')}".rstrip()
            for k, v in results.items()]


def main(argv: list[str]) -> None:
    quick, as_json, n, live_n, user_rules = scenario_args(argv)
    loop_before = loop_seconds()
    tmp = tempfile.mkdtemp(prefix="shiftpeer-bench-sync-")
    child = subprocess.Popen([sys.executable, __file__, "--source", tmp, str(n)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        info = json.loads(child.stdout.readline())
        results = run_receiver(tmp, info, n, live_n, child, user_rules=user_rules)
    finally:
        try:
            child.stdin.write("quit\n")
            child.stdin.flush()
            child.wait(timeout=30)
        except Exception:
            child.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    results["machine_loop_s"] = [loop_before, loop_seconds()]
    if not as_json:
        targets = {"pull_docs_per_s": ">= 10000", "incremental_1000_s": "<= 0.15", "noop_reconnect_ms": "<= 20",
                   "noop_reconnect_bytes": "<= 2048", "live_p50_ms": "<= 2", "live_p99_ms": "<= 10"}
        print("\n".join(result_lines(results, targets)))
    print(json.dumps(results))


def run_receiver(tmp: str, info: dict, n: int, live_n: int, child, user_rules: bool = False) -> dict:
    from twisted.internet import reactor, threads
    from twisted.internet.defer import Deferred, ensureDeferred
    from twisted.internet.endpoints import TCP4ClientEndpoint

    from shiftpeer.identity import NodeKey
    from shiftpeer.identity.tls import TLSFactory, client_creator
    from shiftpeer.store import Store
    from shiftpeer.sync import AllowAll, SyncFactory
    from shiftpeer.sync.client import outgoing
    from shiftpeer.tuning import tune_interpreter

    tune_interpreter()  # the interpreter settings a node's store service makes
    key = NodeKey.generate()
    reactor.suggestThreadPoolSize(4)
    node = {}

    store_batch = None
    if user_rules:   # as a user node stores what it pulls (roles/userflows.py)
        from shiftpeer.roles.validation import filtering_store_batch, refusal
        store_batch = filtering_store_batch(lambda db, peer_id, doc: refusal(db, doc))

    def open_node(sync: bool) -> None:
        node["store"] = Store(os.path.join(tmp, "receiver"), reactor=reactor, sync=sync)
        node["factory"] = SyncFactory(node["store"], key, AllowAll(), reactor=reactor, roles=("user",),
                                      store_batch=store_batch, **TUNING)

    open_node(True)
    results: dict = {"docs": n, "source_fill_s": round(info["fill_s"], 2), "user_rules": user_rules}

    def command(line: str) -> Deferred:
        def run() -> str:
            child.stdin.write(line + "\n")
            child.stdin.flush()
            return child.stdout.readline()
        return threads.deferToThread(run)

    # made once, as a node's SyncPeerService does: its reconnects reuse the endpoint and TLS context
    creator = client_creator(key, expected_peer_id=info["peer"])

    async def connect():
        counting = CountingFactory(TLSFactory(creator, True, outgoing(node["factory"])))
        ep = TCP4ClientEndpoint(reactor, "127.0.0.1", info["port"])
        wrapper = await ep.connect(counting)
        conn = await wrapper.wrappedProtocol.wrappedProtocol.when_ready()
        return conn, counting

    async def scenario() -> None:
        store = node["store"]
        # (a) one-shot pull
        import resource
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        threads0 = thread_cpu()
        helpers0 = helper_cpu(child.pid)
        source0 = float(await command("cpu"))
        t0 = time.monotonic()
        conn, _ = await connect()
        rep = conn.pull("master", "feed", live=False)
        await rep.caught_up
        dt = time.monotonic() - t0
        feed = store.database("feed")
        assert feed.doc_count() == n, (feed.doc_count(), n)
        results["pull_s"] = round(dt, 3)
        results["pull_docs_per_s"] = round(n / dt)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        threads1 = thread_cpu()
        helpers = sum(cpu - helpers0.get(pid, 0.0) for pid, cpu in helper_cpu(child.pid).items())
        own = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        results["pull_receiver_cpu_s"] = round(own + helpers, 2)
        split = {kind: threads1.get(kind, 0.0) - threads0.get(kind, 0.0) for kind in ("main", "verify", "writer")}
        split["other"] = own - sum(split.values())   # other and exited threads
        split["verify_procs"] = helpers
        for kind, cpu in split.items():
            results[f"pull_receiver_cpu_{kind}_s"] = round(cpu, 2)
        results["pull_source_cpu_s"] = round(float(await command("cpu")) - source0, 2)
        # (b) 1,000 more
        await command("add 1000")
        t0 = time.monotonic()
        await conn.pull("master", "feed", live=False).caught_up
        results["incremental_1000_s"] = round(time.monotonic() - t0, 4)
        assert feed.doc_count() == n + 1000
        conn.close()
        await conn.when_closed()
        # (c) no-op reconnect (median of 5)
        times, raw, framed = [], [], []
        for _ in range(5):
            t0 = time.monotonic()
            conn, counting = await connect()
            await conn.pull("master", "feed", live=False).caught_up
            times.append((time.monotonic() - t0) * 1000)
            raw.append(counting.bytes_in + counting.bytes_out)
            framed.append(conn.bytes_in + conn.bytes_out)
            conn.close()
            await conn.when_closed()
        results["noop_reconnect_ms"] = round(statistics.median(times), 2)
        results["noop_reconnect_bytes"] = max(raw)
        results["noop_reconnect_frame_bytes"] = max(framed)
        # (d) live: first with fsync on the receiver, then (the target's setting) without
        for sync, prefix in ((True, "live_fsync_"), (False, "live_")):
            if not sync:
                node["store"].close()
                open_node(False)
            await live_phase(prefix)

    async def live_phase(prefix: str) -> None:
        if os.environ.get("BENCH_GC_FREEZE"):
            import gc
            gc.collect()
            gc.freeze()
        store = node["store"]
        feed = store.database("feed")
        conn, _ = await connect()
        live = conn.pull("master", "feed", live=True)
        await live.caught_up
        lat: list[float] = []
        seen = [feed.update_seq()]

        def on_commit(name: str, seq: int) -> None:
            now = time.monotonic_ns()
            if name != "feed":
                return
            for ch in feed.changes(since=seen[0]):
                doc = feed.get(ch.id)
                if doc is not None and "t" in doc.body:
                    lat.append((now - doc.body["t"]) / 1e6)
            seen[0] = seq

        unsubscribe = store.subscribe(on_commit)
        await command(f"live {live_n} 0.003")
        deadline = time.monotonic() + 10
        while len(lat) < live_n and time.monotonic() < deadline:
            d = Deferred()
            reactor.callLater(0.01, d.callback, None)
            await d
        unsubscribe()
        lat.sort()
        results[prefix + "writes"] = len(lat)
        results[prefix + "p50_ms"] = round(statistics.median(lat), 3)
        results[prefix + "p99_ms"] = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3)
        conn.close()
        await conn.when_closed()

    def done(result):
        reactor.stop()
        return result

    outcome: list = []
    d = ensureDeferred(scenario())
    d.addBoth(outcome.append).addBoth(done)
    reactor.run()
    node["store"].close()
    if outcome and hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--source":
        source_main(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1:])
