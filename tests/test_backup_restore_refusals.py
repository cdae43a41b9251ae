"""`backup` and `restore` on files that are not what they should be: one line, exit 1, and nothing changed
(the store in place, no half-written file, no staging directory left behind); and a restore onto a node
directory whose node never ran (a new machine) puts the backup in place. Real LMDB stores in tmp_path,
the command run in this process, no node needed (docs/operators.md, Backups)."""

from __future__ import annotations

import os

import lmdb
import pytest

from shiftpeer.cli import EXIT_ERROR, main
from shiftpeer.nodelock import check_not_running
from shiftpeer.store import Store
from tests.test_cli import run


def _node_dir(tmp_path, capsys, name: str, docs: dict | None = None) -> str:
    """A node directory made with `shiftpeer init`, with a store holding ``docs`` in user/private when given
    (None: the node never ran, so there is no store yet)."""
    d = str(tmp_path / name)
    assert main(["init", d, "--user", name]) == 0
    capsys.readouterr()
    if docs is not None:
        store = Store(os.path.join(d, "store"))
        db = store.create_database("user/private")
        for docid, body in docs.items():
            db.put(docid, body)
        store.close()
    return d


def _private_docs(d: str) -> dict:
    store = Store(os.path.join(d, "store"))
    try:
        return {doc.id: doc.body for doc in store.database("user/private").docs_since(0)}
    finally:
        store.close()


def _leftovers(d: str) -> list[str]:
    """Anything besides what init and the store made: staging, kept-aside or temporary files."""
    return sorted(n for n in os.listdir(d) if ".restoring-" in n or ".before-restore-" in n or ".tmp-" in n)


def _plain_lmdb(path: str) -> None:
    """An LMDB environment that is not a shiftpeer store (no schema version)."""
    env = lmdb.open(path, max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(b"some", b"thing", db=env.open_db(b"other", txn=txn))
    env.close()


def _one_line_refusal(err: str, out: str, status: int, *words: str) -> None:
    assert (status, out) == (EXIT_ERROR, ""), err
    assert err.startswith("shiftpeer: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err


def _garbage_file(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"not an lmdb file" * 512)


def _foreign_lmdb_file(path: str) -> None:
    _plain_lmdb(path + ".env")
    os.rename(os.path.join(path + ".env", "data.mdb"), path)


@pytest.mark.parametrize("make_file, words", [
    (_garbage_file, "is not an LMDB store backup"),
    (_foreign_lmdb_file, "is not a shiftpeer store backup (no schema version)"),
])
def test_restoring_a_file_that_is_no_backup_changes_nothing(tmp_path, capsys, make_file, words):
    """A file that is not an LMDB store, or an LMDB store that is not shiftpeer's: refused in one line; the
    node's store is the one it was, and no staging or kept-aside directory is left."""
    d = _node_dir(tmp_path, capsys, "alice", {"s1": {"summary": "mine"}})
    bad = str(tmp_path / "bad.mdb")
    make_file(bad)
    status, out, err = run(capsys, "--data", d, "restore", bad)
    _one_line_refusal(err, out, status, bad, words)
    assert _private_docs(d) == {"s1": {"summary": "mine"}}
    assert _leftovers(d) == []
    check_not_running(d)   # the directory's lock was given back: the node can start again


def test_restore_onto_a_node_that_never_ran(tmp_path, capsys):
    """A new machine: `init`, then `restore` before the node ever started. The backup becomes the store and
    the line says nothing about a previous store (there was none)."""
    old = _node_dir(tmp_path, capsys, "alice", {"s1": {"summary": "kept"}, "s2": {"summary": "too"}})
    backup = str(tmp_path / "alice.mdb")
    assert run(capsys, "--data", old, "backup", backup)[0] == 0
    new = _node_dir(tmp_path, capsys, "fresh")
    assert not os.path.exists(os.path.join(new, "store"))
    status, out, err = run(capsys, "--data", new, "restore", backup)
    assert status == 0 and err == "", err
    assert out == f"restored {backup} as {os.path.join(new, 'store')} (schema 2)\n"
    assert _private_docs(new) == {"s1": {"summary": "kept"}, "s2": {"summary": "too"}}
    assert _leftovers(new) == []


def test_backup_into_a_missing_directory_writes_nothing(tmp_path, capsys):
    d = _node_dir(tmp_path, capsys, "alice", {"s1": {"summary": "mine"}})
    target = tmp_path / "no-such-dir" / "b.mdb"
    status, out, err = run(capsys, "--data", d, "backup", str(target))
    _one_line_refusal(err, out, status, f"{tmp_path / 'no-such-dir'} is not a directory")
    assert not os.path.exists(tmp_path / "no-such-dir")


def test_backup_of_a_store_that_is_not_shiftpeers_writes_nothing(tmp_path, capsys):
    """DIR/store holding some other LMDB environment: refused, and no backup file (nor its temporary) is
    left to be mistaken for a good backup later."""
    d = _node_dir(tmp_path, capsys, "alice")
    _plain_lmdb(os.path.join(d, "store"))
    status, out, err = run(capsys, "--data", d, "backup", str(tmp_path / "b.mdb"))
    _one_line_refusal(err, out, status, "is not a shiftpeer store (no schema version)")
    assert [n for n in os.listdir(tmp_path) if n.startswith("b.mdb")] == []
