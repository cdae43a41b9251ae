"""Test helpers: an in-memory store with the Store contract's replication subset, throwaway TLS.

``MemoryStore`` is synchronous (its "writer thread" runs inline), so protocol tests over
``twisted.test.iosim`` with a ``Clock`` run with no threads. ``make_tls`` makes a self-signed
certificate per node and context factories that require a client certificate on both sides; the
peer id is the certificate's common name (``peer_id_of``).
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from typing import Any, Callable, Iterator, NamedTuple, Optional

import cbor2
from twisted.internet.defer import Deferred, maybeDeferred, succeed

from shiftpeer.sync import messages


class Change(NamedTuple):
    seq: int
    id: str
    revs: list
    deleted: bool


class Doc(NamedTuple):
    id: str
    rev: str
    deleted: bool
    body: dict
    sig: Optional[bytes]
    conflicts: list
    vis: Any
    seq: int


def compute_rev(parent: Optional[str], deleted: bool, body: dict) -> str:
    n = int(parent.split("-", 1)[0]) + 1 if parent else 1
    h = hashlib.blake2b(cbor2.dumps([parent or "", deleted, body], canonical=True), digest_size=16).hexdigest()
    return f"{n}-{h}"


def _key(rev: str, deleted: bool) -> tuple:
    n, h = rev.split("-", 1)
    return (not deleted, int(n), h)


class MemoryDatabase:
    def __init__(self, store: "MemoryStore", name: str) -> None:
        self._store = store
        self.name = name
        self.epoch = uuid.uuid4().hex
        self._seq = 0
        self._parents: dict[str, dict[str, Optional[str]]] = {}   # id -> rev -> parent
        self._leaves: dict[str, dict[str, dict]] = {}             # id -> leaf rev -> {deleted, body, sig}
        self._docseq: dict[str, int] = {}
        self._checkpoints: dict[tuple, dict] = {}

    def update_seq(self) -> int:
        return self._seq

    def doc_count(self) -> int:
        return sum(1 for i in self._leaves if not self.get(i).deleted)

    def _bump(self, docid: str) -> None:
        self._seq += 1
        self._docseq[docid] = self._seq
        self._store._notify(self.name, self._seq)

    def _winner(self, docid: str) -> tuple[str, dict]:
        leaves = self._leaves[docid]
        rev = max(leaves, key=lambda r: _key(r, leaves[r]["deleted"]))
        return rev, leaves[rev]

    def get(self, docid: str, rev: Optional[str] = None) -> Optional[Doc]:
        if docid not in self._leaves:
            return None
        wrev, leaf = self._winner(docid)
        if rev is not None and rev != wrev:
            if rev not in self._leaves[docid]:
                return None
            wrev, leaf = rev, self._leaves[docid][rev]
        conflicts = sorted(r for r, v in self._leaves[docid].items() if r != wrev and not v["deleted"])
        return Doc(docid, wrev, leaf["deleted"], leaf["body"], leaf["sig"], conflicts, None, self._docseq[docid])

    def put(self, docid: str, body: dict, *, parent: Optional[str] = None, deleted: bool = False,
            sign: Optional[Callable] = None, vis: Any = None, txn: Any = None) -> str:
        current = self._winner(docid)[0] if docid in self._leaves else None
        if parent != current:
            raise ValueError(f"conflict: {parent} is not the current revision {current}")
        rev = compute_rev(parent, deleted, body)
        sig = sign(docid, rev, body, deleted) if sign else None
        self._parents.setdefault(docid, {})[rev] = parent
        leaves = self._leaves.setdefault(docid, {})
        leaves.pop(parent, None)
        leaves[rev] = {"deleted": deleted, "body": body, "sig": sig}
        self._bump(docid)
        return rev

    def bulk_replicated(self, docs: list, *, vis: Any = None, txn: Any = None) -> list:
        written = []
        for d in docs:
            docid, hist = d["id"], d["history"]
            parents = self._parents.setdefault(docid, {})
            if d["rev"] in parents:
                continue
            for i, rev in enumerate(hist):
                if rev not in parents:
                    parents[rev] = hist[i + 1] if i + 1 < len(hist) else None
            leaves = self._leaves.setdefault(docid, {})
            for anc in hist[1:]:
                leaves.pop(anc, None)
            leaves[d["rev"]] = {"deleted": d["deleted"], "body": d["body"], "sig": d["sig"]}
            written.append(docid)
            self._bump(docid)
        return written

    def bulk_replicated_async(self, docs: list, *, vis: Any = None) -> Deferred:
        return maybeDeferred(self.bulk_replicated, docs)

    def changes(self, since: int = 0, limit: Optional[int] = None) -> list:
        out = []
        for docid, seq in sorted(self._docseq.items(), key=lambda kv: kv[1]):
            if seq > since:
                out.append(Change(seq, docid, sorted(self._leaves[docid]), self._winner(docid)[1]["deleted"]))
                if limit and len(out) >= limit:
                    break
        return out

    def changes_with_docs(self, since: int = 0, limit: Optional[int] = None, *,
                          docs_up_to: Optional[int] = None) -> tuple:
        chs = self.changes(since, limit)
        if docs_up_to is not None and len(chs) > docs_up_to:
            return chs, None
        return chs, self.get_repl_docs([(c.id, list(c.revs)) for c in chs])

    def revs_diff(self, wanted: dict) -> dict:
        out = {}
        for docid, revs in wanted.items():
            known = self._parents.get(docid, {})
            missing = [r for r in revs if r not in known]
            if missing:
                out[docid] = missing
        return out

    def get_repl_docs(self, wanted: list, *, raw_bodies: bool = False) -> list:
        """Bodies always come back decoded here; encode() takes both forms."""
        out = []
        for docid, revs in wanted:
            leaves = self._leaves.get(docid, {})
            for rev in revs:
                if rev not in leaves:
                    continue
                hist, r = [], rev
                while r is not None:
                    hist.append(r)
                    r = self._parents[docid][r]
                leaf = leaves[rev]
                out.append({"id": docid, "rev": rev, "deleted": leaf["deleted"], "body": leaf["body"],
                            "sig": leaf["sig"], "history": hist})
        return out

    def get_checkpoint(self, peer_id: str, remote_db: str) -> Optional[dict]:
        return self._checkpoints.get((peer_id, remote_db))

    def set_checkpoint(self, peer_id: str, remote_db: str, value: dict, txn: Any = None) -> None:
        self._checkpoints[(peer_id, remote_db)] = dict(value)

    def snapshot(self) -> dict:
        """Every document's winner and conflicts, for comparing two stores."""
        return {i: (self.get(i).rev, self.get(i).deleted, tuple(sorted(self._leaves[i]))) for i in self._leaves}


