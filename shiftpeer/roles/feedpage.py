"""One page of a user node's feed: a page of the hub's ``shared`` merged with the user's own unpublished
shifts (only this node holds them), cut to ``limit`` rows, and the node's cursor for the next page.

Why its own cursor: the hub pages with its cursor, but adding the node's shifts can overflow the page.
The node's cursor says where the client stands in the merged list:

- Each hub page owns a time *bucket* of unpublished shifts, ``(low, at]``: ``at`` is where the client
  stands (below), ``low`` the ``created`` of this hub page's last row (``-inf`` on the hub's last page;
  ``at`` again for an empty page that is not the last). The buckets tile the time axis, so each
  unpublished shift belongs to exactly one hub page.
- ``low`` itself is left to the next bucket because the hub's next page may hold rows created at that
  same time, some of them the hub's copy of a shift still in ``user/private`` (one sent to a group).
- The merged page is the hub page and its bucket, newest ``created`` first (hub rows before the node's on
  equal times: a stable sort of lists already in that order), less the rows already shown. The client
  gets its first ``limit`` rows; when more is left, the next cursor asks the same hub page again (same
  hub cursor, same page size), else it moves on to the hub's next page.
- What was shown is a key, not a count: ``at``, the ``created`` of the last row shown, and the ids of the
  rows shown created at ``at`` that can come again. A row counts as shown when it was created after
  ``at``, or at ``at`` with its id among those. So a hub page asked again after its rows changed (a shift
  deleted, or published, in its range) skips exactly the rows shown, as the hub's own cursor (a
  ``created``, ``seq`` position) does: a row published since, newer than where the client stands, is not
  shown on later pages (a first page shows it), and no row is shown twice or skipped unseen.
- Only two kinds of row shown at ``at`` can come again, so only their ids are kept (the cursor stays
  small however many rows share one ``created``: a hostile author may sign thousands with one):
  ``seen``, the others' rows of the hub page being asked again (at most that page: its size is at most
  ``MAX_LIMIT``), dropped when the client moves to the hub's next page, whose cursor is past every row
  of the page read (the hub orders ties by its ``seq``, which only grows), except a row shown from an
  earlier read of it that is not on it now (a shift published into its range since pushed it further
  down, or it was deleted): those are as many as such changes, not as the pages read; and ``mine``, the
  user's own rows shown at ``at`` from any page, since ``user/private`` may hold them too (an
  unpublished shift, or the private copy of one sent to a group) and a later bucket would show them
  again. Those are only as many as the user's own nodes made at that very instant. Ids cannot serve as the tie order
  instead (a position ``(created, last id)``): the hub orders equal ``created`` by its ``shared`` seq and
  the node's ``user/private`` by its own, neither by id.

Given the same hub page and the same shifts the merged page is the same each time it is asked, so every
row appears once across pages, newest first, and no page holds more than ``limit``. A client may change
``limit`` between pages.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Callable

from shiftpeer.roles.names import FlowError
from shiftpeer.roles.queries import MAX_LIMIT
from shiftpeer.shifts import BAD_CURSOR
from shiftpeer.store.keys import created_seconds

#: Marks the node's cursors (the hub's and the feed's are base64 with no dot). ``f2.`` cursors (every id
#: shown at ``at`` in one list, which grew without bound while rows shared one ``created``) still page on;
#: older ones, ``f1.`` (which counted the rows shown) and ``LOW|HUB`` before them, are refused: a client
#: restarts from the first page.
PREFIX = "f3."
OLD_PREFIX = "f2."


def created(row: dict) -> float:
    """A row's ``created`` in the order the store indexes it (a NaN sorts past the infinity of its sign)."""
    t = created_seconds(row["body"].get("created"))
    return math.copysign(math.inf, t) if t != t else t


