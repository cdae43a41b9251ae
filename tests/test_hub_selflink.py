"""A hub without --connect uses itself as its hub (shiftpeer.selflink): its operator's account works with no
extra setup, over a real TLS connection to its own listener, across restarts, and status says so."""

from __future__ import annotations

import json
import socket

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from shiftpeer.identity.makecerts import main as make_certs
from shiftpeer.nodedir import init_node_dir
from shiftpeer.nodesettings import NodeSettings
from shiftpeer.selflink import SELF, describe, hub_target, loopback_endpoint
from tests.helpers_node import eventually
from tests.test_cli import run, start_node, stop_node, wait_for
from tests.test_peer_errors import LISTEN, _start, nodes  # noqa: F401  (nodes is a fixture)
from tests.ports import free_port


def _settings(**kw) -> NodeSettings:
    return NodeSettings(directory="/x", store_path="/x/store", **kw)


def test_which_hub_the_user_side_uses():
    """--connect wins whenever it is given; a hub without it that listens uses itself; a hub without a
    listener, a user or a full peer without --connect has no hub."""
    listen = ["tcp:7701"]
    assert hub_target(_settings(hub=True, listen=listen)) == SELF
    assert hub_target(_settings(hub=True, listen=listen, connect="hub.example:7701")) == "hub.example:7701"
    assert hub_target(_settings(connect="hub.example:7701")) == "hub.example:7701"
    assert hub_target(_settings(hub=True)) is None
    assert hub_target(_settings(listen=listen)) is None
    assert hub_target(_settings(full_peer=True, listen=listen)) is None


def test_the_self_link_dials_a_wildcard_listener_on_loopback():
    """A listener bound to every interface is dialled on loopback; a specific interface or socket as it is."""
    cases = [(IPv4Address("TCP", "0.0.0.0", 7701), "127.0.0.1", 7701, "127.0.0.1:7701"),
             (IPv4Address("TCP", "192.0.2.10", 7701), "192.0.2.10", 7701, "192.0.2.10:7701"),
             (IPv6Address("TCP", "::", 7701), "::1", 7701, "[::1]:7701")]
    for address, host, port, text in cases:
        endpoint = loopback_endpoint(None, address)
        assert (endpoint._host, endpoint._port, describe(address)) == (host, port, text)
    assert loopback_endpoint(None, UNIXAddress(b"/run/hub.sock"))._path == "/run/hub.sock"


def test_a_hub_given_connect_dials_only_that(tmp_path):
    """A hub whose operator passed --connect keeps exactly that one hub connection, no self link."""
    from shiftpeer.node import Node

    config = init_node_dir(tmp_path / "hub", user="op", hub=True, listen=[LISTEN], connect="127.0.0.1:7701",
                           hub_id="a" * 52)
    node = Node.from_directory(config.path)
    node.listener_services()
    services = node.peer_services()
    assert [s.name for s in services] == ["hub 127.0.0.1:7701"] and node.self_link is None
    assert node.hub_status() == {"address": "127.0.0.1:7701", "self": False}


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
@pytest.mark.parametrize("cert", ["none", "ecdsa"])
async def test_the_operator_registers_and_publishes_on_a_hub_without_connect(tmp_path, nodes, cert):  # noqa: F811
    """A hub on a port the OS picks, without --connect: with its self-signed certificate, and with an ECDSA
    certificate (whose key is not the account), the operator registers and publishes publicly; the link
    is not a gossip neighbour and status names it."""
    kw = {}
    if cert == "ecdsa":
        assert make_certs([str(tmp_path / "certs"), "--host", "127.0.0.1", "--new-ca", "--key-type", "ecdsa"]) == 0
        kw = {"tls_cert": tmp_path / "certs" / "127.0.0.1.pem", "tls_key": tmp_path / "certs" / "127.0.0.1.key"}
    hub = await _start(nodes, init_node_dir(tmp_path / "hub", user="op", hub=True, listen=[LISTEN], **kw).path)
    flows = hub.role("flows").flows
    await eventually(lambda: flows.link.connected, timeout=10)
    assert (await flows.register())["name"] == "op"
    assert hub.role("hub").hub.accounts.id_of("op") == hub.account_id
    shift = hub.shifts.create({"space": "Notes", "href": "https://hub.example/", "summary": "mine"})
    await flows.publish(shift["id"], public=True)
    await eventually(lambda: shift["id"] in {d.id for d in hub.store.database("master").docs_since(0)},
                     timeout=10)
    status = hub.status()
    assert status["hub"]["self"] is True and status["hub"]["dials"].startswith("127.0.0.1:")
    assert status["hub"]["dials"] != "127.0.0.1:0"
    (peer,) = [p for p in status["peers"] if p["kind"] == "hub"]
    assert (peer["address"], peer["connected"]) == (SELF, True)
    assert not {n.get("peer_id") for n in status["gossip"]["neighbours"]} & hub.own_peer_ids
    assert (cert == "ecdsa") == (len(hub.own_peer_ids) == 2)


