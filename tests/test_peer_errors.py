"""Why a node is not connected: `init --hub` without a certificate warns, and status, `shiftpeer status`
and `sync --wait` name the last connection error of each peer (real nodes, real TLS on 127.0.0.1)."""

from __future__ import annotations

import json
import re
import socket
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from shiftpeer.cli import CliError, cmd_sync, print_status
from shiftpeer.cli.commands import _ready
from shiftpeer.identity.makecerts import main as make_certs
from shiftpeer.node import Node
from shiftpeer.nodedir import init_node_dir
from test_cli import run
from tests.helpers_node import eventually, listening_port

LISTEN = "tcp:0:interface=127.0.0.1"


@pytest.fixture
def nodes():
    started: list[Node] = []
    yield started
    pytest_twisted.blockon(gatherResults([n.stopService() for n in reversed(started)]))


def test_init_hub_without_certificate_warns(tmp_path, capsys):
    """`init --hub` without --tls-cert/--tls-key still makes the hub, but says on stderr that users will
    refuse its self-signed certificate and how to make one."""
    status, out, err = run(capsys, "init", str(tmp_path / "hub"), "--user", "op", "--hub")
    assert status == 0 and out.strip()
    assert "warning" in err and "self-signed" in err and "user nodes refuse" in err
    assert "scripts/make-certs" in err and "--tls-cert" in err and "--tls-key" in err


def test_init_hub_with_certificate_does_not_warn(tmp_path, capsys):
    """A hub given its certificate gets no warning."""
    assert make_certs([str(tmp_path / "certs"), "--host", "127.0.0.1", "--new-ca"]) == 0
    capsys.readouterr()
    certs = tmp_path / "certs"
    status, out, err = run(capsys, "init", str(tmp_path / "hub"), "--user", "op", "--hub",
                           "--tls-cert", str(certs / "127.0.0.1.pem"), "--tls-key", str(certs / "127.0.0.1.key"))
    assert status == 0 and err == ""


async def _start(started: list, path: str) -> Node:
    node = Node.from_directory(path)
    started.append(node)
    node.startService()
    await node.when_ready()
    return node


def _sync_error(status: dict) -> str:
    """The message `sync --wait --timeout 0` fails with, for this status."""
    client = SimpleNamespace(call=lambda method, path: status)
    with pytest.raises(CliError) as e:
        cmd_sync(client, SimpleNamespace(json=False, wait=True, timeout=0.0))
    return e.value.message


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_a_self_signed_hub_is_refused_and_status_says_why(tmp_path, nodes, capsys):
    """A user trusting a test CA (--ca) dials a hub made without a certificate: the TLS refusal reason is in
    the status route's peer, in `shiftpeer status`, and in `sync --wait`'s timeout message."""
    assert make_certs([str(tmp_path / "certs"), "--host", "127.0.0.1", "--new-ca"]) == 0
    hub = await _start(nodes, init_node_dir(tmp_path / "hub", user="op", hub=True, listen=[LISTEN]).path)
    listener = next(s for s in hub.getServiceNamed("sync") if s.name.startswith("listen"))
    port = (await listening_port(listener)).getHost().port
    user = await _start(nodes, init_node_dir(tmp_path / "alice", user="alice", connect=f"127.0.0.1:{port}",
                                             ca=tmp_path / "certs" / "ca.pem").path)

    peer = await eventually(lambda: next((p for p in user.status()["peers"] if p["last_error"]), None),
                            timeout=10)
    assert peer["connected"] is False and peer["kind"] == "hub"
    assert re.search(r"certificate chain for 127\.0\.0\.1 not trusted .*self.signed", peer["last_error"])
    st = json.loads(json.dumps(user.status()))   # what the CLI gets from GET /v1/status

    capsys.readouterr()
    print_status(st)
    out = capsys.readouterr().out
    assert re.search(r"last error \(.* ago\): TLS: refused the server's certificate: certificate chain for "
                     r"127\.0\.0\.1 not trusted", out)
    assert _ready(st).startswith(f"not connected to hub 127.0.0.1:{port}: TLS: refused")
    assert "not trusted" in _sync_error(st)


@pytest_twisted.ensureDeferred
async def test_a_hub_that_is_not_listening_shows_connection_refused(tmp_path, nodes):
    """Dialling a port nobody listens on shows 'connection refused' as the peer's last error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    user = await _start(nodes, init_node_dir(tmp_path / "bob", user="bob", connect=f"127.0.0.1:{dead}").path)
    peer = await eventually(lambda: next((p for p in user.status()["peers"] if p["last_error"]), None),
                            timeout=10)
    assert peer["last_error"].startswith("connection refused") and peer["last_error_at"] is not None
    assert "connection refused" in _ready(user.status())


def test_connection_failures_in_words():
    """Each kind of failed attempt reads as one short reason; an attempt cancelled by stopping is none."""
    from twisted.internet import error
    from twisted.internet.defer import CancelledError
    from twisted.python.failure import Failure

    from shiftpeer.sync.peererrors import why_failed

    assert why_failed(Failure(error.ConnectionRefusedError())).startswith("connection refused")
    assert why_failed(Failure(error.DNSLookupError("nohost"))) == "host name not found"
    assert why_failed(Failure(error.TimeoutError())) == "connection attempt timed out"
    assert why_failed(Failure(OSError("boom"))) == "cannot connect: boom"
    assert why_failed(Failure(CancelledError())) is None
