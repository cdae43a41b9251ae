"""The one place stored values are CBOR-encoded and decoded (STYLE.md practice 7).

Bodies are encoded canonically (RFC 8949 core deterministic encoding, as cbor2 `canonical=True`) because
their bytes feed the revision hash: the same edit must hash the same on every node.
"""

from __future__ import annotations

import io
import math
import os
import struct
import threading
from typing import Any, Callable, NoReturn

import cbor2

from .errors import InvalidDocument

_loads = cbor2.loads
_local = threading.local()


def _encoder(canonical: bool):
    """A reused encoder per thread: cbor2.dumps pays ~1-2 us of setup per call on the write hot path."""
    encs = getattr(_local, "encs", None)
    if encs is None:
        encs = _local.encs = {}
    pair = encs.get(canonical)
    if pair is None:
        fp = io.BytesIO()
        pair = encs[canonical] = (fp, cbor2.CBOREncoder(fp, canonical=canonical))
    return pair


def _dumps(obj: Any, canonical: bool = False) -> bytes:
    try:
        return _encoder(canonical)[1].encode_to_bytes(obj)
    except BaseException:
        # a failed encode may leave state behind: start a fresh encoder next time
        _local.encs.pop(canonical, None)
        raise


class _PlainBodyKey:
    """The type of PLAIN_BODY: a dict key no decoder (CBOR, JSON) can produce."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PLAIN_BODY"


#: A replicated document (ReplDoc dict) may carry its body's plain CBOR (`plain_encoder`'s bytes) under this
#: key: the sync validator (identity/verifiers.py `verify_many`) encodes the body anyway for the signed payload
#: and leaves the bytes on each genuine document, and the store then writes them instead of encoding the
#: body again (~5 us a document in the store writer). The key is an object, not a string, so no document
#: that came from outside (a frame, an RPC argument, a file) can carry it: only the validator sets it.
PLAIN_BODY: Any = _PlainBodyKey()


def cbor_head_len(n: int) -> int:
    """Bytes of a CBOR head whose argument is `n` (a string's or array's length)."""
    return 1 if n < 24 else 2 if n < 256 else 3 if n < 65536 else 5 if n < 2**32 else 9


def plain_encoder() -> Callable[[Any], bytes]:
    """This thread's plain (not canonical) encode function, for a loop that encodes many bodies: the
    caller calls `reset_encoders()` if it raises."""
    return _encoder(False)[1].encode_to_bytes


def reset_encoders() -> None:
    """Drop this thread's encoders (after a failed encode) so the next call starts fresh ones."""
    getattr(_local, "encs", {}).clear()


_SCALARS = frozenset((str, int, bool, type(None)))
_STR_ONLY = frozenset((str,))
#: Nesting the recursive check follows before it hands a subtree to the iterative one (Python's recursion
#: limit is ~1,000 frames; a shift is a few levels deep).
_RECURSE_DEPTH = 32
#: Maps and lists a body may nest, itself included. Every body stored must reach any node: cbor2 decodes
#: at most 400 levels, a `docs` frame wraps a body in 3, and libipld (which takes ~1,000) is not on every
#: node; a real shift nests a few levels.
MAX_DEPTH = 128
_isfinite = math.isfinite


def check_json(body: Any) -> bool:
    """Refuse anything that is not a JSON-compatible dict (str keys; str/int/float/bool/None/list/dict).
    True when the body holds a float (`encode_body` needs cbor2's canonical encoder then).

    Recursive over the first _RECURSE_DEPTH levels, the common scalar types passed inline: 15-30% less
    CPU than the iterative walk alone for a ~1 KB shift (best of 30 passes over 1,000 shifts, interleaved:
    1.9-3.3 against 2.3-4.7 us; the store writer runs it for every document it writes). Deeper subtrees
    go to the iterative walk, so nesting cannot exhaust the stack."""
    if type(body) is not dict:
        raise InvalidDocument(f"document body must be a dict, not {type(body).__name__}")
    return _check_map(body, 0)


