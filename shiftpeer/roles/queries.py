"""Queries: a page URL in normal form (the hot path, shiftpeer/urls.py), domain, author, Space, group, people I follow, my favorites, a thread,
each optionally within a created-time range ``[since, until)``.

One engine, ``run``, pages a store index newest first and applies the remaining filters; ``shared``
is asked with the caller's visibility tokens (``public``, ``author:<me>``, ``user:<me>``,
``group:<g>`` for each group they may read), so the hub never scans all of ``shared``. A full peer
runs the same engine over its own ``user/feed`` with no tokens, except ``group:<g>`` for a group
filter (``feed_tokens``).
"""

from __future__ import annotations

from typing import Any, Callable

from shiftpeer import times
from shiftpeer.identity import is_account_id
from shiftpeer.identity.signing import verify_repl_doc
from shiftpeer.ids import author_tag
from shiftpeer.roles import audience
from shiftpeer.roles.groups import RANK
from shiftpeer.roles.names import FlowError, check_name
from shiftpeer.roles.tokenjudge import PLACES, Judge
from shiftpeer.roles.validation import answers_no_shift, holds_no_shift
from shiftpeer.shifts import BAD_CURSOR, InvalidShift, check_type, href_lookups
from shiftpeer.store import indexes
from shiftpeer.store.codec import decode_body, encode_body
from shiftpeer.store.errors import InvalidDocument
from shiftpeer.store.keys import created_seconds
from shiftpeer.store.revs import parse_rev
from shiftpeer.sync.refusedrevs import Refused

#: Filters that map to a store index, most selective first.
INDEXED = ("thread", "href", "author", "space", "domain")
FILTERS = frozenset(INDEXED) | {"group", "type"}
MAX_LIMIT = 500
MAX_PAGES = 64
#: Bounds the leaves of one document a ``revisions`` answer carries (each a live branch or a tombstone), and
#: their bodies' bytes (a document may weigh 1 MiB: the store's ``max_doc_bytes``; a frame 16 MiB).
MAX_OWN_LEAVES = 100
MAX_OWN_BYTES = 4 << 20


def check_query(args: Any) -> dict:
    """Normalise query arguments: ``filters`` (name -> value or list), ``following``, ``favorites``,
    ``since``, ``until``, ``limit``, ``cursor``; raise FlowError for anything else."""
    if not isinstance(args, dict):
        raise FlowError("a query is a map", "bad_request")
    filters = args.get("filters") or {}
    if not isinstance(filters, dict) or not set(filters) <= FILTERS:
        raise FlowError(f"filters must be a map of {', '.join(sorted(FILTERS))}", "bad_request")
    clean = {}
    for k, v in filters.items():
        values = v if isinstance(v, list) else [v]
        if v in (None, "", []):
            continue
        if not all(isinstance(x, str) and 0 < len(x) <= 4096 for x in values) or len(values) > 100:
            raise FlowError(f"filter {k!r} takes a string or a list of strings", "bad_request")
        clean[k] = [x.lower() for x in values] if k == "domain" else values
    try:  # the same rules as the core feed: href in normal form (shiftpeer/urls.py), a known type
        if "href" in clean:
            clean["href"] = href_lookups(clean["href"])
        if "type" in clean:
            clean["type"] = [check_type(t) for t in clean["type"]]
    except InvalidShift as e:
        raise FlowError(e.message, "bad_request") from None
    limit = args.get("limit", 50)
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise FlowError(f"limit must be a whole number from 1 to {MAX_LIMIT}", "bad_request")
    cursor = args.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise FlowError("cursor must be the next_cursor of an earlier page", "bad_request")
    return {"filters": clean, "following": bool(args.get("following")), "favorites": bool(args.get("favorites")),
            **check_times(args), "limit": limit, "cursor": cursor}


def check_times(args: dict) -> dict:
    """``since`` and ``until`` as numbers of seconds (or None), in order; FlowError otherwise."""
    try:
        bounds = {k: None if args.get(k) is None else times.check_time(args[k], k) for k in ("since", "until")}
        times.check_range(bounds["since"], bounds["until"])
    except times.BadTime as e:
        raise FlowError(str(e), "bad_request") from None
    return bounds


