"""The one place stored values are CBOR-encoded and decoded (STYLE.md practice 7).

Bodies are encoded canonically (RFC 8949 core deterministic encoding, as cbor2 `canonical=True`) because
their bytes feed the revision hash: the same edit must hash the same on every node.
"""

from __future__ import annotations

import math
from typing import Any

import cbor2

from .errors import InvalidDocument

_dumps = cbor2.dumps
_loads = cbor2.loads


def check_json(body: Any) -> None:
    """Refuse anything that is not a JSON-compatible dict (str keys; str/int/float/bool/None/list/dict)."""
    if type(body) is not dict:
        raise InvalidDocument(f"document body must be a dict, not {type(body).__name__}")
    stack: list = [body]
    pop = stack.pop
    push = stack.append
    while stack:
        o = pop()
        t = type(o)
        if t is dict:
            for k, v in o.items():
                if type(k) is not str:
                    raise InvalidDocument(f"document keys must be strings, not {type(k).__name__}: {k!r}")
                tv = type(v)
                if tv is str or tv is int or tv is bool or v is None:
                    continue
                push(v)
        elif t is list:
            stack.extend(o)
        elif t is str or t is int or t is bool or o is None:
            pass
        elif t is float:
            if not math.isfinite(o):
                raise InvalidDocument(f"document numbers must be finite, not {o!r}")
        else:
            raise InvalidDocument(f"document values must be JSON-compatible, not {t.__name__}")


def encode_canonical(obj: Any) -> bytes:
    """Canonical CBOR, used for bodies and everything hashed."""
    return _dumps(obj, canonical=True)


def encode_body(body: dict) -> bytes:
    """Check that `body` is JSON-compatible and return its canonical CBOR."""
    check_json(body)
    return _dumps(body, canonical=True)


def decode_body(data: bytes) -> dict:
    return _loads(data)


def encode_record(record: list) -> bytes:
    """A document record: [seq, vis, tree, leaves] (see docs/store.md)."""
    return _dumps(record)


def decode_record(data: bytes) -> list:
    return _loads(data)


def encode_value(value: Any) -> bytes:
    """Small metadata values (checkpoints)."""
    return _dumps(value, canonical=True)


def decode_value(data: bytes) -> Any:
    return _loads(data)
