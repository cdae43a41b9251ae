"""``shiftpeer backup`` and ``shiftpeer restore``: the node's LMDB store as one file.

A backup is LMDB's own compacting copy (``mdb_env_copy2`` with ``MDB_CP_COMPACT``, what ``mdb_copy -c``
does) taken inside one read transaction, so it is consistent while the node keeps running and writing:
LMDB readers never block the writer, and several processes may open one environment. The file is a
complete ``data.mdb``; ``restore`` puts it back as ``DIR/store/data.mdb`` with the node stopped and gives
every database a new epoch, so peers that had replicated past the backup compare again instead of skipping.
"""

from __future__ import annotations

import os
import time
from typing import Any

#: The LMDB sub-database and key where the store records its schema version (shiftpeer.store).
META_DB = b"meta"
SCHEMA_KEY = b"schema"
#: The sub-database naming each logical database: name -> 4-byte id + 8-byte epoch (shiftpeer.store).
NAMES_DB = b"names"
DATA_FILE = "data.mdb"


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


def store_path(directory: str) -> str:
    """The node directory's LMDB store directory (from its config)."""
    from shiftpeer.nodedir import NodeDirError, load_node_dir

    try:
        config = load_node_dir(directory)
    except NodeDirError as e:
        raise BackupError(str(e)) from None
    return os.path.join(os.path.abspath(directory), config.store_path or "store")


def _open(path: str) -> Any:
    import lmdb

    if not os.path.exists(os.path.join(path, DATA_FILE)):
        raise BackupError(f"{path} holds no store yet: start the node once ('twistd -n --pidfile= shiftpeer --data DIR')")
    try:
        # readonly, with the lock file: a reader slot like any other, so the running node is undisturbed
        return lmdb.open(path, readonly=True, max_dbs=8, create=False)
    except lmdb.Error as e:
        raise BackupError(f"cannot open the store at {path}: {e}") from None


def _describe(env: Any) -> dict:
    """The store's schema version (None when it is not a shiftpeer store)."""
    import lmdb

    try:
        with env.begin() as txn:
            meta = env.open_db(META_DB, txn=txn, create=False)
            version = txn.get(SCHEMA_KEY, db=meta)
    except lmdb.NotFoundError:
        version = None
    schema = int(version) if version is not None and version.isdigit() else None
    return {"schema": schema}


def backup(directory: str, outfile: str, *, force: bool = False) -> dict:
    """Write a compacted copy of DIR's store to ``outfile`` (atomically: a temporary file, then rename)."""
    path = store_path(directory)
    outfile = os.path.abspath(outfile)
    if os.path.exists(outfile) and not force:
        raise BackupError(f"{outfile} exists; choose another name or add --force to replace it")
    parent = os.path.dirname(outfile)
    if not os.path.isdir(parent):
        raise BackupError(f"{parent} is not a directory")
    env = _open(path)
    tmp = f"{outfile}.tmp-{os.getpid()}"
    try:
        info = _describe(env)
        if info["schema"] is None:
            raise BackupError(f"{path} is not a shiftpeer store (no schema version)")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            env.copyfd(fd, compact=True)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, outfile)
    except OSError as e:
        raise BackupError(f"cannot write {outfile}: {e.strerror or e}") from None
    finally:
        env.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"path": outfile, "bytes": os.path.getsize(outfile), "schema": info["schema"], "store": path}


def _new_epochs(env: Any) -> int:
    """Give every logical database a new epoch (its catalogue entry: 4-byte id, then 8-byte epoch).

    Peers keep checkpoints in this node's sequence numbers; after a restore those numbers go back in
    time, and a peer resuming from its checkpoint would skip the changes made after the restore. A new
    epoch makes every peer compare from the start once (cheap: it only asks for what it lacks).
    """
    with env.begin(write=True) as txn:
        names = env.open_db(NAMES_DB, txn=txn, create=False)
        entries = [(k, v) for k, v in txn.cursor(db=names) if len(v) == 12]
        for name, entry in entries:
            txn.put(name, entry[:4] + os.urandom(8), db=names)
    return len(entries)


def restore(directory: str, infile: str) -> dict:
    """Put a backup back as DIR's store; the current store is kept aside as ``store.before-restore-TIME``."""
    import lmdb

    path = store_path(directory)
    infile = os.path.abspath(infile)
    if not os.path.isfile(infile):
        raise BackupError(f"{infile} is not a file")
    staging = f"{path}.restoring-{os.getpid()}"
    os.makedirs(staging, mode=0o700)
    try:
        with open(infile, "rb") as src, open(os.path.join(staging, DATA_FILE), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        try:
            env = lmdb.open(staging, max_dbs=8, create=False, lock=False, subdir=True)
        except lmdb.Error as e:
            raise BackupError(f"{infile} is not an LMDB store backup: {e}") from None
        try:
            info = _describe(env)
            if info["schema"] is None:
                raise BackupError(f"{infile} is not a shiftpeer store backup (no schema version)")
            info["databases"] = _new_epochs(env)
        finally:
            env.close()
        kept = None
        if os.path.exists(path):
            kept = f"{path}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}"
            os.rename(path, kept)
        os.rename(staging, path)
    except BaseException:
        if os.path.exists(staging):
            for name in os.listdir(staging):
                os.remove(os.path.join(staging, name))
            os.rmdir(staging)
        raise
    return {"store": path, "schema": info["schema"], "databases": info["databases"], "previous": kept}
