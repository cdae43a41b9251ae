"""A node process for the kill -9 crash loop: a hub, a user that keeps writing, or a full peer.

Run as ``python tests/rel_node.py ROLE DIR [--port P] [--hub-port P]`` (PYTHONPATH = the checkout).
``DIR/key`` holds the node key (made by the parent so identities survive restarts), ``DIR/store`` the
LMDB store, and the node appends one line per event to ``DIR/events`` with a single ``os.write``, so
what a line says happened really happened, even if the process is killed right after:

    ready                     listening / writing / connecting (a hub also serves ``small`` and ``ping``)
    commit BATCH V N          the user committed batch BATCH at version V: N docs, one transaction
    resume DB SINCE           a replication (re)started from checkpoint SINCE
    state JSON                {db: [update_seq, doc_count, digest]} whenever a database changed

Shapes follow the roles: the user pushes ``user/public`` into the hub's ``master`` (as publishing
does); the full peer pulls the hub's ``master`` into its own ``master`` (as the firehose does).
SIGUSR1 stops the user's writes (so the mesh can converge); SIGTERM stops the node cleanly.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import signal
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.task import LoopingCall

from shiftpeer.identity import NodeKey
from shiftpeer.identity.signing import sign_doc
from shiftpeer.identity.tls import client_creator, server_creator
from shiftpeer.store import Store
from shiftpeer.sync import AllowAll, SyncFactory
from shiftpeer.sync.client import SyncPeerService, tls_client_endpoint, tls_server_endpoint

#: The databases each role reports in its state lines.
WATCHED = {"hub": ("master",), "user": ("user/public",), "peer": ("master",)}


def digest(db: Any) -> str:
    """A short hash of every document's winning revision and deletion flag: equal digests, equal databases."""
    h = hashlib.blake2b(digest_size=8)
    for ch in sorted(db.changes(0), key=lambda c: c.id):
        h.update(f"{ch.id}\0{ch.revs[0]}\0{int(ch.deleted)}\n".encode())
    return h.hexdigest()