def _check_map(o: dict, depth: int) -> bool:
    floats = False
    for k, v in o.items():
        if type(k) is not str:
            _refuse_key(k)
        t = type(v)
        if t is not str and t is not int and t is not bool and v is not None and _check_other(v, t, depth):
            floats = True
    return floats


def _check_values(o: list, depth: int) -> bool:
    floats = False
    for v in o:
        t = type(v)
        if t is not str and t is not int and t is not bool and v is not None and _check_other(v, t, depth):
            floats = True
    return floats


def _check_other(v: Any, t: type, depth: int) -> bool:
    """A value that is not a str, int, bool or None, found `depth` levels down; True when it is or holds
    a float."""
    if t is float:
        if not _isfinite(v):
            raise InvalidDocument(f"document numbers must be finite, not {v!r}")
        return True
    if t is not dict and t is not list:
        raise InvalidDocument(f"document values must be JSON-compatible, not {t.__name__}")
    if depth >= _RECURSE_DEPTH:
        return _check_iteratively(v, depth + 2)
    if t is dict:
        return _check_map(v, depth + 1)
    return _check_values(v, depth + 1)


def _check_iteratively(root: Any, level: int) -> bool:
    """check_json's walk of a deep subtree (a dict or list, `level` containers down counting the body as 1)
    with its own stack instead of recursion; the values that are not containers get ``_check_other``'s
    checks, and nothing may nest past MAX_DEPTH. True when it holds a float."""
    stack: list = [(root, level)]
    pop = stack.pop
    push = stack.append
    scalars = _SCALARS
    floats = False
    while stack:
        o, level = pop()
        if level > MAX_DEPTH:
            raise InvalidDocument(f"document bodies may nest at most {MAX_DEPTH} levels of maps and lists")
        if type(o) is dict:
            if not _STR_ONLY.issuperset(map(type, o)):
                _refuse_key(next(k for k in o if type(k) is not str))
            values = o.values()
        else:
            values = o
        for v in values:
            t = type(v)
            if t in scalars:
                continue
            if t is dict or t is list:
                push((v, level + 1))
            elif _check_other(v, t, 0):
                floats = True
    return floats


def _refuse_key(k: Any) -> NoReturn:
    raise InvalidDocument(f"document keys must be strings, not {type(k).__name__}: {k!r}")


def encode_canonical(obj: Any) -> bytes:
    """Canonical CBOR, used for bodies and everything hashed."""
    return _dumps(obj, canonical=True)


def in_canonical_order(body: dict) -> dict:
    """`body` with its maps' keys (nested ones too) in canonical order, the order its bytes are stored in
    when a database put encodes it. A body built by adding keys (``{**body, "audience": ...}``) and written
    by ``bulk_replicated`` would otherwise be stored in insertion order: every node that gets it then finds
    the plain payload differs from the signed canonical one and checks its signature twice."""
    return _loads(encode_canonical(body))


def encode_body(body: dict) -> bytes:
    """Check that `body` is JSON-compatible and return its canonical CBOR.

    A body without floats is encoded by libipld's DAG-CBOR encoder: for text keys, ints of up to 64 bits,
    strings, booleans, null, lists and maps, DAG-CBOR is the canonical encoding byte for byte (shortest
    heads, map keys by length then bytes), in ~0.7 us for a 1 KB shift instead of cbor2's ~8.3 (every
    local put pays this, on the live path's cold caches several times over). A float needs cbor2: canonical
    CBOR writes it in the fewest bits that hold it, DAG-CBOR always in 64. What libipld refuses (an int
    past 64 bits) goes to cbor2 too. tests/test_store_encode.py compares the two on random bodies."""
    if not check_json(body):
        data = _dag_encode(body)
        if data is not None:
            return data
    return _dumps(body, canonical=True)



_HEAD16 = struct.Struct(">BH")
_HEAD32 = struct.Struct(">BI")


def _head(major: int, n: int) -> bytes:
    """A CBOR item head: major type (shifted) and length, in its shortest form."""
    if n < 24:
        return bytes((major | n,))
    if n < 256:
        return bytes((major | 24, n))
    if n < 65536:
        return _HEAD16.pack(major | 25, n)
    return _HEAD32.pack(major | 26, n)


