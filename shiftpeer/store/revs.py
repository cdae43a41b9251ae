"""Revision ids and revision trees: pure functions, no LMDB, so they can be tested alone.

A revision is `N-<32 hex>`: N is the depth (1 for a new document), the hash is blake2b-128 over the canonical
CBOR of `[parent or "", deleted, body]`, so the same edit made on two nodes gives the same revision.

A tree is a dict `rev -> parent rev or None` (None: a root, or the oldest revision kept after stemming).
Leaves are the revisions that are nobody's parent.
"""

from __future__ import annotations

import re
from hashlib import blake2b
from typing import Any, Iterable

import cbor2

from . import codec
from .errors import InvalidDocument

_REV_RE = re.compile(r"([1-9][0-9]{0,9})-([0-9a-f]{32})")
_TRUE = cbor2.dumps(True)
_FALSE = cbor2.dumps(False)


def parse_rev(rev: object) -> tuple[int, str]:
    """Split a revision into (N, hash), refusing anything that is not `N-<32 lowercase hex>`."""
    if type(rev) is not str:
        raise InvalidDocument(f"revision must be a string, not {type(rev).__name__}")
    m = _REV_RE.fullmatch(rev)
    if m is None:
        raise InvalidDocument(f"unparsable revision {rev[:80]!r} (expected N-<32 hex>)")
    return int(m.group(1)), m.group(2)


def rev_depth(rev: str) -> int:
    return int(rev[: rev.index("-")])


#: The array head and the empty parent of a revision at depth 1, by its deleted flag.
_ROOT_HEADS = {False: b"\x83\x60" + _FALSE, True: b"\x83\x60" + _TRUE}


def rev_from_bytes(parent: str | None, deleted: bool, body_bytes: bytes | memoryview) -> str:
    """The revision for `body_bytes` (the canonical CBOR of the body): same bytes as hashing the array.
    Assembled from parts (a call to cbor2 for the parent cost more than hashing a 1 KB body: every received
    document's revision is checked with this)."""
    if parent:
        h = blake2b(b"\x83" + codec.encode_text(parent) + (_TRUE if deleted else _FALSE), digest_size=16)
        n = rev_depth(parent) + 1
    else:
        h = blake2b(_ROOT_HEADS[bool(deleted)], digest_size=16)
        n = 1
    h.update(body_bytes)
    return f"{n}-{h.hexdigest()}"


def compute_rev(parent: str | None, deleted: bool, body: dict) -> str:
    """The revision of an edit: `N-blake2b128(canonical CBOR [parent or "", deleted, body])`."""
    return rev_from_bytes(parent, deleted, codec.encode_body(body))


def rev_matches(rev: str, parent: str | None, deleted: bool, body_bytes: bytes | memoryview,
                body: Any = None) -> bool:
    """Is `rev` the revision of this body under `parent`, depth and hash (rev_from_bytes)?

    `body_bytes` is the body's CBOR as the caller has it: a received body's plain encoding, which is the
    canonical one when its keys are in canonical order (the normal case: the author's store encoded them
    so, and every decode keeps the order). Only when that does not match and `body` is given is the
    canonical encoding built and tried, the same plain-then-canonical retry as the signature check's
    (identity/signing.py `canonical_retry`). False, not an exception, for a parent that is not a revision
    or a body that does not encode."""
    try:
        if rev_from_bytes(parent, deleted, body_bytes) == rev:
            return True
        if body is None:
            return False
        canonical = codec.encode_canonical(body)
    except (ValueError, TypeError, cbor2.CBOREncodeError):
        return False
    return canonical != body_bytes and rev_from_bytes(parent, deleted, canonical) == rev


def replicated_rev_ok(rev: str, history: Any, deleted: bool, body_bytes: bytes | memoryview,
                      body: Any = None) -> bool:
    """The receiver's check of a revision from another node: does it hash its body under the parent its
    `history` names (history[1]; none at depth 1), at the parent's depth + 1? The signature covers the
    revision but not the history, so without this a relay could attach a genuine revision to another
    parent, and an author could send two bodies under one revision id. A history of one entry at depth > 1
    (None is taken as [rev], as the store does) names no parent, so its hash cannot be checked: it fails
    (an honest node never sends one: a leaf keeps its parent, docs/store.md *Stemming*). The older entries
    name revisions whose bodies the receiver may never see, so they are taken as sent (check_history checks
    only that they are contiguous). `body_bytes` and `body`: rev_matches. Why a revision failed is
    `rev_fault`'s, asked only then."""
    if history is None:
        history = [rev]
    elif type(history) is not list or not history or history[0] != rev:
        return False
    if len(history) > 1:
        parent = history[1]
        if type(parent) is not str:
            return False
    elif rev.startswith("1-"):
        parent = None
    else:
        return False   # stemmed: nothing to hash against
    return rev_matches(rev, parent, deleted, body_bytes, body)


