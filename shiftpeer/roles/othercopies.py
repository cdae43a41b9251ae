"""What another copy of the account (same key: a copied node directory, a restored backup) wrote on one of the
user's own documents, asked of the hub before the user shows or changes it.

A group's revisions reach this node's ``user/feed`` through the group's pull, where ``shifts.account_revisions``
takes them as the other copy's. Those in the hub's ``master`` (a public shift: a user node pushes
``user/public`` there but does not pull it) and in other users' inboxes (a shift sent only to users) reached it
nowhere: after that copy deleted a public shift, an edit here brought it back in ``master``. So before a show,
edit, delete, resolve or publish of an own document the node asks its hub (``revisions``) for every leaf of it
the hub holds by this account, checks each as any replicated revision (``validation.refusal``: signature,
revision, author) and stores those its feed lacks in ``user/feed``, where they count as the other copy's.

When the hub cannot be asked (away, this key not registered, no answer in ``ASK_TIMEOUT`` seconds, a refusal)
the node goes on with what it holds, as it did before, and for a document that went out (in ``user/public``, or
with an outbox entry) the answer says so (``note``). An answer that is not a list of revisions changes nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.logger import Logger

from shiftpeer.roles.names import FlowError
from shiftpeer.roles.publishing import FEED, OUTBOX, PRIVATE, PUBLIC
from shiftpeer.roles.validation import check_repl_doc, refusal
from shiftpeer.shifts import InvalidShift, check_id

#: How long a show or change waits for the hub's answer before going on with what the node holds.
ASK_TIMEOUT = 5.0

log = Logger()


def not_asked(why: str) -> str:
    """The ``note`` of an answer given without the hub's revisions of the document."""
    return (f"not checked with the hub ({why}): what another copy of your account (a copied node directory, a "
            "restored backup) wrote on it where it went public or to users may be missing here")


def with_note(answer: Any, note: str | None) -> Any:
    """``answer`` (an API answer, a dict) with the ``note`` of ``not_asked`` when there is one."""
    return {**answer, "note": note} if note and isinstance(answer, dict) else answer


class OtherCopies:
    """Asks the hub for the revisions of the user's own documents it holds, and joins them to ``user/feed``."""

    def __init__(self, store: Any, account_id: str, link: Any, clock: Any, timeout: float = ASK_TIMEOUT) -> None:
        self._store = store
        self._account = account_id
        self._link = link
        self._clock = clock
        self.timeout = timeout

    def catch_up(self, docid: Any) -> Deferred:
        """Fires once the hub's revisions of ``docid`` (one of the user's live documents; anything else is left
        alone) are in ``user/feed``: with None, or with the ``note`` saying why the hub was not asked. Never fails:
        a show or change goes on either way."""
        if not self._own_live(docid):
            return succeed(None)
        if not self._link.connected:
            return succeed(self._note(docid, "the hub is not connected"))
        if not self._link.account.get("name"):
            return succeed(self._note(docid, "this key is not registered on the hub"))
        d = self._link.call("revisions", {"id": docid})
        if self._clock is not None:
            d.addTimeout(self.timeout, self._clock)
        d.addCallbacks(self._take, self._failed, callbackArgs=(docid,), errbackArgs=(docid,))
        return d.addErrback(self._broken, docid)

    def _own_live(self, docid: Any) -> bool:
        """Does user/private or user/public hold ``docid`` live, by this account?"""
        try:
            check_id(docid)
        except InvalidShift:
            return False
        for name in (PUBLIC, PRIVATE):
            doc = self._store.database(name).get(docid)
            if doc is not None and not doc.deleted and doc.body.get("author") == self._account:
                return True
        return False

    def _went_out(self, docid: str) -> bool:
        """Has the document gone beyond this node: public (user/public), or to a group or user (the outbox)?"""
        return any(self._store.database(name).get(docid) is not None for name in (PUBLIC, OUTBOX))

    def _note(self, docid: str, why: str) -> str | None:
        return not_asked(why) if self._went_out(docid) else None

    def _failed(self, failure: Any, docid: str) -> str | None:
        """The hub refused the question or did not answer in time: nothing is written, the answer says so."""
        why = f"it did not answer within {self.timeout:g} s" if failure.check(TimeoutError) else \
            f"its answer: {failure.getErrorMessage()}"
        log.warn("asking the hub for the revisions of {id} failed: {why}", id=docid, why=why)
        return self._note(docid, why)

    def _broken(self, failure: Any, docid: str) -> str | None:
        """Taking the answer failed here (the store refused the write): logged, and the answer says so."""
        log.failure("taking the hub's revisions of {id} failed", failure, id=docid)
        return self._note(docid, "its revisions could not be stored here")

    def _take(self, answer: Any, docid: str) -> str | None:
        """Store the revisions of the hub's answer that check and that ``user/feed`` lacks."""
        rows = answer.get("rows") if isinstance(answer, dict) else None
        if not isinstance(rows, list):
            log.warn("the hub answered revisions of {id} with no list of rows: nothing taken", id=docid)
            return self._note(docid, "its answer was not a list of revisions")
        feed = self._store.database(FEED)
        good = [d for d in rows if self._genuine(feed, d, docid)]
        missing = set(feed.revs_diff({docid: [d["rev"] for d in good]}).get(docid, ()))
        new = [d for d in good if d["rev"] in missing]
        if new:
            feed.bulk_replicated(new)
            log.info("took {n} revision(s) of {id} from the hub that another copy of this account wrote",
                     n=len(new), id=docid)
        return None

    def _genuine(self, feed: Any, sent: Any, docid: str) -> bool:
        """Is ``sent`` a revision of ``docid`` by this account whose signature and revision check?"""
        try:
            doc = check_repl_doc(sent)
        except FlowError:
            why = "not a replicated document"
        else:
            why = ("another document" if doc["id"] != docid else
                   "by another author" if doc["body"].get("author") != self._account else refusal(feed, doc))
        if why:
            log.warn("the hub sent a revision of {id} that does not check, left out: {why}", id=docid, why=why)
        return not why
