"""Which authors a full peer lets into ``master`` from gossip: those its hub admits.

Full peers pull ``master`` from anyone announcing the full-peer role, so without this an unregistered
key could publish into the firehose by dialling one. A full peer cannot read its hub's registry, so it
keeps a set of account ids it knows the hub admits: the authors of documents it received from the hub
itself (the hub's ``master`` took them), its own account, and ids the hub named as registered when
asked (the ``accounts`` RPC with ``ids``, a few per batch, before the batch is checked: the check never
blocks the reactor). Without an answer (the hub is down, or too old to answer ``ids``) an unknown author
is refused; the hub's ``master`` brings the document when the hub is back.
"""

from __future__ import annotations

from typing import Any, Iterable

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

    def __init__(self, names: Any, own: Iterable[str] = ()) -> None:
        self._names = names          # an AuthorNames (roles/authors.py): names_of(ids) asks the hub
        self._own = set(own)
        self._known: set[str] = set(self._own)

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
        """Ask the hub about the ids not known yet, up to MAX_PER_CALL per call; never fails (an
        unanswered id stays unknown, so its documents are refused)."""
        wanted = [a for a in dict.fromkeys(account_ids) if is_account_id(a) and a not in self._known]
        for i in range(0, len(wanted), MAX_PER_CALL):
            try:
                found = yield self._names.names_of(wanted[i:i + MAX_PER_CALL])
            except Exception as e:   # the link went, a timeout: unknown for now
                log.info("could not ask the hub whether authors are registered: {why}", why=e)
                return
            self.learn(a for a, name in found.items() if name)