@pytest_twisted.ensureDeferred
async def test_the_operator_registers_without_an_invitation_on_an_invite_only_hub(tmp_path, nodes):  # noqa: F811
    """On a hub whose hub.json says registration by invitation, the operator's own account registers over
    the self link with no token (the operator is the one who hands tokens out), using none up; any other
    key still needs one."""
    from types import SimpleNamespace

    from shiftpeer.identity import NodeKey
    from shiftpeer.roles.names import FlowError

    path = init_node_dir(tmp_path / "hub", user="op", hub=True, listen=[LISTEN]).path
    (tmp_path / "hub" / "hub.json").write_text('{"registration": "invite"}')
    hub = await _start(nodes, path)
    flows, hub_role = hub.role("flows").flows, hub.role("hub").hub
    await eventually(lambda: flows.link.connected, timeout=10)
    assert (await flows.register())["name"] == "op"
    assert hub_role.accounts.id_of("op") == hub.account_id
    stranger = SimpleNamespace(peer_id=NodeKey.generate().account_id)
    with pytest.raises(FlowError, match="registers by invitation"):
        hub_role.rpc_register(stranger, {"name": "mallory"})
    assert hub_role.accounts.id_of("mallory") is None


# -- the command line against real twistd processes ---------------------------------------------


def _json(capsys, *argv: str) -> dict:
    status, out, err = run(capsys, *argv, "--json")
    assert status == 0, err
    return json.loads(out)


def _self_link_up(capsys, d: str) -> dict | None:
    st = _json(capsys, "--data", d, "status")
    up = [p for p in st["peers"] if p["address"] == SELF and p["connected"]]
    return st if up else None


