"""The shiftpeer command end to end against a real `twistd -n shiftpeer` process on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from shiftpeer.cli import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_USAGE, main

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
DEADLINE = 30.0


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = CHECKOUT + os.pathsep + env.get("PYTHONPATH", "")
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        env.pop(proxy, None)
    return env


def sigint_as_in_a_terminal() -> None:
    """Popen preexec_fn for a child the test interrupts: Ctrl-C's default action, as a terminal's foreground
    command has it. A test run started in the background (`cmd &` in a script) inherits SIGINT ignored,
    and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def start_node(directory: str, log_path: str, twistd_args: tuple = (), node_args: tuple = ()) -> subprocess.Popen:
    """Start twistd for the node directory (``node_args``: more `shiftpeer` flags) and wait (bounded)
    until its API answers."""
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", *twistd_args, "shiftpeer", "--data", directory,
         "--api", "tcp:0:interface=127.0.0.1", *node_args],
        cwd=os.path.dirname(directory), env=_env(), stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + DEADLINE
    url_file = os.path.join(directory, "api.url")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"twistd exited with {proc.returncode}:\n{open(log_path).read()}")
        if os.path.exists(url_file) and _answers(directory):
            return proc
        time.sleep(0.05)
    stop_node(proc)
    raise AssertionError(f"node did not start within {DEADLINE}s:\n{open(log_path).read()}")


def _answers(directory: str) -> bool:
    try:
        with open(os.path.join(directory, "api.url")) as f:
            url = f.read().strip()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        opener.open(url + "/v1/status", timeout=2)
    except urllib.error.HTTPError as e:
        return e.code == 401  # answering: the token is checked
    except OSError:
        return False
    return True


def stop_node(proc: subprocess.Popen) -> int:
    """SIGTERM, then wait (bounded), killing it if it does not stop."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A node directory made with `shiftpeer init`, served by a twistd process for the whole module."""
    base = tmp_path_factory.mktemp("cli")
    directory = str(base / "alice")
    assert main(["init", directory, "--user", "alice"]) == 0
    proc = start_node(directory, str(base / "twistd.log"))
    try:
        yield directory
    finally:
        stop_node(proc)


def wait_for(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.02)


def test_init_prints_account_id(tmp_path, capsys):
    """`shiftpeer init DIR --user NAME` creates the node and prints its account id."""
    from shiftpeer.nodedir import load_node_dir

    status, out, err = run(capsys, "init", str(tmp_path / "bob"), "--user", "bob")
    assert status == 0, err
    assert out.strip() == load_node_dir(str(tmp_path / "bob")).account_id
    status, out, err = run(capsys, "init", str(tmp_path / "bob"), "--user", "bob")
    assert status == EXIT_ERROR and "not empty" in err and err.count("\n") == 1


def test_shift_lifecycle(running, capsys):
    """new prints an id; show --json, edit, feed --json and delete work against the running node."""
    d = running
    status, out, err = run(capsys, "--data", d, "shift", "new", "--space", "Notes", "--href",
                           "https://example.org/page", "--summary", "hello", "--content", '{"text": "hi"}')
    assert status == 0, err
    sid = out.strip()
    status, out, err = run(capsys, "--data", d, "shift", "show", sid, "--json")
    shown = json.loads(out)
    assert status == 0 and shown["id"] == sid and shown["content"] == {"text": "hi"}
    assert shown["domain"] == "example.org" and "user/private" in shown["databases"]
    status, out, err = run(capsys, "--data", d, "shift", "edit", sid, "--summary", "bye")
    assert status == 0 and out.strip().startswith("2-")

    def in_feed():
        _, out, _ = run(capsys, "--data", d, "feed", "--href", "https://example.org/page", "--json")
        rows = json.loads(out)["rows"]
        return rows if rows and rows[0]["summary"] == "bye" else None

    rows = wait_for(in_feed)
    assert [r["id"] for r in rows] == [sid]
    status, out, err = run(capsys, "--data", d, "feed", "--domain", "example.org")
    assert status == 0 and sid in out
    status, out, err = run(capsys, "--data", d, "shift", "show", sid)
    assert status == 0 and "summary:   bye" in out
    status, out, err = run(capsys, "--data", d, "shift", "delete", sid)
    assert status == 0 and sid in out
    status, out, err = run(capsys, "--data", d, "shift", "show", sid, "--json")
    assert status == EXIT_ERROR and out == "" and f"no shift {sid}" in err


