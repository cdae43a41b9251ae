"""Which database each authenticated peer may read from and write to: the hub's and the user node's Policy.

Default deny. ``user/*`` is never served by a hub under any configuration, whatever the name
looks like; a database name is matched whole against the shapes below, so path games
(``inbox/alice/../bob``, ``group/x/``, upper case) name nothing and are refused.

| database            | read                                         | write (push into)                  |
| ------------------- | -------------------------------------------- | ---------------------------------- |
| ``master``          | registered users, peers announcing full-peer or hub | registered users, relays     |
| ``group/<g>``       | members of level read or higher             | members of level publish or higher |
| ``inbox/<u>``       | the account registered as ``u``             | nobody (the ``deliver`` RPC)       |
| ``messages/<u>``    | the account registered as ``u``             | nobody (the hub writes)            |
| ``system/messages`` | registered users                             | nobody (the ``notice`` RPC)        |
| anything else       | nobody (``shared``, ``hub/*``, ``user/*``)   | nobody                             |
"""

from __future__ import annotations

from typing import Any

from shiftpeer.roles.groups import RANK
from shiftpeer.roles.names import split_db
from shiftpeer.sync.authz import Policy

FIREHOSE_ROLES = frozenset({"full-peer", "full_peer", "hub"})


def _peer_roles(conn: Any) -> set[str]:
    return set(getattr(conn, "peer_roles", None) or ())


class HubPolicy(Policy):
    """The hub's answer per peer, per database, per direction, from the registry and the groups."""

    def __init__(self, accounts: Any, groups: Any, *, relays: Any = ()) -> None:
        self._accounts = accounts
        self._groups = groups
        self.relays = set(relays)

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        """May ``peer_id`` pull ``dbname``? Checked at subscription and again on every change served."""
        if not isinstance(dbname, str) or dbname.startswith("user/"):
            return False
        user = self._accounts.name_of(peer_id)
        if dbname == "master":
            return user is not None or peer_id in self.relays or bool(_peer_roles(conn) & FIREHOSE_ROLES)
        if dbname == "system/messages":
            return user is not None
        kind, name = split_db(dbname)
        if user is None or name is None:
            return False
        if kind in ("inbox", "messages"):
            return name == user
        if kind == "group":
            return RANK.get(self._groups.level(name, user), -1) >= RANK["read"]
        return False

    def may_write(self, peer_id: str, dbname: str, conn: Any) -> bool:
        """May ``peer_id`` push into ``dbname``? The validator then checks every document."""
        if not isinstance(dbname, str) or dbname.startswith("user/"):
            return False
        user = self._accounts.name_of(peer_id)
        if dbname == "master":
            return user is not None or peer_id in self.relays
        kind, name = split_db(dbname)
        if kind == "group" and user is not None and name is not None:
            return RANK.get(self._groups.level(name, user), -1) >= RANK["publish"]
        return False


class UserPolicy(Policy):
    """A user node serves only ``user/public``, and only to its hub (which pulls it into ``master``)."""

    def __init__(self, hub_ids: Any = ()) -> None:
        self.hub_ids = set(hub_ids)

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return dbname == "user/public" and peer_id in self.hub_ids

    def may_write(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return False
