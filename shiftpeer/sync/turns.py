"""Go on with a long job in a later reactor turn, once what it has written so far is on the wire.

A reactor writes to sockets only between turns, and TLS (Twisted's BufferingTLSTransport) hands small writes
to TCP in a ``callLater(0)`` of its own. A job that continues in a plain ``callLater(0)`` runs in the same
batch of timed calls as that flush, before the socket write: its peer keeps waiting. Two hops put a socket
write in between: the first runs beside the TLS flush and schedules the second, which Twisted runs only after
the next I/O pass.
"""

from __future__ import annotations

from typing import Any, Callable, Optional


class AfterWrites:
    """Runs `f` in a later reactor turn, after the reactor's next socket writes; at most one pending call."""

    def __init__(self, clock: Any, f: Callable[[], None]) -> None:
        self._clock = clock
        self._f = f
        self._call: Optional[Any] = None

    @property
    def pending(self) -> bool:
        return self._call is not None

    def schedule(self) -> None:
        if self._call is None:
            self._call = self._clock.callLater(0, self._hop)

    def _hop(self) -> None:
        self._call = self._clock.callLater(0, self._run)

    def _run(self) -> None:
        self._call = None
        self._f()

    def cancel(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
