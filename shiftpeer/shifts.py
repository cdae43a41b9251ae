"""Local shift operations: create, edit, delete, show and feed queries, independent of HTTP.

The local API and any role call these; keeping them free of twisted.web means the rules (validation,
authorship, signing, where a shift lives) are tested directly and shared by every front end.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol
from urllib.parse import urlsplit

from twisted.logger import Logger

from shiftpeer.ids import bound_id
from shiftpeer.store import InvalidDocument, codec
from shiftpeer.store.revs import compute_rev, winner_key
from shiftpeer.urls import BadHref, lookup_forms, normalize_href

PRIVATE = "user/private"
PUBLIC = "user/public"
FEED = "user/feed"
#: Databases a user's own shifts live in, in the order they are searched.
OWN_DATABASES = (PRIVATE, PUBLIC)

MAX_SUMMARY = 2000
MAX_SPACE = 100
MAX_HREF = 4096
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
_SPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
#: Feed filters and the store index each one uses, most selective first.
FILTER_INDEXES = ("href", "author", "space", "domain", "type")
#: The document types a feed holds (shifts, comments, hub messages and notices).
DOC_TYPES = ("shift", "comment", "message", "notice")

log = Logger()


class ShiftError(Exception):
    """A request the shift rules refuse; ``status`` is the HTTP status the API answers with."""

    status = 400
    #: The machine-readable ``code`` of the API's error answer (the flow routes' codes), None for none.
    code: Optional[str] = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidShift(ShiftError):
    """Bad input: a missing field, a bad URL, content that is not a JSON object."""

    status = 400
    code = "bad_request"


class ShiftNotFound(ShiftError):
    """No shift with that id on this node."""

    status = 404
    code = "not_found"


class ShiftDeleted(ShiftNotFound):
    """The user's own shift is deleted: here, or by another copy of the account (its tombstones, which only
    user/feed holds, end every live revision of the own copy). Still a 404 ``not_found`` (what a shift deleted
    here has always been), saying so; the flow routes answer it as it is, rather than asking the hub."""


class ShiftGone(ShiftError):
    """An edit, publish or resolve of the user's own shift that another copy of the account deleted (its
    tombstones, only in user/feed, end every live revision of the own copy): refused at once, nothing written,
    as a comment edit on a shift gone is. Written, the edit would bring the shift back where it went."""

    status = 409
    code = "shift_gone"


def gone_message(shift_id: str, what: str = "shift") -> str:
    """Why a change of the user's own document another copy of the account deleted is refused."""
    return (f"{what} {shift_id} is deleted: another copy of your account deleted it (its tombstones reached this "
            f"node through the hub); nothing was written")


class NotAuthor(ShiftError):
    """Only a shift's author may edit or delete it."""

    status = 403
    code = "not_author"


class EditConflict(ShiftError):
    """The caller edited an older revision than the current one."""

    status = 409
    code = "conflict"


class NoConflicts(ShiftError):
    """A resolve of a shift that has one live revision: there is nothing to resolve."""

    status = 409
    code = "no_conflicts"


class Signer(Protocol):
    """The store's ``sign`` callback (identity.signing.sign_doc with a key). Database.put passes the body's
    canonical CBOR it encoded for the revision, which sign_doc splices in; other callers may leave it out."""

    def __call__(self, docid: str, rev: str, body: dict, deleted: bool,
                 body_cbor: Optional[bytes] = None) -> bytes: ...


@dataclass
class ShiftView:
    """A shift as the API shows it: the winning revision, its conflicts and where it lives."""

    id: str
    rev: str
    deleted: bool
    body: dict
    conflicts: list[str]
    databases: list[str]

    def to_json(self) -> dict:
        out = dict(self.body)
        out.update(
            {
                "id": self.id,
                "rev": self.rev,
                "deleted": self.deleted,
                "conflicts": list(self.conflicts),
                "databases": list(self.databases),
            }
        )
        return out


