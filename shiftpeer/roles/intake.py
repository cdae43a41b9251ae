"""Which authors a full peer lets into ``master`` from gossip: those its hub admits.

Full peers pull ``master`` from anyone announcing the full-peer role, so without this an unregistered
key could publish into the firehose by dialling one. A full peer cannot read its hub's registry, so it
keeps a set of account ids it knows the hub admits: the authors of documents it received from the hub
itself (the hub's ``master`` took them), its own account, the authors of documents its ``master`` already
holds (each came from the hub or passed this check: the set is in memory, and without this a node
restarted while its hub is down refused every author it had held for years), and ids the hub named as
registered when asked (the ``accounts`` RPC with ``ids``, a few per batch, before the batch is checked:
the check never blocks the reactor). Without an answer (the hub is down, or too old to answer ``ids``) an
unknown author is refused; the hub's ``master`` brings the document when the hub is back.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from shiftpeer.identity import is_account_id
from shiftpeer.roles.authors import MAX_PER_CALL

log = Logger()

#: At most this many ids are remembered; past it the set starts again (it refills from the hub).
MAX_KNOWN = 100_000


def authors_of(docs: Iterable[dict]) -> list[str]:
    """The distinct ``body.author`` values of ``docs``, in order."""
    return list(dict.fromkeys(a for a in (d["body"].get("author") for d in docs) if isinstance(a, str)))


class KnownAuthors:
    """Account ids this node knows its hub admits into ``master``; asks the hub about the rest."""

    def __init__(self, names: Any, own: Iterable[str] = (), held: Callable[[str], bool] | None = None) -> None:
        self._names = names          # an AuthorNames (roles/authors.py): names_of(ids) asks the hub
        self._own = set(own)
        self._known: set[str] = set(self._own)
        #: whether ``master`` holds a live document by an author (an index lookup): asked before the hub
        self._held = held

    def __contains__(self, account_id: str) -> bool:
        return account_id in self._known

    def learn(self, account_ids: Iterable[str]) -> None:
        """Remember ids the hub vouched for (authors of documents its ``master`` sent us)."""
        new = [a for a in account_ids if a not in self._known]
        if len(self._known) + len(new) > MAX_KNOWN:
            self._known = set(self._own)
        self._known.update(new)

    @inlineCallbacks
    def prefetch(self, account_ids: list[str]):
        """Learn the ids ``master`` already holds documents by, then ask the hub about the rest, up to
        MAX_PER_CALL per call; never fails (an unanswered id stays unknown, so its documents are refused)."""
        wanted = [a for a in dict.fromkeys(account_ids) if is_account_id(a) and a not in self._known]
        if self._held is not None and wanted:
            held = [a for a in wanted if self._held(a)]
            self.learn(held)
            wanted = [a for a in wanted if a not in self._known]
        for i in range(0, len(wanted), MAX_PER_CALL):
            try:
                found = yield self._names.names_of(wanted[i:i + MAX_PER_CALL])
            except Exception as e:   # the link went, a timeout: unknown for now
                log.info("could not ask the hub whether authors are registered: {why}", why=e)
                return
            self.learn(a for a, name in found.items() if name)
