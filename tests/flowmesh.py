"""A hub and users in one process over real TLS on 127.0.0.1, for the end-to-end flow tests.

Each party has its own LMDB store in tmp_path, its own Ed25519 key and its own SyncFactory; users
connect to the hub with mutual TLS pinned to the hub's key. ``eventually`` polls with a bounded
deadline instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory

from shiftpeer.identity import NodeKey
from shiftpeer.ids import bound_id
from shiftpeer.identity.tls import client_creator, server_creator
from shiftpeer.roles.hub import Hub
from shiftpeer.roles.user import LocalReplication
from shiftpeer.roles.userflows import UserFlows
from shiftpeer.shifts import Shifts, make_signer
from shiftpeer.store import Store, codec
from shiftpeer.store.revs import compute_rev
from shiftpeer.sync import Policy, SyncFactory
from shiftpeer.sync.client import outgoing
from tests.helpers_identity import signed_doc
from tests.helpers_node import eventually as _poll

DEADLINE = 10.0


async def eventually(check: Callable[[], Any], what: str = "condition", deadline: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something truthy, failing after ``deadline`` seconds."""
    try:
        return await _poll(check, timeout=deadline, interval=0.005)
    except AssertionError:
        raise AssertionError(f"timed out waiting for {what}") from None


def other_copy_revision(user: "UserParty", parent: dict, **changes: Any) -> dict:
    """The revision another copy of ``user``'s account (same key: a copied node directory, a restored backup)
    writes on ``parent`` (a repl doc): ``changes`` to its body and ``modified`` one second later, signed by the
    key, as a repl doc to hand in with ``bulk_replicated`` or the hub's ``deliver``."""
    body = codec.in_canonical_order({**parent["body"], **changes, "modified": parent["body"]["modified"] + 1})
    rev = compute_rev(parent["rev"], False, body)
    return {"id": parent["id"], "rev": rev, "deleted": False, "body": body, "history": [rev, *parent["history"]],
            "sig": make_signer(user.key)(parent["id"], rev, body, False)}


def other_copy_tombstone(user: "UserParty", parent: dict) -> dict:
    """The tombstone another copy of ``user``'s account writes on ``parent`` (a repl doc) by its ``shift delete``
    or ``shift resolve`` (or ``comment delete``): the body a delete writes (type, a comment's shift, author,
    ``modified`` one second later), signed by the key, as a repl doc to hand in with the hub's ``deliver``."""
    kept = {k: parent["body"][k] for k in ("type", "shift") if k in parent["body"]}
    body = codec.in_canonical_order({"type": "shift", **kept, "author": user.account,
                                     "modified": parent["body"]["modified"] + 1})
    rev = compute_rev(parent["rev"], True, body)
    return {"id": parent["id"], "rev": rev, "deleted": True, "body": body, "history": [rev, *parent["history"]],
            "sig": make_signer(user.key)(parent["id"], rev, body, True)}


def signed_comment(user: "UserParty", shift_id: str, aud: dict, text: str = "a comment") -> dict:
    """A first revision of a comment on ``shift_id`` that ``user`` signed for ``aud``, as a repl doc: what an older
    or a hostile node may write (``user``'s own node takes the shift's audience, less the groups it may not
    comment in); hand it in with ``bulk_replicated`` into ``user/public`` or the hub's ``deliver``."""
    now = time.time()
    return signed_doc(user.key, bound_id(user.account, "cm-"), {
        "type": "comment", "shift": shift_id, "text": text, "author": user.account, "created": now,
        "modified": now, "audience": aud})


class HubParty:
    """A hub: store, key, Hub role and a TLS listener on 127.0.0.1."""

    def __init__(self, path: Any, key: Any = None, **hub_args: Any) -> None:
        self.store = Store(str(path))
        self.key = key or NodeKey.generate()
        self.factory = SyncFactory(self.store, self.key, Policy(), reactor=reactor, roles=("hub",))
        self.hub = Hub(self.store, self.key, reactor, **hub_args)
        self.hub.install(self.factory)
        self.hub.start()
        self.port: Any = None

    async def listen(self) -> None:
        tls = TLSMemoryBIOFactory(server_creator(self.key), False, self.factory)
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(tls)

    def db(self, name: str) -> Any:
        return self.store.database(name)

    def serve_altered(self, docid: str, **changes: Any) -> None:
        """Play a compromised hub: a new revision of a shift in ``shared`` with ``changes`` to its body, its
        revision recomputed (so only the signature, the author's old one, can tell)."""
        shared = self.db("shared")
        real = shared.get_repl_docs([(docid, None)])[0]
        body = {**real["body"], **changes}
        rev = compute_rev(real["rev"], False, body)
        shared.bulk_replicated([{**real, "rev": rev, "body": body, "history": [rev, *real["history"]]}],
                               vis=list(shared.get(docid).vis))

    def ids(self, name: str) -> set[str]:
        """Ids of the live documents in one of the hub's databases."""
        if not self.store.has_database(name):
            return set()
        return {c.id for c in self.db(name).changes() if not c.deleted}


