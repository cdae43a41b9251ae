"""The Store: one LMDB environment per node directory, holding any number of logical databases."""

from __future__ import annotations

import os
import re
import sys
import threading
from itertools import repeat
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import lmdb
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import threadable

from . import codec, keys, migrate
from .errors import InvalidDocument, NotFound, SchemaVersionError, StoreError
from .writer import GroupWriter

SCHEMA_VERSION = 2  # 2: index entries are plain 32-byte keys (1 had dupsort lists)
UPGRADABLE = (b"1",)  # older versions opened by upgrading them in place (migrate.py)
DEFAULT_MAP_SIZE = (64 << 30) if sys.maxsize > 2**32 else (1 << 30)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.$()+@:=-]*(/[A-Za-z0-9_.$()+@:=-]+)*")
MAX_NAME_BYTES = 200

log = Logger()


def check_db_name(name: object) -> str:
    """Database names: path-like segments of [A-Za-z0-9_.$()+@:=-], e.g. `inbox/alice`; at most 200 bytes."""
    if type(name) is not str or not name:
        raise InvalidDocument(f"database name must be a non-empty string, not {name!r}")
    if len(name.encode()) > MAX_NAME_BYTES or _NAME_RE.fullmatch(name) is None:
        raise InvalidDocument(
            f"bad database name {name[:80]!r}: use segments of letters, digits and _.$()+@:=- separated by '/'"
        )
    return name


class WriteTxn:
    """One LMDB write transaction plus the per-database counters and notifications it will commit."""

    def __init__(self, store: "Store", txn: lmdb.Transaction) -> None:
        self.store = store
        self.txn = txn
        self.states: dict[bytes, list] = {}  # dbid bytes -> [seq, doc_count, name, dirty]
        # Index entries (32-byte keys: list key 16 + item 16, see indexes.index_keys) added in this
        # transaction, written sorted in one putmulti at flush (far fewer page touches than one put per
        # key). A plain list: a set would hash every entry, and deletes of entries added in the same
        # transaction are rare (a document changed twice in one batch), so the set that finds them is
        # only built when the first delete comes.
        self._idx_new: list[bytes] = []
        self._idx_new_set: set[bytes] | None = None
        self._idx_dropped: set[bytes] = set()

    def idx_add(self, entries: list[bytes]) -> None:
        self._idx_new.extend(entries)
        if self._idx_new_set is not None:
            self._idx_new_set.update(entries)
            self._idx_dropped.difference_update(entries)

    def idx_adder(self) -> Callable[[list[bytes]], None]:
        """idx_add, or while no delete has come in this transaction, the pending list's own extend (no
        Python call per document); fetch it again after anything that may delete index entries."""
        return self._idx_new.extend if self._idx_new_set is None else self.idx_add

    def idx_delete(self, entries: list[bytes]) -> None:
        new = self._idx_new_set
        if new is None and self._idx_new:
            new = self._idx_new_set = set(self._idx_new)
        delete = self.txn.delete
        db = self.store._idx_db
        for e in entries:
            if new is not None and e in new:
                new.discard(e)
                self._idx_dropped.add(e)
            else:
                delete(e, db=db)

    def state(self, dbp: bytes, name: str) -> list:
        st = self.states.get(dbp)
        if st is None:
            raw = self.txn.get(dbp, db=self.store._state_db)
            seq, count = keys.unpack_state(raw) if raw is not None else (0, 0)
            st = self.states[dbp] = [seq, count, name, False]
        return st

    def flush_idx(self) -> None:
        entries = self._idx_new
        if entries:
            if self._idx_dropped:
                dropped = self._idx_dropped
                entries = [e for e in entries if e not in dropped]
            entries.sort()  # bytes compare in C; sorted keys let LMDB stay on the page it is on
            self._idx_new = []
            self._idx_new_set = None
            self._idx_dropped = set()
            with self.txn.cursor(db=self.store._idx_db) as cur:
                cur.putmulti(zip(entries, repeat(b"")))

    def flush(self) -> dict[str, int]:
        self.flush_idx()
        touched = {}
        for dbp, (seq, count, name, dirty) in self.states.items():
            if dirty:
                self.txn.put(dbp, keys.pack_state(seq, count), db=self.store._state_db)
                touched[name] = seq
        return touched


