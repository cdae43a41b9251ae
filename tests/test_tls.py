"""Mutual TLS with key-derived peer ids: in memory (iosim) and over real sockets."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from OpenSSL import SSL
from twisted.internet import ssl as tssl
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, wrapClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory

from helpers_identity import NodeKey, make_pki, recording_factory, tls_pair
from shiftpeer.identity.certs import CertMaterial
from shiftpeer.identity.tls import (
    PeerIdentityError,
    client_creator,
    peer_id_of_transport,
    server_creator,
)

_VERSIONS = {"TLSv1.2", "TLSv1.3"}


@pytest.fixture(scope="module")
def keys():
    return NodeKey.generate(), NodeKey.generate()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), "hub.example")


def test_mutual_handshake_in_small_chunks(keys):
    """Fed 7 bytes at a time, both sides finish TLS 1.3, learn each other's id, and exchange data."""
    a, b = keys
    pair = tls_pair(server_creator(a), client_creator(b), chunk=7, greeting=b"hello")
    assert pair.client.peer_id == a.account_id
    assert pair.server.peer_id == b.account_id
    assert pair.client.tls_version == pair.server.tls_version == "TLSv1.3"
    assert pair.client.received == pair.server.received == b"hello"
    assert pair.client.lost_reason is None and pair.server.lost_reason is None


def test_tls12_still_works(keys):
    """A peer limited to TLS 1.2 still completes a mutual Ed25519 handshake (nothing older is allowed)."""
    a, b = keys
    creator = client_creator(b, expected_peer_id=a.account_id)
    creator._ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    pair = tls_pair(server_creator(a), creator)
    assert pair.client.tls_version == "TLSv1.2" and pair.server.peer_id == b.account_id


@pytest.mark.allow_logged_errors
def test_tls11_is_refused(keys):
    """A client that only speaks TLS 1.1 never completes a handshake."""
    a, b = keys
    opts = tssl.CertificateOptions(verify=False,
                                   insecurelyLowerMinimumTo=tssl.TLSVersion.TLSv1_0,
                                   lowerMaximumSecurityTo=tssl.TLSVersion.TLSv1_1)
    pair = tls_pair(server_creator(a), opts)
    assert not pair.server.handshake_done and not pair.client.handshake_done


def test_handshake_is_small(keys):
    """A full node-to-node handshake costs well under the 2 KB no-op reconnect budget."""
    a, b = keys
    pair = tls_pair(server_creator(a), client_creator(b, expected_peer_id=a.account_id))
    assert pair.server.peer_id == b.account_id
    assert pair.bytes_c2s + pair.bytes_s2c < 1700


def test_pinned_peer_id_accepted(keys):
    """A client pinning the server's real id connects."""
    a, b = keys
    pair = tls_pair(server_creator(a), client_creator(b, expected_peer_id=a.account_id))
    assert pair.client.peer_id == a.account_id


@pytest.mark.allow_logged_errors
def test_wrong_pin_aborts(keys, fail_on_logged_errors):
    """A client pinning another id aborts the handshake, logs why, and neither side sees data."""
    a, b = keys
    other = NodeKey.generate()
    pair = tls_pair(server_creator(a), client_creator(b, expected_peer_id=other.account_id),
                    greeting=b"secret")
    assert not pair.client.handshake_done and not pair.server.handshake_done
    assert pair.client.received == pair.server.received == b""
    assert pair.client.lost_reason is not None and pair.server.lost_reason is not None
    assert any("pinned peer id mismatch" in str(e.get("reason")) for e in fail_on_logged_errors)


@pytest.mark.allow_logged_errors
def test_client_without_certificate_is_refused(keys):
    """The server requires a client certificate: a client presenting none is cut off."""
    a, _ = keys
    pair = tls_pair(server_creator(a), tssl.CertificateOptions(verify=False))
    assert not pair.server.handshake_done
    assert pair.server.lost_reason is not None


def test_hub_hostname_verified_against_ca(keys, pki):
    """A user verifies the hub's CA-signed certificate and name; the hub sees the user's key id."""
    _, b = keys
    pair = tls_pair(server_creator(pki.hub),
                    client_creator(b, hostname="hub.example", trust_root=str(pki.ca_path)))
    assert pair.client.peer_id == pki.hub.peer_id
    assert pair.server.peer_id == b.account_id


def test_hub_hostname_and_pin_together(keys, pki):
    """Name check and key pin can be combined; PEM bytes work as a trust root."""
    _, b = keys
    pair = tls_pair(server_creator(pki.hub),
                    client_creator(b, hostname="hub.example", trust_root=pki.ca_path.read_bytes(),
                                   expected_peer_id=pki.hub.peer_id))
    assert pair.client.peer_id == pki.hub.peer_id


def test_hub_with_ip_address_certificate(keys, pki):
    """A hub certificate for a literal IP address is checked as an iPAddress SAN."""
    _, b = keys
    hub = pki.hub_material("127.0.0.1")
    pair = tls_pair(server_creator(hub),
                    client_creator(b, hostname="127.0.0.1", trust_root=str(pki.ca_path)))
    assert pair.client.peer_id == hub.peer_id


@pytest.mark.allow_logged_errors
def test_wrong_hostname_aborts(keys, pki, fail_on_logged_errors):
    """A hub certificate for another name aborts the handshake with a logged reason."""
    _, b = keys
    pair = tls_pair(server_creator(pki.hub),
                    client_creator(b, hostname="evil.example", trust_root=str(pki.ca_path)))
    assert not pair.client.handshake_done and not pair.server.handshake_done
    assert any("not valid for host evil.example" in str(e.get("reason"))
               for e in fail_on_logged_errors)


