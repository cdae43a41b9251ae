"""Query benchmark: the shifts of one page URL, the question a Space asks on every page load.

Usage: scripts/bench query [--quick] [--json] [--no-hub]

Real nodes (`twistd -n shiftpeer`, started and stopped as scripts/demo does) answer `GET /v1/feed?href=URL`
on their local API (127.0.0.1, bearer token), asked over HTTP/1.1 keep-alive from this process, so the
client's CPU never shares the node's GIL:

(a) a full peer whose ``user/feed`` holds N signed ~1 KB shifts by 200 authors (100,000; 10,000 with
    --quick) spread over N/10 page URLs, written into its store before it starts (what its firehose
    replication leaves there). 90% of the asks name a known URL (about 10 shifts each), 10% an unknown one.
    -> href_p50_ms / href_p99_ms (one client, one request at a time; also _known and _unknown),
       href_rps_8 (8 keep-alive connections at once, one thread each),
       node_cpu_us_per_req / node_cpu_us_per_req_8: the node process's CPU (utime + stime from
       /proc/PID/stat) per answered request in each phase: the figure to compare across runs on a noisy VM.
(b) a user node with a hub (--no-hub leaves it out): the same N shifts in the hub's ``master`` and
    ``shared`` (under the ``public`` visibility token), as its merge leaves them, its tokens' rebuild done; the user node forwards each ask to the hub over its TLS sync connection,
    checks every row's signature and merges its unpublished shifts (``source: shared``).
    -> hub_href_p50_ms / hub_href_p99_ms, hub_href_rps_8, hub_user_cpu_us_per_req and
       hub_hub_cpu_us_per_req (the two node processes' CPU per request, sequential phase).

Every answer is checked: status 200, the source expected, and a known URL's rows all on that URL.
machine_loop_s: a fixed Python loop timed before and after (scripts/benchmarks/machine.py), since this VM's
own speed moves by up to ~1.7x from one minute to the next. With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import io
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from urllib.parse import quote, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(HERE))   # scripts/: the demo's node starting and stopping
sys.path.insert(0, HERE)                    # as when run as a script (tests import this file)

from demo import Demo, StepFailed, _free_port  # noqa: E402  (scripts/demo.py)
from machine import loop_seconds  # noqa: E402  (scripts/benchmarks/machine.py: the VM's speed now)

TEXT = "lorem ipsum dolor sit amet " * 30   # with the other fields, a ~1 KB body
AUTHORS = 200
SHIFTS_PER_URL = 10
UNKNOWN_SHARE = 0.1
CONCURRENCY = 8
FILL_BATCH = 5000
#: The processes whose CPU is measured, by JSON key prefix.
LABELS = {"node_": "node", "user_": "user node", "hub_": "hub"}


def page_urls(n: int) -> list[str]:
    """`n` page URLs over n/20 sites, already in normal form (shiftpeer/urls.py)."""
    return [f"https://www.site{i % max(1, n // 20)}.example.org/articles/{i}/a-page-title.html" for i in range(n)]


def fill(store_path: str, database: str, n: int, urls: list[str], vis: list[str] | None, seed: int = 1,
         also: tuple[str, ...] = ()) -> float:
    """Write `n` public shifts by AUTHORS authors, each signed by its author, round-robin over `urls`, into
    `database` of the store at `store_path` (the node is not running), and the same documents into each
    database of `also`, without tokens; returns seconds."""
    from shiftpeer.identity import NodeKey
    from shiftpeer.identity.signing import sign_doc
    from shiftpeer.shifts import domain_of, new_shift_id
    from shiftpeer.store import Store

    t = time.perf_counter()
    rng = random.Random(seed)
    keys = [NodeKey.generate() for _ in range(AUTHORS)]
    signers = [functools.partial(sign_doc, k) for k in keys]
    store = Store(store_path, sync=False)
    try:
        db = store.create_database(database)
        copies = [store.create_database(name) for name in also]
        for start in range(0, n, FILL_BATCH):
            with store.write_txn() as txn:
                ids = []
                for i in range(start, min(n, start + FILL_BATCH)):
                    a = rng.randrange(AUTHORS)
                    href = urls[i % len(urls)]
                    created = 1_700_000_000 + i * 30.0
                    body = {"type": "shift", "space": rng.choice(("Notes", "Highlights", "ImageSwap")),
                            "href": href, "domain": domain_of(href), "summary": f"shift {i} on this page",
                            "content": {"text": TEXT, "x": rng.randrange(2000), "y": rng.randrange(8000)},
                            "author": keys[a].account_id, "created": created, "modified": created,
                            "audience": {"public": True, "groups": [], "to": []}}
                    ids.append(new_shift_id(keys[a].account_id))
                    db.put(ids[-1], body, sign=signers[a], vis=vis, txn=txn)
                for copy in copies:
                    copy.bulk_replicated(db.get_repl_docs([(i, None) for i in ids]), txn=txn)
    finally:
        store.close()
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------ the client
class Client:
    """One keep-alive HTTP/1.1 connection to a node's local API."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}"}

    def feed(self, href: str) -> tuple[int, bytes]:
        self.conn.request("GET", "/v1/feed?href=" + quote(href, safe=""), headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        self.conn.close()


def check(href: str, status: int, data: bytes, known: bool, source: str) -> None:
    """Each answer must be what a Space expects: 200, from `source`, a known URL's shifts and only them."""
    if status != 200:
        raise StepFailed(f"GET /v1/feed?href={href}: {status} {data[:300]!r}")
    answer = json.loads(data)
    rows = answer["rows"]
    if answer.get("source") != source or (known and not rows) or (not known and rows) or \
            any(r["href"] != href for r in rows):
        raise StepFailed(f"GET /v1/feed?href={href}: {len(rows)} rows from {answer.get('source')}, "
                         f"expected {'some' if known else 'none'} from {source}")


def asks(urls: list[str], count: int, rng: random.Random) -> list[tuple[str, bool]]:
    """`count` (href, known) pairs: random known URLs and UNKNOWN_SHARE of never-seen ones."""
    out = []
    for i in range(count):
        if rng.random() < UNKNOWN_SHARE:
            out.append((f"https://unknown{i}.example.net/nothing/here-{i}.html", False))
        else:
            out.append((rng.choice(urls), True))
    return out


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process `pid` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def sequential(url: str, token: str, work: list[tuple[str, bool]], source: str) -> dict[str, list[float]]:
    """Ask one at a time over one connection; latencies (seconds) of known and unknown URLs."""
    client = Client(url, token)
    lat: dict[str, list[float]] = {"known": [], "unknown": []}
    try:
        for href, known in work:
            t = time.perf_counter()
            status, data = client.feed(href)
            lat["known" if known else "unknown"].append(time.perf_counter() - t)
            check(href, status, data, known, source)
    finally:
        client.close()
    return lat


def concurrent(url: str, token: str, work: list[tuple[str, bool]], source: str) -> float:
    """Ask with CONCURRENCY connections at once (one thread each, a slice of `work` each; every answer
    checked as in `sequential`); wall seconds."""
    errors: list[BaseException] = []
    clients = [Client(url, token) for _ in range(CONCURRENCY)]

    def run(client: Client, part: list[tuple[str, bool]]) -> None:
        try:
            for href, known in part:
                status, data = client.feed(href)
                check(href, status, data, known, source)
        except BaseException as e:   # noqa: BLE001 - reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c, work[i::CONCURRENCY])) for i, c in enumerate(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    elapsed = time.perf_counter() - t
    for c in clients:
        c.close()
    if errors:
        raise errors[0]
    return elapsed


def measure(prefix: str, url: str, token: str, urls: list[str], counts: tuple[int, int], source: str,
            pids: dict[str, int], say) -> dict:
    """Warm up, then the sequential and the concurrent phase against one node's API."""
    rng = random.Random(7)
    sequential(url, token, asks(urls, 100, rng), source)   # warm the page cache and the code paths
    n_seq, n_conc = counts
    out: dict = {}
    cpu0 = {k: process_cpu(p) for k, p in pids.items()}
    lat = sequential(url, token, asks(urls, n_seq, rng), source)
    cpu1 = {k: process_cpu(p) for k, p in pids.items()}
    both = sorted(lat["known"] + lat["unknown"])
    out[f"{prefix}href_p50_ms"] = round(percentile(both, 0.5) * 1000, 3)
    out[f"{prefix}href_p99_ms"] = round(percentile(both, 0.99) * 1000, 3)
    for kind in ("known", "unknown"):
        values = sorted(lat[kind])
        out[f"{prefix}href_{kind}_p50_ms"] = round(percentile(values, 0.5) * 1000, 3) if values else None
    for k in pids:
        out[f"{prefix}{k}cpu_us_per_req"] = round((cpu1[k] - cpu0[k]) / n_seq * 1e6)
    cpu1 = {k: process_cpu(p) for k, p in pids.items()}
    elapsed = concurrent(url, token, asks(urls, n_conc, rng), source)
    cpu2 = {k: process_cpu(p) for k, p in pids.items()}
    out[f"{prefix}href_rps_{CONCURRENCY}"] = round(n_conc / elapsed)
    for k in pids:
        out[f"{prefix}{k}cpu_us_per_req_{CONCURRENCY}"] = round((cpu2[k] - cpu1[k]) / n_conc * 1e6)
    def cpu_text(suffix: str) -> str:
        return ", ".join(f"{LABELS[k]} CPU {out[f'{prefix}{k}cpu_us_per_req{suffix}']} us/request" for k in pids)

    say(f"  one connection ({n_seq:,} asks): p50 {out[f'{prefix}href_p50_ms']} ms, "
        f"p99 {out[f'{prefix}href_p99_ms']} ms (known URL p50 {out[f'{prefix}href_known_p50_ms']} ms, "
        f"unknown {out[f'{prefix}href_unknown_p50_ms']} ms); {cpu_text('')}")
    say(f"  {CONCURRENCY} connections ({n_conc:,} asks): {out[f'{prefix}href_rps_{CONCURRENCY}']:,} requests/s; "
        f"{cpu_text(f'_{CONCURRENCY}')}")
    return out


# ------------------------------------------------------------------------------------------ the nodes
def api_of(directory: str) -> tuple[str, str]:
    """The node's API URL and token, from its directory."""
    from shiftpeer.api.token import URL_FILE, read_token

    with open(os.path.join(directory, URL_FILE)) as f:
        return f.read().strip(), read_token(directory)


def init(demo: Demo, *argv: str) -> None:
    """`shiftpeer init ...` in this process, its output (the account id) kept off the benchmark's."""
    with contextlib.redirect_stdout(io.StringIO()):
        demo.cli(None, "init", *argv, show=False)


def full_peer(demo: Demo, n: int, urls: list[str], counts: tuple[int, int], say) -> dict:
    """A full peer answering from its own ``user/feed`` (no hub: it needs none to answer)."""
    directory = demo.dirs["fullpeer"]
    init(demo, directory, "--user", "bench", "--full-peer", "--api", "tcp:0:interface=127.0.0.1")
    fill_s = fill(os.path.join(directory, "store"), "user/feed", n, urls, vis=None)
    say(f"full peer: {n:,} signed shifts over {len(urls):,} page URLs written into user/feed in {fill_s:.1f}s")
    demo.start("fullpeer")
    demo.wait_api("fullpeer")
    url, token = api_of(directory)
    say("full peer answering from its user/feed:")
    out = {"fill_s": round(fill_s, 1)}
    out.update(measure("", url, token, urls, counts, "feed", {"node_": demo.procs["fullpeer"].pid}, say))
    return out


def as_a_hub_left_it(store_path: str) -> float:
    """Record in a filled hub store what a hub of this version running on it would have: ``master`` merged
    into ``shared`` (the merge's checkpoint) and the rebuild of ``shared``'s tokens done
    (roles/tokenrebuild.py, run here), so the hub starts with nothing to catch up and the measurement has the
    machine to itself; returns seconds."""
    from shiftpeer.roles import tokenrebuild
    from shiftpeer.roles.following import save_checkpoint
    from shiftpeer.roles.merge import MERGE_PEER, SHARED_DB
    from shiftpeer.store import Store

    t = time.perf_counter()
    store = Store(store_path, sync=False)
    try:
        master, shared = store.database("master"), store.database(SHARED_DB)
        with store.write_txn() as txn:
            save_checkpoint(shared, MERGE_PEER, master, master.update_seq(), txn)
        for _ in range(10_000_000):
            if tokenrebuild.rebuild_chunk(store, 1000)["done"]:
                break
    finally:
        store.close()
    return time.perf_counter() - t


def hub_and_user(demo: Demo, n: int, urls: list[str], counts: tuple[int, int], say) -> dict:
    """A hub whose ``shared`` holds the shifts, and a registered user node asking it (scripts/demo's mesh)."""
    from shiftpeer.identity.makecerts import main as make_certs

    certs = os.path.join(demo.base, "certs")
    with contextlib.redirect_stdout(io.StringIO()):
        if make_certs([certs, "--host", "127.0.0.1", "--ca-cert", os.path.join(ROOT, "certs", "test-ca.pem"),
                       "--ca-key", os.path.join(ROOT, "certs", "test-ca.TEST-ONLY-NOT-SECRET.key")]) != 0:
            raise StepFailed("making the hub certificate failed")
    port = _free_port()
    hub, user = demo.dirs["hub"], demo.dirs["alice"]
    init(demo, hub, "--user", "operator", "--hub", "--tls-cert", os.path.join(certs, "127.0.0.1.pem"),
         "--tls-key", os.path.join(certs, "127.0.0.1.key"), "--listen", f"tcp:{port}:interface=127.0.0.1",
         "--api", "tcp:0:interface=127.0.0.1")
    init(demo, user, "--user", "alice", "--connect", f"127.0.0.1:{port}", "--ca", os.path.join(certs, "ca.pem"),
         "--api", "tcp:0:interface=127.0.0.1")
    from shiftpeer.roles.audience import PUBLIC_TOKEN

    fill_s = fill(os.path.join(hub, "store"), "shared", n, urls, vis=[PUBLIC_TOKEN], seed=2, also=("master",))
    say(f"hub: {n:,} signed shifts written into master and shared (token {PUBLIC_TOKEN!r}) in {fill_s:.1f}s")
    left_s = as_a_hub_left_it(os.path.join(hub, "store"))
    say(f"hub: the merge's checkpoint and the tokens' rebuild recorded in {left_s:.1f}s")
    for name in ("hub", "alice"):
        demo.start(name)
    for name in ("hub", "alice"):
        demo.wait_api(name)
    demo.cli("alice", "sync", "--wait", "--timeout", "60", show=False)
    demo.cli("alice", "register", show=False)
    url, token = api_of(user)
    pids = {"user_": demo.procs["alice"].pid, "hub_": demo.procs["hub"].pid}
    say("user node asking the hub (source: shared):")
    out = {"hub_fill_s": round(fill_s, 1)}
    out.update(measure("hub_", url, token, urls, counts, "shared", pids, say))
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench query", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 shifts and fewer asks")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--no-hub", action="store_true", help="the full peer only, no hub and user node")
    ap.add_argument("--shifts", type=int, default=0, metavar="N", help="this many shifts")
    ap.add_argument("--asks", type=int, default=0, metavar="N",
                    help="N asks one at a time and 2N over the 8 connections, per node asked")
    args = ap.parse_args(argv)
    n = args.shifts or (10_000 if args.quick else 100_000)
    counts = (args.asks, 2 * args.asks) if args.asks else (1000, 2000) if args.quick else (2000, 8000)
    urls = page_urls(max(1, n // SHIFTS_PER_URL))

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    loop_before = loop_seconds()
    load_before = os.getloadavg()
    base = tempfile.mkdtemp(prefix="shiftpeer-bench-query-")
    demo = Demo(base, quiet=True)
    result: dict = {"shifts": n, "page_urls": len(urls), "requests_sequential": counts[0],
                    "requests_concurrent": counts[1]}
    try:
        result.update(full_peer(demo, n, urls, counts, say))
        if not args.no_hub:
            result.update(hub_and_user(demo, n, urls, counts, say))
    except StepFailed as e:
        print(f"scripts/bench query: {e}", file=sys.stderr)
        return 1
    finally:
        demo.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    load_after = os.getloadavg()
    result["loadavg"] = [round(load_before[0], 2), round(load_after[0], 2)]
    result["machine_loop_s"] = [loop_before, loop_seconds()]
    say(f"load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs); "
        f"machine loop {result['machine_loop_s'][0]} s before, {result['machine_loop_s'][1]} s after")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