class Store:
    """One LMDB environment: logical databases, documents, changes, indexes, checkpoints.

    Writes may happen in the reactor thread (small ones) or in the single writer thread (`run_in_writer`,
    `Database.bulk_replicated_async`); LMDB serialises write transactions, readers never block.
    """

    def __init__(
        self,
        path: str,
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        sync: bool = True,
        rev_limit: int = 1000,
        max_doc_bytes: int = 1 << 20,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor  # noqa: PLW0621
        self._reactor = reactor
        self.path = path
        if type(rev_limit) is not int or rev_limit < 2:
            # a leaf keeps its parent: every receiver checks a revision against it (revs.replicated_rev_ok)
            raise ValueError(f"rev_limit must be a whole number of at least 2, not {rev_limit!r}")
        self.rev_limit = rev_limit
        self.max_doc_bytes = max_doc_bytes
        #: whether each commit is fsynced (the sync code skips a thread hop for small batches when not)
        self.sync = sync
        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(
            path,
            map_size=map_size,
            max_dbs=8,
            # Not writemap: with the file mapped writable, a full filesystem kills the process with SIGBUS
            # while it touches a page; with write() it is an error at commit (tests/test_faults_disk.py).
            writemap=False,
            metasync=sync,
            sync=sync,
            readahead=False,
            max_readers=256,
        )
        try:
            self._open_dbs()
        except BaseException:
            self.env.close()
            raise
        self._local = threading.local()
        self._subscribers: list[Callable[[str, int], None]] = []
        self._databases: dict[str, Any] = {}
        # The writer thread starts on first use and stops with close() (or reactor shutdown), so a script
        # that only reads or writes synchronously never leaves a thread behind.
        self._writer: GroupWriter | None = None
        self._trigger: Any = None
        self._closed = False

    def _open_dbs(self) -> None:
        env = self.env
        with env.begin(write=True) as txn:
            self._meta_db = env.open_db(b"meta", txn=txn)
            version = txn.get(keys.SCHEMA_KEY, db=self._meta_db)
            if version is None:
                if txn.stat(self._meta_db)["entries"] or self._has_other_dbs(txn):
                    raise SchemaVersionError(f"{self.path}: LMDB environment has no shiftpeer schema version")
                txn.put(keys.SCHEMA_KEY, str(SCHEMA_VERSION).encode(), db=self._meta_db)
            elif version != str(SCHEMA_VERSION).encode() and version not in UPGRADABLE:
                raise SchemaVersionError(
                    f"{self.path}: store schema version {version.decode(errors='replace')!r}, this shiftpeer "
                    f"reads version {SCHEMA_VERSION}; upgrade shiftpeer (or restore a matching backup)"
                )
            self._names_db = env.open_db(b"names", txn=txn)
            self._state_db = env.open_db(b"state", txn=txn)
            self._docs_db = env.open_db(b"docs", txn=txn)
            self._log_db = env.open_db(b"log", txn=txn)
            if version == b"1":
                self._idx_db = migrate.upgrade_1_to_2(env, txn, self._names_db, self._log_db)
                txn.put(keys.SCHEMA_KEY, str(SCHEMA_VERSION).encode(), db=self._meta_db)
            else:
                # Plain 32-byte keys, empty values (indexes.py). Schema 1 used dupsort lists: half the
                # bytes, twice the CPU per insert.
                self._idx_db = env.open_db(b"idx", txn=txn)
            self._ckpt_db = env.open_db(b"ckpt", txn=txn)

    def _has_other_dbs(self, txn: lmdb.Transaction) -> bool:
        with txn.cursor() as cur:
            return any(k != b"meta" for k in cur.iternext(values=False))

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the writer thread (after its queued work) and close the environment."""
        if self._closed:
            return
        self._closed = True
        self._stop_pool()
        self.env.close()

    def _stop_pool(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            if self._trigger is not None:
                try:
                    self._reactor.removeSystemEventTrigger(self._trigger)
                except (ValueError, KeyError, TypeError):
                    pass  # already firing (we are the shutdown trigger)
                self._trigger = None
            writer.stop()

    def schema_version(self) -> int:
        with self.env.begin() as txn:
            return int(txn.get(keys.SCHEMA_KEY, db=self._meta_db))

    # -- small values a role keeps beside its databases ------------------------------------------------
    def get_meta(self, name: str) -> Any:
        """The value ``put_meta`` last stored under ``name``, or None. Read in this thread's transaction when
        there is one (a ``read_txn`` loop, or a write transaction: its own writes)."""
        key = keys.META_PREFIX + name.encode()
        local = self._local
        txn = getattr(getattr(local, "txn", None), "txn", None) or getattr(local, "rtxn", None)
        if txn is not None:
            raw = txn.get(key, db=self._meta_db)
        else:
            if self._closed:
                raise StoreError("store is closed")
            with self.env.begin() as own:
                raw = own.get(key, db=self._meta_db)
        return codec.decode_value(raw) if raw is not None else None

    def put_meta(self, name: str, value: Any, txn: WriteTxn | None = None) -> None:
        """Keep a small CBOR value under ``name`` (not a document: no revisions, no changes feed, never
        replicated); with ``txn``, in that transaction, e.g. beside the batch it counts (roles/quota.py)."""
        data = codec.encode_value(value)
        with self._writing(txn) as w:
            w.txn.put(keys.META_PREFIX + name.encode(), data, db=self._meta_db)

    # -- transactions ------------------------------------------------------------------------------
    @contextmanager
    def read_txn(self) -> Iterator[None]:
        """One read transaction for every read this thread makes inside the block: a loop of lookups (a
        batch's rules asking who wrote each document) opens one instead of one per call, and each begin
        is an LMDB call that gives up the GIL. Inside a write_txn, or nested, it adds nothing."""
        local = self._local
        if getattr(local, "txn", None) is not None or getattr(local, "rtxn", None) is not None:
            yield
            return
        if self._closed:
            raise StoreError("store is closed")
        txn = self.env.begin()
        local.rtxn = txn
        try:
            yield
        finally:
            local.rtxn = None
            txn.abort()

    @contextmanager
    def write_txn(self) -> Iterator[WriteTxn]:
        """A write transaction; pass it as `txn=` to several calls to commit them atomically together.

        Nested use in one thread joins the outer transaction (LMDB allows one writer per thread).
        """
        outer = getattr(self._local, "txn", None)
        if outer is not None:
            yield outer
            return
        if self._closed:
            raise StoreError("store is closed")
        txn = self.env.begin(write=True)
        w = WriteTxn(self, txn)
        self._local.txn = w
        try:
            yield w
            touched = w.flush()
        except lmdb.Error as e:
            self._local.txn = None
            txn.abort()
            raise self._write_failed(e) from e
        except BaseException:
            self._local.txn = None
            txn.abort()
            raise
        self._local.txn = None
        try:
            txn.commit()
        except lmdb.Error as e:
            raise self._write_failed(e) from e
        if touched:
            self._notify(touched)

    def _write_failed(self, e: lmdb.Error) -> StoreError:
        """A StoreError a person can act on for an LMDB write failure; nothing of the transaction was written."""
        if isinstance(e, lmdb.MapFullError):
            return StoreError(f"the store at {self.path} is full: its map of {self.env.info()['map_size']} bytes "
                              "is used up; nothing of this write was stored (reopen it with a larger map_size)")
        return StoreError(f"could not write the store at {self.path} (is the disk full?): {e}; "
                          "nothing of this write was stored")

    @contextmanager
    def _writing(self, txn: WriteTxn | None) -> Iterator[WriteTxn]:
        if txn is not None:
            if not isinstance(txn, WriteTxn) or txn.store is not self:
                raise StoreError("txn must come from this store's write_txn()")
            yield txn
        else:
            with self.write_txn() as w:
                yield w

    def run_in_writer(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        """Run `fn` in the single writer thread, so big batches never stall the reactor.

        `fn` runs inside a write transaction (its own `write_txn()` joins it); jobs queued together share
        one commit (group commit, writer.py). The Deferred fires in the reactor thread after the commit.
        """
        return self._writer_thread().submit(fn, args, kwargs)

    def prepare_and_write(self, prepare: Callable[[Callable[[], None]], Any], fn: Callable[[Any], Any]) -> Deferred:
        """`fn(prepare(pause))` in the writer thread (run_in_writer), `prepare` running first in a thread of
        its own, without a transaction, while the writer commits the jobs before it (LMDB releases the GIL
        while it writes pages and fsyncs); `prepare` calls `pause()` every few milliseconds of work to step
        aside while the writer runs a job (writer.py GroupWriter._pause)."""
        return self._writer_thread().submit(fn, (), {}, prepare=prepare)

    def _writer_thread(self) -> GroupWriter:
        """The writer (started on first use, stopped at the reactor's shutdown)."""
        if self._closed:
            raise StoreError("store is closed")
        if self._writer is None:
            self._writer = GroupWriter(self, self._reactor)
            self._trigger = self._reactor.addSystemEventTrigger("during", "shutdown", self._stop_pool)
        return self._writer

    # -- notifications -----------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[str, int], None]) -> Callable[[], None]:
        """Call `callback(dbname, seq)` in the reactor thread after each commit; returns unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            try:
                self._subscribers.remove(callback)
            except ValueError:
                pass

        return unsubscribe

    def _notify(self, touched: dict[str, int]) -> None:
        if not self._subscribers:
            return
        if getattr(self._local, "in_writer", False) or (
            self._reactor.running and not threadable.isInIOThread()
        ):
            self._reactor.callFromThread(self._fire, touched)
        else:
            self._fire(touched)

    def _fire(self, touched: dict[str, int]) -> None:
        for cb in list(self._subscribers):
            for name, seq in touched.items():
                try:
                    cb(name, seq)
                except Exception:
                    log.failure("store subscriber {cb!r} failed for {db} at {seq}", cb=cb, db=name, seq=seq)

    # -- databases ---------------------------------------------------------------------------------
    def _lookup(self, txn: lmdb.Transaction, name: str) -> bytes | None:
        key = name.encode()
        if not key or len(key) > MAX_NAME_BYTES:   # no such database can exist; LMDB refuses an empty key
            return None
        return txn.get(key, db=self._names_db)

    def _db_object(self, name: str, entry: bytes):
        from .database import Database

        db = self._databases.get(name)
        if db is None or db._entry != entry:
            db = Database(self, name, entry)
            self._databases[name] = db
        return db

    def create_database(self, name: str, txn: WriteTxn | None = None):
        """Create (or return) the logical database `name`: one small write, no LMDB handle."""
        check_db_name(name)
        with self._writing(txn) as w:
            entry = self._lookup(w.txn, name)
            if entry is None:
                raw = w.txn.get(keys.NEXT_DBID_KEY, db=self._meta_db)
                dbid = keys.read_u32(raw) if raw is not None else 1
                if dbid >= 0xFFFFFFFF:
                    raise StoreError("out of database ids")
                w.txn.put(keys.NEXT_DBID_KEY, keys.u32(dbid + 1), db=self._meta_db)
                entry = keys.dbid_bytes(dbid) + os.urandom(8)
                w.txn.put(name.encode(), entry, db=self._names_db)
                log.debug("created database {db} id {dbid}", db=name, dbid=dbid)
        return self._db_object(name, entry)

    def database(self, name: str):
        """The existing logical database `name`; NotFound if there is none."""
        with self.env.begin() as txn:
            entry = self._lookup(txn, name) if type(name) is str else None
        if entry is None:
            raise NotFound(f"no database named {name!r}")
        return self._db_object(name, entry)

    def has_database(self, name: str) -> bool:
        with self.env.begin() as txn:
            return type(name) is str and self._lookup(txn, name) is not None

    def _names(self, txn: lmdb.Transaction, prefix: bytes) -> Iterator[bytes]:
        """The database names (keys) under ``prefix``, in order, inside ``txn``."""
        with txn.cursor(db=self._names_db) as cur:
            if not cur.set_range(prefix):
                return
            for k in cur.iternext(values=False):
                if not k.startswith(prefix):
                    return
                yield k

    def list_databases(self, prefix: str = "") -> list[str]:
        with self.env.begin() as txn:
            return [k.decode() for k in self._names(txn, prefix.encode())]

    def database_count(self, prefix: str = "") -> int:
        """How many logical databases there are: O(1) for all of them (LMDB keeps the count of the names
        table); under a prefix, a scan of just those names."""
        with self.env.begin() as txn:
            if not prefix:
                return txn.stat(self._names_db)["entries"]
            return sum(1 for _ in self._names(txn, prefix.encode()))

    def database_sizes(self, prefix: str = "", after: str | None = None,
                       chunk: int = 10_000) -> Iterator[tuple[str, int, int]]:
        """(name, live documents, update seq) of every database under `prefix` (after the name `after`),
        in name order, without opening them: for a census of a hub's million databases, which through
        `database(name)` costs a transaction and a kept object each. Reads `chunk` names per read
        transaction, so no transaction stays open while the caller works and memory stays bounded."""
        p = prefix.encode()
        start = after.encode() if after is not None and after.encode() > p else p
        skip = after is not None and start == after.encode()   # `after` itself is not listed
        unpack = keys.unpack_state
        while True:
            rows: list[tuple[str, int, int]] = []
            with self.env.begin() as txn, txn.cursor(db=self._names_db) as cur:
                if not cur.set_range(start):
                    return
                get = txn.get
                for k, entry in cur:
                    if not k.startswith(p):
                        break
                    if skip and k == start:
                        continue
                    raw = get(entry[:4], db=self._state_db)
                    seq, docs = unpack(raw) if raw is not None else (0, 0)
                    rows.append((k.decode(), docs, seq))
                    if len(rows) >= chunk:
                        break
            yield from rows
            if len(rows) < chunk:
                return
            start, skip = rows[-1][0].encode(), True

    def delete_database(self, name: str, txn: WriteTxn | None = None) -> None:
        """Delete `name` and everything in it; creating it again gives a new id and epoch."""
        with self._writing(txn) as w:
            entry = self._lookup(w.txn, name) if type(name) is str else None
            if entry is None:
                raise NotFound(f"no database named {name!r}")
            dbp = entry[:4]
            w.flush_idx()  # index entries written earlier in this transaction are deleted below too
            w.txn.delete(name.encode(), db=self._names_db)
            w.txn.delete(dbp, db=self._state_db)
            w.states.pop(dbp, None)
            for db in (self._docs_db, self._log_db, self._idx_db, self._ckpt_db):
                with w.txn.cursor(db=db) as cur:
                    if cur.set_range(dbp):
                        while cur.key()[:4] == dbp:
                            if not cur.delete():
                                break
        self._databases.pop(name, None)
        log.info("deleted database {db}", db=name)

    def disk_usage(self) -> dict[str, int]:
        """Bytes in use (pages up to the last one written) and the page size, for status and benchmarks."""
        info = self.env.info()
        psize = self.env.stat()["psize"]
        return {"used_bytes": (info["last_pgno"] + 1) * psize, "page_size": psize}