def test_shift_edit_with_a_stale_rev_is_refused(running, capsys):
    """`shift edit --rev` writes the edit when REV is the current revision; a stale REV exits 1 with the
    conflict (the current revision named) and changes nothing."""
    d = running
    status, out, err = run(capsys, "--data", d, "shift", "new", "--space", "Notes", "--href",
                           "https://example.org/rev", "--summary", "v1")
    sid = out.strip()
    first = json.loads(run(capsys, "--data", d, "shift", "show", sid, "--json")[1])["rev"]
    status, out, err = run(capsys, "--data", d, "shift", "edit", sid, "--summary", "v2", "--rev", first)
    assert status == 0, err
    second = out.strip()
    assert second.startswith("2-")
    status, out, err = run(capsys, "--data", d, "shift", "edit", sid, "--summary", "v3", "--rev", first)
    assert status == EXIT_ERROR and out == ""
    assert err == f"shiftpeer: shift {sid} is at {second}, not {first}: show it again and retry\n"
    shown = json.loads(run(capsys, "--data", d, "shift", "show", sid, "--json")[1])
    assert shown["rev"] == second and shown["summary"] == "v2"


def test_status_json(running, capsys):
    """status --json prints one JSON document with the account, roles and databases."""
    status, out, err = run(capsys, "--data", running, "status", "--json")
    st = json.loads(out)
    assert status == 0 and st["roles"][0] == "user" and "user/feed" in st["databases"]
    status, out, err = run(capsys, "--data", running, "status")
    assert status == 0 and "account:" in out and "user/private" in out


def test_error_paths(running, capsys):
    """Bad --content JSON, unknown ids, bad URLs and unimplemented commands fail with one clear line."""
    d = running
    status, out, err = run(capsys, "--data", d, "shift", "new", "--space", "Notes", "--href", "http://e.org/",
                           "--content", "{oops")
    assert status == EXIT_USAGE and "--content is not valid JSON" in err and err.count("\n") == 1
    status, out, err = run(capsys, "--data", d, "shift", "new", "--space", "Notes", "--href", "e.org")
    assert status == EXIT_USAGE and "argument --href: is not an absolute" in err and err.count("\n") == 1
    status, out, err = run(capsys, "--data", d, "shift", "show", "no-such-shift")
    assert status == EXIT_ERROR and "no shift no-such-shift" in err
    status, out, err = run(capsys, "--data", d, "shift", "edit", "no-such-shift", "--summary", "x")
    assert status == EXIT_ERROR and "no shift" in err
    status, out, err = run(capsys, "--data", d, "shift", "publish", "no-such-shift", "--public")
    assert status == EXIT_ERROR and "no-such-shift" in err and err.count("\n") == 1
    status, out, err = run(capsys, "--data", d, "shift", "publish", "x")
    assert status == EXIT_USAGE and "--public" in err
    for limit in ("0", "501", "ten"):   # a bad command-line value: exit 2, as for any other
        status, out, err = run(capsys, "--data", d, "feed", "--limit", limit)
        assert status == EXIT_USAGE and "--limit: must be a whole number from 1 to 500" in err and out == ""
    status, out, err = run(capsys, "--data", d, "messages", "--limit", "0")
    assert status == EXIT_USAGE and "--limit" in err


