"""twistd shiftpeer Options: every flag parses, bad values are refused with an actionable UsageError."""

from __future__ import annotations

import pytest
from twisted.python import usage

from shiftpeer.tap import Options


def parse(*argv: str) -> Options:
    o = Options()
    o.parseOptions(list(argv))
    return o


@pytest.fixture
def node_dir(tmp_path):
    """A node directory made by `shiftpeer init`."""
    from shiftpeer.nodedir import init_node_dir

    return init_node_dir(str(tmp_path / "node"), user="tap").path


def test_every_flag_is_parsed(node_dir):
    """All flags reach the overrides; --listen and --peer repeat."""
    o = parse(
        "--data", node_dir, "--listen", "tcp:7701", "--listen", "tcp6:7702", "--api", "tcp:7780:interface=127.0.0.1",
        "--connect", "hub.example.org:7701", "--peer", "10.0.0.2:7701", "--peer", "[::1]:7703",
        "--full-peer", "--metrics", "tcp:9101:interface=127.0.0.1", "--hub-id", "c" * 52,
        "--gossip-private-addresses", "no", "--gossip-reprove-every", "300",
    )
    assert o.overrides() == {
        "listen": ["tcp:7701", "tcp6:7702"],
        "api": "tcp:7780:interface=127.0.0.1",
        "connect": "hub.example.org:7701",
        "peers": ["10.0.0.2:7701", "[::1]:7703"],
        "metrics": "tcp:9101:interface=127.0.0.1",
        "full_peer": True,
        "tls_cert": None,
        "tls_key": None,
        "ca": None,
        "hub_id": "c" * 52,
        "private_addresses": False,
        "reprove_every": 300.0,
    }


def test_no_flags_override_nothing(node_dir):
    """Without flags the overrides are all empty, so the directory's config stands."""
    o = parse("--data", node_dir)
    assert not any(o.overrides().values())


@pytest.mark.parametrize(
    "argv, words",
    [
        ((), "--data DIR is required"),
        (("--listen", "bogus:1"), "--listen 'bogus:1' is not a valid endpoint"),
        (("--listen", "tcp:notaport"), "--listen"),
        (("--metrics", "nope"), "--metrics"),
        (("--api", "tcp:7780"), "interface=127.0.0.1"),
        (("--api", "tcp:7780:interface=0.0.0.0"), "beyond this machine"),
        (("--connect", "hub.example.org"), "--connect: 'hub.example.org' is not HOST:PORT"),
        (("--connect", "hub:99999"), "port must be a number"),
        (("--peer", ":7701"), "no host"),
        (("--peer", "::1:7701"), "[ADDRESS]:PORT"),
        (("--gossip-private-addresses", "maybe"), "--gossip-private-addresses: private_addresses must be true"),
        (("--gossip-reprove-every", "0.5"), "--gossip-reprove-every: reprove_every must be a number of seconds"),
    ],
)
def test_bad_values_raise_usage_error(node_dir, argv, words):
    """Each bad flag value gives a UsageError that names the flag and says what to write."""
    args = list(argv) if not argv else ["--data", node_dir, *argv]
    with pytest.raises(usage.UsageError) as e:
        parse(*args)
    assert words in str(e.value)


def test_missing_directory_is_refused(tmp_path):
    """A --data path that does not exist is refused (one line, no usage text) with the 'shiftpeer init' hint."""
    with pytest.raises(SystemExit) as e:
        parse("--data", str(tmp_path / "absent"))
    assert "shiftpeer init" in str(e.value) and "is not a directory" in str(e.value)


def test_directory_not_made_by_init_is_refused(tmp_path):
    """An empty directory that is not a node directory is refused with the 'shiftpeer init' hint (init
    takes an empty directory); one holding files, with a hint init can follow (a new directory)."""
    with pytest.raises(SystemExit) as e:
        parse("--data", str(tmp_path))
    assert "is not a node directory (no config.json)" in str(e.value)
    assert f"shiftpeer init {tmp_path} --user NAME" in str(e.value)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as e:
        parse("--data", str(tmp_path))
    assert "shiftpeer init NEWDIR --user NAME" in str(e.value) and f"init {tmp_path} " not in str(e.value)


def test_help_documents_every_option(capsys):
    """--help lists every option and the JSON logger recipe."""
    with pytest.raises(SystemExit):
        parse("--help")
    out = capsys.readouterr().out
    for flag in ("--data", "--listen", "--api", "--connect", "--peer", "--full-peer", "--metrics", "--hub",
                 "--tls-cert", "--tls-key", "--ca", "--gossip-private-addresses", "--gossip-reprove-every"):
        assert flag in out
    assert "shiftpeer.logs.json_observer" in out


def test_json_observer_writes_one_json_line_per_event():
    """The --logger observer writes each event as one JSON line with its named fields."""
    import io
    import json

    from twisted.logger import Logger, LogPublisher

    from shiftpeer.logs import JsonLineObserver

    buf = io.StringIO()
    pub = LogPublisher(JsonLineObserver(buf))
    Logger(namespace="t", observer=pub).info("pulled {count} from {peer}", count=3, peer="p1")
    line = json.loads(buf.getvalue())
    assert line["text"] == "pulled 3 from p1" and line["count"] == 3 and line["level"] == "info"


def test_make_service_builds_a_node_with_the_overrides(node_dir):
    """makeService gives a Node for the directory with the command-line flags applied."""
    from shiftpeer.node import Node
    from shiftpeer.tap import makeService

    svc = makeService(parse("--data", node_dir, "--listen", "tcp:7701", "--full-peer"))
    assert isinstance(svc, Node)
    assert svc.settings.listen == ["tcp:7701"] and svc.settings.full_peer is True
