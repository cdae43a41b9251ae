"""The sync limits an operator may set: the ``sync`` object of a node's config.json and the matching
``twistd shiftpeer`` flags. Every value is checked here, once, when the node starts, so a typo or a negative
number is a message naming the setting instead of a misbehaving node later. Each name is a ``SyncFactory``
argument (docs/protocol.md section 8, docs/operators.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from shiftpeer.sync.framing import MAX_FRAME
from shiftpeer.sync.limits import (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS, MAX_CONNECTIONS_PER_BLOCK,
                                   MAX_CONNECTIONS_PER_NETWORK, MAX_CONNECTIONS_PER_PEER)
from shiftpeer.sync.messages import MAX_BATCH
from shiftpeer.sync.protocol import FRAME_TIMEOUT, HANDSHAKE_TIMEOUT
from shiftpeer.sync.replication import BATCH_CHANGES, DOCS_FRAME_BYTES, MAX_FEEDERS, WINDOW
from shiftpeer.sync.uploadcap import MIN_UPLOAD_BYTES_PER_SECOND


@dataclass(frozen=True)
class Limit:
    """One settable limit: its ``SyncFactory`` argument, type, allowed range and what it is for."""

    name: str
    kind: type                      # int (at least ``minimum``) or float (above ``minimum``)
    default: Optional[float]
    minimum: float
    maximum: Optional[float] = None
    can_be_off: bool = False        # null in config.json, "off" on the command line: no limit
    help: str = ""
    why_minimum: str = ""

    @property
    def default_text(self) -> str:
        """The default as people read it: ``8``, ``16,777,216``, ``30``, ``no limit``."""
        return "no limit" if self.default is None else _show(self.default)

    @property
    def flag(self) -> str:
        """The twistd flag, e.g. ``max-connections-per-peer``."""
        return self.name.replace("_", "-")


LIMITS: tuple[Limit, ...] = (
    Limit("handshake_timeout", float, HANDSHAKE_TIMEOUT, 0,
          help="seconds from a TCP connection to the peer's hello (TLS handshake included)"),
    Limit("frame_timeout", float, FRAME_TIMEOUT, 0,
          help="seconds from a frame's first byte to its last (peers trickling bytes are cut off)"),
    Limit("max_frame", int, MAX_FRAME, 2 * DOCS_FRAME_BYTES, 2 ** 32 - 1,
          help="largest frame accepted from a peer, in bytes",
          why_minimum="peers send docs frames of up to about 5 MiB"),
    Limit("max_batch", int, MAX_BATCH, BATCH_CHANGES, MAX_BATCH,
          help="entries accepted in one changes/need/docs message",
          why_minimum="peers send batches of up to 500 changes"),
    Limit("batch_changes", int, BATCH_CHANGES, 1, MAX_BATCH,
          help="changes this node sends per batch (keep it at most the peers' max_batch)"),
    Limit("window", int, WINDOW, 1, help="unacknowledged batches per replication this node sends"),
    Limit("max_replications", int, MAX_FEEDERS, 1, help="replications one peer may open on one connection"),
    Limit("docs_per_second", float, None, 0, can_be_off=True,
          help="documents stored per second from one peer, all its connections together"),
    Limit("max_upload_bytes_per_second", int, None, MIN_UPLOAD_BYTES_PER_SECOND, can_be_off=True,
          help="bytes all sync connections together send per second, counted above TLS (shared fairly "
               "between peers, each peer's connections taking turns; their feeders wait)",
          why_minimum="below it one 1 MiB document takes over a minute to send, and peers give a frame 120 s"),
    Limit("max_connections_per_peer", int, MAX_CONNECTIONS_PER_PEER, 1,
          help="connections one peer identity may hold on this node's listeners"),
    Limit("max_connections_per_address", int, MAX_CONNECTIONS_PER_ADDRESS, 1,
          help="connections (authenticated or not) one IP address may hold on this node's listeners"),
    Limit("max_connections_per_network", int, MAX_CONNECTIONS_PER_NETWORK, 1,
          help="connections (authenticated or not) one network (IPv4 /24, IPv6 /64, all of loopback) may hold "
               "on this node's listeners; never below max_connections_per_address"),
    Limit("max_connections_per_block", int, MAX_CONNECTIONS_PER_BLOCK, 1,
          help="connections (authenticated or not) one block of networks (IPv4 /16, IPv6 /48, all of loopback) "
               "may hold on this node's listeners; never below max_connections_per_network"),
    Limit("max_connections", int, MAX_CONNECTIONS, 1,
          help="connections (authenticated or not) this node's listeners hold in all, from any addresses"),
)
BY_NAME = {limit.name: limit for limit in LIMITS}


def check_limit(name: str, value: Any) -> Optional[float]:
    """``value`` for the limit ``name`` as the SyncFactory wants it; ValueError saying what is allowed."""
    return check_value(BY_NAME[name], value)


def check_value(limit: Limit, value: Any) -> Optional[float]:
    """``value`` for ``limit`` (a sync limit, or another setting described the same way: a hub's quota); ValueError
    naming it and saying what is allowed. Strings (command-line flags) are parsed; JSON values must already be
    numbers (booleans are not)."""
    name = limit.name
    if limit.kind is float:
        allowed = f"a number above {_show(limit.minimum)}"
    elif limit.maximum is not None:
        allowed = f"a whole number from {_show(limit.minimum)} to {_show(limit.maximum)}"
    else:
        allowed = f"a whole number of at least {_show(limit.minimum)}"
    if limit.can_be_off:
        allowed += " (or null/off for no limit)"
    if limit.can_be_off and (value is None or value == "off"):
        return None
    number: Any = value
    if isinstance(value, str):
        try:
            number = limit.kind(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or \
            (limit.kind is int and not isinstance(number, int)) or not math.isfinite(number):
        raise ValueError(f"{name} must be {allowed}, not {value!r}")
    too_small = number <= limit.minimum if limit.kind is float else number < limit.minimum
    if too_small or (limit.maximum is not None and number > limit.maximum):
        why = f" ({limit.why_minimum})" if limit.why_minimum and too_small else ""
        raise ValueError(f"{name} must be {allowed}{why}, not {value!r}")
    return limit.kind(number)


def check_sync_config(doc: Any) -> dict[str, Any]:
    """The ``sync`` object of config.json as SyncFactory arguments; ValueError naming a bad or unknown key."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"sync must be a JSON object of limits, not {doc!r}")
    unknown = sorted(set(doc) - set(BY_NAME))
    if unknown:
        raise ValueError(f"sync has unknown setting(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(BY_NAME)}")
    return {name: check_limit(name, value) for name, value in doc.items()}


def _show(n: float) -> str:
    return f"{n:,}" if isinstance(n, int) else f"{n:g}"


__all__ = ["LIMITS", "Limit", "check_limit", "check_sync_config", "check_value"]
