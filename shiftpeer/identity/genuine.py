"""A bounded memory of signed payloads already found genuine, so a row seen again is not checked again.

A user node checks the signature of every row its hub answers a query with (roles/userflows.py), and a
Space asks the same page's shifts on every load of it: without this, each answer's rows cost a signature
check each (~50-80 us), about a third of the user node's CPU a request (docs/benchmarks.md, *the page-URL
query*). The key is the signature and a 256-bit hash of the exact payload bytes it verified over, so a
hit is the same author, id, revision, deleted flag and body, byte for byte; nothing weaker (an id and
revision, say) would do. Only genuine payloads are remembered: a forgery is checked every time it comes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from hashlib import blake2b

#: Payloads remembered at most: ~100 bytes each with the dict's own, ~2 MB in all.
GENUINE_CACHE_SIZE = 16_384


class GenuineCache:
    """Least recently used (signature, payload hash) keys of payloads whose signature verified."""

    def __init__(self, size: int = GENUINE_CACHE_SIZE) -> None:
        if size < 1:
            raise ValueError("a GenuineCache holds at least one payload")
        self._size = size
        self._keys: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()   # verify_repl_doc runs on the reactor and in worker threads
        self.hits = 0

    @staticmethod
    def key(sig: bytes, payload: bytes) -> bytes:
        """What identifies one verified payload: its signature and a hash of all its bytes."""
        return sig + blake2b(payload, digest_size=32).digest()

    def seen(self, key: bytes) -> bool:
        """True when `key`'s payload was found genuine before (and is still remembered)."""
        with self._lock:
            if key not in self._keys:
                return False
            self._keys.move_to_end(key)
            self.hits += 1
            return True

    def add(self, key: bytes) -> None:
        """Remember a payload found genuine, forgetting the least recently used one when full."""
        with self._lock:
            self._keys[key] = None
            self._keys.move_to_end(key)
            if len(self._keys) > self._size:
                self._keys.popitem(last=False)

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()
            self.hits = 0
