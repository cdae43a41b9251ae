"""A node either starts or says in one line why it cannot (real `twistd -n shiftpeer` processes): one node per
directory (shiftpeer.nodelock), `restore` never under a live node, a port that cannot be bound stops the node,
and a bad config.json, hub.json or store is one readable line, not a traceback or twistd's usage text."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import pytest
import pytest_twisted

from shiftpeer.nodedir import init_node_dir
from shiftpeer.nodelock import LOCK_FILE, RESTORE, NodeBusy, check_not_running, lock_node_dir
from test_cli import TWISTD, _env, run, start_node, stop_node, wait_for
from tests.ports import free_port


def run_twistd(path: str, *flags: str, twistd_args: tuple = ("--pidfile=",)) -> subprocess.CompletedProcess:
    """`twistd -n shiftpeer --data PATH FLAGS`, expected to exit by itself (bounded)."""
    return subprocess.run([TWISTD, "-n", *twistd_args, "shiftpeer", "--data", path, *flags],
                          capture_output=True, text=True, timeout=60, cwd=os.path.dirname(path), env=_env())


def assert_one_line_refusal(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The process failed, its standard error is one line holding ``words``, and nothing shows a traceback."""
    assert proc.returncode != 0, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    for noise in ("Traceback", "Unhandled Error", "--logfile="):   # the last one: twistd's usage text
        assert noise not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return lines[0]


@pytest.fixture
def node(tmp_path) -> str:
    return init_node_dir(str(tmp_path / "alice"), user="alice").path


# -- one node per directory --------------------------------------------------------------------------


def test_a_second_node_on_the_directory_is_refused_and_restore_waits(tmp_path, node, capsys):
    """While a node runs, a second twistd on its directory exits at once naming the running pid, and leaves
    the first node's api.url alone; `restore` refuses. After the node stops, restore works."""
    first = start_node(node, str(tmp_path / "a1.log"))
    try:
        status, out, err = run(capsys, "--data", node, "backup", str(tmp_path / "b.mdb"))
        assert status == 0, err
        url = open(os.path.join(node, "api.url")).read()
        second = run_twistd(node, twistd_args=("--pidfile", str(tmp_path / "a2.pid")))
        assert_one_line_refusal(second, f"--data {node}: a node is already running on it (pid {first.pid})")
        assert open(os.path.join(node, "api.url")).read() == url
        assert run(capsys, "--data", node, "status")[0] == 0
        status, out, err = run(capsys, "--data", node, "restore", str(tmp_path / "b.mdb"))
        assert status == 1 and f"a node is already running on it (pid {first.pid})" in err, err
        assert "stop it first" in err
        assert not [n for n in os.listdir(tmp_path / "alice") if "before-restore" in n]
    finally:
        stop_node(first)
    status, out, err = run(capsys, "--data", node, "restore", str(tmp_path / "b.mdb"))
    assert status == 0 and "restored" in out, err


def test_a_killed_node_does_not_block_a_restart(tmp_path, node):
    """The lock is the kernel's (flock): SIGKILL leaves the lock file behind but not the lock."""
    proc = start_node(node, str(tmp_path / "a.log"))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert os.path.exists(os.path.join(node, LOCK_FILE))
    check_not_running(node)
    stop_node(start_node(node, str(tmp_path / "a.log")))


def test_restore_holds_the_lock_so_no_node_starts_meanwhile(tmp_path, node, capsys):
    """While a restore holds the directory's lock (here: this test, as restore does), a node does not start
    and a second restore waits, each saying so; the lock is given back."""
    lock = lock_node_dir(node, RESTORE)
    try:
        with pytest.raises(NodeBusy, match=f"a restore is running on it \\(pid {os.getpid()}\\)"):
            lock_node_dir(node)
        assert_one_line_refusal(run_twistd(node), f"--data {node}: a restore is running on it (pid {os.getpid()})")
        status, out, err = run(capsys, "--data", node, "restore", str(tmp_path / "none.mdb"))
        assert status == 1 and "a restore is running on it" in err and "wait for it to finish" in err, err
    finally:
        lock.release()
    check_not_running(node)