# Heads of text and byte strings shorter than 256 bytes (ids, revisions, signatures, most bodies' lengths
# fall here or one table lookup from it): a lookup instead of a call on the write hot path.
_TEXT_HEADS = tuple(_head(0x60, n) for n in range(256))
_BYTES_HEADS = tuple(_head(0x40, n) for n in range(256))


def encode_text(s: str) -> bytes:
    """A text string's CBOR item (the same bytes canonical or not), for payloads assembled from parts."""
    b = s.encode()
    n = len(b)
    return (_TEXT_HEADS[n] if n < 256 else _head(0x60, n)) + b


def encode_vis(vis: list[str]) -> bytes:
    """The CBOR array of a document's visibility tokens (a batch encodes it once for all its documents)."""
    return b"".join((_head(0x80, len(vis)), *map(encode_text, vis)))


def new_record(docid: str, vis_cbor: bytes, rev: str, deleted: bool, body: bytes, sig: bytes | None) -> bytes:
    """encode_new_record with the tokens already encoded (`encode_vis`): the replicated write hot path."""
    d = docid.encode()
    r = rev.encode()
    n = len(body)
    return b"".join((
        b"\x86", _TEXT_HEADS[len(d)] if len(d) < 256 else _head(0x60, len(d)), d, vis_cbor,
        _TEXT_HEADS[len(r)] if len(r) < 256 else _head(0x60, len(r)), r,
        b"\xf5" if deleted else b"\xf4",
        _BYTES_HEADS[n] if n < 256 else _HEAD16.pack(0x59, n) if n < 65536 else _head(0x40, n), body,
        b"\xf6" if sig is None else _BYTES_HEADS[len(sig)] + sig if len(sig) < 256 else _head(0x40, len(sig)) + sig,
    ))


def encode_new_record(docid: str, vis: list[str], rev: str, deleted: bool, body: bytes, sig: bytes | None) -> bytes:
    """The record of a document with one revision and no ancestors (every document a pull brings new),
    in its compact form `[docid, vis, rev, deleted, body, sig]`, assembled from its parts: the same bytes
    as cbor2 would give (tests/test_store_basic.py checks it) for about half the CPU."""
    return new_record(docid, encode_vis(vis), rev, deleted, body, sig)


