"""What people touch, against real `twistd -n shiftpeer` processes on 127.0.0.1: status and sync progress,
Prometheus metrics, invitation-only registration, backup and restore, and the error paths of the command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request

import pytest

from shiftpeer.api.token import METRICS_TOKEN_FILE, read_token
from shiftpeer.cli import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_USAGE, ApiClient, CliError, main
from shiftpeer.identity.makecerts import main as make_certs
from shiftpeer.store import SCHEMA_VERSION
from tests.test_cli import DEADLINE, TWISTD, _answers, _env, run, stop_node, wait_for
from tests.ports import free_port


def spawn(directory: str, *node_args: str) -> subprocess.Popen:
    """Start twistd for a node directory with extra `shiftpeer` flags (not waiting for it)."""
    log = open(os.path.join(os.path.dirname(directory), os.path.basename(directory) + ".log"), "ab")
    return subprocess.Popen([TWISTD, "-n", "--pidfile=", "shiftpeer", "--data", directory, *node_args],
                            cwd=os.path.dirname(directory), env=_env(), stdout=log, stderr=subprocess.STDOUT)


def wait_api(proc: subprocess.Popen, directory: str) -> None:
    """Bounded wait until the node's API answers (its twistd must not exit meanwhile)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"twistd for {directory} exited with {proc.returncode}"
        if os.path.exists(os.path.join(directory, "api.url")) and _answers(directory):
            return
        time.sleep(0.05)
    raise AssertionError(f"{directory}: the node did not start within {DEADLINE}s")


def cli_json(capsys, *argv: str) -> dict:
    status, out, err = run(capsys, *argv, "--json")
    assert status == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """An invitation-only hub serving metrics, users alice and bob, and carol whose hub is not running."""
    base = tmp_path_factory.mktemp("ops")
    certs = base / "certs"
    assert make_certs([str(certs), "--host", "127.0.0.1", "--new-ca"]) == 0
    port, dead_port = free_port(), free_port()
    dirs = {name: str(base / name) for name in ("hub", "alice", "bob", "carol")}
    assert main(["init", dirs["hub"], "--user", "op", "--hub", "--tls-cert", str(certs / "127.0.0.1.pem"),
                 "--tls-key", str(certs / "127.0.0.1.key"), "--listen", f"tcp:{port}:interface=127.0.0.1"]) == 0
    with open(os.path.join(dirs["hub"], "hub.json"), "w") as f:
        json.dump({"registration": "invite"}, f)
    for name in ("alice", "bob"):
        assert main(["init", dirs[name], "--user", name, "--connect", f"127.0.0.1:{port}",
                     "--ca", str(certs / "ca.pem")]) == 0
    assert main(["init", dirs["carol"], "--user", "carol", "--connect", f"127.0.0.1:{dead_port}",
                 "--ca", str(certs / "ca.pem")]) == 0
    procs = {"hub": spawn(dirs["hub"], "--metrics", "tcp:0:interface=127.0.0.1")}
    procs.update({name: spawn(dirs[name]) for name in ("alice", "bob", "carol")})
    try:
        for name, proc in procs.items():
            wait_api(proc, dirs[name])
        yield {"dirs": dirs, "procs": procs, "base": str(base)}
    finally:
        for proc in procs.values():
            stop_node(proc)


@pytest.fixture(scope="module")
def registered(mesh):
    """alice and bob registered on the invitation-only hub with tokens from `shiftpeer invite`."""
    dirs = mesh["dirs"]
    for name in ("alice", "bob"):
        token = subprocess.run([_cli(), "--data", dirs["hub"], "invite"], env=_env(), capture_output=True,
                               text=True, timeout=DEADLINE)
        assert token.returncode == 0, token.stderr
        _until_connected(dirs[name])
        out = subprocess.run([_cli(), "--data", dirs[name], "register", "--invite", token.stdout.strip()],
                             env=_env(), capture_output=True, text=True, timeout=DEADLINE)
        assert out.returncode == 0, out.stderr
    return mesh


def _cli() -> str:
    import sys

    return os.path.join(os.path.dirname(sys.executable), "shiftpeer")


def _until_connected(directory: str) -> None:
    out = subprocess.run([_cli(), "--data", directory, "sync", "--wait", "--timeout", "20"], env=_env(),
                         capture_output=True, text=True, timeout=DEADLINE)
    assert out.returncode == 0, out.stderr


