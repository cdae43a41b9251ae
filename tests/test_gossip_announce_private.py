"""The proof of an announced address made the node dial any HOST:PORT a registered account named: its own
loopback services, the LAN behind it, a link-local metadata service (a TCP connection and a TLS
ClientHello each). It now dials only global unicast addresses unless configured otherwise: a host name is
resolved once, every address checked, and the checked address dialled (not the name again). A refusal
dials nothing, is not listed, rests the account like a failed proof, and is logged and counted apart
(``announce_undialable``). Loopback is allowed by default on a node that listens on loopback only (the
tests' and the demo's meshes), anything private with ``"gossip": {"private_addresses": true}``.
Deterministic (a Clock, a fake dial and resolver) and a real hub over TLS on 127.0.0.1."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from shiftpeer.gossip.dialable import (MAX_ADDRESSES, PRIVATE_ALL, PRIVATE_LOOPBACK, PRIVATE_NONE, checked_dial,
                                       private_mode, resolver, why_not_dialable)
from shiftpeer.gossip.proofs import PROOF_TIMEOUT, RETRY_AFTER
from shiftpeer.nodedir import ConfigValueError, init_node_dir, load_node_dir
from shiftpeer.nodesettings import settings_from_config
from tests import test_fullpeer_intake, test_gossip_federation
from tests.helpers_node import eventually
from tests.test_sync_config import set_config
from tests.test_gossip_announce_proofs import ALICE, _peers, make_hub
from tests.test_gossip_federation import hub_and_full_peer, registered

logged, started = test_fullpeer_intake.logged, test_gossip_federation.started

NOT_GLOBAL = ["127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.10", "169.254.169.254",
              "fe80::1", "fc00::1", "fd12:3456::1", "100.64.0.1", "192.0.2.1", "198.51.100.7", "203.0.113.5",
              "2001:db8::1", "240.0.0.1", "255.255.255.255", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
              "2002:7f00:1::1", "64:ff9b::a00:1"]
NEVER = ["0.0.0.0", "::", "224.0.0.1", "239.255.255.250", "ff02::1", "::ffff:224.0.0.1"]
GLOBAL = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::1", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", NOT_GLOBAL + NEVER)
def test_only_global_unicast_addresses_are_dialled_by_default(address):
    why = why_not_dialable(address)
    assert why is not None and address in why


@pytest.mark.parametrize("address", GLOBAL)
def test_global_unicast_addresses_are_dialled(address):
    assert why_not_dialable(address) is None


def test_the_modes_loopback_and_all_let_more_through_but_never_multicast_or_unspecified():
    assert [a for a in NOT_GLOBAL if why_not_dialable(a, PRIVATE_LOOPBACK) is None] == \
        ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"]
    assert all(why_not_dialable(a, PRIVATE_ALL) is None for a in NOT_GLOBAL)
    assert all(why_not_dialable(a, mode) is not None for a in NEVER for mode in (PRIVATE_LOOPBACK, PRIVATE_ALL))


def test_the_default_mode_follows_the_listeners_unless_set():
    """Loopback too when every listener is on loopback; global only when one listens beyond (or none);
    the setting wins either way."""
    on_loopback = ["tcp:7701:interface=127.0.0.1", "tcp6:7702:interface=\\:\\:1"]
    assert private_mode(None, on_loopback) == PRIVATE_LOOPBACK
    assert private_mode(None, on_loopback + ["tcp:7703"]) == PRIVATE_NONE
    assert private_mode(None, ["tcp:7701:interface=192.168.1.10"]) == PRIVATE_NONE
    assert private_mode(None, []) == PRIVATE_NONE
    assert private_mode(False, on_loopback) == PRIVATE_NONE
    assert private_mode(True, ["tcp:7701"]) == PRIVATE_ALL


class _Resolver:
    """The injected resolve: each call recorded with the Deferred the test fires (the addresses found)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Deferred]] = []

    def __call__(self, host: str) -> Deferred:
        self.calls.append((host, Deferred()))
        return self.calls[-1][1]


@pytest.fixture
def hub():
    """A node that listens beyond loopback: global addresses only; host names through a fake resolver."""
    resolve = _Resolver()
    h = make_hub(resolve=resolve)
    h.resolve = resolve
    return h


