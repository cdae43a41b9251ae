"""The hub remembers each account's name and each user's group memberships (roles/memo.py), so a page
query does not read them from the store every time; a membership change is seen by the very next
request: a removed member sees no group row one request later."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import task

import flowmesh
from flowmesh import eventually
from shiftpeer.identity import NodeKey
from shiftpeer.roles.hub import Hub
from shiftpeer.roles.memo import Memo
from shiftpeer.store import Store
from shiftpeer.store.database import Database

HREF = "https://memo.example.org/club-page"
mesh = flowmesh.mesh   # the fixture


def test_a_full_memo_forgets_the_oldest_value_first():
    memo = Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("a", 3)                       # a key already held takes no room
    assert (memo.get("a"), memo.get("b"), len(memo)) == (3, 2, 2)
    memo.put("c", 4)
    assert (memo.get("a"), memo.get("b"), memo.get("c")) == (None, 2, 4)
    memo.forget("b")
    assert memo.get("b") is None and len(memo) == 1
    with pytest.raises(ValueError):
        Memo(0)


@pytest.fixture
def hub(tmp_path):
    store = Store(str(tmp_path / "hub"))
    yield Hub(store, NodeKey.generate(), task.Clock())
    store.close()


class Caller:
    def __init__(self, key: NodeKey) -> None:
        self.peer_id = key.account_id


def count_reads(monkeypatch, names: tuple[str, ...]) -> list[str]:
    """The document ids read from the databases ``names`` from now on."""
    reads: list[str] = []
    real = Database.get

    def counting(self, docid, *args, **kw):
        if self.name in names:
            reads.append(docid)
        return real(self, docid, *args, **kw)

    monkeypatch.setattr(Database, "get", counting)
    return reads


def test_a_query_after_the_first_reads_neither_the_account_nor_the_memberships(hub, monkeypatch):
    caller = Caller(NodeKey.generate())
    hub.accounts.register("alice", caller.peer_id)
    hub.groups.create("club", "alice")
    reads = count_reads(monkeypatch, ("hub/accounts", "hub/groups"))
    ask = {"filters": {"href": HREF}}
    assert hub.rpc_query(caller, ask)["rows"] == []
    assert sorted(reads) == [f"k:{caller.peer_id}", "u:alice"]
    hub.rpc_query(caller, ask)
    hub.rpc_query(caller, ask)
    assert len(reads) == 2


def test_a_key_not_registered_yet_is_not_remembered_so(hub):
    """"Not registered" may change any moment: the RPC right after registering acts for the new name."""
    caller = Caller(NodeKey.generate())
    with pytest.raises(Exception, match="not registered"):
        hub.rpc_query(caller, {"filters": {"href": HREF}})
    hub.accounts.register("alice", caller.peer_id)
    assert hub.rpc_whoami(caller, {})["name"] == "alice"
    assert hub.rpc_query(caller, {"filters": {"href": HREF}})["rows"] == []


@pytest_twisted.ensureDeferred
async def test_each_membership_change_shows_in_the_very_next_query(mesh):
    """Bob's group rows come and go with his membership, each change seen by his next page query and his
    next lookup by id, with the hub's memory of his memberships filled by the query just before it."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = await mesh.club_shift(HREF)
    query = {"filters": {"href": HREF}}

    async def bob_sees() -> bool:
        page = await bob.flows.query(query)
        assert page["source"] == "shared"
        found = await bob.flows.from_hub(sid)
        assert (found is not None) == (sid in [r["id"] for r in page["rows"]])
        return found is not None

    await eventually(lambda: sid in mesh.hub.ids("shared"), "the club shift in shared")
    assert await bob_sees()
    await alice.flows.group("remove", "club", user="bob")
    assert not await bob_sees()                                  # one request later
    await alice.flows.group("invite", "club", user="bob", level="read")
    assert not await bob_sees()                                  # invited: sees nothing yet
    await bob.flows.group("join", "club")
    assert await bob_sees()
    await bob.flows.group("leave", "club")
    assert not await bob_sees()