def new_shift_id(author: str) -> str:
    """A new shift id: bound to its author (``shiftpeer.ids.bound_id``), random after that (96 bits), so ids
    made on different machines never collide and no one else can write a shift under it."""
    return bound_id(author)


def domain_of(href: str) -> str:
    """The host part of a page URL, lower case without port, used by the domain index."""
    return (urlsplit(href).hostname or "").lower()


def check_href(href: Any) -> str:
    """The normal form (shiftpeer/urls.py) of an absolute http(s) URL with a host, else InvalidShift."""
    if not isinstance(href, str) or not href:
        raise InvalidShift("href is required: the URL of the page the shift modifies")
    if len(href) > MAX_HREF:
        raise InvalidShift(f"href is longer than {MAX_HREF} characters")
    try:
        return normalize_href(href)
    except BadHref:
        raise _bad_href("href", href) from None


def check_type(value: Any) -> str:
    """Return a document type a feed can ask for, else raise InvalidShift."""
    if value not in DOC_TYPES:
        raise InvalidShift(f"type must be one of {', '.join(DOC_TYPES)}, got {str(value)[:100]!r}")
    return value


def href_lookups(values: Any) -> list[str]:
    """The href index values a feed filter looks up (urls.lookup_forms of each), or InvalidShift."""
    out: list[str] = []
    for h in _as_list(values):
        if not isinstance(h, str) or not h or len(h) > MAX_HREF:
            raise InvalidShift(f"href filter must be a page URL of at most {MAX_HREF} characters")
        try:
            out.extend(f for f in lookup_forms(h) if f not in out)
        except BadHref:
            raise _bad_href("href filter", h) from None
    return out


def _bad_href(what: str, href: str) -> InvalidShift:
    return InvalidShift(f"{what} must be an absolute http:// or https:// URL with a host (and a valid port), "
                        f"got {href[:200]!r}")


def check_space(space: Any) -> str:
    """Return the Space name when it is a short identifier, else raise InvalidShift."""
    if not isinstance(space, str) or not space:
        raise InvalidShift("space is required: the name of the Space that made the shift (e.g. Notes)")
    if len(space) > MAX_SPACE or not _SPACE_RE.match(space):
        raise InvalidShift(
            f"space must be 1-{MAX_SPACE} letters, digits, '_', '.' or '-', got {space!r}"
        )
    return space


def check_summary(summary: Any) -> str:
    """Return the summary when it is a string of bounded length, else raise InvalidShift."""
    if not isinstance(summary, str):
        raise InvalidShift("summary must be a string")
    if len(summary) > MAX_SUMMARY:
        raise InvalidShift(f"summary is longer than {MAX_SUMMARY} characters")
    return summary


def check_content(content: Any) -> dict:
    """Return the content when it is a JSON object (what a Space replays), else raise InvalidShift."""
    if not isinstance(content, dict):
        raise InvalidShift("content must be a JSON object, e.g. {\"text\": \"hello\"}")
    return content


#: The answer to a paging cursor this node never handed out (mistyped, or made up): the caller's mistake.
BAD_CURSOR = "cursor is not one this node handed out; use next_cursor from a feed reply"


def check_cursor(cursor: Any) -> str | None:
    """The store's paging cursor is an opaque string handed out as next_cursor."""
    if cursor in (None, ""):
        return None
    if not isinstance(cursor, str) or len(cursor) > 1000:
        raise InvalidShift(BAD_CURSOR)
    return cursor


