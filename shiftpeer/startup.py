"""Why a node could not start, as one line: the error type the node raises, and how twistd shows it.

A node that cannot start (its directory is in use, its store will not open, a port is taken) raises
StartupError from startService with a message that names the flag or file and what to do. Under
``twistd`` that exception leaves twistd's own start-up code (which removes its pid file and tells a
daemon's parent), and ``show_startup_errors`` then prints it as that one line on the terminal instead
of a traceback; the exit status stays 1. A daemonizing twistd has pointed the node's standard error at
/dev/null by then and hands its waiting parent only the first 100 bytes of the error, so the node keeps a
copy of the terminal until it has started and writes the whole line there itself (``report_to_terminal``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

#: A copy of the standard error twistd was started with, from ``show_startup_errors`` until ``started``:
#: a daemon then holds no terminal open.
_terminal_fd: Optional[int] = None

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
    standard error, which twistd's logging has not redirected; other exceptions print as before. Keeps a
    copy of that standard error for ``report_to_terminal`` until ``started``."""
    global _terminal_fd
    if _terminal_fd is None:
        try:
            _terminal_fd = os.dup(2)
        except OSError:
            _terminal_fd = None
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


def report_to_terminal(error: StartupError) -> None:
    """Write the error's line to the terminal twistd was started on when this process no longer writes
    there (it has daemonized: its standard error is /dev/null, and twistd's parent would show 100 bytes of
    it); otherwise the excepthook prints it, and this does nothing."""
    fd = _terminal_fd
    if fd is None:
        return
    try:
        mine, terminal = os.fstat(2), os.fstat(fd)
        if (mine.st_dev, mine.st_ino) == (terminal.st_dev, terminal.st_ino):
            return
        os.write(fd, f"twistd shiftpeer: {error}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def started() -> None:
    """The node has started: give back the copy of the terminal (a daemon keeps none open)."""
    global _terminal_fd
    fd, _terminal_fd = _terminal_fd, None
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


__all__ = ["ListeningService", "StartupError", "cannot_listen", "report_to_terminal", "show_startup_errors",
           "started"]