def test_a_private_address_is_refused_without_a_dial_logged_counted_and_rested(hub, logged):
    """Alice announces 10.0.0.5:7702 (the hub's LAN): nothing is dialled, the address is not listed, and the
    hub logs why and counts it apart from failed proofs; she rests as after a failure, so announcing in a loop
    does not even fill the log. A global address, after the rest, is dialled as before."""
    alice = hub.conn(ALICE)
    g = hub.gossip
    assert g.rpc_announce(alice, {"port": 7702, "host": "10.0.0.5"}) == {"address": "10.0.0.5:7702", "listed": False}
    assert hub.dials.calls == [] and _peers(hub) == [] and g.announced == {}
    assert g.counters["announce_undialable"] == 1 and g.counters["announce_unproven"] == 0
    assert hub.factory.counters["gossip.announce_undialable"] == 1 and g.stats()["announce_undialable"] == 1
    lines = [x for x in logged if "not listing" in x]
    assert len(lines) == 1 and ALICE in lines[0] and "10.0.0.5 is a private address, not a global one" in lines[0]
    g.rpc_announce(alice, {"port": 7702, "host": "127.0.0.1"})
    assert g.counters["announce_undialable"] == 1 and len([x for x in logged if "not listing" in x]) == 1
    hub.clock.advance(RETRY_AFTER)
    g.rpc_announce(alice, {"port": 7702, "host": "8.8.8.8"})
    assert [(h, p) for h, p, _ in hub.dials.calls] == [("8.8.8.8", 7702)]
    hub.dials.answer(ALICE)
    assert _peers(hub) == ["8.8.8.8:7702"]


def test_her_connecting_address_is_checked_too(hub):
    """Without ``host`` the address she connects from is the one proven: from the hub's LAN, not dialled."""
    alice = hub.conn(ALICE, host="192.168.1.20")
    assert hub.gossip.rpc_announce(alice, {"port": 7702})["address"] == "192.168.1.20:7702"
    assert hub.dials.calls == [] and hub.gossip.counters["announce_undialable"] == 1


def test_a_host_name_is_resolved_once_every_address_checked_and_the_checked_address_dialled(hub, logged):
    """node.example resolves to a global and a private address: refused, nothing dialled. After the rest it
    resolves to global ones only: the first is dialled (the address, not the name: a second lookup could
    answer otherwise), and the name is what is listed."""
    alice = hub.conn(ALICE)
    g = hub.gossip
    g.rpc_announce(alice, {"port": 7702, "host": "node.example"})
    assert [h for h, _ in hub.resolve.calls] == ["node.example"]
    hub.resolve.calls[-1][1].callback(["8.8.8.8", "192.168.1.10"])
    assert hub.dials.calls == [] and g.counters["announce_undialable"] == 1
    assert [x for x in logged if "not listing node.example:7702" in x and "node.example resolves to 192.168.1.10"
            " is a private address" in x]
    hub.clock.advance(RETRY_AFTER)
    g.rpc_announce(alice, {"port": 7702, "host": "node.example"})
    hub.resolve.calls[-1][1].callback(["2606:4700:4700::1111", "8.8.8.8"])
    assert [(h, p) for h, p, _ in hub.dials.calls] == [("2606:4700:4700::1111", 7702)]
    hub.dials.calls[-1][2].errback(ConnectionRefusedError())       # the next address is tried, as a name's
    assert [(h, p) for h, p, _ in hub.dials.calls][1:] == [("8.8.8.8", 7702)]
    hub.dials.answer(ALICE)
    assert _peers(hub) == ["node.example:7702"] and len(hub.resolve.calls) == 2


def test_the_proof_timeout_ends_dialling_the_addresses_in_turn(hub):
    """A name with five global addresses: dialled one after another, at most MAX_ADDRESSES of them, and
    the proof's timeout cancels the one under way without moving on to the next."""
    g = hub.gossip
    g.rpc_announce(hub.conn(ALICE), {"port": 7702, "host": "many.example"})
    hub.resolve.calls[-1][1].callback([f"8.8.8.{i}" for i in range(1, 6)])
    for _ in range(MAX_ADDRESSES - 1):
        hub.dials.calls[-1][2].errback(ConnectionRefusedError())
    assert [h for h, _, _ in hub.dials.calls] == [f"8.8.8.{i}" for i in range(1, MAX_ADDRESSES + 1)]
    hub.clock.advance(PROOF_TIMEOUT)
    assert hub.dials.calls[-1][2].called and len(hub.dials.calls) == MAX_ADDRESSES
    assert g.counters["announce_unproven"] == 1 and not g.proofs.running and g.announced == {}