class Shifts:
    """The user's shift operations on a node's store, signed by the node key and timed by the clock."""

    def __init__(self, store: Any, account_id: str, sign: Signer, clock: Any):
        self._store = store
        self.account_id = account_id
        self._sign = sign
        self._clock = clock

    def _db(self, name: str):
        return self._store.database(name)

    def _locate(self, shift_id: str) -> tuple[Any, Any]:
        """Find the user's own copy of a shift: (database, doc) in user/private or user/public."""
        check_id(shift_id)
        for name in OWN_DATABASES:
            if not self._store.has_database(name):
                continue
            db = self._db(name)
            doc = db.get(shift_id)
            if doc is not None and not doc.deleted:
                if doc.body.get("type") == "comment":
                    # the comment routes keep a comment's shape (its text, and its shift in the tombstone)
                    raise InvalidShift(f"{shift_id} is a comment: change it with PATCH or DELETE "
                                       f"/v1/comments/{shift_id} ('shiftpeer comment edit|delete')")
                return db, doc
        if self._store.has_database(FEED):
            doc = self._db(FEED).get(shift_id)
            if doc is not None and not doc.deleted:
                raise NotAuthor(f"shift {shift_id} is by {doc.body.get('author')}; only its author may change it")
        raise ShiftNotFound(f"no shift {shift_id} on this node (list yours with 'shiftpeer feed')")

    def create(self, fields: dict) -> dict:
        """Save a new shift in user/private, signed; it reaches user/feed through local replication."""
        if not isinstance(fields, dict):
            raise InvalidShift("the request body must be a JSON object")
        unknown = set(fields) - {"space", "href", "summary", "content"}
        if unknown:
            raise InvalidShift(f"unknown field(s): {', '.join(sorted(unknown))}")
        href = check_href(fields.get("href"))
        now = self._clock.seconds()
        body = {
            "type": "shift",
            "space": check_space(fields.get("space")),
            "href": href,
            "domain": domain_of(href),
            "summary": check_summary(fields.get("summary", "")),
            "content": check_content(fields.get("content", {})),
            "author": self.account_id,
            "created": now,
            "modified": now,
        }
        shift_id = new_shift_id(self.account_id)
        rev = self._db(PRIVATE).put(shift_id, body, sign=self._sign)
        log.info("created shift {shift_id} rev {rev} in {space}", shift_id=shift_id, rev=rev, space=body["space"])
        return {"id": shift_id, "rev": rev, "database": PRIVATE}

    def edit(self, shift_id: str, fields: dict) -> dict:
        """Write a new revision of one of the user's shifts where it lives (private or public), on its latest
        revision (``account_revisions``' ``first``, what ``show`` prints): a later edit another copy of the account
        made, which only user/feed holds, joins the own copy first (``catch_up``, with that copy's tombstones),
        else the two edits were a conflict wherever they met, and a branch it tombstoned came back. Other live
        branches stay, as ``show``'s conflicts, until a resolve. A shift that copy deleted is ``ShiftGone``."""
        if not isinstance(fields, dict):
            raise InvalidShift("the request body must be a JSON object")
        unknown = set(fields) - {"summary", "content", "rev"}
        if unknown:
            raise InvalidShift(f"unknown or read-only field(s): {', '.join(sorted(unknown))}")
        if not ("summary" in fields or "content" in fields):
            raise InvalidShift("nothing to change: give summary and/or content")
        db, doc = self._locate(shift_id)
        self._check_author(shift_id, doc)
        revs = account_revisions(self._store, db, doc, self.account_id)
        if revs.first is None:
            raise ShiftGone(gone_message(shift_id))
        parent, base = revs.first, revs.body
        expected = fields.get("rev")
        if expected is not None and expected != parent:
            raise EditConflict(f"shift {shift_id} is at {parent}, not {expected}: show it again and retry")
        body = dict(base)
        _renormalize_href(body)
        if "summary" in fields:
            body["summary"] = check_summary(fields["summary"])
        if "content" in fields:
            body["content"] = check_content(fields["content"])
        body["modified"] = self._clock.seconds()
        rev = put_on_latest(self._store, db, shift_id, body, revs.catch_up, parent, self._sign)
        log.info("edited shift {shift_id} rev {rev} in {db}", shift_id=shift_id, rev=rev, db=db.name)
        return {"id": shift_id, "rev": rev, "database": db.name}

    def delete(self, shift_id: str) -> dict:
        """Write a signed tombstone; its body keeps the author so every node can verify it. A shift with
        conflicts (``show``'s, the feed-only branches too) gets one on every live leaf, in one transaction:
        a tombstone on the winner alone made the other branch the winner, and the shift stayed. So does a
        later edit only the feed holds (made by another copy of the account): it would win over the tombstone.
        A shift that copy deleted (its tombstones end every live revision here) is already deleted: 404, as for
        one deleted here, and nothing is written."""
        db, doc = self._locate(shift_id)
        self._check_author(shift_id, doc)
        rev = delete_everywhere(self._store, db, doc, self._tombstone(doc), self._sign)
        if rev is None:   # as for a shift deleted here: nothing to delete
            raise ShiftDeleted(f"no shift {shift_id} on this node: it is already deleted, by another copy of your "
                               "account (its tombstones reached this node through the hub)")
        log.info("deleted shift {shift_id} rev {rev} in {db}", shift_id=shift_id, rev=rev, db=db.name)
        return {"id": shift_id, "rev": rev, "deleted": True, "database": db.name}

    def resolve(self, shift_id: str, keep: Any = None) -> dict:
        """End a conflict on the user's own shift: a signed tombstone on every live leaf but ``keep`` (default:
        the revision ``show`` prints), in one transaction, where the shift lives; the revisions only user/feed
        holds join it first (``account_revisions``: where another copy edited on from a branch, that edit is the
        leaf, not the branch; a branch it tombstoned is no leaf, and its tombstone joins too). The tombstones
        reach every copy the way an edit does (user/public's replication, the outbox's delivery). A resolve picks
        the content, not where the shift is published: when the branches' signed audiences differ, the kept
        revision gets a new signed revision on top with their union (``_keep_widened``). Returns the revision
        that wins. A shift that copy deleted is ``ShiftGone``."""
        if keep is not None and not isinstance(keep, str):
            raise InvalidShift("keep must be a revision string, as 'shift show' lists it")
        db, doc = self._locate(shift_id)
        self._check_author(shift_id, doc)
        revs = account_revisions(self._store, db, doc, self.account_id)
        if revs.first is None:
            raise ShiftGone(gone_message(shift_id))
        elsewhere, live = revs.joins, revs.live
        if len(live) == 1:
            raise NoConflicts(f"shift {shift_id} has no conflicts: {revs.first} is its only live revision")
        keep = revs.first if keep is None else keep
        if keep not in live:
            raise InvalidShift(f"keep {keep[:100]!r} is not a live revision of shift {shift_id} "
                               f"(live: {', '.join(live)})")
        losers = [r for r in live if r != keep]
        leaves = {d["rev"]: d for d in (*db.get_repl_docs([(shift_id, None)]), *elsewhere) if not d["deleted"]}
        # a branch from before a refusal must not bring back a name that left the audience (one who registers
        # it later would receive the shift): the outbox's refused targets stay out
        refused = _refused_targets(self._store, shift_id)
        union = audience_union([leaves[r]["body"] for r in live], refused)
        if audience_union([leaves[keep]["body"]]) == union and not (union["public"] and db.name == PRIVATE):
            tombstones = write_tombstones(self._store, db, doc, elsewhere, losers, self._tombstone(doc), self._sign)
            rev, where = keep, db.name
        else:
            tombstones, rev, where = self._keep_widened(db, doc, elsewhere, losers, leaves, keep, union)
        log.info("resolved shift {shift_id} in {db}: kept {keep} as {rev}, deleted {losers}", shift_id=shift_id,
                 db=where, keep=keep, rev=rev, losers=losers)
        return {"id": shift_id, "rev": rev, "removed": losers, "tombstones": tombstones, "database": where}

    def _keep_widened(self, db: Any, doc: Any, elsewhere: list[dict], losers: list[str], leaves: dict, keep: str,
                      union: dict) -> tuple[list[str], str, str]:
        """The resolve when the kept revision names other places than the branches together: in one transaction,
        the losers' tombstones and a signed revision of ``keep`` whose audience is ``union``. Without it a place
        the kept revision does not name got the other revision's tombstone and refused the kept one (the shift
        was gone there), and a place only a losing branch went to kept that branch live (the outbox follows
        the new audience there). A public union moves a
        shift that lived in user/private to user/public as publishing does: the new revision there, a sibling
        tombstone in user/private, and the losers' tombstones in both, so ``master`` drops a public losing
        branch too. Returns (tombstones, the new revision, the database the shift now lives in)."""
        body = {**leaves[keep]["body"], "audience": union, "modified": self._clock.seconds()}
        tomb = self._tombstone(doc)
        if not (union["public"] and db.name == PRIVATE):
            with self._store.write_txn() as txn:
                tombstones = write_tombstones(self._store, db, doc, elsewhere, losers, tomb, self._sign)
                rev = db.put(doc.id, body, parent=keep, sign=self._sign, txn=txn)
            return tombstones, rev, db.name
        tombs = [self._signed(doc.id, leaves[r], tomb, deleted=True) for r in losers]
        moved = self._signed(doc.id, leaves[keep], body, deleted=False)
        public = self._store.create_database(PUBLIC)
        with self._store.write_txn() as txn:
            if elsewhere:
                db.bulk_replicated(elsewhere, txn=txn)
            db.bulk_replicated(tombs, txn=txn)
            db.put(doc.id, tomb, parent=keep, deleted=True, sign=self._sign, txn=txn)
            public.bulk_replicated([moved, *tombs], txn=txn)
        return [t["rev"] for t in tombs], moved["rev"], PUBLIC

    def _signed(self, docid: str, parent: dict, body: dict, deleted: bool) -> dict:
        """A signed revision on ``parent`` (a repl doc) as a repl doc, to write to more than one database (its
        body in canonical key order: bulk_replicated stores the bytes in the order it is given)."""
        body = codec.in_canonical_order(body)
        rev = compute_rev(parent["rev"], deleted, body)
        return {"id": docid, "rev": rev, "deleted": deleted, "body": body, "sig": self._sign(docid, rev, body, deleted),
                "history": [rev, *parent["history"]]}

    def _tombstone(self, doc: Any) -> dict:
        """A tombstone's body: it keeps the type and the author, so every node can verify it."""
        return {"type": doc.body.get("type", "shift"), "author": self.account_id, "modified": self._clock.seconds()}

    def _check_author(self, shift_id: str, doc: Any) -> None:
        author = doc.body.get("author")
        if author != self.account_id:
            raise NotAuthor(f"shift {shift_id} is by {author}; only its author may change it")

    def show(self, shift_id: str) -> ShiftView:
        """The shift's winning revision, its conflicts, and every local database that holds it. For the user's
        own copy these include the revisions only user/feed holds (``account_revisions``): a later edit of the
        winner, or a deeper one of a losing branch, is the revision shown (the one an edit continues), a
        continued branch is listed at its continuation, and a leaf that copy tombstoned (its resolve) is not
        listed. A shift deleted, here or by that copy, is ``ShiftDeleted`` (404)."""
        check_id(shift_id)
        found: list[tuple[str, Any]] = []
        for name in (*OWN_DATABASES, FEED):
            if self._store.has_database(name):
                doc = self._db(name).get(shift_id)
                if doc is not None:
                    found.append((name, doc))
        live = [(n, d) for n, d in found if not d.deleted]
        if not live and any(n in OWN_DATABASES for n, _ in found):
            raise ShiftDeleted(f"no shift {shift_id} on this node: it is deleted (list shifts with 'shiftpeer feed')")
        if not live:
            raise ShiftNotFound(f"no shift {shift_id} on this node (list shifts with 'shiftpeer feed')")
        name, doc = live[0]
        revs = AccountRevisions(doc.rev, None, list(doc.conflicts or []), [], body=doc.body) if name == FEED else \
            account_revisions(self._store, self._db(name), doc, self.account_id)
        if revs.first is None:
            raise ShiftDeleted(f"no shift {shift_id} on this node: it is deleted, by another copy of your account "
                               "(its tombstones reached this node through the hub)")
        return ShiftView(
            id=doc.id,
            rev=revs.first,
            deleted=bool(doc.deleted),
            body=dict(revs.body),
            conflicts=revs.conflicts,
            databases=[n for n, _ in live],
        )

    def feed(self, filters: dict, limit: int = DEFAULT_LIMIT, cursor: str | None = None, *,
             since: float | None = None, until: float | None = None) -> dict:
        """Query user/feed, newest first, created in [since, until): the most selective filter uses its
        index (bounded by the time range), the rest filter rows."""
        limit = check_limit(limit)
        wanted = {k: v for k, v in filters.items() if v not in (None, "", [])}
        unknown = set(wanted) - set(FILTER_INDEXES)
        if unknown:
            raise InvalidShift(
                f"unknown filter(s): {', '.join(sorted(unknown))} (use {', '.join(FILTER_INDEXES)})"
            )
        if "href" in wanted:
            wanted["href"] = href_lookups(wanted["href"])
        if "type" in wanted:
            wanted["type"] = [check_type(t) for t in _as_list(wanted["type"])]
        if "domain" in wanted:
            wanted["domain"] = [d.lower() for d in _as_list(wanted["domain"])]
        index = next((f for f in FILTER_INDEXES if f in wanted), "all")
        values = _as_list(wanted[index]) if index != "all" else None
        rest = {k: set(_as_list(v)) for k, v in wanted.items() if k != index}
        db = self._db(FEED)
        store_cursor = check_cursor(cursor)
        rows: list[Any] = []
        # The extra filters may drop rows: page on (asking only for what is still missing, so the cursor
        # stays exact) until the limit is filled or the index is exhausted.
        for _ in range(64):
            try:
                docs, store_cursor = db.query(index, values, limit=limit - len(rows), cursor=store_cursor,
                                              since=since, until=until)
            except InvalidDocument:   # a cursor this node never handed out (the rest is checked above)
                raise InvalidShift(BAD_CURSOR) from None
            for doc in docs:
                if doc.deleted:
                    continue
                if all(doc.body.get(k) in allowed for k, allowed in rest.items()):
                    rows.append(doc)
            if len(rows) >= limit or store_cursor is None:
                break
        return {
            "rows": [
                ShiftView(d.id, d.rev, bool(d.deleted), dict(d.body), list(d.conflicts or []), [FEED]).to_json()
                for d in rows
            ],
            "next_cursor": store_cursor,
        }


