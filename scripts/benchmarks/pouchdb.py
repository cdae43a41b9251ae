"""Yardstick: the scenarios of `scripts/bench sync`, run with PouchDB replication over HTTP on 127.0.0.1.

Server: express-pouchdb (its "minimumForPouchDB" mode, as pouchdb-server runs it; gzip on) over PouchDB's
LevelDB adapter, in a child node process holding N ~1 KB shift-like documents (same fields and sizes as
scripts/benchmarks/sync.py, but unsigned: PouchDB has no signatures). Client: a PouchDB LevelDB
database on disk, replicating from the server with PouchDB's default replication options (batch_size
100, batches_limit 10), plain HTTP (no TLS) on 127.0.0.1.

Durability: LevelDB (leveldown) writes each batch to its log with write(2), without fsync (PouchDB never
asks for `sync: true`): a write survives the process dying, not the machine. shiftpeer's pull, increment
and no-op figures fsync every commit on the receiver, and its live_p50/p99 are without fsync.

(a) one-shot pull of N docs into an empty database      -> pull_docs_per_s
(b) 1,000 more, on the same keep-alive HTTP agent        -> incremental_1000_s
(c) reconnect when nothing changed: a new HTTP agent (new TCP connections), one-shot replication,
    median of 5                                          -> noop_reconnect_ms, noop_reconnect_bytes
    (HTTP bytes both ways as counted on the server's sockets; shiftpeer counts raw TLS bytes)
(d) live: continuous replication; a write on the source until the replicator has written it into the
    client's database, writes 3 ms apart                 -> live_p50_ms, live_p99_ms
    then 200 writes (--quick: 100) 50 ms apart, latency without a backlog
                                                         -> live_spaced50_p50_ms, live_spaced50_p99_ms

Installs pinned npm packages into bench-out/pouchdb/ (gitignored) on first use.

usage: scripts/bench pouchdb [--quick] [--json]     (--quick: 10,000 docs, 100 live writes)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NODE_DIR = os.path.join(ROOT, "bench-out", "pouchdb")
HELPER = os.path.join(HERE, "pouchdb_bench.js")

# pinned top-level versions (their own dependencies are resolved by npm within these packages' ranges)
PACKAGES = {"pouchdb": "9.0.0", "express-pouchdb": "4.2.0", "express": "4.21.2", "node-fetch": "2.7.0"}


def fail(msg: str) -> None:
    print(f"pouchdb bench: {msg}", file=sys.stderr)
    sys.exit(1)


def install() -> dict:
    """npm install the pinned packages into bench-out/pouchdb/ unless already there; returns versions."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        fail("node and npm are needed (node 20 was used)")
    manifest = {"name": "shiftpeer-bench-pouchdb", "private": True, "description": "installed by scripts/bench pouchdb",
                "dependencies": PACKAGES}
    os.makedirs(NODE_DIR, exist_ok=True)
    pkg_path = os.path.join(NODE_DIR, "package.json")
    wanted = json.dumps(manifest, indent=2) + "\n"
    current = open(pkg_path).read() if os.path.exists(pkg_path) else None

    def installed_versions() -> dict | None:
        out = {}
        for name in list(PACKAGES) + ["leveldown"]:
            p = os.path.join(NODE_DIR, "node_modules", name, "package.json")
            if not os.path.exists(p):
                return None
            with open(p) as f:
                out[name] = json.load(f)["version"]
        return out

    versions = installed_versions()
    if current != wanted or versions is None or any(versions[k] != v for k, v in PACKAGES.items()):
        with open(pkg_path, "w") as f:
            f.write(wanted)
        print(f"installing {', '.join(f'{k}@{v}' for k, v in PACKAGES.items())} into {NODE_DIR} ...",
              file=sys.stderr, flush=True)
        try:
            proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                                  cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            fail("npm install took over 10 minutes; giving up")
        if proc.returncode != 0:
            fail(f"npm install failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        versions = installed_versions()
        if versions is None:
            fail("npm install finished but a package is missing from bench-out/pouchdb/node_modules")
    # leveldown's native binding (a prebuilt binary shipped in its npm package) must load
    check = subprocess.run(["node", "-e", "require(process.argv[1])", os.path.join(NODE_DIR, "node_modules", "leveldown")],
                           capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        fail(f"leveldown's native binding does not load:\n{check.stderr[-2000:]}")
    versions["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return versions


def main(argv: list[str]) -> None:
    from sync import scenario_args  # scripts/benchmarks/sync.py: the same scenarios

    _quick, as_json, n, live_n, _rules = scenario_args(argv, prog="scripts/bench pouchdb", doc=__doc__,
                                                    user_rules=False)
    versions = install()
    tmp = tempfile.mkdtemp(prefix="shiftpeer-bench-pouchdb-")
    env = dict(os.environ, BENCH_NODE_DIR=NODE_DIR)
    # its own process group, so the driver and its source child are stopped together on any error
    proc = subprocess.Popen(["node", HELPER, "driver", tmp, str(n), str(live_n)], stdout=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=1800)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # anything left over (normally nothing)
        except ProcessLookupError:
            pass
    shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0:
        fail(f"the node driver failed (exit {proc.returncode}); output:\n{out[-2000:]}")
    results = json.loads(out.strip().splitlines()[-1])
    results["engine"] = (f"pouchdb {versions['pouchdb']} leveldb (leveldown {versions['leveldown']}) over http, "
                         f"express-pouchdb {versions['express-pouchdb']}, node {versions['node']}")
    results["signatures"] = False
    results["fsync"] = "none (leveldb log write(2) per batch, no fsync)"
    results["bytes_counted"] = "HTTP over TCP, both directions, server sockets (no TLS)"
    if not as_json:
        for k, v in results.items():
            print(f"{k:28} {v}")
        print("PouchDB has no signatures; its writes are not fsynced (see the docstring).")
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
