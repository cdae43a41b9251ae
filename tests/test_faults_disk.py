"""Disk full: a full LMDB map or a full filesystem gives a clear StoreError, no corruption, and the store
works again once space returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from rel_crash import CHECKOUT, HERE, child_env
from shiftpeer.store import Store, StoreError


def fill(store: Store, db, start: int = 0, limit: int = 10_000) -> tuple[int, Exception | None]:
    """Write 20-document transactions until one fails (bounded); returns (transactions committed, error)."""
    for i in range(start, start + limit):
        try:
            with store.write_txn() as txn:
                for j in range(20):
                    db.put(f"d{i}-{j}", {"text": "y" * 1000, "i": i}, txn=txn)
        except Exception as e:  # noqa: BLE001 - the kind of error is what is tested
            return i - start, e
    return limit, None


def test_map_full_is_a_clear_store_error_and_the_store_stays_usable(tmp_path):
    """When the LMDB map is full the write fails with a StoreError that says so, every committed transaction
    is intact, reads still work, and after reopening with a larger map the writes go on."""
    path = str(tmp_path / "store")
    store = Store(path, map_size=1 << 20, sync=False)
    db = store.create_database("master")
    done, err = fill(store, db)
    assert done > 0 and err is not None
    assert isinstance(err, StoreError), f"{type(err).__module__}.{type(err).__name__}: {err}"
    assert "full" in str(err)
    assert db.doc_count() == done * 20 and len(db.changes(0)) == done * 20
    assert db.get(f"d{done}-0") is None, "a failed transaction left a document behind"
    with pytest.raises(StoreError):
        db.put("one-more", {"text": "z" * 20000})
    assert db.get("d0-0").body["i"] == 0
    store.close()
    store = Store(path, map_size=8 << 20, sync=False)
    db = store.database("master")
    more, err = fill(store, db, start=done, limit=5)
    assert more == 5 and err is None
    assert db.doc_count() == (done + 5) * 20
    store.close()


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs mounted for this test, with a 1 MiB filler file to delete when space should return."""
    mnt = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        (mnt / "filler").write_bytes(b"\0" * (1 << 20))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_filesystem_is_a_clear_error_not_a_crash(small_fs):
    """When the filesystem under the store fills up, the node process gets a StoreError instead of dying of
    SIGBUS, committed data is intact, and once space is freed the next write succeeds."""
    proc = subprocess.run([sys.executable, os.path.join(HERE, "rel_diskfull.py"), str(small_fs / "store"),
                           str(small_fs / "filler")], env=child_env(), cwd=CHECKOUT, capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, f"the store process died (status {proc.returncode}): {proc.stderr.decode()[-2000:]}"
    out = json.loads(proc.stdout.decode().splitlines()[-1])
    assert out["committed"] > 0 and out["store_error"], out
    assert out["intact"] and out["after_space"], out
