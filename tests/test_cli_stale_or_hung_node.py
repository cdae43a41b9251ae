"""What the command says when whatever listens at DIR/api.url is not an answering node: a node that
accepts the connection but never answers (frozen), or another program that took the port of a killed
node (a stale api.url). One line and exit 1, never a traceback; real sockets on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shiftpeer.cli import EXIT_ERROR
from shiftpeer.cli import client as cli_client
from tests.test_cli import run
from tests.test_cli_errors import _stopped


@pytest.fixture
def stopped(tmp_path, capsys) -> str:
    """A node directory made with `shiftpeer init` whose node is not running."""
    return _stopped(tmp_path, capsys)


def _point_at(directory: str, url: str) -> None:
    """api.url and api.token as a node writes them, for a node that is not what answers there."""
    with open(os.path.join(directory, "api.url"), "w") as f:
        f.write(url + "\n")
    with open(os.path.join(directory, "api.token"), "w") as f:
        f.write("token\n")


def test_a_node_that_never_answers_is_one_line_after_the_timeout(stopped, capsys, monkeypatch):
    monkeypatch.setattr(cli_client, "TIMEOUT", 0.5)
    with socket.socket() as listener:    # the kernel accepts the connection; nothing ever reads or answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        _point_at(stopped, url)
        status, out, err = run(capsys, "--data", stopped, "status")
    assert (status, out) == (EXIT_ERROR, "")
    assert err.startswith(f"shiftpeer: the node at {url} did not answer within ") and err.count("\n") == 1


class _NotTheNode(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        page = b"<html>some other program</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args) -> None:
        pass


def test_another_program_at_a_stale_api_url_is_one_line(stopped, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotTheNode)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        _point_at(stopped, url)
        status, out, err = run(capsys, "--data", stopped, "status")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert (status, out) == (EXIT_ERROR, "")
    assert err == (f"shiftpeer: what answers at {url} (from {stopped}/api.url) is not a shiftpeer node's API: "
                   "if the node was killed, that file is stale; start the node again\n")