class MemoryStore:
    """Enough of ``shiftpeer.store.Store`` for replication: databases, changes, checkpoints, subscribe."""

    def __init__(self) -> None:
        self._dbs: dict[str, MemoryDatabase] = {}
        self._subs: list[Callable[[str, int], None]] = []
        self._in_txn = 0
        self._pending: dict[str, int] = {}
        self.writes = 0

    def create_database(self, name: str) -> MemoryDatabase:
        if name not in self._dbs:
            self._dbs[name] = MemoryDatabase(self, name)
        return self._dbs[name]

    def database(self, name: str) -> MemoryDatabase:
        if name not in self._dbs:
            raise KeyError(name)
        return self._dbs[name]

    def has_database(self, name: str) -> bool:
        return name in self._dbs

    def delete_database(self, name: str) -> None:
        self._dbs.pop(name, None)

    def list_databases(self, prefix: str = "") -> list:
        return sorted(n for n in self._dbs if n.startswith(prefix))

    def subscribe(self, callback: Callable[[str, int], None]) -> Callable[[], None]:
        self._subs.append(callback)
        return lambda: self._subs.remove(callback) if callback in self._subs else None

    def _notify(self, name: str, seq: int) -> None:
        if self._in_txn:
            self._pending[name] = seq
            return
        for cb in list(self._subs):
            cb(name, seq)

    @contextlib.contextmanager
    def write_txn(self) -> Iterator[None]:
        self._in_txn += 1
        try:
            yield None
        finally:
            self._in_txn -= 1
            self.writes += 1
            if not self._in_txn:
                pending, self._pending = self._pending, {}
                for name, seq in pending.items():
                    self._notify(name, seq)

    def read_txn(self) -> Any:
        """Store.read_txn: nothing to share here (every read sees the dicts as they are)."""
        return contextlib.nullcontext()

    def run_in_writer(self, fn: Callable, *args: Any) -> Deferred:
        return maybeDeferred(fn, *args)

    def close(self) -> None:
        pass


def accept_all(docs: list) -> Deferred:
    """A validator that accepts everything (tests that are not about signatures)."""
    return succeed([True] * len(docs))


def reject_marked(docs: list) -> Deferred:
    """A validator that refuses documents whose body has ``"forged": True``."""
    return succeed([not d["body"].get("forged") for d in docs])


