"""docs/fullpeer.md walked as the owner of a full peer at home would: the page's command blocks, read from
the page itself, typed in order against real `twistd` processes on 127.0.0.1, and what the page says they
show checked. A second test parses every command docs/fullpeer.md and docs/node.md name in their text.

Two full peers walk *Running a full peer*: `fp1` without the optional `--peer`, `fp2` with `--peer`
naming fp1. The page's placeholders and its hosts off this machine are filled in (``TYPED``, each with
its reason); nothing else of a command changes. The hub is the test's own, made as docs/operators.md and
the README tour make one (the committed test CA, `shiftpeer init --hub`), and starts with ``SEEDED``
public shifts in its `master`, so a full peer that joins copies a firehose large enough for the
catch-up line the page quotes (`CATCH_UP_LOG_DOCS`). Then, as the page's first paragraph and *At home*
say: a shift published at fp1 reaches fp2; the hub stops, fp2 restarts with the upload cap, and fp1's
next shift still reaches it through gossip.

Every command of the page's blocks is run or listed in ``NOT_RUN`` with why, so a command added to the
page fails here until the test is told. Outcomes that arrive later (a log line, a gossiped shift) are
polled with a deadline, never slept for.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.doc_commands import ROOT, code_blocks, commands, page_commands, section, words
from tests.ports import free_port
from tests.test_cli import _answers, _env, stop_node
from tests.test_cli_status_gossip import _gossip_lines as gossip_lines
from tests.test_operators_commands import _parse_cli

PAGE = ROOT / "docs" / "fullpeer.md"
BIN = Path(sys.executable).parent
#: Public shifts in the hub's master before anyone joins: the catch-up line needs a pull that brought 100 or
#: more, and a full peer pulling from two sources may split the firehose between them.
SEEDED = 200
#: How long an outcome that arrives asynchronously may take (the neighbour step runs every 5 s), and a command.
DEADLINE = 20.0
COMMAND_TIMEOUT = 60.0

#: What the walk fills in, and why: (the page's text, a regex; what it becomes, from the full peer walking).
TYPED = [
    # optional on the page: fp1 leaves it out, fp2 names fp1 (other-peer.example.org is not this machine)
    (r"\[--peer other-peer\.example\.org:7702\]\.\.\.", lambda w: f"--peer 127.0.0.1:{w.peer}" if w.peer else ""),
    # the hub's public name: the walk's hub listens on a free loopback port
    (r"\bhub\.example\.org:7701\b", lambda w: f"127.0.0.1:{w.hub.port}"),
    # the CA that signed the hub's certificate: the test CA's, as scripts/make-certs writes it
    (r"--ca ca\.pem\b", lambda w: f"--ca {w.hub.ca}"),
    # all interfaces on a fixed port: tests listen on loopback only, on a free port
    (r"--listen tcp:7702\b", lambda w: f"--listen tcp:{w.port}:interface=127.0.0.1"),
    (r"\bDIR\b", lambda w: str(w.dir)),
    (r"\bNAME\b", lambda w: w.name),
]

#: Commands of the page's blocks this walk does not run, with why (none today: each block runs).
NOT_RUN: dict[str, str] = {}
#: What the page names in its text but no block gives, and that no test here runs:
#: `scripts/bench gossip [--quick] [--json]`: a benchmark (a mesh of 8-32 full peers, minutes of CPU on
#: 2 cores); the suite does not run benchmarks, tests/test_bench_cli.py checks its command line.
#: A full peer behind NAT, not listed: needs a second network; tests/test_gossip_announce_proofs.py and
#: tests/test_gossip_announce_registered.py cover an address the hub cannot prove.


@dataclass
class Hub:
    """The walk's hub: its directory, port, CA file, and ids (its account; its TLS peer id)."""
    dir: Path
    port: int
    ca: Path
    peer_id: str = ""

    def log(self) -> str:
        return (self.dir.parent / "hub.log").read_text()


@dataclass
class Walker:
    """One full peer walking the page: where it lives, its listening port, the --peer it names (a port)."""
    hub: Hub
    dir: Path
    name: str
    port: int
    peer: int | None = None
    proc: subprocess.Popen | None = None
    ran: list[str] = field(default_factory=list)

    def log(self) -> str:
        return (self.dir.parent / f"{self.name}.log").read_text()

    @property
    def account(self) -> str:
        return json.loads((self.dir / "config.json").read_text())["account_id"]


def typed(command: str, walker: Walker, used: set[str]) -> list[str]:
    """The page's command as this walker types it (``TYPED`` filled in), split as a shell would."""
    for pattern, value in TYPED:
        command, n = re.subn(pattern, lambda m: value(walker), command)
        if n:
            used.add(pattern)
    return shlex.split(command, comments=True)


