"""An account cannot pass a hub's quota by day through a full peer of its own: the hub pulls a full peer's
``master`` (gossip) and what it keeps from there counts against each document's author like the author's own
push (roles/quota.py, ``Gossip.write_batch``). A real hub node over TLS on 127.0.0.1, its quota in hub.json,
and a bare peer announcing the full-peer role under a registered user's key."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from shiftpeer.roles.quota import DAY
from tests import test_gossip_federation
from tests.helpers_node import eventually
from tests.test_fullpeer_intake import Relay, public_shift
from tests.test_gossip_federation import hub_certs, node, registered
from tests.test_gossip_mesh import free_port, master_ids

started = test_gossip_federation.started   # the fixture


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_shifts_gossiped_by_the_accounts_own_full_peer_count_against_its_quota(tmp_path, started):
    """With 1 document a day, mallory's full peer offers the hub two of her public shifts: the hub keeps one and
    refuses the other over her quota (counted, nothing stored), and bans no one."""
    ph = free_port()
    certs = hub_certs(tmp_path / "c")
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "hub.json").write_text(json.dumps({"quota": {"docs_per_day": 1}}))
    hub = node(tmp_path / "hub", "op", port=ph, hub=True, **certs)
    mallory = node(tmp_path / "mallory", "mallory", connect=f"127.0.0.1:{ph}", ca=str(tmp_path / "c" / "ca.pem"))
    started += [hub, mallory]
    await registered(mallory)
    clock = Clock()     # a fixed noon (UTC): the test cannot cross midnight while it runs
    clock.advance(1795000000 - 1795000000 % DAY + DAY // 2)
    hub.role("hub").hub.quota.clock = clock

    relay = Relay(tmp_path / "relay", mallory.key, "first")
    second = public_shift(mallory.key, "intake-second", "second")
    relay.store.database("master").bulk_replicated([second])
    try:
        await relay.dial(ph)
        counters = hub.sync_factory.counters
        await eventually(lambda: counters["quota_refused.docs"] >= 1, timeout=15)
        await eventually(lambda: {relay.id, second["id"]} & master_ids(hub), timeout=15)
        assert len({relay.id, second["id"]} & master_ids(hub)) == 1
        assert counters["quota_refused.docs"] == 1
        assert hub.role("hub").hub.quota.used(mallory.key.account_id)[0] == 1
        assert not hub.role("federation").gossip.scores.bans
    finally:
        relay.close()
