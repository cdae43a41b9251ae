"""JSON nested deeper than Python's parser recurses (a --content or an API body of a few kilobytes of ``[``)
is malformed input like any other: `shift new --content` exits 2 with one line before looking for the node,
and the API answers 400 and writes nothing, never a RecursionError traceback or a 500."""

from __future__ import annotations

import pytest_twisted

from shiftpeer.api.token import read_token
from shiftpeer.cli import EXIT_USAGE
from shiftpeer.shifts import PRIVATE
from tests.helpers_node import ApiTestClient
from tests.test_cli import run
from tests.test_cli_stale_or_hung_node import stopped  # noqa: F401 (the stopped fixture)
from tests.test_shift_resolve import cora  # noqa: F401 (the cora fixture)

DEEP = '{"a":' * 20000 + "1" + "}" * 20000   # 120 kB: fits one command-line argument (128 kB)


def test_deep_content_on_the_command_line_is_exit_2(stopped, capsys):
    status, out, err = run(capsys, "--data", stopped, "shift", "new", "--space", "N", "--href",
                           "https://e.org/deep", "--content", DEEP)
    assert (status, out) == (EXIT_USAGE, "") and err.startswith("shiftpeer: --content is not valid JSON")
    assert err.count("\n") == 1


@pytest_twisted.ensureDeferred
async def test_a_deep_api_body_is_400_and_writes_nothing(cora):
    node, _ = cora
    api = ApiTestClient(await node.when_ready(), read_token(node.settings.directory))
    before = node.store.database(PRIVATE).doc_count()
    code, answer = await api.request("POST", "/v1/shifts", raw=b"[" * 100000)
    assert code == 400 and "not valid JSON" in answer["error"], answer
    code, answer = await api.request("POST", "/v1/shifts", {"space": "N", "href": "https://e.org/ok"})
    assert code == 201, answer
    assert node.store.database(PRIVATE).doc_count() == before + 1
