"""Hand what a connection's TCP transport holds to the kernel now, not on the reactor's next turn.

Twisted's TCP transport keeps a write in its buffer until the reactor next finds the socket writable: the
rest of the callbacks that wrote it run first, then a poll. On a live change that is ~0.1 ms of the path
from a commit to the peer (docs/benchmarks.md). Only a caught-up live feeder's commit asks for it (the
send carries whatever the transport holds by then): sending every write at once (acks, needs, gossip
announcements) made a gossip mesh send more bytes and converge later.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.protocols.policies import ProtocolWrapper


def socket_transport(transport: Any) -> Any:
    """The reactor transport under any ProtocolWrappers (TLSMemoryBIOProtocol is one), or what is there
    when there is none (a test's in-memory transport)."""
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    return transport


def send_now(transport: Any) -> bool:
    """Ask a reactor TCP transport (under any ProtocolWrappers) to send what it holds, as the reactor would
    on its next turn; True when it tried. Skipped where that turn does more than send: a transport that is
    closing (the turn closes it) or whose producer is paused (the turn resumes it, which could write again
    from inside this write), and for anything that is not a reactor file descriptor (iosim, a pipe)."""
    transport = socket_transport(transport)
    if not isinstance(transport, FileDescriptor) or not transport.connected:
        return False
    if transport.disconnecting or transport.producerPaused or getattr(transport, "_writeDisconnecting", False):
        return False
    if not getattr(transport, "_tempDataLen", 1) and len(transport.dataBuffer) <= transport.offset:
        return False   # nothing waiting (TLS holds writes until its handshake is done)
    # An error (the peer gone) is left to the reactor: the socket stays registered for writing, and the
    # next turn's doWrite meets the same error and closes the connection the usual way.
    transport.doWrite()
    return True
