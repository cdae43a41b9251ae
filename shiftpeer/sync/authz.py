"""Authorisation: which databases an authenticated peer may read (pull) or write (push into).

The serving side asks its ``Policy`` for every database, in every direction, from the peer's
identity as proven by TLS. The base ``Policy`` denies everything; roles subclass it.
"""

from __future__ import annotations

from typing import Any


class Policy:
    """Default deny. Subclasses answer per peer, per database, per direction."""

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        """May ``peer_id`` pull ``dbname`` from this node?"""
        return False

    def may_write(self, peer_id: str, dbname: str, conn: Any) -> bool:
        """May ``peer_id`` push into ``dbname`` on this node?"""
        return False


DenyAll = Policy


class AllowAll(Policy):
    """Every peer may read and write every database (tests and closed test meshes only)."""

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return True

    def may_write(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return True


class StaticPolicy(Policy):
    """A fixed table: ``{peer_id or "*": {"read": [db, ...], "write": [db, ...]}}``."""

    def __init__(self, table: dict[str, dict[str, list[str]]]) -> None:
        self._table = table

    def _allowed(self, peer_id: str, dbname: str, how: str) -> bool:
        for key in (peer_id, "*"):
            if dbname in self._table.get(key, {}).get(how, ()):
                return True
        return False

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return self._allowed(peer_id, dbname, "read")

    def may_write(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return self._allowed(peer_id, dbname, "write")
