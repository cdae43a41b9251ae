"""The sync limits from config.json's "sync" object and the twistd flags reach the node's SyncFactory; bad
values stop the node at startup with a message naming the setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python import usage

from rel_idle import Client
from shiftpeer.nodedir import ConfigValueError, init_node_dir, load_node_dir
from shiftpeer.sync import AllowAll, SyncFactory
from shiftpeer.sync.config import LIMITS, check_limit
from shiftpeer.tap import Options, makeService
from tests.helpers_node import listening_port
from test_tap import parse

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def node_dir(tmp_path, sync=None, **init) -> str:
    """A node directory made by `shiftpeer init`, with ``sync`` written into its config.json."""
    path = init_node_dir(str(tmp_path / "node"), user="op", **init).path
    if sync is not None:
        set_config(path, "sync", sync)
    return path


def set_config(path: str, field: str, value) -> None:
    """Write ``field`` into the config.json of the node directory ``path``, as an operator edits it."""
    cfg = os.path.join(path, "config.json")
    with open(cfg) as f:
        doc = json.load(f)
    doc[field] = value
    with open(cfg, "w") as f:
        json.dump(doc, f)


def test_every_limit_has_a_flag_and_a_checked_default():
    """Each settable limit is a twistd flag with its default in --help, and its default passes its own check."""
    help_text = str(Options())
    for limit in LIMITS:
        assert f"--{limit.flag}=" in help_text
        assert check_limit(limit.name, limit.default) == limit.default


def test_flags_override_the_config_file(tmp_path):
    """config.json's sync settings apply, and a flag given to twistd wins over the same setting there."""
    path = node_dir(tmp_path, sync={"window": 4, "max_connections_per_peer": 3, "docs_per_second": 50})
    node = makeService(parse("--data", path, "--window", "6", "--handshake-timeout", "2.5",
                             "--max-connections-per-address", "5"))
    assert node.settings.config.sync == {"window": 6, "max_connections_per_peer": 3, "docs_per_second": 50.0,
                                         "handshake_timeout": 2.5, "max_connections_per_address": 5}


@pytest.mark.parametrize("cap, attribute, in_file, on_flag", [
    ("max_connections_per_network", "per_network", 100, 300),
    ("max_connections_per_block", "per_block", 2000, 3000),
])
def test_the_network_and_block_caps_come_from_the_file_and_their_flags_win(tmp_path, cap, attribute, in_file,
                                                                           on_flag):
    """max_connections_per_network / _per_block in config.json reach the node's SyncFactory; their flags
    (--max-connections-per-network, --max-connections-per-block) override them for the run."""
    path = node_dir(tmp_path, sync={cap: in_file})
    for argv, value in ((), in_file), (("--" + cap.replace("_", "-"), str(on_flag)), on_flag):
        node = makeService(parse("--data", path, *argv))
        assert node.settings.config.sync == {cap: value}
        factory = SyncFactory(None, None, AllowAll(), reactor=Clock(), **node.settings.config.sync)
        assert getattr(factory.limits, attribute) == value


@pytest_twisted.ensureDeferred
async def test_a_configured_cap_is_enforced_by_the_running_node(tmp_path):
    """A node started from a directory whose config.json caps one connection per identity, with the address
    cap and a timeout from twistd flags, builds its SyncFactory with them: a second connection of one
    identity is refused with too_many_connections while another identity is served."""
    path = node_dir(tmp_path, sync={"max_connections_per_peer": 1}, listen=["tcp:0:interface=127.0.0.1"])
    node = makeService(parse("--data", path, "--max-connections-per-address", "7", "--frame-timeout", "9"))
    node.startService()
    try:
        factory = node.sync_factory
        assert (factory.limits.per_peer, factory.limits.per_address, factory.frame_timeout) == (1, 7, 9.0)
        assert (factory.window, factory.handshake_timeout) == (8, 30.0)   # not set anywhere: the defaults
        listener = next(s for s in node.getServiceNamed("sync") if s.name.startswith("listen"))
        port = (await listening_port(listener)).getHost().port
        alice, bob = Client(reactor, port, node.account_id), Client(reactor, port, node.account_id)
        first = await Deferred.fromCoroutine(alice.connect()).addTimeout(10, reactor)
        second = await Deferred.fromCoroutine(alice.connect()).addTimeout(10, reactor)
        await second.when_closed().addTimeout(10, reactor)
        assert second.peer_error["code"] == "too_many_connections"
        other = await Deferred.fromCoroutine(bob.connect()).addTimeout(10, reactor)
        assert not first._closing and not other._closing and len(factory.connections) == 2
    finally:
        await node.stopService()


