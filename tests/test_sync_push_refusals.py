"""A pusher learns which of its revisions the receiving side's rules refused (in-memory TLS, shared Clock):
the refused revisions come back in `refused` frames before the ack, the rest is stored and acknowledged as
before, and a malformed report closes the connection and changes nothing."""

from __future__ import annotations

import contextlib
import struct

import cbor2
import pytest
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from shiftpeer.roles.validation import filtering_store_batch
from shiftpeer.sync.messages import FEATURES
from shiftpeer.sync.refusedrevs import KEEP_REFUSED, MAX_CODE, MAX_REASON, MAX_REFUSED, Reason, Refused, RefusedRev

from test_sync_iosim import Env, fill, result_of, settle

WHY = "the signed audience does not name master"


def refuse_marked(db, peer_id, doc):
    """The receiving side's rules of these tests: a body marked ``refuse`` is left out."""
    return Reason("audience", WHY) if doc["body"].get("refuse") else None


def rules_env(**kw) -> Env:
    """Client pushes (and serves), server stores what ``refuse_marked`` accepts."""
    return Env(store_batch=filtering_store_batch(refuse_marked), **kw)


def mark(db, docid):
    """A new revision of ``docid`` the receiver's rules refuse; returns it."""
    doc = db.get(docid)
    return db.put(docid, {**doc.body, "refuse": True}, parent=doc.rev)


@contextlib.contextmanager
def warnings():
    """The warning lines logged inside the block."""
    lines: list[str] = []

    def observer(event):
        if event.get("log_level") == LogLevel.warn:
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observer)


def test_push_records_the_one_refused_revision_and_stores_the_rest():
    """One pushed revision the receiver's rules refuse: the pusher's Replication holds exactly it with its
    reason, a warning names the peer, databases, document, revision and reason, the other documents are
    stored, caught_up fires at the source's head and the connection stays up."""
    env = rules_env(window=2, batch_changes=3)   # several batches: the refusal rides in one of them
    src = fill(env.cstore, "user/public", 9)
    bad_rev = mark(src, "d4")
    with warnings() as lines:
        rep = env.c.push("user/public", "master", live=False)
        caught = result_of(rep.caught_up)
        settle(env.pump)
    assert caught == [src.update_seq()]
    assert rep.refused == [RefusedRev("d4", bad_rev, "audience", WHY)] and rep.refused_count == 1
    dst = env.sstore.database("master")
    assert sorted(dst.snapshot()) == sorted(f"d{i}" for i in range(9) if i != 4)
    assert dst.get_checkpoint("client", "user/public")["seq"] == src.update_seq()
    assert env.cf.counters["revs_refused_by_peer"] == 1 and env.sf.counters["revs_refused"] == 1
    assert not env.c._closing and not env.s._closing
    mine = [line for line in lines if line.startswith("server refused")]
    assert mine == [f"server refused d4 {bad_rev} pushed from user/public into its master: audience: {WHY}"]


def test_live_push_reports_a_refused_change_as_it_happens():
    """A live push that is already caught up records a revision refused later, inline documents included;
    the next accepted change is still stored."""
    env = rules_env()
    src = fill(env.cstore, "user/public", 2)
    rep = env.c.push("user/public", "master", live=True)
    settle(env.pump)
    assert rep.is_caught_up and rep.refused == []
    bad_rev = src.put("late", {"refuse": True})
    src.put("ok", {"n": 1})
    settle(env.pump)
    assert rep.refused == [RefusedRev("late", bad_rev, "audience", WHY)]
    assert env.sstore.database("master").get("ok") is not None
    assert env.sstore.database("master").get("late") is None
    assert not rep.finished


def test_a_plain_reason_and_a_pull_are_reported_too():
    """A rule that gives a plain string is reported with the code "refused"; a feeder serving a pull (no
    push handle) logs and counts the refusal, and the puller's own Replication records it."""
    env = Env(store_batch=filtering_store_batch(lambda db, peer, doc: "no" if doc["body"]["n"] == 1 else None))
    src = fill(env.sstore, "master", 3)
    rep = env.c.pull("master", "feed", live=False)
    settle(env.pump)
    rev = src.get("d1").rev
    assert rep.is_caught_up and rep.refused == [RefusedRev("d1", rev, "refused", "no")]
    assert env.sf.counters["revs_refused_by_peer"] == 1 and env.cf.counters["revs_refused"] == 1
    assert sorted(env.cstore.database("feed").snapshot()) == ["d0", "d2"]


