"""Author names in queries a node answers from its own feed (a full peer, or a node whose hub is away),
and the names of the authors a person is shown (comments, notices).

Documents name their author by account id; names live only in the hub's registry. The hub maps names
itself when it answers from ``shared``; a node running the query over ``user/feed`` must ask the hub
(the ``accounts`` RPC, as ``follow`` leaves the name to the hub), or it would match nothing and look
like an empty answer. The same RPC maps ids back to names for display. Answers are cached: a hub binds
a name to one key for good.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionClosed

from shiftpeer.identity import is_account_id
from shiftpeer.roles.names import FlowError, check_name

MAX_CACHED = 1024
MAX_PER_CALL = 100   # the hub's limit (roles/hub.py MAX_NAMES_PER_CALL)


class AuthorNames:
    """Turns the ``author`` filter's user names into account ids through the hub link."""

    def __init__(self, link: Any) -> None:
        self._link = link
        self._ids: dict[str, str] = {}
        self._names: dict[str, str] = {}   # account id -> name, the registered ones only

    @inlineCallbacks
    def account_ids(self, authors: list[str]):
        """The filter with every name replaced by its account id; a FlowError names what cannot be.

        A value shaped like an account id is taken as one, never looked up."""
        ids = {a: self._ids[a] for a in authors if a in self._ids}
        names = [a for a in dict.fromkeys(authors) if not is_account_id(a) and a not in ids]
        for name in names:
            check_name(name, "author (a user name or an account id)")
        if names:
            if not self._link.connected:
                raise FlowError(f"author {names[0]!r} is a user name, and names are looked up on the hub, which "
                                "is not connected: give the account id instead", "not_connected")
            found = (yield self._link.call("accounts", {"names": names}))["accounts"]
            missing = [n for n in names if not is_account_id(found.get(n))]
            if missing:
                raise FlowError(f"there is no user {missing[0]!r} on the hub", "no_user")
            ids.update((n, found[n]) for n in names)
            if len(self._ids) + len(names) > MAX_CACHED:
                self._ids.clear()
            self._ids.update((n, found[n]) for n in names)
        return [a if is_account_id(a) else ids[a] for a in authors]

    @inlineCallbacks
    def names_of(self, account_ids: list[str]):
        """{account id: name} for the ids the hub has names for; best effort, for display only: without
        the hub (or from a hub too old to answer ``ids``) the ids not cached are left out."""
        wanted = [a for a in dict.fromkeys(account_ids) if is_account_id(a) and a not in self._names]
        if wanted and self._link.connected:
            try:
                found = (yield self._link.call("accounts", {"ids": wanted[:MAX_PER_CALL]})).get("names") or {}
            except (FlowError, ConnectionClosed):   # an old hub, or the link just went: shown as ids instead
                found = {}
            known = {a: n for a, n in found.items() if a in wanted and isinstance(n, str)}
            if len(self._names) + len(known) > MAX_CACHED:
                self._names.clear()
            self._names.update(known)
        return {a: self._names[a] for a in account_ids if a in self._names}
