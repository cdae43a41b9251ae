"""The command's error contract (README's one line and exit status 1, 2, 3 or 130) where a user hits an
edge: Ctrl-C, a node that is still starting, numbers JSON has not got, bad values, the wrong directory."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from shiftpeer import __version__, cli
from shiftpeer.cli import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NOT_RUNNING, EXIT_USAGE, main
from tests.test_cli import DEADLINE, _env, run, sigint_as_in_a_terminal, start_node, stop_node
from tests.test_cli import running as node  # noqa: F401 (a node served by twistd for this module)

SHIFTPEER = os.path.join(os.path.dirname(sys.executable), "shiftpeer")


def _stopped(tmp_path, capsys, name: str = "gus") -> str:
    d = str(tmp_path / name)
    assert main(["init", d, "--user", name]) == 0
    capsys.readouterr()
    return d


def _spawn_cli(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([SHIFTPEER, *argv], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_as_in_a_terminal)


def _stderr_line(proc: subprocess.Popen) -> str:
    """The next line the command writes on standard error (bounded wait)."""
    ready, _, _ = select.select([proc.stderr], [], [], DEADLINE)
    assert ready, "the command wrote nothing on standard error"
    return proc.stderr.readline()


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, capsys):
    """Ctrl-C (SIGINT, as a terminal sends it) while a command waits ends it with one line, no traceback,
    and exit status 130."""
    d = _stopped(tmp_path, capsys)
    proc = _spawn_cli("--data", d, "sync", "--wait", "--timeout", "60")
    try:
        assert _stderr_line(proc).startswith(f"waiting for the node for {d} to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_INTERRUPTED and out == ""
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err == "shiftpeer: sync interrupted; a request it had sent may still complete on the node " \
                  "(see 'shiftpeer status')\n"


def test_ctrl_c_during_a_request_in_process(node, capsys, monkeypatch):
    """The interrupt can land anywhere, e.g. while the answer is read: main still turns it into the line."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.ApiClient, "call", interrupted)
    status, out, err = run(capsys, "--data", node, "group", "new", "club")
    assert status == EXIT_INTERRUPTED and out == "" and err.startswith("shiftpeer: group interrupted;")
    assert err.count("\n") == 1


def test_sync_wait_waits_for_a_node_that_is_still_starting(tmp_path, capsys):
    """`twistd ... & shiftpeer sync --wait`: the command started before the node wrote api.url waits for
    it (within --timeout) and ends in step; without --wait a node not running is exit 3 at once."""
    d = _stopped(tmp_path, capsys, "hana")
    status, out, err = run(capsys, "--data", d, "sync")
    assert status == EXIT_NOT_RUNNING and "no node is running" in err
    waiting = _spawn_cli("--data", d, "sync", "--wait", "--timeout", str(DEADLINE))
    proc = None
    try:
        assert _stderr_line(waiting).startswith(f"waiting for the node for {d} to start (up to {DEADLINE:g}s)")
        assert not os.path.exists(os.path.join(d, "api.url")) and waiting.poll() is None
        proc = start_node(d, str(tmp_path / "hana.log"))
        out, err = waiting.communicate(timeout=DEADLINE * 2)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
        if proc is not None:
            stop_node(proc)
    assert waiting.returncode == 0, err
    assert out.startswith("in step: 0 peer(s) connected")


def test_sync_wait_gives_up_on_a_node_that_never_starts(tmp_path, capsys):
    """The wait for a node is bounded by --timeout: then exit 3 with how to start it."""
    d = _stopped(tmp_path, capsys, "ivan")
    started = time.monotonic()
    status, out, err = run(capsys, "--data", d, "sync", "--wait", "--timeout", "0.5")
    assert status == EXIT_NOT_RUNNING and out == ""
    assert time.monotonic() - started >= 0.5
    assert err.endswith(f"no node is running for {d}: start it with 'twistd -n --pidfile= shiftpeer --data {d}' (waited 0.5s)\n")


@pytest.mark.parametrize("content", ['{"a": NaN}', '{"a": 1e999}', '{"a": [-Infinity]}', '{"a": Infinity}'])
def test_content_with_a_number_json_has_not_got_is_a_usage_error(node, capsys, content):
    """NaN, Infinity and numbers too large for a float are not JSON: --content refuses them (exit 2) like
    any other bad JSON, for new and edit, and nothing is written."""
    before = json.loads(run(capsys, "--data", node, "feed", "--json")[1])["rows"]
    status, out, err = run(capsys, "--data", node, "shift", "new", "--space", "Notes", "--href", "https://e.org/n",
                           "--content", content)
    assert status == EXIT_USAGE and out == "" and err.count("\n") == 1
    assert err.startswith("shiftpeer: --content is not valid JSON") and "finite" in err
    assert "internal error" not in err
    sid = run(capsys, "--data", node, "shift", "new", "--space", "Notes", "--href", "https://e.org/n")[1].strip()
    status, out, err = run(capsys, "--data", node, "shift", "edit", sid, "--content", content)
    assert status == EXIT_USAGE and "--content is not valid JSON" in err
    shown = json.loads(run(capsys, "--data", node, "shift", "show", sid, "--json")[1])
    assert shown["content"] == {} and shown["rev"].startswith("1-")
    assert len(json.loads(run(capsys, "--data", node, "feed", "--json")[1])["rows"]) <= len(before) + 1


