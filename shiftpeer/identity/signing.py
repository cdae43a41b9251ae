"""Shift signatures: the exact bytes an author signs, and checking them.

The signed payload (see docs/identity.md) is::

    cbor2.dumps([docid, rev, body, deleted, author], canonical=True)

with ``author = body["author"]``, the author's account id. The revision hashes the parent
and the body, and the signature covers the revision; the history a revision travels with is not
signed, so the receiver checks that the revision hashes its body under the parent the history names
(``prepare_check``, ``store.revs.replicated_rev_ok``). Together a relay can neither alter a shift nor
attach an author's revision to another parent without the author's key, and an author cannot send two
bodies under one revision id. Where batches are checked (inline, in threads, in processes) is ``verifiers``.

A revision that does not check, under a well-formed history and a signature that verifies, is not a
forgery: an honest relay built before the check may hold it (it stored what came), or an honest hub may
pass on what an author signed. Such a document is refused on its own (``BAD_REVISION``), not as ``forged``:
every entry point leaves it out, logs and counts it, and keeps the rest (docs/protocol.md section 9).
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any, Optional, Sequence

import cbor2

from shiftpeer.ids import names_other_author
from shiftpeer.store import revs
from shiftpeer.store.codec import PLAIN_BODY, cbor_head_len, dumps_sorted, encode_text
from shiftpeer.sync.refusedrevs import Refused

from .genuine import GenuineCache
from .keys import NodeKey, is_account_id, public_key_of, usable_public_key, verify_with_key



def signing_payload(docid: str, rev: str, body: dict, deleted: bool,
                    body_cbor: Optional[bytes] = None) -> bytes:
    """The canonical bytes an author signs for one revision of a shift.

    `body_cbor`, the body's canonical CBOR where the caller has it (the store's put encodes it for the
    revision hash), is spliced in instead of encoding the body again: a canonical array is its items'
    canonical encodings one after another, so the bytes are the same (tests/test_identity.py checks it)."""
    if not isinstance(body, dict):
        raise ValueError("a shift body is a map")
    author = body.get("author")
    if not is_account_id(author):
        raise ValueError(f"body['author'] is not an account id: {author!r}")
    if not isinstance(docid, str) or not isinstance(rev, str):
        raise ValueError("docid and rev are strings")
    if body_cbor is None:
        return cbor2.dumps([docid, rev, body, bool(deleted), author], canonical=True)
    return _spliced_payload(docid, rev, body_cbor, bool(deleted), author)


def _spliced_payload(docid: str, rev: str, body_cbor: bytes, deleted: bool, author: str) -> bytes:
    """The payload array with the body's CBOR bytes as they are (an array's items, one after another)."""
    return b"".join((b"\x85", encode_text(docid), encode_text(rev), body_cbor,
                     b"\xf5" if deleted else b"\xf4", encode_text(author)))


def sign_doc(key: NodeKey, docid: str, rev: str, body: dict, deleted: bool,
             body_cbor: Optional[bytes] = None) -> bytes:
    """Sign one revision; refuses a body whose author is someone else (use with functools.partial
    as the store's ``sign`` callback, which passes `body_cbor`: see signing_payload)."""
    if body.get("author") != key.account_id:
        raise ValueError(
            f"cannot sign a shift whose author is {body.get('author')!r} with key {key.account_id}"
        )
    if names_other_author(docid, key.account_id):
        raise ValueError(f"the id {docid!r} names another author: every node would refuse this revision")
    return key.sign(signing_payload(docid, rev, body, deleted, body_cbor))


#: Why a document whose signature verifies is still refused: its revision is not the hash of its body under
#: the parent its history names; or its history names no parent (one entry at depth > 1), so that cannot be
#: checked. Falsy (``Refused``): wherever an answer is taken as "genuine or not", it is "not".
BAD_REVISION = Refused("bad_revision", "its revision is not the hash of its body under the parent its history names")
STEMMED_HISTORY = Refused("bad_revision", "its history names no parent (one entry at depth > 1), so its revision "
                                          "cannot be checked")


class BadRevision(tuple):
    """prepare_check's answer for a document whose revision does not check under a well-formed history: the
    same four items (its signature is still checked, and a bad one is a forgery like any other) and `why`."""

    why: Refused = BAD_REVISION


class StemmedHistory(BadRevision):
    """A BadRevision whose history names no parent."""

    why = STEMMED_HISTORY


def _unchecked(rev: str, history: Any, prepared: tuple) -> Optional[BadRevision]:
    """A revision that failed the check (rare: off the hot path): a BadRevision when its history is well
    formed, else None (a malformed history is what no store holds or sends)."""
    fault = revs.rev_fault(rev, history)
    if fault == revs.MALFORMED:
        return None
    return (StemmedHistory if fault == revs.STEMMED else BadRevision)(prepared)


def prepare_check(doc: Any, body_cbor: Optional[bytes] = None) -> Optional[tuple[bytes, bytes, list, bytes]]:
    """(author's public key, sig, payload items, plain payload) of a replicated document, or None when it
    cannot be genuine: it cannot carry a valid signature, or its history is malformed. The revision must be
    the hash of its body under the parent its history names (``revs.replicated_rev_ok``, over the body's
    bytes in the plain payload: ~4 us for a 1 KB body, and no second encoding unless its keys are out of
    canonical order); when it is not, the four items come as a ``BadRevision`` (a tuple subclass: callers
    tell it by ``type(prepared) is not tuple``), whose signature is still to be checked. Holds the GIL:
    everything but the signature check itself.

    `body_cbor`: the bytes ``doc["body"]`` was decoded from, where the caller received them (a hub's
    answer to a query): spliced into the plain payload instead of encoding the body again (~5 us a 1 KB
    body). Those bytes are the payload's body whatever they hold, so the check is the same: a plain
    payload that verifies is the author's canonical one, and any other falls back to the canonical
    encoding of the decoded body."""
    try:
        sig = doc.get("sig")
        body = doc["body"]
        if not isinstance(sig, (bytes, bytearray)) or len(sig) != 64 or not isinstance(body, dict):
            return None
        docid, rev, author = doc["id"], doc["rev"], body.get("author")
        if not isinstance(docid, str) or not isinstance(rev, str):
            return None
        pk = public_key_of(author)    # ValueError unless an account id; cached, unlike the id's regex check
        if not usable_public_key(pk):  # a small-order key "signs" anything: refused here, before any check
            return None
        if names_other_author(docid, author):   # a bound id names its author: no one else may write under it
            return None
        deleted = bool(doc.get("deleted", False))
        items = [docid, rev, body, deleted, author]
        if body_cbor is None:
            plain = dumps_sorted(items)
        elif type(body_cbor) is bytes:
            plain = _spliced_payload(docid, rev, body_cbor, deleted, author)
        else:
            return None
        start, end = _body_span(docid, rev, plain)
        if not revs.replicated_rev_ok(rev, doc.get("history"), deleted, memoryview(plain)[start:end], body):
            return _unchecked(rev, doc.get("history"), (pk, bytes(sig), items, plain))
        return pk, bytes(sig), items, plain
    except (KeyError, ValueError, TypeError, AttributeError, cbor2.CBOREncodeError):
        return None


#: The payload's last items: the deleted flag (1 byte) and the author, a 52-character account id (2-byte head).
_PAYLOAD_TAIL = 1 + 2 + 52


def leave_plain_body(doc: Any, prepared: tuple[bytes, bytes, list, bytes]) -> None:
    """Leave the body's plain CBOR on a document the sync validator found genuine, for the store to write
    instead of encoding the body again (codec.PLAIN_BODY). It is the middle of the plain payload (an
    array's items are encoded one after another): after the array head, docid and rev, before the flag
    and the 52-character author. Only documents on their way to the store get it (verify_many):
    verify_repl_doc leaves what it is given as it was."""
    if type(doc) is not dict:
        return
    plain = prepared[3]
    start, end = _body_span(prepared[2][0], prepared[2][1], plain)
    doc[PLAIN_BODY] = plain[start:end]


def _body_span(docid: str, rev: str, plain: bytes) -> tuple[int, int]:
    """Where the body's bytes are in a plain payload (leave_plain_body says why they are there)."""
    d, r = len(docid.encode()), len(rev.encode())
    return 1 + cbor_head_len(d) + d + cbor_head_len(r) + r, len(plain) - _PAYLOAD_TAIL


def canonical_retry(prepared: tuple[bytes, bytes, list, bytes]) -> Optional[bytes]:
    """The canonical payload when it differs from the plain one (else None: nothing else to try)."""
    try:
        canonical = cbor2.dumps(prepared[2], canonical=True)
    except (ValueError, TypeError, cbor2.CBOREncodeError):
        return None
    return canonical if canonical != prepared[3] else None


#: The one signature check (keys.verify_with_key); `verifiers` calls it through this module, so a test can
#: count the checks by replacing it here.
check_signature = verify_with_key

#: Payloads verify_repl_doc found genuine (not the sync validator's: a pulled document comes once).
GENUINE = GenuineCache()


def verify_repl_doc(doc: dict, body_cbor: Optional[bytes] = None) -> Any:
    """True when a replicated document's sig is its author's signature and its revision is the hash of its
    body under the parent its history names (``prepare_check``). Otherwise a falsy answer: the document's
    ``BadRevision.why`` (``BAD_REVISION`` or ``STEMMED_HISTORY``) when its signature verifies but its
    revision does not check, else False (a forgery, or not a document).

    Fast path: the payload is first encoded *plainly* (``codec.dumps_sorted``: libipld's encoder, keys in
    canonical order, floats in 64 bits; ~5x cheaper than cbor2's canonical encoding, and the encoding
    holds the GIL), so for bodies without a float that fits fewer bits the plain bytes are already the
    canonical payload. A plain encoding decodes to exactly the values encoded (a zero's sign aside, which
    no honest signature is over: ``codec.dumps_sorted``), so if the signature verifies over it, the author
    signed exactly this document. Only when that fails (a short float, a
    value libipld refuses, or a forgery) is the canonical payload built and checked.

    A payload found genuine is remembered (``genuine.GenuineCache``, keyed by the signature and a hash of
    the payload's bytes), so the same row asked for again costs its encoding and a hash, not a check.
    `body_cbor`: the bytes the body was decoded from, if the caller has them (``prepare_check``). Such a row
    is remembered by ``row_key`` instead, which covers the revision check too: seen again, it costs one hash.
    """
    key = None if body_cbor is None else row_key(doc, body_cbor)
    if key is not None and GENUINE.seen(key):
        return True
    prepared = prepare_check(doc, body_cbor)
    if prepared is None:
        return False
    good_rev = type(prepared) is tuple
    by_payload = key is None or not good_rev
    if by_payload:   # one key a row, whichever: the memory's size is a number of rows; a row
        # whose revision does not check is never remembered by its row key (that would answer True next time),
        # only by its payload's: the author signed that payload, and the history is not in it
        key = GenuineCache.key(prepared[1], prepared[3])
        if GENUINE.seen(key):
            return True if good_rev else prepared.why
    verified = _signature_ok(prepared)
    if verified is None:
        return False
    if by_payload and verified[3] is not prepared[3]:
        # it verified over the canonical payload, not the plain one: remember what the author signed (two
        # bodies can share a plain payload: libipld writes -0.0 as 0.0; never two a canonical one)
        key = GenuineCache.key(verified[1], verified[3])
    GENUINE.add(key)
    return True if good_rev else prepared.why


#: Sets ``row_key``'s hashes apart from ``GenuineCache.key``'s (whose preimage is a payload, not a row).
_ROW_PERSON = b"shiftpeer-row"


def row_key(doc: Any, body_cbor: Any) -> Optional[bytes]:
    """The memory's key for a row whose body came as bytes, a hub's answer to a query (None for a row not
    shaped for one: it is checked the long way, and refused).

    It covers everything ``verify_repl_doc(doc, body_cbor)`` answers from, so a row found genuine once is
    the same answer when every one of these is the same: the signature, the id, the revision, the deleted
    flag, the parent the history names (or none: the revision's own check, ``revs.replicated_rev_ok``,
    looks no further) and the body's bytes, from which the body, so its author, is decoded. The payload key
    (``GenuineCache.key``) skips only the signature check; this one skips the payload's assembly, the
    revision's hash and the author's key checks too (~15 us a 1 KB row)."""
    sig, docid, rev, history = doc.get("sig"), doc.get("id"), doc.get("rev"), doc.get("history")
    if type(sig) is not bytes or len(sig) != 64 or type(body_cbor) is not bytes or type(docid) is not str \
            or type(rev) is not str:
        return None
    if history is None or (type(history) is list and len(history) == 1 and history[0] == rev):
        parent = None
    elif type(history) is list and len(history) > 1 and history[0] == rev and type(history[1]) is str:
        parent = history[1]
    else:
        return None
    h = blake2b(cbor2.dumps([docid, rev, bool(doc.get("deleted", False)), parent]), digest_size=32,
                person=_ROW_PERSON)
    h.update(body_cbor)
    return sig + h.digest()


def checked_by_validator(doc: Any) -> bool:
    """True for a document the sync validator (verify_many) found genuine on its way to the store: it
    carries codec.PLAIN_BODY, which only that check sets and nothing from outside can (the key is not a
    string). The store's rules use it to skip checking the same signature a second time."""
    return type(doc) is dict and PLAIN_BODY in doc


def _checked(doc: Any) -> Optional[tuple[bytes, bytes, list, bytes]]:
    """verify_chunk's check (verify_repl_doc's without the memory): the prepared payload of a document whose
    signature verifies (a BadRevision when its revision does not check), else None."""
    prepared = prepare_check(doc)
    return None if prepared is None else _signature_ok(prepared)


def _signature_ok(prepared: tuple[bytes, bytes, list, bytes]) -> Optional[tuple[bytes, bytes, list, bytes]]:
    """`prepared` when its signature verifies over the plain payload; when it verifies over the canonical
    one instead, `prepared` with that payload in the plain one's place (of the same type: a BadRevision stays
    one), so that the body's bytes left for the store are those its author signed (``leave_plain_body``)."""
    pk, sig, _, plain = prepared
    if check_signature(pk, plain, sig):
        return prepared
    canonical = canonical_retry(prepared)
    if canonical is None or not check_signature(pk, canonical, sig):
        return None
    return with_payload(prepared, canonical)


def with_payload(prepared: tuple, payload: bytes) -> tuple:
    """`prepared` (prepare_check's answer, a tuple or a BadRevision) with `payload` as its payload."""
    return type(prepared)((prepared[0], prepared[1], prepared[2], payload))


def verify_chunk(docs: Sequence[dict]) -> list[Any]:
    """verify_repl_doc's answers over documents on their way to the store, leaving each genuine one its
    body's bytes."""
    out: list[Any] = []
    for d in docs:
        prepared = _checked(d)
        if prepared is None:
            out.append(False)
        elif type(prepared) is tuple:
            leave_plain_body(d, prepared)
            out.append(True)
        else:
            out.append(prepared.why)
    return out
