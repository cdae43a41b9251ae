"""Exit statuses of the ``shiftpeer`` command and the one error type its commands raise."""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_INTERRUPTED = 130   # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


class CliError(Exception):
    """An error to print as one line on standard error, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR):
        super().__init__(message)
        self.message = message
        self.status = status

