"""The hub lists full peers that opted in (``gossip.announce``) for other full peers to dial
(``gossip.peers``). It took an announcement from any key that claimed the full-peer role, with any
``host``: an unregistered key, one per announcement, filled the list full peers dial from with addresses
of its choice (its own nodes, or someone else's host). The hub now lists only its registered users and
configured relays, and logs the refusal; a full peer that connected before registering is listed once it
has. A registered account could still name someone else's host: the hub now lists an address only once it
has dialled it and met the announcer's key there (tests/test_gossip_announce_proofs.py has the bounds).
Real hub and full peer nodes over TLS on 127.0.0.1."""

from __future__ import annotations

import pytest
import pytest_twisted

from shiftpeer.identity import NodeKey
from shiftpeer.sync.protocol import RemoteError
from tests.helpers_node import eventually
from tests import test_fullpeer_intake, test_gossip_federation
from tests.test_fullpeer_intake import Relay
from tests.test_gossip_federation import hub_and_full_peer, node, registered

#: The fixtures these tests use (bound here, not imported by name: a name the tests' arguments shadow).
logged, started = test_fullpeer_intake.logged, test_gossip_federation.started


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_only_registered_full_peers_are_listed_for_others_to_dial(tmp_path, started, logged):
    hub, fp, ph, pf = hub_and_full_peer(tmp_path, started, "fp")
    stranger = Relay(tmp_path / "stranger", NodeKey.generate(), "stranger")
    try:
        await stranger.dial(ph)
        with pytest.raises(RemoteError, match="register first"):
            await stranger.proto.call("gossip.announce", {"port": 7702, "host": "198.51.100.9"})
        assert any(stranger.key.account_id in line and "announcement" in line for line in logged)
        await registered(fp)   # it connected (and announced, refused) before registering
        announced = hub.role("federation").gossip.announced
        await eventually(lambda: fp.account_id in announced, timeout=15)
        assert announced == {fp.account_id: f"127.0.0.1:{pf}"}
        assert (await stranger.proto.call("gossip.peers", {}))["peers"] == [f"127.0.0.1:{pf}"]
    finally:
        stranger.close()


@pytest_twisted.ensureDeferred
async def test_a_registered_full_peer_naming_another_nodes_address_is_not_listed(tmp_path, started, logged):
    """Registered full peers fp (listening) and mallory (not listening): mallory announces fp's address as
    its own. The hub dials it, meets fp's key, and does not list it (logged naming mallory and the address,
    counted in its gossip status); fp, announcing its own address, is listed after the same check, so the
    list full peers dial from holds fp's address once, as fp's."""
    hub, fp, ph, pf = hub_and_full_peer(tmp_path, started, "fp")
    mallory = node(tmp_path / "mallory", "mallory", full_peer=True, connect=f"127.0.0.1:{ph}",
                   ca=str(tmp_path / "c" / "ca.pem"))
    started.append(mallory)
    await registered(fp)
    await registered(mallory)
    gossip = hub.role("federation").gossip
    await eventually(lambda: fp.account_id in gossip.announced, timeout=15)
    assert gossip.announced == {fp.account_id: f"127.0.0.1:{pf}"}
    assert [x for x in logged if "listing" in x and fp.account_id in x and "its key answered there" in x]
    conn = mallory.role("full-peer").hub_conn
    answer = await conn.call("gossip.announce", {"port": pf, "host": "127.0.0.1"})
    assert answer == {"address": f"127.0.0.1:{pf}", "listed": False}
    await eventually(lambda: gossip.counters["announce_unproven"] == 1, timeout=15)
    assert gossip.announced == {fp.account_id: f"127.0.0.1:{pf}"}
    assert (await conn.call("gossip.peers", {}))["peers"] == [f"127.0.0.1:{pf}"]
    assert [x for x in logged if "not listing" in x and mallory.account_id in x and f"127.0.0.1:{pf}" in x
            and fp.account_id in x]
    assert hub.status()["gossip"]["events"]["announce_unproven"] == 1


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_an_unregistered_full_peer_logs_the_refused_announcement_once_per_connection(tmp_path, started, logged):
    """A full peer that has not registered announces again at each neighbour step; the hub refuses each
    time, but both the full peer and the hub say so once for the connection, not every 5 s until someone
    registers it. Once registered, it is listed."""
    hub, fp, ph, pf = hub_and_full_peer(tmp_path, started, "fp")
    role = fp.role("full-peer")
    refused_here = lambda: [x for x in logged if "the hub did not take our gossip announcement" in x]  # noqa: E731
    refused_at_hub = lambda: [x for x in logged if "refused the gossip announcement of " + fp.account_id in x  # noqa: E731
                              and "again on this connection" not in x]   # the repeats go to debug level
    await eventually(lambda: refused_here() and role.unlisted is role.hub_conn, timeout=15)
    answered = []   # the hub's answers to this connection's announcements from here on
    conn, call = role.hub_conn, role.hub_conn.call

    def counting(method, args, *a, **kw):
        d = call(method, args, *a, **kw)
        if method == "gossip.announce":
            d.addBoth(lambda r: answered.append(r) or r)
        return d

    conn.call = counting
    for step in range(1, 3):   # the neighbour steps the clock would run, 5 s apart
        before = len(answered)
        role._tick_call.cancel()
        role._tick()
        await eventually(lambda n=before: len(answered) > n, timeout=15)
    assert len(refused_here()) == 1, refused_here()
    # the hub, asked again each step, says so once for the connection too
    assert len(refused_at_hub()) == 1, refused_at_hub()
    await registered(fp)
    role._tick_call.cancel()
    role._tick()
    await eventually(lambda: fp.account_id in hub.role("federation").gossip.announced, timeout=15)
    assert role.unlisted is None and len(refused_here()) == 1