BAD_CONFIG = [
    ({"max_connections_per_peer": -1}, "max_connections_per_peer must be a whole number of at least 1, not -1"),
    ({"max_connections_per_address": "lots"}, "max_connections_per_address must be a whole number"),
    ({"max_connections_per_network": 0}, "max_connections_per_network must be a whole number of at least 1, not 0"),
    ({"max_connections_per_block": -5}, "max_connections_per_block must be a whole number of at least 1, not -5"),
    ({"max_connections_per_block": 1.5}, "max_connections_per_block must be a whole number"),
    ({"handshake_timeout": 0}, "handshake_timeout must be a number above 0, not 0"),
    ({"window": 2.5}, "window must be a whole number of at least 1, not 2.5"),
    ({"window": True}, "window must be a whole number"),
    ({"max_batch": 20000}, "max_batch must be a whole number from 500 to 10,000"),
    ({"max_frame": 1024}, "peers send docs frames of up to about 5 MiB"),
    ({"max_conections_per_peer": 4}, "unknown setting(s) 'max_conections_per_peer'"),
    ({"max_upload_bytes_per_second": 1000}, "max_upload_bytes_per_second must be a whole number of at least "
                                            "16,384 (or null/off for no limit)"),
    ({"max_upload_bytes_per_second": "2MB"}, "max_upload_bytes_per_second must be a whole number"),
    ({"max_upload_bytes_per_second": 2.5e6}, "max_upload_bytes_per_second must be a whole number"),
    ([8], "sync must be a JSON object"),
]


@pytest.mark.parametrize("sync, words", BAD_CONFIG)
def test_bad_config_values_are_refused_with_a_message(tmp_path, sync, words):
    """A bad value in config.json's sync object is refused when the directory is read, naming the file and the
    setting; twistd's options stop with that one line, naming the file to fix."""
    path = node_dir(tmp_path, sync=sync)
    with pytest.raises(ConfigValueError) as e:
        load_node_dir(path)
    assert words in str(e.value) and "config.json" in str(e.value)
    with pytest.raises(SystemExit) as u:
        parse("--data", path)
    assert words in str(u.value) and f'{path}/config.json: "sync": ' in str(u.value)


@pytest.mark.parametrize("argv, words", [
    (("--max-connections-per-peer", "-3"), "--max-connections-per-peer: max_connections_per_peer must be a whole "
                                           "number of at least 1, not '-3'"),
    (("--max-connections-per-address", "0"), "at least 1, not '0'"),
    (("--max-connections-per-network", "many"), "--max-connections-per-network: max_connections_per_network must "
                                                "be a whole number of at least 1, not 'many'"),
    (("--max-connections-per-block", "0"), "--max-connections-per-block: max_connections_per_block must "
                                           "be a whole number of at least 1, not '0'"),
    (("--frame-timeout", "soon"), "--frame-timeout: frame_timeout must be a number above 0, not 'soon'"),
    (("--docs-per-second", "-5"), "(or null/off for no limit)"),
    (("--window", "1.5"), "--window: window must be a whole number"),
    (("--max-upload-bytes-per-second", "-1"), "--max-upload-bytes-per-second: max_upload_bytes_per_second must "
                                              "be a whole number of at least 16,384"),
    (("--max-upload-bytes-per-second", "2M"), "--max-upload-bytes-per-second: max_upload_bytes_per_second must "
                                              "be a whole number"),
    (("--handshake-timeout", "nan"), "handshake_timeout must be a number above 0"),
])
def test_bad_flag_values_are_refused_with_a_message(tmp_path, argv, words):
    """A bad sync flag is a usage error naming the flag and what it accepts."""
    with pytest.raises(usage.UsageError) as e:
        parse("--data", node_dir(tmp_path), *argv)
    assert words in str(e.value)


def test_docs_per_second_can_be_turned_off_on_the_command_line(tmp_path):
    """--docs-per-second off overrides a rate set in config.json: no limit for this run."""
    path = node_dir(tmp_path, sync={"docs_per_second": 10})
    node = makeService(parse("--data", path, "--docs-per-second", "off"))
    assert node.settings.config.sync == {"docs_per_second": None}


def test_the_upload_cap_comes_from_the_file_its_flag_wins_and_off_turns_it_off(tmp_path):
    """max_upload_bytes_per_second in config.json gives the node's SyncFactory an UploadCap of that rate;
    --max-upload-bytes-per-second overrides it for the run, and 'off' (null in the file) means no cap."""
    path = node_dir(tmp_path, sync={"max_upload_bytes_per_second": 250_000})
    for argv, rate in ((), 250_000), (("--max-upload-bytes-per-second", "2000000"), 2_000_000), \
            (("--max-upload-bytes-per-second", "off"), None):
        node = makeService(parse("--data", path, *argv))
        assert node.settings.config.sync == {"max_upload_bytes_per_second": rate}
        factory = SyncFactory(None, None, AllowAll(), reactor=Clock(), **node.settings.config.sync)
        assert (factory.upload_cap.rate if factory.upload_cap else None) == rate
    assert load_node_dir(node_dir(tmp_path / "null", sync={"max_upload_bytes_per_second": None})).sync == \
        {"max_upload_bytes_per_second": None}


def test_twistd_refuses_to_start_with_a_bad_limit(tmp_path):
    """`twistd -n shiftpeer` with a negative cap exits at once with a non-zero status and says what is wrong."""
    path = node_dir(tmp_path)
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": checkout + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([TWISTD, "-n", "--pidfile=", "shiftpeer", "--data", path,
                           "--max-connections-per-peer=-1"], capture_output=True, text=True, timeout=60,
                          cwd=str(tmp_path), env=env)
    assert proc.returncode != 0
    assert "max_connections_per_peer must be a whole number of at least 1, not '-1'" in proc.stdout + proc.stderr
    assert not os.path.exists(os.path.join(path, "api.url"))
