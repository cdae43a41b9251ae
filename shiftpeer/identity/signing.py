"""Shift signatures: the exact bytes an author signs, and checking them (one, or a batch in threads).

The signed payload (see docs/identity.md) is::

    cbor2.dumps([docid, rev, body, deleted, author], canonical=True)

with ``author = body["author"]``, the author's account id. The revision already hashes the parent
and the body, and the signature covers the revision, so a relay can neither alter a shift nor
graft someone else's edit onto another history without the author's key.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Sequence

import cbor2
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

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
    """True when a replicated document's sig is its author's signature; False for anything else.

    Fast path: the payload is first encoded *plainly* (cbor2 without ``canonical``, ~4x cheaper, and
    the encoding holds the GIL). A body that reached us from its author keeps the canonical key order
    through every CBOR decode/encode on the way, so for bodies without floats the plain bytes are
    already the canonical payload. A plain encoding decodes to exactly the values encoded, so if the
    signature verifies over it, the author signed exactly this document. Only when that fails (a
    body with floats, reordered keys, or a forgery) is the canonical payload built and checked.
    """
    try:
        sig = doc.get("sig")
        body = doc["body"]
        if not isinstance(sig, (bytes, bytearray)) or not isinstance(body, dict):
            return False
        docid, rev, author = doc["id"], doc["rev"], body.get("author")
        if not is_account_id(author) or not isinstance(docid, str) or not isinstance(rev, str):
            return False
        items = [docid, rev, body, bool(doc.get("deleted", False)), author]
        plain = cbor2.dumps(items)
        if verify(author, plain, sig):
            return True
        canonical = cbor2.dumps(items, canonical=True)
    except (KeyError, ValueError, TypeError, AttributeError, cbor2.CBOREncodeError):
        return False
    return canonical != plain and verify(author, canonical, sig)


def _verify_chunk(docs: Sequence[dict]) -> list[bool]:
    return [verify_repl_doc(d) for d in docs]


#: Threads in the shared verification pool (libsodium's verify releases the GIL, so one per core).
VERIFY_THREADS = max(2, min(4, os.cpu_count() or 2))
#: The interpreter's GIL switch interval once the pool runs (seconds; Python's default is 0.005).
SWITCH_INTERVAL = 0.0005
_pools: dict[int, tuple[Any, ThreadPool]] = {}


def verify_pool(reactor: Any) -> ThreadPool:
    """The verification pool for `reactor`: VERIFY_THREADS threads, started on first use, stopped at
    reactor shutdown. Not the reactor's own pool (10 threads, shared with everything else): with one
    thread per core and a FIFO queue, the chunks of the oldest batch run first and finish first, so
    the in-order store can take it, instead of every queued batch sharing the cores and all finishing
    late together."""
    entry = _pools.get(id(reactor))
    if entry is not None and entry[0] is reactor and entry[1].started:
        return entry[1]
    pool = ThreadPool(minthreads=0, maxthreads=VERIFY_THREADS, name="shiftpeer-verify")
    pool.start()
    # A thread that calls out without the GIL (each verify here; each LMDB get/put of the store's writer; the
    # reactor's socket, TLS and LMDB calls) must win it back afterwards, and while another thread runs Python
    # it waits up to the switch interval for it: at the default 5 ms, two verify threads next to a busy store
    # writer went from ~9,400 to ~1,900 verifies a second, and an LMDB get took 0.7 ms instead of 1 us.
    # At 0.5 ms they keep ~9,100/s (the pull's receiver used ~10% less CPU, and ~25% more docs/s).
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)
    _pools[id(reactor)] = (reactor, pool)

    def stop() -> None:
        if _pools.get(id(reactor), (None, None))[1] is pool:
            del _pools[id(reactor)]
        pool.stop()

    reactor.addSystemEventTrigger("during", "shutdown", stop)
    return pool


def verify_many(
    repl_docs: Iterable[dict],
    threadpool: Any = None,
    *,
    reactor: Any = None,
    workers: int = 2,
) -> "Deferred[list[bool]]":
    """Verify a batch off the reactor thread, split over `workers` threads (libsodium releases
    the GIL); results are in input order. Small batches are verified inline. The default pool is
    ``verify_pool(reactor)``."""
    docs = list(repl_docs)
    if len(docs) < INLINE_BELOW or workers < 1:
        return succeed(_verify_chunk(docs))
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    if threadpool is None:
        threadpool = verify_pool(reactor)
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
