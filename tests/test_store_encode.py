"""A put's body is stored (and signed, and hashed into its revision) as canonical CBOR. Bodies without
floats are encoded by libipld's DAG-CBOR encoder, the rest by cbor2's canonical one: whatever the body, the
bytes are exactly cbor2's canonical encoding (codec.encode_body)."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftpeer.store import InvalidDocument, codec

_KEYS = st.text(max_size=12) | st.sampled_from(["a", "b", "aa", "é", "z", "\uffff", "\U00010000", "ab", ""])
_INTS = st.integers(-2**64, 2**64 - 1) | st.sampled_from([0, -1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1,
                                                           2**32, 2**63 - 1, 2**63, -2**63, -2**63 - 1,
                                                           2**64 - 1, -2**64, 2**64, -2**64 - 1, 10**30])
_SCALARS = st.none() | st.booleans() | _INTS | st.text(max_size=60)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def _bodies(scalars):
    return st.dictionaries(_KEYS, st.recursive(
        scalars, lambda kids: st.lists(kids, max_size=5) | st.dictionaries(_KEYS, kids, max_size=6),
        max_leaves=30), max_size=8)


@settings(max_examples=120, deadline=None)
@given(body=_bodies(_SCALARS))
def test_a_body_without_floats_is_encoded_canonically(body):
    assert codec.encode_body(body) == cbor2.dumps(body, canonical=True)


@settings(max_examples=80, deadline=None)
@given(body=_bodies(_SCALARS | _FLOATS))
def test_a_body_with_floats_is_encoded_canonically(body):
    assert codec.encode_body(body) == cbor2.dumps(body, canonical=True)


@pytest.mark.parametrize("value, head", [(1.5, b"\xf9"), (0.1, b"\xfb"), (100000.0, b"\xfa"), (-0.0, b"\xf9")])
def test_floats_keep_their_shortest_canonical_width(value, head):
    """DAG-CBOR would write every float in 64 bits (and -0.0 as 0.0); canonical CBOR writes the fewest
    bits that hold it, deep in a body too."""
    data = codec.encode_body({"n": 1, "deep": [[{"x": value}]]})
    assert data == cbor2.dumps({"n": 1, "deep": [[{"x": value}]]}, canonical=True)
    assert head + cbor2.dumps(value, canonical=True)[1:] in data


def test_libipld_encodes_the_bodies_without_floats(monkeypatch):
    """The fast path is taken (a silent fallback to cbor2 would pass the comparisons above), and only for
    bodies without a float."""
    assert codec._dag_dumps is not None, "libipld is a dependency: its encoder must be importable"
    calls = []
    real = codec._dag_dumps
    monkeypatch.setattr(codec, "_dag_dumps", lambda obj: calls.append(obj) or real(obj))
    codec.encode_body({"a": 1, "b": ["x", {"c": None}]})
    assert len(calls) == 1
    codec.encode_body({"a": 1, "b": ["x", {"c": 0.5}]})
    assert len(calls) == 1


def test_check_json_says_whether_a_body_holds_a_float():
    assert codec.check_json({"a": [1, "x", None, True, {"b": {}}]}) is False
    assert codec.check_json({"a": [1, {"b": [2.5]}]}) is True
    deep: list = [0.5]
    for _ in range(60):      # past the recursive walk's depth: the iterative walk says so too
        deep = [deep]
    assert codec.check_json({"d": deep}) is True


@pytest.mark.parametrize("body", [{"a": float("nan")}, {"a": {1: 2}}, {"a": b"bytes"}, {"a": (1, 2)}])
def test_bodies_that_are_not_json_are_still_refused(body):
    with pytest.raises(InvalidDocument):
        codec.encode_body(body)
