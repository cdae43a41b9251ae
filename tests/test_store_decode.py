"""The store decodes stored bodies with libipld's DAG-CBOR decoder where it can, and cbor2 where it cannot:
whatever the bytes, a reader gets exactly what cbor2 would give (same values, same types, same key order)."""

from __future__ import annotations

import math
import os
import tempfile

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftpeer.store import Store, codec

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**64, 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=60),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=25,
)
_BODY = st.dictionaries(st.text(max_size=12), _JSON, max_size=8)


def _same(a, b) -> bool:
    """Equal, of the same types all the way down, with dict keys in the same order (-0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


@settings(max_examples=150, deadline=None)
@given(body=_BODY)
def test_canonical_and_plain_bodies_decode_as_cbor2_does(body):
    """A body stored canonically (what a put writes: the fast decoder takes it unless a float fits 16 bits)
    and one stored in its insertion order (keys out of DAG order: cbor2 decodes it) both come back as
    cbor2 decodes them."""
    for data in (codec.encode_body(body), codec.plain_encoder()(body)):
        assert _same(codec.decode_body(data), cbor2.loads(data))


def test_the_fast_decoder_takes_a_canonical_shift():
    """The speed-up is real: a shift's canonical bytes decode without cbor2 (the fallback is never called)."""
    body = codec.in_canonical_order({"type": "shift", "href": "https://example.org/a", "created": 1700000000.25,
                                     "content": {"text": "hello", "position": {"x": 3, "y": 4}}})
    data = codec.encode_body(body)
    assert codec.BODY_DECODER == "libipld", "libipld is a dependency (setup.cfg); it must be installed"
    assert _same(codec._dag_loads(data), cbor2.loads(data))


@pytest.mark.parametrize("data", [
    cbor2.dumps({"b": 1, "a": 2}),                    # keys out of DAG order
    cbor2.dumps({"a": 1.5}, canonical=True),           # a half-width float
    cbor2.dumps({"a": [1, 2]}) + b"",                  # plain and in order: either decoder
    cbor2.dumps({1: "integer key"}),                   # not JSON, but what cbor2 reads it reads here too
    cbor2.dumps(2**70),                                # a bignum tag
    bytes.fromhex("a2616101616102"),                   # a duplicated key: cbor2 keeps the last
])
def test_bytes_the_fast_decoder_refuses_go_to_cbor2(data):
    assert _same(codec.decode_body(data), cbor2.loads(data))


@pytest.mark.parametrize("data", [b"", bytes.fromhex("a16161"), bytes.fromhex("62c328"), b"\x81" * 100_000])
def test_broken_bytes_raise_what_cbor2_raises(data):
    """Truncated, bad UTF-8, nested past the recursion limit: the error is cbor2's, as before."""
    with pytest.raises(Exception) as fast:
        codec.decode_body(data)
    with pytest.raises(Exception) as slow:
        cbor2.loads(data)
    assert type(fast.value) is type(slow.value)


def test_a_store_reads_back_plain_and_canonical_bodies_alike():
    """Through the store's read paths: a replicated body in insertion order and a put's canonical one."""
    from shiftpeer.store.revs import compute_rev

    with tempfile.TemporaryDirectory() as d:
        store = Store(os.path.join(d, "s"))
        db = store.create_database("shared")
        plain = {"zeta": 1, "alpha": {"y": 0.5, "x": [1.0, "two"]}, "href": "https://e.org/p"}
        rev = compute_rev(None, False, plain)
        db.bulk_replicated([{"id": "plain", "rev": rev, "deleted": False, "body": plain, "history": [rev]}])
        db.put("canon", {"zeta": 2, "alpha": {"y": 1e300}, "href": "https://e.org/p"})
        got = {d.id: d.body for d in db.docs_since(0)}
        assert _same(got["plain"], plain)
        assert _same(got["canon"], codec.in_canonical_order({"zeta": 2, "alpha": {"y": 1e300},
                                                             "href": "https://e.org/p"}))
        assert _same(db.get("plain").body, plain)
        store.close()


@settings(max_examples=150, deadline=None)
@given(body=_BODY)
def test_the_fast_payload_encoding_decodes_to_the_same_values_in_canonical_order(body):
    """codec.dumps_sorted (the payload a received shift's signature is first checked over): cbor2 decodes it
    to the same values; its keys are in canonical order, so without floats it is the canonical encoding
    itself (what the author signed), and with any it differs only in the floats' widths."""
    data = codec.dumps_sorted(body)
    canonical = cbor2.dumps(body, canonical=True)
    # values, types and keys' order; the sign of a zero float is lost (libipld; the next test says why it may)
    assert _same(_unsigned_zeros(cbor2.loads(data)), _unsigned_zeros(cbor2.loads(canonical)))
    if not _has_float(body):
        assert data == canonical


