"""Upgrading a store written by an older shiftpeer, in place, inside the transaction that opens it.

Schema 1 -> 2: index entries moved from `dupsort` lists (key: the 16-byte list key, duplicates: the 16-byte
items) to plain 32-byte keys. Documents, changes, checkpoints and records are untouched (records of
schema 1 are all in the general form, which schema 2 still reads); the `idx` sub-database is dropped and
rebuilt from the live documents in `log`, so nothing a node holds, private databases included, is lost.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from . import codec, indexes, keys, revs

log = Logger()


def upgrade_1_to_2(env: Any, txn: Any, names_db: Any, log_db: Any) -> Any:
    """Drop schema 1's dupsort `idx`, create schema 2's and re-index every live document; returns the new
    `idx` handle. Runs in the caller's write transaction: the upgrade commits whole or not at all."""
    old = env.open_db(b"idx", txn=txn, dupsort=True)
    txn.drop(old, delete=True)
    idx = env.open_db(b"idx", txn=txn)
    entries = 0
    databases = 0
    with txn.cursor(db=names_db) as names:
        dbps = [entry[:4] for _name, entry in names]
    for dbp in dbps:
        databases += 1
        pending: list[bytes] = []
        with txn.cursor(db=log_db) as cur:
            if not cur.set_range(dbp):
                continue
            for k, v in cur:
                if k[:4] != dbp:
                    break
                docid, vis, _tree, leaves = codec.decode_record(v)
                win = revs.pick_winner(leaves)
                if not leaves[win][0]:
                    pending.extend(indexes.index_keys(dbp, keys.seq_of(k), codec.decode_body(leaves[win][1]), vis))
        pending.sort()
        with txn.cursor(db=idx) as cur:
            cur.putmulti([(e, b"") for e in pending])
        entries += len(pending)
    log.info("upgraded the store from schema 1 to 2: {databases} databases, {entries} index entries rebuilt",
             databases=databases, entries=entries)
    return idx