def feed_only_revisions(store: Any, db: Any, doc: Any, account_id: str) -> list[dict]:
    """The author's leaves of a document, live ones and tombstones, that user/feed holds but the own copy
    (``db``, whose winner is ``doc``) has never seen: written by another copy of the account (or before a
    restored backup; a tombstone by its delete or resolve) and come back through the hub. Each must verify under
    the author's key. ``account_revisions`` sorts them out."""
    if not store.has_database(FEED):
        return []
    from shiftpeer.identity.signing import verify_repl_doc

    found = [d for d in store.database(FEED).get_repl_docs([(doc.id, None)]) if d["body"].get("author") == account_id]
    unknown = set(db.revs_diff({doc.id: [d["rev"] for d in found]}).get(doc.id, ()))
    return [d for d in found if d["rev"] in unknown and verify_repl_doc(d)]


@dataclass
class AccountRevisions:
    """Every live revision of the author's document, the own copy's and those only user/feed holds
    (``account_revisions``): what ``show`` lists, ``resolve`` chooses from and ``delete`` tombstones."""

    #: The revision shown, edited on and kept by default: the store's winner among the own copy's live leaves,
    #: each taken at its newest continuation in the feed (what every place that holds both now shows); when
    #: another copy of the account tombstoned all of those (its resolve), the first branch only the feed holds.
    #: None when nothing is live: that copy deleted the document.
    first: Optional[str]
    #: ``first``'s repl doc when only the feed holds it (an edit joins it to the own copy first), else None.
    later: Optional[dict]
    #: The other live revisions: the own leaves (or their continuations) in losing order, then the branches
    #: only the feed holds, which descend from no live leaf of the own copy.
    conflicts: list[str]
    #: The feed-only live revisions among these, to join the own copy before anything is written on them.
    joining: list[dict]
    #: The feed-only tombstones that end a live leaf of the own copy (the other copy's delete or resolve), to
    #: join the own copy before anything is written, so that it holds what that copy decided.
    ending: list[dict] = field(default_factory=list)
    #: The own copy's live leaves as they are once the feed's revisions join it (winner first): what a publish,
    #: which moves or re-signs one revision, needs to be alone.
    own: list[str] = field(default_factory=list)
    #: ``first``'s body (None with ``first``).
    body: Optional[dict] = None

    @property
    def live(self) -> list[str]:
        return [] if self.first is None else [self.first, *self.conflicts]

    @property
    def joins(self) -> list[dict]:
        """What a resolve or delete writes over beside the own copy's leaves: the joining and ending revisions."""
        return [*self.joining, *self.ending]

    @property
    def catch_up(self) -> list[dict]:
        """What joins the own copy before an edit of ``first``: ``later`` (its parent) and the tombstones."""
        return [*([self.later] if self.later is not None else []), *self.ending]