#: rev_fault's answers: the revision or its history is not what any store holds; its history names no
#: parent; its body does not hash to it under the parent named.
MALFORMED, STEMMED, MISMATCH = "malformed", "stemmed", "mismatch"


def rev_fault(rev: Any, history: Any) -> str:
    """Why replicated_rev_ok refused `rev` (asked only then, off the hot path). MALFORMED: `rev` is not a
    revision, or `history` not a contiguous list of revisions led by it, which no store holds or sends (only
    a broken or hostile sender makes one). STEMMED: a history of one entry at depth > 1, which a node built
    before the check may hold (it stored what came). MISMATCH: a well-formed history whose parent the body
    does not hash under, which such a node may hold too, or an author may have signed."""
    if history is None:
        history = [rev]
    if type(history) is not list or not history or history[0] != rev:
        return MALFORMED
    try:
        check_history(history)
    except InvalidDocument:
        return MALFORMED
    return STEMMED if len(history) == 1 and not rev.startswith("1-") else MISMATCH


def check_history(history: list) -> None:
    """A history is newest first, each entry the parent of the one before (depth falls by one)."""
    prev = None
    for r in history:
        n, _ = parse_rev(r)
        if prev is not None and n != prev - 1:
            raise InvalidDocument(f"revision history is not contiguous at {r!r}")
        prev = n


def winner_key(rev: str, deleted: bool) -> tuple[bool, int, str]:
    """Sort key of a leaf: not deleted beats deleted, then higher N, then higher hash."""
    i = rev.index("-")
    return (not deleted, int(rev[:i]), rev[i + 1 :])


def pick_winner(leaves: dict) -> str:
    """The winning leaf of `leaves` (rev -> [deleted, ...]); the same on every node."""
    if len(leaves) == 1:
        for r in leaves:
            return r
    return max(leaves, key=lambda r: winner_key(r, leaves[r][0]))


def sorted_leaves(leaves: dict) -> list[str]:
    """Leaf revisions, winner first, then in losing order."""
    return sorted(leaves, key=lambda r: winner_key(r, leaves[r][0]), reverse=True)


def tree_leaves(tree: dict) -> list[str]:
    parents = set(tree.values())
    return [r for r in tree if r not in parents]


def merge_history(tree: dict, history: list[str]) -> bool:
    """Add a history (newest first) to the tree; True when the tree changed. Idempotent, order-free."""
    changed = False
    last = len(history) - 1
    for i, r in enumerate(history):
        p = history[i + 1] if i < last else None
        if r in tree:
            # Keep walking even when r's parent is known: an older part of the history may still be new
            # to us (stopping here made the result depend on arrival order).
            if tree[r] is None and p is not None:
                tree[r] = p  # older ancestry than we knew (it may be stemmed again below)
                changed = True
            continue
        tree[r] = p
        changed = True
    return changed


def ancestry(tree: dict, rev: str, limit: int) -> list[str]:
    """`rev` and its ancestors, newest first, at most `limit` of them."""
    out = []
    r: str | None = rev
    while r is not None and r in tree and len(out) < limit:
        out.append(r)
        r = tree[r]
    return out


def stem(tree: dict, limit: int) -> bool:
    """Keep, for every leaf, at most `limit` revisions of its path; True when anything was dropped."""
    if len(tree) <= limit:
        return False
    keep: set[str] = set()
    for leaf in tree_leaves(tree):
        keep.update(ancestry(tree, leaf, limit))
    if len(keep) == len(tree):
        return False
    for r in [r for r in tree if r not in keep]:
        del tree[r]
    for r, p in tree.items():
        if p is not None and p not in keep:
            tree[r] = None
    return True


def all_revs(trees: Iterable[dict]) -> set[str]:
    out: set[str] = set()
    for t in trees:
        out.update(t)
    return out
