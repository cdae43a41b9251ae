"""A hub's quota by day: how many documents, and how many bytes, one account may have the hub store in a UTC day.

``docs_per_second`` (a sync limit) bounds how fast a node stores what one peer sends; over days a registered
account could still fill the hub. ``hub.json`` ``"quota": {"docs_per_day": N, "bytes_per_day": M}`` bounds that:
each new revision the hub stores in ``master``, a ``group/<g>`` or an ``inbox/<u>`` counts against its author (the
account that signed it, registered here), whichever way it came (a push, ``deliver``, gossip from a full peer):
one document, and its body's bytes, per database that stores it. A revision the database already holds, one the
rules refuse anyway, an author not registered here (a relay's) and the hub's own account count nothing. Past
either limit a revision is refused with the code ``quota`` like a rule's refusal (nothing stored, the sender
told); the count starts again at 00:00 UTC.

The count is kept in the store (``Store.put_meta``, written in the transaction of the batch it counts, one value
per author in it), so a restart resets no one's day and a crash loses no count of what it kept. In memory: the
accounts that stored something today, dropped when the day turns.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from shiftpeer.roles.names import FlowError
from shiftpeer.store import codec
from shiftpeer.sync.config import Limit, check_value
from shiftpeer.sync.refusallog import RefusalLog
from shiftpeer.sync.refusedrevs import Reason
from shiftpeer.sync.replication import default_store_batch

log = Logger()

DAY = 86400
#: The code of a revision refused over its author's quota (``refused`` frames, docs/protocol.md section 6).
QUOTA = "quota"
LIMITS = (
    Limit("docs_per_day", int, None, 1, can_be_off=True,
          help="documents one account may have the hub store in a UTC day (each database's copy counts)"),
    Limit("bytes_per_day", int, None, 1, can_be_off=True,
          help="bytes of document bodies one account may have the hub store in a UTC day"),
)
_NAMES = tuple(limit.name for limit in LIMITS)
#: The summary line of quota refusals after an author's first (``RefusalLog``).
QUOTA_SUMMARY = "refused {more:,} more documents by {what} over its quota in the last {interval:g} s ({why})"


def check_quota_config(doc: Any) -> dict[str, Optional[int]]:
    """``hub.json``'s ``quota`` object, checked: each limit a whole number of at least 1, or null (none);
    ValueError naming a bad or unknown key."""
    if not isinstance(doc, Mapping):
        raise ValueError(f'"quota" must be a JSON object like {{"docs_per_day": 10000}}, not {doc!r}')
    unknown = sorted(set(doc) - set(_NAMES))
    if unknown:
        raise ValueError(f'"quota" has unknown setting(s) {", ".join(map(repr, unknown))}; known: {", ".join(_NAMES)}')
    return {limit.name: check_value(limit, doc.get(limit.name)) for limit in LIMITS}


def counted_db(name: str) -> bool:
    """Does a revision stored in ``name`` count against its author? The databases accounts write into."""
    return name == "master" or name.startswith(("group/", "inbox/"))


def body_bytes(doc: dict) -> int:
    """The size of a document's body as the store keeps it (its CBOR; the signature check's copy when it made one)."""
    data = doc.get(codec.PLAIN_BODY)
    if type(data) is bytes:
        return len(data)
    try:
        return len(codec.plain_encoder()(doc["body"]))
    except BaseException:
        codec.reset_encoders()   # a failed encode may leave the thread's encoder mid-way (plain_encoder)
        raise


def _held(db: Any, doc: dict) -> bool:
    return not db.revs_diff({doc["id"]: [doc["rev"]]})


def _meta_name(author: str) -> str:
    return "quota:" + author


class Charge(dict):
    """What one batch (or one delivery) adds to its authors' counts on ``day``: {author: [documents, bytes]}."""

    def __init__(self, day: int) -> None:
        super().__init__()
        self.day = day

    def add(self, author: str, size: int, docs: int = 1) -> None:
        counts = self.setdefault(author, [0, 0])
        counts[0] += docs
        counts[1] += size


