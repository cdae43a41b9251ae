"""A hub's quota by day over real TLS on 127.0.0.1 (tests/flowmesh.py): a user past it is told, in its push's
refusals and in its publish answer, why the hub stored nothing more of hers; another user and every connection
keep working; and a hub restarted on the same store still counts what she published today."""

from __future__ import annotations

import pytest_twisted
from twisted.internet.task import Clock

import flowmesh
from flowmesh import eventually
from shiftpeer.roles.quota import DAY

mesh = flowmesh.mesh   # the fixture

HREF = "https://example.org/quota"
QUOTA = {"docs_per_day": 2}
REASON = "its author's quota of 2 documents a day on this hub is used up; it starts again at 00:00 UTC"


def frozen_day(hub) -> None:
    """The quota's day is a fixed noon (UTC), so the test cannot cross midnight while it runs."""
    clock = Clock()
    clock.advance(1795000000 - 1795000000 % DAY + DAY // 2)
    hub.hub.quota.clock = clock


async def published(user, hub, n: int = 1) -> list[str]:
    """``n`` new public shifts of ``user`` once the hub's master holds them."""
    made = [user.new_shift(HREF) for _ in range(n)]
    for sid in made:
        await user.publish(sid, public=True)
    await eventually(lambda: set(made) <= hub.ids("master"), f"{user.name}'s shifts in master")
    return made


async def refused_by_quota(user, hub) -> str:
    """A new public shift of ``user`` that the hub refuses over her quota: its id, once her push learned why."""
    push = user.flows.link.push
    before = push.refused_count
    sid = user.new_shift(HREF)
    await user.publish(sid, public=True)
    await eventually(lambda: push.refused_count > before, f"the hub's refusal reaches {user.name}")
    latest = push.refused[-1]
    assert (latest.docid, latest.code, latest.reason) == (sid, "quota", REASON)
    assert sid not in hub.ids("master")
    return sid


@pytest_twisted.ensureDeferred
async def test_a_user_over_quota_is_refused_with_the_reason_others_are_not_and_a_restart_keeps_the_count(mesh):
    """With 2 documents a day: alice's third public shift is refused (code quota, the reason on her push), and
    a shift she sends bob is refused as a whole in her publish answer, bob's inbox untouched; bob publishes on;
    alice's connection and push stay up. After a restart of the hub on the same store alice is still refused
    and bob's second shift of the day is taken."""
    await mesh.start(users=("alice", "bob"), quota=QUOTA)
    frozen_day(mesh.hub)
    alice, bob = mesh["alice"], mesh["bob"]
    conn, push = alice.flows.link.conn, alice.flows.link.push
    await published(alice, mesh.hub, 2)
    await refused_by_quota(alice, mesh.hub)

    sent = alice.new_shift(HREF)
    answer = await alice.publish(sent, to=["bob"])
    assert answer["targets"] == {"user:bob": "error: " + REASON}
    assert sent not in mesh.hub.ids("inbox/bob")

    await published(bob, mesh.hub)
    assert alice.flows.link.conn is conn and not conn._closing and not push.finished
    assert mesh.hub.factory.counters["quota_refused.docs"] == 2

    await mesh.restart_hub(quota=QUOTA)
    frozen_day(mesh.hub)
    await refused_by_quota(alice, mesh.hub)
    await published(bob, mesh.hub)
    assert mesh.hub.hub.quota.used(alice.account)[0] == 2 and mesh.hub.hub.quota.used(bob.account)[0] == 2
