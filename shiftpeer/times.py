"""Time bounds of feed queries (``since``, ``until``): one parser for the CLI, the API and the hub RPC,
so every front end accepts and refuses the same values with the same words.

A bound is a shift's ``created`` time in seconds since the epoch. People may also write ISO 8601, but
only with a time zone (``2026-11-26T18:00Z``, ``...+01:00``): a zone-less time would mean UTC on the
node and local time to the person typing it. ``since`` is inclusive and ``until`` exclusive, so
consecutive ranges never overlap. Pure standard library: the CLI imports it and must start fast.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

#: 10000-01-01T00:00:00Z: later bounds are a mistake, not a query.
MAX_TIME = 253402300800.0
_NUMBER_RE = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,9})?$")
EXAMPLE = "e.g. 1795000000 or 2026-11-26T18:00:00Z"


class BadTime(ValueError):
    """A time bound that is not a number of seconds or an ISO 8601 time with a zone."""


def parse_time(text: str, what: str = "time") -> float:
    """Seconds since the epoch from what a person typed: a plain number or ISO 8601 with a zone."""
    text = text.strip()
    if _NUMBER_RE.match(text):
        return check_time(float(text), what)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadTime(f"{what} must be seconds since the epoch or ISO 8601 with a time zone, "
                      f"{EXAMPLE}; got {text[:40]!r}") from None
    if when.tzinfo is None:
        raise BadTime(f"{what} {text[:40]!r} has no time zone: add Z for UTC or an offset like +01:00")
    return check_time(when.timestamp(), what)


def check_time(value: Any, what: str = "time") -> float:
    """A bound as a finite number of seconds from 0 to MAX_TIME (what the hub accepts over RPC)."""
    # NaN fails both comparisons and infinities the upper one; a huge int compares without overflowing.
    if type(value) not in (int, float) or not 0 <= value <= MAX_TIME:
        raise BadTime(f"{what} must be a number of seconds since the epoch from 0 to {MAX_TIME:.0f}")
    return float(value)


def check_range(since: float | None, until: float | None) -> None:
    """Refuse a range that ends before it starts (the bounds were most likely swapped)."""
    if since is not None and until is not None and since > until:
        raise BadTime(f"since ({since:g}) is after until ({until:g}); the range [since, until) is empty")
