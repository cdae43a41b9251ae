"""Logging refused connections without letting a flood fill the log.

A peer refused by a connection cap usually tries again at once, thousands of times a second if it is an
attack, and one warning per refusal would let it fill the disk and bury everything else. So the first
refusal for a key (an address, a network, a peer id) is logged in full; the ones after it are only counted
and summed up in at most one line per interval ("refused 5,312 more sync connections from 192.0.2.7 in the
last 60 s"); once a whole interval passes without one, the key is forgotten and its next refusal is logged
in full again. The metrics counters are not this module's business: they count every refusal.

A connection closed on a protocol violation is the same flood at a slower pace (each costs the peer a TLS
handshake), so the sync protocol logs those through a ``RefusalLog`` of its own, with its own summary line.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

#: Seconds between two summary lines for one key.
REFUSAL_LOG_INTERVAL = 60.0
#: Keys followed at once. Each needs a refusal, and a refusal needs a cap's worth of connections held from that
#: key, so a flood has few; past this the refusals of new keys are summed up under one key, OTHERS.
MAX_KEYS = 4096
OTHERS = "(others)"
#: Reasons told apart in one key's summary; a summary's further reasons are counted as OTHER_REASONS.
MAX_REASONS = 16
OTHER_REASONS = "other reasons"
#: The summary line of connection-cap refusals (a twisted.logger format over more, what, interval, why).
REFUSAL_SUMMARY = "refused {more:,} more sync connections from {what} in the last {interval:g} s ({why})"


@dataclass
class _Quiet:
    """A key whose refusals are being counted instead of logged, until its next summary."""

    what: str          # who was refused, as the summary says it: "192.0.2.7", "network 192.0.2.0/24"
    whys: collections.Counter = field(default_factory=collections.Counter)  # refusals since the last line,
    # by reason (the cap: "max_connections_per_address 64"; a violation's code)

    def count(self, why: str) -> None:
        if why not in self.whys and len(self.whys) >= MAX_REASONS:
            why = OTHER_REASONS
        self.whys[why] += 1

    def why(self) -> str:
        """The reasons, as the summary says them: the one reason, or each with its count, most first."""
        if len(self.whys) == 1:
            return next(iter(self.whys))
        return ", ".join(f"{why} {n:,}" for why, n in self.whys.most_common())


class RefusalLog:
    """Logs the first refusal for a key and then at most one summary line per ``interval`` seconds for it,
    timed on ``clock`` (a reactor or a ``Clock``), in the words of ``summary``."""

    def __init__(self, clock: Any, log: Logger, interval: float = REFUSAL_LOG_INTERVAL,
                 max_keys: int = MAX_KEYS, summary: str = REFUSAL_SUMMARY) -> None:
        self._clock = clock
        self._log = log
        self.interval = interval
        self.max_keys = max_keys
        self.summary = summary
        self._quiet: dict[str, _Quiet] = {}

    def refused(self, key: str, what: str, why: str, message: str, **fields: Any) -> None:
        """A connection of ``key`` was refused: log ``message`` (a twisted.logger format over ``fields``) if
        it is the first in a while, else count it, by ``why``, for the next summary ("... {what} ... ({why})")."""
        if key not in self._quiet and len(self._quiet) >= self.max_keys:
            key, what = OTHERS, "other addresses and peers"
        quiet = self._quiet.get(key)
        if quiet is not None:
            quiet.count(why)
            return
        self._quiet[key] = _Quiet(what)
        self._clock.callLater(self.interval, self._summarise, key)
        self._log.warn(message + "; more like it are summed up every {interval:g} s",
                       interval=self.interval, **fields)

    def _summarise(self, key: str) -> None:
        quiet = self._quiet[key]
        if not quiet.whys:
            del self._quiet[key]
            return
        self._log.warn(self.summary, more=sum(quiet.whys.values()), what=quiet.what, interval=self.interval,
                       why=quiet.why())
        quiet.whys.clear()
        self._clock.callLater(self.interval, self._summarise, key)

    def __len__(self) -> int:
        return len(self._quiet)


__all__ = ["MAX_KEYS", "MAX_REASONS", "OTHERS", "OTHER_REASONS", "REFUSAL_LOG_INTERVAL", "REFUSAL_SUMMARY",
           "RefusalLog"]
