"""Talking to a running node: its local HTTP API, found through the node directory (urllib, no Twisted,
so each command starts fast; urllib.request and http.client are imported by the first client, not by
``shiftpeer init``, which talks to no node)."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import urllib.error

from shiftpeer.cli.errors import EXIT_NOT_RUNNING, EXIT_USAGE, CliError

#: Seconds a request to the node may take.
TIMEOUT = 30.0


#: The file every node directory has (shiftpeer.nodedir.CONFIG_FILE; not imported: the CLI starts fast).
CONFIG_FILE = "config.json"


def check_node_dir(directory: str) -> None:
    """Exit 2 with what to do when ``directory`` is not a node directory (missing, or neither a config.json
    nor a running node's api.url), so a wrong --data is not mistaken for a node that is not running."""
    if not os.path.isdir(directory):
        raise CliError(
            f"{directory} is not a node directory: make one with 'shiftpeer init {directory} --user NAME'",
            EXIT_USAGE,
        )
    if not any(os.path.isfile(os.path.join(directory, name)) for name in (CONFIG_FILE, "api.url")):
        raise CliError(f"{directory} is not a shiftpeer node directory (it has no {CONFIG_FILE}): "
                       "give --data the directory 'shiftpeer init' made", EXIT_USAGE)


class ApiClient:
    """A minimal JSON client for the node's local API, found through DIR/api.url and DIR/api.token."""

    def __init__(self, directory: str):
        self.directory = directory
        check_node_dir(directory)
        self._not_running = (
            f"no node is running for {directory}: start it with 'twistd -n --pidfile= shiftpeer --data {directory}'"
        )
        try:
            with open(os.path.join(directory, "api.url")) as f:
                self.url = f.read().strip()
            with open(os.path.join(directory, "api.token")) as f:
                self.token = f.read().strip()
        except FileNotFoundError:
            raise CliError(self._not_running, EXIT_NOT_RUNNING) from None
        except PermissionError as e:
            raise CliError(f"cannot read the node's API files in {directory}: {e.strerror}") from None
        if not self.url.startswith("http"):
            raise CliError(f"the node's API listens on {self.url}; this command needs a tcp API endpoint")
        import urllib.request

        # Never send the token through a proxy: the API is on loopback.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        """Send one request and return the decoded JSON answer, or raise CliError with the node's message."""
        import http.client
        import urllib.error
        import urllib.request

        url = self.url + "/v1" + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=TIMEOUT) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise CliError(_error_message(e)) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (ConnectionRefusedError, FileNotFoundError)):
                raise CliError(self._not_running, EXIT_NOT_RUNNING) from None
            raise CliError(f"cannot reach the node at {self.url}: {e.reason}") from None
        except ConnectionError:
            raise CliError(self._not_running, EXIT_NOT_RUNNING) from None
        except TimeoutError:
            raise CliError(f"the node at {self.url} did not answer within {TIMEOUT:.0f}s") from None
        except (ValueError, http.client.HTTPException):   # an answer that is not JSON, or not HTTP at all
            # (BadStatusLine): not our node (a killed node's port taken since)
            raise CliError(f"what answers at {self.url} (from {self.directory}/api.url) is not a shiftpeer node's "
                           "API: if the node was killed, that file is stale; start the node again") from None


#: How long `sync --wait` without --timeout waits for a node that is not running (yet) to answer.
START_WAIT = 30.0


class StartingNodeClient:
    """The API of a node that may still be starting: twistd was just launched and has not written
    api.url yet (or a stale one from a killed node is still there). Each call retries, re-reading the
    node directory, until the node answers or ``patience`` seconds have passed since it first did not."""

    POLL = 0.1

    def __init__(self, directory: str, patience: float):
        check_node_dir(directory)
        self.directory = directory
        self.patience = patience

    def call(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        """ApiClient.call, waiting (bounded) while no node is running for the directory."""
        deadline = None
        while True:
            try:
                return ApiClient(self.directory).call(method, path, body, query)
            except CliError as e:
                if e.status != EXIT_NOT_RUNNING:
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.patience
                    sys.stderr.write(f"waiting for the node for {self.directory} to start "
                                     f"(up to {self.patience:g}s)\n")
                    sys.stderr.flush()
                if now >= deadline:
                    raise CliError(f"{e.message} (waited {self.patience:g}s)", EXIT_NOT_RUNNING) from None
            time.sleep(self.POLL)


def _error_message(e: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(e.read()).get("error")
    except Exception:
        message = None
    return message or f"the node answered HTTP {e.code} {e.reason}"
