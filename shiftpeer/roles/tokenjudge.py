"""Which visibility tokens of a record in a hub's ``shared`` the merge gives it today (``Judge``).

A record's tokens only grow, so an older hub's merge may have left some the merge today would not give
(roles/tokenrebuild.py takes them off once per store). Whatever reads tokens to decide who sees or where a
document went asks this judgement rather than the tokens as they stand: the rebuild, the comment rule
(``HubQueries.places_of``) and an ``author:`` token in queries (``queries.served``).
"""

from __future__ import annotations

from typing import Any

from shiftpeer.roles import audience
from shiftpeer.roles.validation import answered, answers_no_shift, no_shift
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
        author = _author(body)
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

    def justified(self, doc: Any, wanted: set[str]) -> set[str]:
        """Those of ``wanted`` (tokens of ``doc``) the merge gives it today, and any of a kind it never gives: the
        author's token; a place's where that place's database holds the document by the author (on a comment
        too: it reaches only the places that took it, not every place of its shift's); on a comment, an
        ``author:`` token of its shift's record that the shift's author's is (the merge gives a comment its
        shift's author's token, never its places). A comment answering what ``shared`` holds as a comment
        (``validation.answers_no_shift``: one taken before what it answers arrived, or by an older version) has
        no place: its author's token alone."""
        body = doc.body if isinstance(doc.body, dict) else {}
        author = _author(body)
        shift = answered(self._shared, body)   # read once: whether it is a shift, and its author's token
        stray = no_shift(shift)
        keep = set()
        for t in wanted:
            kind = t.partition(":")[0]
            if kind == AUTHOR:
                ok = _authors(author, t)
            elif t == audience.PUBLIC_TOKEN or kind in PLACES:
                ok = not stray and self._held_by_source(t, doc.id, author)
            else:
                ok = True
            if ok:
                keep.add(t)
        if shift is not None and not stray:   # a comment on a shift: its shift's author's token too
            shift_author = _author(shift.body if isinstance(shift.body, dict) else {})
            keep.update(t for t in wanted.intersection(shift.vis)
                        if t.partition(":")[0] == AUTHOR and _authors(shift_author, t))
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

    def place_revision(self, doc: Any, token: str) -> Any:
        """The live revision the place that gives ``token`` (a group's, an inbox's) holds of ``doc``, as a
        ``StoredDoc`` (its winner there), when the record's author wrote it (the merge takes a source's revisions
        from that author alone) and its signed audience names the place; else None. What that place's readers
        are served where ``shared``'s winner is not theirs to see (``HubQueries``: the place refused a later
        revision, or its author's node left the place out of it): the place took this one, so it is theirs, and
        a revision the place refused is never in its database."""
        if token.partition(":")[0] not in PLACES:
            return None
        db = self._source(audience.source_db(token))
        held = db.get_stored(doc.id) if db is not None else None
        if held is None or held.deleted or not isinstance(held.body, dict):
            return None
        author = _author(doc.body if isinstance(doc.body, dict) else {})
        if author is None or held.body.get("author") != author:
            return None
        return held if audience.names_token(audience.of(held.body), token) else None

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


def _author(body: dict) -> str | None:
    """The author a record's winning revision names (None: none, or not a string)."""
    author = body.get("author")
    return author if isinstance(author, str) else None


def _authors(author: str | None, token: str) -> bool:
    """Does the merge give ``token``, an ``author:`` one, to a record by ``author``? Its author's; any, when the
    winner names no author (its author tokens cannot be judged)."""
    return author is None or token == audience.author_token(author)
