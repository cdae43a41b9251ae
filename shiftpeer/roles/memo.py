"""A bounded memory of values the hub reads from its store on every RPC: an account's name and a user's
group memberships. Without it a page query paid two store reads before its own (~30 us, ~10% of the hub's
work for one; docs/benchmarks.md). The one object that writes a key's value (``Accounts``, ``Groups``)
holds the memory and forgets the key when it writes it, before anything else can ask, so a member removed
from a group reads as removed on the very next request (tests/test_hub_memo.py)."""

from __future__ import annotations

from typing import Any


class Memo:
    """At most ``size`` values by key; the oldest remembered goes first when full."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a Memo holds at least one value")
        self._size = size
        self._values: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        """The value remembered for ``key``, or None."""
        return self._values.get(key)

    def put(self, key: Any, value: Any) -> None:
        if key not in self._values and len(self._values) >= self._size:
            del self._values[next(iter(self._values))]
        self._values[key] = value

    def forget(self, key: Any) -> None:
        self._values.pop(key, None)

    def __len__(self) -> int:
        return len(self._values)
