"""A stale api.url whose port another program took that does not speak HTTP (an SSH server, a node's own TLS
sync port): the command says in one line that what answers there is not the node's API, exit 1, never a
traceback (tests/test_cli_stale_or_hung_node.py has the program that answers HTTP with a page that is not JSON)."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Iterator

from shiftpeer.cli import EXIT_ERROR
from tests.test_cli import run
from tests.test_cli_stale_or_hung_node import _point_at, stopped  # noqa: F401 (the stopped fixture)


def _greeting_server(listener: socket.socket, done: threading.Event) -> None:
    """Answer each connection with a banner that is not HTTP, then close it (until ``done``)."""
    listener.settimeout(0.05)
    while not done.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        with conn:
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")


@contextmanager
def _not_http() -> Iterator[str]:
    """The URL of a listener on 127.0.0.1 that answers with an SSH banner; stopped on exit."""
    done = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        thread = threading.Thread(target=_greeting_server, args=(listener, done), daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        finally:
            done.set()
            thread.join(timeout=10)


def test_a_program_that_does_not_speak_http_at_a_stale_api_url_is_one_line(stopped, capsys):
    with _not_http() as url:
        _point_at(stopped, url)
        status, out, err = run(capsys, "--data", stopped, "status")
    assert (status, out) == (EXIT_ERROR, "")
    assert err == (f"shiftpeer: what answers at {url} (from {stopped}/api.url) is not a shiftpeer node's API: "
                   "if the node was killed, that file is stale; start the node again\n")
