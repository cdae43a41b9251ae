"""Proof that a node announcing itself (``gossip.announce``) answers at the address it names.

The announcement takes a ``host`` (for nodes whose listening address is not the one they connect from), so
without a check any account could list someone else's host for every full peer to dial. Before an address
is handed out (``gossip.peers``) the serving node dials it itself with its normal TLS client setup, and the
proof passes only when the key answering there is the announcer's (the key is the identity: a node at that
address that is not the announcer cannot present its key).

Bounded, since an announcer chooses the address the node dials:

* one proof in flight per announcer: announcing again while one runs joins it (no second dial);
* each ends within ``timeout`` seconds (the dial is cancelled);
* after a failed (or cancelled) proof the announcer gets no new one for ``retry_after`` seconds, whatever
  address it names, so a node re-announcing in a loop costs at most one dial per ``retry_after``;
* what a failure was (refused, timed out, another key) is logged here, never told to the announcer: it would
  make the node a port scanner of whatever it can reach;
* the dial the node is given checks the address first (``dialable.checked_dial``: global addresses only,
  unless configured otherwise): a refusal (``Undialable``) fails the proof without a dial, rests like any
  failure, and is reported apart (``unproven(..., refused=True)``).

A listed address is proven again from time to time (``Gossip`` calls ``start(..., rest=False)``: the
address is one the node proved before, not one the announcer picks now, so a rest does not put it off).

No reactor: ``dial(host, port)`` (a Deferred firing with the peer id presented there; the real one is
``sync.client.peer_id_at``) and ``clock`` are injected.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from shiftpeer.gossip.dialable import Dial, Undialable

log = Logger()

#: Seconds a proof may take (TCP connect and TLS handshake) before it counts as failed.
PROOF_TIMEOUT = 10.0
#: Seconds after a failed proof during which the same announcer gets no new one.
RETRY_AFTER = 60.0
#: Announcers whose failed proof is remembered at once (the oldest is forgotten first).
MAX_REMEMBERED = 4096


__all__ = ["AddressProofs", "Dial", "PROOF_TIMEOUT", "RETRY_AFTER"]


class _Proof:
    """One running proof: the address it dials, the dial, its timer and the callers waiting for it."""

    __slots__ = ("address", "dial", "timer", "timed_out", "cancelled")

    def __init__(self, address: str) -> None:
        self.address = address
        self.dial: Optional[Deferred] = None
        self.timer: Any = None
        self.timed_out = self.cancelled = False


class AddressProofs:
    """Proves announced addresses, one at a time per announcer; see the module doc.

    ``start(peer_id, host, port, address)`` says what happens to an announcement: "proving" (a proof
    started), "running" (one was already running: it decides), or "resting" (a proof failed less than
    ``retry_after`` seconds ago). ``proven(peer_id, address)`` is called when the key at the address is the
    announcer's; ``unproven(peer_id, address, why, refused)`` when it is not (``why`` for the log and nobody
    else; ``refused`` when the dial refused the address without dialling it, ``Undialable``).
    """

    def __init__(self, clock: Any, dial: Dial, *, proven: Callable[[str, str], None],
                 unproven: Callable[[str, str, str, bool], None], timeout: float = PROOF_TIMEOUT,
                 retry_after: float = RETRY_AFTER) -> None:
        self.clock = clock
        self.dial = dial
        self.proven = proven
        self.unproven = unproven
        self.timeout = timeout
        self.retry_after = retry_after
        self.running: dict[str, _Proof] = {}      # announcer -> its proof in flight
        self.resting: dict[str, float] = {}       # announcer -> until when a failed proof keeps it waiting

    def start(self, peer_id: str, host: str, port: int, address: str, *, rest: bool = True) -> str:
        """Prove ``address`` (HOST:PORT as listed) is ``peer_id``'s, unless a proof of it runs or (``rest``)
        rests."""
        if peer_id in self.running:
            return "running"
        if rest and self.resting.get(peer_id, 0.0) > self.clock.seconds():
            return "resting"
        self.resting.pop(peer_id, None)
        proof = self.running[peer_id] = _Proof(address)
        proof.timer = self.clock.callLater(self.timeout, self._time_out, proof)
        proof.dial = maybeDeferred(self.dial, host, port)
        proof.dial.addBoth(self._ended, peer_id, proof)
        return "proving"

    def running_address(self, peer_id: str) -> Optional[str]:
        proof = self.running.get(peer_id)
        return proof.address if proof is not None else None

    def cancel(self, peer_id: str) -> None:
        """Stop ``peer_id``'s proof (it disconnected): nothing is listed or logged, and it rests as after a
        failure (else connecting, announcing and leaving in a loop would dial without a bound)."""
        proof = self.running.get(peer_id)
        if proof is not None and proof.dial is not None:
            proof.cancelled = True
            proof.dial.cancel()

    def _time_out(self, proof: _Proof) -> None:
        proof.timed_out = True
        if proof.dial is not None:
            proof.dial.cancel()

    def _ended(self, result: Any, peer_id: str, proof: _Proof) -> None:
        if self.running.get(peer_id) is proof:
            del self.running[peer_id]
        if proof.timer is not None and proof.timer.active():
            proof.timer.cancel()
        if isinstance(result, str) and hmac.compare_digest(result, peer_id):
            self.proven(peer_id, proof.address)
            return
        self._rest(peer_id)
        if proof.cancelled and not proof.timed_out:
            return        # the announcer went away: no failure of its address, but a rest all the same
        if isinstance(result, Failure) and result.check(Undialable):
            self.unproven(peer_id, proof.address, result.getErrorMessage(), True)
            return
        if isinstance(result, str):
            why = f"the node answering there has another key ({result})"
        elif proof.timed_out:
            why = f"no TLS answer within {self.timeout:g} seconds"
        elif isinstance(result, Failure):
            why = f"dialling it failed: {result.getErrorMessage()}"
        else:
            why = f"no key learnt ({result!r})"
        self.unproven(peer_id, proof.address, why, False)

    def _rest(self, peer_id: str) -> None:
        self.resting.pop(peer_id, None)
        now = self.clock.seconds()
        for p in [p for p, until in self.resting.items() if until <= now]:
            del self.resting[p]
        while len(self.resting) >= MAX_REMEMBERED:
            del self.resting[next(iter(self.resting))]
        self.resting[peer_id] = now + self.retry_after
