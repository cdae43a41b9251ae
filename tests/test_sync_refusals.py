"""Bad input and refusals over in-memory TLS: an error frame or a dropped connection, the store unchanged,
other connections unaffected."""

from __future__ import annotations

import struct

import cbor2
import pytest
from twisted.internet.task import Clock

from shiftpeer.sync import StaticPolicy, SyncError
from shiftpeer.sync.framing import MAX_FRAME
from shiftpeer.sync.testing import MemoryStore, connect_pair, reject_marked

from test_sync_iosim import fill, make_factory, result_of, settle


class Served:
    """One server with a populated store, and helpers to connect clients to it."""

    def __init__(self, policy=None, validator=reject_marked):
        self.clock = Clock()
        self.store = MemoryStore()
        fill(self.store, "master", 5)
        self.sf = make_factory(self.clock, self.store, policy, validator)

    def client(self, **kw):
        cf = make_factory(self.clock, MemoryStore(), **kw)
        pair = connect_pair(cf, self.sf, self.clock)
        settle(pair.pump)
        return pair

    def snapshot(self):
        return {n: self.store.database(n).snapshot() for n in self.store.list_databases()}

    def still_serves(self):
        pair = self.client()
        rep = pair.client.pull("master", "feed", live=False)
        settle(pair.pump)
        return rep.is_caught_up


def raw(pair, data: bytes):
    pair.client_tls.write(data)
    settle(pair.pump)


def frame(obj) -> bytes:
    payload = cbor2.dumps(obj)
    return struct.pack(">I", len(payload)) + payload


def closed_with(pair, code):
    c = pair.client
    return c._closing and c.peer_error is not None and c.peer_error["code"] == code and pair.server._closing


BAD = [
    ("frame_too_large", struct.pack(">I", MAX_FRAME + 1) + b"x"),
    ("bad_cbor", struct.pack(">I", 3) + b"\xff\xff\xff"),
    ("unknown_type", frame({"t": "gimme"})),
    ("bad_message", frame({"t": "pull", "rid": "one", "db": "master", "since": 0, "epoch": None, "live": False})),
    ("bad_message", frame({"t": "ack", "rid": 1})),
    ("bad_message", frame({"t": "ack", "rid": 1, "seq": -4})),
    ("bad_message", frame({"t": "ack", "rid": 1, "seq": 2, "extra": 1})),
    ("bad_message", frame([1, 2, 3])),
    ("unexpected", frame({"t": "hello", "v": 1, "roles": [], "maxf": 10})),
]


@pytest.mark.allow_logged_errors
@pytest.mark.parametrize("code,data", BAD, ids=[f"{c}-{i}" for i, (c, _) in enumerate(BAD)])
def test_bad_input_closes_only_that_connection(code, data):
    """When a peer sends a malformed frame, it gets an error frame, the connection drops, nothing is stored,
    and other connections keep working."""
    srv = Served()
    bystander = srv.client()
    live = bystander.client.pull("master", "feed", live=True)
    settle(bystander.pump)
    before = srv.snapshot()
    pair = srv.client()
    raw(pair, data)
    assert closed_with(pair, code)
    assert srv.sf.counters["violations"] == 1
    assert srv.snapshot() == before
    srv.store.database("master").put("after", {"x": 1})
    settle(bystander.pump)
    assert live.is_caught_up and bystander.client.factory.store.database("feed").get("after") is not None
    assert srv.still_serves()


@pytest.mark.allow_logged_errors
def test_oversized_prefix_drops_before_the_body_arrives():
    """The length prefix alone is enough to drop the connection; the body is never buffered."""
    srv = Served()
    pair = srv.client()
    raw(pair, struct.pack(">I", MAX_FRAME + 1))
    assert closed_with(pair, "frame_too_large")
    assert pair.server._decoder.buffered == 0


@pytest.mark.allow_logged_errors
def test_version_mismatch_ends_with_a_clear_error():
    """A peer speaking another protocol version gets an error frame saying so, then the connection closes."""
    srv = Served()
    cf = make_factory(srv.clock, MemoryStore(), protocol_version=99)
    pair = connect_pair(cf, srv.sf, srv.clock)
    settle(pair.pump)
    assert pair.server.close_reason["code"] == "version" and "version 99" in pair.server.close_reason["msg"]
    assert pair.client.close_reason["code"] == "version" and "version 1 " in pair.client.close_reason["msg"]
    assert pair.client._closing and pair.server._closing and srv.sf.counters["violation.version"] == 1
    assert srv.still_serves()