def in_range(body: dict, since: float | None, until: float | None) -> bool:
    """Is the document's created time inside ``[since, until)``, compared as the store indexes it?"""
    t = created_seconds(body.get("created"))
    return (since is None or since <= t) and (until is None or t < until)


def matches(body: dict, filters: dict, since: float | None, until: float | None) -> bool:
    """Does ``body`` match every filter of a query and lie within ``[since, until)``, as ``run`` matches the
    rows it pages? For rows no index paged by their own body: favorites, a place's revision (``run``'s
    ``stand_in``)."""
    if body.get("type", "shift") not in wanted_types(filters) or not in_range(body, since, until):
        return False
    groups = filters.get("group")
    if groups and not set(groups) & set(audience.of(body)["groups"]):
        return False
    return all(indexes.matches(body, indexes.INDEXES[k], set(v)) for k, v in filters.items()
               if k not in ("group", "type"))


def run(db: Any, filters: dict, *, vis: list[str] | None, limit: int, cursor: str | None,
        keep: Callable[[Any], bool] = lambda doc: True, since: float | None = None,
        until: float | None = None, body_bytes: bool = False,
        stand_in: Callable[[Any], Any] | None = None) -> tuple[list[Any], str | None]:
    """Page the most selective index of ``db`` newest first within ``[since, until)``, keeping docs
    that pass every other filter (``body_bytes``: with their stored body bytes, ``stored_row``). A doc
    ``keep`` refuses gives way to ``stand_in(doc)`` (another revision of it, or None) when that matches the
    filters too (``HubQueries``: the revision a place of the caller's holds)."""
    index = next((f for f in INDEXED if f in filters), None)
    values = filters[index] if index else None
    rest = {k: set(v) for k, v in filters.items() if k not in (index, "group", "type")}
    groups = set(filters.get("group", ()))
    types = wanted_types(filters)
    rows: list[Any] = []
    for _ in range(MAX_PAGES):
        # Ask only for what is still missing: the store's cursor is just past the last row it returned,
        # so a page never holds more than `limit` rows and none is skipped between pages.
        try:
            docs, cursor = db.query(index or "all", values, vis=vis, limit=limit - len(rows), cursor=cursor,
                                    since=since, until=until, body_bytes=body_bytes)
        except InvalidDocument:   # check_query checked the rest: a cursor this node never handed out
            raise FlowError(BAD_CURSOR, "bad_request") from None
        for doc in docs:
            body = doc.body
            if body.get("type", "shift") not in types:
                continue
            if any(body.get(k) not in allowed for k, allowed in rest.items()):
                continue
            if groups and not groups & set(audience.of(body)["groups"]):
                continue
            if keep(doc):
                rows.append(doc)
            elif stand_in is not None:
                other = stand_in(doc)
                if other is not None and matches(other.body, filters, since, until):
                    rows.append(other)
        if len(rows) >= limit or cursor is None:
            break
    return rows, cursor


def wanted_types(filters: dict) -> set[str]:
    """The document types a query with ``filters`` answers: those of its ``type`` filter, else a thread's
    comments, else shifts."""
    return set(filters.get("type") or (("comment",) if "thread" in filters else ("shift",)))


def feed_tokens(filters: dict) -> list[str] | None:
    """The visibility tokens a query answered from a node's own ``user/feed`` reads: for a ``group`` filter,
    ``group:<g>``, which only the pull of the hub's ``group/<g>`` gives (roles/remote.py ``feed_source``), so a
    document that reached the feed another way (an inbox, ``master``) with a group in its signed audience is
    not taken for that group's; ``run`` still asks the winning revision's audience to name the group, as the
    hub's ``served`` does. None (every document) for any other query."""
    groups = filters.get("group")
    return [f"group:{check_name(g, 'group name')}" for g in groups] if groups else None


def answers_shifts(db: Any) -> Callable[[Any], bool]:
    """``keep`` for one query answered from ``db``: leave out a comment that answers what ``db`` holds as a
    comment (``validation.answers_no_shift``: taken before what it answers arrived, or by an older version), so
    it shows nowhere, whatever order things arrived in. Asked of comments only, once a query for each
    document they answer (a thread's rows answer one)."""
    known: dict[str, bool] = {}

    def keep(doc: Any) -> bool:
        body = doc.body
        answered = body.get("shift") if body.get("type") == "comment" else None
        if not isinstance(answered, str):
            return True
        ok = known.get(answered)
        if ok is None:
            ok = known[answered] = not answers_no_shift(db, body)
        return ok

    return keep


