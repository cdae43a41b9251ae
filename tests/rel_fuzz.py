"""Hypothesis fuzzing of the sync layer: the frame decoder, message decoding, and every message handler.

Three targets, shared by tests/test_fuzz_sync.py (a few thousand inputs) and
scripts/benchmarks/reliability.py (>= 100,000):

* ``check_framing``: any byte stream in any chunking gives frames or FrameTooLarge, nothing else, and
  never buffers more than the limit; well-formed streams split anywhere give back the same frames.
* ``check_decode``: any payload gives a valid message or ProtocolError, nothing else.
* ``HandlerTarget.run``: a ``SyncProtocol`` past its handshake, on a real LMDB store, with a
  replication open in each direction, gets a generated sequence of frames: schema-shaped messages with
  adversarial values (names, ids, revisions, sequence numbers, documents from the store and not),
  mutated messages, raw bytes, and validly signed documents (with adversarial revisions, histories and
  bodies) answering the target's own pull. Afterwards nothing was logged as an error, no exception
  escaped, every database but the pulled-into ``feed`` is unchanged (the policy lets the fuzzer read
  everything and push nothing, and the validator checks real signatures), ``feed`` is consistent, and
  every input the decoder refuses closed the connection with an error frame.
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2
from hypothesis import strategies as st
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport

from shiftpeer.sync import Policy, SyncFactory
from shiftpeer.sync.framing import FrameDecoder, FrameTooLarge, encode_frame
from shiftpeer.sync.messages import SCHEMAS, ProtocolError, decode

FUZZ_MAX_FRAME = 64 * 1024


# ---------------------------------------------------------------- framing and decoding

def check_framing(payloads: list[bytes], cuts: list[int], noise: bytes, limit: int = 4096) -> int:
    """Frames survive any split; arbitrary bytes give frames or FrameTooLarge; the buffer stays bounded.

    Returns the number of inputs exercised (one per chunk fed)."""
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder(max_length=1 << 20)
    got: list[bytes] = []
    pos, fed = 0, 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        got += dec.feed(stream[pos:cut])
        pos, fed = cut, fed + 1
    assert got == payloads and dec.buffered == 0
    dec = FrameDecoder(max_length=limit)
    step = max(1, (cuts[0] % 17) if cuts else 1)
    for i in range(0, len(noise), step):
        fed += 1
        try:
            for frame in dec.feed(noise[i:i + step]):
                assert len(frame) <= limit
        except FrameTooLarge as e:
            assert e.length > limit
            assert dec.buffered == 0
            break
        assert dec.buffered < limit + 4 + step
    return fed


def check_decode(payload: bytes) -> None:
    """Any payload decodes to a message of a known type or raises ProtocolError, nothing else."""
    try:
        msg = decode(payload)
    except ProtocolError as e:
        assert e.code in ("bad_cbor", "bad_message", "unknown_type")
        return
    assert type(msg) is dict and msg["t"] in SCHEMAS


# ---------------------------------------------------------------- strategies

HEX = "0123456789abcdef"
BIG = st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64, 2**64 + 1, -1, -(2**63)])


_LEAF = (st.none() | st.booleans() | st.integers() | BIG | st.floats(allow_nan=True) | st.text(max_size=20)
         | st.binary(max_size=20))
#: Any CBOR-encodable value, nested a little (built once: building strategies is what costs).
ANY = st.recursive(_LEAF, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                   max_leaves=8)


def strategies(doc_ids: list[str], doc_revs: list[str], db_names: list[str]) -> dict[str, Any]:
    """Field strategies that aim at the interesting values: known ids, revisions and databases, and not."""
    small = st.integers(0, 6)
    num = small | st.integers(0, 10**6) | BIG
    good_rev = st.builds(lambda n, h: f"{n}-{h}", st.integers(1, 5), st.text(HEX, min_size=32, max_size=32))
    rev = st.sampled_from(doc_revs) | good_rev | st.text(max_size=12) | st.just("0-" + "0" * 32)
    docid = st.sampled_from(doc_ids) | st.text(max_size=12) | st.just("x" * 1024) | st.just("")
    dbname = (st.sampled_from(db_names + ["user/private", "shared", "hub/accounts", "nope", "a" * 512, "../master",
                                          "master/", "MASTER"]) | st.text(max_size=16))
    id_revs = st.tuples(docid, st.lists(rev, min_size=0, max_size=3)).map(list)
    body = st.dictionaries(st.sampled_from(["author", "type", "href", "n", "created"]), ANY, max_size=4)
    repl_doc = st.fixed_dictionaries({
        "id": docid, "rev": rev, "deleted": st.booleans(), "body": body,
        "sig": st.none() | st.binary(min_size=64, max_size=64) | st.binary(max_size=130),
        "history": st.lists(rev, max_size=3)}).map(_fix_history)
    return {
        "rid": small | num, "seq": num, "since": num, "id": small | num, "v": st.just(1) | num, "maxf": num,
        "db": dbname, "src": dbname, "epoch": st.none() | st.text(max_size=34), "live": st.booleans(),
        "push": st.none() | small, "more": st.booleans(), "ok": st.booleans(),
        "roles": st.lists(st.sampled_from(["hub", "user", "full-peer"]) | st.text(max_size=8), max_size=4),
        "want": st.lists(id_revs, max_size=6), "ch": st.lists(id_revs, max_size=6),
        "docs": st.lists(repl_doc, max_size=3), "role": st.sampled_from(["pull", "feed"]) | st.text(max_size=6),
        "code": st.text(max_size=10), "msg": st.text(max_size=20), "method": st.text(max_size=12),
        "args": st.dictionaries(st.text(max_size=6), ANY, max_size=3),
        "value": ANY, "error": st.none() | st.text(max_size=10),
    }


def _fix_history(d: dict) -> dict:
    """Usually a history that starts with the rev (so the document reaches the handler), sometimes not."""
    if d["history"] and d["history"][0] == "keep":
        return d
    d["history"] = [d["rev"], *d["history"]] if len(d["history"]) % 3 else d["history"]
    return d


def message(fields: dict[str, Any]) -> st.SearchStrategy:
    """One message: schema-shaped, sometimes with a field dropped, retyped or added."""

    @st.composite
    def build(draw: Any) -> dict:
        t = draw(st.sampled_from(sorted(SCHEMAS)) | st.just("gimme"))
        schema = SCHEMAS.get(t, {"x": (None, True)})
        msg: dict = {"t": t}
        for name, (_, required) in schema.items():
            if not required and draw(st.booleans()):
                continue
            msg[name] = draw(fields[name] if name in fields else ANY)
        mutation = draw(st.integers(0, 9))
        if mutation == 0 and len(msg) > 1:
            msg.pop(draw(st.sampled_from(sorted(k for k in msg if k != "t"))))
        elif mutation == 1 and len(msg) > 1:
            msg[draw(st.sampled_from(sorted(k for k in msg if k != "t")))] = draw(ANY)
        elif mutation == 2:
            msg[draw(st.text(max_size=5))] = draw(ANY)
        return msg

    return build()


def signed_exchange(fields: dict[str, Any], key: Any) -> st.SearchStrategy:
    """``changes`` then ``docs`` for the target's own pull (rid 1), the documents validly signed, so they get
    past the signature check into the store with adversarial revisions, histories, ids and bodies. About half
    carry the real revision of their body under their history's parent, so they get past the revision hash
    check too (the rest are refused by it, as forged)."""
    from shiftpeer.identity.signing import sign_doc
    from shiftpeer.store.codec import encode_canonical
    from shiftpeer.store.revs import rev_from_bytes

    body = st.dictionaries(st.sampled_from(["type", "href", "n", "created", "text"]) | st.text(max_size=4), ANY,
                           max_size=4)

    @st.composite
    def build(draw: Any) -> list[bytes]:
        seq = draw(st.integers(1, 50))
        docs = []
        for _ in range(draw(st.integers(1, 3))):
            docid = draw(fields["ch"].map(lambda ch: ch[0][0] if ch else "d0") | st.text(min_size=1, max_size=8))
            rev = draw(st.builds(lambda n, h: f"{n}-{h}", st.integers(1, 4), st.text(HEX, min_size=32, max_size=32))
                       | st.text(max_size=10))
            deleted = draw(st.booleans())
            b = {**draw(body), "author": key.account_id}
            history = [rev, *draw(st.lists(st.builds(lambda n, h: f"{n}-{h}", st.integers(0, 5),
                                                     st.text(HEX, min_size=32, max_size=32)), max_size=3))]
            if draw(st.booleans()):
                try:
                    rev = history[0] = rev_from_bytes(history[1] if len(history) > 1 else None, deleted,
                                                      encode_canonical(b))
                except (ValueError, TypeError, cbor2.CBOREncodeError):
                    pass
            docs.append({"id": docid, "rev": rev, "deleted": deleted, "body": b, "history": history,
                         "sig": sign_doc(key, docid, rev, b, deleted)})
        ch = [[d["id"], [d["rev"]]] for d in docs]
        return [encode_frame(cbor2.dumps({"t": "changes", "rid": 1, "seq": seq, "ch": ch})),
                encode_frame(cbor2.dumps({"t": "docs", "rid": 1, "seq": seq, "docs": docs, "more": False}))]

    return build()


def frames(fields: dict[str, Any], key: Any = None) -> st.SearchStrategy:
    """A sequence of inputs: mostly whole message frames, sometimes raw or truncated bytes, and (with ``key``)
    validly signed documents for the target's pull."""
    msg = message(fields)
    if key is not None:
        exchange = signed_exchange(fields, key)
        return st.lists(exchange | frames(fields).map(lambda f: f[:2]), min_size=1, max_size=3).map(
            lambda parts: [frame for part in parts for frame in part])
    one = (msg.map(lambda m: encode_frame(cbor2.dumps(m)))
           | msg.map(lambda m: encode_frame(cbor2.dumps(m))[: max(1, len(cbor2.dumps(m)) // 2)])
           | st.binary(max_size=64).map(encode_frame)
           | st.binary(max_size=16)
           | st.builds(lambda n, b: struct.pack(">I", n) + b, st.integers(0, 2**32 - 1), st.binary(max_size=8))
           | ANY.map(lambda v: encode_frame(cbor2.dumps(v))))
    return st.lists(one, min_size=1, max_size=6)


# ---------------------------------------------------------------- the handler target

class ReadOnlyPolicy(Policy):
    """The fuzzer may pull any database (so every name reaches the store) and push into none."""

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return True


def verify_now(docs: list) -> Any:
    """The real signature check, synchronously (no threads under a fake clock)."""
    from shiftpeer.identity.signing import verify_repl_doc
    return succeed([verify_repl_doc(d) for d in docs])


def store_now(store: Any, db: Any, docs: list, peer_id: str, remote_db: str, cp: dict) -> Any:
    """What the default store_batch does, inline: docs and checkpoint in one transaction."""
    with store.write_txn() as txn:
        if docs:
            db.bulk_replicated(docs, txn=txn)
        db.set_checkpoint(peer_id, remote_db, cp, txn=txn)
    return succeed(None)


class HandlerTarget:
    """One real store and factory; each run is a fresh connection fed one generated input sequence."""

    def __init__(self, store: Any, key: Any) -> None:
        import functools

        from shiftpeer.identity.signing import sign_doc

        self.store = store
        self.clock = Clock()
        self.factory = SyncFactory(store, key, ReadOnlyPolicy(), reactor=self.clock, roles=("hub",),
                                   validator=verify_now, peer_id_of=lambda t: "fuzzer", store_batch=store_now,
                                   max_frame=FUZZ_MAX_FRAME)
        self.factory.rpc_handlers["echo"] = lambda conn, args: args
        self.factory.rpc_handlers["boom"] = lambda conn, args: 1 / 0
        master = store.create_database("master")
        store.create_database("feed")
        sign = functools.partial(sign_doc, key)
        if not master.update_seq():
            for i in range(8):
                rev = master.put(f"d{i}", {"author": key.account_id, "n": i}, sign=sign)
                if i % 3 == 0:
                    master.put(f"d{i}", {"author": key.account_id, "n": -i}, parent=rev, sign=sign)
            master.put("d1", {"author": key.account_id}, parent=master.get("d1").rev, deleted=True, sign=sign)
        self.doc_ids = [c.id for c in master.changes(0)]
        self.doc_revs = [r for c in master.changes(0) for r in c.revs]
        self.fields = strategies(self.doc_ids, self.doc_revs, ["master", "feed"])
        from shiftpeer.identity import NodeKey
        self.fuzz_key = NodeKey.generate()     # the fuzzer's own account: its signed documents are valid
        self.errors: list[dict] = []
        self.before = self.fingerprint()
        self.inputs = 0
        self.closed = 0
        self.corpus: list[bytes] = []      # whole frames seen, to seed the mutation stage
        self.corpus_limit = 5000

    def fingerprint(self) -> dict:
        """Every database but ``feed`` (which the target pulls into, so valid signed documents may land there)."""
        return {n: (self.store.database(n).update_seq(), self.store.database(n).doc_count())
                for n in self.store.list_databases() if n != "feed"}

    def check_feed(self) -> None:
        """What the target did store is consistent: counts agree with the changes feed, every doc readable."""
        feed = self.store.database("feed")
        changes = feed.changes(0)
        assert feed.doc_count() == sum(1 for c in changes if not c.deleted), "feed counts disagree"
        for c in changes[-20:]:
            assert feed.get(c.id) is not None and feed.get(c.id).rev == c.revs[0], c

    def _observe(self, event: dict) -> None:
        if event.get("log_failure") is not None or event.get("log_level") in (LogLevel.error, LogLevel.critical):
            self.errors.append(event)

    def run(self, inputs: list[bytes]) -> None:
        """Feed one input sequence to a fresh connection and check every property."""
        from shiftpeer.sync.protocol import SyncProtocol

        proto = SyncProtocol(self.factory)
        transport = StringTransport()
        globalLogPublisher.addObserver(self._observe)
        try:
            proto.makeConnection(transport)
            proto.dataReceived(encode_frame(cbor2.dumps({"t": "hello", "v": 1, "roles": ["user"], "maxf": 1 << 20})))
            assert proto.peer_id == "fuzzer"
            proto.pull("master", "feed", live=True)       # a puller, so accept/changes/docs reach a handler
            proto.dataReceived(encode_frame(cbor2.dumps(   # and a feeder, so need/ack/stop reach one
                {"t": "pull", "rid": 1, "db": "master", "since": 0, "epoch": None, "live": True})))
            self.clock.advance(0)
            for data in inputs:
                self.inputs += 1
                if len(self.corpus) < self.corpus_limit and len(data) >= 4:
                    self.corpus.append(data)
                judged = proto._decoder.buffered == 0 and not transport.disconnecting
                proto.dataReceived(data)
                self.clock.advance(1)
                if judged and self._is_bad(data):
                    assert transport.disconnecting, f"a refused input did not close the connection: {data[:60]!r}"
            if transport.disconnecting:
                self.closed += 1
                if proto.peer_error is None:
                    sent = [decode(f) for f in FrameDecoder(1 << 30).feed(transport.value())]
                    assert sent[-1]["t"] == "error" and proto.close_reason is not None, "closed without saying why"
            proto.connectionLost(Failure(ConnectionDone()))
        finally:
            globalLogPublisher.removeObserver(self._observe)
        assert not self.errors, [e.get("log_format") for e in self.errors]
        assert self.fingerprint() == self.before, "the fuzzer changed the store"
        self.check_feed()
        assert proto not in self.factory.connections

    @staticmethod
    def _is_bad(data: bytes) -> bool:
        """Is ``data`` one whole frame that the decoder must refuse? (Partial inputs are not judged.)"""
        if len(data) < 4:
            return False
        (n,) = struct.unpack(">I", data[:4])
        if n > FUZZ_MAX_FRAME:
            return True
        if len(data) != 4 + n:
            return False
        try:
            msg = decode(data[4:])
        except ProtocolError:
            return True
        return msg["t"] == "hello"


# ---------------------------------------------------------------- mutation stage (seeded by hypothesis)

def _cbor_mutate(rng: Any, payload: bytes, donors: list) -> bytes:
    """Decode a frame's payload, swap, drop or retype one field (values taken from other messages), re-encode."""
    try:
        msg = cbor2.loads(payload)
    except Exception:
        return payload
    if type(msg) is not dict or not msg:
        return payload
    key = rng.choice(list(msg))
    op = rng.randrange(5)
    if op == 0:
        del msg[key]
    elif op == 1 and donors:
        msg[key] = rng.choice(donors)
    elif op == 2:
        msg[key] = rng.choice([None, -1, 2**64, "", "x" * 600, [], {}, b"\x00", 1.5, [[]], {"t": "pull"}])
    elif op == 3 and isinstance(msg[key], list) and msg[key]:
        msg[key] = msg[key] * rng.randint(2, 40)
    else:
        msg[rng.choice(["t", "rid", "seq", "zz"])] = rng.choice(donors) if donors else 0
    try:
        return cbor2.dumps(msg)
    except Exception:
        return payload


def mutate(rng: Any, corpus: list[bytes], donors: list) -> list[bytes]:
    """One input sequence: 1-6 corpus frames, each maybe mutated at the byte or the CBOR level."""
    out = []
    for _ in range(rng.randint(1, 6)):
        data = rng.choice(corpus)
        op = rng.randrange(8)
        if op in (0, 1, 2) and len(data) > 4:
            data = encode_frame(_cbor_mutate(rng, data[4:], donors))
        elif op == 3 and data:
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            data = bytes(b)
        elif op == 4 and data:
            data = data[: rng.randrange(len(data))]
        elif op == 5 and len(data) > 4:
            b = bytearray(data[4:])
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 8))
            data = encode_frame(bytes(b))
        elif op == 6:
            data = data + rng.choice(corpus)
        out.append(data)
    return out


def donors_of(corpus: list[bytes], limit: int = 2000) -> list:
    """Field values found in the corpus, for CBOR-level mutations."""
    values: list = []
    for data in corpus:
        try:
            msg = cbor2.loads(data[4:])
        except Exception:
            continue
        if type(msg) is dict:
            values.extend(v for v in msg.values())
        if len(values) >= limit:
            break
    return values


def mutation_campaign(target: HandlerTarget, corpus: list[bytes], inputs: int, seed: int = 0,
                      failures: list | None = None) -> int:
    """Feed mutated corpus sequences until ``inputs`` more inputs were fed; returns the number fed.

    With ``failures`` given, a failing sequence is recorded there (inputs, error) and the campaign goes on;
    without it the first failure raises."""
    import random

    rng = random.Random(seed)
    donors = donors_of(corpus)
    start = target.inputs
    while target.inputs - start < inputs:
        seq = mutate(rng, corpus, donors)
        try:
            target.run(seq)
        except Exception as e:  # noqa: BLE001 - every kind of failure is a finding
            if failures is None:
                raise
            target.errors.clear()
            target.before = target.fingerprint()
            failures.append((seq, f"{type(e).__name__}: {e}"))
    return target.inputs - start


def fast_settings(n: int) -> Any:
    """n examples, no deadline, no example database: a bounded run whose cost does not grow between runs."""
    from hypothesis import HealthCheck, settings
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def generated_campaign(target: HandlerTarget, examples: int) -> int:
    """Run ``examples`` hypothesis-generated input sequences through the handler target; returns inputs fed."""
    from hypothesis import given

    start = target.inputs
    strategy = frames(target.fields) | frames(target.fields, target.fuzz_key)

    @fast_settings(examples)
    @given(strategy)
    def run(inputs: list[bytes]) -> None:
        target.run(inputs)

    run()
    return target.inputs - start


# ---------------------------------------------------------------- the hub's RPC handlers

RPC_KEYS = ("name", "user", "level", "doc", "targets", "ids", "filters", "text", "token", "on", "open",
            "join_level", "id", "limit", "cursor", "following", "favorites")


class RpcTarget:
    """A hub (the real role) on a real store; each run is a connection from one of a few identities (some
    registered, some not) that sends generated ``call`` frames to the hub's RPC methods.

    Every call must be answered by a ``result`` (ok or error) on a connection that stays open, nothing may
    be logged as an error, and the store must stay readable (its doc counts consistent with its feeds)."""

    def __init__(self, store: Any) -> None:
        from shiftpeer.identity import NodeKey
        from shiftpeer.roles.hub import Hub

        self.store = store
        self.clock = Clock()
        self.key = NodeKey.generate()
        self.factory = SyncFactory(store, self.key, Policy(), reactor=self.clock, roles=("hub",),
                                   validator=verify_now, peer_id_of=lambda t: self.peer, store_batch=store_now)
        self.hub = Hub(store, self.key, self.clock)
        self.hub.install(self.factory)
        self.peers = [NodeKey.generate().account_id for _ in range(3)] + ["x" + "a" * 52]
        self.hub.accounts.register("alice", self.peers[0])
        self.hub.accounts.register("bob", self.peers[1])
        self.hub.groups.create("club", "alice")
        self.peer = self.peers[0]
        self.methods = sorted(self.hub.handlers())
        self.errors: list[dict] = []
        self.inputs = 0
        text = st.sampled_from(["alice", "bob", "carol", "club", "read", "publish", "admin", "", "../x", "a" * 300,
                                "group:club", "user:bob", "https://example.org/p"]) | st.text(max_size=10)
        value = text | _LEAF | st.lists(text, max_size=3) | st.dictionaries(text, text, max_size=2)
        self.call = st.fixed_dictionaries({
            "t": st.just("call"), "id": st.integers(0, 2**63 - 1),
            "method": st.sampled_from(self.methods) | st.text(max_size=8),
            "args": st.dictionaries(st.sampled_from(RPC_KEYS), value, max_size=4)})
        self.calls = st.tuples(st.integers(0, len(self.peers) - 1), st.lists(self.call, min_size=1, max_size=4))

    def _observe(self, event: dict) -> None:
        if event.get("log_failure") is not None or event.get("log_level") in (LogLevel.error, LogLevel.critical):
            self.errors.append(event)

    def run(self, who: int, calls: list[dict]) -> None:
        from shiftpeer.sync.protocol import SyncProtocol

        self.peer = self.peers[who]
        proto = SyncProtocol(self.factory)
        transport = StringTransport()
        globalLogPublisher.addObserver(self._observe)
        try:
            proto.makeConnection(transport)
            proto.dataReceived(encode_frame(cbor2.dumps({"t": "hello", "v": 1, "roles": ["user"], "maxf": 1 << 20})))
            for call in calls:
                self.inputs += 1
                try:
                    data = encode_frame(cbor2.dumps(call))
                except Exception:   # not encodable: nothing a peer could send
                    continue
                proto.dataReceived(data)
                self.clock.advance(1)
            assert not transport.disconnecting, "an RPC closed the connection"
            got = [decode(f) for f in FrameDecoder(1 << 30).feed(transport.value())]
            results = {m["id"] for m in got if m["t"] == "result"}
            assert results == {c["id"] for c in calls}, "a call was not answered"
            proto.connectionLost(Failure(ConnectionDone()))
        finally:
            globalLogPublisher.removeObserver(self._observe)
        assert not self.errors, [e.get("log_format") for e in self.errors]
        for name in self.store.list_databases():
            db = self.store.database(name)
            assert db.doc_count() == sum(1 for c in db.changes(0) if not c.deleted), name


def rpc_campaign(target: RpcTarget, examples: int) -> int:
    """Run ``examples`` generated call sequences against the hub's RPC methods; returns the calls sent."""
    from hypothesis import given

    start = target.inputs

    @fast_settings(examples)
    @given(target.calls)
    def run(case: tuple) -> None:
        target.run(*case)

    run()
    return target.inputs - start