def test_node_not_running(tmp_path, capsys):
    """Against a directory with no running node, commands say how to start one (exit 3)."""
    d = str(tmp_path / "carol")
    assert main(["init", d, "--user", "carol"]) == 0
    capsys.readouterr()
    status, out, err = run(capsys, "--data", d, "status")
    assert status == EXIT_NOT_RUNNING
    assert err == f"shiftpeer: no node is running for {d}: start it with 'twistd -n --pidfile= shiftpeer --data {d}'\n"
    # a stale api.url left by a killed node gives the same answer
    with open(os.path.join(d, "api.url"), "w") as f:
        f.write("http://127.0.0.1:1\n")
    with open(os.path.join(d, "api.token"), "w") as f:
        f.write("t\n")
    status, out, err = run(capsys, "--data", d, "feed", "--json")
    assert status == EXIT_NOT_RUNNING and "no node is running" in err and out == ""
    status, out, err = run(capsys, "--data", str(tmp_path / "nowhere"), "status")
    assert status == EXIT_USAGE and "shiftpeer init" in err


def test_twistd_json_logger(tmp_path):
    """With --logger shiftpeer.logs.json_observer every line twistd writes is a JSON object."""
    d = str(tmp_path / "frank")
    assert main(["init", d, "--user", "frank"]) == 0
    log_path = tmp_path / "twistd.log"
    proc = start_node(d, str(log_path), ("--logger", "shiftpeer.logs.json_observer"))
    stop_node(proc)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert any(e["text"].startswith("local API listening on http://127.0.0.1:") and "url" in e for e in lines)
    assert any(e["namespace"] == "shiftpeer.storeservice.StoreService" and e["text"].startswith("store closed") for e in lines)


def test_node_stops_cleanly_and_console_module_runs(tmp_path):
    """SIGTERM stops twistd cleanly (store closed, api.url removed); `python -m shiftpeer.cli` works meanwhile."""
    d = str(tmp_path / "dave")
    assert main(["init", d, "--user", "dave"]) == 0
    proc = start_node(d, str(tmp_path / "twistd.log"))
    try:
        out = subprocess.run([sys.executable, "-m", "shiftpeer.cli", "--data", d, "status", "--json"],
                             env=_env(), capture_output=True, text=True, timeout=DEADLINE)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["user"] == "dave"
    finally:
        # twistd re-raises the stopping signal once the reactor has stopped: -SIGTERM is a clean stop.
        assert stop_node(proc) in (0, -signal.SIGTERM)
    assert not os.path.exists(os.path.join(d, "api.url"))
    assert "store closed" in (tmp_path / "twistd.log").read_text()


def test_status_watch_refreshes_until_interrupted(running, capsys, monkeypatch):
    """status --watch --json prints one JSON line per refresh and exits 0 on Ctrl-C."""
    naps = []

    def fake_sleep(seconds):
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", fake_sleep)
    status, out, err = run(capsys, "--data", running, "status", "--watch", "0.5", "--json")
    assert status == 0 and naps == [0.5, 0.5]
    assert [json.loads(line)["roles"][0] for line in out.splitlines()] == ["user", "user"]


def test_api_access_log_keeps_page_urls_out_of_operator_logs(running, capsys, tmp_path_factory):
    """The node's log never records the page URLs the feed was asked about."""
    run(capsys, "--data", running, "feed", "--href", "https://secret.example/private-page")
    log_path = os.path.join(os.path.dirname(running), "twistd.log")
    assert "secret.example" not in open(log_path).read()


def test_data_may_follow_the_command(running, capsys, monkeypatch):
    """`shiftpeer status --data DIR --json` works like `shiftpeer --data DIR status --json`."""
    monkeypatch.delenv("SHIFTPEER_DATA", raising=False)
    status, out, err = run(capsys, "status", "--data", running, "--json")
    assert status == 0 and "user" in json.loads(out)["roles"]
    status, out, err = run(capsys, "status", "--json")
    assert status == EXIT_USAGE and "needs --data DIR" in err