def thread_of_shifts(db: Any, filters: dict) -> dict | None:
    """``filters`` with the ``thread`` ids ``db`` holds as no shift left out: a comment's thread is empty (a
    comment answers a shift), for whoever asks, on the hub and on a node answering from its feed alike. None
    when no thread id is left (an empty page, without paging the replies ``answers_shifts`` would drop)."""
    thread = filters.get("thread")
    if not thread:
        return filters
    shifts = [t for t in thread if not holds_no_shift(db, t)]
    return None if not shifts else filters if len(shifts) == len(thread) else {**filters, "thread": shifts}


def history(doc: Any) -> list[str]:
    """A row's history: its revision and, where `doc` knows it (a ``StoredDoc``), the revision's parent, so
    that the asker can check the revision (``received_row``); `[rev]` alone for a revision at depth 1, and
    for rows a node shows only itself (its own feed, its unpublished shifts)."""
    parent = getattr(doc, "parent", None)
    return [doc.rev] if parent is None else [doc.rev, parent]


def row(doc: Any) -> dict:
    """A query result row: the winning revision (on the hub, or the one a place of the asker's holds:
    ``HubQueries._shown``) with its signature, so the asker can verify it."""
    return {"id": doc.id, "rev": doc.rev, "deleted": bool(doc.deleted), "body": doc.body, "sig": doc.sig,
            "history": history(doc)}


#: The query argument by which a user node asks the hub for rows with ``body_cbor`` (``stored_row``). A
#: hub that does not know it sends ``row``s: the asker takes either (``received_row``).
BODY_CBOR = "body_cbor"


def stored_row(doc: Any) -> dict:
    """A row whose body is the stored CBOR bytes (``Database.query(body_bytes=True)``), under ``body_cbor``:
    the hub sends them without encoding the body again, and the asker checks the signature over the very
    bytes it decodes the body from, without encoding it either."""
    return {"id": doc.id, "rev": doc.rev, "deleted": bool(doc.deleted), BODY_CBOR: doc.body_cbor, "sig": doc.sig,
            "history": history(doc)}


#: The hello feature (``+row_parents``) of a node whose answers name each row's parent (``history``): a
#: row without one from a hub that names it is refused; from an older hub, every edited shift's row comes so.
ROW_PARENTS = "row_parents"


def received_row(sent: Any) -> dict | None:
    """A row a hub answered with (``row`` or ``stored_row``) as a ``row``, if its signature and revision
    check (identity/signing.py ``verify_repl_doc``); None for anything else (``checked_row`` says why)."""
    got, ok = checked_row(sent)
    return got if ok is True else None


def checked_row(sent: Any) -> tuple[dict | None, Any]:
    """(``sent`` as a ``row``, verify_repl_doc's answer for it): True when its signature and revision check;
    the ``Refused`` that says why when its signature verifies but its revision does not check
    (``signing.BAD_REVISION``; ``STEMMED_HISTORY`` for a depth > 1 row without its parent); else (None,
    False) for anything that is not a row or whose signature does not verify."""
    if type(sent) is not dict:
        return None, False
    raw = sent.get(BODY_CBOR)
    if raw is None:
        got = sent
    elif type(raw) is not bytes or "body" in sent:
        return None, False
    else:
        try:
            body = decode_body(raw)
        except Exception:  # noqa: BLE001 - cbor2 raises several types for bad bytes; a bad row is no row
            return None, False
        got = {"id": sent.get("id"), "rev": sent.get("rev"), "deleted": sent.get("deleted", False), "body": body,
               "sig": sent.get("sig"), "history": sent.get("history")}
    ok = verify_repl_doc(got, raw)
    return (got, ok) if ok is True or isinstance(ok, Refused) else (None, False)


