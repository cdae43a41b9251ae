"""Revisions the receiving side's rules left out of a batch, told back to the side that sent them.

A puller's ``store_batch`` (the roles' rules: another author's shift, an audience that does not name the
database...) may leave signed documents out of a batch it still stores and acknowledges. Without a word
back, a user whose push the hub refused saw it reach ``caught_up`` like any other. So ``store_batch`` may
fire with the documents it left out, each with its reason (a ``Reason`` carries a short code), the puller
sends them in ``refused`` frames just before the batch's ``ack``, and the feeder logs each one and keeps
the latest on its ``Replication`` (docs/protocol.md sections 3, 6 and 9).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, NamedTuple

from twisted.logger import Logger

log = Logger()

#: Entries in one ``refused`` frame; more are sent in several frames.
MAX_REFUSED = 100
#: Characters of a reason code (``audience``, ``other_author``...) and of its text on the wire.
MAX_CODE = 64
MAX_REASON = 500
#: Refused revisions a ``Replication`` keeps (the latest); ``refused_count`` counts them all.
KEEP_REFUSED = 100
#: The code of a reason given as a plain string.
DEFAULT_CODE = "refused"


class Reason(str):
    """Why a rule leaves a document out (the text), with a short code the sender can act on."""

    code: str

    def __new__(cls, code: str, text: str) -> "Reason":
        r = super().__new__(cls, text)
        r.code = code
        return r


class Refused(Reason):
    """A validator's answer for a document it refuses on its own, not as a forgery (its signature verifies,
    but its revision does not check: identity/signing.py ``BAD_REVISION``). Falsy, like False, so "every
    answer true" still means "store the whole batch"; the puller leaves such a document out, logs and counts
    it, tells the peer in a ``refused`` frame and stores the rest of the batch (docs/protocol.md section 9)."""

    def __bool__(self) -> bool:
        return False


def note_refused_alone(counters: Any, via: str, peer: Any, doc: Any, why: Any, where: str = "") -> None:
    """Log and count one document refused on its own for its revision (a ``Refused``), as every entry point
    does: the warning names the document, its revision, the peer it came from and where (`via`: ``sync``,
    ``deliver``, ``query``; `where`: the database or call), and it counts in ``counters["bad_revision.<via>"]``
    (``shiftpeer_bad_revisions_total``; `counters` None: not counted). Nothing is held against the peer."""
    if counters is not None:
        counters["bad_revision." + via] += 1
    docid, rev = (doc.get("id"), doc.get("rev")) if isinstance(doc, dict) else (None, None)
    log.warn("refused {doc} {rev} from {peer} ({where}): {why} (the document alone: not held against the peer, "
             "which may be a node built before the revision check)", doc=docid, rev=rev, peer=peer,
             where=where or via, why=why)


class RefusedRev(NamedTuple):
    """One refused revision as it travels and as a ``Replication`` keeps it."""

    docid: str
    rev: str
    code: str
    reason: str


def refused_revs(result: Any) -> list[RefusedRev]:
    """The refused revisions in what a ``store_batch`` fired with: a list of (document, why) pairs, or
    anything else for none. Codes and texts are cut to their wire bounds."""
    if type(result) is not list:
        return []
    out = []
    for entry in result:
        try:
            doc, why = entry
            docid, rev = doc["id"], doc["rev"]
        except (TypeError, ValueError, KeyError):
            continue
        code = getattr(why, "code", None) or DEFAULT_CODE
        out.append(RefusedRev(docid, rev, str(code)[:MAX_CODE], str(why)[:MAX_REASON]))
    return out


def frames(revs: list[RefusedRev]) -> Iterator[list[list[str]]]:
    """The ``revs`` field of each ``refused`` frame for these revisions (at most MAX_REFUSED each)."""
    for i in range(0, len(revs), MAX_REFUSED):
        yield [list(r) for r in revs[i:i + MAX_REFUSED]]


__all__ = ["DEFAULT_CODE", "KEEP_REFUSED", "MAX_CODE", "MAX_REASON", "MAX_REFUSED", "Reason", "Refused", "RefusedRev",
           "frames", "note_refused_alone", "refused_revs", "sift", "with_refused"]


def sift(docs: list, why_not: Callable[[dict], Any], note: Callable[[dict, Any], None]) -> tuple[list, list]:
    """Split `docs` into those `why_not` accepts (None) and the (document, why) pairs it refuses, for a
    ``store_batch`` to fire with; `note(doc, why)` logs and counts each refusal."""
    accepted: list = []
    refused: list = []
    for doc in docs:
        why = why_not(doc)
        if why is None:
            accepted.append(doc)
        else:
            note(doc, why)
            refused.append((doc, why))
    return accepted, refused


def with_refused(result: Any, refused: list) -> list:
    """``refused`` followed by the (document, why) pairs an inner ``store_batch`` fired with (``result``), if any:
    what a layer of checks left out and what the layers under it did, for the puller to tell the peer."""
    return refused + result if type(result) is list else refused