@pytest.mark.parametrize("argv", [("feed", "--href", "not-a-url"),
                                  ("shift", "new", "--space", "Notes", "--href", "ftp://e.org/n")])
def test_a_page_url_that_is_not_one_is_a_usage_error(node, capsys, argv):
    """--href must be an absolute http(s) URL: anything else is exit 2 with one line naming the flag, and
    nothing reaches the node (before, the node's refusal made it exit 1)."""
    before = json.loads(run(capsys, "--data", node, "feed", "--json")[1])["rows"]
    status, out, err = run(capsys, "--data", node, *argv)
    assert status == EXIT_USAGE and out == "" and err.count("\n") == 1
    assert "argument --href: is not an absolute http:// or https:// URL with a host" in err
    assert json.loads(run(capsys, "--data", node, "feed", "--json")[1])["rows"] == before


def test_version(capsys):
    """`shiftpeer --version` prints the version and exits 0 (no command needed)."""
    status, out, err = run(capsys, "--version")
    assert status == 0 and out == f"shiftpeer {__version__}\n"


def test_bad_values_on_the_command_line_exit_2(tmp_path, capsys):
    """A bad value for a flag is a bad command line (exit 2), whether argparse or init finds it; init
    writes nothing."""
    d = str(tmp_path / "jo")
    for ca in (str(tmp_path / "nonexistent.pem"), __file__):
        status, out, err = run(capsys, "init", d, "--user", "jo", "--ca", ca)
        assert status == EXIT_USAGE and "--ca" in err and err.count("\n") == 1 and out == ""
        assert not os.path.exists(d)
    status, out, err = run(capsys, "init", d, "--user", "jo", "--hub", "--tls-cert", str(tmp_path / "no.pem"),
                           "--tls-key", str(tmp_path / "no.key"))
    assert status == EXIT_USAGE and "certificate" in err and not os.path.exists(d)
    d = _stopped(tmp_path, capsys, "kim")
    for argv in (("feed", "--limit", "0"), ("feed", "--limit", "501"), ("messages", "--limit", "-1"),
                 ("status", "--databases", "*", "--limit", "0")):
        status, out, err = run(capsys, "--data", d, *argv)
        assert status == EXIT_USAGE and "--limit" in err, argv


def test_a_directory_that_is_not_a_node_directory(tmp_path, capsys):
    """--data naming some other directory (certificates, say) says so (exit 2), not that no node runs."""
    certs = tmp_path / "certs-out"
    certs.mkdir()
    (certs / "ca.pem").write_text("x")
    for argv in (("feed",), ("status",), ("sync", "--wait", "--timeout", "5")):
        status, out, err = run(capsys, "--data", str(certs), *argv)
        assert status == EXIT_USAGE and out == "", argv
        assert err == (f"shiftpeer: {certs} is not a shiftpeer node directory (it has no config.json): give "
                       "--data the directory 'shiftpeer init' made\n")


def test_ids_in_errors_are_shown_as_typed(node, capsys):
    """An id with characters the URL path quotes comes back in the error as the user typed it."""
    status, out, err = run(capsys, "--data", node, "shift", "show", "a b")
    assert status == EXIT_ERROR and "a b" in err and "%20" not in err
    status, out, err = run(capsys, "--data", node, "comment", "delete", "x/y")
    assert status == EXIT_ERROR and "x/y" in err and "%2F" not in err


def test_constants_the_command_keeps_match_the_node():
    """The CLI does not import the modules that define these (they pull in Twisted): pin them."""
    from shiftpeer.nodedir import CONFIG_FILE
    from shiftpeer.shifts import MAX_LIMIT

    assert cli.CONFIG_FILE == CONFIG_FILE and cli.MAX_LIMIT == MAX_LIMIT


def test_hub_without_certificate_warning_gives_a_route_that_works(tmp_path, capsys):
    """init --hub without --tls-cert warns; its advice is the twistd override (init refuses the existing
    directory, so 'init the hub again' was a dead end)."""
    d = str(tmp_path / "hub")
    status, out, err = run(capsys, "init", d, "--user", "op", "--hub")
    assert status == 0 and "warning: the hub" in err
    assert f"'twistd shiftpeer --data {d} --tls-cert OUTDIR/NAME.pem --tls-key OUTDIR/NAME.key'" in err
    assert "init the hub\n  again" not in err and "again with --tls-cert" not in err
    status, out, err = run(capsys, "init", d, "--user", "op", "--hub", "--tls-cert", "x.pem", "--tls-key", "x.key")
    assert status != 0   # the dead end the old advice led to


def test_status_says_the_document_total_is_from_the_last_count(capsys):
    """The databases line's document total comes from a count that runs now and then, while the rows
    under it are live: the line says so, so a total below the rows' sum does not read as a bug."""
    totals = {"count": 11, "docs": 0, "as_of": 30.0, "seconds": 0.04, "scanning": False}
    cli.print_databases({"time": 100.0, "databases": {"user/feed": {"docs": 31, "seq": 40, "why": "own"}},
                         "database_totals": totals})
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "databases: 11 holding 0 docs at the last count, 1:10 ago (took 0.0s; the counts below are current)"
