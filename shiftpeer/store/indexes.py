"""Secondary indexes: which keys a document has, and merged newest-first scans over them.

An index list is the key prefix `dbid (4) | h4(token) | h8(index byte + value)` (16 bytes whatever the URL
length); each entry is one 32-byte key, that prefix plus the item `created (8) | seq (8)`, with an empty
value, so a list is a contiguous key range kept sorted by LMDB. (Plain keys, not a dupsort list per prefix:
inserting a key is half the CPU of inserting a duplicate, for ~160 more bytes per document on disk; see
docs/store.md.) Every live document is indexed under the token "*" and under each of its
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


_domains: dict[str, str | None] = {}


def domain_of(href: str) -> str | None:
    """The host of a page URL (lower case), for documents without a `domain` field. Cached by URL: many
    shifts share a page, and urlsplit is ~3 us, a tenth of the Python a replicated write costs."""
    try:
        return _domains[href]
    except KeyError:
        pass
    try:
        host = urlsplit(href).hostname or None
    except ValueError:
        host = None
    if len(_domains) >= 65536:
        _domains.clear()
    _domains[href] = host
    return host


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


# Per index, value -> 8-byte list hash (a write computes seven of these per document).
_VH: dict[bytes, dict[str, bytes]] = {ib: {} for ib in INDEXES.values()}


def _vh(ib: bytes, value: str) -> bytes:
    cache = _VH[ib]
    h = cache.get(value)
    if h is None:
        h = _h8(ib + value.encode())
        if len(cache) >= 65536:
            cache.clear()
        cache[value] = h
    return h


_ALL_VH = _vh(b"a", "")
_HREF, _DOMAIN, _AUTHOR, _SPACE, _TYPE, _THREAD = (_VH[ib] for ib in (b"h", b"d", b"u", b"s", b"y", b"t"))


def value_hashes(body: dict) -> list[bytes]:
    """The list hashes of a live body: index_values(body), hashed (cached; the write hot path)."""
    get = body.get
    out = [_ALL_VH]
    app = out.append
    href = get("href")
    if type(href) is str:
        h = _HREF.get(href)
        app(h if h is not None else _vh(b"h", href))
    domain = get("domain")
    if type(domain) is not str and type(href) is str:
        domain = domain_of(href)
    if type(domain) is str:
        h = _DOMAIN.get(domain)  # keyed by the value as given; the hash is of the lowercased value
        if h is None:
            h = _h8(b"d" + domain.lower().encode())
            if len(_DOMAIN) >= 65536:
                _DOMAIN.clear()
            _DOMAIN[domain] = h
        app(h)
    author = get("author")
    if type(author) is str:
        h = _AUTHOR.get(author)
        app(h if h is not None else _vh(b"u", author))
    space = get("space")
    if type(space) is str:
        h = _SPACE.get(space)
        app(h if h is not None else _vh(b"s", space))
    typ = get("type", "shift")
    if type(typ) is str:
        h = _TYPE.get(typ)
        app(h if h is not None else _vh(b"y", typ))
    thread = get("shift")
    if type(thread) is str:
        h = _THREAD.get(thread)
        app(h if h is not None else _vh(b"t", thread))
    return out


_prefix_cache: dict[tuple, list[bytes]] = {}


def token_prefixes(dbp: bytes, vis: list[str]) -> list[bytes]:
    """dbid + token hash of "*" and of each visibility token: the first 8 bytes of a document's list keys."""
    key = (dbp, *vis)
    out = _prefix_cache.get(key)
    if out is None:
        out = [dbp + _ALL_HASH] + [dbp + token_hash(t) for t in vis if t != ALL_TOKEN]
        if len(_prefix_cache) >= 4096:
            _prefix_cache.clear()
        _prefix_cache[key] = out
    return out


def index_keys(dbp: bytes, seq: int, body: dict | None, vis: list[str]) -> list[bytes]:
    """Every index entry of a document at `seq` (none when it is deleted: `body` None), each as 32 bytes:
    list key (16) + item (16). Both halves have fixed sizes, so sorting entries sorts (key, item) pairs."""
    if body is None:
        return []
    return entries(token_prefixes(dbp, vis), seq, body)


def entries(prefixes: list[bytes], seq: int, body: dict) -> list[bytes]:
    """index_keys of a live body, given its `token_prefixes` (a batch looks them up once for all its
    documents)."""
    tail = _item(body.get("created"), seq)
    vhs = value_hashes(body)
    if len(prefixes) == 1:
        p = prefixes[0]
        return [p + vh + tail for vh in vhs]
    return [p + vh + tail for vh in vhs for p in prefixes]


_item = keys.index_item


def normalise_value(index: str, value: str) -> str:
    return value.lower() if index == "domain" else value


def matches(body: dict, ib: bytes, values: set[str]) -> bool:
    """The re-check behind the hashes: does `body` really have one of `values` in index `ib`?"""
    for b, v in index_values(body):
        if b == ib and v in values:
            return True
    return False


_FIELDS = {b"h": "href", b"u": "author", b"s": "space", b"t": "shift"}


def matcher(ib: bytes):
    """matches() for one index, reading just that index's field where it can (the query hot path)."""
    field = _FIELDS.get(ib)
    if field is not None:

        def match_field(body: dict, ib: bytes, values: set[str]) -> bool:
            v = body.get(field)
            return type(v) is str and v in values

        return match_field
    if ib == b"y":

        def match_type(body: dict, ib: bytes, values: set[str]) -> bool:
            v = body.get("type", "shift")
            return type(v) is str and v in values

        return match_type
    if ib == b"a":
        return lambda body, ib, values: "" in values
    return matches


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


def _scan(txn, idx_db, listkey: bytes, before: bytes | None, floor: bytes | None = None) -> Iterator[bytes]:
    """Items (created + seq) of one list, newest first, strictly below `before` and at or above `floor`
    if given (a time range bounds the range scan itself: nothing outside it is read)."""
    cur = txn.cursor(db=idx_db)
    # Position on the first key at or after the end of the range, then step back once: the newest item.
    if cur.set_range(listkey + (before if before is not None else _PAST_ITEMS)):
        if not cur.prev():
            return
    elif not cur.last():
        return
    n = len(listkey)
    if floor is None:
        for k in cur.iterprev(values=False):
            if k[:n] != listkey:
                return
            yield k[n:]
        return
    low = listkey + floor
    for k in cur.iterprev(values=False):
        if k < low:  # below the floor, or (shorter prefix order) another list
            return
        yield k[n:]


def time_bounds(since: float | None, until: float | None) -> tuple[bytes | None, bytes | None]:
    """(floor, ceiling) items of the created range [since, until): every item of a document created at
    `since` sorts at or above the floor, every one created at `until` at or above the ceiling."""
    floor = keys.created_bytes(since) + _NO_SEQ if since is not None else None
    ceiling = keys.created_bytes(until) + _NO_SEQ if until is not None else None
    return floor, ceiling


_NO_SEQ = bytes(8)  # seqs start at 1, so created + 0 sorts below every item created then
_PAST_ITEMS = b"\xff" * 17  # sorts after every 16-byte item


def scan_merged(txn, idx_db, prefixes: list[bytes], before: bytes | None,
                floor: bytes | None = None) -> Iterator[bytes]:
    """Merge newest-first lists, each document once (it has the same sort key in every list)."""
    if len(prefixes) == 1:
        yield from _scan(txn, idx_db, prefixes[0], before, floor)
        return
    last = None
    for sk in heapq.merge(*[_scan(txn, idx_db, p, before, floor) for p in prefixes], reverse=True):
        if sk != last:
            last = sk
            yield sk