@pytest.mark.allow_logged_errors
def test_untrusted_ca_aborts(keys, pki, tmp_path, fail_on_logged_errors):
    """A hub certificate from a CA the user does not trust aborts the handshake."""
    _, b = keys
    other = make_pki(tmp_path, "hub.example")
    pair = tls_pair(server_creator(other.hub),
                    client_creator(b, hostname="hub.example", trust_root=str(pki.ca_path)))
    assert not pair.client.handshake_done and not pair.server.handshake_done
    assert any("not trusted" in str(e.get("reason")) for e in fail_on_logged_errors)


@pytest.mark.allow_logged_errors
def test_self_signed_node_cert_fails_hostname_check(keys):
    """A node's self-signed certificate never passes a host name check."""
    a, b = keys
    pair = tls_pair(server_creator(a), client_creator(b, hostname="hub.example"))
    assert not pair.client.handshake_done


def test_ecdsa_hub_certificate_gets_x_id(keys, pki):
    """A non-Ed25519 hub certificate works and is identified by its documented x-id."""
    _, b = keys
    hub = pki.hub_material("hub.example", kind="ecdsa")
    assert hub.peer_id.startswith("x")
    pair = tls_pair(server_creator(hub),
                    client_creator(b, hostname="hub.example", trust_root=str(pki.ca_path),
                                   expected_peer_id=hub.peer_id))
    assert pair.client.peer_id == hub.peer_id and pair.client.tls_version in _VERSIONS


def test_hub_presents_its_tls_cert_as_client_too(keys, pki):
    """A hub connecting out with its CA-signed material is seen under the same id it serves with."""
    a, _ = keys
    pair = tls_pair(server_creator(a), client_creator(pki.hub))
    assert pair.server.peer_id == pki.hub.peer_id


def test_peer_id_before_handshake_raises():
    """Asking for the peer id of a transport without a peer certificate is a clear error."""

    class NoCert:
        def getPeerCertificate(self):
            return None

    with pytest.raises(PeerIdentityError):
        peer_id_of_transport(NoCert())
    with pytest.raises(PeerIdentityError):
        peer_id_of_transport(object())


def test_bad_arguments_rejected(keys, tmp_path):
    """Creators reject a malformed pin, a missing trust root file, and non-key material."""
    a, _ = keys
    with pytest.raises(ValueError):
        client_creator(a, expected_peer_id="nope")
    with pytest.raises(ValueError):
        client_creator(a, hostname="hub.example", trust_root=str(tmp_path / "missing.pem"))
    with pytest.raises(TypeError):
        server_creator("not material")  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_real_socket_handshake(keys, pki):
    """Over real TCP on 127.0.0.1, a pinned mutual handshake completes within a deadline."""
    from twisted.internet import reactor

    a, b = keys
    server_factory = recording_factory()
    servers = []
    build = server_factory.buildProtocol

    def keep(addr):
        p = build(addr)
        servers.append(p)
        return p

    server_factory.buildProtocol = keep
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        TLSMemoryBIOFactory(server_creator(a), False, server_factory)
    )
    try:
        endpoint = wrapClientTLS(
            client_creator(b, expected_peer_id=a.account_id),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5),
        )
        client = await endpoint.connect(recording_factory())
        peer = await client.handshake.addTimeout(5, reactor)
        assert peer == a.account_id
        assert client.tls_version == "TLSv1.3"
        await servers[0].handshake.addTimeout(5, reactor)
        assert servers[0].peer_id == b.account_id
        client.transport.loseConnection()
        await client.lost.addTimeout(5, reactor)
        await servers[0].lost.addTimeout(5, reactor)
    finally:
        await port.stopListening()


@pytest.mark.allow_logged_errors
@pytest_twisted.ensureDeferred
async def test_real_socket_wrong_pin_closes(keys):
    """Over real TCP, a wrong pin closes the connection before any application data flows."""
    from twisted.internet import reactor

    a, b = keys
    server_factory = recording_factory(greeting=b"secret")
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        TLSMemoryBIOFactory(server_creator(a), False, server_factory)
    )
    try:
        endpoint = wrapClientTLS(
            client_creator(b, expected_peer_id=NodeKey.generate().account_id),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5),
        )
        client = await endpoint.connect(recording_factory())
        await client.lost.addTimeout(5, reactor)
        assert not client.handshake_done and client.received == b""
        assert not client.handshake.called
    finally:
        await port.stopListening()


def test_material_mismatch_rejected(keys):
    """Certificate material whose key does not match the certificate is refused up front."""
    a, b = keys
    from shiftpeer.identity.certs import CertificateError

    with pytest.raises(CertificateError):
        CertMaterial((a.certificate(),), b.private_key)


def test_committed_test_ca_signs_usable_hub_certs(keys, tmp_path):
    """A hub certificate made by make-certs from the committed TEST CA verifies against certs/test-ca.pem."""
    from shiftpeer.identity.makecerts import main

    root = Path(__file__).resolve().parent.parent / "certs"
    assert main([str(tmp_path), "--host", "hub.test", "--ca-cert", str(root / "test-ca.pem"),
                 "--ca-key", str(root / "test-ca.TEST-ONLY-NOT-SECRET.key")]) == 0
    hub = CertMaterial.from_files(tmp_path / "hub.test.pem", tmp_path / "hub.test.key")
    _, b = keys
    pair = tls_pair(server_creator(hub),
                    client_creator(b, hostname="hub.test", trust_root=str(tmp_path / "ca.pem")))
    assert pair.client.peer_id == hub.peer_id and pair.server.peer_id == b.account_id

