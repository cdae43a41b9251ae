"""Key layouts of the LMDB sub-databases (docs/store.md has the table).

Every per-database key starts with the 4-byte big-endian database id, so one logical database is one
contiguous key range in each sub-database and a million of them cost no LMDB handles.
"""

from __future__ import annotations

import struct
from hashlib import blake2b

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_STATE = struct.Struct(">QQ")
_F64 = struct.Struct(">d")
_ITEM = struct.Struct(">QQ")
_SIGN = 0x8000000000000000

SCHEMA_KEY = b"schema"
NEXT_DBID_KEY = b"next_dbid"
#: Before the names of the small values roles keep in `meta` (`Store.put_meta`), apart from the store's own keys.
META_PREFIX = b"m:"

# Strings inside index keys: NUL escaped as 00 01 and terminated by 00 00, so the byte order of the keys is
# the order of the strings and no value is a prefix of another. Long ones are replaced by a hash, marked by a
# leading FF byte (never in UTF-8), because LMDB keys are at most 511 bytes.
_MAX_PART = 128


def dbid_bytes(dbid: int) -> bytes:
    return _U32.pack(dbid)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def read_u32(data: bytes) -> int:
    return _U32.unpack(data)[0]


def pack_state(seq: int, doc_count: int) -> bytes:
    return _STATE.pack(seq, doc_count)


def unpack_state(data: bytes) -> tuple[int, int]:
    return _STATE.unpack(data)


def doc_key(dbp: bytes, docid: str) -> bytes:
    """docs: dbid | docid (UTF-8) -> the document's current seq (8 bytes)."""
    return dbp + docid.encode()


def log_key(dbp: bytes, seq: int) -> bytes:
    """log: dbid | seq -> the document record; a document lives at its latest change."""
    return dbp + _U64.pack(seq)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def read_u64(data: bytes, offset: int = 0) -> int:
    return _U64.unpack_from(data, offset)[0]


#: `(value,) = U64_AT(data, offset)`: a u64 read without a Python call (hot loops)
U64_AT = _U64.unpack_from


def seq_of(key: bytes) -> int:
    return _U64.unpack_from(key, 4)[0]


def part(s: str) -> bytes:
    """One string as an ordered, self-delimiting key part (checkpoint keys)."""
    b = s.encode()
    if b"\x00" in b:
        b = b.replace(b"\x00", b"\x00\x01")
    if len(b) > _MAX_PART:
        b = b"\xff" + blake2b(b, digest_size=16).digest()
    return b + b"\x00\x00"


def h8(data: bytes) -> bytes:
    """8-byte hash naming an index list (index + value) in index keys; readers re-check the real value."""
    h = _h8_cache.get(data)
    if h is None:
        h = blake2b(data, digest_size=8).digest()
        if len(_h8_cache) >= 65536:
            _h8_cache.clear()
        _h8_cache[data] = h
    return h


_h8_cache: dict[bytes, bytes] = {}


def h4(data: bytes) -> bytes:
    """4-byte hash naming a visibility token in index keys; readers re-check the real token."""
    return blake2b(data, digest_size=4).digest()


def checkpoint_key(dbp: bytes, peer_id: str, remote_db: str) -> bytes:
    return dbp + part(peer_id) + part(remote_db)


def created_seconds(created: object) -> float:
    """`created` as the number it is indexed by: an epoch number, an ISO 8601 string (no zone: UTC), or
    0.0 for anything else (missing, bool, unparseable), so every document has a place in time order."""
    if type(created) is float or type(created) is int:
        try:
            return float(created)
        except OverflowError:
            return 0.0
    if type(created) is str:
        try:
            from datetime import datetime, timezone

            dt = datetime.fromisoformat(created.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            return dt.timestamp()
        except (ValueError, OverflowError):
            return 0.0
    return 0.0


def _ordered(f: float) -> int:
    """The bits of `f` as an unsigned int whose order is the numeric order of the floats."""
    (n,) = _U64.unpack(_F64.pack(f))
    return n ^ 0xFFFFFFFFFFFFFFFF if n & _SIGN else n | _SIGN


def created_bytes(created: object) -> bytes:
    """8 bytes whose byte order is the numeric order of `created` (epoch number or ISO 8601 string)."""
    return _U64.pack(_ordered(created if type(created) is float else created_seconds(created)))


def index_item(created: object, seq: int) -> bytes:
    """An index item, `created_bytes(created) + u64(seq)`, in one pack (the write hot path)."""
    return _ITEM.pack(_ordered(created if type(created) is float else created_seconds(created)), seq)
