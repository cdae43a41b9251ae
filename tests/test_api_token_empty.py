"""An ``api.token`` that holds no token (the node was killed between creating the file, exclusively and
empty, and writing the token into it) made the API take an empty bearer token: ``Authorization: Bearer``
with nothing after it passed the check, so any local process could use the node. The node now writes a
fresh token over an empty file, and an empty token never passes. Real node, real HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import stat

import pytest
import pytest_twisted

from shiftpeer.api.token import read_token, token_path
from tests.helpers_node import ApiTestClient, make_node


@pytest.fixture
def node_with_empty_token(tmp_path):
    from shiftpeer.roles.user import UserRole

    directory = str(tmp_path / "n")
    os.makedirs(directory)
    os.close(os.open(token_path(directory), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))   # as a kill left it
    n = make_node(directory, role_factories=[UserRole])
    n.startService()
    yield n
    pytest_twisted.blockon(n.stopService())


@pytest_twisted.ensureDeferred
async def test_an_empty_token_file_gets_a_fresh_token_and_an_empty_bearer_is_refused(node_with_empty_token):
    node = node_with_empty_token
    url = await node.when_ready()
    c = ApiTestClient(url, "")
    for token in ("", " "):
        code, body = await c.request("GET", "/v1/status", token=token)
        assert code == 401 and "token" in body["error"], (token, code, body)
    token = read_token(node.settings.directory)
    assert len(token) >= 40
    assert stat.S_IMODE(os.stat(token_path(node.settings.directory)).st_mode) == 0o600
    assert (await c.request("GET", "/v1/status", token=token))[0] == 200