def served(doc: Any, tokens: set[str], judge: Callable[[Any, str], bool]) -> bool:
    """May a caller with ``tokens`` be given ``doc`` from ``shared``? One of their tokens must be on the
    record and name a place the winning revision's signed audience names: the record keeps the tokens of
    every place the document ever went, and a later revision may name fewer (a group that refused the
    author's edit leaves the audience, and keeps the earlier revision). A comment carries the tokens of its
    shift's record too, so this also keeps a comment made since, whose audience is the shift's narrower
    one, from the places the shift left. A place's token other than ``public`` counts only where
    ``judge(doc, token)`` (``HubQueries.author_judge``) says that place holds the winning revision: a node
    that never leaves a group that refused its author out of the audience (an older or a hostile one) signs
    the refused edit still naming the group, and another place takes it (its readers are served the revision
    the group holds instead: ``HubQueries._shown``). ``public`` on a shift asks no
    judge (no read for the rows anyone may see): a revision signed public is its author's to show anyone. An ``author:`` token counts for the
    record's author, and where ``judge`` says the merge gives it today (a comment's shift's author): an older
    merge left some on records their holder never wrote. A comment's place token counts only where ``judge``
    says so too (that place took it): an older merge gave a comment the places of its shift's that its
    audience named, a group that refused its author among them. Checked last and cheapest first: this runs
    on every row of a page, and only a row no cheaper token serves reads a place's database."""
    held = tokens.intersection(doc.vis)
    if not held:
        return False
    body = doc.body
    aud = audience.of(body)
    comment = body.get("type") == "comment"
    authors, places = [], []
    for t in held:
        if t.startswith(AUTHOR_PREFIX):
            authors.append(t)
        elif audience.names_token(aud, t):
            if t == audience.PUBLIC_TOKEN and not comment:
                return True
            places.append(t)
    author = body.get("author")
    if isinstance(author, str) and AUTHOR_PREFIX + author in authors:
        return True
    return any(judge(doc, t) for t in places) or any(judge(doc, t) for t in authors)


#: The prefix of an ``author:<account>`` token (``audience.author_token``).
AUTHOR_PREFIX = audience.author_token("")


