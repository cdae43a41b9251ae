"""The gossip settings an operator may set: the ``gossip`` object of a node's config.json and the matching
``twistd shiftpeer`` flags, checked once when the node starts (a typo is a message naming the setting).

* ``private_addresses``: may the node dial a non-global address an account announced (``gossip.announce``)
  to prove it? true: any unicast address (a mesh on a LAN); false: global addresses only; absent: global
  addresses, and loopback ones when every sync listener of the node is on loopback (a mesh on one machine:
  its announcers are local processes, which can reach loopback themselves). See ``dialable.py``.
* ``reprove_every``: seconds between proofs of a listed address while its announcer stays connected.

No Twisted here: ``shiftpeer init`` and the settings read it without building a node.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

#: config.json "gossip" keys (and, with dashes and a ``gossip-`` prefix, the twistd flags)
KEYS = ("private_addresses", "reprove_every")
#: the shortest ``reprove_every`` taken, in seconds
MIN_REPROVE_EVERY = 1.0
_YES, _NO = ("true", "yes", "on"), ("false", "no", "off")


def check_private_addresses(value: Any) -> bool:
    """``private_addresses`` as a bool: JSON true/false, or yes/no (true/false, on/off) from a flag."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _YES + _NO:
        return value.strip().lower() in _YES
    raise ValueError(f"private_addresses must be true or false (yes or no), not {value!r}")


def check_reprove_every(value: Any) -> float:
    """``reprove_every`` in seconds: a number of at least ``MIN_REPROVE_EVERY``."""
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) \
            or number < MIN_REPROVE_EVERY:
        raise ValueError(f"reprove_every must be a number of seconds of at least {MIN_REPROVE_EVERY:g}, "
                         f"not {value!r}")
    return float(number)


_CHECKS = {"private_addresses": check_private_addresses, "reprove_every": check_reprove_every}


def check_gossip_config(doc: Any) -> dict[str, Any]:
    """The ``gossip`` object of config.json, checked; ValueError naming a bad or unknown key."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"gossip must be a JSON object of settings, not {doc!r}")
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise ValueError(f"gossip has unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(KEYS)}")
    return {name: _CHECKS[name](value) for name, value in doc.items()}


def check_gossip_setting(name: str, value: Any) -> Any:
    """One setting (``KEYS``) checked, as from a flag."""
    return _CHECKS[name](value)


__all__ = ["KEYS", "MIN_REPROVE_EVERY", "check_gossip_config", "check_gossip_setting", "check_private_addresses",
           "check_reprove_every"]
