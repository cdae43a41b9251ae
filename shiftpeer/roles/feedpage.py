"""One page of a user node's feed: a page of the hub's ``shared`` merged with the user's own unpublished
shifts (only this node holds them), cut to ``limit`` rows, and the node's cursor for the next page.

Why its own cursor: the hub pages with its cursor, but adding the node's shifts can overflow the page.
The node's cursor says where the client stands in the merged list:

- Each hub page owns a time *bucket* of unpublished shifts, ``(low, high]``: ``high`` is the previous
  hub page's ``low`` (``+inf`` before the first), ``low`` the ``created`` of this hub page's last row
  (``-inf`` on the hub's last page; ``high`` again for an empty page that is not the last). The buckets
  tile the time axis, so each unpublished shift belongs to exactly one hub page.
- ``low`` itself is left to the next bucket because the hub's next page may hold rows created at that
  same time, some of them the hub's copy of a shift still in ``user/private`` (one sent to a group). The
  ids of this user's hub rows created at ``low`` go into the cursor (``ties``), so the next bucket leaves
  their private copies out; they accumulate while hub pages keep ending at the same time.
- The merged page is the hub page and its bucket, newest ``created`` first (hub rows before the node's on
  equal times: a stable sort of lists already in that order). The client gets ``skip:skip+limit`` of it;
  when more is left, the next cursor asks the same hub page again (same hub cursor, same page size) and
  skips what was shown, else it moves on to the hub's next page.

Given the same hub page and the same shifts the merged page is the same each time it is asked, so every
row appears once across pages, newest first, and no page holds more than ``limit``. A client may change
``limit`` between pages. Rows that change on the hub while a client pages can shift a page that is asked
again by a row (as with any offset): the price of asking the hub for no more than one page per page.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, replace
from typing import Callable

from shiftpeer.roles.names import FlowError
from shiftpeer.roles.queries import MAX_LIMIT
from shiftpeer.shifts import BAD_CURSOR
from shiftpeer.store.keys import created_seconds

#: Marks the node's cursors (the hub's and the feed's are base64 with no dot; older node cursors were
#: ``LOW|HUB``, refused now: a client restarts from the first page).
PREFIX = "f1."


def created(row: dict) -> float:
    """A row's ``created`` in the order the store indexes it (a NaN sorts past the infinity of its sign)."""
    t = created_seconds(row["body"].get("created"))
    return math.copysign(math.inf, t) if t != t else t


@dataclass(frozen=True)
class Position:
    """Where a client stands: the bucket's upper bound, rows of the merged page already shown, this
    user's hub rows created at ``high`` already shown, the hub cursor of the hub page being read (None:
    the first) and that page's size (None when nothing of it was shown yet: the client's limit)."""

    high: float = math.inf
    skip: int = 0
    ties: tuple[str, ...] = ()
    hub: str | None = None
    size: int | None = None

    def hub_limit(self, limit: int) -> int:
        """How many rows to ask the hub for: the size of a hub page already partly shown, else ``limit``."""
        return self.size or limit

    def encode(self) -> str:
        raw = json.dumps([repr(self.high), self.skip, list(self.ties), self.hub, self.size], separators=(",", ":"))
        return PREFIX + base64.urlsafe_b64encode(raw.encode()).decode()

    @classmethod
    def decode(cls, cursor: str | None) -> "Position":
        """The position a cursor this node handed out names; FlowError (bad_request) for any other string."""
        if cursor is None:
            return cls()
        try:
            if not cursor.startswith(PREFIX):
                raise ValueError(cursor)
            high, skip, ties, hub, size = json.loads(base64.urlsafe_b64decode(cursor[len(PREFIX):].encode()))
            high = float(high)
            fields_ok = (
                high == high and type(skip) is int and skip >= 0
                and isinstance(ties, list) and all(isinstance(i, str) for i in ties)
                and (hub is None or isinstance(hub, str))
                and (size is None if skip == 0 else type(size) is int and 1 <= size <= MAX_LIMIT)
            )
            if not fields_ok:
                raise ValueError(cursor)
        except (ValueError, TypeError, OverflowError, RecursionError):  # binascii.Error is a ValueError;
            # OverflowError: an integer ``high`` too large for a float
            raise FlowError(BAD_CURSOR, "bad_request") from None
        return cls(high, skip, tuple(ties), hub, size)


def bucket_low(hub_rows: list[dict], hub_next: str | None, high: float) -> float:
    """The lower (exclusive) bound of the bucket of unpublished shifts that goes with this hub page."""
    if hub_next is None:
        return -math.inf
    return created(hub_rows[-1]) if hub_rows else high


def in_bucket(pos: Position, hub_rows: list[dict], hub_next: str | None) -> Callable[[dict], bool]:
    """Does an unpublished row belong to this hub page's bucket (and is not the hub's copy shown)?"""
    low = bucket_low(hub_rows, hub_next, pos.high)
    shown = {r["id"] for r in hub_rows} | set(pos.ties)
    return lambda r: low < created(r) <= pos.high and r["id"] not in shown


def store_range(low: float, high: float, since: float | None, until: float | None) -> tuple[float | None, ...]:
    """``[since, until)`` bounds for a store scan that covers the bucket ``(low, high]`` within the query's
    range; a bound the store cannot take widens the scan (``in_bucket`` keeps the exact bucket)."""
    lo = low if since is None else max(since, low)
    hi = math.nextafter(high, math.inf) if until is None else min(until, math.nextafter(high, math.inf))
    return tuple(v if -1e300 < v < 1e300 else None for v in (lo, hi))


def drafts_needed(pos: Position, limit: int) -> int:
    """How many bucket rows ``merge_page`` needs (newest first) to cut the page and know if more is left."""
    return pos.skip + limit + 1


def merge_page(pos: Position, limit: int, hub_rows: list[dict], hub_next: str | None, drafts: list[dict],
               own: Callable[[dict], bool]) -> tuple[list[dict], Position | None]:
    """(the page's rows, the next position or None on the last page). ``hub_rows``: the verified rows of
    the hub page ``pos`` names, asked with ``pos.hub_limit(limit)``; ``drafts``: the unpublished rows
    newest first, holding at least the first ``drafts_needed`` of the bucket (or all of it); ``own``: is
    a hub row this user's (its id may also be in ``user/private``)?"""
    keep = in_bucket(pos, hub_rows, hub_next)
    merged = sorted(hub_rows + [r for r in drafts if keep(r)], key=created, reverse=True)
    end = pos.skip + limit
    page = merged[pos.skip:end]
    if end < len(merged):
        return page, replace(pos, skip=end, size=pos.hub_limit(limit))
    if hub_next is None:
        return page, None
    low = bucket_low(hub_rows, hub_next, pos.high)
    ties = (pos.ties if low == pos.high else ()) + tuple(r["id"] for r in hub_rows if created(r) == low and own(r))
    return page, Position(high=low, ties=tuple(dict.fromkeys(ties)), hub=hub_next)