def _unsigned_zeros(v):
    if isinstance(v, dict):
        return {k: _unsigned_zeros(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unsigned_zeros(x) for x in v]
    return 0.0 if type(v) is float and v == 0 else v


def test_a_zeros_sign_is_the_one_value_the_fast_payload_encoding_loses():
    """libipld 3.5 writes -0.0 as 0.0 (64 bits). Such a payload is never a canonical one (canonical CBOR
    writes a zero in 16 bits), so no honest signature is over it: tests/test_signing_zero.py shows the
    canonical retry deciding, and the signature memory keyed by what verified."""
    data = codec.dumps_sorted({"v": -0.0})
    assert data == codec.dumps_sorted({"v": 0.0}) == cbor2.dumps({"v": 0.0})
    assert data != cbor2.dumps({"v": -0.0}, canonical=True) and data != cbor2.dumps({"v": 0.0}, canonical=True)


def _has_float(v) -> bool:
    if isinstance(v, dict):
        return any(map(_has_float, v.values()))
    if isinstance(v, list):
        return any(map(_has_float, v))
    return type(v) is float


@pytest.mark.parametrize("value", [{"big": 2**70}, {1: "integer key"}, {"s": "\ud800"}, {"nan": float("nan")}])
def test_what_the_fast_encoder_refuses_gets_cbor2s_plain_encoding_or_error(value):
    try:
        expected = cbor2.dumps(value)
    except Exception as e:
        with pytest.raises(type(e)):
            codec.dumps_sorted(value)
        return
    assert codec.dumps_sorted(value) == expected


def test_a_panic_in_libipld_is_decided_by_cbor2(monkeypatch):
    """pyo3 surfaces a Rust panic as PanicException, a BaseException: a libipld that panics on some input
    (3.0 did on a non-text key) must not break a read, a frame or a payload; cbor2 decides instead. An
    interrupt is still an interrupt."""
    PanicException = type("PanicException", (BaseException,), {})

    def panics(_):
        raise PanicException("called `Result::unwrap()` on an `Err` value")

    monkeypatch.setattr(codec, "_dag_loads", panics)
    monkeypatch.setattr(codec, "_dag_dumps", panics)
    data = cbor2.dumps({"a": [1, 2]})
    assert codec.loads(data) == {"a": [1, 2]}
    assert codec.dumps_sorted({"b": 1, "a": 2}) == cbor2.dumps({"b": 1, "a": 2})

    def interrupted(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(codec, "_dag_loads", interrupted)
    with pytest.raises(KeyboardInterrupt):
        codec.loads(data)


def _nested(levels: int) -> dict:
    """A body of `levels` maps and lists, itself included."""
    inner: object = 1
    for i in range(levels - 1):
        inner = [inner] if i % 2 else {"k": inner}
    return {"a": inner}


def test_a_body_may_nest_128_levels_and_no_more(tmp_path):
    """Every body stored must decode on any node (cbor2 takes 400 levels, a docs frame adds 3; libipld,
    which takes ~1,000, is not on every node): put and replicated writes refuse deeper ones, write nothing."""
    from shiftpeer.store.errors import InvalidDocument
    from shiftpeer.store.revs import rev_from_bytes

    codec.check_json(_nested(codec.MAX_DEPTH))
    with pytest.raises(InvalidDocument, match="at most 128 levels"):
        codec.check_json(_nested(codec.MAX_DEPTH + 1))
    store = Store(str(tmp_path / "s"))
    db = store.create_database("shared")
    db.put("ok", _nested(codec.MAX_DEPTH))
    deep = _nested(450)
    with pytest.raises(InvalidDocument):
        db.put("deep", deep)
    rev = rev_from_bytes(None, False, cbor2.dumps(deep, canonical=True))
    with pytest.raises(InvalidDocument):
        db.bulk_replicated([{"id": "deep", "rev": rev, "deleted": False, "body": deep, "history": [rev]}])
    assert db.get("deep") is None and [d.id for d in db.docs_since(0)] == ["ok"]
    store.close()


def test_nesting_cbor2_refuses_decodes_here_and_the_store_refuses_it():
    """The one input class besides a tag-42 link where codec.loads and cbor2 differ: 401+ levels (cbor2
    refuses them; libipld takes up to its recursion limit). A frame carrying such a body decodes, and the
    store refuses the body before anything is written (the puller then closes the connection as for any
    invalid document, as a bad_cbor frame closed it before)."""
    data = cbor2.dumps(_nested(450))
    with pytest.raises(cbor2.CBORDecodeError):
        cbor2.loads(data)
    with pytest.raises(codec.InvalidDocument):
        codec.check_json(codec.loads(data))
