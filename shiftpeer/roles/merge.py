"""The hub's merge of ``master``, ``group/<g>`` and ``inbox/<u>`` into ``shared``, with visibility tokens.

Each source database gives its documents one token (``public``, ``group:<g>``, ``user:<u>``) and every
document also gets ``author:<account id>``, so ``shared`` answers "what may this user see" with an
index merge, never a scan. A comment also gets the ``author:`` tokens of the shift it comments on (the shift's
author sees what is written on it), and no place of the shift's: it reaches only the places that took it, each
giving its own token, so a group that refused its author (who cannot read it) shows it to no one, whatever its
signed audience names and whether or not its author's node ever writes a revision that leaves the group out. A
write only adds tokens, so after merging a comment the merge takes off those the tokens' rebuild would
(``tokenjudge.Judge``), so a hub's rebuild finds nothing the merge left. A comment answering a comment (a
relay's, handed in before that comment arrived) has no place: its author's token alone, and merging the
comment takes the places off replies merged before it. Only a comment
never seen before notifies anyone; a later revision (an edit) or a tombstone of a comment already held
updates or withdraws those notifications instead. A
checkpoint per source (in ``shared``) makes the merge resume after a restart; the merge follows
commits live and runs outside the commit callback.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Callable

from twisted.logger import Logger

from shiftpeer.roles import audience
from shiftpeer.roles.following import CommitFollower, checkpoint_since, save_checkpoint
from shiftpeer.roles.tokenjudge import Judge
from shiftpeer.roles.validation import answered, held_author, no_shift

SHARED_DB = "shared"
MERGE_PEER = "merge"
BATCH = 500
#: Pages of replies a newly merged comment looks for (``_replies_before``).
REPLY_PAGES = 4

log = Logger()

#: Called with comments after the batch that brought them was merged: never-seen ones (``on_new``), or
#: later revisions and tombstones of comments ``shared`` already held (``on_revised``).
NewDocsHook = Callable[[list[dict]], None]


def is_source(dbname: str) -> bool:
    """Does this hub database feed ``shared``?"""
    return audience.vis_token(dbname) is not None


class SharedMerger(CommitFollower):
    """Copies every source database's changes into ``shared`` from per-source checkpoints."""

    def __init__(self, store: Any, clock: Any, *, on_new: NewDocsHook | None = None,
                 on_revised: NewDocsHook | None = None, batch: int = BATCH) -> None:
        super().__init__(store, clock)
        self._on_new = on_new
        self._on_revised = on_revised
        self._batch = batch
        self.shared = store.create_database(SHARED_DB)

    def watches(self, dbname: str) -> bool:
        return is_source(dbname)

    def copy_once(self, source: str) -> bool:
        return self.merge_once(source)

    def merge_once(self, name: str) -> bool:
        """Merge one batch of ``name``'s changes into ``shared``; True when more are waiting."""
        if not self._store.has_database(name):
            return False
        src = self._store.database(name)
        changes = src.changes(since=checkpoint_since(self.shared, MERGE_PEER, src), limit=self._batch)
        if not changes:
            return False
        docs = [d for d in src.get_repl_docs([(c.id, list(c.revs)) for c in changes]) if self._same_author(d, name)]
        token = audience.vis_token(name)
        comments = [d for d in docs if d["body"].get("type") == "comment"]
        held = {d["id"] for d in comments if self.shared.get(d["id"]) is not None}
        fresh = [d for d in comments if not d["deleted"] and d["id"] not in held]
        revised = [d for d in comments if d["id"] in held]
        by_tokens: dict[tuple, list[dict]] = defaultdict(list)
        for d in docs:
            by_tokens[tuple(self._tokens(token, d))].append(d)
        with self._store.write_txn() as txn:
            for tokens, group in by_tokens.items():
                self.shared.bulk_replicated(group, vis=list(tokens), txn=txn)
            self._narrow([i for i, n in Counter(d["id"] for d in comments).items() if n > 1 or i in held]
                         + self._replies_before({d["id"] for d in comments} - held), txn)
            save_checkpoint(self.shared, MERGE_PEER, src, changes[-1].seq, txn)
        log.debug("merged {count} docs of {source} into shared", count=len(docs), source=name)
        if fresh and self._on_new is not None:
            self._on_new(fresh)
        if revised and self._on_revised is not None:
            self._on_revised(revised)
        return len(changes) >= self._batch

    def _same_author(self, doc: dict, source: str) -> bool:
        """Is ``doc`` by the author of what ``shared`` holds under its id (or new there)? Each source checks
        only the revisions it holds itself, and ``shared`` gives one record the tokens of every source: a
        revision under another author's id (an id made before ids named their author) in a database of its
        own would give its writer the tokens to read the other author's shift."""
        held = held_author(self.shared, doc["id"])
        if held is None or held == doc["body"].get("author"):
            return True
        log.warn("not merging {doc} {rev} of {source} into shared: its author {author} is not the author "
                 "{held} of the revisions shared holds", doc=doc["id"], rev=doc["rev"], source=source,
                 author=doc["body"].get("author"), held=held)
        return False

    def _narrow(self, ids: list[str], txn: Any) -> None:
        """Take off the tokens the merge no longer gives these comments (held before, or merged in more than one
        revision): a write only adds, and the merge before a comment reached only the places that took it gave
        one the places of its shift's record its signed audience named, a group that refused its author among
        them. The rule is the tokens' rebuild's (``tokenjudge.Judge``), so the two agree."""
        judge = Judge(self._store, self.shared)
        for docid in ids:
            drop = judge.unjustified(self.shared.get(docid))   # read in ``txn``: what this batch wrote
            if drop:
                self.shared.remove_vis(docid, drop, txn=txn)

    def _replies_before(self, comment_ids: set[str]) -> list[str]:
        """The live comments ``shared`` holds that answer one of these comments, merged before it (each place
        refuses a reply to a comment it holds, ``not_a_shift``, but a relay's could arrive first): once the
        comment is here they have no place (``_tokens``, ``Judge``), so ``_narrow`` takes theirs off. At most
        ``REPLY_PAGES`` pages a comment; queries leave out any beyond (``queries.answers_shifts``)."""
        found = []
        for cid in sorted(comment_ids):
            cursor = None
            for _ in range(REPLY_PAGES):
                docs, cursor = self.shared.query("thread", cid, limit=self._batch, cursor=cursor)
                found += [d.id for d in docs]
                if cursor is None:
                    break
        return found

    def _tokens(self, token: str, doc: dict) -> list[str]:
        body = doc["body"]
        shift = answered(self.shared, body)   # read once, for both questions
        if no_shift(shift):
            # a comment answering a comment (``answers_no_shift``): no place, its author's token alone
            return [audience.author_token(body["author"])] if isinstance(body.get("author"), str) else []
        tokens = {token}
        if isinstance(body.get("author"), str):
            tokens.add(audience.author_token(body["author"]))
        if shift is not None:   # its author's, not its places: a comment reaches only those that take it
            tokens.update(t for t in shift.vis if t.startswith(audience.author_token("")))
        return sorted(tokens)