class HubQueries:
    """Answers queries from ``shared`` with only what the caller may see."""

    def __init__(self, store: Any, accounts: Any, groups: Any, social: Any) -> None:
        self._store = store
        self._shared = store.create_database("shared")
        self._accounts = accounts
        self._groups = groups
        self._social = social

    def tokens(self, account_id: str, user: str) -> list[str]:
        """Everything ``user`` may see: public, their own, sent to them, their readable groups."""
        tokens = [audience.PUBLIC_TOKEN, audience.author_token(account_id), f"user:{user}"]
        for group, level in self._groups.memberships(user).items():
            if RANK.get(level, -1) >= RANK["read"]:
                tokens.append(f"group:{group}")
        return tokens

    def query(self, account_id: str, user: str, args: Any) -> dict:
        """Run one query for ``user``; rows are signed documents, newest first, with a next cursor."""
        q = check_query(args)
        filters = dict(q["filters"])
        tokens = self.tokens(account_id, user)
        if "author" in filters:
            filters["author"] = [self._account(a) for a in filters["author"]]
        if q["following"]:
            followed = [self._accounts.id_of(u) for u in self._social.follows_of(user)]
            followed = [a for a in followed if a]
            allowed = set(filters.get("author", followed)) & set(followed)
            if not allowed:
                return {"rows": [], "next_cursor": None}
            filters["author"] = sorted(allowed)
        if "group" in filters:
            for g in filters["group"]:
                check_name(g, "group name")
            tokens = [f"group:{g}" for g in filters["group"] if f"group:{g}" in tokens]
            if not tokens:
                missing = [g for g in filters["group"] if self._groups.get(g) is None]
                if missing:
                    raise FlowError(f"there is no group {missing[0]!r} on this hub", "no_group")
                raise FlowError("you are not a reader of that group", "forbidden")
        if q["favorites"]:
            return self._favorites(user, tokens, filters, q)
        filters = thread_of_shifts(self._shared, filters)
        if filters is None:
            return {"rows": [], "next_cursor": None}
        raw = args.get(BODY_CBOR) is True   # the asker takes stored bytes (docs/flows.md, *Queries*)
        shown, stand_in = self._shown(set(tokens))
        docs, cursor = run(self._shared, filters, vis=tokens, limit=q["limit"], cursor=q["cursor"], keep=shown,
                           since=q["since"], until=q["until"], body_bytes=True,   # StoredDocs: with parents
                           stand_in=stand_in)
        return {"rows": [(stored_row if raw else row)(d) for d in docs[: q["limit"]]], "next_cursor": cursor}

    def get(self, account_id: str, user: str, ids: Any) -> dict:
        """The documents among ``ids`` the caller may see (unknown or hidden ids are left out)."""
        if not isinstance(ids, list) or len(ids) > MAX_LIMIT or not all(isinstance(i, str) for i in ids):
            raise FlowError("ids must be a list of document ids", "bad_request")
        return {"rows": self._visible(ids, set(self.tokens(account_id, user))), "next_cursor": None}

    def _visible(self, ids: Any, tokens: set[str]) -> list[dict]:
        """Rows of the documents among ``ids`` that ``tokens`` may see, in the order asked: the winning
        revision, or the one a place of theirs holds (``_shown``)."""
        out, show = [], self._show(tokens)
        for docid in ids:
            doc = show(self._shared.get_stored(docid))
            if doc is not None:
                out.append(row(doc))
        return out

    def _show(self, tokens: set[str]) -> Callable[[Any], Any]:
        """For one ``get`` or comment check with ``tokens``: the revision of a document ``shared`` holds (live)
        that they are served (``_shown``), or None."""
        shown, stand_in = self._shown(tokens)
        return lambda doc: None if doc is None or doc.deleted else doc if shown(doc) else stand_in(doc)

    def _shown(self, tokens: set[str]) -> tuple[Callable[[Any], bool], Callable[[Any], Any]]:
        """``keep`` and ``stand_in`` for one query or ``get`` with ``tokens``. ``keep``: ``served``, and no comment
        answering a comment (``answers_shifts``: its author's token alone would still serve it to them).
        ``stand_in``, asked only of a row ``keep`` refused (public rows and those a token serves read nothing
        more): the revision a place of the caller's (a group they read, their inbox) holds, whose token the
        record carries, when the place holds no revision ``served`` gives them (it refused the winner, or the
        winner's audience left it out; ``Judge.place_revision``): what its readers' feeds hold. The newest of
        them if several places hold one; None if none does, or it answers no shift."""
        judge, answers = self.author_judge(), answers_shifts(self._shared)
        places, sources = {t for t in tokens if t.partition(":")[0] in PLACES}, Judge(self._store, self._shared)

        def stand_in(doc: Any) -> Any:
            held = [r for t in doc.vis if t in places and (r := sources.place_revision(doc, t)) is not None]
            best = max(held, key=lambda d: parse_rev(d.rev), default=None)
            return best if best is not None and answers(best) else None

        return (lambda doc: answers(doc) and served(doc, tokens, judge)), stand_in   # answers cached per shift

    def sees(self, account_id: Any, doc: Any) -> bool:
        """May this account see ``doc``, what ``shared`` holds under an id (``held_any``; None: nothing), at the
        winning revision? Never a deleted one. Takes the document read once by the caller, who asks more of it
        (``HubSocial``'s notifications, one read for every reader, which quote the winner)."""
        tokens = self._tokens_of(account_id)
        if tokens is None or doc is None or doc.deleted:
            return False
        return self._shown(tokens)[0](doc)

    def sees_a_revision(self, account_id: Any, doc: Any) -> bool:
        """May this account see ``doc`` (as ``sees``) at some revision, as ``get`` gives it to them: the winner,
        or the one a place of theirs holds (``_shown``)? ``HubRules``' comment checks: a group's reader may
        comment on the shift the group holds, though it refused the author's later revision."""
        tokens = self._tokens_of(account_id)
        return tokens is not None and self._show(tokens)(doc) is not None

    def _tokens_of(self, account_id: Any) -> set[str] | None:
        """The visibility tokens of a registered account (``tokens``), or None for an account not registered."""
        user = self._accounts.name_of(account_id)
        return None if user is None else set(self.tokens(account_id, user))

    def held_any(self, doc_id: Any) -> Any:
        """The winning revision ``shared`` holds under ``doc_id``, live or deleted, or None: a deleted comment is
        still no shift (``HubRules``' ``not_a_shift``, as a full peer's ``firehose_check`` asks its master)."""
        return self._shared.get(doc_id) if isinstance(doc_id, str) else None

    def places(self, doc_id: Any) -> set[str]:
        """The places the live document ``shared`` holds under ``doc_id`` went (``places_of``)."""
        return self.places_of(self.held_any(doc_id))

    def places_of(self, doc: Any) -> set[str]:
        """The places ``doc`` (``held_any``'s answer) went, as its winning revision stands today (``Judge.places``:
        its signed audience names them and their databases hold it by its author; empty: none, or ``doc`` is
        None or deleted). Not its tokens as they are: an older merge left some that say it went where it never
        did."""
        return set() if doc is None or doc.deleted else Judge(self._store, self._shared).places(doc)

    def own_revisions(self, account_id: str, docid: Any) -> list[dict]:
        """Every leaf, live or a tombstone, of the document ``docid`` in ``shared`` that ``account_id`` wrote, with
        its history and signature (``roles/othercopies.py``: what another copy of the account wrote on it where it
        went). ``shared`` merges ``master``, the groups and the inboxes, so this is every place the hub holds; a
        revision by anyone else is left out, so the caller learns nothing it did not write itself."""
        if not isinstance(docid, str) or not docid or len(docid) > 200:
            raise FlowError("id must be a document id", "bad_request")
        out, size = [], 0
        for d in self._shared.get_repl_docs([(docid, None)]):   # live leaves first, the winner first
            if d["body"].get("author") != account_id:
                continue
            size += len(encode_body(d["body"]))
            if len(out) == MAX_OWN_LEAVES or size > MAX_OWN_BYTES and out:
                break   # within one frame (sync/framing.py MAX_FRAME), whatever the bodies weigh
            out.append(d)
        return out

    def author_judge(self) -> Callable[[Any, str], bool]:
        """``served``'s judge for one query: does this token serve the winning revision? A place's when that
        place's database holds the winning revision (``Judge.holds_winner``, one read) and, on a comment, the
        merge gives it the place today (``Judge.justifies``: that place took the comment). An ``author:`` token
        (its shift's author's; ``served`` checked the comment's own) depends on the shift alone: a bound id
        names its author (every node refuses anyone else's revision under it), and a shift with an older id is
        looked up once a query (a thread's rows share one; ~40 us a row when each row asked ``Judge``)."""
        judge, known = Judge(self._store, self._shared), {}

        def justifies(doc: Any, token: str) -> bool:
            body = doc.body
            if not token.startswith(AUTHOR_PREFIX):
                return judge.holds_winner(doc, token) and (body.get("type") != "comment"
                                                           or judge.justifies(doc, token))
            shift = body.get("shift") if body.get("type") == "comment" else None
            if not isinstance(shift, str):
                return False
            ok = known.get((shift, token))
            if ok is None:
                tag = author_tag(shift)
                ok = known[shift, token] = token.startswith(AUTHOR_PREFIX + tag) if tag is not None \
                    else judge.justifies(doc, token)
            return ok

        return justifies

    def _favorites(self, user: str, tokens: list[str], filters: dict, q: dict) -> dict:
        """The caller's favorites that ``tokens`` (narrowed to a group by a ``group`` filter) see and the other
        filters match, the same way ``run`` matches them (``thread`` is the ``shift`` field, shifts by default)."""
        rows = [r for r in self._visible(dict.fromkeys(self._social.favorites_of(user)[-MAX_LIMIT:]), set(tokens))
                if matches(r["body"], filters, q["since"], q["until"])]
        rows.sort(key=lambda r: created_seconds(r["body"].get("created")), reverse=True)
        return {"rows": rows[: q["limit"]], "next_cursor": None}

    def _account(self, who: str) -> str:
        """The account id an ``author`` filter value names: a registered name's account, or the value
        itself (an account id). A name no one registered is refused with ``no_user``, and a value that is
        neither with ``bad_name``, as a node answering from its own feed refuses them (roles/authors.py):
        an empty page would read as "no shifts"."""
        if is_account_id(who):   # registration refuses names shaped like account ids
            return who
        account = self._accounts.id_of(check_name(who, "author"))
        if account is None:
            raise FlowError(f"there is no user {who!r} on this hub", "no_user")
        return account
