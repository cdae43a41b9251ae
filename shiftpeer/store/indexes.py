"""Secondary indexes: which keys a document has, and merged newest-first scans over them.

An index key is `dbid | index byte | part(token) | part(value) | created (8 bytes) | docid` with an empty
value. Every live document is indexed under the token "*" and under each of its visibility tokens, so a
query for what tokens T1..Tn may see is a merge of sorted lists, never a scan.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from typing import Iterator
from urllib.parse import urlsplit

from . import keys
from .errors import InvalidDocument

INDEXES: dict[str, bytes] = {
    "all": b"a",
    "author": b"u",
    "domain": b"d",
    "href": b"h",
    "space": b"s",
    "thread": b"t",
    "type": b"y",
}
ALL_TOKEN = "*"


def domain_of(href: str) -> str | None:
    try:
        host = urlsplit(href).hostname
    except ValueError:
        return None
    return host or None


def index_values(body: dict) -> list[tuple[bytes, str]]:
    """(index byte, value) pairs for a live document body."""
    out = [(b"a", "")]
    href = body.get("href")
    if type(href) is str:
        out.append((b"h", href))
    domain = body.get("domain")
    if type(domain) is not str and type(href) is str:
        domain = domain_of(href)
    if type(domain) is str:
        out.append((b"d", domain.lower()))
    author = body.get("author")
    if type(author) is str:
        out.append((b"u", author))
    space = body.get("space")
    if type(space) is str:
        out.append((b"s", space))
    typ = body.get("type", "shift")
    if type(typ) is str:
        out.append((b"y", typ))
    thread = body.get("shift")
    if type(thread) is str:
        out.append((b"t", thread))
    return out


def index_keys(dbp: bytes, docid: str, body: dict | None, vis: list[str]) -> set[bytes]:
    """Every index key of a document; none when it is deleted (`body` None)."""
    if body is None:
        return set()
    tail = keys.created_bytes(body.get("created")) + docid.encode()
    tokens = [keys.part(ALL_TOKEN)] + [keys.part(t) for t in vis]
    out = set()
    for ib, value in index_values(body):
        vp = keys.part(value)
        for tp in tokens:
            out.add(dbp + ib + tp + vp + tail)
    return out


def normalise_value(index: str, value: str) -> str:
    return value.lower() if index == "domain" else value


def encode_cursor(sortkey: bytes) -> str:
    return base64.urlsafe_b64encode(sortkey).decode()


def decode_cursor(cursor: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode())
    except (binascii.Error, ValueError, AttributeError) as e:
        raise InvalidDocument(f"bad query cursor: {e}") from None
    if len(raw) < 8:
        raise InvalidDocument("bad query cursor: too short")
    return raw


def _scan(txn, idx_db, prefix: bytes, before: bytes | None) -> Iterator[bytes]:
    """Sort keys (created + docid) under `prefix`, newest first, strictly below `before` if given."""
    cur = txn.cursor(db=idx_db)
    start = prefix + before if before is not None else prefix[:-1] + b"\x01"
    if cur.set_range(start):
        ok = cur.prev()
    else:
        ok = cur.last()
    n = len(prefix)
    while ok:
        k = cur.key()
        if not k.startswith(prefix):
            return
        yield k[n:]
        ok = cur.prev()


def scan_merged(txn, idx_db, prefixes: list[bytes], before: bytes | None) -> Iterator[bytes]:
    """Merge newest-first lists, each document once (it has the same sort key in every list)."""
    its = [_scan(txn, idx_db, p, before) for p in prefixes]
    merged = its[0] if len(its) == 1 else heapq.merge(*its, reverse=True)
    last = None
    for sk in merged:
        if sk != last:
            last = sk
            yield sk
