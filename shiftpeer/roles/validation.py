"""Who may write a revision: the author's signature, the same author as before, and the hub's routing rules.

Every node runs ``refusal`` on each document it receives from someone else before storing it: the
signature must verify under ``body.author`` and that author must be the author of the revisions the
database already holds, so only a shift's author can edit, delete or publish it. A hub adds
``HubRules``: the signed audience must name the database, group writers must be allowed to publish,
a registered user may only hand in documents they wrote, and ``master`` (the public firehose) takes
only documents by authors registered on this hub unless a configured relay (a federated hub) hands
them in, so invite-only registration gates publishing.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from shiftpeer.identity.signing import checked_by_validator, verify_repl_doc
from shiftpeer.ids import names_other_author
from shiftpeer.roles import audience
from shiftpeer.roles.groups import RANK
from shiftpeer.roles.names import FlowError, split_db
from shiftpeer.sync.refusedrevs import Reason, Refused, with_refused
from shiftpeer.sync.replication import default_store_batch

log = Logger()

_DOC_KEYS = frozenset(("id", "rev", "deleted", "body", "sig", "history"))


def check_repl_doc(doc: Any) -> dict:
    """Return ``doc`` when it has the shape of a replicated document (RPC input), else raise FlowError."""
    if (not isinstance(doc, dict) or set(doc) != _DOC_KEYS or not isinstance(doc["id"], str)
            or not isinstance(doc["rev"], str) or not isinstance(doc["body"], dict)
            or type(doc["deleted"]) is not bool or not isinstance(doc["sig"], bytes)
            or not isinstance(doc["history"], list) or not doc["history"] or doc["history"][0] != doc["rev"]):
        raise FlowError(f"not a replicated document with exactly {sorted(_DOC_KEYS)}", "bad_request")
    return doc


def held_author(db: Any, docid: str) -> str | None:
    """The author of the revisions ``db`` already holds for ``docid`` (None: it holds none)."""
    if db is None:
        return None
    doc = db.get(docid)
    if doc is None:
        return None
    return doc.body.get("author") if isinstance(doc.body, dict) else None


def refusal(db: Any, doc: dict) -> str | None:
    """Why ``doc`` may not be stored in ``db`` (None: it may): bad signature, a revision that does not check
    (``signing.BAD_REVISION``, code ``bad_revision``), or a different author. A
    document the sync validator already found genuine is not checked again (``checked_by_validator``):
    a batch's signatures were checked once, in the verification processes, not a second time here in the
    reactor thread."""
    genuine = checked_by_validator(doc) or verify_repl_doc(doc)
    if not genuine:
        if isinstance(genuine, Refused):   # signed by its author, but its revision does not check
            return Reason(genuine.code, str(genuine))   # truthy, as every reason here: callers chain with `or`
        author = doc["body"].get("author")
        if isinstance(author, str) and isinstance(doc["id"], str) and names_other_author(doc["id"], author):
            return Reason("other_author", "only the shift's author may change it (its id names another author)")
        return Reason("bad_signature", "the signature does not verify under body.author")
    before = held_author(db, doc["id"])
    if before is not None and before != doc["body"].get("author"):
        return Reason("other_author",
                      "only the shift's author may change it (the author differs from the revisions held)")
    return None


#: Document types only a hub writes (into ``messages/<u>`` and ``system/messages``, never through these rules):
#: a user's node lists every one its feed holds as a notification or notice from its hub.
HUB_WRITES = frozenset(("message", "notice"))


def hub_writes(body: dict) -> Reason:
    """Why a document of a type only hubs write is refused wherever a user or a relay hands it in."""
    return Reason("hub_only", f"only a hub writes {body.get('type')}s (its own databases, signed by it)")


def not_a_shift(docid: Any, body: Any) -> Reason | None:
    """Why a comment may not answer ``docid``, whose body as this node holds it is ``body`` (None: a shift,
    or one this node does not hold). Comments answer shifts (``comment SHIFT_ID``, a shift's thread, the
    shift author's notification); one answering a comment was in no thread of its shift and notified that
    comment's author alone, so every place refuses it, as the local API does before writing."""
    kind = body.get("type", "shift") if isinstance(body, dict) else "shift"
    if kind == "shift":
        return None
    return Reason("not_a_shift", f"a comment answers a shift, and {docid} is a {kind}")


def answers_no_shift(db: Any, body: Any) -> bool:
    """Is ``body`` a comment whose ``shift`` ``db`` holds, live or deleted, as no shift (``not_a_shift``)? Every
    place refuses such a reply once it holds what it answers, but one that arrived first was taken (as a
    comment whose shift has not arrived is), and older versions took any: whatever serves comments leaves it
    out, so no answer depends on the order things arrived in."""
    return no_shift(answered(db, body))


def holds_no_shift(db: Any, docid: str) -> bool:
    """Does ``db`` hold ``docid``, live or deleted, as something a comment may not answer (``not_a_shift``)?"""
    return no_shift(db.get(docid))


def answered(db: Any, body: Any) -> Any:
    """What ``db`` holds, live or deleted, under the id the comment ``body`` answers (its ``shift``); None when
    ``body`` is no comment naming one, or ``db`` holds nothing there. For a caller that asks more of it than
    whether it is a shift (``no_shift``): one read for both."""
    if not isinstance(body, dict) or body.get("type") != "comment" or not isinstance(body.get("shift"), str):
        return None
    return db.get(body["shift"])


def no_shift(held: Any) -> bool:
    """Is ``held`` (a document as a database holds it, or None) something a comment may not answer
    (``not_a_shift``)?"""
    return held is not None and not_a_shift(held.id, held.body) is not None


class HubRules:
    """The hub's extra checks for documents written into its own databases."""

    def __init__(self, accounts: Any, groups: Any, *, relays: Any = (), shared: Any = None) -> None:
        self._accounts = accounts
        self._groups = groups
        #: peer ids allowed to relay documents by other authors (federated hubs, trusted full peers)
        self.relays = set(relays)
        #: What a comment's checks ask of ``shared`` (the hub's ``HubQueries``; None: no comment checks):
        #: ``held_any(id)``, the document it holds under an id, live or deleted, or None (a comment answers a
        #: shift); ``sees_a_revision(account id, doc)``, may that account see it (at the winning revision or
        #: the one a place of theirs holds); ``places_of(doc)``, the visibility tokens
        #: of the places it went (a comment goes only where the shift it answers went, not where its audience
        #: claims). The answered document is read once and handed to the other two.
        self.shared = shared

    def unregistered(self, peer_id: str | None, doc: dict) -> str | None:
        """Why ``master`` refuses ``doc`` handed in by ``peer_id``: its author is not registered here
        (None: registered, or ``peer_id`` is a configured relay, which vouches for other hubs' users).
        Full peers gossip ``master`` with anyone announcing the role, so this is what keeps an
        unregistered key out of the firehose."""
        if peer_id is not None and peer_id in self.relays:
            return None
        author = doc["body"].get("author")
        if self._accounts.name_of(author) is None:
            return Reason("unregistered", f"its author {author} is not registered on this hub")
        return None

    def refusal(self, dbname: str, peer_id: str | None, doc: dict) -> str | None:
        """Why the hub refuses ``doc`` into ``dbname`` from ``peer_id`` (None: accepted)."""
        body = doc["body"]
        author = body.get("author")
        if peer_id is not None and peer_id not in self.relays and author != peer_id:
            return Reason("not_author", "a user may only hand in documents they wrote")
        if dbname == "master" and peer_id is not None:
            why = self.unregistered(peer_id, doc)
            if why is not None:
                return why
        if doc["deleted"]:
            return None  # a tombstone carries no audience; signature and same author were checked
        if body.get("type") in HUB_WRITES:
            return hub_writes(body)
        aud = audience.of(body)
        if not audience.admits(aud, dbname):
            return Reason("audience", f"the signed audience does not name {dbname}")
        kind, name = split_db(dbname)
        if kind == "group":
            writer = self._accounts.name_of(author)
            needed = "read" if body.get("type") == "comment" else "publish"
            if RANK.get(self._groups.level(name, writer), -1) < RANK[needed]:
                return Reason("group_level",
                              f"the author may not {'comment' if needed == 'read' else 'publish'} in group {name}")
        if kind == "inbox" and self._accounts.id_of(name) is None:
            return Reason("no_user", f"there is no user {name!r} on this hub")
        if body.get("type") == "comment":
            return self._comment_refusal(dbname, author, body.get("shift"), relayed=peer_id in self.relays)
        return None

    def _comment_refusal(self, dbname: str, author: Any, shift: Any, *, relayed: bool) -> str | None:
        """Why a comment may not go into ``dbname``: its author cannot see the shift, the shift is not
        there (neither asked of a comment a relay hands in: its users are not ours), or what it answers is no
        shift (asked of every comment). A comment's audience is the shift's signed one, which its author may
        claim as they like (a shift sent to bob alone that says "public" made bob's reply public), so the
        places count."""
        if self.shared is None:
            return None
        held = self.shared.held_any(shift)   # one read for the three checks, in this order (what the author is told)
        if not relayed and not self.shared.sees_a_revision(author, held):
            return Reason("not_visible", "a comment needs a shift its author can see")
        if not relayed and audience.vis_token(dbname) not in self.shared.places_of(held):
            return Reason("not_there", f"a comment goes only where its shift went, and {dbname} does not hold it")
        return not_a_shift(shift, getattr(held, "body", None))

    def check(self, db: Any, dbname: str, peer_id: str | None, doc: dict) -> str | None:
        """Both layers: the universal refusal, then the hub's rules."""
        return refusal(db, doc) or self.refusal(dbname, peer_id, doc)


#: check(database, peer id, document) -> why it is refused, or None
Check = Callable[[Any, str, dict], "str | None"]


def filtering_store_batch(check: Check,
                          write: Callable[..., Deferred] = default_store_batch) -> Callable[..., Deferred]:
    """A SyncFactory ``store_batch`` that stores only the documents ``check`` accepts, with ``write`` (a
    ``default_store_batch``, or one that leaves out more: a hub's quota, roles/quota.py).

    The signatures were verified by the sync validator; this adds the rules that need the target
    database and the peer (same author, the signed audience, membership). A refused document is
    logged and left out; the checkpoint still advances, so it is not asked for again. The Deferred
    fires with the (document, why) pairs left out: the puller tells the peer that sent them.
    """

    def store_batch(store: Any, db: Any, docs: list, peer_id: str, remote_db: str, cp: dict,
                    vis: list | None = None) -> Deferred:
        accepted, refused = [], []
        with store.read_txn():   # the rules' lookups share it
            for doc in docs:
                why = check(db, peer_id, doc)
                if why is None:
                    accepted.append(doc)
                else:
                    refused.append((doc, why))
                    log.warn("refused {doc} {rev} from {peer} into {db}: {why}", doc=doc["id"], rev=doc["rev"],
                             peer=peer_id, db=db.name, why=why)
        d = write(store, db, accepted, peer_id, remote_db, cp, vis=vis)
        return d.addCallback(with_refused, refused) if refused else d

    return store_batch
