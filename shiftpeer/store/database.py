"""One logical database: documents with revision trees, a changes feed, indexes and checkpoints.

A document record (CBOR list, see docs/store.md) is `[docid, vis, tree, leaves]`, stored in the `log`
sub-database under `dbid | seq` of the document's latest change (so the changes feed is a sequential scan and
new records append); `docs` maps `dbid | docid` to that seq. vis: visibility tokens; tree: `rev -> parent`;
leaves: `rev -> [deleted, body CBOR, sig]` (bodies are kept for leaf revisions only).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple

from twisted.internet.defer import Deferred

from . import codec, indexes, keys, revs
from .codec import PLAIN_BODY
from .errors import ConflictError, InvalidDocument, NotFound
from .store import Store, WriteTxn

MAX_ID_BYTES = 256
#: bulk_replicated_async prepares a batch in chunks of this many documents, pausing between them while the
#: store writer runs jobs (writer.py GroupWriter._pause): ~2 ms of work a chunk.
PREPARE_CHUNK = 100
_REV_FULLMATCH = revs._REV_RE.fullmatch
MAX_TOKEN_BYTES = 256
check_json = codec.check_json
_new_tuple = tuple.__new__  # builds a NamedTuple without the Python-level __new__ call (hot loops)


def _end_key(dbp: bytes) -> bytes:
    """A key above every key of the database with prefix `dbp` (4 bytes) and below the next one's."""
    return dbp + b"\xff" * 9  # log keys are dbp + 8 bytes; the highest dbid's range ends here too


def _repl_doc(docid: str, rev: str, deleted: bool, body: Any, sig: Any, history: list[str]) -> dict:
    """A ReplDoc, what replication sends for one leaf revision (docs/protocol.md, section 3). Its keys are in
    DAG-CBOR's order, in which the receiver's fast decoder takes a frame (`codec.loads`)."""
    return {"id": docid, "rev": rev, "sig": sig, "body": body, "deleted": deleted, "history": history}


class Doc(NamedTuple):
    id: str
    rev: str
    deleted: bool
    body: dict
    sig: bytes | None
    conflicts: list[str]
    vis: list[str]
    seq: int


#: A Doc, its body's bytes as stored and its revision's parent (None at depth 1) (`query(body_bytes=True)`,
#: `get_stored`), for a sender that passes the bytes on as they are instead of encoding the decoded body
#: again, and names the parent so that the receiver can check the revision (the hub's answers to queries,
#: roles/queries.py).
StoredDoc = NamedTuple("StoredDoc", [*Doc.__annotations__.items(), ("body_cbor", bytes), ("parent", "str | None")])


def _stored_doc(d: Doc, rec: list) -> Any:
    """`d` as a StoredDoc, from its decoded record `rec` (`[docid, vis, tree, leaves]`)."""
    return _new_tuple(StoredDoc, (*d, rec[3][d.rev][1], rec[2].get(d.rev)))


class Change(NamedTuple):
    seq: int
    id: str
    revs: list[str]  # leaf revisions, winner first
    deleted: bool  # the winner is deleted


def check_docid(docid: object) -> str:
    if type(docid) is not str or not docid:
        raise InvalidDocument(f"document id must be a non-empty string, not {docid!r}")
    n = len(docid.encode())
    if n > MAX_ID_BYTES:
        raise InvalidDocument(f"document id is {n} bytes UTF-8; the limit is {MAX_ID_BYTES}")
    return docid


def _check_bound(value: object, name: str) -> float | None:
    """A query time bound: None, or a finite int or float (what `created` is compared as)."""
    if value is None:
        return None
    if type(value) not in (int, float) or not -1e300 < value < 1e300:
        raise InvalidDocument(f"query {name} must be a finite number of seconds since the epoch")
    return float(value)


def check_vis(vis: object) -> list[str]:
    if vis is None:
        return []
    if isinstance(vis, str) or not isinstance(vis, (list, tuple, set, frozenset)):
        raise InvalidDocument("visibility tokens must be a list of strings")
    for t in vis:
        if type(t) is not str or not t or len(t.encode()) > MAX_TOKEN_BYTES:
            raise InvalidDocument(f"bad visibility token {t!r}: a non-empty string of at most 256 bytes")
    return sorted(set(vis))


class _Prepared(NamedTuple):
    id: str
    rev: str
    deleted: bool
    body: dict
    body_bytes: bytes
    sig: bytes | None
    history: list[str]


