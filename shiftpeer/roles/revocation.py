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
    ended = 0
    for conn in list(getattr(factory, "connections", ())):
        if conn.peer_id not in peer_ids:
            continue
        mgr = conn.replications
        for rid, feeder in list(mgr.feeders.items()):
            if feeder.handle is not None or (dbname is not None and feeder.name != dbname):
                continue  # a feeder with a handle serves our own push; that is our decision, not theirs
            if not policy.may_read(conn.peer_id, feeder.name, conn):
                conn.send("error", code="forbidden", msg=f"access to {feeder.name!r} was revoked",
                          db=feeder.name, rid=rid)
                feeder.end()
                ended += 1
        for puller in list(mgr.pullers.values()):
            if puller.push is None or (dbname is not None and puller.local_db != dbname):
                continue  # only pullers the peer asked for (its pushes into us)
            if not policy.may_write(conn.peer_id, puller.local_db, conn):
                puller.stop()
                ended += 1
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
