"""twistd integration: Options and makeService for ``twistd shiftpeer``."""

from twisted.application.service import MultiService
from twisted.python import usage


class Options(usage.Options):
    """Command-line options of ``twistd shiftpeer``; they override the node directory's config."""

    optParameters = [
        ["data", "d", None, "Node directory made by 'shiftpeer init' (required)."],
    ]

    def postOptions(self) -> None:
        if not self["data"]:
            raise usage.UsageError("--data DIR is required (make one with 'shiftpeer init DIR --user NAME')")


def makeService(options: Options) -> MultiService:
    """Build the node service from the directory's config plus command-line overrides."""
    from shiftpeer.node import Node

    return Node.from_directory(options["data"])
