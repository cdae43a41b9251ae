"""Comments, notifications, operator notices, read marks, follows and favorites.

Hub side (``HubSocial``): when a comment reaches ``shared`` for the first time, the shift's author and
everyone who commented on it before get a notification in ``messages/<user>``, if they may read the
comment (a notification quotes it: someone removed from the shift's group is not told); when the
comment is edited those notifications show the new text (nobody is notified again), and when it is
deleted, or edited after the notified user lost access, they are withdrawn (tombstoned), so its text
does not live on in, or reach, anyone's messages who may not read it. Who was
notified of a comment is kept in ``hub/social`` (``N:<comment>``). Operators post notices
to ``system/messages``; both are signed by the hub's key and replicate into each user's ``user/feed``.
Follows and favorites are kept in ``hub/social``. User side (``UserSocial``): read marks live in the
node-local ``user/marks`` (never served) and give the unread count.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from twisted.logger import Logger

from shiftpeer.identity.signing import sign_doc
from shiftpeer.ids import bound_id
from shiftpeer.roles.names import FlowError, messages_db
from shiftpeer.store.errors import InvalidDocument

SOCIAL_DB = "hub/social"
NOTICES_DB = "system/messages"
MARKS_DB = "user/marks"
FEED_DB = "user/feed"
MAX_TEXT = 4000
MESSAGE_TYPES = ["message", "notice"]
#: hub/social key prefix: who was notified of a comment (so an edit or delete reaches those notifications)
NOTIFIED = "N:"

log = Logger()


def check_text(text: Any) -> str:
    """Return text when it is a non-empty string within the limit, else raise FlowError."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise FlowError(f"text must be 1 to {MAX_TEXT} characters", "bad_text")
    return text


class HubSocial:
    """The hub's notifications, notices, follows and favorites."""

    def __init__(self, store: Any, key: Any, clock: Any, accounts: Any) -> None:
        self._store = store
        self._key = key
        self._clock = clock
        self._accounts = accounts
        #: sees(account id, doc): may that account read ``doc``, as ``shared`` holds it? (the hub sets it:
        #: ``HubQueries.sees``)
        self.sees: Callable[[str, Any], bool] = lambda account, doc: True
        self._db = store.create_database(SOCIAL_DB)
        self._shared = store.create_database("shared")
        store.create_database(NOTICES_DB)

    def _signed_put(self, db: Any, docid: str, body: dict, parent: str | None = None, deleted: bool = False) -> str:
        return db.put(docid, body, parent=parent, deleted=deleted,
                      sign=functools.partial(sign_doc, self._key))

    def post_notice(self, text: Any) -> dict:
        """Post an operator notice to ``system/messages``; every registered user's feed receives it."""
        body = {"type": "notice", "author": self._key.account_id, "text": check_text(text),
                "created": self._clock.seconds()}
        docid = bound_id(self._key.account_id, "notice-")
        rev = self._signed_put(self._store.database(NOTICES_DB), docid, body)
        log.info("posted notice {id}", id=docid)
        return {"id": docid, "rev": rev}

    def notify_comments(self, comments: list[dict]) -> None:
        """Notify the shift's author and earlier commenters of each new comment (not the commenter)."""
        for comment in comments:
            body = comment["body"]
            shift_id = body.get("shift")
            commenter = body.get("author")
            if not isinstance(shift_id, str):
                continue
            authors = set()
            shift = self._shared.get(shift_id)
            if shift is not None:
                authors.add(shift.body.get("author"))
            earlier, _ = self._shared.query("thread", shift_id, limit=200)
            authors.update(d.body.get("author") for d in earlier)
            authors.discard(commenter)
            sender = self._accounts.name_of(commenter) or commenter
            held = self._shared.get(comment["id"]) if authors else None   # once, for every reader asked
            for account in sorted(a for a in authors if isinstance(a, str)):
                user = self._accounts.name_of(account)
                if user is None or not self._store.has_database(messages_db(user)) \
                        or not self.sees(account, held):
                    continue
                note = {"type": "message", "kind": "comment", "author": self._key.account_id, "to": user,
                        "shift": shift_id, "comment": comment["id"], "from": sender,
                        "text": _excerpt(body), "created": self._clock.seconds()}
                db = self._store.database(messages_db(user))
                docid = _note_id(comment["id"], user)
                if db.get(docid) is None:
                    self._signed_put(db, docid, note)
                    self._set(NOTIFIED + comment["id"], "users", user, True)
                    log.info("notified {user} of comment {comment}", user=user, comment=comment["id"])

    def revise_notifications(self, comments: list[dict]) -> None:
        """Comments ``shared`` already held changed: their notifications take the winning revision's
        text, or are tombstoned when it is deleted. Idempotent, and it never notifies anyone anew."""
        now = self._clock.seconds()
        for comment_id in dict.fromkeys(c["id"] for c in comments):
            current = self._shared.get(comment_id)
            if current is None:
                continue
            for user in self._get(NOTIFIED + comment_id, "users"):
                if not self._store.has_database(messages_db(user)):
                    continue
                db = self._store.database(messages_db(user))
                docid = _note_id(comment_id, user)
                note = db.get(docid)
                if note is None or note.deleted:
                    continue
                if current.deleted or not self.sees(self._accounts.id_of(user) or "", current):
                    gone = {"type": "message", "kind": "comment", "author": self._key.account_id, "to": user,
                            "modified": now}
                    self._signed_put(db, docid, gone, parent=note.rev, deleted=True)
                    log.info("withdrew {user}'s notification of comment {comment} (deleted, or no longer "
                             "theirs to read)", user=user, comment=comment_id)
                elif note.body.get("text") != _excerpt(current.body):
                    self._signed_put(db, docid, {**note.body, "text": _excerpt(current.body), "modified": now},
                                     parent=note.rev)

    # -- follows and favorites -----------------------------------------------------------------
    def _set(self, docid: str, field: str, item: str, on: bool) -> list[str]:
        doc = self._db.get(docid)
        items = list(doc.body.get(field, [])) if doc is not None and not doc.deleted else []
        if on and item not in items:
            items.append(item)
        elif not on and item in items:
            items.remove(item)
        else:
            return items
        self._db.put(docid, {field: items}, parent=doc.rev if doc is not None else None)
        return items

    def _get(self, docid: str, field: str) -> list[str]:
        doc = self._db.get(docid)
        return list(doc.body.get(field, [])) if doc is not None and not doc.deleted else []

    def follow(self, user: str, other: str, on: bool = True) -> dict:
        """``user`` follows (or stops following) ``other``."""
        if other == user:
            raise FlowError("you cannot follow yourself", "bad_request")
        return {"follows": self._set("F:" + user, "follows", other, on)}

    def follows_of(self, user: str) -> list[str]:
        """The names ``user`` follows."""
        return self._get("F:" + user, "follows")

    def favorite(self, user: str, shift_id: str, on: bool = True) -> dict:
        """``user`` favorites (or unfavorites) a shift; returns the shift's favorite count."""
        self._set("V:" + user, "favorites", shift_id, on)
        fans = self._set("C:" + shift_id, "users", user, on)
        return {"id": shift_id, "favorited": on, "count": len(fans)}

    def favorites_of(self, user: str) -> list[str]:
        """The shift ids ``user`` favorited, oldest first."""
        return self._get("V:" + user, "favorites")

    def favorite_count(self, shift_id: str) -> int:
        """How many users favorited the shift."""
        return len(self._get("C:" + shift_id, "users"))