class UserParty:
    """A user node: store, key, local replications private/public -> feed, UserFlows, a hub connection."""

    def __init__(self, path: Any, name: str, *, full_peer: bool = False, roles: tuple = ("user",),
                 key: Any = None) -> None:
        self.name = name
        self.store = Store(str(path))
        self.key = key or NodeKey.generate()
        self.shifts = Shifts(self.store, self.key.account_id, make_signer(self.key), reactor)
        self.flows = UserFlows(self.store, self.key, reactor, user=name, full_peer=full_peer)
        self.local = [LocalReplication(self.store, s, "user/feed", reactor) for s in ("user/private", "user/public")]
        for r in self.local:
            r.start()
        self.factory = SyncFactory(self.store, self.key, Policy(), reactor=reactor, roles=roles)
        self.flows.install(self.factory)
        self.flows.start()
        self.proto: Any = None
        self.port: Any = None

    @property
    def account(self) -> str:
        return self.key.account_id

    async def connect(self, hub: HubParty) -> Any:
        creator = client_creator(self.key, expected_peer_id=hub.key.account_id)
        tls = TLSMemoryBIOFactory(creator, True, outgoing(self.factory))
        port = hub.port.getHost().port
        wrapper = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(tls)
        self.proto = wrapper.wrappedProtocol
        await self.proto.when_ready()
        self.flows.peer_connected(self.proto, "hub")
        return self.proto

    async def join_hub(self, hub: HubParty, register: bool = True) -> None:
        """Connect, register under our name, and wait until the hub replications run."""
        await self.connect(hub)
        await eventually(lambda: self.flows.link.account, f"{self.name}: whoami")
        if register:
            await self.flows.register(self.name)
            await self.flows.link.when_ready()

    async def listen(self) -> Any:
        """Accept sync connections too (for tests of what a user node serves)."""
        tls = TLSMemoryBIOFactory(server_creator(self.key), False, self.factory)
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(tls)
        return self.port

    def disconnect(self) -> None:
        if self.proto is not None and self.proto.transport is not None and self.proto in self.factory.connections:
            self.proto.transport.abortConnection()

    def feed(self) -> Any:
        return self.store.database("user/feed")

    def feed_ids(self, typ: str = "shift") -> set[str]:
        """Ids of live documents of one type in the user's feed."""
        docs = self.feed().docs_since(0)
        return {d.id for d in docs if not d.deleted and d.body.get("type", "shift") == typ}

    def new_shift(self, href: str = "https://example.org/page", summary: str = "s", space: str = "Notes") -> str:
        return self.shifts.create({"space": space, "href": href, "summary": summary})["id"]

    async def publish(self, shift_id: str, **kw: Any) -> dict:
        return await self.flows.publish(shift_id, **kw)

    def close(self) -> None:
        self.flows.stop()
        for r in self.local:
            r.stop()


class Stranger:
    """A bare peer with a key and a sync factory but no flows: unregistered, or claiming any roles."""

    def __init__(self, path: Any, roles: tuple = ("user",)) -> None:
        self.store = Store(str(path))
        self.key = NodeKey.generate()
        self.factory = SyncFactory(self.store, self.key, Policy(), reactor=reactor, roles=roles)
        self.store.create_database("user/public")
        self.proto: Any = None

    async def connect(self, port: Any, peer_id: str) -> Any:
        creator = client_creator(self.key, expected_peer_id=peer_id)
        tls = TLSMemoryBIOFactory(creator, True, outgoing(self.factory))
        wrapper = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(tls)
        self.proto = wrapper.wrappedProtocol
        await self.proto.when_ready()
        return self.proto

    def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.abortConnection()