def test_many_refusals_go_in_bounded_frames_and_the_record_is_capped():
    """More refusals than one frame carries arrive in several frames before the ack; the Replication keeps the
    latest KEEP_REFUSED and counts them all."""
    n = MAX_REFUSED + 50
    env = rules_env(batch_changes=500)
    db = env.cstore.create_database("user/public")
    for i in range(n):
        db.put(f"r{i:03}", {"refuse": True})
    db.put("kept", {"n": 0})
    frames = []
    send = env.s.send
    env.s.send = lambda t, **f: (frames.append(f) if t == "refused" else None, send(t, **f))[1]
    rep = env.c.push("user/public", "master", live=False)
    caught = result_of(rep.caught_up)
    settle(env.pump)
    assert caught == [db.update_seq()]
    assert rep.refused_count == n and len(rep.refused) == KEEP_REFUSED
    assert [r.docid for r in rep.refused] == [f"r{i:03}" for i in range(n - KEEP_REFUSED, n)]
    assert frames and all(len(f["revs"]) <= MAX_REFUSED for f in frames) and sum(len(f["revs"]) for f in frames) == n
    assert sorted(env.sstore.database("master").snapshot()) == ["kept"]


def raw_frame(obj) -> bytes:
    payload = cbor2.dumps(obj)
    return struct.pack(">I", len(payload)) + payload


def pushed_and_caught_up():
    env = rules_env()
    src = fill(env.cstore, "user/public", 3)
    mark(src, "d1")
    rep = env.c.push("user/public", "master", live=True)
    settle(env.pump)
    assert rep.refused_count == 1 and not env.c._closing
    rid = next(iter(env.s.replications.pullers))
    return env, rep, rid


GOOD = ["d0", "1-ab", "audience", "why"]
MALFORMED = [
    ("three fields", {"revs": [["d0", "1-ab", "audience"]]}),
    ("empty", {"revs": []}),
    ("too many", {"revs": [GOOD] * (MAX_REFUSED + 1)}),
    ("long code", {"revs": [["d0", "1-ab", "c" * (MAX_CODE + 1), "why"]]}),
    ("long reason", {"revs": [["d0", "1-ab", "audience", "w" * (MAX_REASON + 1)]]}),
    ("not text", {"revs": [["d0", "1-ab", "audience", 5]]}),
    ("extra field", {"revs": [GOOD], "more": True}),
    ("no seq", {"seq": None, "revs": [GOOD]}),
]


