"""A bad command line is exit 2 with one line saying what is wrong, whether or not the node runs (README's
exit statuses): the mistake is found before the command looks for the node, so a user is never first told
to start a node only to learn afterwards that the command was wrong anyway."""

from __future__ import annotations

import pytest

from shiftpeer.cli import EXIT_USAGE
from tests.test_cli import run
from tests.test_cli_errors import _stopped


@pytest.fixture
def stopped(tmp_path, capsys) -> str:
    """A node directory made with `shiftpeer init` whose node is not running."""
    return _stopped(tmp_path, capsys)


@pytest.mark.parametrize("argv, words", [
    (("shift", "edit", "SID"), "nothing to change: give --summary TEXT and/or --content JSON"),
    (("shift", "edit", "SID", "--content", "[1]"), "--content must be a JSON object"),
    (("shift", "new", "--space", "Notes", "--href", "https://e.org/", "--content", "{bad"),
     "--content is not valid JSON"),
    (("shift", "publish", "SID"), "say where to publish: --public, --group NAME and/or --to USER"),
    (("status", "--limit", "5"), "--limit and --after page a database listing: give --databases PREFIX too"),
    (("status", "--after", "inbox/a"), "give --databases PREFIX too"),
    (("status", "--databases", ""), "--databases needs a prefix"),
    (("feed", "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"), "is after until"),
    (("gossip", "unban"), "give PEER_ID... or --all"),
    (("gossip", "unban", "PEER", "--all"), "give PEER_ID... or --all"),
])
def test_a_bad_command_line_is_exit_2_with_the_node_stopped(stopped, capsys, argv, words):
    status, out, err = run(capsys, "--data", stopped, *argv)
    assert (status, out) == (EXIT_USAGE, ""), err
    assert err.startswith("shiftpeer: ") and err.count("\n") == 1 and words in err, err
    assert "no node is running" not in err
