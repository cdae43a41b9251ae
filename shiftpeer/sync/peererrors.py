"""One line saying why an outgoing peer is not connected, for ``status`` and ``sync --wait``.

Without it a user whose node refuses the hub's certificate only sees "not connected to hub"; the
reason was in the node's log alone. ``SyncPeerService`` keeps the last of these per peer.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import error
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

from shiftpeer.identity.tls import tls_refusal

_CONNECT_ERRORS = (
    (error.ConnectionRefusedError, "connection refused (is the node running and listening there?)"),
    (error.DNSLookupError, "host name not found"),
    (error.TimeoutError, "connection attempt timed out"),
    (error.NoRouteError, "no route to host"),
)


def why_failed(failure: Failure) -> Optional[str]:
    """A failed connection attempt, in words; None for an attempt cancelled because the service stops."""
    if failure.check(CancelledError):
        return None
    for kind, words in _CONNECT_ERRORS:
        if failure.check(kind):
            return words
    return f"cannot connect: {failure.getErrorMessage()}"


def why_closed(conn: Any) -> Optional[str]:
    """Why a connection we dialled ended, or None when it was closed cleanly after the handshake: our
    refusal of the server's certificate, the error the peer or we closed with, or the transport's loss."""
    refused = tls_refusal(getattr(conn, "transport", None))
    if refused:
        return f"TLS: refused the server's certificate: {refused}"
    for who, err in (("the peer refused", conn.peer_error), ("closed", conn.close_reason)):
        if err:
            return f"{who}: {err.get('code')}: {err.get('msg')}"
    lost = conn.lost_reason
    if conn.peer_id is None:
        detail = "" if lost is None or lost.check(error.ConnectionDone) else f": {lost.getErrorMessage()}"
        return "closed before the handshake completed" + detail
    if lost is not None and not lost.check(error.ConnectionDone):
        return f"connection lost: {lost.getErrorMessage()}"
    return None
