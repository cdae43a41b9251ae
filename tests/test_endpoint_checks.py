"""Endpoint strings get one set of checks wherever they come from: `shiftpeer init`, config.json (when a
node starts) and the twistd flags; the local API never listens beyond loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shiftpeer.cli import EXIT_USAGE
from shiftpeer.endpoints import EndpointError, check_api_endpoint
from shiftpeer.nodedir import ConfigValueError, NodeDirArgumentError, init_node_dir, load_node_dir
from test_cli import run
from test_tap import parse

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPEN_API = "tcp:7799:interface=0.0.0.0"


def edited_node(tmp_path, **fields) -> str:
    """A node made by init whose config.json was then edited by hand to hold ``fields``."""
    path = init_node_dir(str(tmp_path / "node"), user="u").path
    cfg = os.path.join(path, "config.json")
    with open(cfg) as f:
        doc = json.load(f)
    doc.update(fields)
    with open(cfg, "w") as f:
        json.dump(doc, f)
    return path


def run_twistd(path: str, *flags: str) -> subprocess.CompletedProcess:
    """`twistd -n shiftpeer --data PATH FLAGS`, expected to exit by itself (bounded)."""
    env = {**os.environ, "PYTHONPATH": CHECKOUT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([TWISTD, "-n", "--pidfile=", "shiftpeer", "--data", path, *flags],
                          capture_output=True, text=True, timeout=60, cwd=os.path.dirname(path), env=env)


@pytest.mark.parametrize("endpoint", [
    "tcp:7780:interface=127.0.0.1", "tcp:0:interface=localhost", r"tcp6:7780:interface=\:\:1",
    "tcp:7780:interface=127.0.0.2", "unix:/tmp/shiftpeer-api.sock",
])
def test_loopback_api_endpoints_are_accepted(endpoint):
    """Loopback tcp/tcp6 interfaces and unix sockets pass the API check unchanged."""
    assert check_api_endpoint(endpoint) == endpoint


@pytest.mark.parametrize("endpoint, words", [
    ("tcp:7780", "would listen beyond this machine"),
    (OPEN_API, "would listen beyond this machine"),
    ("tcp6:7780", "would listen beyond this machine"),
    (r"tcp:7780:interface=0.0.0.0\:interface=127.0.0.1", "would listen beyond this machine"),
    ("tcp:7780:interface=192.0.2.1", "would listen beyond this machine"),
    ("ssl:7780:privateKey=x.pem", "not a valid endpoint"),
    ("bogus:1", "not a valid endpoint"),
])
def test_other_api_endpoints_are_refused(endpoint, words):
    """Any interface but loopback, an escaped interface that only looks like loopback, and unparsable
    strings are refused, with what to write instead."""
    with pytest.raises(EndpointError, match=words) as e:
        check_api_endpoint(endpoint)
    assert "--api" in str(e.value)


def test_init_refuses_a_non_loopback_api_and_writes_nothing(tmp_path):
    """init_node_dir refuses an API endpoint open to other machines before it writes anything."""
    with pytest.raises(NodeDirArgumentError, match="beyond this machine"):
        init_node_dir(tmp_path / "x3", user="u", api=OPEN_API)
    assert not (tmp_path / "x3").exists()


def test_cli_init_with_a_non_loopback_api_exits_2(tmp_path, capsys):
    """`shiftpeer init x3 --user u --api tcp:7799:interface=0.0.0.0` is a bad command line: exit 2, one line."""
    status, out, err = run(capsys, "init", str(tmp_path / "x3"), "--user", "u", "--api", OPEN_API)
    assert status == EXIT_USAGE and out == ""
    assert "--api" in err and "interface=127.0.0.1" in err and err.count("\n") == 1
    assert not (tmp_path / "x3").exists()


def test_config_json_with_a_non_loopback_api_is_refused(tmp_path):
    """A node directory whose config.json was edited to open the API is not loaded, and twistd's
    options refuse it naming the file and the field."""
    path = edited_node(tmp_path, api=OPEN_API)
    with pytest.raises(ConfigValueError, match='config.json: "api"'):
        load_node_dir(path)
    with pytest.raises(SystemExit) as e:
        parse("--data", path)
    assert '"api"' in str(e.value) and "beyond this machine" in str(e.value)


def test_api_service_refuses_a_non_loopback_endpoint(tmp_path):
    """A node built from settings directly (an embedder) cannot open the API either."""
    from tests.helpers_node import make_node

    with pytest.raises(EndpointError, match="beyond this machine"):
        make_node(str(tmp_path / "n"), api=OPEN_API)


def test_twistd_refuses_a_config_json_with_a_non_loopback_api(tmp_path):
    """A real `twistd -n shiftpeer` exits non-zero at once on such a directory, says why, shows no
    traceback and never binds the API."""
    path = edited_node(tmp_path, api=OPEN_API)
    proc = run_twistd(path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert '"api"' in output and "would listen beyond this machine" in output
    assert "Traceback" not in output
    assert not os.path.exists(os.path.join(path, "api.url"))


@pytest.mark.parametrize("argv, words", [
    (("--listen", "bogus:endpoint"), "--listen 'bogus:endpoint' is not a valid endpoint string"),
    (("--listen", "tcp:notaport"), "--listen 'tcp:notaport'"),
    (("--listen", "tcp:7701", "--listen", ""), "--listen '' is not an endpoint string"),
    (("--connect", "::1:7701"), "--connect: '::1:7701': write an IPv6 address as [ADDRESS]:PORT"),
    (("--peer", "hub.example.org"), "--peer: 'hub.example.org' is not HOST:PORT"),
    (("--user", "a/b"), "user name 'a/b'"),
])
def test_cli_init_refuses_bad_addresses_with_exit_2(tmp_path, capsys, argv, words):
    """init checks endpoint strings and HOST:PORT as the node will use them: a bad one is a bad
    command line (exit 2, one line naming the flag) and no directory is made."""
    args = ["init", str(tmp_path / "x8"), *(() if "--user" in argv else ("--user", "u")), *argv]
    if "--peer" in argv:
        args.append("--full-peer")
    status, out, err = run(capsys, *args)
    assert status == EXIT_USAGE, err
    assert words in err and "shiftpeer init --help" in err and err.count("\n") == 1
    assert not (tmp_path / "x8").exists()


@pytest.mark.parametrize("fields, words", [
    ({"listen": ["bogus:endpoint"]}, '"listen" \'bogus:endpoint\' is not a valid endpoint string'),
    ({"connect": "nohostport"}, '"connect": \'nohostport\' is not HOST:PORT'),
    ({"peers": ["[::1]7701"]}, '"peers": \'[::1]7701\' is not [IPv6]:PORT'),
])
def test_config_json_with_bad_addresses_is_refused(tmp_path, fields, words):
    """Edited config.json addresses are refused when the node is loaded, naming the file and field."""
    path = edited_node(tmp_path, **fields)
    with pytest.raises(ConfigValueError) as e:
        load_node_dir(path)
    assert str(e.value).startswith(os.path.join(path, "config.json")) and words in str(e.value)


def test_twistd_refuses_a_config_json_with_a_bad_listen_endpoint(tmp_path):
    """`twistd -n shiftpeer` on a directory whose config.json names an unknown endpoint type exits
    non-zero with a message naming the field, not a traceback."""
    path = edited_node(tmp_path, listen=["bogus:endpoint"])
    proc = run_twistd(path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "\"listen\" 'bogus:endpoint' is not a valid endpoint string" in output
    assert "Traceback" not in output and "Unknown endpoint type" in output
    assert not os.path.exists(os.path.join(path, "api.url"))