def account_revisions(store: Any, db: Any, doc: Any, account_id: str) -> AccountRevisions:
    """The live revisions of the author's document (winner ``doc`` in its own copy ``db``) once the feed's
    revisions of it (``feed_only_revisions``) join the own copy. One that descends from a live leaf of the own
    copy continues that leaf, which is then no longer live: another copy of the account edited on from it,
    from the winner (a later edit, not a conflict) or from a losing branch (the copy went on with the branch
    that lost here; that edit, deeper, may now win everywhere it went: docs/flows.md, *Conflicts*), or wrote a
    tombstone on it (its resolve, or its delete), which ends it. The live ones that descend from no own leaf
    are branches beside the own copy."""
    found = feed_only_revisions(store, db, doc, account_id)
    own = [doc.rev, *(doc.conflicts or [])]
    mine = set(own)
    onward = [d for d in found if mine.intersection(d["history"])]
    continued = {r for d in onward for r in d["history"] if r in mine}
    leaves = sorted([r for r in own if r not in continued] + [d["rev"] for d in onward if not d["deleted"]],
                    key=lambda r: winner_key(r, False), reverse=True)
    branches = [d["rev"] for d in found if not d["deleted"] and not mine.intersection(d["history"])]
    live = [*leaves, *branches]   # the own leaves first, even when a branch beside them would win
    if not live:
        return AccountRevisions(first=None, later=None, conflicts=[], joining=[],
                                ending=[d for d in onward if d["deleted"]])
    later = next((d for d in found if d["rev"] == live[0]), None)
    body = later["body"] if later is not None else doc.body if live[0] == doc.rev else db.get(doc.id, rev=live[0]).body
    return AccountRevisions(first=live[0], later=later, conflicts=live[1:],
                            joining=[d for d in found if not d["deleted"]],
                            ending=[d for d in onward if d["deleted"]], own=leaves, body=body)


