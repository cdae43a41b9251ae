"""Frames are written in DAG-CBOR's key order so that the receiver's fast decoder (libipld) takes them; a frame
in any other order (an older build's) decodes the same through cbor2."""

from __future__ import annotations

import functools
import os
import tempfile

import cbor2
import libipld
import pytest

from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import sign_doc
from shiftpeer.store import Store, codec
from shiftpeer.sync import messages
from shiftpeer.sync.framing import PREFIX

from test_store_decode import _same


def _payload(frame: bytes) -> bytes:
    (length,) = PREFIX.unpack_from(frame, 0)
    assert len(frame) == 4 + length
    return frame[4:]


@pytest.fixture()
def source():
    """A store with signed shifts in `master`, one of them edited (a record with a revision tree)."""
    key = NodeKey.generate()
    with tempfile.TemporaryDirectory() as d:
        store = Store(os.path.join(d, "s"))
        db = store.create_database("master")
        for i in range(20):
            db.put(f"shift-{i}", {"author": key.account_id, "type": "shift", "href": f"https://e.org/{i}",
                                  "created": 1_700_000_000.25 + i, "content": {"text": "x" * 200, "n": i}},
                   sign=functools.partial(sign_doc, key))
        first = db.get("shift-0")
        db.put("shift-0", {**first.body, "summary": "edited"}, parent=first.rev, sign=functools.partial(sign_doc, key))
        yield db
        store.close()


def test_a_docs_frame_as_a_feeder_sends_it_takes_the_fast_decoder(source):
    """The documents a catching-up feeder reads (changes_with_docs: stored bodies spliced in as they are),
    encoded as a `docs` frame: libipld decodes the payload itself (it raises on any other order), to what
    cbor2 gives, and the message validates."""
    _, docs = source.changes_with_docs(0, 100, docs_up_to=100)
    assert len(docs) == 20 and any(len(d["history"]) == 2 for d in docs)
    payload = _payload(messages.encode("docs", rid=3, seq=21, docs=docs, more=False))
    fast = libipld.decode_dag_cbor(payload)
    assert _same(fast, cbor2.loads(payload))
    msg = messages.decode(payload)
    assert [d["id"] for d in msg["docs"]] == [d["id"] for d in docs]
    assert msg["docs"][5]["body"] == source.get(docs[5]["id"]).body


def test_changes_and_small_frames_take_it_too(source):
    chs, docs = source.changes_with_docs(0, 100, docs_up_to=100)
    for frame in (messages.encode("changes", rid=1, seq=9, ch=[[c.id, c.revs] for c in chs], docs=docs),
                  messages.encode("caught_up", rid=1, seq=9),
                  messages.encode("error", code="refused", msg="no", db=None)):
        payload = _payload(frame)
        assert _same(libipld.decode_dag_cbor(payload), cbor2.loads(payload))


def test_a_frame_in_an_older_builds_key_order_decodes_the_same(source):
    """A build before this one wrote `t` last and ReplDoc keys as id, rev, deleted, body, sig, history:
    the fast decoder refuses that order and cbor2 decodes it, to the same message."""
    docs = source.get_repl_docs([("shift-0", None), ("shift-1", None)], raw_bodies=True)
    old_docs = [{k: d[k] for k in ("id", "rev", "deleted", "body", "sig", "history")} for d in docs]
    old = cbor2.dumps({"rid": 3, "seq": 2, "docs": old_docs, "more": True, "t": "docs"}, default=codec.write_raw)
    with pytest.raises(ValueError):
        libipld.decode_dag_cbor(old)
    new = _payload(messages.encode("docs", rid=3, seq=2, docs=docs, more=True))
    assert messages.decode(old) == messages.decode(new)


def test_bad_cbor_is_still_a_protocol_error():
    for payload in (b"", b"\xa1", b"\xff", b"\x81" * 100_000):
        with pytest.raises(messages.ProtocolError) as e:
            messages.decode(payload)
        assert e.value.code == "bad_cbor"
