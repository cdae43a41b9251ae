"""Why a node could not start, as one line: the error type the node raises, and how twistd shows it.

A node that cannot start (its directory is in use, its store will not open, a port is taken) raises
StartupError from startService with a message that names the flag or file and what to do. Under
``twistd`` that exception leaves twistd's own start-up code (which removes its pid file and tells a
daemon's parent), and ``show_startup_errors`` then prints it as that one line on the terminal instead
of a traceback; the exit status stays 1.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.internet import StreamServerEndpointService


class StartupError(Exception):
    """The node cannot start; the message is the whole story (no traceback needed)."""


def cannot_listen(flag: str, description: str, error: BaseException) -> StartupError:
    """The StartupError of a port that could not be bound, naming the flag, the endpoint and the reason
    (the OS's words, e.g. "Address already in use")."""
    from twisted.internet.error import CannotListenError

    reason = str(error)
    if isinstance(error, CannotListenError) and isinstance(error.socketError, OSError):
        reason = error.socketError.strerror or str(error.socketError)
    return StartupError(f"{flag} {description}: cannot listen: {reason}")


class ListeningService(StreamServerEndpointService):
    """A listening port the node needs: one that cannot be bound stops the node from starting
    (StartupError naming the flag), instead of the node running on without it and logging an
    "Unhandled Error". A failure reported later (an endpoint that binds asynchronously) is logged."""

    _raiseSynchronously = True

    def __init__(self, endpoint: Any, factory: Any, flag: str, description: str):
        super().__init__(endpoint, factory)
        self.flag = flag
        self.description = description

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as e:
            raise cannot_listen(self.flag, self.description, e) from None


def show_startup_errors() -> None:
    """Make an uncaught StartupError print as one line (``twistd shiftpeer: MESSAGE``) on the original
    standard error, which twistd's logging has not redirected; other exceptions print as before."""
    previous = sys.excepthook
    if getattr(previous, "shows_startup_errors", False):
        return

    def hook(kind: type, value: BaseException, tb: Any) -> None:
        if isinstance(value, StartupError):
            stream = sys.__stderr__ or sys.stderr
            stream.write(f"twistd shiftpeer: {value}\n")
            stream.flush()
        else:
            previous(kind, value, tb)

    hook.shows_startup_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook


__all__ = ["ListeningService", "StartupError", "cannot_listen", "show_startup_errors"]
