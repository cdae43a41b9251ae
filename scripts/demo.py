"""The demo's driver (run by scripts/demo): a hub, two users and a full peer as real `twistd` processes on
127.0.0.1, walked through the flows with the `shiftpeer` command, narrating what each node sees.

Exit status 0 only when every step saw what it should; the nodes are always stopped (error, Ctrl-C, SIGTERM).
Options: --dir DIR keeps the mesh in DIR (default: a temporary directory, removed afterwards),
--keep leaves the directory in place, --quiet prints only the outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
DEADLINE = 20
HREF = "https://example.org/demo"


class StepFailed(Exception):
    """A step of the demo did not see what it should."""


class Demo:
    def __init__(self, base: str, quiet: bool = False):
        self.base = base
        self.quiet = quiet
        self.procs: dict[str, subprocess.Popen] = {}
        self.dirs = {name: os.path.join(base, name) for name in ("hub", "alice", "bob", "fullpeer")}
        self.started = time.monotonic()

    # -- output ------------------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        if not self.quiet:
            print(text, flush=True)

    def step(self, title: str) -> None:
        self.say(f"\n== {title}")

    def sees(self, who: str, text: str) -> None:
        self.say(f"   {who:<9} {text}")

    # -- the shiftpeer command, in this process --------------------------------------------------
    def cli(self, who: str | None, *argv: str, show: bool = True, check: bool = True) -> tuple[int, str, str]:
        """Run `shiftpeer [--data DIR] ARGV...`; print it (with a relative DIR) when ``show``."""
        from shiftpeer.cli import main

        full = (["--data", self.dirs[who]] if who else []) + list(argv)
        if show:
            shown = (["--data", who] if who else []) + list(argv)
            self.say("   $ shiftpeer " + " ".join(shlex.quote(a) for a in shown))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(full)
            except SystemExit as e:
                status = e.code
        if check and status != 0:
            raise StepFailed(f"`shiftpeer {' '.join(full)}` failed ({status}): {err.getvalue().strip()}")
        return status, out.getvalue(), err.getvalue()

    def js(self, who: str, *argv: str, show: bool = False) -> dict:
        return json.loads(self.cli(who, *argv, "--json", show=show)[1])

    def feed_ids(self, who: str, *filters: str) -> set:
        return {r["id"] for r in self.js(who, "feed", *filters)["rows"]}

    def wait(self, what: str, check, deadline: float = DEADLINE):
        """Poll ``check`` until it returns something true, or fail the step after ``deadline`` seconds."""
        end = time.monotonic() + deadline
        last = None
        while True:
            try:
                last = check()
            except StepFailed as e:
                last = e
            if last and not isinstance(last, Exception):
                return last
            if time.monotonic() > end:
                detail = f" (last: {last})" if isinstance(last, Exception) else ""
                raise StepFailed(f"{what}: not seen within {deadline}s{detail}")
            time.sleep(0.05)

    # -- processes -----------------------------------------------------------------------------
    def start(self, name: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
            env.pop(proxy, None)
        log = open(os.path.join(self.base, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "shiftpeer", "--data", self.dirs[name]],
            cwd=self.base, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )
        log.close()
        self._record_pids()

    def _record_pids(self) -> None:
        """List the running nodes' pids where scripts/demo's trap finds them (SHIFTPEER_DEMO_PIDS)."""
        path = os.environ.get("SHIFTPEER_DEMO_PIDS")
        if path:
            with open(path, "w") as f:
                f.writelines(f"{p.pid}\n" for p in self.procs.values() if p.poll() is None)

    def wait_api(self, name: str) -> None:
        url_file = os.path.join(self.dirs[name], "api.url")
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise StepFailed(f"{name}'s twistd exited with {proc.returncode}; see {name}.log:\n{self.log_tail(name)}")
            if os.path.exists(url_file) and _answers(url_file):
                return
            time.sleep(0.05)
        raise StepFailed(f"{name}'s node did not start within {DEADLINE}s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            with open(os.path.join(self.base, f"{name}.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._record_pids()

    # -- the walk ------------------------------------------------------------------------------
    def run(self) -> None:
        from shiftpeer.identity.makecerts import main as make_certs

        certs = os.path.join(self.base, "certs")
        port = _free_port()
        hub_address = f"127.0.0.1:{port}"
        self.step(f"1. a hub, two users and a full peer on 127.0.0.1 (in {self.base})")
        # what `scripts/make-certs certs --host 127.0.0.1` does: a hub certificate from the TEST CA in certs/
        with contextlib.redirect_stdout(io.StringIO()):
            status = make_certs([certs, "--host", "127.0.0.1",
                                 "--ca-cert", os.path.join(ROOT, "certs", "test-ca.pem"),
                                 "--ca-key", os.path.join(ROOT, "certs", "test-ca.TEST-ONLY-NOT-SECRET.key")])
        if status != 0:
            raise StepFailed("making the hub certificate failed")
        self.say("   $ scripts/make-certs certs --host 127.0.0.1")
        ca = os.path.join(certs, "ca.pem")
        self.cli(None, "init", self.dirs["hub"], "--user", "operator", "--hub",
                 "--tls-cert", os.path.join(certs, "127.0.0.1.pem"), "--tls-key", os.path.join(certs, "127.0.0.1.key"),
                 "--listen", f"tcp:{port}:interface=127.0.0.1", show=False)
        self.say(f"   $ shiftpeer init hub --user operator --hub --tls-cert certs/127.0.0.1.pem "
                 f"--tls-key certs/127.0.0.1.key --listen tcp:{port}:interface=127.0.0.1")
        for name in ("alice", "bob"):
            self.cli(None, "init", self.dirs[name], "--user", name, "--connect", hub_address, "--ca", ca, show=False)
            self.say(f"   $ shiftpeer init {name} --user {name} --connect {hub_address} --ca certs/ca.pem")
        self.cli(None, "init", self.dirs["fullpeer"], "--user", "fullpeer", "--full-peer",
                 "--connect", hub_address, "--ca", ca, show=False)
        self.say(f"   $ shiftpeer init fullpeer --user fullpeer --full-peer --connect {hub_address} --ca certs/ca.pem")
        for name in self.dirs:
            self.start(name)
        self.say("   $ twistd -n --pidfile= shiftpeer --data hub   (and alice, bob, fullpeer)")
        for name in self.dirs:
            self.wait_api(name)
        for name in ("alice", "bob", "fullpeer"):
            self.cli(name, "sync", "--wait", "--timeout", str(DEADLINE), show=False)
        for name in self.dirs:
            st = self.js(name, "status")
            self.sees(name, f"running, roles {', '.join(st['roles'])}"
                      + (", connected to the hub" if st["peers"] and st["peers"][0]["connected"] else ""))

        self.step("2. alice and bob register their accounts on the hub")
        self.cli("alice", "register")
        self.cli("bob", "register", show=False)
        self.say("   $ shiftpeer --data bob register")

        self.step(f"3. alice makes three private shifts on {HREF}")
        ids = {}
        for kind in ("public", "group", "direct"):
            _, out, _ = self.cli("alice", "shift", "new", "--space", "Notes", "--href", HREF,
                                 "--summary", f"a note for {'everyone' if kind == 'public' else 'the club' if kind == 'group' else 'bob'}",
                                 show=(kind == "public"))
            ids[kind] = out.strip()
        self.say("   (and two more: 'a note for the club', 'a note for bob')")
        self.wait("alice's feed holds her three shifts", lambda: self.feed_ids("alice", "--href", HREF) == set(ids.values()))
        self.sees("alice", "3 shifts on the page (all private)")
        self.sees("bob", f"{len(self.feed_ids('bob', '--href', HREF))} shifts on the page")

        self.step("4. alice publishes the first one publicly")
        self.cli("alice", "shift", "publish", ids["public"], "--public")
        self.wait("bob sees the public shift", lambda: self.feed_ids("bob", "--href", HREF) == {ids["public"]})
        self.sees("bob", "1 shift on the page: 'a note for everyone' (asked the hub)")
        self.wait("the full peer holds it", lambda: self.feed_ids("fullpeer", "--href", HREF) == {ids["public"]})
        self.sees("fullpeer", "1 shift on the page, from its own replica of the firehose")

        self.step("5. alice makes a group, invites bob, publishes the second shift to it")
        self.cli("alice", "group", "new", "club")
        self.cli("alice", "group", "invite", "club", "bob")
        self.cli("bob", "group", "join", "club")
        self.cli("alice", "shift", "publish", ids["group"], "--group", "club")
        self.wait("bob sees the group shift", lambda: self.feed_ids("bob", "--group", "club") == {ids["group"]})
        members = self.js("bob", "group", "members", "club")["members"]
        self.sees("bob", "'a note for the club' in group club (members: "
                  + ", ".join(f"{m['user']} {m['level']}" for m in members) + ")")

        self.step("6. alice sends the third shift to bob alone")
        self.cli("alice", "shift", "publish", ids["direct"], "--to", "bob")
        self.wait("bob sees all three", lambda: self.feed_ids("bob", "--href", HREF) == set(ids.values()))
        self.sees("bob", "3 shifts on the page")
        fp = self.feed_ids("fullpeer", "--href", HREF)
        if fp != {ids["public"]}:
            raise StepFailed(f"the full peer should see only the public shift, sees {sorted(fp)}")
        self.sees("fullpeer", "still 1: group and direct shifts never reach the firehose")

        self.step("7. bob comments on the public shift; alice gets a message; bob edits his comment")
        _, out, _ = self.cli("bob", "comment", ids["public"], "Nice note!")
        comment_id = out.strip()
        self.wait("alice's message arrives", lambda: self.js("alice", "messages")["unread"] >= 1)
        _, out, _ = self.cli("alice", "messages")
        for line in out.strip().splitlines():
            self.sees("alice", line.strip())
        thread = self.js("alice", "feed", "--thread", ids["public"])["rows"]
        if [r.get("text") for r in thread] != ["Nice note!"]:
            raise StepFailed(f"the thread should hold bob's comment, holds {thread}")
        self.cli("bob", "comment", "edit", comment_id, "Nice note! Saved it.")
        self.wait("alice sees the edited comment", lambda: [r.get("text") for r in self.js(
            "alice", "feed", "--thread", ids["public"])["rows"]] == ["Nice note! Saved it."])
        unread = self.js("alice", "messages")["unread"]
        self.sees("alice", f"the thread shows 'Nice note! Saved it.'; still {unread} unread (an edit is no new message)")

        self.step("8. queries")
        self.cli("bob", "feed", "--domain", "example.org", show=True)
        by_domain = self.feed_ids("bob", "--domain", "example.org")
        self.sees("bob", f"{len(by_domain)} shifts on example.org")
        alice_id = self.js("alice", "status")["account"]
        by_author = self.feed_ids("bob", "--author", alice_id, "--space", "Notes")
        self.sees("bob", f"{len(by_author)} Notes shifts by alice")
        if by_domain != set(ids.values()) or by_author != set(ids.values()):
            raise StepFailed("bob's domain and author queries should find alice's three shifts")
        public = self.feed_ids("fullpeer", "--domain", "example.org")
        club = self.feed_ids("fullpeer", "--group", "club")
        self.sees("fullpeer", f"{len(public)} shift on example.org, {len(club)} in group club (answered locally)")
        if public != {ids["public"]} or club:
            raise StepFailed("the full peer must hold the public shift and nothing of group club")
        hub = self.js("hub", "status")["databases"]
        self.sees("hub", f"master {hub['master']['docs']} docs (the shift and its comment), "
                  f"group/club {hub['group/club']['docs']}, inbox/bob {hub['inbox/bob']['docs']}, "
                  f"shared {hub['shared']['docs']}")

        self.step("9. every node is in step")
        for name in ("alice", "bob", "fullpeer"):
            self.cli(name, "sync", "--wait", "--timeout", str(DEADLINE), show=(name == "alice"))
        for name in self.dirs:
            st = self.js(name, "status")
            reps = st["replications"]
            kinds = {d: sum(1 for r in reps if r["direction"] == d) for d in ("pull", "push", "local")}
            self.sees(name, f"{_n(len(st['connections']), 'sync connection')}; {_n(kinds['pull'], 'pull')}, "
                      f"{_n(kinds['push'], 'push', 'pushes')}, {_n(kinds['local'], 'local copy', 'local copies')}: "
                      + ("all caught up" if st["caught_up"] else "still catching up"))

    def summary(self) -> None:
        self.say(f"\nall steps saw what they should ({time.monotonic() - self.started:.1f}s)")


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def _die_with_parent() -> None:
    """Linux: the node gets SIGTERM if the demo itself is killed outright."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _answers(url_file: str) -> bool:
    try:
        with open(url_file) as f:
            url = f.read().strip()
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url + "/v1/status", timeout=2)
    except urllib.error.HTTPError as e:
        return e.code == 401
    except OSError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.splitlines()[0])
    p.add_argument("--dir", help="keep the mesh in DIR (it must not exist yet); default: a temporary directory")
    p.add_argument("--keep", action="store_true", help="do not remove the mesh directory afterwards")
    p.add_argument("--quiet", action="store_true", help="print only the outcome")
    args = p.parse_args(argv)
    if args.dir:
        if os.path.exists(args.dir):
            print(f"scripts/demo: {args.dir} exists; remove it or choose another --dir", file=sys.stderr)
            return 2
        os.makedirs(args.dir)
        base = os.path.abspath(args.dir)
    else:
        base = tempfile.mkdtemp(prefix="shiftpeer-demo-")

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    demo = Demo(base, quiet=args.quiet)
    status = 1
    try:
        demo.run()
        demo.summary()
        status = 0
    except StepFailed as e:
        print(f"\nscripts/demo: FAILED: {e}", file=sys.stderr)
        for name in demo.procs:
            tail = demo.log_tail(name, 5)
            if tail.strip():
                print(f"--- last lines of {name}.log:\n{tail}", file=sys.stderr, end="")
    except KeyboardInterrupt:
        print("\nscripts/demo: interrupted", file=sys.stderr)
        status = 130
    finally:
        demo.stop_all()
        signal.signal(signal.SIGTERM, previous)
        if args.keep or (status != 0 and args.dir):
            demo.say(f"the mesh is kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    if status == 0:
        print("scripts/demo: OK" if args.quiet else "nodes stopped; bye")
    return status


if __name__ == "__main__":
    sys.exit(main())