def put_on_latest(store: Any, db: Any, docid: str, body: dict, joining: list[dict], parent: str,
                  sign: Signer) -> str:
    """Write an edit ``body`` on ``parent`` in ``db``, in one transaction with ``joining`` (``account_revisions``'
    ``catch_up``: the parent when only the feed holds it, and the tombstones another copy of the account wrote)
    joining the own copy first. Returns the new revision."""
    with store.write_txn() as txn:
        if joining:
            db.bulk_replicated(joining, txn=txn)
        return db.put(docid, body, parent=parent, sign=sign, txn=txn)


def write_tombstones(store: Any, db: Any, doc: Any, elsewhere: list[dict], leaves: list[str], tomb: dict,
                     sign: Signer) -> list[str]:
    """In one transaction (the caller's, when it has one open): the branches only the feed had (``elsewhere``)
    join the own copy ``db``, to be kept or tombstoned there, and each of ``leaves`` gets a signed tombstone
    ``tomb``. Returns the tombstones' revs."""
    with store.write_txn() as txn:
        if elsewhere:
            db.bulk_replicated(elsewhere, txn=txn)
        return [db.put(doc.id, tomb, parent=r, deleted=True, sign=sign, txn=txn) for r in leaves]


def audience_union(bodies: list[dict], refused: Any = ()) -> dict:
    """The union of the signed audiences of some revisions (roles/audience.py's shape, names sorted), less the
    ``refused`` targets (``group:<g>``, ``user:<u>``)."""
    from shiftpeer.roles import audience

    auds = [audience.of(b) for b in bodies]
    union = {"public": any(a["public"] for a in auds), "groups": sorted({g for a in auds for g in a["groups"]}),
             "to": sorted({u for a in auds for u in a["to"]})}
    return audience.without(union, list(refused))