class Mesh:
    """The hub plus users, torn down in one place."""

    def __init__(self, tmp_path: Any) -> None:
        self.tmp = tmp_path
        self.hub: HubParty | None = None
        self.users: dict[str, UserParty] = {}
        self.strangers: list[Stranger] = []

    async def start(self, users: tuple[str, ...] = ("alice", "bob", "carol"), **hub_args: Any) -> "Mesh":
        self.hub = HubParty(self.tmp / "hub", **hub_args)
        await self.hub.listen()
        for name in users:
            await self.add_user(name)
        return self

    async def add_user(self, name: str, *, register: bool = True, **kw: Any) -> UserParty:
        user = UserParty(self.tmp / name, name, **kw)
        self.users[name] = user
        await user.join_hub(self.hub, register=register)
        return user

    async def other_copy(self, name: str) -> UserParty:
        """A second node of ``name``'s account (same key), holding what ``name``'s node holds now in its own
        databases (as a copied node directory, or a backup restored elsewhere, would), connected to the hub
        (the account is registered already); torn down with the mesh as ``<name>-copy``."""
        user = self[name]
        copy = UserParty(self.tmp / f"{name}-copy", name, key=user.key)
        for db in ("user/private", "user/public"):
            src = user.store.database(db)
            docs = src.get_repl_docs([(c.id, None) for c in src.changes()])
            if docs:
                copy.store.database(db).bulk_replicated(docs)
        outbox = copy.store.database("user/outbox")
        for entry in user.store.database("user/outbox").docs_since(0):
            outbox.put(entry.id, entry.body)
        self.users[f"{name}-copy"] = copy
        await copy.join_hub(self.hub, register=False)
        await copy.flows.link.when_ready()
        return copy

    async def stranger(self, name: str, roles: tuple = ("user",), port: Any = None, peer_id: str = "") -> Stranger:
        """A bare peer connected to the hub (or to ``port`` of ``peer_id``)."""
        s = Stranger(self.tmp / name, roles)
        self.strangers.append(s)
        await s.connect(port or self.hub.port, peer_id or self.hub.key.account_id)
        return s

    async def club_shift(self, href: str, reader: str = "bob", owner: str = "alice") -> str:
        """``owner`` makes group club with ``reader`` at level read, publishes a shift to it and waits
        until the reader's feed has it; returns the shift's id."""
        await self[owner].flows.group("new", "club")
        await self[owner].flows.group("invite", "club", user=reader, level="read")
        await self[reader].flows.group("join", "club")
        sid = self[owner].new_shift(href)
        await self[owner].publish(sid, groups=["club"])
        await eventually(lambda: sid in self[reader].feed_ids(), f"{reader} has the club shift")
        return sid

    async def public_shifts(self, href: str, n: int = 2, owner: str = "alice") -> list[str]:
        """``owner`` makes ``n`` shifts on the page ``href`` and publishes them; returns their ids once the
        hub's shared holds them all."""
        made = [self[owner].new_shift(href) for _ in range(n)]
        for sid in made:
            await self[owner].publish(sid, public=True)
        await eventually(lambda: set(made) <= self.hub.ids("shared"), "shared")
        return made

    async def who_sees(self, docid: str) -> dict[str, set[str]]:
        """Which users hold ``docid`` live in their feed, and which the hub lets find it in shared."""
        feed, hub = set(), set()
        for name, user in self.users.items():
            doc = user.feed().get(docid)
            if doc is not None and not doc.deleted:
                feed.add(name)
            if (await user.flows.link.call("get", {"ids": [docid]}))["rows"]:
                hub.add(name)
        return {"feed": feed, "hub": hub}

    def __getitem__(self, name: str) -> UserParty:
        return self.users[name]

    async def restart_hub(self, **hub_args: Any) -> HubParty:
        """Stop the hub (its connections, its listener, its store) and start it again on the same store and key,
        listening on a new port; every user connects again (its registration is in the store)."""
        old = self.hub
        for user in self.users.values():
            user.disconnect()
        await old.port.stopListening()
        for conn in list(old.factory.connections):
            conn.transport.abortConnection()
        await eventually(lambda: not old.factory.connections, "the hub's connections to close")
        old.hub.stop()
        await task.deferLater(reactor, 0, lambda: None)
        old.store.close()
        self.hub = HubParty(self.tmp / "hub", key=old.key, **hub_args)
        await self.hub.listen()
        for user in self.users.values():
            await user.connect(self.hub)
            await eventually(lambda: user.flows.link.push is not None and not user.flows.link.push.finished,
                             f"{user.name} pushes to the hub again")
        return self.hub

    async def stop(self) -> None:
        for user in self.users.values():
            user.disconnect()
            if user.port is not None:
                await user.port.stopListening()
        for stranger in self.strangers:
            stranger.close()
        if self.hub is not None and self.hub.port is not None:
            await self.hub.port.stopListening()
        for conn in list(self.hub.factory.connections) if self.hub else []:
            conn.transport.abortConnection()
        await eventually(lambda: not (self.hub and self.hub.factory.connections), "connections to close")
        for user in self.users.values():
            user.close()
        if self.hub is not None:
            self.hub.hub.stop()
        await task.deferLater(reactor, 0, lambda: None)
        for user in self.users.values():
            user.store.close()
        if self.hub is not None:
            self.hub.store.close()
        for stranger in self.strangers:
            stranger.store.close()


@pytest.fixture
def mesh(tmp_path):
    """A Mesh in tmp_path (start it with ``await mesh.start()``), stopped after the test."""
    m = Mesh(tmp_path)
    yield m
    pytest_twisted.blockon(Deferred.fromCoroutine(m.stop()))
