"""`shiftpeer init` makes a key, a certificate and config.json, and talks to no node: it imports no Twisted,
no sync package and no HTTP client, which took most of its time (docs/internals.md). The
default API endpoint it skips Twisted's parse for is one that parse accepts as loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shiftpeer.endpoints import check_api_endpoint, parse_server_endpoint
from shiftpeer.nodedir import load_node_dir
from shiftpeer.nodesettings import DEFAULT_API

HEAVY = ("twisted", "shiftpeer.sync", "http.client", "urllib.request")


def test_init_imports_no_twisted_sync_or_http_client(tmp_path):
    """A real `shiftpeer init` in a fresh interpreter writes a node directory that loads, printing its
    account id, with none of the heavy modules imported."""
    node = tmp_path / "n"
    code = ("import sys; from shiftpeer.cli import main; status = main(['init', sys.argv[1], '--user', 'a']); "
            "print(sorted({m.split('.')[0] if m.startswith('twisted') else m for m in sys.modules "
            f"if m.startswith({HEAVY!r})}}), file=sys.stderr); sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code, str(node)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == load_node_dir(node).account_id
    assert done.stderr.strip() == "[]"
    assert json.loads((node / "config.json").read_text())["api"] == DEFAULT_API


def test_the_default_api_endpoint_passes_twisteds_parse_as_loopback():
    """What check_api_endpoint takes without parsing is what the parse makes of it: TCP on 127.0.0.1."""
    from twisted.internet.endpoints import TCP4ServerEndpoint

    endpoint = parse_server_endpoint(DEFAULT_API, "--api")
    assert isinstance(endpoint, TCP4ServerEndpoint) and endpoint._interface == "127.0.0.1"
    assert check_api_endpoint(DEFAULT_API) == DEFAULT_API