@pytest_twisted.ensureDeferred
async def test_a_stopping_api_leaves_an_api_url_it_did_not_write(tmp_path):
    """api.url is how the CLI finds the node: a stop removes only the URL this node wrote."""
    from tests.helpers_node import make_node

    directory = str(tmp_path / "n")
    n = make_node(directory)
    n.startService()
    try:
        url = await n.when_ready()
        with open(os.path.join(directory, "api.url"), "w") as f:
            f.write("http://127.0.0.1:1\n")
    finally:
        await n.stopService()
    assert open(os.path.join(directory, "api.url")).read() == "http://127.0.0.1:1\n" != url
    n.startService()   # and one it did write, it removes
    try:
        await n.when_ready()
    finally:
        await n.stopService()
    assert not os.path.exists(os.path.join(directory, "api.url"))


# -- ports ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--listen", "--metrics", "--api"])
def test_a_port_that_cannot_be_bound_stops_the_node(tmp_path, node, flag):
    """A busy port: twistd exits non-zero with one line naming the flag, the endpoint and the reason."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        proc = run_twistd(node, flag, endpoint)
    assert_one_line_refusal(proc, f"{flag} {endpoint}: cannot listen: Address already in use")
    assert not os.path.exists(os.path.join(node, "api.url"))
    check_not_running(node)


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors   # the node logs why it cannot start, at critical level
async def test_a_node_that_cannot_start_removes_its_api_url_at_once(tmp_path):
    """The first listener bound, the second cannot: api.url goes before startService returns (under twistd
    the reactor never turns to finish the stop), and the whole stop completes once it does."""
    from shiftpeer.node import Node
    from shiftpeer.startup import StartupError
    from tests.helpers_node import eventually

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        path = init_node_dir(str(tmp_path / "n"), user="n", listen=["tcp:0:interface=127.0.0.1", busy]).path
        n = Node.from_directory(path)
        with pytest.raises(StartupError, match=f"--listen {busy}: cannot listen"):
            n.startService()
        assert not os.path.exists(os.path.join(path, "api.url"))
        await eventually(lambda: n.store is None, timeout=10)
    check_not_running(path)


def test_data_naming_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert_one_line_refusal(run_twistd(str(tmp_path / "afile")), "is a file, not a node directory")


# -- files that are wrong ---------------------------------------------------------------------------------


def _edit_config(node: str, **fields) -> None:
    path = os.path.join(node, "config.json")
    doc = json.load(open(path))
    doc.update(fields)
    json.dump(doc, open(path, "w"))


def test_a_corrupt_config_json_is_one_line_whose_advice_works(tmp_path, node, capsys):
    """Not 'shiftpeer init' on the same directory (init refuses it): the line says to repair the file."""
    with open(os.path.join(node, "config.json"), "a") as f:
        f.write("}{")
    line = assert_one_line_refusal(run_twistd(node), "config.json is unreadable or not JSON", "repair it")
    assert f"shiftpeer init {node}" not in line


def test_unknown_roles_are_refused(node):
    _edit_config(node, roles=["user", "bogus"])
    assert_one_line_refusal(run_twistd(node), '"roles": unknown role "bogus"', '"full-peer"')


@pytest.mark.parametrize("hub_json, words", [
    ('{"registration": "invte"}', '"registration" must be "open" or "invite", not "invte"'),
    ('{"operators": "abc"}', '"operators" must be a list of account ids'),
    ('{"operators": ["bob"]}', '"operators": "bob" is not one of the account ids'),
    ('{"relays": [7]}', '"relays": 7 is not one of the peer ids'),
    ('{"registraton": "invite"}', "unknown field 'registraton'"),
    ('["invite"]', "must hold a JSON object"),
    ('{"registration": ', "unreadable or not JSON"),
])
def test_a_bad_hub_json_is_one_line(tmp_path, hub_json, words):
    """Every hub.json field is checked before the hub starts."""
    hub = init_node_dir(str(tmp_path / "hub"), user="op", hub=True).path
    with open(os.path.join(hub, "hub.json"), "w") as f:
        f.write(hub_json)
    assert_one_line_refusal(run_twistd(hub), "hub.json", words)


def test_a_garbage_store_points_at_restore_and_restore_fixes_it(tmp_path, node, capsys):
    """A store LMDB cannot open: one line naming the store and the restore command; following it works."""
    stop_node(start_node(node, str(tmp_path / "a.log")))
    assert run(capsys, "--data", node, "backup", str(tmp_path / "b.mdb"))[0] == 0
    with open(os.path.join(node, "store", "data.mdb"), "wb") as f:
        f.write(b"not an lmdb file" * 1024)
    assert_one_line_refusal(run_twistd(node), "the store", "cannot be opened",
                            f"'shiftpeer --data {node} restore BACKUP'")
    check_not_running(node)
    status, out, err = run(capsys, "--data", node, "restore", str(tmp_path / "b.mdb"))
    assert status == 0, err
    stop_node(start_node(node, str(tmp_path / "a.log")))


def test_a_store_of_an_unknown_schema_version_is_one_line(tmp_path, node):
    """A store written by a newer shiftpeer: the store's own message (versions, what to do), as one line."""
    import lmdb

    from shiftpeer.backup import META_DB, SCHEMA_KEY

    stop_node(start_node(node, str(tmp_path / "a.log")))
    env = lmdb.open(os.path.join(node, "store"), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(SCHEMA_KEY, b"99", db=env.open_db(META_DB, txn=txn))
    env.close()
    assert_one_line_refusal(run_twistd(node), "store schema version '99'", "upgrade shiftpeer")


def test_a_store_path_that_cannot_be_created_is_one_line(tmp_path, node):
    (tmp_path / "file").write_text("in the way")
    _edit_config(node, store=str(tmp_path / "file" / "store"))
    assert_one_line_refusal(run_twistd(node), "cannot be created", '"store" path')


@pytest.mark.parametrize("argv, words", [
    ((), "--data DIR is required"),
    (("--data", "x", "--bogus"), "option --bogus not recognized"),
])
def test_a_bad_command_line_ends_with_the_error(tmp_path, argv, words):
    """Usage mistakes: a short synopsis, then the error as the last line (not twistd's 60-line help)."""
    proc = subprocess.run([TWISTD, "-n", "--pidfile=", "shiftpeer", *argv], capture_output=True, text=True,
                          timeout=60, cwd=str(tmp_path), env=_env())
    assert proc.returncode != 0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) <= 4, lines
    assert lines[-1].startswith("twistd shiftpeer: error: ") and words in lines[-1], lines
    assert "twistd shiftpeer --help" in proc.stderr


