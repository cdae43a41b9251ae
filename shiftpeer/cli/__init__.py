"""The ``shiftpeer`` command: makes node directories and drives a running node through its local API.

It imports nothing from Twisted and talks HTTP with urllib, so each call starts fast. Exit status:
0 success, 1 the node refused or failed the request, 2 bad command line, 3 no node is running for DIR,
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
from typing import Sequence

from shiftpeer.cli.client import CONFIG_FILE, ApiClient
from shiftpeer.cli.commands import cmd_status, cmd_sync
from shiftpeer.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NOT_RUNNING, EXIT_USAGE, CliError
from shiftpeer.cli.output import print_databases, print_status, refused_line
from shiftpeer.cli.parser import MAX_LIMIT, build_parser

__all__ = ["CONFIG_FILE", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_NOT_RUNNING", "EXIT_USAGE", "MAX_LIMIT",
           "ApiClient", "CliError", "build_parser", "cmd_status", "cmd_sync", "main", "print_databases",
           "print_status", "refused_line"]



def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shiftpeer`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "needs_node", True) or getattr(args, "needs_data", False):
            if not args.data:
                raise CliError(f"{args.command} needs --data DIR (the node directory)", EXIT_USAGE)
        if getattr(args, "check", None) is not None:
            args.check(args)  # a bad command line is exit 2 whether or not the node runs
        if getattr(args, "needs_node", True):
            status = args.func(ApiClient(args.data), args)
        else:
            status = args.func(args)
    except CliError as e:
        sys.stderr.write(f"shiftpeer: {e.message}\n")
        return e.status
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        # Ctrl-C: one line, not a traceback. The terminal echoed ^C without a line break.
        sys.stderr.write(("\n" if sys.stderr.isatty() else "") + f"shiftpeer: {args.command} interrupted; "
                         "a request it had sent may still complete on the node (see 'shiftpeer status')\n")
        return EXIT_INTERRUPTED
    return status
