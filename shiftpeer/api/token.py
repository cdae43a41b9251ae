"""Bearer-token files: random secrets in the node directory, readable only by its owner. ``api.token`` lets a
local program drive the node; ``metrics.token`` only lets a scraper read ``--metrics`` (a hub's metrics name
who reads which group, so they are not open to whoever reaches the port)."""

from __future__ import annotations

import hmac
import os
import secrets
from typing import Any

TOKEN_FILE = "api.token"
METRICS_TOKEN_FILE = "metrics.token"
URL_FILE = "api.url"


def token_path(directory: str, name: str = TOKEN_FILE) -> str:
    """Where the node directory keeps a token (the API's unless ``name`` says another)."""
    return os.path.join(directory, name)


def ensure_token(directory: str, name: str = TOKEN_FILE) -> str:
    """Read the token, creating it (mode 0600, exclusively) if the directory has none yet. A file that
    holds no token (a node killed between creating it and writing it) gets a fresh one: an empty token
    would let an empty bearer through."""
    path = token_path(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = read_token(directory, name)
        return token if token else _replace_token(path)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _replace_token(path: str) -> str:
    """Write a fresh token over ``path`` atomically (a new mode-0600 file renamed over it)."""
    tmp = path + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    token = secrets.token_urlsafe(32)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token


def read_token(directory: str, name: str = TOKEN_FILE) -> str:
    """The token as written by ensure_token (OSError when absent)."""
    with open(token_path(directory, name)) as f:
        return f.read().strip()


def bearer_matches(request: Any, token: bytes) -> bool:
    """Does the request carry ``Authorization: Bearer <token>``? ``token`` must not be empty (the callers
    refuse to start with one): an empty bearer never passes. Constant-time comparison."""
    header = request.getHeader(b"authorization") or b""
    if isinstance(header, str):
        header = header.encode("latin-1")
    scheme, _, given = header.partition(b" ")
    given = given.strip()
    return scheme.lower() == b"bearer" and bool(given) and hmac.compare_digest(given, token)


def write_url(directory: str, url: str) -> None:
    """Atomically record the URL the API is listening on, so clients find it even on port 0."""
    path = os.path.join(directory, URL_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(url + "\n")
    os.replace(tmp, path)


def read_url(directory: str) -> str:
    """The URL of the running node's API (OSError when no node has written one)."""
    with open(os.path.join(directory, URL_FILE)) as f:
        return f.read().strip()


def remove_url(directory: str) -> None:
    """Forget the API URL when the node stops."""
    try:
        os.remove(os.path.join(directory, URL_FILE))
    except FileNotFoundError:
        pass