@pytest.mark.allow_logged_errors
def test_message_before_hello_is_refused():
    """Anything but hello as the first frame closes the connection."""
    srv = Served()
    from shiftpeer.sync.protocol import SyncProtocol
    p = SyncProtocol(srv.sf)
    sent = []

    class T:
        def write(self, d): sent.append(d)
        def loseConnection(self): sent.append("closed")
        def registerProducer(self, *a): pass
        def unregisterProducer(self): pass
        def getPeer(self): return "fake"
        def getPeerCertificate(self): return None

    p.makeConnection(T())
    p.dataReceived(frame({"t": "ack", "rid": 1, "seq": 1}))
    assert sent[-1] == "closed" and b"unexpected" in sent[-2]


@pytest.mark.allow_logged_errors
def test_unauthorised_read_is_refused_by_name():
    """Pulling a database the policy does not allow gets an error naming it; the connection stays up."""
    srv = Served(policy=StaticPolicy({"client": {"read": ["other"]}}))
    pair = srv.client()
    rep = pair.client.pull("master", "feed", live=False)
    out = result_of(rep.done)
    settle(pair.pump)
    assert isinstance(out[0].value, SyncError) and out[0].value.code == "forbidden" and out[0].value.db == "master"
    assert srv.sf.counters["refused"] == 1
    assert not pair.client._closing
    assert pair.client.factory.store.database("feed").update_seq() == 0


@pytest.mark.allow_logged_errors
def test_unauthorised_write_is_refused_by_name():
    """Pushing into a database the policy does not allow is refused and nothing is written."""
    srv = Served(policy=StaticPolicy({"*": {"read": ["master"], "write": ["inbox"]}}))
    pair = srv.client()
    fill(pair.client.factory.store, "mine", 3)
    before = srv.snapshot()
    rep = pair.client.push("mine", "master", live=False)
    out = result_of(rep.done)
    settle(pair.pump)
    assert out[0].value.code == "forbidden" and out[0].value.db == "master"
    assert srv.snapshot() == before
    ok = pair.client.push("mine", "inbox", live=False)
    settle(pair.pump)
    assert ok.is_caught_up and srv.store.database("inbox").update_seq() == 3


def test_default_policy_denies_everything():
    """The base Policy refuses every read and write."""
    from shiftpeer.sync import Policy
    assert not Policy().may_read("p", "db", None) and not Policy().may_write("p", "db", None)


@pytest.mark.allow_logged_errors
def test_forged_documents_are_refused_and_the_peer_dropped():
    """A peer pushing a document that fails validation gets an error, is disconnected, and nothing is stored."""
    srv = Served()
    pair = srv.client()
    db = fill(pair.client.factory.store, "mine", 4)
    db.put("evil", {"forged": True})
    before = srv.snapshot()
    pair.client.push("mine", "inbox", live=False)
    settle(pair.pump)
    assert closed_with(pair, "forged")
    inbox = srv.snapshot().get("inbox", {})
    assert "evil" not in inbox
    assert {k: v for k, v in srv.snapshot().items() if k != "inbox"} == before
    assert srv.still_serves()


@pytest.mark.allow_logged_errors
def test_unrequested_documents_are_refused():
    """Docs the puller did not ask for are a protocol violation and are not stored."""
    srv = Served()
    pair = srv.client()
    rep = pair.client.push("nothing-here", "x")  # unknown local db: fails locally, sends nothing
    assert isinstance(result_of(rep.done)[0].value, SyncError)
    before = srv.snapshot()
    raw(pair, frame({"t": "docs", "rid": 1, "seq": 1, "more": False, "docs": [
        {"id": "a", "rev": "1-00", "deleted": False, "body": {}, "sig": None, "history": ["1-00"]}]}))
    assert srv.snapshot() == before


@pytest.mark.allow_logged_errors
def test_forged_document_in_live_mode_is_refused():
    """A forged document arriving inline with live changes is refused, the peer dropped, nothing stored."""
    clock = Clock()
    src_store = MemoryStore()
    fill(src_store, "master", 3)
    sf = make_factory(clock, src_store)
    cf = make_factory(clock, MemoryStore(), validator=reject_marked)
    pair = connect_pair(cf, sf, clock)
    settle(pair.pump)
    rep = pair.client.pull("master", "feed", live=True)
    settle(pair.pump)
    assert rep.is_caught_up
    src_store.database("master").put("live-ok", {"x": 1})
    settle(pair.pump)
    feed = cf.store.database("feed")
    assert feed.get("live-ok") is not None and sf.counters["docs_out"] == 4
    src_store.database("master").put("live-evil", {"forged": True})
    settle(pair.pump)
    assert feed.get("live-evil") is None
    assert pair.client.close_reason["code"] == "forged" and pair.server.peer_error["code"] == "forged"