def _note_id(comment_id: str, user: str) -> str:
    """The id of ``user``'s notification of a comment: one per comment and user, whatever happens to it."""
    return f"c-{comment_id}-{user}"


def _excerpt(body: dict) -> str:
    """The start of a comment's text that a notification quotes."""
    return str(body.get("text", ""))[:200]


class UserSocial:
    """The user node's messages view: notifications and notices in ``user/feed``, read marks local."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._marks = store.create_database(MARKS_DB)

    def messages(self, limit: int = 50, cursor: str | None = None, unread_only: bool = False) -> dict:
        """Messages and notices in the feed, newest first, each with ``read``; plus the unread count."""
        feed = self._store.database(FEED_DB)
        try:
            docs, nxt = feed.query("type", MESSAGE_TYPES, limit=limit, cursor=cursor)
        except InvalidDocument:  # a made-up cursor is the caller's mistake, not a failure of this node
            raise FlowError("cursor is not one this node handed out; use next_cursor from an earlier "
                            "messages reply", "bad_request") from None
        rows = []
        for d in docs:
            read = self._marks.get(d.id) is not None
            if unread_only and read:
                continue
            rows.append({**d.body, "id": d.id, "read": read})
        return {"rows": rows, "next_cursor": nxt, "unread": self.unread_count()}

    def unread_count(self) -> int:
        """How many messages and notices in the feed are not marked read."""
        feed = self._store.database(FEED_DB)
        count, cursor = 0, None
        while True:
            docs, cursor = feed.query("type", MESSAGE_TYPES, limit=500, cursor=cursor)
            count += sum(1 for d in docs if self._marks.get(d.id) is None)
            if cursor is None:
                return count

    def mark_read(self, ids: list[str] | None = None) -> dict:
        """Mark the given messages (or, with None, every message) read; returns the unread count."""
        if ids is None:
            feed = self._store.database(FEED_DB)
            ids, cursor = [], None
            while True:
                docs, cursor = feed.query("type", MESSAGE_TYPES, limit=500, cursor=cursor)
                ids.extend(d.id for d in docs)
                if cursor is None:
                    break
        with self._store.write_txn() as txn:
            for docid in dict.fromkeys(i for i in ids if isinstance(i, str) and i):
                if self._marks.get(docid) is None:
                    self._marks.put(docid, {"read": True}, txn=txn)
        return {"unread": self.unread_count()}
