"""An honest publish result: a connected hub is asked before anything is written, and with the hub down
every target, public included, is reported pending (audit finding 10)."""

from __future__ import annotations


import pytest
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.roles.names import FlowError
from tests.test_cli import run, start_node, stop_node
from tests.ports import free_port

HREF = "https://example.org/page"
OFFLINE = "pending: delivered when the hub is connected"


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_unregistered_user_is_refused_a_group_while_the_hub_is_connected(mesh):
    """An unregistered node connected to its hub is told to register, naming the group, instead of
    "pending"; nothing is written. Registering and being refused membership then names the group too."""
    await mesh.start(users=("alice",))
    await mesh["alice"].flows.group("new", "club")
    carol = await mesh.add_user("carol", register=False)
    sid = carol.new_shift(HREF)
    before = carol.store.database("user/private").get(sid).rev
    with pytest.raises(FlowError, match=r"not published to group:club: .*not registered.*shiftpeer register") as e:
        await carol.publish(sid, groups=["club"])
    assert e.value.code == "not_registered"
    assert carol.store.database("user/private").get(sid).rev == before
    assert carol.store.database("user/outbox").get(sid) is None
    await carol.flows.register("carol")
    with pytest.raises(FlowError, match=r"group:club: you may not publish in group 'club' \(you are not a member"):
        await carol.publish(sid, groups=["club"])
    assert carol.store.database("user/private").get(sid).rev == before
    assert sid not in mesh.hub.ids("group/club")


@pytest_twisted.ensureDeferred
async def test_unregistered_public_publish_says_it_waits_for_registration(mesh):
    """Public needs no membership, but the hub takes nothing before registration: the result says so."""
    await mesh.start(users=())
    carol = await mesh.add_user("carol", register=False)
    sid = carol.new_shift(HREF)
    result = await carol.publish(sid, public=True)
    assert result["public"] is True
    assert result["targets"] == {"public": "pending: delivered once this key is registered on the hub "
                                           "('shiftpeer register')"}


@pytest_twisted.ensureDeferred
async def test_with_the_hub_down_every_target_is_pending_public_included(mesh):
    """Offline nothing can be checked: the publish goes ahead, every target says pending, and all of it
    is delivered once the hub is back."""
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    await alice.flows.group("new", "club", open=True)
    await bob.flows.group("join", "club")
    sid = alice.new_shift(HREF)
    alice.disconnect()
    await eventually(lambda: not alice.flows.link.connected, "alice offline")
    result = await alice.publish(sid, public=True, groups=["club"], to=["bob"])
    assert result["targets"] == {"public": OFFLINE, "group:club": OFFLINE, "user:bob": OFFLINE}
    await alice.connect(mesh.hub)
    await eventually(lambda: {sid} <= mesh.hub.ids("master") & mesh.hub.ids("group/club") & mesh.hub.ids("inbox/bob"),
                     "delivered after reconnecting")
    again = await alice.publish(sid, public=True)
    assert again["targets"] == {"public": "ok", "group:club": "ok", "user:bob": "ok"}


def test_cli_public_publish_with_the_hub_down_prints_pending(tmp_path, capsys):
    """`shift publish --public` on a node whose hub is down prints the pending note, exit 0."""
    from shiftpeer.cli import main

    directory = str(tmp_path / "erin")
    assert main(["init", directory, "--user", "erin", "--connect", f"127.0.0.1:{free_port()}"]) == 0
    capsys.readouterr()
    proc = start_node(directory, str(tmp_path / "erin.log"))
    try:
        status, out, err = run(capsys, "--data", directory, "shift", "new", "--space", "Notes", "--href", HREF)
        assert status == 0, err
        sid = out.strip()
        status, out, err = run(capsys, "--data", directory, "shift", "publish", sid, "--public")
        assert status == 0, err
        assert out == f"published {sid} publicly\n  public: {OFFLINE}\n"
    finally:
        stop_node(proc)
