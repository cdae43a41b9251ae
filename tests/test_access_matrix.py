"""The access matrix: for every role and every database, exactly what the hub serves and accepts, over
real TLS; every forbidden cell is refused. Also: user/private is never served by anyone."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.roles.names import FlowError
from shiftpeer.roles.publishing import NotConnected
from shiftpeer.roles.remote import HubLink
from shiftpeer.store import Store

HREF = "https://example.org/matrix"
MEMBERS = {"olga": "owner", "adam": "admin", "pete": "publish", "rita": "read", "ivan": "invited"}
REGISTERED = ("alice", "bob", "nora", *MEMBERS)
PARTIES = (*REGISTERED, "stranger", "fullpeer")
TRICKS = ("inbox/alice/../bob", "group/club/", "group/CLUB", "group/club/../club", "user/private/",
          "./user/private", "user%2Fprivate", "inbox/../user/private", "", "group/", "messages/alice/x",
          "USER/private", "inbox/Alice", "user/private\x00", "hub/../user/private")
DATABASES = ("master", "shared", "system/messages", "group/club", "inbox/alice", "inbox/bob",
             "messages/alice", "messages/bob", "hub/accounts", "hub/groups", "hub/social",
             "user/private", "user/public", "user/feed", *TRICKS)


def may_read(party: str, db: str) -> bool:
    """The matrix's read column."""
    if db == "master":
        return party in REGISTERED or party == "fullpeer"
    if db == "system/messages":
        return party in REGISTERED
    if db == "group/club":
        return MEMBERS.get(party) in ("owner", "admin", "publish", "read")
    if db in ("inbox/alice", "messages/alice"):
        return party == "alice"
    if db in ("inbox/bob", "messages/bob"):
        return party == "bob"
    return False


def may_write(party: str, db: str) -> bool:
    """The matrix's write (push into) column."""
    if db == "master":
        return party in REGISTERED
    if db == "group/club":
        return MEMBERS.get(party) in ("owner", "admin", "publish")
    return False


async def _outcome(handle) -> str:
    try:
        await handle.done
    except Exception as e:
        return getattr(e, "code", "error")
    return "ok"


async def _probe(conn, db: str) -> tuple[str, str]:
    read = await _outcome(conn.pull(db, "probe", live=False))
    write = await _outcome(conn.push("user/public", db, live=False))
    return read, write


