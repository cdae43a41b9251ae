"""Shift signatures: the exact bytes an author signs, and checking them (one, or a batch in threads).

The signed payload (see docs/identity.md) is::

    cbor2.dumps([docid, rev, body, deleted, author], canonical=True)

with ``author = body["author"]``, the author's account id. The revision already hashes the parent
and the body, and the signature covers the revision, so a relay can neither alter a shift nor
graft someone else's edit onto another history without the author's key.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import cbor2
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from .keys import NodeKey, is_account_id, verify

log = Logger()

#: Batches smaller than this are verified inline: a thread hop costs more than ~50 verifies.
INLINE_BELOW = 64


def signing_payload(docid: str, rev: str, body: dict, deleted: bool) -> bytes:
    """The canonical bytes an author signs for one revision of a shift."""
    if not isinstance(body, dict):
        raise ValueError("a shift body is a map")
    author = body.get("author")
    if not is_account_id(author):
        raise ValueError(f"body['author'] is not an account id: {author!r}")
    if not isinstance(docid, str) or not isinstance(rev, str):
        raise ValueError("docid and rev are strings")
    return cbor2.dumps([docid, rev, body, bool(deleted), author], canonical=True)


def sign_doc(key: NodeKey, docid: str, rev: str, body: dict, deleted: bool) -> bytes:
    """Sign one revision; refuses a body whose author is someone else (use with functools.partial
    as the store's ``sign`` callback)."""
    if body.get("author") != key.account_id:
        raise ValueError(
            f"cannot sign a shift whose author is {body.get('author')!r} with key {key.account_id}"
        )
    return key.sign(signing_payload(docid, rev, body, deleted))


def verify_repl_doc(doc: dict) -> bool:
    """True when a replicated document's sig is its author's signature; False for anything else."""
    try:
        sig = doc.get("sig")
        body = doc["body"]
        if not isinstance(sig, (bytes, bytearray)) or not isinstance(body, dict):
            return False
        payload = signing_payload(doc["id"], doc["rev"], body, doc.get("deleted", False))
    except (KeyError, ValueError, TypeError, AttributeError, cbor2.CBOREncodeError):
        return False
    return verify(body["author"], payload, sig)


def _verify_chunk(docs: Sequence[dict]) -> list[bool]:
    return [verify_repl_doc(d) for d in docs]


def verify_many(
    repl_docs: Iterable[dict],
    threadpool: Any = None,
    *,
    reactor: Any = None,
    workers: int = 2,
) -> "Deferred[list[bool]]":
    """Verify a batch off the reactor thread, split over `workers` threads (libsodium releases
    the GIL); results are in input order. Small batches are verified inline."""
    docs = list(repl_docs)
    if len(docs) < INLINE_BELOW or workers < 1:
        return succeed(_verify_chunk(docs))
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    if threadpool is None:
        threadpool = reactor.getThreadPool()
    n = min(workers, len(docs))
    size = -(-len(docs) // n)
    chunks = [docs[i : i + size] for i in range(0, len(docs), size)]
    d = gatherResults(
        [deferToThreadPool(reactor, threadpool, _verify_chunk, c) for c in chunks],
        consumeErrors=True,
    )

    def _flatten(results: list[list[bool]]) -> list[bool]:
        return [ok for chunk in results for ok in chunk]

    return d.addCallback(_flatten)