def test_register_needs_an_invitation_from_the_operator(mesh, capsys):
    """On an invitation-only hub, register without a token, or with a made-up one, fails with a clear line;
    `shiftpeer invite` run by a user (not a hub) is refused with who can make one (exit 1)."""
    alice, hub = mesh["dirs"]["alice"], mesh["dirs"]["hub"]
    _until_connected(alice)
    status, out, err = run(capsys, "--data", alice, "register", "--name", "alice2")
    assert status == EXIT_ERROR and "invit" in err and err.count("\n") == 1
    status, out, err = run(capsys, "--data", alice, "register", "--name", "alice2", "--invite", "made-up")
    assert status == EXIT_ERROR and "invit" in err
    status, out, err = run(capsys, "--data", alice, "invite")
    assert status == EXIT_ERROR and out == ""
    assert err == ("shiftpeer: only a hub's operator can make invitations: run 'shiftpeer --data HUB_DIR invite' "
                   "with the hub's node directory\n")
    assert cli_json(capsys, "--data", hub, "invite")["token"]


def _hub_log(mesh) -> str:
    with open(os.path.join(mesh["base"], "hub.log")) as f:
        return f.read()


def test_the_hub_rebuilds_its_tokens_once_by_itself_and_again_on_demand(registered, capsys):
    """A hub's first start on a store runs the rebuild of its visibility tokens and logs that it did;
    `shiftpeer rebuild-tokens` on the hub runs it again (answering at once, the log telling when it is done),
    and on a user node it fails with one line naming who can (exit 1)."""
    hub, alice = registered["dirs"]["hub"], registered["dirs"]["alice"]
    done = "rebuilt the visibility tokens of shared: "
    wait_for(lambda: done in _hub_log(registered), timeout=20)
    status, out, err = run(capsys, "--data", hub, "rebuild-tokens")
    assert status == 0 and out.startswith("rebuilding the visibility tokens of shared from the first document"), err
    wait_for(lambda: _hub_log(registered).count(done) == 2, timeout=20)
    assert len(re.findall(done + r"\d+ documents checked, 0 narrowed", _hub_log(registered))) == 2
    status, out, err = run(capsys, "--data", alice, "rebuild-tokens")
    assert status == EXIT_ERROR and out == ""
    assert err == ("shiftpeer: only a hub rebuilds the visibility tokens of shared: run 'shiftpeer --data HUB_DIR "
                   "rebuild-tokens' with the hub's node directory\n")


def test_sync_wait_and_status_show_peers_and_caught_up_replications(registered, capsys):
    """After registering, `sync --wait` ends in step and status lists the hub connected and every
    replication (pulls of inbox, messages and notices, the push of user/public) caught up."""
    alice = registered["dirs"]["alice"]
    wait_for(lambda: {r["remote"] for r in cli_json(capsys, "--data", alice, "status")["replications"]
                      if r["direction"] == "pull"} >= {"inbox/alice", "messages/alice", "system/messages"},
             timeout=20)
    status, out, err = run(capsys, "--data", alice, "sync", "--wait", "--timeout", "20")
    assert status == 0 and out.startswith("in step: 1 peer(s) connected"), err
    st = cli_json(capsys, "--data", alice, "status")
    assert st["peers"][0]["state"] == "connected" and st["peers"][0]["kind"] == "hub"
    pushes = [r for r in st["replications"] if r["direction"] == "push"]
    assert [(r["local"], r["remote"]) for r in pushes] == [("user/public", "master")]
    assert all(r["caught_up"] and r["lag"] == 0 for r in st["replications"]) and st["caught_up"]
    status, out, err = run(capsys, "--data", alice, "status")
    assert "connected" in out and "replication:  all caught up" in out and "inbox/alice -> user/feed" in out


def test_status_and_sync_of_a_node_whose_hub_is_unreachable(mesh, capsys):
    """With the hub down, status says the hub is not connected, `sync --wait --timeout` fails naming it,
    register says the hub is not connected, and publish says the delivery waits for the hub."""
    carol = mesh["dirs"]["carol"]
    st = cli_json(capsys, "--data", carol, "status")
    assert st["peers"][0]["connected"] is False and st["peers"][0]["state"] == "connecting"
    status, out, err = run(capsys, "--data", carol, "sync", "--wait", "--timeout", "0.3")
    assert status == EXIT_ERROR and "not connected to hub 127.0.0.1:" in err
    status, out, err = run(capsys, "--data", carol, "register")
    assert status == EXIT_ERROR and "not connected to the hub" in err and err.count("\n") == 1
    status, out, err = run(capsys, "--data", carol, "shift", "new", "--space", "Notes", "--href", "https://e.org/")
    sid = out.strip()
    status, out, err = run(capsys, "--data", carol, "shift", "publish", sid, "--to", "bob")
    assert status == 0 and "user:bob: pending: delivered when the hub is connected" in out
    status, out, err = run(capsys, "--data", carol, "sync")
    assert status == 0 and out.startswith("not in step: not connected to hub")