class DailyQuota:
    """The documents and bytes each account had the hub store today, against ``docs_per_day`` and
    ``bytes_per_day`` (None: no limit). ``counted(author)``: does this author have a quota here (registered, and
    not the hub's own account)? Times come from ``clock`` (a reactor or a ``Clock``)."""

    def __init__(self, store: Any, clock: Any, *, docs_per_day: Optional[int] = None,
                 bytes_per_day: Optional[int] = None, counted: Callable[[Any], bool] = lambda author: True,
                 counters: Any = None) -> None:
        self.store = store
        self.clock = clock
        self.docs_per_day = docs_per_day
        self.bytes_per_day = bytes_per_day
        self.counted = counted
        #: the node's sync counters once the hub is installed (``quota_refused.docs``, ``.bytes``: the metrics)
        self.counters = counters
        self.log = RefusalLog(clock, log, summary=QUOTA_SUMMARY)
        self._day = -1
        self._used: dict[str, list[int]] = {}   # today's [documents, bytes] by author, committed and in flight
        self.refused_today = 0
        self._reasons = {
            "docs": Reason(QUOTA, f"its author's quota of {docs_per_day or 0:,} documents a day on this hub is used "
                                  "up; it starts again at 00:00 UTC"),
            "bytes": Reason(QUOTA, f"it would pass its author's quota of {bytes_per_day or 0:,} bytes a day on this "
                                   "hub; it starts again at 00:00 UTC"),
        }

    @property
    def on(self) -> bool:
        return self.docs_per_day is not None or self.bytes_per_day is not None

    def today(self) -> int:
        """The UTC day now, as days since the epoch; a new one forgets yesterday's counts."""
        day = int(self.clock.seconds() // DAY)
        if day != self._day:
            self._day, self._used, self.refused_today = day, {}, 0
        return day

    def used(self, author: str) -> list[int]:
        """[documents, bytes] ``author`` had the hub store today (the stored count the first time it is asked)."""
        day = self.today()
        counts = self._used.get(author)
        if counts is None:
            stored = self.store.get_meta(_meta_name(author))
            counts = [stored[1], stored[2]] if _valid(stored) and stored[0] == day else [0, 0]
            self._used[author] = counts
        return counts

    def why_not(self, author: str, size: int) -> Optional[Reason]:
        """Why one more document of ``size`` bytes by ``author`` passes its quota today (None: it does not)."""
        docs, nbytes = self.used(author)
        if self.docs_per_day is not None and docs >= self.docs_per_day:
            return self._reasons["docs"]
        if self.bytes_per_day is not None and nbytes + size > self.bytes_per_day:
            return self._reasons["bytes"]
        return None

    # -- taking documents ------------------------------------------------------------------------------
    def admit(self, db: Any, docs: list, peer_id: Any) -> tuple[list, list, Charge]:
        """Which of ``docs`` (those the rules accepted for ``db``) the quota lets in: (accepted, [(document, why)]
        refused, the charge). Their authors are charged in memory now, so batches in flight count; the charge is
        written with the batch (``record``) or given back if that fails (``refund``). Each refusal is logged
        through ``log`` (the first of an author, then a summary a minute) and counted."""
        charge = Charge(self.today())
        if not self.on or not counted_db(db.name):
            return docs, [], charge
        accepted: list = []
        refused: list = []
        for doc in docs:
            author = doc["body"].get("author")
            if not isinstance(author, str) or not self.counted(author) or _held(db, doc):
                accepted.append(doc)
                continue
            size = body_bytes(doc)
            why = self.why_not(author, size)
            if why is None:
                counts = self._used[author]
                counts[0] += 1
                counts[1] += size
                charge.add(author, size)
                accepted.append(doc)
            else:
                self._refused(db, peer_id, doc, author, why)
                refused.append((doc, why))
        return accepted, refused, charge

    def _refused(self, db: Any, peer_id: Any, doc: dict, author: str, why: Reason) -> None:
        limit = "docs" if why is self._reasons["docs"] else "bytes"
        self.refused_today += 1
        if self.counters is not None:
            self.counters["quota_refused." + limit] += 1
        cap = f"{limit}_per_day {getattr(self, limit + '_per_day'):,}"
        self.log.refused("quota " + author, author, cap,
                         "refused {doc} {rev} by {author} from {peer} into {db}: {reason}",
                         doc=doc["id"], rev=doc["rev"], author=author, peer=peer_id, db=db.name, reason=why)

    def record(self, charge: Charge, txn: Any) -> None:
        """Add ``charge`` to the stored counts in ``txn`` (the batch's own): one small value per author."""
        for author, (docs, nbytes) in charge.items():
            stored = self.store.get_meta(_meta_name(author))
            if _valid(stored) and stored[0] == charge.day:
                docs, nbytes = stored[1] + docs, stored[2] + nbytes
            elif _valid(stored) and stored[0] > charge.day:
                continue     # a batch of yesterday committing after today's first: yesterday's count is over
            self.store.put_meta(_meta_name(author), [charge.day, docs, nbytes], txn=txn)

    def refund(self, charge: Charge) -> None:
        """Give back what a batch that was not stored charged (its write failed)."""
        if charge.day != self._day:
            return
        for author, (docs, nbytes) in charge.items():
            counts = self._used.get(author)
            if counts is not None:
                counts[0] = max(0, counts[0] - docs)
                counts[1] = max(0, counts[1] - nbytes)

    # -- the two ways documents come in ------------------------------------------------------------------
    def store_batch(self, store: Any, db: Any, docs: list, peer_id: str, remote_db: str, cp: dict, *,
                    vis: Optional[list] = None) -> Deferred:
        """``default_store_batch`` under the quota: what it refuses is left out (nothing of it stored) and the
        Deferred fires with those (document, why) pairs for the puller to tell the peer; the count is written
        in the batch's transaction."""
        if not self.on or not counted_db(db.name):
            return default_store_batch(store, db, docs, peer_id, remote_db, cp, vis=vis)
        with store.read_txn():
            accepted, refused, charge = self.admit(db, docs, peer_id)
        also = (lambda txn: self.record(charge, txn)) if charge else None
        d = default_store_batch(store, db, accepted, peer_id, remote_db, cp, vis=vis, also=also)
        if charge:
            d.addErrback(lambda f: self.refund(charge) or f)
        return d.addCallback(lambda _: refused) if refused else d

    def charge_copies(self, dbs: list, doc: dict, peer_id: Any) -> Charge:
        """Charge ``doc``'s author for a copy in each of ``dbs`` (a ``deliver``), or, when one copy passes the
        quota, charge nothing and raise FlowError(code ``quota``): the whole call is refused, so the author's node
        refuses no target for good and tries again with its next revision (roles/publishing.py)."""
        total = Charge(self.today())
        for db in dbs:
            _, refused, charge = self.admit(db, [doc], peer_id)
            for author, (docs, nbytes) in charge.items():
                total.add(author, nbytes, docs)
            if refused:
                self.refund(total)
                raise FlowError(str(refused[0][1]), QUOTA)
        return total

    def status(self) -> dict:
        """What ``status`` shows: the limits, today's UTC date, the accounts that stored something today (since
        this node started or they first stored today) and the documents refused today."""
        day = self.today()
        return {"docs_per_day": self.docs_per_day, "bytes_per_day": self.bytes_per_day,
                "day": time.strftime("%Y-%m-%d", time.gmtime(day * DAY)), "accounts_today": len(self._used),
                "refused_today": self.refused_today}


def _valid(stored: Any) -> bool:
    return type(stored) is list and len(stored) == 3 and all(type(n) is int for n in stored)


__all__ = ["DAY", "LIMITS", "QUOTA", "Charge", "DailyQuota", "body_bytes", "check_quota_config", "counted_db"]