def test_a_resolution_that_does_not_end_is_cancelled_by_the_proof_timeout(hub):
    """The lookup counts in the proof's 10 s: past it the proof fails (counted as unproven), nothing dialled;
    a late answer changes nothing."""
    g = hub.gossip
    g.rpc_announce(hub.conn(ALICE), {"port": 7702, "host": "slow.example"})
    hub.clock.advance(PROOF_TIMEOUT)
    assert hub.resolve.calls[0][1].called and g.counters["announce_unproven"] == 1 and not g.proofs.running
    assert hub.dials.calls == [] and g.announced == {}


def test_a_name_resolving_to_nothing_is_refused():
    dial = checked_dial(lambda host, port: pytest.fail("dialled"), lambda host: _fired([]))
    failures: list = []
    dial("empty.example", 7702).addErrback(failures.append)
    assert "empty.example resolves to no address" in failures[0].getErrorMessage()


def _fired(value):
    d = Deferred()
    d.callback(value)
    return d


def test_a_node_that_resolves_nothing_refuses_host_names():
    failures: list = []
    checked_dial(lambda host, port: pytest.fail("dialled"), None)("node.example", 7702).addErrback(failures.append)
    assert "resolves none" in failures[0].getErrorMessage()


def test_config_json_gossip_reaches_the_settings_and_bad_values_are_refused(tmp_path):
    path = init_node_dir(str(tmp_path / "n"), user="op").path
    set_config(path, "gossip", {"private_addresses": True, "reprove_every": 120})
    s = settings_from_config(path, load_node_dir(path))
    assert (s.private_addresses, s.reprove_every) == (True, 120.0)
    for bad, words in (({"private_addresses": "sometimes"}, "private_addresses must be true or false"),
                       ({"reprove_every": 0}, "reprove_every must be a number of seconds of at least 1"),
                       ({"reprove_evry": 60}, "unknown setting(s) 'reprove_evry'"), ([1], "must be a JSON object")):
        set_config(path, "gossip", bad)
        with pytest.raises(ConfigValueError, match="config.json") as e:
            load_node_dir(path)
        assert '"gossip": ' in str(e.value) and words in str(e.value)


@pytest_twisted.ensureDeferred
async def test_a_hub_set_to_dial_no_private_address_does_not_list_a_full_peer_on_loopback(tmp_path, started, logged):
    """A real hub and full peer on 127.0.0.1: the hub listens on loopback, but its operator set
    ``private_addresses`` false, so the full peer's announcement (127.0.0.1:PORT) is refused without a dial,
    counted in status, and the full peer is never listed."""
    hub, fp, ph, pf = hub_and_full_peer(tmp_path, started, "fp", private_addresses=False)
    gossip = hub.role("federation").gossip
    await registered(fp)
    await eventually(lambda: gossip.counters["announce_undialable"] >= 1, timeout=15)
    assert gossip.announced == {} and gossip.counters["announce_unproven"] == 0
    assert hub.status()["gossip"]["events"]["announce_undialable"] >= 1
    assert [x for x in logged if "not listing" in x and f"127.0.0.1:{pf}" in x and "loopback address" in x]


@pytest_twisted.ensureDeferred
async def test_a_full_peer_announcing_a_host_name_is_listed_under_it_once_its_address_answers(tmp_path, started):
    """Real nodes on 127.0.0.1, the hub listening on loopback only (so loopback is allowed): the full peer
    announces ``localhost``; the hub resolves it through the reactor, checks and dials 127.0.0.1 and lists
    ``localhost:PORT`` once the full peer's key answers there."""
    from twisted.internet import reactor

    assert "127.0.0.1" in await resolver(reactor)("localhost")
    hub, fp, ph, pf = hub_and_full_peer(tmp_path, started, "fp")
    gossip = hub.role("federation").gossip
    await registered(fp)
    await eventually(lambda: fp.account_id in gossip.announced, timeout=15)
    answer = await fp.role("full-peer").hub_conn.call("gossip.announce", {"port": pf, "host": "localhost"})
    assert answer == {"address": f"localhost:{pf}", "listed": False}
    await eventually(lambda: gossip.announced.get(fp.account_id) == f"localhost:{pf}", timeout=15)
    assert gossip.counters["announce_unproven"] == 0 and gossip.counters["announce_undialable"] == 0
