"""The user node's ShiftSpace flows in one place for the API and the CLI: register, publish, groups,
comments, messages, notices, follows, favorites and queries.

It composes the hub link (``remote``), the publisher (``publishing``), the messages view (``social``)
and the query engine (``queries``). A full peer answers queries from its own ``user/feed``; any other
node asks its hub, which answers from ``shared`` with what this user may see, and adds the matching
shifts it has not published yet (they exist only here).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, inlineCallbacks, maybeDeferred
from twisted.logger import Logger

from shiftpeer.identity.signing import STEMMED_HISTORY
from shiftpeer.roles import audience, feedpage, precheck, queries
from shiftpeer.roles.authors import AuthorNames
from shiftpeer.roles.groups import RANK, rank
from shiftpeer.roles.names import FlowError, check_name
from shiftpeer.roles.othercopies import OtherCopies, with_note
from shiftpeer.roles.policy import UserPolicy
from shiftpeer.roles.publishing import FEED, PRIVATE, PUBLIC, NotConnected, Publisher
from shiftpeer.roles.remote import HubLink
from shiftpeer.roles.social import UserSocial, check_text
from shiftpeer.roles.validation import filtering_store_batch, not_a_shift, refusal
from shiftpeer.sync.refusedrevs import Refused, note_refused_alone

log = Logger()

#: Bounds the reads of unpublished shifts for one page (each round reads up to 64 index pages).
MAX_DRAFT_ROUNDS = 1000

GROUP_METHODS = {"new": "group.create", "invite": "group.invite", "join": "group.join", "leave": "group.leave",
                 "remove": "group.remove", "level": "group.level", "members": "group.members"}


def _require_a_shift(answered: dict, instead: str) -> None:
    """Refuse with not_a_shift (400), before anything is written, a comment on a document that is no shift:
    every place would refuse it (``validation.not_a_shift``)."""
    why = not_a_shift(answered["id"], answered["body"])
    if why is not None:
        raise FlowError(f"{why}: {instead}", why.code)


class UserFlows:
    """A user node's flows over its store, its key and its hub connection."""

    name = "flows"

    def __init__(self, store: Any, key: Any, clock: Any, *, user: str | None = None,
                 full_peer: bool = False, connect_wait: float = 0.0) -> None:
        self.store = store
        self.key = key
        self.user = user
        self.full_peer = full_peer
        self.policy = UserPolicy()
        self.link = HubLink(store, policy=self.policy, full_peer=full_peer, clock=clock, connect_wait=connect_wait)
        self.publisher = Publisher(store, key, clock, self.link.deliver)
        self.link.publisher = self.publisher
        self.other_copies = OtherCopies(store, key.account_id, self.link, clock)
        self.publisher.pending_note = self._pending_note
        self.social = UserSocial(store)
        self.authors = AuthorNames(self.link)
        self.store_batch = filtering_store_batch(lambda db, peer_id, doc: refusal(db, doc))
        self._told_legacy: Any = None   # the hub connection whose rows without parents were logged

    def start(self) -> None:
        self.publisher.start()

    def stop(self) -> None:
        self.publisher.stop()

    def install(self, factory: Any) -> None:
        """Serve ``user/public`` to the hub only, and check authorship on every document received."""
        factory.policy = self.policy
        factory.store_batch = self.store_batch

    def peer_connected(self, conn: Any, kind: str) -> None:
        """The node's hook for each authenticated connection (``kind``: hub, peer or incoming)."""
        self.link.peer_connected(conn, kind)

    # -- account, publishing, groups -----------------------------------------------------------
    def register(self, name: str | None = None, token: str | None = None):
        """Create the account on the hub under ``name`` (default: the node's user name)."""
        name = check_name(name or self.user, "user name")
        return self.link.register(name, token)

    def publish(self, shift_id: str, *, public: bool = False, groups: list[str] = (), to: list[str] = ()) -> Deferred:
        """Publish publicly, to groups and to users at once; fires with a status per target. A connected
        hub is asked first, and a target it would refuse refuses the publish before anything is written. Before
        that, what another copy of the account wrote on the shift where it went joins it (``on_latest``: that
        copy may have resolved a conflict here)."""
        return self.on_latest(shift_id, lambda: self._publish(shift_id, public, list(groups), list(to)))

    @inlineCallbacks
    def _publish(self, shift_id: str, public: bool, groups: list[str], to: list[str]):
        """``publish`` on the shift as the other copies left it: checked here, then by the hub, then written."""
        self.publisher.check(shift_id, public=public, groups=groups, to=to)
        yield precheck.check_targets(self.link, sorted(set(groups)), sorted(set(to)))
        result = yield self.publisher.publish(shift_id, public=public, groups=groups, to=to)
        return result

    @inlineCallbacks
    def on_latest(self, docid: str, action: Callable[[], Any]):
        """Run ``action`` (a show, edit, delete or resolve of the user's own ``docid``; it may return a Deferred)
        once the revisions another copy of the account wrote on it that the hub holds are in ``user/feed``
        (roles/othercopies.py: ``master`` and other users' inboxes reach this node nowhere else), so that it
        builds on them, or is refused when that copy deleted it. Its answer carries a ``note`` when the hub could
        not be asked for a document that went out; it goes on with what this node holds then."""
        note = yield self.other_copies.catch_up(docid)
        result = yield maybeDeferred(action)
        return with_note(result, note)

    def _pending_note(self) -> str | None:
        """Why undelivered targets wait, for the publish result (None: the hub is up for this account)."""
        if not self.link.connected:
            return "pending: delivered when the hub is connected"
        if not self.link.account.get("name"):
            return "pending: delivered once this key is registered on the hub ('shiftpeer register')"
        return None

    @inlineCallbacks
    def group(self, action: str, name: str, **args: Any):
        """Run one group action on the hub (new, invite, join, leave, remove, level, members)."""
        method = GROUP_METHODS.get(action)
        if method is None:
            raise FlowError(f"unknown group action {action!r} (use {', '.join(GROUP_METHODS)})", "bad_request")
        result = yield self.link.call(method, {"name": name, **{k: v for k, v in args.items() if v is not None}})
        if action in ("new", "join", "leave"):
            yield self.link.refresh()
        return result

    # -- comments, messages, social --------------------------------------------------------------
    def comment(self, shift_id: str, text: str) -> Deferred:
        """Comment on a shift this user can see; it goes to the shift's audience: as the hub shows it, when it
        answers, for someone else's shift. The feed's copy may be stale (from a group the user has left since,
        while the shift went public): commenting with its audience sent the comment to the group, which
        refused it, and nowhere else. The user's own shift is taken as another copy of the account left it at the
        hub (``on_latest``; nothing is asked for someone else's): a shift that copy deleted takes no comment. A
        bad text is refused before anything is asked."""
        return maybeDeferred(check_text, text).addCallback(
            lambda text: self.on_latest(shift_id, lambda: self._comment(shift_id, text)))

    @inlineCallbacks
    def _comment(self, shift_id: str, text: str):
        """``comment`` on the shift as this user can see it, after the other copies joined the own one."""
        shift = None
        if self.hub_answers and not self.publisher.owns(shift_id):
            shift = yield self.from_hub(shift_id)
        if shift is None:   # the hub does not show it (a copy only a group that refused later revisions keeps)
            shift = yield self.find(shift_id)
        if shift is None:
            raise FlowError(f"no shift {shift_id!r} that you can see", "not_found")
        _require_a_shift(shift, "comment on the shift it answers")
        closed = yield self._closed_groups(audience.of(shift["body"])["groups"])
        result = yield self.publisher.comment(shift, text, public=self._public_here(shift), closed=closed)
        return result

    @inlineCallbacks
    def _closed_groups(self, groups: list[str]):
        """The groups among ``groups`` the hub says this user cannot read, so may not comment in, as the targets
        the publisher leaves out of a comment's first revision (``{"group:<g>": "error: ..."}``): a group refuses
        such a comment, and a node that signed it for the group anyway wrote a revision only to narrow it at once.
        What the node last heard (``whoami``) may be old (another copy of the account joined since): a group it
        does not know it reads is asked about again. Offline, or unregistered, none: the hub's refusal at
        delivery leaves them out (``Publisher._narrow``)."""
        if not groups or not self.hub_answers:
            return {}
        closed = [g for g in groups if rank(self.link.account.get("groups", {}).get(g)) < RANK["read"]]
        if closed:
            try:
                info = yield self.link.call("whoami", {})
            except NotConnected:
                return {}
            closed = [g for g in closed if rank(info.get("groups", {}).get(g)) < RANK["read"]]
        return {f"group:{g}": f"error: you may not comment in group {g!r} (you cannot read it): left out of the "
                              "comment's audience" for g in closed}

    def _public_here(self, shift: dict) -> bool:
        """May a comment on ``shift`` be public, as far as this node can tell? The shift's audience is what
        its author signed, not where it went (a shift sent to this user alone may say "public"). A full
        peer's public comment enters its own ``master`` and is gossiped with no hub in between, so there it
        needs a shift the node's ``master`` holds (or this user's own); elsewhere the hub, which takes a
        comment only where its shift is, decides."""
        if not self.full_peer or shift["body"].get("author") == self.key.account_id \
                or not self.store.has_database("master"):
            return True
        return bool(self._live_shifts_in_master([shift["id"]]))

    def _live_shifts_in_master(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` this node's ``master`` holds live as shifts (a full peer's: public, anyone may see
        them; a comment there is no shift a comment may answer, ``not_a_shift``)."""
        master = self.store.database("master")
        return {i for i in ids if (held := master.get(i)) is not None and not held.deleted
                and not_a_shift(i, held.body) is None}

    @inlineCallbacks
    def edit_comment(self, comment_id: str, text: Any, rev: Any = None):
        """Change the text of one of this user's comments (``rev``: the revision edited, else 409);
        the new revision goes everywhere the comment went. What another copy of the account wrote on the comment,
        and on the user's own shift it answers, that the hub holds joins first (``other_copies``)."""
        text = check_text(text)
        if rev is not None and not isinstance(rev, str):
            raise FlowError("rev must be the comment's revision string", "bad_request")
        note = yield self.other_copies.catch_up(comment_id)
        yield self._require_own_comment(comment_id)
        shift = self.publisher.comment_shift(comment_id)
        note = (yield self.other_copies.catch_up(shift)) or note
        yield self._require_shift_there(shift)
        result = yield self.publisher.edit_comment(comment_id, text, rev)
        return with_note(result, note)

    @inlineCallbacks
    def _require_shift_there(self, shift_id: Any):
        """Refuse with shift_gone (409) an edit of a comment on a shift deleted, or one the hub no longer shows
        this user: every place refuses such an edit (a comment needs a shift its author can see) and keeps the
        text it has, yet the edit of a public comment answered ``public: ok`` (it goes by replication). This
        node knows from its feed (a tombstone there) or from the hub, when it answers; offline, the edit is
        written and the refusal shows in ``status`` once the hub sees it. The user's own shift counts as gone too
        when another copy of the account deleted it (its tombstones in the feed), though the own copy holds it."""
        if not isinstance(shift_id, str) or not shift_id:
            return
        held = self.store.database(FEED).get(shift_id)   # deleted there: ``_deleted_in_feed``
        gone = held is not None and held.deleted
        if not gone and self.publisher.owns(shift_id, "shift"):
            return
        answered = None if held is None or gone else queries.row(held)
        if not gone and self.hub_answers:
            answered = yield self.from_hub(shift_id)
            gone = answered is None
        if gone:
            raise FlowError(f"the shift {shift_id} this comment answers is deleted, or you may no longer see it: no "
                            f"place would keep a new text of the comment; delete the comment instead", "shift_gone")
        if answered is not None:
            _require_a_shift(answered, "no place would keep a new text of this comment; delete it instead")

    def delete_comment(self, comment_id: str) -> Deferred:
        """Delete one of this user's comments everywhere it went (a signed tombstone), with what another copy of
        the account wrote on it that the hub holds (``on_latest``): its later edit, else left live there."""
        return self.on_latest(comment_id, lambda: self._require_own_comment(comment_id).addCallback(
            lambda _: self.publisher.delete_comment(comment_id)))

    @inlineCallbacks
    def _require_own_comment(self, comment_id: str):
        """Refuse someone else's comment this user can see with not_author (403), and anything else
        that is not one of their live comments with not_found (404)."""
        if self.publisher.owns(comment_id, "comment"):
            return
        seen = yield self.find(comment_id)
        if seen is not None and seen["body"].get("type") == "comment":
            raise FlowError(f"comment {comment_id} is by someone else: only its author may change it",
                            "not_author")
        raise FlowError(f"no comment {comment_id!r} that you can see", "not_found")

    def _deleted_in_feed(self, docid: str) -> bool:
        """Does ``user/feed`` hold ``docid`` with no live revision? Only its author's tombstones end one there: for
        the user's own document, one this copy deleted or another copy of the account did (its tombstones come
        back through the hub, while the own copy still holds the revisions they end: ``shifts.account_revisions``)."""
        held = self.store.database(FEED).get(docid)
        return held is not None and held.deleted

    @inlineCallbacks
    def find(self, shift_id: str):
        """A visible shift (or comment) by id: from this node's databases, else from the hub. The user's own copy
        does not count when the feed holds the document deleted (another copy of the account deleted it)."""
        held = self.store.database(FEED).get(shift_id)   # deleted there: ``_deleted_in_feed``
        if held is not None and not held.deleted:
            return queries.row(held)
        if held is None:
            for name in (PUBLIC, PRIVATE):
                doc = self.store.database(name).get(shift_id)
                if doc is not None and not doc.deleted:
                    return queries.row(doc)
        if not self.link.connected:
            return None
        found = yield self.from_hub(shift_id)
        return found

    @property
    def hub_answers(self) -> bool:
        """Can the hub answer for this user now (connected, and the account registered)?"""
        return self.link.connected and bool(self.link.account.get("name"))

    @inlineCallbacks
    def from_hub(self, shift_id: str):
        """A document by id from the hub's ``shared``, if this user may see it there (the hub applies the
        visibility rules; a row whose signature does not verify counts as not found)."""
        found = yield self.link.call("get", {"ids": [shift_id]})
        rows = self._checked_rows(found["rows"], "get")
        return rows[0] if rows else None

    def _checked_rows(self, sent_rows: list, call: str) -> list[dict]:
        """The rows of the hub's answer to `call` that check (``queries.checked_row``). Each other one is left
        out and logged naming the hub; one refused for its revision is counted (``bad_revision.query``).
        A hub built before rows named their parent (no ``+row_parents`` in its hello) sends every edited
        shift's row without it: those rows are taken with their signature checked, not their revision
        (said once per connection); from any other hub such rows are refused like the rest, summed up in
        one line (docs/flows.md, *Queries*)."""
        conn = self.link.conn
        hub = getattr(conn, "peer_id", None)
        counters = getattr(getattr(conn, "factory", None), "counters", None)
        legacy = queries.ROW_PARENTS not in getattr(conn, "peer_features", ())
        rows, stemmed = [], []
        for sent in sent_rows:
            r, ok = queries.checked_row(sent)
            if ok is True:
                rows.append(r)
            elif ok is STEMMED_HISTORY and legacy:
                rows.append(r)
                self._legacy_hub(conn)
            elif ok is STEMMED_HISTORY:
                stemmed.append(r["id"])
                if counters is not None:
                    counters["bad_revision.query"] += 1
            elif isinstance(ok, Refused):
                note_refused_alone(counters, "query", hub, r, ok, f"its answer to {call}")
            else:
                log.warn("the hub {hub} sent a row that does not verify: {id}", hub=hub,
                         id=sent.get("id") if isinstance(sent, dict) else None)
        if stemmed:
            log.warn("the hub {hub} sent {n} rows whose history names no parent, left out of its answer to {call} "
                     "(their revisions cannot be checked): {ids}", hub=hub, n=len(stemmed), call=call,
                     ids=stemmed[:5])
        return rows

    def _legacy_hub(self, conn: Any) -> None:
        """Say once per connection that the hub's rows of edited shifts are taken unchecked."""
        if self._told_legacy is conn:
            return
        self._told_legacy = conn
        log.warn("the hub {hub} was built before query rows named their parent: rows of edited shifts are "
                 "shown with their signature checked but not their revision until it is updated",
                 hub=getattr(conn, "peer_id", None))

    def messages(self, *, limit: int = 50, cursor: str | None = None, unread_only: bool = False) -> dict:
        """Notifications and notices in the feed, with read marks and the unread count."""
        return self.social.messages(limit=limit, cursor=cursor, unread_only=unread_only)

    def mark_read(self, ids: list[str] | None = None) -> dict:
        """Mark messages read (all when ``ids`` is None)."""
        return self.social.mark_read(ids)

    def notice(self, text: str):
        """Ask the hub to post an operator notice (refused unless this key is an operator)."""
        return self.link.call("notice", {"text": check_text(text)})

    def follow(self, user: str, on: bool = True):
        """Follow or unfollow a user (kept on the hub)."""
        return self.link.call("follow", {"user": user, "on": on})

    def favorite(self, shift_id: str, on: bool = True):
        """Favorite or unfavorite a shift; fires with its favorite count."""
        return self.link.call("favorite", {"id": shift_id, "on": on})

    # -- queries ---------------------------------------------------------------------------------
    def query(self, args: dict) -> Deferred:
        """Answer a query: locally on a full peer (or offline), else from the hub plus unpublished shifts.
        Fires with the answer, or fails with FlowError (a bad query included)."""
        try:
            q = queries.check_query(args)
            if not self.full_peer and self.hub_answers:
                return self._hub_page(q)
        except Exception:  # noqa: BLE001 - as from the generator it replaces: a failed Deferred, never a raise
            return fail()
        return self._feed_page(q)

    @inlineCallbacks
    def _feed_page(self, q: dict):
        """A page of this node's own ``user/feed`` (follows, favorites and author names asked of the hub)."""
        if q["following"] or q["favorites"]:
            if not self.link.connected:
                raise FlowError("follows and favorites are kept on the hub, which is not connected",
                                "not_connected")
            social = yield self.link.call("social", {})
            q = self._localise(q, social)
        if "author" in q["filters"]:
            authors = yield self.authors.account_ids(q["filters"]["author"])
            q = dict(q, filters={**q["filters"], "author": authors})
        feed = self.store.database(FEED)
        filters = queries.thread_of_shifts(feed, q["filters"])   # a comment's thread is empty, as on the hub
        if filters is None:
            return {"rows": [], "next_cursor": None, "source": "feed"}
        keep, answers = q.get("keep", lambda d: True), queries.answers_shifts(feed)
        if "thread" in filters:
            keep = self._thread_keep(filters["thread"], keep)
        docs, cursor = queries.run(feed, filters, vis=queries.feed_tokens(filters), limit=q["limit"],
                                   cursor=q["cursor"], keep=lambda d: answers(d) and keep(d), since=q["since"],
                                   until=q["until"])
        return {"rows": [queries.row(d) for d in docs[: q["limit"]]], "next_cursor": cursor, "source": "feed"}

    def _thread_keep(self, shifts: list[str], keep: Callable[[Any], bool]) -> Callable[[Any], bool]:
        """``keep`` for a thread query from a full peer's feed: a public comment there may have come through
        ``master`` from any neighbour, which checks only that it is signed and public, never (as the hub
        does, ``not_visible``) that its author can see the shift. So a public comment is shown only on a
        shift this node's ``master`` holds (public: anyone may see it), as ``_public_here`` lets this node
        make one; other comments come only from the hub's checked databases (a group, the inbox)."""
        if not self.full_peer or not self.store.has_database("master"):
            return keep
        public = self._live_shifts_in_master(shifts)
        return lambda d: keep(d) and (not audience.of(d.body)["public"] or d.body.get("shift") in public)

    def _localise(self, q: dict, social: dict) -> dict:
        """Turn follows and favorites into filters a full peer can run on its own feed."""
        q = dict(q, filters=dict(q["filters"]))
        if q["favorites"]:
            wanted = set(social.get("favorites", []))
            q["keep"] = lambda d: d.id in wanted
        if q["following"]:
            followed = set(social.get("follows_ids", []))
            q["keep"] = lambda d, k=q.get("keep"): (k is None or k(d)) and d.body.get("author") in followed
        return q

    def _hub_page(self, q: dict) -> Deferred:
        """A page of the hub's ``shared`` merged with this user's unpublished shifts, at most ``limit`` rows
        (``feedpage`` says how the node's cursor keeps each row on exactly one page). One callback on the
        hub call, not a generator: this runs on every page load of every Space (docs/benchmarks.md).
        Raises FlowError for a cursor this node did not hand out (``query`` turns it into a failure)."""
        pos = feedpage.Position.decode(q["cursor"])
        d = self.link.call("query", dict(q, cursor=pos.hub, limit=pos.hub_limit(q["limit"]),
                                         **{queries.BODY_CBOR: True}))
        return d.addCallback(self._merged_page, q, pos)

    def _merged_page(self, answer: dict, q: dict, pos: feedpage.Position) -> dict:
        """The page ``_hub_page`` answers with, from the hub's answer (rows whose signature fails are left out)."""
        rows = self._checked_rows(answer["rows"], "query")
        nxt = answer["next_cursor"]
        low = feedpage.bucket_low(rows, nxt, pos.at)
        drafts = [] if low >= pos.at else self._unpublished(
            q, feedpage.store_range(low, pos.at, q["since"], q["until"]), feedpage.in_bucket(pos, rows, nxt),
            feedpage.drafts_needed(q["limit"]))
        page, after = feedpage.merge_page(pos, q["limit"], rows, nxt, drafts, self.key.account_id)
        return {"rows": page, "next_cursor": None if after is None else after.encode(), "source": "shared"}

    def _unpublished(self, q: dict, scan: tuple, keep: Callable[[dict], bool], need: int) -> list[dict]:
        """This user's unpublished shifts matching the query, created in the ``scan`` range [since, until),
        that ``keep`` takes, newest first: the first ``need`` of them, or all. One the feed holds deleted is left
        out (another copy of the account deleted it: ``_deleted_in_feed``)."""
        if q["following"] or q["favorites"] or "group" in q["filters"]:
            return []
        filters = dict(q["filters"])
        if "author" in filters:  # user/private holds only my shifts: do I (by name or id) match?
            if not {self.key.account_id, self.link.account.get("name")} & set(filters.pop("author")):
                return []
        found: list[dict] = []
        cursor = None
        for _ in range(MAX_DRAFT_ROUNDS):  # each round reads on from the last: only filters that drop rows loop
            docs, cursor = queries.run(self.store.database(PRIVATE), filters, vis=None, limit=need, cursor=cursor,
                                       since=scan[0], until=scan[1])
            # a shift another copy of the account deleted is no draft: its tombstones are in the feed
            found += [r for r in map(queries.row, docs) if keep(r) and not self._deleted_in_feed(r["id"])]
            if len(found) >= need or cursor is None:
                return found
        log.warn("unpublished shifts: gave up after {rounds} rounds", rounds=MAX_DRAFT_ROUNDS)
        return found
