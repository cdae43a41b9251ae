"""A hub's operator uses the flows from the hub node itself, here with an explicit ``--connect`` to its own
listener and ``--ca`` (checked by CA and host name, like any user): that keeps working exactly as given,
with no second, automatic self link. Without ``--connect`` the hub links to itself by itself:
tests/test_hub_selflink.py (docs/operators.md, *The operator's own account*)."""

from __future__ import annotations


import pytest
import pytest_twisted

from shiftpeer.api.token import read_token
from shiftpeer.identity.makecerts import main as make_certs
from shiftpeer.node import Node
from shiftpeer.nodedir import init_node_dir
from tests.helpers_node import ApiTestClient, eventually, eventually_async
from tests.test_flows_nodes import nodes  # noqa: F401  (a fixture: stops what the test started)
from tests.ports import free_port


async def _start(started: list, path) -> tuple[Node, ApiTestClient]:
    node = Node.from_directory(str(path))
    started.append(node)
    node.startService()
    url = await node.when_ready()
    return node, ApiTestClient(url, read_token(str(path)))


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_the_operator_registers_publishes_and_hears_of_comments_on_the_hub_node(nodes):  # noqa: F811
    """The hub dials itself: the operator registers, publishes publicly (reaching master and another
    user's feed) and gets that user's comment as a message."""
    tmp_path, started = nodes
    assert make_certs([str(tmp_path / "certs"), "--host", "127.0.0.1", "--new-ca"]) == 0
    certs, port = tmp_path / "certs", free_port()
    init_node_dir(tmp_path / "hub", user="op", hub=True, tls_cert=certs / "127.0.0.1.pem",
                  tls_key=certs / "127.0.0.1.key", listen=[f"tcp:{port}:interface=127.0.0.1"],
                  connect=f"127.0.0.1:{port}", ca=certs / "ca.pem")
    init_node_dir(tmp_path / "bob", user="bob", connect=f"127.0.0.1:{port}", ca=certs / "ca.pem")
    hub, op = await _start(started, tmp_path / "hub")
    bob, bob_api = await _start(started, tmp_path / "bob")
    for node, api, name in ((hub, op, "op"), (bob, bob_api, "bob")):
        await eventually(lambda n=node: n.role("flows").flows.link.connected, timeout=10)
        code, body = await api.request("POST", "/v1/register", {})
        assert (code, body.get("name")) == (200, name), body

    code, shift = await op.request("POST", "/v1/shifts", {"space": "Notes", "href": "https://hub.example/",
                                                          "summary": "from the operator"})
    assert code in (200, 201), shift
    code, body = await op.request("POST", f"/v1/shifts/{shift['id']}/publish", {"public": True})
    assert code == 200, body
    await eventually(lambda: shift["id"] in {d.id for d in hub.store.database("master").docs_since(0)},
                     timeout=10)

    async def bob_feed():
        return await bob_api.request("GET", "/v1/feed?href=https://hub.example/")

    await eventually_async(bob_feed, lambda r: [row["id"] for row in r[1]["rows"]] == [shift["id"]])
    code, body = await bob_api.request("POST", f"/v1/shifts/{shift['id']}/comments", {"text": "hi op"})
    assert code == 200, body

    async def op_messages():
        return await op.request("GET", "/v1/messages")

    _, msgs = await eventually_async(op_messages, lambda r: r[1].get("unread", 0) >= 1)
    assert [m.get("text") for m in msgs["rows"] if m.get("kind") == "comment"] == ["hi op"]
    # --connect given: that one hub connection, checked by CA and name, and no self link
    assert [p["address"] for p in hub.status()["peers"]] == [f"127.0.0.1:{port}"] and hub.self_link is None
    assert hub.status()["hub"] == {"address": f"127.0.0.1:{port}", "self": False}
    # the connection to itself is not a gossip neighbour, and federation pulls nothing from itself
    gossip = hub.status()["gossip"]
    assert hub.account_id not in {n.get("peer_id") for n in gossip["neighbours"]}, gossip
    assert not [r for r in hub.status()["replications"]
                if r["direction"] == "pull" and r["local"] == "master" and r["remote"] == "master"]
