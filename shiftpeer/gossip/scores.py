"""Per-neighbour scores: strikes for slow or refused deliveries, bans for forged or malformed data.

A neighbour whose connection we closed for a protocol violation that only a broken or hostile node
commits (forged signatures, invalid or unrequested documents, malformed frames) is banned: it is
disconnected, never dialled again and refused when it dials us. Lesser faults (a body not delivered
within the lazy timeout, a signed document that breaks a rule any node can check without local state)
are strikes: slow ones only make the peer less preferred when the neighbour set picks candidates (a
loaded machine is slow, and dropping links for it would cut the mesh apart), ``STRIKES_TO_BAN`` refused
documents ban. A refusal that depends on what this node holds (``Refusal.kind == "conflict"``) is never
a strike: an honest relay sends it too when our copy is the odd one (a squatted shift id).

Protected peers (the node's own hub) are never struck or banned. Bans are lifted by ``unban``
(``shiftpeer gossip unban``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Optional

from twisted.logger import Logger

from shiftpeer.sync.refusedrevs import DEFAULT_CODE, Reason

log = Logger()

#: Close codes (our side) that ban the peer.
BAN_CODES = frozenset({"forged", "invalid", "unrequested", "bad_message", "bad_cbor", "unknown_type",
                       "unexpected", "frame_too_large", "duplicate", "version"})
STRIKES_TO_BAN = 3


class Refusal(Reason):
    """Why a gossiped document is refused, with its kind: ``"rule"`` when any relay could have checked it
    itself with no local state (an honest relay never sends it: a strike), ``"conflict"`` when it depends
    on what this node holds (not held against the relay). ``details`` name what conflicted, for the log;
    ``code`` (a ``Reason``'s) is what the neighbour that sent the document is told."""

    kind: str
    details: dict

    def __new__(cls, why: str, kind: str = "rule", *, code: str = DEFAULT_CODE, **details: Any) -> "Refusal":
        r = super().__new__(cls, code, why)
        r.kind = kind
        r.details = details
        return r


def strikes_relay(why: str) -> bool:
    """Does this refusal count against the neighbour that relayed the document? Only a ``Refusal`` of
    kind "rule": a plain reason may depend on local state, and striking honest relays cuts the mesh."""
    return isinstance(why, Refusal) and why.kind == "rule"


class PeerScores:
    """Strikes and bans by peer id; bans survive restarts when ``path`` is given (a JSON file of
    ``{peer id: {"why", "since"}}``; the older ``{peer id: why}`` is read too)."""

    def __init__(self, path: Optional[str] = None, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.now = now
        self.strikes: dict[str, dict[str, int]] = {}
        self.bans: dict[str, str] = {}
        self.since: dict[str, float | None] = {}
        self.protected: set[str] = set()     # never struck or banned: the node's own hub
        if path and os.path.exists(path):
            try:
                with open(path) as f:
                    for k, v in json.load(f).items():
                        entry = v if isinstance(v, dict) else {"why": v, "since": None}
                        self.bans[str(k)] = str(entry.get("why", ""))
                        since = entry.get("since")
                        self.since[str(k)] = float(since) if isinstance(since, (int, float)) else None
            except (OSError, ValueError, AttributeError, TypeError) as e:
                log.warn("ignoring unreadable ban list {path}: {err}", path=path, err=e)

    def banned(self, peer_id: Optional[str]) -> bool:
        return peer_id is not None and peer_id in self.bans

    def protect(self, peer_id: str) -> bool:
        """Never strike or ban ``peer_id`` (the node's own hub); lifts a ban it has. True if one was lifted."""
        self.protected.add(peer_id)
        self.strikes.pop(peer_id, None)
        if peer_id in self.bans:
            log.warn("lifting the gossip ban of our own hub {peer} ({why}): a hub link is never banned",
                     peer=peer_id, why=self.bans[peer_id])
            self.unban([peer_id])
            return True
        return False

    def ban(self, peer_id: str, why: str) -> None:
        """Never prefer ``peer_id`` again (a protected peer is only logged)."""
        if peer_id in self.bans:
            return
        if peer_id in self.protected:
            log.warn("not banning our own hub {peer}: {why}", peer=peer_id, why=why)
            return
        self.bans[peer_id] = why
        self.since[peer_id] = self.now()
        log.warn("banned gossip neighbour {peer}: {why}", peer=peer_id, why=why)
        self._save()

    def unban(self, peer_ids: Optional[list[str]] = None) -> list[str]:
        """Lift the bans of ``peer_ids`` (None: all) and their strikes; returns the ids that were banned."""
        lifted = sorted(self.bans) if peer_ids is None else [p for p in peer_ids if p in self.bans]
        for p in lifted:
            del self.bans[p]
            self.since.pop(p, None)
            self.strikes.pop(p, None)
            log.info("lifted the gossip ban of {peer}", peer=p)
        if lifted:
            self._save()
        return lifted

    def listing(self) -> list[dict]:
        """The banned peers, oldest ban first: ``{"peer_id", "why", "since"}`` (since: epoch seconds or None)."""
        rows = [{"peer_id": p, "why": why, "since": self.since.get(p)} for p, why in self.bans.items()]
        return sorted(rows, key=lambda r: (r["since"] is None, r["since"] or 0, r["peer_id"]))

    def _save(self) -> None:
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({p: {"why": why, "since": self.since.get(p)} for p, why in self.bans.items()}, f)
        os.replace(tmp, self.path)

    def strike(self, peer_id: str, why: str) -> str:
        """Count a fault; returns "ban" or "" (what the caller should do). "delivered" is the opposite:
        the slow count starts again. A protected peer is never struck."""
        if peer_id in self.protected:
            return ""
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
        if code in BAN_CODES and conn.peer_id and conn.peer_id not in self.protected:
            self.ban(conn.peer_id, f"{code}: {reason.get('msg', '')}"[:200])
            return True
        if code in BAN_CODES and conn.peer_id:
            log.warn("not banning our own hub {peer} after closing with {code}", peer=conn.peer_id, code=code)
        return False
