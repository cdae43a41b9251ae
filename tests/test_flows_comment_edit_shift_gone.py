"""An edit of a comment on a shift that is deleted, or that its author may no longer see, is refused at once
(409 ``shift_gone``) and writes nothing, over real TLS to a real hub. Every place refuses such an edit (a
comment needs a shift its author can see) and keeps the text it has; before, the edit of a public comment
answered ``public: ok`` all the same (it goes by replication), while the hub's ``master`` kept the old text."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import DEADLINE, eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.roles.names import FlowError
from tests.helpers_node import eventually_async
from tests.test_flows_comment_edits import public_shift_with_comment, thread_texts


async def _refused(user, cid: str) -> FlowError:
    with pytest.raises(FlowError) as refused:
        await user.flows.edit_comment(cid, "second text")
    return refused.value


@pytest_twisted.ensureDeferred
async def test_a_comment_on_a_deleted_public_shift_is_not_edited(mesh):
    """bob's node never held alice's public shift (users do not pull the firehose): the hub tells it the
    shift is gone. The comment stays as it was, and deleting it still works."""
    await mesh.start()
    alice, bob = mesh["alice"], mesh["bob"]
    sid, made = await public_shift_with_comment(mesh, "first text")
    cid = made["id"]
    before = bob.flows.publisher.current(cid)["rev"]
    alice.shifts.delete(sid)
    await eventually(lambda: (d := mesh.hub.db("shared").get(sid)) is not None and d.deleted, "the delete in shared")

    err = await _refused(bob, cid)
    assert err.code == "shift_gone" and sid in err.message
    assert bob.flows.publisher.current(cid)["rev"] == before          # nothing written, nothing to deliver
    gone = await bob.flows.delete_comment(cid)
    assert gone["deleted"] is True


@pytest_twisted.ensureDeferred
async def test_a_comment_on_a_live_shift_is_still_edited(mesh):
    """The same comment on a live shift takes its edit, and readers see it."""
    await mesh.start()
    sid, made = await public_shift_with_comment(mesh, "first text")
    edited = await mesh["bob"].flows.edit_comment(made["id"], "second text")
    assert edited["targets"]["public"] == "ok", edited
    await eventually_async(lambda: thread_texts(mesh["carol"], sid), lambda t: t == ["second text"], DEADLINE)