def test_error_paths_between_real_nodes(registered, capsys):
    """Not a member, no such group, no such shift, no such user and not the author each fail with one
    line on standard error and exit status 1; a wrong API token says how to fix it."""
    alice, bob = registered["dirs"]["alice"], registered["dirs"]["bob"]
    cli_json(capsys, "--data", alice, "group", "new", "ops-club")
    for argv, words in [
        (("feed", "--group", "ops-club"), "not a reader"),
        (("group", "members", "ops-club"), "ops-club"),
        (("group", "invite", "ops-club", "alice"), "ops-club"),
        (("group", "join", "no-such-group"), "no-such-group"),
        (("comment", "no-such-shift", "hi"), "no-such-shift"),
        (("favorite", "no-such-shift"), "no-such-shift"),
        (("notice", "hello"), "operator"),
    ]:
        status, out, err = run(capsys, "--data", bob, *argv)
        assert status == EXIT_ERROR and words in err and err.count("\n") == 1 and out == "", (argv, err)
    sid = cli_json(capsys, "--data", alice, "shift", "new", "--space", "Notes", "--href", "https://e.org/x")["id"]
    status, out, err = run(capsys, "--data", alice, "group", "invite", "ops-club", "nobody")
    assert status == EXIT_ERROR and "nobody" in err
    status, out, err = run(capsys, "--data", alice, "shift", "publish", sid, "--group", "no-such-group")
    assert "no-such-group" in out + err
    status, out, err = run(capsys, "--data", alice, "shift", "publish", sid, "--public")
    assert status == 0
    wait_for(lambda: sid in {r["id"] for r in cli_json(capsys, "--data", bob, "feed")["rows"]}, timeout=20)
    # bob's node holds no copy of alice's shift but shows it (from the hub): changing it is "not yours"
    # (403), as docs/api.md says, not "no such shift"
    status, out, err = run(capsys, "--data", bob, "shift", "edit", sid, "--summary", "mine now")
    assert status == EXIT_ERROR and err.count("\n") == 1 and "only its author may change it" in err
    status, out, err = run(capsys, "--data", bob, "shift", "delete", sid)
    assert status == EXIT_ERROR and err.count("\n") == 1 and "only its author may change it" in err
    assert cli_json(capsys, "--data", bob, "shift", "show", sid)["summary"] == ""
    token = os.path.join(bob, "api.token")
    saved = open(token).read()
    try:
        with open(token, "w") as f:
            f.write("wrong\n")
        status, out, err = run(capsys, "--data", bob, "status")
        assert status == EXIT_ERROR and "api.token" in err
    finally:
        with open(token, "w") as f:
            f.write(saved)


def test_comments_and_notices_show_names_where_the_hub_knows_them(registered, capsys):
    """`feed --thread` names the commenter and `messages` the poster of a notice (GET /v1/names asks the
    hub); an author the hub has no name for (the operator never registered) is shown by a short id,
    never by the 52-character account id."""
    dirs = registered["dirs"]
    alice, bob, hub = dirs["alice"], dirs["bob"], dirs["hub"]
    sid = cli_json(capsys, "--data", alice, "shift", "new", "--space", "Notes", "--href", "https://e.org/names")["id"]
    cli_json(capsys, "--data", alice, "shift", "publish", sid, "--public")
    wait_for(lambda: sid in {r["id"] for r in cli_json(capsys, "--data", bob, "feed")["rows"]}, timeout=20)
    cid = cli_json(capsys, "--data", bob, "comment", sid, "names please")["id"]

    def thread_with_comment():   # the comment travels bob -> hub -> alice: poll, don't assume it is there
        status, out, _ = run(capsys, "--data", alice, "feed", "--thread", sid)
        return out if status == 0 and cid in out else None

    out = wait_for(thread_with_comment, timeout=20)
    assert "comment by bob: names please" in out, out
    hub_id = cli_json(capsys, "--data", hub, "status")["account"]
    cli_json(capsys, "--data", hub, "notice", "names notice")

    def notice_line():
        _, out, _ = run(capsys, "--data", alice, "messages")
        return next((line for line in out.splitlines() if "names notice" in line), None)

    line = wait_for(notice_line, timeout=20)
    assert hub_id not in line and f"  {hub_id[:12]}  names notice" in line
    client = ApiClient(alice)
    bob_id = cli_json(capsys, "--data", bob, "status")["account"]
    assert client.call("GET", "/names", query={"id": [bob_id, hub_id]}) == {"names": {bob_id: "bob"}}
    with pytest.raises(CliError, match="account ids"):
        client.call("GET", "/names")