async def _setup(mesh) -> dict:
    await mesh.start(users=REGISTERED)
    u = mesh.users
    await u["olga"].flows.group("new", "club")
    for name, level in MEMBERS.items():
        if level in ("owner",):
            continue
        await u["olga"].flows.group("invite", "club", user=name, level="admin" if level == "admin" else
                                    ("read" if level == "read" else "publish"))
        if level != "invited":
            await u[name].flows.group("join", "club")
    # the hub node also holds user databases of its own: none may ever be served
    for name in ("user/private", "user/public", "user/feed"):
        mesh.hub.store.create_database(name).put("secret", {"type": "shift", "summary": "hub's own"})
    conns = {name: u[name].proto for name in REGISTERED}
    conns["stranger"] = (await mesh.stranger("stranger")).proto
    conns["fullpeer"] = (await mesh.stranger("fullpeer", roles=("full-peer",))).proto
    return conns


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_replication_matrix(mesh):
    """Every role x database cell: reads and writes are served exactly where the matrix allows."""
    conns = await _setup(mesh)
    cells = [(p, db) for p in PARTIES for db in DATABASES]
    results = await DeferredList([Deferred.fromCoroutine(_probe(conns[p], db)) for p, db in cells],
                                 consumeErrors=True)
    wrong = []
    for (party, db), (ok, (read, write)) in zip(cells, results):
        assert ok
        want_r = "ok" if may_read(party, db) else "forbidden"
        want_w = "ok" if may_write(party, db) else "forbidden"
        if (read, write) != (want_r, want_w):
            wrong.append(f"{party} {db!r}: read {read} (want {want_r}), write {write} (want {want_w})")
    assert not wrong, "\n".join(wrong)
    assert mesh.hub.db("user/private").doc_count() == 1  # nothing written, nothing taken


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_delivery_and_query_matrix(mesh):
    """Who may deliver to a group or a user, and what each role's queries see of a public shift, a group
    shift and a direct shift; unregistered peers may do neither."""
    conns = await _setup(mesh)
    u = mesh.users
    public = u["alice"].new_shift(HREF)
    await u["alice"].publish(public, public=True)
    direct = u["alice"].new_shift(HREF)
    await u["alice"].publish(direct, to=["bob"])
    grouped = u["olga"].new_shift(HREF)
    await u["olga"].publish(grouped, groups=["club"])
    await eventually(lambda: {public, direct, grouped} <= mesh.hub.ids("shared"), "shared")
    for name in REGISTERED:
        sid = u[name].new_shift("https://example.org/" + name)
        if may_write(name, "group/club"):
            result = await u[name].publish(sid, groups=["club"], to=["alice"])
            assert result["targets"] == {"group:club": "ok", "user:alice": "ok"}, name
            continue
        with pytest.raises(FlowError, match="group:club: you may not publish"):  # refused up front
            await u[name].publish(sid, groups=["club"], to=["alice"])
        assert "audience" not in u[name].store.database("user/private").get(sid).body, name
        result = await u[name].publish(sid, to=["alice"])
        assert result["targets"] == {"user:alice": "ok"}, name
    for name in REGISTERED:
        answer = await u[name].flows.query({"filters": {"href": HREF}})
        seen = {r["id"] for r in answer["rows"]}
        want = {public}
        if name in ("alice", "bob"):
            want.add(direct)
        if may_read(name, "group/club"):
            want.add(grouped)
        assert seen == want, name
    for party in ("stranger", "fullpeer"):
        for method, args in (("query", {"filters": {"href": HREF}}), ("get", {"ids": [public, direct, grouped]}),
                             ("deliver", {"doc": {}, "targets": ["user:alice"]}), ("group.join", {"name": "club"})):
            with pytest.raises(Exception, match="not registered"):
                await conns[party].call(method, args)


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_user_private_is_never_served_by_a_user_node(mesh):
    """A hostile peer that connects to a user node gets nothing of user/private (or any other user
    database) by any name, even when it claims to be a hub; only the real hub may read user/public."""
    await mesh.start(users=("alice",))
    alice = mesh["alice"]
    alice.new_shift(HREF)
    port = await alice.listen()
    names = ("user/private", "user/feed", "user/outbox", "user/marks", "user/public", "user/private/",
             "./user/private", "user/../user/private", "USER/PRIVATE", "user/private/../private", "private")
    for roles in (("user",), ("hub",), ("full-peer", "hub")):
        hostile = await mesh.stranger("hostile-" + "-".join(roles), roles=roles, port=port,
                                      peer_id=alice.account)
        for name in names:
            assert await _outcome(hostile.proto.pull(name, "loot", live=False)) == "forbidden", (roles, name)
        assert not hostile.store.has_database("loot") or hostile.store.database("loot").doc_count() == 0
    assert alice.flows.policy.may_read(mesh.hub.key.account_id, "user/public", None)
    assert not alice.flows.policy.may_read(mesh.hub.key.account_id, "user/private", None)


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_registration_names_are_unique(mesh):
    """A name is bound to one key per hub: a second key asking for it is refused clearly."""
    await mesh.start(users=("alice",))
    impostor = await mesh.add_user("impostor", register=False)
    with pytest.raises(FlowError, match="already taken"):
        await impostor.flows.register("alice")
    with pytest.raises(FlowError, match="not valid"):
        await impostor.flows.register("../alice")
    again = await mesh["alice"].flows.register("alice")
    assert again["created"] is False
    with pytest.raises(FlowError, match="already registered"):
        await mesh["alice"].flows.register("alice2")


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_invite_only_registration(mesh):
    """On an invite-only hub registering needs a token from the operator, and each token works once."""
    await mesh.start(users=(), open_registration=False)
    alice = await mesh.add_user("alice", register=False)
    bob = await mesh.add_user("bob", register=False)
    with pytest.raises(FlowError, match="invitation"):
        await alice.flows.register("alice")
    token = mesh.hub.hub.accounts.new_invite()
    assert (await alice.flows.register("alice", token))["created"] is True
    with pytest.raises(FlowError, match="already used"):
        await bob.flows.register("bob", token)
    await alice.flows.link.when_ready()
    assert "inbox/alice" in alice.flows.link.pulls


@pytest_twisted.ensureDeferred
async def test_register_right_after_start_waits_for_the_hub(mesh):
    """A register issued before the hub connection is up waits (bounded) for it instead of failing."""
    from flowmesh import UserParty

    await mesh.start(users=())
    early = UserParty(mesh.tmp / "early", "early")
    mesh.users["early"] = early
    early.flows.link.connect_wait = 10.0
    pending = early.flows.register("early")
    assert not pending.called
    await early.connect(mesh.hub)
    assert (await pending)["name"] == "early"
    assert mesh.hub.hub.accounts.id_of("early") == early.account


def test_a_call_waiting_for_a_hub_that_never_comes_gives_up_saying_so(tmp_path):
    """The same wait with no hub: after connect_wait seconds (a Clock: no real waiting) the call fails with
    not_connected, naming the wait and what to check; a call made with no wait fails at once."""
    clock = Clock()
    store = Store(str(tmp_path / "store"))
    try:
        link = HubLink(store, clock=clock, connect_wait=10.0)
        outcome: list = []
        link.call("register", {"name": "early"}).addBoth(outcome.append)
        clock.advance(9.9)
        assert outcome == [] and len(clock.getDelayedCalls()) == 1
        clock.advance(0.1)
        assert isinstance(outcome[0].value, NotConnected) and outcome[0].value.code == "not_connected"
        assert str(outcome[0].value) == ("not connected to the hub after 10s (is it running? check "
                                         "'shiftpeer status')")
        assert clock.getDelayedCalls() == []
        link.connect_wait = 0
        link.call("register", {"name": "early"}).addBoth(outcome.append)
        assert isinstance(outcome[1].value, NotConnected) and "after" not in str(outcome[1].value)
    finally:
        store.close()
