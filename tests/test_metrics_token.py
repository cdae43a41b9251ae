"""``--metrics`` asks for its own bearer token: on a hub the replication labels name group and inbox databases
and the peers reading them (who reads which group), so the port is not open to whoever reaches it (audit3's
Known gap, docs/security.md). Real node, real HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import stat

import pytest_twisted
from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from shiftpeer.api.token import METRICS_TOKEN_FILE, TOKEN_FILE, read_token
from tests.helpers_node import listening_port, make_node, metrics_headers, read_body


def _bearer(token: str) -> Headers:
    return Headers({b"authorization": [b"Bearer " + token.encode()]})


@pytest_twisted.ensureDeferred
async def test_metrics_need_the_metrics_token_and_nothing_else_opens_them(tmp_path):
    """No header, a wrong token, an empty bearer and the API's own token get 401 with no metric in the body
    (and the refusal is logged); the metrics token, a 0600 file of its own, gets the metrics."""
    directory = str(tmp_path / "n")
    node = make_node(directory, metrics="tcp:0:interface=127.0.0.1")
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    node.startService()
    try:
        node.shifts.create({"space": "Notes", "href": "http://e.org/"})
        port = await listening_port(node.getServiceNamed("metrics"))
        url = f"http://127.0.0.1:{port.getHost().port}/metrics".encode()
        path = os.path.join(directory, METRICS_TOKEN_FILE)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert read_token(directory, METRICS_TOKEN_FILE) != read_token(directory, TOKEN_FILE)

        refusals = [None, _bearer("not-the-token"), Headers({b"authorization": [b"Bearer "]}),
                    _bearer(read_token(directory, TOKEN_FILE))]
        for headers in refusals:
            resp = await Agent(reactor).request(b"GET", url, headers)
            body = (await read_body(resp)).decode()
            assert resp.code == 401, (headers, resp.code)
            assert "shiftpeer_" not in body and METRICS_TOKEN_FILE in body, body

        resp = await Agent(reactor).request(b"GET", url, metrics_headers(directory))
        assert resp.code == 200
        assert 'shiftpeer_database_docs{db="user/private"} 1.0' in (await read_body(resp)).decode()
    finally:
        globalLogPublisher.removeObserver(logged.append)
        await node.stopService()
    lines = [e for e in logged if "metrics scrape" in (e.get("log_format") or "")]
    assert lines and lines[0]["n"] == 1, "the first refused scrape is logged"


@pytest_twisted.ensureDeferred
async def test_a_node_restarted_keeps_its_metrics_token(tmp_path):
    """A scraper configured once keeps working: the token survives a restart."""
    directory = str(tmp_path / "n")
    node = make_node(directory, metrics="tcp:0:interface=127.0.0.1")
    node.startService()
    first = read_token(directory, METRICS_TOKEN_FILE)
    await node.stopService()
    node = make_node(directory, metrics="tcp:0:interface=127.0.0.1")
    node.startService()
    try:
        assert read_token(directory, METRICS_TOKEN_FILE) == first
        port = await listening_port(node.getServiceNamed("metrics"))
        resp = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port.getHost().port}/metrics".encode(),
                                            _bearer(first))
        assert resp.code == 200
        await read_body(resp)
    finally:
        await node.stopService()