def cli(*argv: str) -> subprocess.CompletedProcess:
    """A command as a person runs it, from the venv's bin (the checkout's source on PYTHONPATH)."""
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], env=_env(), capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT)


def ok(argv: list[str]) -> str:
    done = cli(*argv)
    assert done.returncode == 0, f"{shlex.join(argv)}\n  exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def eventually(check, what: str, deadline: float = DEADLINE):
    """``check()`` once it is true, within ``deadline`` seconds, or an AssertionError saying ``what``."""
    end = time.monotonic() + deadline
    while not (result := check()):
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline}s: {what}")
        time.sleep(0.1)
    return result


def foreground(argv: list[str], walker: Walker) -> None:
    """`twistd -n ...` as typed in its own terminal: the node runs until the walk stops it; returns once its
    API answers (bounded)."""
    assert argv[:3] == ["twistd", "-n", "--pidfile="], argv
    with open(walker.dir.parent / f"{walker.name}.log", "ab") as log:   # the node keeps its own copy
        walker.proc = subprocess.Popen([str(BIN / "twistd"), *argv[1:]], env=_env(), stdout=log,
                                       stderr=subprocess.STDOUT, cwd=walker.dir.parent)
    eventually(lambda: walker.proc.poll() is not None or _answers(str(walker.dir)), f"{walker.name}'s API answers")
    assert walker.proc.poll() is None, f"{shlex.join(argv)} exited {walker.proc.returncode}:\n{walker.log()}"


def make_hub(tmp: Path) -> Hub:
    """A hub as docs/operators.md makes one with the test CA, with SEEDED public shifts by its account in
    master, started as a daemon (its log in hub.log)."""
    from shiftpeer.cli import main as shiftpeer
    from shiftpeer.identity import NodeKey
    from shiftpeer.identity.makecerts import main as make_certs
    from shiftpeer.store import Store
    from tests.test_fullpeer_intake import public_shift

    certs = tmp / "certs"
    assert make_certs([str(certs), "--host", "127.0.0.1", "--ca-cert", str(ROOT / "certs" / "test-ca.pem"),
                       "--ca-key", str(ROOT / "certs" / "test-ca.TEST-ONLY-NOT-SECRET.key")]) == 0
    hub = Hub(tmp / "hub", free_port(), certs / "ca.pem")
    assert shiftpeer(["init", str(hub.dir), "--user", "operator", "--hub", "--listen",
                      f"tcp:{hub.port}:interface=127.0.0.1", "--tls-cert", str(certs / "127.0.0.1.pem"),
                      "--tls-key", str(certs / "127.0.0.1.key")]) == 0
    hub.peer_id = json.loads((hub.dir / "config.json").read_text())["tls_peer_id"]
    key = NodeKey.load(hub.dir)
    store = Store(str(hub.dir / "store"))
    try:
        store.create_database("master").bulk_replicated(
            [public_shift(key, f"walk-{i}", f"walk-{i}") for i in range(SEEDED)])
    finally:
        store.close()
    ok(["twistd", "--pidfile", str(tmp / "hub.pid"), "--logfile", str(tmp / "hub.log"), "shiftpeer",
        "--data", str(hub.dir)])
    return hub