class PreparedBatch(NamedTuple):
    """Replicated documents checked and encoded by Database.prepare_replicated, ready to write."""
    db: Any
    docs: list[_Prepared]
    vis: list[str]


class Database:
    """A logical database inside the store's environment; cheap to create, many per store."""

    def __init__(self, store: Store, name: str, entry: bytes) -> None:
        self._store = store
        self.name = name
        self._entry = entry
        self._dbp = entry[:4]
        self.epoch = entry[4:].hex()

    def __repr__(self) -> str:
        return f"<Database {self.name!r} epoch {self.epoch}>"

    # -- helpers -----------------------------------------------------------------------------------
    def _alive(self, txn) -> None:
        if txn.get(self.name.encode(), db=self._store._names_db) != self._entry:
            raise NotFound(f"database {self.name!r} was deleted")

    @contextmanager
    def _reading(self) -> Iterator:
        """A read transaction; inside this thread's write_txn, that transaction (read your own writes);
        inside its read_txn, that one."""
        local = self._store._local
        w = getattr(local, "txn", None)
        if w is not None:
            w.flush_idx()
            self._alive(w.txn)
            yield w.txn
            return
        r = getattr(local, "rtxn", None)
        if r is not None:
            self._alive(r)
            yield r
            return
        txn = self._store.env.begin()
        try:
            self._alive(txn)
            yield txn
        finally:
            txn.abort()

    def _load(self, txn, docid: str) -> tuple[int, list] | None:
        """(seq, record) of a document, or None."""
        st = self._store
        raw = txn.get(keys.doc_key(self._dbp, docid), db=st._docs_db)
        if raw is None:
            return None
        seq = keys.read_u64(raw)
        return seq, codec.decode_record(txn.get(keys.log_key(self._dbp, seq), db=st._log_db))

    def _doc(self, seq: int, rec: list, rev: str | None = None) -> Doc | None:
        docid, vis, _tree, leaves = rec
        if len(leaves) == 1:  # no conflicts: the common case
            [(win, leaf)] = leaves.items()
            if rev is not None and rev != win:
                return None
            return _new_tuple(Doc, (docid, win, leaf[0], codec.decode_body(leaf[1]), leaf[2], [], vis, seq))
        win = revs.pick_winner(leaves)
        if rev is None:
            rev = win
        leaf = leaves.get(rev)
        if leaf is None:
            return None
        conflicts = [r for r in revs.sorted_leaves(leaves) if r != win and not leaves[r][0]]
        return Doc(docid, rev, leaf[0], codec.decode_body(leaf[1]), leaf[2], conflicts, vis, seq)

    def _prepare_body(self, body: Any) -> bytes:
        data = codec.encode_body(body)
        if len(data) > self._store.max_doc_bytes:
            raise self._too_big(data)
        return data

    def _too_big(self, data: bytes) -> InvalidDocument:
        return InvalidDocument(f"document is {len(data)} bytes encoded; the limit is {self._store.max_doc_bytes}")

    def _commit(self, w: WriteTxn, docid: str, old_seq: int, old: list | None, new: list,
                old_body: dict | None = None, new_body: dict | None = None) -> None:
        """Write a changed record at a new seq: move it in the log, point docs at it, re-index, count."""
        st = self._store
        txn = w.txn
        dbp = self._dbp
        state = w.state(dbp, self.name)
        new_win = revs.pick_winner(new[3])
        new_live = not new[3][new_win][0]
        seq = state[0] + 1
        state[0] = seq
        old_live = False
        if old is not None:
            old_win = revs.pick_winner(old[3])
            old_live = not old[3][old_win][0]
            txn.delete(keys.log_key(dbp, old_seq), db=st._log_db)
            if old_live:
                if old_body is None:
                    old_body = codec.decode_body(old[3][old_win][1])
                w.idx_delete(indexes.index_keys(dbp, old_seq, old_body, old[1]))
        if new_live:
            if new_body is None:
                new_body = codec.decode_body(new[3][new_win][1])
            w.idx_add(indexes.index_keys(dbp, seq, new_body, new[1]))
        state[1] += int(new_live) - int(old_live)
        state[3] = True
        lk = keys.log_key(dbp, seq)
        rec = codec.encode_record(new)
        # Appending fills log pages completely; it is refused (False) unless this is the highest key.
        if not txn.put(lk, rec, append=True, db=st._log_db):
            txn.put(lk, rec, db=st._log_db)
        txn.put(keys.doc_key(dbp, docid), keys.u64(seq), db=st._docs_db)

    # -- reads -------------------------------------------------------------------------------------
    def _state(self) -> tuple[int, int]:
        w = getattr(self._store._local, "txn", None)
        if w is not None and self._dbp in w.states:
            st = w.states[self._dbp]
            return st[0], st[1]
        with self._reading() as txn:
            raw = txn.get(self._dbp, db=self._store._state_db)
        return keys.unpack_state(raw) if raw is not None else (0, 0)

    def update_seq(self) -> int:
        """The seq of the latest change in this database (0 when empty)."""
        return self._state()[0]

    def doc_count(self) -> int:
        """Documents whose winning revision is not deleted."""
        return self._state()[1]

    def get(self, docid: str, rev: str | None = None) -> Doc | None:
        """The winning revision (or leaf `rev`); a deleted winner comes back with deleted=True.

        None when the document (or the leaf `rev`, whose body is kept) is unknown.
        """
        with self._reading() as txn:
            found = self._load(txn, docid) if type(docid) is str and docid else None
        return self._doc(found[0], found[1], rev) if found is not None else None

    def get_stored(self, docid: str) -> Any:
        """The winning revision as a StoredDoc (its body's stored bytes and its parent), or None (unknown)."""
        with self._reading() as txn:
            found = self._load(txn, docid) if type(docid) is str and docid else None
        if found is None:
            return None
        d = self._doc(found[0], found[1])
        return None if d is None else _stored_doc(d, found[1])

    def _scan_log(self, since: int, limit: int | None) -> list[tuple[bytes, bytes]]:
        """Raw (log key, record) pairs after `since`, in seq order; decoding is left to the caller, after
        the read transaction has ended."""
        if limit is not None and limit <= 0:
            return []
        dbp = self._dbp
        end = _end_key(dbp)
        out: list[tuple[bytes, bytes]] = []
        with self._reading() as txn:
            cur = txn.cursor(db=self._store._log_db)
            if not cur.set_range(keys.log_key(dbp, since + 1)):
                return out
            app = out.append
            for kv in cur:
                if kv[0] >= end:
                    break
                app(kv)
                if len(out) == limit:
                    break
        return out

    def changes(self, since: int = 0, limit: int | None = None) -> list[Change]:
        """Documents changed after `since`, each once at its latest change, in sequence order."""
        return self.changes_with_docs(since, limit, docs_up_to=0)[0]

    def changes_with_docs(self, since: int = 0, limit: int | None = None, *,
                          docs_up_to: int | None = None) -> tuple[list[Change], list[dict] | None]:
        """changes(since, limit), and the ReplDocs of every leaf they list (get_repl_docs with raw_bodies=True,
        in the same order), from one scan of the log: a live feeder sends both, and reading each record
        again by id cost it as much as the scan. Documents are built only while the changes number at most
        `docs_up_to`; past that the second item is None (the caller sends changes without documents)."""
        rev_limit = self._store.rev_limit
        load, seq_of, raw, ancestry = codec.load_record, keys.seq_of, codec.RawCBOR, revs.ancestry
        chs: list[Change] = []
        docs: list[dict] | None = []
        for k, v in self._scan_log(since, limit):
            rec = load(v)
            if docs is not None and docs_up_to is not None and len(chs) >= docs_up_to:
                docs = None
            if len(rec) == 6:  # compact: one revision, no ancestors
                docid, _vis, rev, deleted, body, sig = rec
                chs.append(Change(seq_of(k), docid, [rev], deleted))
                if docs is not None:
                    docs.append(_repl_doc(docid, rev, deleted, raw(body), sig, [rev]))
                continue
            docid, _vis, tree, leaves = rec
            order = list(leaves) if len(leaves) == 1 else revs.sorted_leaves(leaves)
            chs.append(Change(seq_of(k), docid, order, leaves[order[0]][0]))
            if docs is not None:
                for r in order:
                    deleted, body, sig = leaves[r]
                    docs.append(_repl_doc(docid, r, deleted, raw(body), sig, ancestry(tree, r, rev_limit)))
        return chs, docs

    def docs_since(self, since: int = 0, limit: int | None = None) -> list[Doc]:
        """Winning revisions of the documents changed after `since`, in changes order (feeds, bulk reads).

        Each record is decoded once, and the winner's body once (cbor2's C decoder), inside the read
        transaction and in one loop (the bulk-read hot path: a list of raw pairs first, and a call per
        document, cost ~20% more). Read a whole database in pages of ~100: a page of 1,000 decoded shifts
        outgrows the L2 cache and costs ~1.5x the CPU a document (docs/store.md, *Reading in pages*).
        """
        out: list[Doc] = []
        if limit is not None and limit <= 0:
            return out
        dbp = self._dbp
        end = _end_key(dbp)
        load_record, decode_body = codec.load_record, codec.decode_body
        seq_at = keys.U64_AT  # (seq,) = seq_at(key, 4)
        new, doc = _new_tuple, Doc
        app = out.append
        with self._reading() as txn:
            cur = txn.cursor(db=self._store._log_db)
            if not cur.set_range(keys.log_key(dbp, since + 1)):
                return out
            for k, v in cur:
                if k >= end:
                    break
                rec = load_record(v)
                if len(rec) == 6:  # compact: one revision, no conflicts (the common case), inline
                    # Doc(...) without its Python-level __new__: ~10% of this loop
                    app(new(doc, (rec[0], rec[2], rec[3], decode_body(rec[4]), rec[5], [], rec[1],
                                  seq_at(k, 4)[0])))
                    if len(out) == limit:
                        break
                    continue
                (seq,) = seq_at(k, 4)
                leaves = rec[3]
                if len(leaves) == 1:  # no conflicts
                    [(win, leaf)] = leaves.items()
                    app(doc(rec[0], win, leaf[0], decode_body(leaf[1]), leaf[2], [], rec[1], seq))
                else:
                    app(self._doc(seq, rec))
                if len(out) == limit:
                    break
        return out

    def revs_diff(self, wanted: dict[str, list[str]]) -> dict[str, list[str]]:
        """Which of the given revisions this database does not have (ids with none missing are left out)."""
        out: dict[str, list[str]] = {}
        with self._reading() as txn:
            for docid, rs in wanted.items():
                found = self._load(txn, docid) if type(docid) is str and docid else None
                tree = found[1][2] if found is not None else {}
                missing = [r for r in rs if r not in tree]
                if missing:
                    out[docid] = missing
        return out

    def get_repl_docs(self, wanted: list[tuple[str, list[str] | None]], *,
                      raw_bodies: bool = False) -> list[dict]:
        """ReplDocs for the requested leaf revisions (None: every leaf), with history, for sending.

        raw_bodies: each body is the stored CBOR as a `codec.RawCBOR`, not decoded, for a sender that
        encodes its frames with `default=codec.write_raw` (the receiver decodes the same map either way)."""
        limit = self._store.rev_limit
        out: list[dict] = []
        with self._reading() as txn:
            for docid, rs in wanted:
                found = self._load(txn, docid) if type(docid) is str and docid else None
                if found is None:
                    continue
                tree, leaves = found[1][2], found[1][3]
                for r in (revs.sorted_leaves(leaves) if rs is None else rs):
                    leaf = leaves.get(r)
                    if leaf is None:
                        continue
                    body = codec.RawCBOR(leaf[1]) if raw_bodies else codec.decode_body(leaf[1])
                    out.append(_repl_doc(docid, r, leaf[0], body, leaf[2], revs.ancestry(tree, r, limit)))
        return out

    def query(
        self,
        index: str,
        values: str | list[str] | None = None,
        *,
        vis: list[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        body_bytes: bool = False,
    ) -> tuple[list[Doc], str | None]:
        """Live documents by index value(s), newest `created` first, visible to any of `vis`.

        `values`: one value or a list (union); None only for "all". `vis`: tokens to union (None: every
        document). `since` <= created < `until` (seconds since the epoch; either may be None) bounds the
        index scan itself. Returns (docs, next cursor or None when there is no more). With `body_bytes`
        each doc is a StoredDoc: the same fields, the body's stored bytes and the revision's parent.
        """
        ib = indexes.INDEXES.get(index)
        if ib is None:
            raise InvalidDocument(f"unknown index {index!r}; have {sorted(indexes.INDEXES)}")
        if values is None:
            if index != "all":
                raise InvalidDocument(f"query on {index!r} needs a value")
            values = [""]
        elif isinstance(values, str):
            values = [values]
        tokens = [indexes.ALL_TOKEN] if vis is None else check_vis(vis)
        if type(limit) is not int or limit < 1:
            raise InvalidDocument("query limit must be a positive int")
        before = indexes.decode_cursor(cursor) if cursor is not None else None
        floor, ceiling = indexes.time_bounds(_check_bound(since, "since"), _check_bound(until, "until"))
        if ceiling is not None and (before is None or ceiling < before):
            before = ceiling
        if floor is not None and before is not None and before <= floor:
            return [], None
        want = {indexes.normalise_value(index, v) for v in values if type(v) is str}
        prefixes = sorted({
            self._dbp + indexes.token_hash(t) + indexes.value_hash(ib, v) for v in want for t in tokens
        })
        token_set = set(tokens)
        st = self._store
        docs: list[Doc] = []
        nxt = None
        if not prefixes:
            return docs, None
        log_get_key, seq_at, log_db, dbp = keys.log_key, keys.U64_AT, st._log_db, self._dbp
        load_record, decode_body, new = codec.load_record, codec.decode_body, _new_tuple
        matches = indexes.matcher(ib)
        last = b""  # the sort key scanned last: the next page starts after it (set before any doc is kept)
        with self._reading() as txn:
            for sk in indexes.scan_merged(txn, st._idx_db, prefixes, before, floor):
                if len(docs) >= limit:
                    nxt = indexes.encode_cursor(last)
                    break
                last = sk
                (seq,) = seq_at(sk, 8)  # sk: created (8) | seq (8)
                raw = txn.get(log_get_key(dbp, seq), db=log_db)
                if raw is None:
                    continue
                rec = load_record(raw)
                if len(rec) == 6:  # compact (one revision, the common case): no maps built, as docs_since
                    docid, dvis, rev, deleted, body_cbor, sig = rec
                    if deleted or (vis is not None and token_set.isdisjoint(dvis)):
                        continue
                    body = decode_body(body_cbor)
                    if not matches(body, ib, want):
                        continue
                    row = (docid, rev, False, body, sig, [], dvis, seq)
                    docs.append(new(StoredDoc, (*row, body_cbor, None)) if body_bytes else new(Doc, row))
                    continue
                d = self._doc(seq, rec)
                if d is None or d.deleted or not matches(d.body, ib, want):
                    continue
                if vis is not None and token_set.isdisjoint(d.vis):
                    continue
                docs.append(_stored_doc(d, rec) if body_bytes else d)
        return docs, nxt

    def get_checkpoint(self, peer_id: str, remote_db: str) -> dict | None:
        with self._reading() as txn:
            raw = txn.get(keys.checkpoint_key(self._dbp, peer_id, remote_db), db=self._store._ckpt_db)
        return codec.decode_value(raw) if raw is not None else None

    # -- writes ------------------------------------------------------------------------------------
    def set_checkpoint(self, peer_id: str, remote_db: str, value: dict, txn: WriteTxn | None = None) -> None:
        """Remember how far replication from (peer, remote database) into this database got."""
        if type(peer_id) is not str or type(remote_db) is not str or type(value) is not dict:
            raise InvalidDocument("checkpoint needs str peer_id, str remote_db and a dict value")
        data = codec.encode_value(value)
        with self._store._writing(txn) as w:
            self._alive(w.txn)
            w.txn.put(keys.checkpoint_key(self._dbp, peer_id, remote_db), data, db=self._store._ckpt_db)

    def put(
        self,
        docid: str,
        body: dict,
        *,
        parent: str | None = None,
        deleted: bool = False,
        sign: Callable[[str, str, dict, bool, bytes], bytes] | None = None,
        vis: list[str] | None = None,
        txn: WriteTxn | None = None,
    ) -> str:
        """A local edit. `parent` must be the winning revision (None for a new or deleted document);
        a deletion may also name a conflicting leaf (that is how conflicts are resolved). Returns the rev.

        `sign(docid, rev, body, deleted, body_cbor)` returns the revision's signature; `body_cbor` is the
        body's canonical CBOR, encoded here for the revision hash (identity.signing.sign_doc splices it
        into the signed payload instead of encoding the body again).
        """
        check_docid(docid)
        if type(deleted) is not bool:
            raise InvalidDocument("deleted must be a bool")
        if parent is not None:
            revs.parse_rev(parent)
        tokens = check_vis(vis)
        body_bytes = self._prepare_body(body)
        st = self._store
        with st._writing(txn) as w:
            self._alive(w.txn)
            found = self._load(w.txn, docid)
            old, old_seq = (found[1], found[0]) if found is not None else (None, 0)
            if old is None:
                if parent is not None:
                    raise ConflictError(f"document {docid!r} does not exist (no revision {parent})")
                base = None
            else:
                leaves = old[3]
                win = revs.pick_winner(leaves)
                if parent is None:
                    if not leaves[win][0]:
                        raise ConflictError(f"document {docid!r} exists; name its current revision {win}")
                    base = win  # re-creating a deleted document continues its tree
                elif parent == win or (deleted and parent in leaves and not leaves[parent][0]):
                    base = parent
                else:
                    raise ConflictError(f"document {docid!r}: {parent} is not the current revision {win}")
            rev = revs.rev_from_bytes(base, deleted, body_bytes)
            sig = sign(docid, rev, body, deleted, body_bytes) if sign is not None else None
            if old is None:
                new = [docid, tokens, {rev: None}, {rev: [deleted, body_bytes, sig]}]
            else:
                tree = dict(old[2])
                tree[rev] = base
                leaves = {r: v for r, v in old[3].items() if r != base}
                leaves[rev] = [deleted, body_bytes, sig]
                revs.stem(tree, st.rev_limit)
                vis_new = sorted(set(old[1]).union(tokens)) if tokens else old[1]
                new = [docid, vis_new, tree, leaves]
            self._commit(w, docid, old_seq, old, new, new_body=None if deleted else body)
        return rev

    def _prepare_repl(self, d: Any, encode: Callable[[Any], bytes], max_bytes: int) -> _Prepared:
        """Check one ReplDoc and encode its body (plain CBOR, with `encode` from codec.plain_encoder)."""
        if type(d) is not dict:
            raise InvalidDocument(f"replicated document must be a dict, not {type(d).__name__}")
        docid = d.get("id")
        if type(docid) is not str or not docid or (len(docid) > 64 and len(docid.encode()) > MAX_ID_BYTES):
            check_docid(docid)  # raises with the reason
        rev = d.get("rev")
        if type(rev) is not str or _REV_FULLMATCH(rev) is None:
            revs.parse_rev(rev)  # raises with the reason
        deleted = d.get("deleted", False)
        if type(deleted) is not bool:
            raise InvalidDocument(f"{docid!r}: deleted must be a bool")
        sig = d.get("sig")
        if sig is not None and type(sig) is not bytes:
            raise InvalidDocument(f"{docid!r}: sig must be bytes or None")
        history = d.get("history")
        if history is None:
            history = [rev]
        elif type(history) is not list or not history or history[0] != rev:
            raise InvalidDocument(f"{docid!r}: history must be a list starting with the revision {rev}")
        elif len(history) > 1:
            history = history[: self._store.rev_limit]
            revs.check_history(history)
        body = d.get("body")
        check_json(body)
        data = d.get(PLAIN_BODY)           # what the signature check encoded (codec.PLAIN_BODY)
        if type(data) is not bytes:
            data = encode(body)
        if len(data) > max_bytes:
            raise self._too_big(data)
        return _new_tuple(_Prepared, (docid, rev, deleted, body, data, sig, history))  # no Python __new__

    def _prepare_all(self, docs: Any, vis: list[str] | None,
                     pause: Callable[[], None] | None = None) -> tuple[list[_Prepared], list[str]]:
        if not isinstance(docs, (list, tuple)):
            raise InvalidDocument("bulk_replicated takes a list of replicated documents")
        tokens = check_vis(vis)
        prepare, encode, max_bytes = self._prepare_repl, codec.plain_encoder(), self._store.max_doc_bytes
        try:
            if pause is None:
                return [prepare(d, encode, max_bytes) for d in docs], tokens
            out: list[_Prepared] = []
            for i in range(0, len(docs), PREPARE_CHUNK):
                pause()
                out.extend([prepare(d, encode, max_bytes) for d in docs[i : i + PREPARE_CHUNK]])
            return out, tokens
        except BaseException:
            codec.reset_encoders()  # the encode may have failed half way: the next batch gets a fresh one
            raise

    def prepare_replicated(self, docs: list[dict], *, vis: list[str] | None = None,
                           pause: Callable[[], None] | None = None) -> "PreparedBatch":
        """Check and encode a batch for bulk_replicated without touching LMDB (any thread): the CPU half of
        a replicated write. With `pause`, in chunks of PREPARE_CHUNK documents, calling `pause()` before
        each (the store's preparing thread steps aside there while the writer runs a job). Raises
        InvalidDocument."""
        prepared, tokens = self._prepare_all(docs, vis, pause)
        return PreparedBatch(self, prepared, tokens)

    def bulk_replicated(self, docs: "list[dict] | PreparedBatch", *, vis: list[str] | None = None,
                        txn: WriteTxn | None = None) -> list[str]:
        """Replicated revisions (CouchDB new_edits=false), all in one transaction; idempotent and
        order-independent. Everything is checked before anything is written. Returns the ids that changed.
        `docs` may be a PreparedBatch from prepare_replicated (its own `vis`; the argument is ignored).
        """
        if isinstance(docs, PreparedBatch):
            if docs.db is not self:
                raise InvalidDocument("a PreparedBatch is written to the database that prepared it")
            prepared, tokens = docs.docs, docs.vis
        else:
            prepared, tokens = self._prepare_all(docs, vis)
        st = self._store
        limit = st.rev_limit
        written: list[str] = []
        dbp = self._dbp
        docs_db, log_db = st._docs_db, st._log_db
        entries, prefixes = indexes.entries, indexes.token_prefixes(dbp, tokens)
        encode_record, new_record, vis_cbor = codec.encode_record, codec.new_record, codec.encode_vis(tokens)
        u64 = keys.u64
        with st._writing(txn) as w:
            self._alive(w.txn)
            txn_ = w.txn
            get = txn_.get
            # Positional args on a cursor: ~20% less CPU per insert than txn.put(..., overwrite=, db=)
            docs_cur = txn_.cursor(db=docs_db)
            insert_new = docs_cur.put  # (key, value, dupdata, overwrite): False when the key exists
            idx_add = w.idx_adder()
            # New documents' records, appended to `log` in one putmulti (their seqs ascend) before anything
            # reads the log in this transaction: the general path below, or the end of the batch.
            log_new: list[tuple[bytes, bytes]] = []
            state = w.state(dbp, self.name)
            for p in prepared:
                docid, rev, deleted, body, body_bytes, sig, h = p
                dk = dbp + docid.encode()
                seq = state[0] + 1
                sb = u64(seq)
                # Insert-if-absent: one B-tree search finds a new document (the common case of a pull) and
                # points it at its seq; False means it exists, and it is read and merged below.
                if insert_new(dk, sb, True, False):
                    # A new document: the fast path of _commit.
                    state[0] = seq
                    if not deleted:
                        state[1] += 1
                        idx_add(entries(prefixes, seq, body))
                    if len(h) == 1:
                        log_new.append((dbp + sb, new_record(docid, vis_cbor, rev, deleted, body_bytes, sig)))
                    else:
                        tree = {r: (h[i + 1] if i + 1 < len(h) else None) for i, r in enumerate(h)}
                        log_new.append((dbp + sb, encode_record([docid, tokens, tree,
                                                                 {rev: [deleted, body_bytes, sig]}])))
                    written.append(docid)
                    continue
                if log_new:
                    self._append_log(txn_, log_new)
                    log_new = []
                old_seq = keys.read_u64(get(dk, db=docs_db))
                old = codec.decode_record(get(keys.log_key(dbp, old_seq), db=log_db))
                tree = dict(old[2])
                leaves = dict(old[3])
                changed = revs.merge_history(tree, p.history)
                if changed:
                    revs.stem(tree, limit)
                    parents = set(tree.values())
                    for r in [r for r in leaves if r in parents or r not in tree]:
                        del leaves[r]
                    if p.rev in tree and p.rev not in parents:
                        have = leaves.get(p.rev)
                        if have is None:
                            leaves[p.rev] = [p.deleted, p.body_bytes, p.sig]
                        elif have[2] is None and p.sig is not None:
                            leaves[p.rev] = [have[0], have[1], p.sig]
                elif p.rev in leaves and leaves[p.rev][2] is None and p.sig is not None:
                    leaves[p.rev] = [leaves[p.rev][0], leaves[p.rev][1], p.sig]
                    changed = True
                vis_new = old[1]
                if tokens and not set(tokens).issubset(vis_new):
                    vis_new = sorted(set(vis_new).union(tokens))
                    changed = True
                if changed:
                    new = [p.id, vis_new, tree, leaves]
                    nb = p.body if not p.deleted and p.rev in leaves and revs.pick_winner(leaves) == p.rev else None
                    self._commit(w, p.id, old_seq, old, new, new_body=nb)
                    written.append(p.id)
                    idx_add = w.idx_adder()  # a replaced document's deletes may have changed which one
            docs_cur.close()
            if log_new:
                self._append_log(txn_, log_new)
            if written:
                state[3] = True
        return written

    def _append_log(self, txn, items: list[tuple[bytes, bytes]]) -> None:
        """Write new records (ascending seqs) to `log`: appended, which packs pages full, unless a database
        with a higher id has records (append is refused there), then as plain puts."""
        log_db = self._store._log_db
        with txn.cursor(db=log_db) as cur:
            if cur.putmulti(items, append=True)[1] != len(items):
                cur.putmulti(items)  # what append refused (and, harmlessly, the rest again)

    def bulk_replicated_async(self, docs: list[dict], *, vis: list[str] | None = None) -> Deferred:
        """bulk_replicated in the store's writer thread; fires with the ids that changed, after the commit.

        The checks and encoding (prepare_replicated) run first in the store's preparing thread, in chunks,
        while the writer commits the batches before (writer.py `prepare_and_write`): +18% documents a second
        in the store benchmark. Ready batches queued behind a commit are group-committed. Bad input fails the
        Deferred, nothing written."""
        return self._store.prepare_and_write(lambda pause: self.prepare_replicated(docs, vis=vis, pause=pause),
                                             self.bulk_replicated)

    def add_vis_held(self, docids: list[str], tokens: list[str]) -> list[str]:
        """``add_vis`` for each of ``docids`` held here whose record lacks one of ``tokens`` (ids not held are
        left alone), in one write transaction, opened only when one lacks them; returns the ids tagged. A pull
        that records its source gives its tokens so to revisions it already had (sync/puller.py)."""
        add = set(check_vis(tokens))
        with self._reading() as txn:
            lacking = [d for d in dict.fromkeys(docids) if type(d) is str and d
                       and (found := self._load(txn, d)) is not None and not add.issubset(found[1][1])]
        if lacking:
            with self._store.write_txn() as w:
                for docid in lacking:
                    self.add_vis(docid, sorted(add), txn=w)
        return lacking

    def add_vis(self, docid: str, tokens: list[str], txn: WriteTxn | None = None) -> None:
        """Add visibility tokens (metadata, not the signed body) to a document and re-index it."""
        add = check_vis(tokens)
        self._change_vis(docid, lambda vis: sorted(set(vis).union(add)), txn)   # unchanged: nothing written

    def remove_vis(self, docid: str, tokens: list[str], txn: WriteTxn | None = None) -> bool:
        """Take visibility tokens off a document; its index entries under them leave in the same transaction,
        so no query for those tokens finds it after the commit. Tokens it lacks are ignored; True when it had
        one. Tokens otherwise only grow (every write adds): this is how a hub takes off those an older version
        gave (roles/tokenrebuild.py). Like ``add_vis``, it keeps the document's seq: tokens are not replicated."""
        drop = set(check_vis(tokens))
        return self._change_vis(docid, lambda vis: [t for t in vis if t not in drop], txn)

    def _change_vis(self, docid: str, change: Callable[[list[str]], list[str]], txn: WriteTxn | None) -> bool:
        """Give a document the tokens ``change(its tokens)`` (sorted, as stored), rewriting its record in place
        and adding and deleting just the index entries of the tokens that came and went; False (nothing
        written) when they are the same. NotFound for a document not held."""
        st = self._store
        with st._writing(txn) as w:
            self._alive(w.txn)
            found = self._load(w.txn, check_docid(docid))
            if found is None:
                raise NotFound(f"no document {docid!r} in {self.name!r}")
            seq, old = found
            vis = change(old[1])
            if vis == old[1]:
                return False
            new = [old[0], vis, old[2], old[3]]
            win = revs.pick_winner(new[3])
            if not new[3][win][0]:   # a deleted winner has no index entries
                body = codec.decode_body(new[3][win][1])
                old_keys = set(indexes.index_keys(self._dbp, seq, body, old[1]))
                new_keys = set(indexes.index_keys(self._dbp, seq, body, vis))
                w.idx_delete(sorted(old_keys - new_keys))
                w.idx_add(sorted(new_keys - old_keys))
            w.txn.put(keys.log_key(self._dbp, seq), codec.encode_record(new), db=st._log_db)
            return True