@dataclass(frozen=True)
class Position:
    """Where a client stands: the ``created`` of the last row shown (``+inf``: none yet), the ids of the others'
    rows of hub page ``hub`` shown created at that time (``seen``), the hub cursor of the hub page being read
    (None: the first), that page's size (None when nothing of it was shown yet: the client's limit) and the
    ids of the user's own rows shown created at ``at`` (``mine``)."""

    at: float = math.inf
    seen: tuple[str, ...] = ()
    hub: str | None = None
    size: int | None = None
    mine: tuple[str, ...] = ()

    def hub_limit(self, limit: int) -> int:
        """How many rows to ask the hub for: the size of a hub page already partly shown, else ``limit``."""
        return self.size or limit

    def unseen(self, row: dict) -> bool:
        """Was the row not shown yet (created before ``at``, or at ``at`` and its id not kept as shown)?"""
        t = created(row)
        return t < self.at or (t == self.at and row["id"] not in self.seen and row["id"] not in self.mine)

    def after(self, shown: list[dict], me: str) -> "Position":
        """The position once ``shown`` (newest first; ``me`` the user's account id) is shown too, reading the
        same hub page again."""
        if not shown:
            return self
        at = created(shown[-1])
        kept = (self.seen, self.mine) if at == self.at else ((), ())
        last = [r for r in shown if created(r) == at]
        seen = kept[0] + tuple(r["id"] for r in last if r["body"].get("author") != me)
        mine = kept[1] + tuple(r["id"] for r in last if r["body"].get("author") == me)
        return Position(at, tuple(dict.fromkeys(seen)), self.hub, self.size, tuple(dict.fromkeys(mine)))

    def again(self, size: int) -> "Position":
        """The same position asking its hub page again, with ``size`` rows."""
        return Position(self.at, self.seen, self.hub, size, self.mine)

    def next_page(self, hub: str, read: set[str]) -> "Position":
        """The same position reading the hub's next page, ``hub``, once the page just read (its ids ``read``) is
        all shown: the hub's cursor is past those rows, so of the others' rows kept as shown only those not on
        it stay (a shift published into the page's range since an earlier read pushed them further down)."""
        return Position(self.at, tuple(i for i in self.seen if i not in read), hub, None, self.mine)

    def encode(self) -> str:
        raw = json.dumps([repr(self.at), list(self.seen), self.hub, self.size, list(self.mine)],
                         separators=(",", ":"))
        return PREFIX + base64.urlsafe_b64encode(raw.encode()).decode()

    @classmethod
    def decode(cls, cursor: str | None) -> "Position":
        """The position a cursor this node handed out names; FlowError (bad_request) for any other string."""
        if cursor is None:
            return cls()
        try:
            old = cursor.startswith(OLD_PREFIX)
            if not (old or cursor.startswith(PREFIX)):
                raise ValueError(cursor)
            fields = json.loads(base64.urlsafe_b64decode(cursor[len(OLD_PREFIX if old else PREFIX):].encode()))
            if old:   # its ids, of any author, are all kept until the client moves past ``at``
                at, mine, hub, size = fields
                seen = []
            else:
                at, seen, hub, size, mine = fields
            at = float(at)
            fields_ok = (
                at == at and all(isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in (seen, mine))
                and (hub is None or isinstance(hub, str))
                and (size is None or type(size) is int and 1 <= size <= MAX_LIMIT)
            )
            if not fields_ok:
                raise ValueError(cursor)
        except (ValueError, TypeError, OverflowError, RecursionError):  # binascii.Error is a ValueError;
            # OverflowError: an integer ``at`` too large for a float
            raise FlowError(BAD_CURSOR, "bad_request") from None
        return cls(at, tuple(seen), hub, size, tuple(mine))


def bucket_low(hub_rows: list[dict], hub_next: str | None, at: float) -> float:
    """The lower (exclusive) bound of the bucket of unpublished shifts that goes with this hub page."""
    if hub_next is None:
        return -math.inf
    return created(hub_rows[-1]) if hub_rows else at


def in_bucket(pos: Position, hub_rows: list[dict], hub_next: str | None) -> Callable[[dict], bool]:
    """Does an unpublished row belong to this hub page's bucket, not shown yet (nor the hub's copy here)?"""
    low = bucket_low(hub_rows, hub_next, pos.at)
    on_hub = {r["id"] for r in hub_rows}
    return lambda r: low < created(r) and pos.unseen(r) and r["id"] not in on_hub


def store_range(low: float, at: float, since: float | None, until: float | None) -> tuple[float | None, ...]:
    """``[since, until)`` bounds for a store scan that covers the bucket ``(low, at]`` within the query's
    range; a bound the store cannot take widens the scan (``in_bucket`` keeps the exact bucket)."""
    lo = low if since is None else max(since, low)
    hi = math.nextafter(at, math.inf) if until is None else min(until, math.nextafter(at, math.inf))
    return tuple(v if -1e300 < v < 1e300 else None for v in (lo, hi))


def drafts_needed(limit: int) -> int:
    """How many bucket rows ``merge_page`` needs (newest first) to cut the page and know if more is left."""
    return limit + 1


def merge_page(pos: Position, limit: int, hub_rows: list[dict], hub_next: str | None, drafts: list[dict],
               me: str) -> tuple[list[dict], Position | None]:
    """(the page's rows, the next position or None on the last page). ``hub_rows``: the verified rows of
    the hub page ``pos`` names, asked with ``pos.hub_limit(limit)``; ``drafts``: the unpublished rows
    newest first, holding at least the first ``drafts_needed`` that ``in_bucket`` keeps (or all of them);
    ``me``: the user's account id (the author of the drafts)."""
    keep = in_bucket(pos, hub_rows, hub_next)
    merged = sorted([r for r in hub_rows if pos.unseen(r)] + [r for r in drafts if keep(r)], key=created,
                    reverse=True)
    page = merged[:limit]
    if limit < len(merged):
        return page, pos.after(page, me).again(pos.hub_limit(limit))
    if hub_next is None:
        return page, None
    return page, pos.after(page, me).next_page(hub_next, {r["id"] for r in hub_rows})