def stop_hub(tmp: Path) -> None:
    """`kill $(cat hub.pid)`, then wait (bounded) until the daemon is gone."""
    pid = int((tmp / "hub.pid").read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    eventually(lambda: not Path(f"/proc/{pid}").exists(), "the hub stops")


def neighbour_lines(walker: Walker) -> list[list[str]]:
    """The words of each line under `gossip:` in the walker's `shiftpeer status`."""
    return [line.split() for line in gossip_lines(ok(["shiftpeer", "--data", str(walker.dir), "status"]))[1:]]


def summary_format() -> re.Pattern:
    """The page's example of status's `gossip:` line (under *Neighbours*), its numbers any numbers."""
    [example] = [b for b in code_blocks(section(PAGE.read_text(), "## Neighbours")) if b.startswith("gossip:")]
    return re.compile(re.sub(r"\d+", r"\\d+", re.escape(example.splitlines()[0])) + "$")


def quoted(start: str) -> str:
    """The page's backticked log line that begins with ``start`` (a line the page tells a reader to look for),
    its wrapping undone."""
    prose = re.sub(r"^```.*?^```", "", PAGE.read_text(), flags=re.S | re.M)   # a fence is no backtick pair
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    found = [span for span in spans if span.startswith(start) and not span.endswith("...")]
    assert found, f"the page no longer quotes a log line starting {start!r}; update the test"
    return found[0]


def log_pattern(line: str, **placeholders: str) -> re.Pattern:
    """A quoted log line as a pattern: its numbers any numbers, its placeholders (PEER, ADDRESS) given."""
    parts = re.split(r"(\d[\d,.]*)", line)
    pattern = "".join(r"[\d,.]+" if i % 2 else re.escape(part) for i, part in enumerate(parts))
    for name, value in placeholders.items():
        assert name in pattern, f"{line!r} no longer names {name}"
        pattern = pattern.replace(name, value)
    return re.compile(pattern)


def run_block(block: list[str], walker: Walker, used: set[str]) -> dict[str, str]:
    """Run a block's commands for ``walker`` in order; what each printed, keyed by its subcommand
    (`init`, `twistd`, `sync`, `register`, `status`)."""
    out = {}
    for command in block:
        if command in NOT_RUN:
            continue
        argv = typed(command, walker, used)
        if argv[0] == "twistd":
            foreground(argv, walker)
            key = "twistd"
        else:
            key = argv[1] if argv[1] == "init" else argv[3]
            out[key] = ok(argv)
        walker.ran.append(command)
    return out


def publish(walker: Walker, summary: str) -> tuple[str, str]:
    """A public shift from the walker's node, as the README tour publishes one: (its id, what publish said)."""
    href = f"https://example.org/{summary}"
    sid = ok(["shiftpeer", "--data", str(walker.dir), "shift", "new", "--space", "Notes", "--href", href,
              "--summary", summary]).strip()
    return sid, ok(["shiftpeer", "--data", str(walker.dir), "shift", "publish", sid, "--public"])


def in_feed(walker: Walker, summary: str, sid: str) -> bool:
    """`GET /v1/feed?href=` on the walker's node lists ``sid`` (what `shiftpeer feed --href` prints; polled
    through the API, not a process per try)."""
    from shiftpeer.cli.client import ApiClient

    rows = ApiClient(str(walker.dir)).call("GET", "/feed", query={"href": f"https://example.org/{summary}"})["rows"]
    return sid in {row["id"] for row in rows}


def neighbour_live(walker: Walker, peer: Walker) -> bool:
    """The walker's status (API) has ``peer`` as a live gossip neighbour."""
    from shiftpeer.cli.client import ApiClient

    gossip = ApiClient(str(walker.dir)).call("GET", "/status")["gossip"]
    return any(n["peer_id"] == peer.account and n["state"] == "live" for n in gossip["neighbours"])


def walk_running(walker: Walker, start: list[str], after: list[str], used: set[str]) -> None:
    """*Running a full peer*: init and start, then sync --wait, register and status, as the page says."""
    out = run_block(start, walker, used)
    assert re.fullmatch(r"[a-z2-7]{52}\n", out["init"]), out["init"]
    config = json.loads((walker.dir / "config.json").read_text())
    assert "full-peer" in config["roles"] and config["listen"] == [f"tcp:{walker.port}:interface=127.0.0.1"]
    assert config["peers"] == ([f"127.0.0.1:{walker.peer}"] if walker.peer else []), config
    assert "full peer: gossiping master (neighbours 4-8)" in walker.log()

    out = run_block(after, walker, used)
    assert out["sync"].startswith("in step:"), out["sync"]
    assert out["register"] == f"registered as {walker.name} on the hub\n", out["register"]
    status = out["status"]
    assert "roles:     user, flows, full-peer" in status and f"hub:       127.0.0.1:{walker.hub.port}" in status, status
    assert summary_format().match(gossip_lines(status)[0]), gossip_lines(status)
    assert re.search(rf"^  master +{SEEDED:,} docs", status, re.M), status   # the firehose, copied
    assert "replication:  all caught up" in status, status
    # "when a pull that brought 100 documents or more has caught up the log says so", from the hub or --peer
    caught_up = log_pattern(quoted("caught up master from master at PEER"), PEER=r"\w+")
    eventually(lambda: caught_up.search(walker.log()), f"{walker.name} logs {caught_up.pattern!r}")


@pytest.mark.slow
def test_the_full_peer_page_works_as_written(tmp_path):
    """Two full peers follow *Running a full peer* against a hub: each copies the firehose (the catch-up
    line), registers, is listed by the hub once it has dialled it back, and shows the page's status;
    fp2 lists fp1 as its static neighbour, queries answer from the local feed, a shift published at fp1
    reaches fp2; with the hub stopped, fp2 restarted as *At home* gives (the upload cap in status) still
    gets fp1's next shift by gossip."""
    text = PAGE.read_text()
    start, after = (commands(b) for b in code_blocks(section(text, "## Running a full peer"))[:2])
    [home] = (commands(b) for b in code_blocks(section(text, "### At home, on a small uplink")))
    used: set[str] = set()
    hub = make_hub(tmp_path)
    fp1 = Walker(hub, tmp_path / "fp1", "fp1", free_port())
    fp2 = Walker(hub, tmp_path / "fp2", "fp2", free_port(), peer=fp1.port)
    try:
        for walker in (fp1, fp2):
            walk_running(walker, start, after, used)
        for walker in (fp1, fp2):   # --listen opts in: listed once the hub has dialled it back
            address = re.escape(f"127.0.0.1:{walker.port}")
            listed = log_pattern(quoted("the hub lists us at ADDRESS"), ADDRESS=address)
            eventually(lambda w=walker: listed.search(w.log()), f"{walker.name} logs {listed.pattern!r}")
            proven = log_pattern(quoted("listing PEER at ADDRESS"), PEER=walker.account, ADDRESS=address)
            eventually(lambda: proven.search(hub.log()), f"the hub logs {proven.pattern!r}")
            assert walker.log().count("the hub did not take our gossip announcement") <= 1   # once per connection

        eventually(lambda: neighbour_live(fp2, fp1), "fp2 gossips with its --peer fp1")
        static = [f"127.0.0.1:{fp1.port}", "out", "live", fp1.account[:12], "(static)"]
        assert static in neighbour_lines(fp2), neighbour_lines(fp2)
        feed = ok(["shiftpeer", "--data", str(fp2.dir), "feed", "--href", "https://example.org/walk-7"])
        assert feed.startswith("walk-7  "), feed   # a query answers from the full peer's own feed
        unban = ok(["shiftpeer", "--data", str(fp1.dir), "gossip", "unban", "--all"])
        assert unban == "lifted 0 ban(s)\n0 still banned\n", unban

        sid, said = publish(fp1, "from-fp1")
        assert "public: ok" in said, said
        eventually(lambda: in_feed(fp2, "from-fp1", sid), "fp1's public shift reaches fp2")

        stop_hub(tmp_path)
        assert stop_node(fp2.proc) in (0, -signal.SIGTERM)   # twistd re-raises the signal once stopped
        run_block(home, fp2, used)
        status = ok(["shiftpeer", "--data", str(fp2.dir), "status"])
        cap = r"^upload cap: 250,000 bytes/s; held sync output back [\d.]+ s since start; [\d,]+ bytes waiting$"
        assert re.search(cap, status, re.M), status
        eventually(lambda: neighbour_live(fp2, fp1), "fp2, restarted, gossips with fp1 again")
        sid, said = publish(fp1, "while-the-hub-is-down")
        assert "public: pending" in said, said
        eventually(lambda: in_feed(fp2, "while-the-hub-is-down", sid), "hub down: fp1's next shift reaches fp2")
    finally:
        for walker in (fp1, fp2):
            if walker.proc is not None:
                stop_node(walker.proc)
        if (tmp_path / "hub.pid").exists():
            stop_hub(tmp_path)

    block_commands = start + after + home
    gone = set(NOT_RUN) - set(block_commands)
    assert not gone, f"NOT_RUN names commands the page no longer has: {gone}"
    assert {c for c in block_commands if c not in NOT_RUN} <= set(fp1.ran + fp2.ran)
    unused = sorted({p for p, _ in TYPED} - used)
    assert not unused, f"the page no longer has: {unused}; update TYPED"


def test_the_commands_in_the_text_parse(tmp_path):
    """Every `shiftpeer ...` and `twistd ... shiftpeer ...` docs/fullpeer.md and docs/node.md give, in their
    blocks and their text, is a command line the parsers accept: `shiftpeer`'s with its checks, twistd's
    with the plugin's against a real full-peer directory (DIR)."""
    from twisted.python.usage import UsageError
    from twisted.scripts._twistd_unix import ServerOptions

    from shiftpeer.nodedir import init_node_dir

    directory = init_node_dir(tmp_path / "DIR", user="walker", full_peer=True, connect="127.0.0.1:7701",
                              listen=["tcp:7702:interface=127.0.0.1"]).path
    pages = [ROOT / "docs" / "fullpeer.md", ROOT / "docs" / "node.md"]
    found = {page.name: page_commands(page, "shiftpeer") + page_commands(page, "twistd") for page in pages}
    assert len(found["fullpeer.md"]) >= 8 and len(found["node.md"]) >= 1, found
    bad = {}
    for page, cmds in found.items():
        for command in cmds:
            argv = [str(directory) if w == "DIR" else w for w in words(command)]
            if argv[0] == "shiftpeer":
                why = _parse_cli(argv[1:])
            else:
                try:
                    ServerOptions().parseOptions(argv[1:])
                    why = None
                except (UsageError, SystemExit) as e:
                    why = str(e)
            if why is not None:
                bad[f"{page}: {command}"] = why
    assert not bad, "\n".join(f"{c}\n  -> {why}" for c, why in bad.items())
