"""The local API of gossip bans: ``POST /v1/gossip/unban`` lifts bans (``shiftpeer gossip unban``).

Installed by the gossiping roles (full peer, a hub's federation); the banned peers themselves are listed in
``GET /v1/status`` under ``gossip.bans``.
"""

from __future__ import annotations

from typing import Any

from shiftpeer.api.app import PREFIX, ApiError, ApiRequest


def unban(gossip: Any, req: ApiRequest) -> dict:
    """``{"peers": [ID, ...]}`` or ``{"all": true}`` -> ``{"lifted": [...], "banned": N}``. An id that is not
    banned is an error (nothing changes), so a typo is not mistaken for a lifted ban."""
    body = req.json_object()
    unknown = set(body) - {"peers", "all"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))} (use peers or all)")
    everyone, peers = body.get("all", False), body.get("peers")
    if everyone is not True and everyone is not False:
        raise ApiError(400, "all must be true or false")
    if everyone == (peers is not None):
        raise ApiError(400, "give either peers (a list of peer ids) or all: true")
    if peers is not None:
        if not isinstance(peers, list) or not peers or not all(isinstance(p, str) and p for p in peers):
            raise ApiError(400, "peers must be a non-empty list of peer ids")
        missing = sorted(p for p in set(peers) if not gossip.scores.banned(p))
        if missing:
            raise ApiError(404, f"not banned: {', '.join(missing)} ('shiftpeer status' lists the bans)",
                           "not_found")
    lifted = gossip.unban(None if everyone else peers)
    return {"lifted": lifted, "banned": len(gossip.scores.bans)}


def install_gossip_routes(api: Any, role: Any) -> None:
    """The unban route of the role's Gossip (looked up per call: the role makes it when it starts)."""

    def handler(req: ApiRequest) -> dict:
        if role.gossip is None:
            raise ApiError(503, "gossip is not running yet: ask again once the node runs")
        return unban(role.gossip, req)

    api.add_route("POST", PREFIX + "/gossip/unban", handler)
