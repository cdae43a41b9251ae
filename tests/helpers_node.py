"""Helpers for node, API and CLI tests: a real Node on a real store in a temporary directory."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers

from shiftpeer.identity import NodeKey
from shiftpeer.node import Node
from shiftpeer.nodesettings import NodeSettings


def make_node(directory: str, role_factories: list | None = None, **settings: Any) -> Node:
    """A node with a fresh key on a store in ``directory``, its API on a free loopback port.

    ``role_factories`` None gives the roles a real node runs from its settings.
    """
    os.makedirs(directory, exist_ok=True)
    s = NodeSettings(directory=str(directory), store_path=os.path.join(directory, "store"), **settings)
    return Node(s, NodeKey.generate(), reactor=reactor, role_factories=role_factories)


async def eventually(check, timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll ``check()`` until it returns something truthy, failing after ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout
    while True:
        result = check()
        if result:
            return result
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        await deferLater(reactor, interval, lambda: None)


async def eventually_async(fetch, ok, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll an asynchronous ``fetch()`` until ``ok(result)``, failing after ``timeout`` seconds with the
    last result seen."""
    deadline = reactor.seconds() + timeout
    while True:
        result = await fetch()
        if ok(result):
            return result
        if reactor.seconds() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {result!r}")
        await deferLater(reactor, interval, lambda: None)


class ApiTestClient:
    """Real HTTP to the node's API with twisted.web's Agent (no persistent connections)."""

    def __init__(self, url: str, token: str | None):
        self.url = url
        self.token = token
        self.agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))

    async def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                      token: Any = "default") -> tuple[int, Any]:
        headers = Headers()
        tok = self.token if token == "default" else token
        if tok is not None:
            headers.addRawHeader(b"authorization", b"Bearer " + tok.encode())
        producer = None
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            from twisted.web.client import FileBodyProducer
            from io import BytesIO

            headers.addRawHeader(b"content-type", b"application/json")
            producer = FileBodyProducer(BytesIO(data))
        resp = await self.agent.request(method.encode(), (self.url + path).encode(), headers, producer)
        content = await read_body(resp)
        return resp.code, json.loads(content) if content else None


def listening_port(service) -> Deferred:
    """The port a StreamServerEndpointService bound, without consuming its own Deferred's result."""
    d: Deferred = Deferred()

    def got(port):
        d.callback(port)
        return port

    service._waitingForPort.addCallback(got)
    return d


class _Collect(Protocol):
    def __init__(self, done: Deferred):
        self.done = done
        self.parts: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason) -> None:
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def metrics_headers(directory: str) -> Headers:
    """The Authorization header a scraper of ``--metrics`` sends: the node directory's metrics token."""
    from shiftpeer.api.token import METRICS_TOKEN_FILE, read_token

    return Headers({b"authorization": [b"Bearer " + read_token(directory, METRICS_TOKEN_FILE).encode()]})


def read_body(response) -> Deferred:
    """The whole response body (readBody warns about transports without abortConnection)."""
    done: Deferred = Deferred()
    response.deliverBody(_Collect(done))
    return done


def node_cli(capsys, directory: str):
    """``shiftpeer --data DIRECTORY ARGV...`` in this process: returns a function of ARGV that gives the exit
    status and what it printed (standard output + standard error). Call it in a thread while the node runs
    in the reactor (the CLI blocks on the node's API)."""
    from shiftpeer.cli import main

    def cli(*argv: str) -> tuple[int, str]:
        status = main(["--data", directory, *argv])
        out, err = capsys.readouterr()
        return status, out + err

    return cli