def delete_everywhere(store: Any, db: Any, doc: Any, tomb: dict, sign: Signer) -> str | None:
    """Tombstone every live revision of the author's document (winner ``doc`` in its own copy ``db``), in one
    transaction: its conflicts, and the revisions only user/feed holds (``account_revisions``), branches and
    continuations of the own leaves, which would otherwise win over the tombstone; the tombstones another copy of
    the account wrote join too. Returns the first tombstone's rev; None, writing nothing, when that copy's
    tombstones left nothing live (it deleted the document)."""
    revs = account_revisions(store, db, doc, tomb["author"])
    if revs.first is None:
        return None
    return write_tombstones(store, db, doc, revs.joins, revs.live, tomb, sign)[0]


def _refused_targets(store: Any, docid: str) -> list[str]:
    """The targets the hub refused for good for this document, as its outbox holds them (none without one)."""
    from shiftpeer.roles.publishing import OUTBOX, refused_targets

    return refused_targets(store.database(OUTBOX), docid) if store.has_database(OUTBOX) else []


def _renormalize_href(body: dict) -> None:
    """Bring a shift stored before href normalization into normal form as its author edits it, so
    queries by the normal form find it from then on (an href that no longer passes is left alone)."""
    href = body.get("href")
    if isinstance(href, str):
        try:
            body["href"] = normalize_href(href)
        except BadHref:
            pass


def check_id(shift_id: Any) -> str:
    """Return the id when it is a plausible document id, else raise InvalidShift."""
    if not isinstance(shift_id, str) or not shift_id or len(shift_id) > 200 or "/" in shift_id:
        raise InvalidShift(f"not a shift id: {shift_id!r}")
    return shift_id


def check_limit(limit: Any) -> int:
    """Return limit as an int in 1..MAX_LIMIT, else raise InvalidShift."""
    try:
        n = int(limit)
    except (TypeError, ValueError):
        raise InvalidShift(f"limit must be a whole number, got {limit!r}") from None
    if not 1 <= n <= MAX_LIMIT:
        raise InvalidShift(f"limit must be between 1 and {MAX_LIMIT}, got {n}")
    return n


def _as_list(value: Any) -> list:
    if isinstance(value, (list, tuple, set)):
        return list(value)
    return [value]


def make_signer(key: Any) -> Signer:
    """The store's ``sign`` callback: identity's sign_doc with the node key (refuses others' bodies)."""
    from shiftpeer.identity.signing import sign_doc

    return functools.partial(sign_doc, key)
