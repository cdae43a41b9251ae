"""The hub lists full peers that opted in (``gossip.announce``) for other full peers to dial
(``gossip.peers``). It took an announcement from any key that claimed the full-peer role, with any
``host``: an unregistered key, one per announcement, filled the list full peers dial from with addresses
of its choice (its own nodes, or someone else's host). The hub now lists only its registered users and
configured relays, and logs the refusal; a full peer that connected before registering is listed once it
has. Real hub and full peer nodes over TLS on 127.0.0.1."""

from __future__ import annotations

import pytest
import pytest_twisted

from shiftpeer.identity import NodeKey
from shiftpeer.sync.protocol import RemoteError
from tests.helpers_node import eventually
from tests.test_fullpeer_intake import Relay, logged  # noqa: F401 (the logged fixture)
from tests.test_gossip_federation import hub_and_full_peer, registered, started  # noqa: F401 (the fixture)


@pytest_twisted.ensureDeferred
@pytest.mark.allow_logged_errors
async def test_only_registered_full_peers_are_listed_for_others_to_dial(tmp_path, started, logged):  # noqa: F811
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