class RawCBOR:
    """One already-encoded CBOR item (a stored body), written as it is by an encoder given
    `default=write_raw`: a sender splices stored bodies into its frames instead of decoding them only to
    encode them again. Not a bytes subclass, so it can never be mistaken for (or encoded as) a byte string."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"RawCBOR({len(self.data)} bytes)"


def write_raw(encoder: Any, value: Any) -> None:
    """cbor2 `default` hook: write a RawCBOR item verbatim; anything else unknown is an encode error."""
    if type(value) is RawCBOR:
        encoder.write(value.data)
        return
    raise cbor2.CBOREncodeTypeError(f"cannot serialize type {type(value).__name__}")


# libipld makes its errors with Rust's anyhow, which captures a backtrace for each when RUST_BACKTRACE=1 is set
# (developer machines often have it): ~10 us a refused body instead of ~1.5. Library backtraces only; a panic
# still prints its own. A user's explicit setting wins.
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")
try:  # libipld: the Rust DAG-CBOR codec of the AT Protocol's Python SDK; where no wheel installs, cbor2 alone
    from libipld import decode_dag_cbor as _dag_loads, encode_dag_cbor as _dag_dumps
except ImportError:  # pragma: no cover - every platform CI runs on has the wheel
    _dag_loads = _loads
    _dag_dumps = None

#: Which library decodes stored bodies first: "libipld" where its wheel installed, else "cbor2".
BODY_DECODER = "cbor2" if _dag_loads is _loads else "libipld"


def loads(data: bytes) -> Any:
    """CBOR bytes decoded: what `cbor2.loads` returns, in about a third of its time for DAG-CBOR bytes.

    Stored bodies and records are DAG-CBOR almost always (maps keyed by text in length-then-bytes order,
    no tags): a put encodes canonically, which is that order, and replication keeps the order it came in.
    Sync frames are sent in that order too (sync/messages.py). libipld decodes those ~3x faster than cbor2
    (~1.6 against ~4.7 us for a 1 KB shift, most of a bulk read), and refuses with an error everything it
    does not take (a 16-bit float, keys in another order, a tag), which cbor2 then decodes. So the result
    is cbor2's for every input but two: a tag-42 link, which libipld gives as its bytes, where cbor2 gives
    a CBORTag (no stored value holds one: bodies are checked JSON; in a frame it is what a peer could send
    as plain bytes); and nesting of 401 to ~1,000 levels, which cbor2 refuses and libipld decodes (the
    store refuses a body nested past check_json's MAX_DEPTH, 128, so no such value is stored or served)."""
    try:
        return _dag_loads(data)
    except Exception:
        return _loads(data)
    except BaseException as e:  # a panic in libipld (pyo3's PanicException is not an Exception): cbor2 decides
        if not _rust_panic(e):
            raise
        return _loads(data)


def _rust_panic(e: BaseException) -> bool:
    """Is `e` a Rust panic surfaced by pyo3 (none was found fuzzing libipld 3.5 with 300,000 inputs; 3.0
    panicked on a non-text map key)?"""
    return type(e).__name__ == "PanicException"


#: A stored body, decoded (`loads`).
decode_body = loads


def dumps_sorted(obj: Any) -> bytes:
    """CBOR of `obj` that decodes to its values (a zero's sign aside, below), for a payload a signature is
    checked over: libipld's DAG-CBOR encoder (~1 us for a 1 KB shift's payload, cbor2's plain encoding
    ~5.5), which writes map keys in canonical order and floats in 64 bits, so for a body without a float
    that fits fewer bits it gives the canonical payload itself, whatever order the keys came in. What libipld refuses (an int past 64
    bits, a key that is not text, NaN, a lone surrogate) gets cbor2's plain encoding, keys as they are, or
    cbor2's error.

    One value does not survive: libipld 3.5 writes -0.0 as 0.0. Such bytes are never a canonical payload
    (canonical CBOR writes a zero in 16 bits), so no honest signature verifies over them: the canonical
    retry, from the decoded body, decides, and the store keeps the canonical bytes (`with_payload`);
    verify_repl_doc's memory keys a document by the payload that verified, never by one two bodies share.
    Checking every payload for a zero instead cost ~0.75 us a document."""
    data = _dag_encode(obj)
    return data if data is not None else _dumps(obj)


def _dag_encode(obj: Any) -> bytes | None:
    """libipld's DAG-CBOR encoding of `obj`, or None where libipld is not installed or refuses it (a panic
    included: `_rust_panic`); the caller then encodes with cbor2."""
    if _dag_dumps is None:
        return None
    try:
        return _dag_dumps(obj)
    except Exception:
        return None
    except BaseException as e:
        if not _rust_panic(e):
            raise
        return None


def encode_record(record: list) -> bytes:
    """A document record `[docid, vis, tree, leaves]` (docs/store.md). One whose tree is a single revision
    with no parent is stored compact, `[docid, vis, rev, deleted, body, sig]`: it decodes without building
    two maps, which is ~10% of reading a document back."""
    docid, vis, tree, leaves = record
    if len(tree) == 1 and len(leaves) == 1:
        [(rev, parent)] = tree.items()
        leaf = leaves.get(rev)
        if parent is None and leaf is not None:
            return encode_new_record(docid, vis, rev, leaf[0], leaf[1], leaf[2])
    return _dumps(record)


def decode_record(data: bytes) -> list:
    """A document record as `[docid, vis, tree, leaves]`, whichever form it is stored in. (Hot loops that
    can use the compact form as it is check `len(rec) == 6` and decode with `load_record` themselves.)"""
    rec = loads(data)
    if len(rec) == 6:
        docid, vis, rev, deleted, body, sig = rec
        return [docid, vis, {rev: None}, {rev: [deleted, body, sig]}]
    return rec


load_record = loads  # the stored form as it is (compact or not; a compact record is DAG-CBOR too)


def encode_value(value: Any) -> bytes:
    """Small metadata values (checkpoints)."""
    return _dumps(value, canonical=True)


decode_value = _loads