def test_metrics_endpoint_of_a_running_hub(registered, capsys):
    """--metrics serves Prometheus text: connections, documents replicated in, lag, refusals."""
    hub, alice = registered["dirs"]["hub"], registered["dirs"]["alice"]
    sid = cli_json(capsys, "--data", alice, "shift", "new", "--space", "Notes", "--href", "https://e.org/m")["id"]
    cli_json(capsys, "--data", alice, "shift", "publish", sid, "--public")
    run(capsys, "--data", hub, "shift", "show", "no-such-shift")   # one refused API request
    run(capsys, "--data", alice, "group", "join", "no-such-group")  # one refused RPC on the hub
    url = cli_json(capsys, "--data", hub, "status")["metrics"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

    def scrape() -> dict:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        token = read_token(hub, METRICS_TOKEN_FILE)
        ask = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        text = opener.open(ask, timeout=5).read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    m = wait_for(lambda: (lambda v: v if v.get("shiftpeer_docs_replicated_in_total", 0) >= 1 else None)(scrape()),
                 timeout=20)
    assert m["shiftpeer_sync_connections"] >= 2
    assert m['shiftpeer_api_refused_total{status="404"}'] >= 1
    assert m['shiftpeer_rpc_refused_total{method="group.join"}'] >= 1
    assert "shiftpeer_sync_refused_total" in m and "shiftpeer_replications_behind" in m
    assert any(k.startswith('shiftpeer_up{account="') for k in m)
    assert m['shiftpeer_database_docs{db="master"}'] >= 1


def test_backup_while_running_then_restore(mesh, capsys, tmp_path):
    """`backup` copies a running node's store; after more changes, `restore` (refused while the node runs)
    brings the node back to the backup's state, keeping the replaced store aside."""
    carol = mesh["dirs"]["carol"]
    kept = cli_json(capsys, "--data", carol, "shift", "new", "--space", "Notes", "--href", "https://e.org/k")["id"]
    out_file = str(tmp_path / "carol.mdb")
    info = cli_json(capsys, "--data", carol, "backup", out_file)
    assert info["schema"] == SCHEMA_VERSION and os.path.getsize(out_file) == info["bytes"] > 0
    status, out, err = run(capsys, "--data", carol, "backup", out_file)
    assert status == EXIT_ERROR and "--force" in err
    lost = cli_json(capsys, "--data", carol, "shift", "new", "--space", "Notes", "--href", "https://e.org/l")["id"]
    status, out, err = run(capsys, "--data", carol, "restore", out_file)
    assert status == EXIT_ERROR and "stop it first" in err
    stop_node(mesh["procs"]["carol"])
    before = _epochs(carol)
    status, out, err = run(capsys, "--data", carol, "restore", str(tmp_path / "missing.mdb"))
    assert status == EXIT_ERROR and "is not a file" in err
    status, out, err = run(capsys, "--data", carol, "restore", out_file)
    assert status == 0 and "previous store is kept" in out, err
    after = _epochs(carol)   # new epochs: peers that replicated past the backup compare again from 0
    assert set(after) <= set(before) and not set(after.items()) & set(before.items())
    mesh["procs"]["carol"] = proc = spawn(carol)
    wait_api(proc, carol)
    assert cli_json(capsys, "--data", carol, "shift", "show", kept)["id"] == kept
    status, out, err = run(capsys, "--data", carol, "shift", "show", lost)
    assert status == EXIT_ERROR and "no shift" in err


def _epochs(directory: str) -> dict:
    from shiftpeer.store import Store

    store = Store(os.path.join(directory, "store"))
    try:
        return {n: store.database(n).epoch for n in store.list_databases()}
    finally:
        store.close()


def test_backup_and_status_need_a_node_directory(tmp_path, capsys):
    """backup without --data, or of a directory that is not a node, fails with usage advice; status
    of a stopped node exits 3."""
    status, out, err = run(capsys, "backup", str(tmp_path / "x.mdb"))
    assert status == EXIT_USAGE and "needs --data DIR" in err
    status, out, err = run(capsys, "--data", str(tmp_path), "backup", str(tmp_path / "x.mdb"))
    assert status == EXIT_ERROR and "shiftpeer init" in err
    d = str(tmp_path / "dora")
    assert main(["init", d, "--user", "dora"]) == 0
    capsys.readouterr()
    status, out, err = run(capsys, "--data", d, "backup", str(tmp_path / "x.mdb"))
    assert status == EXIT_ERROR and "start the node once" in err
    status, out, err = run(capsys, "--data", d, "sync", "--wait", "--timeout", "0.3")
    assert status == EXIT_NOT_RUNNING and "no node is running" in err and "(waited 0.3s)" in err