def test_every_command_works_on_the_hub_node_without_connect(tmp_path, capsys):
    """`init --hub` with a certificate and no --connect: register, shift new/publish --public/--group/--to,
    feed, group new/invite, comment, messages and notice all work from the hub node, for bob too; after a
    restart (twistd again) the link comes back by itself and a new public shift still reaches bob."""
    from shiftpeer.cli import main

    certs, port = tmp_path / "certs", free_port()
    assert make_certs([str(certs), "--host", "127.0.0.1", "--new-ca"]) == 0
    hub, bob = str(tmp_path / "hub"), str(tmp_path / "bob")
    assert main(["init", hub, "--user", "op", "--hub", "--tls-cert", str(certs / "127.0.0.1.pem"),
                 "--tls-key", str(certs / "127.0.0.1.key"), "--listen", f"tcp:{port}:interface=127.0.0.1"]) == 0
    assert main(["init", bob, "--user", "bob", "--connect", f"127.0.0.1:{port}", "--ca", str(certs / "ca.pem")]) == 0
    capsys.readouterr()
    procs = {"hub": start_node(hub, str(tmp_path / "hub.log")), "bob": start_node(bob, str(tmp_path / "bob.log"))}
    try:
        st = wait_for(lambda: _self_link_up(capsys, hub), timeout=20)
        assert st["hub"] == {"address": SELF, "self": True, "listen": f"tcp:{port}:interface=127.0.0.1",
                             "dials": f"127.0.0.1:{port}"}
        assert [p["peer_id"] for p in st["peers"] if p["address"] == SELF] == [st["account"]]
        status, out, _ = run(capsys, "--data", hub, "status")
        assert f"hub:       this node itself, over its own listener 127.0.0.1:{port}" in out
        assert _json(capsys, "--data", hub, "register")["name"] == "op"
        wait_for(lambda: run(capsys, "--data", bob, "register")[0] == 0, timeout=20)

        href = "https://hub.example/op"

        def new_shift(summary: str) -> str:
            return _json(capsys, "--data", hub, "shift", "new", "--space", "Notes", "--href", href,
                         "--summary", summary)["id"]
        ids = {kind: new_shift(kind) for kind in ("public", "group", "direct")}
        _json(capsys, "--data", hub, "group", "new", "staff")
        _json(capsys, "--data", hub, "group", "invite", "staff", "bob", "--level", "read")
        assert _json(capsys, "--data", bob, "group", "join", "staff")["level"] == "read"
        for kind, how, target in (("public", ["--public"], None), ("group", ["--group", "staff"], "group:staff"),
                                  ("direct", ["--to", "bob"], "user:bob")):
            published = _json(capsys, "--data", hub, "shift", "publish", ids[kind], *how)
            assert published["public"] is True if target is None else published["targets"] == {target: "ok"}

        def feed_ids(d: str, *query: str) -> set:
            return {r["id"] for r in _json(capsys, "--data", d, "feed", *query)["rows"]}
        wait_for(lambda: feed_ids(bob, "--href", href) == set(ids.values()), timeout=20)
        wait_for(lambda: ids["group"] in feed_ids(hub, "--group", "staff"), timeout=20)
        assert ids["public"] in feed_ids(hub, "--href", href)

        status, out, err = run(capsys, "--data", bob, "comment", ids["public"], "hi op")
        assert status == 0, err
        status, out, err = run(capsys, "--data", hub, "comment", ids["public"], "hi bob")
        assert status == 0, err
        status, out, err = run(capsys, "--data", hub, "notice", "welcome")
        assert status == 0, err
        wait_for(lambda: "hi op" in run(capsys, "--data", hub, "messages")[1], timeout=20)
        wait_for(lambda: "welcome" in run(capsys, "--data", bob, "messages")[1], timeout=20)
        def thread() -> list:
            return sorted(r["text"] for r in _json(capsys, "--data", bob, "feed", "--thread", ids["public"])["rows"])
        wait_for(lambda: thread() == ["hi bob", "hi op"], timeout=20)
        gossip = _json(capsys, "--data", hub, "status")["gossip"]
        assert st["account"] not in {n.get("peer_id") for n in gossip["neighbours"]}, gossip

        stop_node(procs.pop("hub"))
        procs["hub"] = start_node(hub, str(tmp_path / "hub.log"))
        wait_for(lambda: _self_link_up(capsys, hub), timeout=20)
        ids["again"] = new_shift("after restart")
        assert _json(capsys, "--data", hub, "shift", "publish", ids["again"], "--public")["public"] is True
        wait_for(lambda: ids["again"] in feed_ids(bob, "--href", href), timeout=30)
    finally:
        for proc in procs.values():
            stop_node(proc)


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors   # the node logs why it cannot start, at critical level
async def test_a_hub_whose_listener_cannot_bind_does_not_start(tmp_path, nodes):  # noqa: F811
    """The port is taken: the hub does not start (StartupError naming --listen and why) rather than run with
    a self link that has nothing to dial; what did start is stopped again, so the directory can be used."""
    from shiftpeer.node import Node
    from shiftpeer.nodelock import check_not_running
    from shiftpeer.startup import StartupError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listen = f"tcp:{port}:interface=127.0.0.1"
        path = init_node_dir(tmp_path / "hub", user="op", hub=True, listen=[listen]).path
        hub = Node.from_directory(path)
        with pytest.raises(StartupError, match=f"--listen {listen}: cannot listen: Address already in use"):
            hub.startService()
        await eventually(lambda: hub.store is None, timeout=10)
    check_not_running(path)   # the directory's lock was given back
    assert not (tmp_path / "hub" / "api.url").exists()
