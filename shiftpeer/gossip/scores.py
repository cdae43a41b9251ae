"""Per-neighbour scores: strikes for slow or refused deliveries, bans for forged or malformed data.

A neighbour whose connection we closed for a protocol violation that only a broken or hostile node
commits (forged signatures, invalid or unrequested documents, malformed frames) is banned: it is
disconnected, never dialled again and refused when it dials us. Lesser faults (a body not delivered
within the lazy timeout, a signed document our rules refuse) are strikes: slow ones only make the
peer less preferred when the neighbour set picks candidates (a loaded machine is slow, and dropping
links for it would cut the mesh apart), ``STRIKES_TO_BAN`` refused documents ban.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from twisted.logger import Logger

log = Logger()

#: Close codes (our side) that ban the peer.
BAN_CODES = frozenset({"forged", "invalid", "unrequested", "bad_message", "bad_cbor", "unknown_type",
                       "unexpected", "frame_too_large", "duplicate", "version"})
STRIKES_TO_BAN = 3


class PeerScores:
    """Strikes and bans by peer id; bans survive restarts when ``path`` is given (a JSON file)."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path
        self.strikes: dict[str, dict[str, int]] = {}
        self.bans: dict[str, str] = {}
        if path and os.path.exists(path):
            try:
                with open(path) as f:
                    self.bans = {str(k): str(v) for k, v in json.load(f).items()}
            except (OSError, ValueError, AttributeError) as e:
                log.warn("ignoring unreadable ban list {path}: {err}", path=path, err=e)

    def banned(self, peer_id: Optional[str]) -> bool:
        return peer_id is not None and peer_id in self.bans

    def ban(self, peer_id: str, why: str) -> None:
        """Never prefer ``peer_id`` again."""
        if peer_id in self.bans:
            return
        self.bans[peer_id] = why
        log.warn("banned gossip neighbour {peer}: {why}", peer=peer_id, why=why)
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.bans, f)
            os.replace(tmp, self.path)

    def strike(self, peer_id: str, why: str) -> str:
        """Count a fault; returns "ban" or "" (what the caller should do). "delivered" is the opposite:
        the slow count starts again."""
        s = self.strikes.setdefault(peer_id, {})
        if why == "delivered":
            s.pop("slow", None)
            return ""
        s[why] = s.get(why, 0) + 1
        if why == "refused" and s[why] >= STRIKES_TO_BAN:
            self.ban(peer_id, f"{s[why]} refused documents")
            return "ban"
        return ""

    def score(self, peer_id: str) -> int:
        """Lower is better: total strikes (banned peers are excluded elsewhere)."""
        return sum(self.strikes.get(peer_id, {}).values())

    def closed(self, conn: Any) -> bool:
        """Judge a closed connection by the error we closed it with; True when that banned the peer."""
        reason = getattr(conn, "close_reason", None) or {}
        code = reason.get("code")
        if code in BAN_CODES and conn.peer_id:
            self.ban(conn.peer_id, f"{code}: {reason.get('msg', '')}"[:200])
            return True
        return False
