"""What ``status`` shows of a node's gossip: each neighbour with its address, direction, state and score.

A neighbour is a configured ``--peer`` (static), a candidate the ``NeighbourSet`` discovered and dialled,
or any peer we pull ``master`` from (``Gossip.pulls``, incoming connections included). All are bounded
(``--peer``, ``high``, ``max_pulls``), so the report is too; candidates only known (not dialled) are
counted, not listed; banned peers are listed apart (``bans``: why and since when).
"""

from __future__ import annotations

from typing import Any


#: The gossip counters status shows (``Gossip._count``; also ``shiftpeer_gossip_events_total{event}``).
EVENTS = ("refused", "refused_unregistered", "author_conflict", "bad_revision", "banned", "announce_unproven",
          "announce_undialable", "announce_unlisted")


def _peer_address(conn: Any) -> str | None:
    """HOST:PORT of the other end of a connection (for an incoming one, its ephemeral port)."""
    try:
        peer = conn.transport.getPeer()
    except AttributeError:
        return None
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    if host is None:
        return None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _state(gossip: Any, peer_id: Any, conn: Any) -> str:
    if gossip.scores.banned(peer_id):
        return "banned"
    if conn is None:
        return "connecting"          # its service retries with backoff (a discovered one is replaced)
    return "live" if peer_id in gossip.pulls else "connected"


def neighbours_report(gossip: Any, neighbours: Any, static: dict[str, Any], dialled: dict[int, str],
                      now: float) -> dict:
    """``{"neighbours": [...], "live", "low", "high", "candidates", "banned"}`` for ``status``.

    ``static`` maps the configured ``--peer`` addresses to their peer services; ``neighbours`` is the full
    peer's ``NeighbourSet`` (None on a hub, which dials only its ``--peer``s); ``dialled`` maps
    id(connection) -> the HOST:PORT this node dialled, for the rest (neighbours that dialled us are "in").
    """
    scores = gossip.scores
    out: list[dict] = []
    listed: set[str] = set()

    def add(peer_id: Any, address: Any, direction: str, state: str, is_static: bool, failures: int,
            down_for: float | None) -> None:
        out.append({"peer_id": peer_id, "address": address, "direction": direction, "state": state,
                    "static": is_static, "strikes": scores.score(peer_id) if peer_id else 0,
                    "failures": failures, "down_for": down_for})
        if peer_id is not None:
            listed.add(peer_id)

    for address, svc in sorted(static.items()):
        conn = getattr(svc, "connection", None)
        peer_id = getattr(conn, "peer_id", None)
        add(peer_id, address, "out", _state(gossip, peer_id, conn), True, 0, None)
    for c in (neighbours.dialled() if neighbours is not None else []):
        if c.address in static:
            continue
        conn = getattr(c.service, "connection", None)
        peer_id = getattr(conn, "peer_id", None) or c.peer_id
        down_for = None if conn is not None or c.down_since is None else max(0.0, now - c.down_since)
        add(peer_id, c.address, "out", _state(gossip, peer_id, conn), c.static, c.failures, down_for)
    for peer_id, pull in sorted(gossip.pulls.items()):
        if peer_id in listed:
            continue
        conn = pull.mgr.conn
        address = dialled.get(id(conn))
        direction = "out" if address is not None else "in"
        add(peer_id, address or gossip.announced.get(peer_id) or _peer_address(conn), direction,
            _state(gossip, peer_id, conn), False, 0, None)
    return {
        "neighbours": out,
        "live": gossip.live(),
        "low": getattr(neighbours, "low", None),
        "high": getattr(neighbours, "high", None),
        "candidates": len(neighbours.candidates) if neighbours is not None else None,
        "banned": len(scores.bans),
        "bans": scores.listing(),         # every banned peer: peer_id, why, since (bounded by the peers met)
        "events": {k: gossip.counters.get(k, 0) for k in EVENTS},
    }
