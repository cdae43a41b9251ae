"""Revoking access on live connections: the serving side re-checks its Policy when membership changes.

The sync layer asks the Policy when a replication starts. A live feed could then go on serving a
group to someone who left it, so whenever a user's membership changes the hub re-asks the Policy
for every replication that user's connections have open and ends those it no longer allows: a
feeder (they pull from us) with an error frame naming its replication, a puller (they push to us)
with a stop. From that moment nothing more of that database reaches them.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

log = Logger()


def recheck(factory: Any, policy: Any, peer_ids: set[str], dbname: str | None = None) -> int:
    """End the replications of ``peer_ids`` (on ``dbname``, or all) that ``policy`` no longer allows."""
    ended = sum(conn.replications.recheck(policy, dbname)
                for conn in list(getattr(factory, "connections", ())) if conn.peer_id in peer_ids)
    if ended:
        log.info("revoked {count} live replications of {db} for {peers}", count=ended, db=dbname or "*",
                 peers=",".join(sorted(peer_ids)))
    return ended


def membership_listener(factory_of: Callable[[], Any], policy: Any, accounts: Any) -> Callable[[str, str], None]:
    """A ``Groups`` listener that re-checks the live replications of the user whose level changed."""

    def changed(group: str, user: str) -> None:
        factory = factory_of()
        account = accounts.id_of(user)
        if factory is not None and account is not None:
            recheck(factory, policy, {account}, "group/" + group)

    return changed
