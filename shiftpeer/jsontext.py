"""JSON text from people and clients, parsed strictly: the CLI's --content and the API's request bodies.

Python's json accepts ``NaN``, ``Infinity`` and numbers too large for a float (``1e999`` becomes
infinity), none of which is JSON and none of which a shift may hold (the store refuses them when it
writes, which would surface as an internal error). Refusing them here makes them bad input, answered
like any other malformed JSON. Pure standard library: the CLI imports it and must start fast.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large (numbers must be finite)")
    return value


def loads(text: str | bytes) -> Any:
    """``json.loads`` that raises ValueError for NaN, Infinity, -Infinity and overflowing numbers, and for
    nesting deeper than the parser recurses (json raises RecursionError: a traceback in the CLI, a 500 in
    the API)."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None
