"""Publishing, user side: widen a shift's signed audience, move it public, and deliver it through an outbox.

Public: the new revision goes to ``user/public`` and, in the same transaction, a sibling tombstone
of the previous revision to ``user/private``; ``user/feed`` then holds one live copy (not deleted beats
deleted, and deleted leaves are not conflicts), and ``user/public`` reaches the hub's ``master`` by
replication. Groups and users: the revision stays where it lives and ``user/outbox`` records each
target with the last revision it received; every later revision (edit, delete, comment) is delivered
with the hub's ``deliver`` RPC, now if connected, else on reconnect. A resolved conflict's tombstones
(deleted losing leaves) go to each target once too, before the winner (``tombs`` in the outbox). The
outbox follows the signed audience: a target a new revision names that it neither has nor had refused
joins it (a resolve gives the kept revision the union of its branches' audiences).

A target the hub refuses (no such user or group, not allowed to publish there) leaves the signed
audience at once: a new revision without it goes to the other targets, and the outbox keeps the
refusal instead of retrying it, so a user who registers that name later never receives the shift.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks
from twisted.logger import Logger

from shiftpeer.identity.signing import sign_doc
from shiftpeer.ids import bound_id
from shiftpeer.roles import audience
from shiftpeer.roles.names import FlowError
from shiftpeer.shifts import ShiftGone, account_revisions, delete_everywhere, gone_message, put_on_latest
from shiftpeer.store import codec
from shiftpeer.store.revs import compute_rev

PRIVATE, PUBLIC, FEED, OUTBOX = "user/private", "user/public", "user/feed", "user/outbox"

log = Logger()

#: deliver(doc, targets) -> Deferred[{target: "ok" | "error: ..."}]: an "error: ..." is the hub refusing that
#: target for good. Fails with NotConnected when offline, and with another FlowError when the hub refused
#: the whole call (e.g. not registered yet): then no target is refused and the next revision retries.
Deliver = Callable[[dict, list[str]], Deferred]


class NotConnected(FlowError):
    """The hub is not connected; deliveries wait in the outbox."""

    code = "not_connected"


class Publisher:
    """Publishes the user's own shifts and comments, and keeps every target up to date."""

    def __init__(self, store: Any, key: Any, clock: Any, deliver: Deliver) -> None:
        self._store = store
        self._key = key
        self._clock = clock
        self._deliver = deliver
        self._sign = functools.partial(sign_doc, key)
        for name in (PRIVATE, PUBLIC, FEED, OUTBOX):
            store.create_database(name)
        self._outbox = store.database(OUTBOX)
        self._unsubscribe = None
        self._lock = DeferredLock()
        self._queued = False
        #: update_seq of user/private and user/public the outbox has followed the signed audiences up to
        self._followed = {name: store.database(name).update_seq() for name in (PRIVATE, PUBLIC)}
        #: Why what is not delivered yet waits (None: the hub is connected and this account registered);
        #: the user flows set it from the hub link.
        self.pending_note: Callable[[], str | None] = lambda: None

    def start(self) -> None:
        """Deliver new revisions of published shifts as they are written."""
        self._unsubscribe = self._store.subscribe(self._on_commit)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_commit(self, dbname: str, seq: int) -> None:
        if dbname in (PRIVATE, PUBLIC) and not self._queued:
            self._queued = True
            self._clock.callLater(0, self.flush_quietly)

    # -- where the user's copy lives -------------------------------------------------------------
    def _own(self, docid: str, kind: str | None = None, action: str = "publish") -> tuple[Any, Any]:
        """(database, winning doc) of the user's own live copy: user/public first, else user/private.

        With ``kind`` only a document of that type counts (a shift id given to a comment edit is not found)."""
        for name in (PUBLIC, PRIVATE):
            db = self._store.database(name)
            doc = db.get(docid)
            if doc is not None and not doc.deleted and kind in (None, doc.body.get("type")):
                if doc.body.get("author") != self._key.account_id:
                    raise FlowError(f"{docid} is not yours: only its author may {action} it", "not_author")
                return db, doc
        raise FlowError(f"no {kind or 'shift'} {docid!r} of yours on this node", "not_found")

    def owns(self, docid: str, kind: str | None = None) -> bool:
        """Is there a live copy of ``docid`` (of that type) by this user in user/public or user/private?"""
        try:
            self._own(docid, kind)
        except FlowError:
            return False
        return True

    def comment_shift(self, docid: str) -> Any:
        """The shift the user's own live comment ``docid`` answers (its body's ``shift``)."""
        return self._own(docid, "comment", "edit")[1].body.get("shift")

    def current(self, shift_id: str) -> dict | None:
        """The revision every target should hold: the winner in user/public if it has the doc, else private."""
        leaves = self._leaves(shift_id)
        return leaves[0] if leaves else None

    def _leaves(self, docid: str) -> list[dict]:
        """Every leaf of the user's copy (user/public if it has the doc, else user/private), winner first."""
        for name in (PUBLIC, PRIVATE):
            docs = self._store.database(name).get_repl_docs([(docid, None)])
            if docs:
                return docs
        return []

    # -- publishing ------------------------------------------------------------------------------
    def check(self, shift_id: str, *, public: bool = False, groups: list[str] = (),
              to: list[str] = ()) -> tuple[Any, Any, dict]:
        """What publishing would start from, writing nothing: (database, doc, widened audience); FlowError
        when no target is named, the shift is not this user's, has conflicts, or a name is malformed.

        A conflict is refused: publishing moves or re-signs the winner only, and moving it public left the
        other live branch as user/private's winner, which `shift show` and edits then found first. The own copy's
        leaves are taken as ``shifts.account_revisions`` sees them: a leaf another copy of the account tombstoned
        is none, and a shift that copy deleted is ``ShiftGone`` (409), refused before the hub is asked."""
        return self._checked(shift_id, public=public, groups=groups, to=to)[:3]

    def _checked(self, shift_id: str, *, public: bool, groups: list[str],
                 to: list[str]) -> tuple[Any, Any, dict, Any]:
        """``check``'s answer and the ``account_revisions`` it read them from (one read of user/feed)."""
        if not (public or groups or to):
            raise FlowError("say where to publish: --public, --group NAME or --to USER", "bad_request")
        db, doc = self._own(shift_id)
        revs = account_revisions(self._store, db, doc, self._key.account_id)
        if revs.first is None:
            raise ShiftGone(gone_message(shift_id))
        own = revs.own
        if len(own) > 1:
            raise FlowError(f"shift {shift_id} has conflicting revisions ({', '.join(own[1:])} beside "
                            f"{own[0]}): keep one with 'shiftpeer shift resolve {shift_id} [--keep REV]', "
                            "then publish", "conflict")
        return db, doc, audience.widen(audience.of(doc.body), public=public, groups=list(groups), to=list(to)), revs

    def publish(self, shift_id: str, *, public: bool = False, groups: list[str] = (),
                to: list[str] = ()) -> Deferred:
        """Widen the audience (earlier targets kept), write the signed revision, deliver; fires with
        ``{id, rev, audience, public, targets: {target: "ok" | "error: ..." | "pending: ..."}}``. A later edit
        by another copy of the account that only user/feed holds joins the own copy first and is the revision
        published (``shifts.account_revisions``' ``catch_up``, with that copy's tombstones): on the older one, the
        publish was a branch beside it, and a leaf it tombstoned came back."""
        db, doc, new, revs = self._checked(shift_id, public=public, groups=groups, to=to)
        if revs.catch_up:   # another copy's later edit or tombstones, only in user/feed: publish on what it decided
            db.bulk_replicated(revs.catch_up)
            db, doc, new, _ = self._checked(shift_id, public=public, groups=groups, to=to)
        body = {**doc.body, "audience": new, "modified": self._clock.seconds()}
        if new["public"] and db.name == PRIVATE:
            rev = self._move_public(doc, body)
        else:
            rev = db.put(shift_id, body, parent=doc.rev, sign=self._sign)
        self._add_targets(shift_id, audience.targets(new))
        log.info("published {id} rev {rev} to {audience}", id=shift_id, rev=rev, audience=new)
        return self._result(shift_id, rev, new)

    def _move_public(self, doc: Any, body: dict) -> str:
        """The public revision to user/public and a sibling tombstone to user/private, atomically."""
        private, public = self._store.database(PRIVATE), self._store.database(PUBLIC)
        body = codec.in_canonical_order(body)   # bulk_replicated stores a body's bytes in its key order
        rev = compute_rev(doc.rev, False, body)
        history = private.get_repl_docs([(doc.id, [doc.rev])])[0]["history"]
        live = {"id": doc.id, "rev": rev, "deleted": False, "body": body,
                "sig": self._sign(doc.id, rev, body, False), "history": [rev, *history]}
        tomb = {"type": body.get("type", "shift"), "author": self._key.account_id, "modified": body["modified"]}
        with self._store.write_txn() as txn:
            public.bulk_replicated([live], txn=txn)
            private.put(doc.id, tomb, parent=doc.rev, deleted=True, sign=self._sign, txn=txn)
        return rev

    def comment(self, shift: dict, text: str, *, public: bool = True, closed: dict | None = None) -> Deferred:
        """Comment on a shift the user can see: a signed document with the shift's audience, published
        the way the shift is (public through user/public, else delivered to each target); not public when
        ``public`` is False (the node could not tell that the shift is); refused then when the shift names no
        other place, rather than written to go nowhere. ``closed``: the targets the hub would refuse, with why
        (groups this user cannot read): left out of the first revision, so no place is asked to take a
        revision it refuses, and reported as refused."""
        closed = closed or {}
        aud = audience.without(audience.of(shift["body"]), list(closed))
        if not public and aud["public"]:
            aud = {**aud, "public": False}
            if not audience.targets(aud):
                raise FlowError(f"shift {shift['id']} says it is public, but this full peer's master does not hold "
                                "it (yet): a public comment would enter the firehose unchecked; try again once it "
                                "has arrived", "not_public_here")
        now = self._clock.seconds()
        body = {"type": "comment", "shift": shift["id"], "text": text, "author": self._key.account_id,
                "created": now, "modified": now, "audience": aud}
        docid = bound_id(self._key.account_id, "cm-")
        db = self._store.database(PUBLIC if aud["public"] else PRIVATE)
        rev = db.put(docid, body, sign=self._sign)
        self._add_targets(docid, audience.targets(aud))
        if closed:
            log.info("left {targets} out of the audience of comment {id}: the hub would refuse them",
                     targets=sorted(closed), id=docid)
        d = self._result(docid, rev, aud)
        return d.addCallback(lambda result: {**result, "targets": {**result["targets"], **closed}}) if closed else d

    def edit_comment(self, docid: str, text: str, rev: str | None = None) -> Deferred:
        """A new revision of the user's comment with new text, where it lives; the outbox (and
        user/public's replication) takes it to every target the comment went to. It builds on the latest
        revision: a later edit by another copy of the account that only user/feed holds joins the own copy
        first (``shifts.account_revisions``' ``catch_up``), else the two edits were a conflict wherever they met.
        A comment that copy deleted is not found (404), as one deleted here is: nothing is written."""
        db, doc = self._own(docid, "comment", "edit")
        revs = account_revisions(self._store, db, doc, self._key.account_id)
        if revs.first is None:
            raise FlowError(gone_message(docid, "comment"), "not_found")
        parent, base = revs.first, revs.body
        if rev is not None and rev != parent:
            raise FlowError(f"comment {docid} is at {parent}, not {rev}: show it again and retry", "conflict")
        body = {**base, "text": text, "modified": self._clock.seconds()}
        new = put_on_latest(self._store, db, docid, body, revs.catch_up, parent, self._sign)
        log.info("edited comment {id} rev {rev}", id=docid, rev=new)
        return self._result(docid, new, audience.of(body))

    def delete_comment(self, docid: str) -> Deferred:
        """A signed tombstone of the user's comment, delivered like any later revision. It keeps
        ``type`` and ``shift`` (the hub's merge and notifications recognise a comment by them) and
        ``author`` (every node checks the signature and the same author). Like a shift delete, every live
        revision gets one, in one transaction: the own copy's conflicts, and the branches and later edits of
        another copy of the account that only user/feed holds; on the winner alone another revision won and
        the comment stayed."""
        db, doc = self._own(docid, "comment", "delete")
        tomb = {"type": "comment", "shift": doc.body.get("shift"), "author": self._key.account_id,
                "modified": self._clock.seconds()}
        if delete_everywhere(self._store, db, doc, tomb, self._sign) is None:   # as for one deleted here
            raise FlowError(f"no comment {docid!r} of yours on this node: another copy of your account deleted it",
                            "not_found")
        rev = self.current(docid)["rev"]   # the winning tombstone: what every target gets, so what it reports
        log.info("deleted comment {id} rev {rev}", id=docid, rev=rev)
        d = self._result(docid, rev, audience.of(doc.body))
        return d.addCallback(lambda result: {**result, "deleted": True})

    # -- the outbox ------------------------------------------------------------------------------
    def _add_targets(self, docid: str, targets: list[str]) -> None:
        """Record new targets (a target refused earlier and named again is tried again)."""
        if not targets:
            return
        entry = self._outbox.get(docid)
        known, refused = _outbox_body(entry)
        held = dict(entry.body.get("held") or {}) if entry is not None else {}
        for t in targets:
            known.setdefault(t, {"rev": None, "error": None})
            refused.pop(t, None)
            held.pop(t, None)
        self._outbox.put(docid, _entry_body(known, refused, held), parent=entry.rev if entry is not None else None)

    def targets(self, docid: str) -> dict:
        """What the outbox knows of each target: the revision it last received and the last error."""
        return _outbox_body(self._outbox.get(docid))[0]

    def refused(self, docid: str) -> dict:
        """The targets the hub refused for good, with its reason ({target: "error: ..."})."""
        return _outbox_body(self._outbox.get(docid))[1]

    @inlineCallbacks
    def _result(self, docid: str, rev: str, aud: dict):
        """The answer to a publish, comment, edit or delete: the revision every target now has (a newer
        one when refused targets were left out), and a status for each target (``aud``'s refused ones too;
        ``public`` too when the audience is public: it goes by replication, pending while the hub is not up)."""
        yield self.flush(docid)
        asked = set(audience.targets(aud))
        cur = self.current(docid)
        if cur is not None and cur["rev"] != rev and not cur["deleted"]:
            rev, aud = cur["rev"], audience.of(cur["body"])
        note = self.pending_note()
        waiting = note or "pending: delivered when the hub is connected"
        status = {"public": note or "ok"} if aud["public"] else {}
        for t, st in self.targets(docid).items():
            status[t] = "ok" if st["rev"] == rev else (st["error"] or waiting)
        status.update({t: why for t, why in self.refused(docid).items() if t in asked})
        return {"id": docid, "rev": rev, "audience": aud, "public": aud["public"], "targets": status}

    def pending(self) -> list[tuple[str, dict, list[str]]]:
        """(id, current revision, targets still missing it) for every outbox entry with work to do."""
        out = []
        for entry in self._outbox.docs_since(0):
            leaves = self._leaves(entry.id)
            if not leaves:
                continue
            cur, tombs = leaves[0], {d["rev"] for d in _tombstones(leaves)}
            todo = [t for t, st in entry.body["targets"].items() if st.get("error_rev") != cur["rev"]
                    and (st["rev"] != cur["rev"] or not tombs <= set(st.get("tombs", ())))]
            if todo:
                out.append((entry.id, cur, todo))
        return out

    def flush_quietly(self) -> None:
        """flush(), logging instead of raising (for commit callbacks); commits in one turn coalesce."""
        self._queued = False
        self.flush().addErrback(lambda f: log.failure("outbox delivery failed", f))

    def flush(self, only: str | None = None) -> Deferred:
        """Deliver every pending revision (or only ``only``'s); flushes run one at a time."""
        return self._lock.run(self._flush, only)

    def _follow_audiences(self) -> None:
        """Add to the outbox the targets that a new revision's signed audience names and the outbox neither
        has nor had refused: every revision then goes to every place its audience names, not only to those a
        publish recorded (a resolve gives the kept revision the union of its branches' audiences, and another
        copy of the account may have published a branch to places this copy never did)."""
        for name in (PRIVATE, PUBLIC):
            db = self._store.database(name)
            since, self._followed[name] = self._followed[name], db.update_seq()
            if since == self._followed[name]:
                continue
            for doc in db.docs_since(since):
                if doc.deleted:
                    self._delete_where_held(doc.id)
                named = [] if doc.deleted else audience.targets(audience.of(doc.body))
                if named and doc.body.get("author") == self._key.account_id:
                    known, refused = _outbox_body(self._outbox.get(doc.id))
                    self._add_targets(doc.id, [t for t in named if t not in known and t not in refused])

    def _delete_where_held(self, docid: str) -> None:
        """A deleted document goes back to the refused targets that hold an earlier revision of it (an author
        removed from a group, whose edit the group then refused): the hub takes a tombstone where the group
        holds the document, and without it the shift stayed live there for good."""
        entry = self._outbox.get(docid)
        if entry is None or not entry.body.get("held"):
            return   # the common case: no read of the document itself
        cur = self.current(docid)
        if cur is not None and cur["deleted"]:
            self._add_targets(docid, list(entry.body["held"]))

    @inlineCallbacks
    def _flush(self, only: str | None):
        self._follow_audiences()
        for docid, cur, todo in self.pending():
            if only is not None and docid != only:
                continue
            try:
                todo = yield self._send_tombstones(docid, todo)
            except NotConnected:
                return
            while todo:  # each round that meets a refusal drops a target, so this ends
                try:
                    results = yield self._deliver(cur, todo)
                except NotConnected:
                    return
                except FlowError as e:  # the whole call refused: nothing is final, the next revision retries
                    self._record(docid, cur["rev"], {t: "error: " + e.message for t in todo}, final=False)
                    break
                refused = self._record(docid, cur["rev"], results)
                if not refused:
                    break
                cur = self._narrow(docid, refused)
                todo = [] if cur is None else list(self.targets(docid))

    @inlineCallbacks
    def _send_tombstones(self, docid: str, todo: list[str]):
        """Deliver each tombstone of a resolved conflict (a deleted losing leaf) to the targets that lack it,
        before the winner: the winner's history names only its own branch, so without the tombstone a
        target keeps the other branch live. Returns the targets still to get the winner; one whose
        tombstone failed waits for the next revision (as after a refused call), so nothing loops."""
        leaves = self._leaves(docid)
        for tomb in _tombstones(leaves):
            held = self.targets(docid)   # one outbox read per tombstone, not one per target
            lacking = [t for t in todo if tomb["rev"] not in held.get(t, {}).get("tombs", ())]
            if not lacking:
                continue
            try:
                results = yield self._deliver(tomb, lacking)
            except NotConnected:   # a FlowError too: the caller stops the flush, nothing is recorded
                raise
            except FlowError as e:
                results = {t: "error: " + e.message for t in lacking}
            failed = self._record_tombstone(docid, tomb["rev"], leaves[0]["rev"], results)
            todo = [t for t in todo if t not in failed]
        held = self.targets(docid)
        return [t for t in todo if held.get(t, {}).get("rev") != leaves[0]["rev"]] if leaves else []

    def _record_tombstone(self, docid: str, tomb: str, cur: str, results: dict) -> list[str]:
        """Note which targets now hold the tombstone ``tomb``; an error keeps the target waiting for a
        revision after ``cur``. Returns the targets it failed for."""
        entry = self._outbox.get(docid)
        known, refused = _outbox_body(entry)
        failed = [t for t, outcome in results.items() if t in known and outcome != "ok"]
        for t in failed:
            log.warn("delivering the tombstone {rev} of {id} to {target} failed: {why}", rev=tomb, id=docid,
                     target=t, why=results[t])
            known[t] = {**known[t], "error": str(results[t]), "error_rev": cur}
        for t in [t for t in results if t in known and t not in failed]:
            known[t] = {**known[t], "tombs": [*known[t].get("tombs", ()), tomb]}
        self._outbox.put(docid, {**entry.body, "targets": known, "refused": refused}, parent=entry.rev)
        return failed

    def _record(self, docid: str, rev: str, results: dict, final: bool = True) -> list[str]:
        """Note what each target got; with ``final``, an error is the hub's refusal of that target: it
        leaves the outbox's targets for its refused list. Returns the targets refused."""
        entry = self._outbox.get(docid)
        known, refused = _outbox_body(entry)
        held = dict(entry.body.get("held") or {})
        newly = []
        for t, outcome in results.items():
            if t not in known:
                continue
            if outcome == "ok":
                kept = {"tombs": known[t]["tombs"]} if "tombs" in known[t] else {}
                known[t] = {"rev": rev, "error": None, **kept}
                continue
            log.warn("delivering {id} to {target} failed: {why}", id=docid, target=t, why=outcome)
            if final:
                if known[t]["rev"] is not None:   # the target holds an earlier revision: a delete goes there
                    held[t] = known[t]["rev"]
                del known[t]
                refused[t] = str(outcome)
                newly.append(t)
            else:
                known[t] = {**known[t], "error": str(outcome), "error_rev": rev}
        self._outbox.put(docid, _entry_body(known, refused, held), parent=entry.rev)
        return newly

    def _narrow(self, docid: str, refused: list[str]) -> dict | None:
        """Write a revision whose signed audience leaves out the refused targets; the revision the
        remaining targets now need (None when there is none: the document is deleted, as a tombstone names
        no audience, or its audience did not name them)."""
        try:
            db, doc = self._own(docid)
        except FlowError:
            return None
        aud = audience.without(audience.of(doc.body), refused)
        if aud == audience.of(doc.body):
            return None
        rev = db.put(docid, {**doc.body, "audience": aud}, parent=doc.rev, sign=self._sign)
        log.info("left {targets} out of the audience of {id} (refused by the hub), rev {rev}",
                 targets=refused, id=docid, rev=rev)
        return self.current(docid)


def _tombstones(leaves: list[dict]) -> list[dict]:
    """The deleted losing leaves among a document's leaves (winner first): tombstones of resolved conflicts."""
    return [d for d in leaves[1:] if d["deleted"]]


def refused_targets(outbox: Any, docid: str) -> list[str]:
    """The targets the hub refused for good for ``docid``, from the ``user/outbox`` database."""
    return list(_outbox_body(outbox.get(docid))[1])


def _entry_body(known: dict, refused: dict, held: dict) -> dict:
    """An outbox entry's body: its targets, the refused ones, and (only when there are any) the refused
    targets that hold an earlier revision, where a delete still goes."""
    return {"targets": known, "refused": refused, **({"held": held} if held else {})}


def _outbox_body(entry: Any) -> tuple[dict, dict]:
    """(targets, refused) of an outbox entry, as copies; entries written before refusals have none."""
    if entry is None:
        return {}, {}
    return dict(entry.body["targets"]), dict(entry.body.get("refused") or {})