@pytest.mark.parametrize("fields", [f for _, f in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_a_malformed_refused_report_closes_the_connection_and_changes_nothing(fields):
    """A `refused` frame of the wrong shape is a bad_message: the pusher closes the connection, records
    nothing and counts the violation."""
    env, rep, rid = pushed_and_caught_up()
    before = (list(rep.refused), env.cstore.database("user/public").snapshot())
    msg = {"t": "refused", "rid": rid, "seq": 1, **fields}
    msg = {k: v for k, v in msg.items() if v is not None}
    env.pair.server_tls.write(raw_frame(msg))
    settle(env.pump)
    assert env.c._closing and env.s.peer_error is not None and env.s.peer_error["code"] == "bad_message"
    assert env.cf.counters["violation.bad_message"] == 1
    assert (list(rep.refused), env.cstore.database("user/public").snapshot()) == before
    assert rep.refused_count == 1 and env.cf.counters["revs_refused_by_peer"] == 1


def test_a_refused_report_for_no_outstanding_batch_is_unexpected():
    """A well-formed report naming a batch the pusher is not waiting for closes the connection (unexpected)
    and is not recorded."""
    env, rep, rid = pushed_and_caught_up()
    env.pair.server_tls.write(raw_frame({"t": "refused", "rid": rid, "seq": 99, "revs": [GOOD]}))
    settle(env.pump)
    assert env.c._closing and env.s.peer_error["code"] == "unexpected"
    assert rep.refused_count == 1 and [r.docid for r in rep.refused] == ["d1"]


def test_a_peer_that_does_not_name_the_feature_is_never_sent_a_refused_frame():
    """A node built before the `refused` message closes the connection on one (and, as a gossip neighbour,
    bans the sender). Its hello names no "+refused", so the puller keeps its refusals to itself: its own
    Replication records them, the feeder gets only the ack, and the connection stays up."""
    env = Env(store_batch=filtering_store_batch(lambda db, peer, doc: "no" if doc["body"]["n"] == 1 else None))
    assert env.c.peer_features == frozenset(FEATURES) and "refused" in FEATURES and env.c.peer_roles == ("user",)
    env.sf.features = ()    # the serving side stands for an older build
    env.connect()
    assert env.c.peer_features == frozenset() and env.s.peer_features == frozenset(FEATURES)
    src = fill(env.sstore, "master", 3)
    rep = env.c.pull("master", "feed", live=False)
    settle(env.pump)
    assert rep.is_caught_up and rep.refused == [RefusedRev("d1", src.get("d1").rev, "refused", "no")]
    assert env.s.bytes_in_by_type["refused"] == 0 and env.sf.counters["revs_refused_by_peer"] == 0
    assert env.s.bytes_in_by_type["ack"] > 0
    assert sorted(env.cstore.database("feed").snapshot()) == ["d0", "d2"]
    assert not env.c._closing and not env.s._closing


def _refusing_validator(why: Refused, false_for: frozenset = frozenset()):
    """A validator answering, per document, `why` for an odd "n" (refused on its own), False for an "n" in
    `false_for` (a forgery), True for the rest."""
    from twisted.internet.defer import succeed

    def validate(docs):
        return succeed([False if d["body"]["n"] in false_for else why if d["body"]["n"] % 2 else True
                        for d in docs])

    return validate


@pytest.mark.parametrize("live", [False, True])
def test_documents_the_validator_refuses_on_their_own_are_told_and_the_rest_stored(live):
    """A validator's falsy ``Refused`` answer (a genuine signature on a revision that does not check) leaves
    that document out on its own, over several windowed batches (and live, where documents ride with their
    changes): the rest is stored and checkpointed, each refusal is counted and told to the pusher with its
    code, nothing is a violation, the push reaches caught_up and the connection stays up."""
    why = Refused("bad_revision", "its revision does not check")
    env = Env(svalidator=_refusing_validator(why), window=2, batch_changes=4)
    src = fill(env.cstore, "user/public", 0 if live else 10)
    rep = env.c.push("user/public", "inbox", live=live)
    settle(env.pump)
    if live:
        for i in range(10):
            src.put(f"d{i}", {"n": i, "author": "x"})
            settle(env.pump)
    assert rep.is_caught_up
    dst = env.sstore.database("inbox")
    assert sorted(dst.snapshot()) == [f"d{i}" for i in range(0, 10, 2)]
    assert dst.get_checkpoint("client", "user/public")["seq"] == src.update_seq()
    assert rep.refused == [RefusedRev(f"d{i}", src.get(f"d{i}").rev, "bad_revision", str(why)) for i in range(1, 10, 2)]
    assert env.sf.counters["bad_revision.sync"] == 5 and env.sf.counters["revs_refused"] == 5
    assert env.cf.counters["revs_refused_by_peer"] == 5
    assert not any(k.startswith("violation.") for k in env.sf.counters)
    assert not env.c._closing and not env.s._closing
    assert rep.finished is not live          # a one-shot push ends once caught up; a live one goes on


def test_a_forgery_beside_a_document_refused_on_its_own_still_closes_with_forged():
    """One False answer in the batch (a forgery) is what it always was: nothing from the batch stored,
    ``forged``, whatever else the batch holds."""
    env = Env(svalidator=_refusing_validator(Refused("bad_revision", "x"), frozenset({2})), batch_changes=10)
    fill(env.cstore, "user/public", 5)
    rep = env.c.push("user/public", "inbox", live=False)
    settle(env.pump)
    assert env.sf.counters["violation.forged"] == 1 and env.sf.counters["bad_revision.sync"] == 0
    assert not env.sstore.has_database("inbox") or env.sstore.database("inbox").snapshot() == {}
    assert rep.finished and not rep.is_caught_up