@pytest.mark.allow_logged_errors
def test_a_pull_riding_on_a_push_reads_only_the_pushed_database():
    """The receiver of a push pulls it back under the push's id, past the read policy. A receiver that names
    another database under that id, or an id that is no push of ours, is refused (forbidden) and gets none of
    it; the real push goes on."""
    clock = Clock()
    mine = MemoryStore()
    fill(mine, "mine", 3)
    fill(mine, "secret", 2, prefix="s")
    cf = make_factory(clock, mine, StaticPolicy({}))                       # the peer may read nothing here
    sf = make_factory(clock, MemoryStore(), StaticPolicy({"*": {"write": ["inbox"]}}))
    pair = connect_pair(cf, sf, clock)
    settle(pair.pump)
    push = pair.client.push("mine", "inbox", live=True)
    settle(pair.pump)
    assert push.is_caught_up and sf.store.database("inbox").doc_count() == 3
    rid = next(iter(pair.client.replications.pushes))
    errors = []
    pair.server.replications.on_error = errors.append
    for n, (db, push_id) in enumerate([("secret", rid), ("mine", rid + 100), ("secret", rid + 100)]):
        pair.server_tls.write(frame({"t": "pull", "rid": 90 + n, "db": db, "since": 0, "epoch": None,
                                     "live": False, "push": push_id}))
        settle(pair.pump)
    assert [(e["rid"], e["code"], e["msg"]) for e in errors] == [
        (90, "forbidden", "not pushing 'secret'"), (91, "forbidden", "not pushing 'mine'"),
        (92, "forbidden", "not pushing 'secret'")]
    assert [f.name for f in pair.client.replications.feeders.values()] == ["mine"] and cf.counters["refused"] == 3
    assert not sf.store.has_database("secret") and not pair.client._closing
    mine.database("mine").put("later", {"n": 9, "author": "x"})
    settle(pair.pump)
    assert sf.store.database("inbox").get("later") is not None and sf.store.database("inbox").get("s0") is None


@pytest.mark.allow_logged_errors
def test_a_peer_without_a_verified_certificate_is_refused_before_anything_is_served():
    """No TLS peer certificate, no peer id: the hello is answered with an unauthenticated error, the
    connection closes, nothing is served, and other peers are unaffected."""
    srv = Served()
    pair = connect_pair(make_factory(srv.clock, MemoryStore()), srv.sf, srv.clock, tls=False)
    settle(pair.pump)
    assert pair.server.close_reason["code"] == "unauthenticated" and pair.server._closing
    assert pair.server.peer_id is None and srv.sf.counters["docs_out"] == 0
    assert srv.still_serves()


@pytest.mark.allow_logged_errors
def test_a_replication_id_used_twice_drops_the_peer():
    """A second pull under a replication id already serving one is a protocol violation: the peer is
    dropped with a duplicate error and nothing more is served to it."""
    srv = Served()
    pair = srv.client()
    pull = {"t": "pull", "rid": 7, "db": "master", "since": 0, "epoch": None, "live": True}
    raw(pair, frame(pull))
    assert not pair.client._closing and 7 in pair.server.replications.feeders
    raw(pair, frame(pull))
    assert closed_with(pair, "duplicate") and "replication id 7 is already in use" in pair.client.peer_error["msg"]
    assert srv.still_serves()


@pytest.mark.allow_logged_errors
def test_frames_behind_a_violation_in_the_same_read_are_not_handled():
    """A valid pull right behind a malformed frame, in one read: the connection closes on the first, and
    the second is never handled (messages after the handshake skip the state machine only in ready)."""
    srv = Served()
    pair = srv.client()
    assert pair.server._in_ready
    before = pair.server.frames_in
    raw(pair, frame({"t": "gimme"}) + frame({"t": "pull", "rid": 1, "db": "master", "since": 0, "epoch": None,
                                             "live": False}))
    assert closed_with(pair, "unknown_type")
    assert pair.server.frames_in == before + 1 and not pair.server._in_ready

