"""Which visibility tokens of a record in a hub's ``shared`` the merge gives it today (``Judge``).

A record's tokens only grow, so an older hub's merge may have left some the merge today would not give
(roles/tokenrebuild.py takes them off once per store). Whatever reads tokens to decide who sees or where a
document went asks this judgement rather than the tokens as they stand: the rebuild, the comment rule
(``HubQueries.places_of``) and an ``author:`` token in queries (``queries.served``).
"""

from __future__ import annotations

from typing import Any

from shiftpeer.roles import audience
from shiftpeer.roles.validation import answers_no_shift
from shiftpeer.store.errors import InvalidDocument, NotFound

#: The token kinds the merge gives; any other is left alone.
AUTHOR, PLACES = "author", ("group", "user")


class Judge:
    """Which of a ``shared`` document's tokens the merge gives it today (roles/merge.py
    ``SharedMerger._tokens``); for one chunk, keeping the source databases it opened."""

    def __init__(self, store: Any, shared: Any) -> None:
        self._store = store
        self._shared = shared
        self._sources: dict[str, Any] = {}

    def places(self, doc: Any) -> set[str]:
        """The places (``public``, ``group:<g>``, ``user:<u>``) of ``doc``'s record where it went as it stands
        today: its winning revision's signed audience names the place, and that place's database holds it by
        the record's author. A place its author's later revision left (a group that refused the edit keeps
        the earlier one) or a token an older merge gave is none, and a comment answering a comment has none."""
        body = doc.body if isinstance(doc.body, dict) else {}
        if answers_no_shift(self._shared, body):
            return set()
        author = body.get("author") if isinstance(body.get("author"), str) else None
        aud = audience.of(body)
        return {t for t in doc.vis if (t == audience.PUBLIC_TOKEN or t.partition(":")[0] in PLACES)
                and audience.names_token(aud, t) and self._held_by_source(t, doc.id, author)}

    def justifies(self, doc: Any, token: str) -> bool:
        """Does the merge give ``doc``'s record ``token`` today (``justified``)?"""
        return token in self.justified(doc, {token})

    def unjustified(self, doc: Any) -> list[str]:
        """The tokens of ``doc`` the merge would not give it today."""
        keep = self.justified(doc, set(doc.vis))
        return [t for t in doc.vis if t not in keep]

    def justified(self, doc: Any, wanted: set[str], depth: int = 1) -> set[str]:
        """Those of ``wanted`` (tokens of ``doc``) the merge gives it today, and any of a kind it never gives: the
        author's token; a place's where that place's database holds the document by the author (on a comment
        too: it reaches only the places that took it, not every place of its shift's); on a comment, an
        ``author:`` token its shift justifies (``depth`` stops there: the shift's own tokens are judged as a
        shift's). A comment answering what ``shared`` holds as a comment (``validation.answers_no_shift``: one
        taken before what it answers arrived, or by an older version) has no place: its author's token alone."""
        body = doc.body if isinstance(doc.body, dict) else {}
        author = body.get("author") if isinstance(body.get("author"), str) else None
        stray = answers_no_shift(self._shared, body)
        keep, rest = set(), set()
        for t in wanted:
            kind = t.partition(":")[0]
            if kind == AUTHOR:   # a record whose winner names no author: its author tokens cannot be judged
                ok = author is None or t == audience.author_token(author)
            elif t == audience.PUBLIC_TOKEN or kind in PLACES:
                ok = not stray and self._held_by_source(t, doc.id, author)
            else:
                ok = True
            (keep if ok else rest).add(t)
        shift_id = body.get("shift")
        if rest and not stray and body.get("type") == "comment" and isinstance(shift_id, str):
            shift = self._shared.get(shift_id)
            if shift is not None:
                named = {t for t in rest.intersection(shift.vis) if t.partition(":")[0] == AUTHOR}
                keep |= self.justified(shift, named, depth - 1) if named and depth > 0 else named
        return keep

    def holds_winner(self, doc: Any, token: str) -> bool:
        """Does the place that gives ``token`` hold ``doc``'s winning revision (in its revision tree: a later one
        it took and ``shared`` has yet to merge counts)? Not a token's judgement: a record keeps the token of a
        place that refused its author's later revision (the place holds the document, at the revision it took),
        and a node that never leaves that place out of its audience signs the refused revision still naming it,
        so what the record's token grants there is the revision the place holds, not the winner
        (``queries.served``)."""
        db = self._source(audience.source_db(token))
        return db is not None and not db.revs_diff({doc.id: [doc.rev]})

    def _held_by_source(self, token: str, docid: str, author: str | None) -> bool:
        """Does the hub database that gives ``token`` hold ``docid`` by ``author`` (the merge takes a source's
        revisions only from the author of the record, ``SharedMerger._same_author``)?"""
        db = self._source(audience.source_db(token))
        held = db.get(docid) if db is not None else None
        if held is None:
            return False
        by = held.body.get("author") if isinstance(held.body, dict) else None
        return author is None or not isinstance(by, str) or by == author

    def _source(self, dbname: str | None) -> Any:
        """The source database ``dbname`` (None: there is none, or the name is none)."""
        if dbname is None:
            return None
        if dbname not in self._sources:
            try:
                self._sources[dbname] = self._store.database(dbname)
            except (NotFound, InvalidDocument):
                self._sources[dbname] = None
        return self._sources[dbname]
