"""A shift made public is stored in canonical key order, so every node it reaches checks its signature
once, over the plain payload (identity/signing.py verify_repl_doc), and its revision without a second
encoding. Publishing adds `audience` to the body; written as built, the body kept its insertion order,
and every hub and full peer checked each public shift's signature twice."""

from __future__ import annotations

import cbor2
import pytest_twisted

import shiftpeer.identity.signing as signing
from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.store import codec


@pytest_twisted.ensureDeferred
async def test_a_public_shift_is_checked_once_wherever_it_is(mesh, monkeypatch):
    await mesh.start(users=("alice",))
    alice = mesh["alice"]
    sid = alice.new_shift("https://canonical.example/")
    await alice.publish(sid, public=True)
    await eventually(lambda: sid in mesh.hub.ids("master"), "master")
    copies = [alice.store.database("user/public").get_repl_docs([(sid, None)])[0],
              mesh.hub.db("master").get_repl_docs([(sid, None)])[0]]
    calls: list[bytes] = []
    real = signing.check_signature
    monkeypatch.setattr(signing, "check_signature", lambda pk, msg, sig: calls.append(msg) or real(pk, msg, sig))
    for doc in copies:
        assert cbor2.dumps(doc["body"]) == codec.encode_canonical(doc["body"])
        signing.GENUINE.clear()
        before = len(calls)
        assert signing.verify_repl_doc(doc)
        assert len(calls) == before + 1, "checked over the canonical payload a second time"
