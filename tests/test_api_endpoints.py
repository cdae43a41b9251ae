"""The local API on the endpoints docs/api.md allows besides the default (tcp on 127.0.0.1): on `unix:PATH` a
real node in this process answers HTTP on the socket with the token checked, writes `unix:PATH` to api.url,
and the `shiftpeer` command, which speaks HTTP over tcp only, says so in one line instead of failing
obscurely; on tcp6 `::1` api.url is a bracketed URL the command uses."""

from __future__ import annotations

import json
import os

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.threads import deferToThread
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from shiftpeer.api.token import read_token
from shiftpeer.cli import EXIT_ERROR
from shiftpeer.node import Node
from shiftpeer.nodedir import init_node_dir
from tests.helpers_node import node_cli, read_body


@implementer(IAgentEndpointFactory)
class _Socket:
    def __init__(self, path: str) -> None:
        self.path = path

    def endpointForURI(self, uri):
        return UNIXClientEndpoint(reactor, self.path)


async def _get(path: str, route: str, token: str | None) -> tuple[int, dict]:
    headers = Headers({b"authorization": [b"Bearer " + token.encode()]} if token else {})
    resp = await Agent.usingEndpointFactory(reactor, _Socket(path)).request(
        b"GET", b"http://localhost" + route.encode(), headers)
    return resp.code, json.loads(await read_body(resp))


@pytest_twisted.ensureDeferred
async def test_an_api_on_a_unix_socket(tmp_path, capsys):
    d = str(tmp_path / "u")
    sock = os.path.join(d, "api.sock")
    init_node_dir(d, user="uma", api=f"unix:{sock}")
    node = Node.from_directory(d, reactor=reactor)
    node.startService()
    try:
        url = await node.when_ready()
        assert url == f"unix:{sock}" and open(os.path.join(d, "api.url")).read().strip() == url
        token = read_token(d)
        code, status = await _get(sock, "/v1/status", token)
        assert code == 200 and status["account"] == node.account_id
        code, answer = await _get(sock, "/v1/status", None)
        assert code == 401 and "token" in answer["error"]
        status, out = await deferToThread(node_cli(capsys, d), "status")
        assert status == EXIT_ERROR and out == (f"shiftpeer: the node's API listens on unix:{sock}; this command "
                                                "needs a tcp API endpoint\n")
    finally:
        await node.stopService()
    assert not os.path.exists(os.path.join(d, "api.url"))


@pytest_twisted.ensureDeferred
async def test_an_api_on_ipv6_loopback(tmp_path, capsys):
    d = str(tmp_path / "v6")
    init_node_dir(d, user="ivy", api=r"tcp6:0:interface=\:\:1")
    node = Node.from_directory(d, reactor=reactor)
    node.startService()
    try:
        url = await node.when_ready()
        assert url.startswith("http://[::1]:") and open(os.path.join(d, "api.url")).read().strip() == url
        status, out = await deferToThread(node_cli(capsys, d), "status", "--json")
        assert status == 0 and json.loads(out)["account"] == node.account_id
    finally:
        await node.stopService()