# -- the documented start commands ------------------------------------------------------------------------


def test_the_documented_foreground_command_runs_two_nodes_from_one_directory(tmp_path):
    """docs/operators.md's `twistd -n ... shiftpeer --data hub` line, as written, for two nodes started from
    the same working directory (twistd's default ./twistd.pid would stop the second)."""
    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "operators.md")
    line = next(l for l in open(docs) if l.startswith("twistd -n") and "# in the foreground" in l)
    argv = line.split("#")[0].split()
    assert argv[:2] == ["twistd", "-n"] and argv[-2:] == ["--data", "hub"], argv
    procs = []
    try:
        for name in ("one", "two"):   # one after the other: the second starts while the first runs
            init_node_dir(str(tmp_path / name), user=name)
            cmd = [TWISTD, *argv[1:-1], name, "--api", "tcp:0:interface=127.0.0.1"]
            proc = subprocess.Popen(cmd, cwd=str(tmp_path), env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            wait_for(lambda: proc.poll() is not None or os.path.exists(tmp_path / name / "api.url"), timeout=30)
            assert proc.poll() is None, f"{name} exited with {proc.returncode}: {proc.stderr.read()}"
    finally:
        for proc in procs:
            stop_node(proc)


@pytest.mark.allow_logged_errors
def test_a_metrics_port_that_fails_later_is_logged_once(monkeypatch, fail_on_logged_errors):
    """An endpoint that reports its bind failure later (not at once, as tcp does) cannot stop the start; the
    failure is logged, and nothing else breaks on the missing port (no AttributeError in the log)."""
    from types import SimpleNamespace

    from twisted.internet.defer import Deferred
    from twisted.internet.error import CannotListenError

    import shiftpeer.api.metrics as metrics

    later: Deferred = Deferred()
    monkeypatch.setattr(metrics, "serverFromString", lambda reactor, text: SimpleNamespace(listen=lambda f: later))
    svc = metrics.MetricsService(SimpleNamespace(reactor=None), "tcp:9101:interface=127.0.0.1", "t" * 43)
    svc.startService()
    later.errback(CannotListenError("127.0.0.1", 9101, OSError(98, "Address already in use")))
    assert svc.url is None
    logged = [e.get("log_failure") or e.get("failure") for e in fail_on_logged_errors]
    assert [f.type for f in logged if f is not None] == [CannotListenError], logged
    outcome: list = []
    svc._waitingForPort.addBoth(outcome.append)
    assert outcome == [None]   # not an AttributeError from reading a port that is not there
    svc.stopService()


# -- daemon mode (twistd without -n) ----------------------------------------------------------------------


def _daemon(node: str, tmp_path, *flags: str) -> subprocess.CompletedProcess:
    """`twistd shiftpeer` daemonizing: returns when twistd's parent has exited and nothing holds its
    standard error any more (a daemon still holding it would make this wait until the timeout)."""
    pidfile = tmp_path / "d.pid"
    try:
        return subprocess.run([TWISTD, "--pidfile", str(pidfile), "--logfile", str(tmp_path / "d.log"),
                               "shiftpeer", "--data", node, *flags],
                              capture_output=True, text=True, timeout=30, cwd=str(tmp_path), env=_env())
    except subprocess.TimeoutExpired:
        if pidfile.exists():                     # the daemon holds the terminal: stop it, then fail
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        raise


def test_a_daemon_that_cannot_start_prints_the_whole_line(tmp_path, node):
    """A daemonizing twistd's parent shows only the first 100 bytes of the child's error, and the child's
    own standard error is /dev/null: the node writes its whole line to the terminal it was started from."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        proc = _daemon(node, tmp_path, "--listen", endpoint, "--api", "tcp:0:interface=127.0.0.1")
    line = f"twistd shiftpeer: --listen {endpoint}: cannot listen: Address already in use"
    assert proc.returncode == 1, proc
    assert line in proc.stderr.splitlines(), proc.stderr
    assert "An error has occurred" in proc.stderr          # twistd's own, cut at 100 bytes: too short for it
    assert len(f"1 shiftpeer.startup.StartupError: {line.split(': ', 1)[1]}") > 100
    check_not_running(node)


def test_a_daemon_that_started_keeps_no_terminal_open(tmp_path, node):
    """Once started, the daemon gives back its copy of the terminal: twistd returns at once with nothing
    on standard error, while the node runs on (bounded wait, then SIGTERM)."""
    proc = _daemon(node, tmp_path, "--api", "tcp:0:interface=127.0.0.1")
    assert proc.returncode == 0 and proc.stderr == "", proc
    pid = int(open(tmp_path / "d.pid").read())
    try:
        wait_for(lambda: os.path.exists(os.path.join(node, "api.url")))
        assert os.path.exists(f"/proc/{pid}")
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"))
