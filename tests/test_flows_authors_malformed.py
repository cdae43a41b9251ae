"""A user node's `feed --author X` answered by the hub, with X neither an account id nor a well-formed name
("Alice!", "Bob"): refused with bad_name, as a full peer refuses it, not an empty page that reads as "no
shifts" (the hub took any such value for an account id)."""

from __future__ import annotations

import pytest
import pytest_twisted

from flowmesh import eventually, mesh  # noqa: F401 (the mesh fixture)
from shiftpeer.roles.names import FlowError


@pytest_twisted.ensureDeferred
async def test_hub_refuses_a_malformed_author_name(mesh):
    await mesh.start(users=("alice", "bob"))
    alice, bob = mesh["alice"], mesh["bob"]
    sid = alice.new_shift("https://au.example/malformed")
    await alice.publish(sid, public=True)
    await eventually(lambda: sid in mesh.hub.ids("shared"), "the shift in the hub's shared")
    for value in ("Alice!", "Alice", ["alice", "no body"]):
        with pytest.raises(FlowError, match="is not valid") as malformed:
            await bob.flows.query({"filters": {"author": value}})
        assert malformed.value.code == "bad_name", value
    answer = await bob.flows.query({"filters": {"author": [alice.account]}})
    assert answer["source"] == "shared" and [r["id"] for r in answer["rows"]] == [sid]