class RecordingConnection:
    """What a ReplicationManager needs from its connection, recording every message it sends as a dict
    (``{"t": type, **fields}``; frames written whole are decoded), for protocol tests without a transport.
    `features` are the optional messages the peer named in its hello (``SyncProtocol.peer_features``)."""

    def __init__(self, peer_id: str = "peer", features: tuple[str, ...] = ("refused",)) -> None:
        self.peer_id = peer_id
        self.peer_features = frozenset(features)
        self.paused = False
        self.reading_paused = False
        self.sent: list[dict] = []
        #: times a live feeder asked for its frames to go to the kernel at once (SyncProtocol.send_now)
        self.sends_now = 0
        self.sends_now_queued = 0   # of them, asked to send what the frames being handled wrote too

    def send(self, t: str, **fields: Any) -> None:
        self.sent.append({"t": t, **fields})

    def encode(self, t: str, **fields: Any) -> bytes:
        return messages.encode(t, **fields)

    def write_frame(self, frame: bytes, lane: Any = None) -> None:
        self.sent.append(messages.decode(frame[4:]))

    def drop_lane(self, lane: Any) -> None:
        pass

    def send_now(self, queued: bool = False) -> None:
        self.sends_now += 1
        self.sends_now_queued += int(queued)

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def violation(self, code: str, text: str, db: Optional[str] = None) -> None:
        self.sent.append({"t": "violation", "code": code})


# ---------------------------------------------------------------- throwaway TLS

class TestTLS(NamedTuple):
    name: str
    server: Any      # IOpenSSLServerConnectionCreator
    client: Any      # IOpenSSLClientConnectionCreator


def make_tls(name: str) -> TestTLS:
    """A self-signed certificate named ``name``; both sides require and accept any peer certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from OpenSSL import SSL
    from twisted.internet import ssl

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))

    def ctx() -> Any:
        c = SSL.Context(SSL.TLS_METHOD)
        c.set_min_proto_version(SSL.TLS1_2_VERSION)
        c.use_privatekey(key)
        c.use_certificate(cert)
        c.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *a: True)
        return c

    sctx, cctx = ctx(), ctx()

    class Server:
        def serverConnectionForTLS(self, protocol: Any) -> Any:
            return SSL.Connection(sctx, None)

    class Client:
        def clientConnectionForTLS(self, protocol: Any) -> Any:
            conn = SSL.Connection(cctx, None)
            conn.set_connect_state()
            return conn

    from zope.interface import implementer
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
    implementer(IOpenSSLServerConnectionCreator)(Server)
    implementer(IOpenSSLClientConnectionCreator)(Client)
    del ssl
    return TestTLS(name, Server(), Client())


def peer_id_of(transport: Any) -> Optional[str]:
    """The common name of the peer's certificate (the test TLS identity)."""
    cert = transport.getPeerCertificate()
    if cert is None:
        return None
    from cryptography.x509.oid import NameOID
    return cert.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


# ---------------------------------------------------------------- in-memory connected pairs

class Pair(NamedTuple):
    client: Any       # the client's SyncProtocol (inner protocol, kept even after TLS drops it)
    server: Any
    pump: Any         # iosim.IOPump
    client_tls: Any   # the TLSMemoryBIOProtocol wrappers (for raw byte injection / transport access)
    server_tls: Any


def connect_pair(client_factory: Any, server_factory: Any, clock: Any, *, client_name: str = "client",
                 server_name: str = "server", tls: bool = True) -> Pair:
    """Connect two SyncFactories through iosim, over a real in-memory TLS handshake."""
    from twisted.internet.address import IPv4Address
    from twisted.test import iosim

    from shiftpeer.identity.tls import TLSFactory

    from twisted.internet.protocol import Factory

    addr = IPv4Address("TCP", "127.0.0.1", 0)
    inner: dict = {}

    class Recording(Factory):
        """Keeps the inner protocol: the TLS wrapper drops it on disconnect."""

        def __init__(self, wrapped: Any, side: str) -> None:
            self.wrapped, self.side = wrapped, side

        def buildProtocol(self, a: Any) -> Any:
            build = self.wrapped.buildProtocol   # the serving side: connection caps apply
            if self.side == "c":
                build = getattr(self.wrapped, "build_outgoing", build)
            inner[self.side] = p = build(a)
            return p

    cwrap, swrap = Recording(client_factory, "c"), Recording(server_factory, "s")
    if tls:
        ctls, stls = make_tls(client_name), make_tls(server_name)
        cf: Any = TLSFactory(ctls.client, True, cwrap, clock=clock)
        sf: Any = TLSFactory(stls.server, False, swrap, clock=clock)
    else:
        cf, sf = cwrap, swrap
    c, s, pump = iosim.connectedServerAndClient(lambda: sf.buildProtocol(addr), lambda: cf.buildProtocol(addr),
                                                clock=clock)
    return Pair(inner["c"], inner["s"], pump, c, s)
