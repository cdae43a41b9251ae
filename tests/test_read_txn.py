"""Store.read_txn: one read transaction for a block of reads in one thread (a store_batch's rules looking
at every document of a batch), instead of one per call."""

from __future__ import annotations

import threading

import pytest

from shiftpeer.roles.validation import filtering_store_batch
from shiftpeer.store import Store
from shiftpeer.store.errors import StoreError


@pytest.fixture
def store(tmp_path):
    st = Store(str(tmp_path / "s"), sync=False)
    yield st
    st.close()


def _put_in_another_thread(db, docid: str) -> None:
    t = threading.Thread(target=db.put, args=(docid, {"n": 1}))
    t.start()
    t.join(timeout=10)
    assert not t.is_alive()


def test_reads_inside_share_one_snapshot(store):
    """A write committed by another thread while the block is open is not seen inside it (one transaction,
    begun at the start), and is seen right after it."""
    db = store.create_database("d")
    db.put("a", {"n": 0})
    with store.read_txn():
        assert db.get("a") is not None
        _put_in_another_thread(db, "b")
        assert db.get("b") is None and db.get("a") is not None
        with store.read_txn():                     # nested: the same transaction
            assert db.get("b") is None
    assert db.get("b") is not None
    assert db.get("b") is not None and getattr(store._local, "rtxn", None) is None


def test_inside_a_write_txn_it_reads_the_writes(store):
    db = store.create_database("d")
    with store.write_txn() as w:
        db.put("a", {"n": 0}, txn=w)
        with store.read_txn():
            assert db.get("a") is not None        # the write transaction's own view


def test_a_closed_store_refuses(store):
    store.close()
    with pytest.raises(StoreError):
        with store.read_txn():
            pass


def test_the_rules_look_at_a_batch_in_one_read_transaction(store):
    """filtering_store_batch runs its checks for a whole batch inside one read_txn."""
    db = store.create_database("d")
    seen = []

    def check(db_, peer_id, doc):
        seen.append(store._local.rtxn)
        return None

    docs = [{"id": f"x{i}", "rev": f"1-{i:032x}", "deleted": False, "body": {"n": i}, "sig": None,
             "history": [f"1-{i:032x}"]} for i in range(5)]
    filtering_store_batch(check)(store, db, docs, "peer", "remote", {"seq": 5, "epoch": "e"})
    assert len(seen) == 5 and seen[0] is not None and all(t is seen[0] for t in seen)
    assert getattr(store._local, "rtxn", None) is None
