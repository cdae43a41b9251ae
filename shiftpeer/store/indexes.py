"""Secondary indexes: which keys a document has, and merged newest-first scans over them.

An index list is the key `dbid (4) | h4(token) | h8(index byte + value)` (16 bytes whatever the URL length)
in a dupsort sub-database; its items are `created (8) | seq (8)`, kept sorted by LMDB. Every live document is indexed under the token "*" and under each of its
visibility tokens, so "what may tokens T1..Tn see" is a merge of sorted lists, never a scan. The hashes only
name lists; a reader re-checks the document's real value and tokens, so a collision costs time, not
correctness. `created` is stored ascending and scanned backwards (appends fill pages).
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

_token_cache: dict[str, bytes] = {}


def token_hash(token: str) -> bytes:
    h = _token_cache.get(token)
    if h is None:
        h = keys.h4(token.encode())
        if len(_token_cache) < 100_000:
            _token_cache[token] = h
    return h


def value_hash(ib: bytes, value: str) -> bytes:
    return keys.h8(ib + value.encode())


_h8 = keys.h8
_ALL_HASH = token_hash(ALL_TOKEN)


def domain_of(href: str) -> str | None:
    try:
        host = urlsplit(href).hostname
    except ValueError:
        return None
    return host or None


def index_values(body: dict) -> list[tuple[bytes, str]]:
    """(index byte, value) pairs of a live document body."""
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


def index_keys(dbp: bytes, seq: int, body: dict | None, vis: list[str]) -> list[tuple[bytes, bytes]]:
    """Every (list key, item) of a document at `seq`; none when it is deleted (`body` None)."""
    if body is None:
        return []
    tail = keys.created_bytes(body.get("created")) + keys.u64(seq)
    if vis:
        tokens = [dbp + _ALL_HASH] + [dbp + token_hash(t) for t in vis if t != ALL_TOKEN]
    else:
        tokens = [dbp + _ALL_HASH]
    out = []
    for ib, value in index_values(body):
        vh = _h8(ib + value.encode())
        for tp in tokens:
            out.append((tp + vh, tail))
    return out


def normalise_value(index: str, value: str) -> str:
    return value.lower() if index == "domain" else value


def matches(body: dict, ib: bytes, values: set[str]) -> bool:
    """The re-check behind the hashes: does `body` really have one of `values` in index `ib`?"""
    for b, v in index_values(body):
        if b == ib and v in values:
            return True
    return False


def encode_cursor(sortkey: bytes) -> str:
    return base64.urlsafe_b64encode(sortkey).decode()


def decode_cursor(cursor: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode())
    except (binascii.Error, ValueError, AttributeError) as e:
        raise InvalidDocument(f"bad query cursor: {e}") from None
    if len(raw) != 16:
        raise InvalidDocument("bad query cursor: wrong length")
    return raw


def _scan(txn, idx_db, listkey: bytes, before: bytes | None) -> Iterator[bytes]:
    """Items (created + seq) of one list, newest first, strictly below `before` if given."""
    cur = txn.cursor(db=idx_db)
    if not cur.set_key(listkey):
        return
    if before is None:
        ok = cur.last_dup()
    elif cur.set_range_dup(listkey, before):
        ok = cur.prev_dup()
    else:
        ok = cur.set_key(listkey) and cur.last_dup()
    while ok:
        yield cur.value()
        ok = cur.prev_dup()


def scan_merged(txn, idx_db, prefixes: list[bytes], before: bytes | None) -> Iterator[bytes]:
    """Merge newest-first lists, each document once (it has the same sort key in every list)."""
    if len(prefixes) == 1:
        yield from _scan(txn, idx_db, prefixes[0], before)
        return
    last = None
    for sk in heapq.merge(*[_scan(txn, idx_db, p, before) for p in prefixes], reverse=True):
        if sk != last:
            last = sk
            yield sk