class RelNode:
    """One role's worth of behaviour on a real store, a real key and real TLS on 127.0.0.1."""

    def __init__(self, role: str, directory: str, port: int, hub_port: int, batch: int, interval: float,
                 caps: dict | None = None) -> None:
        self.role = role
        self.dir = directory
        self.key = NodeKey.load(os.path.join(directory, "key"))
        self.store = Store(os.path.join(directory, "store"), reactor=reactor)
        self.factory = SyncFactory(self.store, self.key, AllowAll(), reactor=reactor, roles=(role,), **(caps or {}))
        self.port, self.hub_port = port, hub_port
        self.batch, self.interval = batch, interval
        self.events = os.open(os.path.join(directory, "events"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.rng = random.Random()
        self.writer: LoopingCall | None = None
        self.batches: list[tuple[str, int]] = []     # (batch id, version) this incarnation knows of
        self._last_state: dict = {}
        for name in WATCHED[role]:
            self.store.create_database(name)

    def emit(self, line: str) -> None:
        os.write(self.events, (line + "\n").encode())

    # -- roles ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self.role == "hub":
            self.serve_small()
            self.factory.on_pushed.append(lambda conn, handle: self.emit(f"resume {handle.local_db} {handle.seq}"))
            ep = tls_server_endpoint(TCP4ServerEndpoint(reactor, self.port, interface="127.0.0.1"),
                                     server_creator(self.key))
            ep.listen(self.factory).addCallback(lambda _: self.emit("ready"))
        else:
            hub_id = NodeKey.load(os.path.join(os.path.dirname(self.dir), "hub", "key")).account_id
            ep = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", self.hub_port),
                                     client_creator(self.key, expected_peer_id=hub_id))
            svc = SyncPeerService(reactor, ep, self.factory, on_connected=self.connected,
                                  retry_policy=lambda attempt: 0.05)
            svc.startService()
            if self.role == "user":
                self.load_batches()
                self.writer = LoopingCall(self.write_batch)
                self.writer.start(self.interval, now=True)
            self.emit("ready")
        LoopingCall(self.report).start(0.1, now=True)

    def serve_small(self) -> None:
        """A ten-document database and a ``ping`` RPC: the normal client's requests in the idle-load test."""
        self.factory.rpc_handlers["ping"] = lambda conn, args: {"pong": True}
        if not self.store.has_database("small"):
            db = self.store.create_database("small")
            sign = functools.partial(sign_doc, self.key)
            with self.store.write_txn() as txn:
                for i in range(10):
                    db.put(f"s{i}", {"author": self.key.account_id, "n": i, "text": "z" * 200}, sign=sign, txn=txn)

    def connected(self, conn: Any) -> None:
        if self.role == "user":
            conn.push("user/public", "master", live=True)
        else:
            rep = conn.pull("master", "master", live=True)
            self.emit(f"resume master {rep.seq}")

    # -- the user's writes ---------------------------------------------------------------------
    def load_batches(self) -> None:
        """Learn the batches already stored, so later edits touch documents this node really has."""
        seen: dict[str, int] = {}
        for doc in self.store.database("user/public").docs_since(0):
            if not doc.deleted:
                seen[doc.body["batch"]] = doc.body["v"]
        self.batches = list(seen.items())

    def write_batch(self) -> None:
        """One transaction: a new batch of documents, or a new version of every document of an old one."""
        db = self.store.database("user/public")
        sign = functools.partial(sign_doc, self.key)
        author = self.key.account_id
        if self.batches and self.rng.random() < 0.3:
            i = self.rng.randrange(len(self.batches))
            bid, v = self.batches[i]
            with self.store.write_txn() as txn:
                for j in range(self.batch):
                    docid = f"{bid}-{j}"
                    body = {"author": author, "batch": bid, "v": v + 1, "n": self.batch, "text": "y" * 64}
                    db.put(docid, body, parent=db.get(docid).rev, sign=sign, txn=txn)
            self.batches[i] = (bid, v + 1)
            self.emit(f"commit {bid} {v + 1} {self.batch}")
            return
        bid = os.urandom(6).hex()
        with self.store.write_txn() as txn:
            for j in range(self.batch):
                body = {"author": author, "batch": bid, "v": 0, "n": self.batch, "text": "x" * 64}
                db.put(f"{bid}-{j}", body, sign=sign, txn=txn)
        self.batches.append((bid, 0))
        self.emit(f"commit {bid} 0 {self.batch}")

    def stop_writing(self) -> None:
        if self.writer is not None and self.writer.running:
            self.writer.stop()
        self.emit("stopped-writing")

    # -- reporting -----------------------------------------------------------------------------
    def report(self) -> None:
        state = {}
        for name in WATCHED[self.role]:
            db = self.store.database(name)
            seq = db.update_seq()
            prev = self._last_state.get(name)
            state[name] = prev if prev and prev[0] == seq else [seq, db.doc_count(), digest(db)]
        if state != self._last_state:
            self._last_state = state
            self.emit("state " + json.dumps(state))

    def shutdown(self) -> None:
        if self.writer is not None and self.writer.running:
            self.writer.stop()
        reactor.addSystemEventTrigger("after", "shutdown", self.store.close)
        reactor.stop()


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("role", choices=("hub", "user", "peer"))
    ap.add_argument("dir")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--hub-port", type=int, default=0)
    ap.add_argument("--batch", type=int, default=5, help="documents per write transaction (user)")
    ap.add_argument("--interval", type=float, default=0.01, help="seconds between write transactions (user)")
    ap.add_argument("--max-connections-per-peer", type=int, help="the hub's cap per identity (default 8)")
    ap.add_argument("--max-connections-per-address", type=int, help="the hub's cap per address (default 64)")
    args = ap.parse_args(argv)
    caps = {name: getattr(args, name) for name in ("max_connections_per_peer", "max_connections_per_address")
            if getattr(args, name) is not None}
    node = RelNode(args.role, args.dir, args.port, args.hub_port, args.batch, args.interval, caps)
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(node.stop_writing))
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(node.shutdown))
    reactor.callWhenRunning(node.start)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main(sys.argv[1:])
