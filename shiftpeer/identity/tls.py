"""TLS connection creators for Twisted's TLSMemoryBIOFactory: mutual TLS where the key is the identity.

Both sides present a certificate. The server requires one but accepts any (self-signed node
certificates are the norm); the peer id is derived from the leaf's public key
(`peer_id_of_transport`). The client optionally checks the server in the verify callback:

* ``hostname``: the chain must verify against ``trust_root`` (a PEM file, PEM bytes, or the
  platform's trust store) and the leaf must match the name (``service_identity``);
* ``expected_peer_id``: the leaf's key must be that peer's (``hmac.compare_digest``).

A failed check makes the verify callback return false, which aborts the handshake with a TLS
alert; the reason is logged. TLS 1.2 is the minimum, 1.3 is preferred.

Usage, either side, over any transport (iosim, TCP endpoints)::

    TLSFactory(server_creator(material), False, factory)
    TLSFactory(client_creator(key, expected_peer_id=pid), True, factory)

The wrapped protocol learns the peer in ``IHandshakeListener.handshakeCompleted`` by calling
``peer_id_of_transport(self.transport)``.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path
from typing import Any, Union

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from .certs import CertMaterial
from .keys import NodeKey, is_peer_id, peer_id_of_public_key

log = Logger()

Material = Union[NodeKey, CertMaterial]
TrustRoot = Union[str, os.PathLike, bytes, None]

# TLS 1.2 only with forward-secret AEAD suites; TLS 1.3 suites are OpenSSL's (all AEAD).
_TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20"
_VERIFY_DEPTH = 9
#: Key exchange groups. OpenSSL 3.5+ would otherwise lead with the post-quantum hybrid
#: X25519MLKEM768, whose key share (1.2 KB) and reply (1.1 KB) alone blow the 2 KB budget of a
#: no-op reconnect. Change this to b"X25519MLKEM768:X25519:P-256" to trade bytes for PQ secrecy.
TLS_GROUPS = b"X25519:P-256"


class TLSFactory(TLSMemoryBIOFactory):
    """TLSMemoryBIOFactory whose connections hand every write to TLS at once.

    Twisted's default protocol (``BufferingTLSTransport``) holds writes under 64 KB until the next reactor
    turn, to merge many small ones. SyncProtocol already merges the frames it answers one input slice with
    into one write, so that wait only delays the frames sent on their own: a live change (a turn on the
    path from a commit to the peer), a ``need``, an ``ack``. It also copied every large frame twice."""

    protocol = TLSMemoryBIOProtocol


class PeerIdentityError(Exception):
    """The transport has no peer certificate (handshake not done, or not TLS)."""


def _material(m: Material) -> CertMaterial:
    if isinstance(m, NodeKey):
        return CertMaterial.from_node_key(m)
    if isinstance(m, CertMaterial):
        return m
    raise TypeError(f"expected a NodeKey or CertMaterial, not {type(m).__name__}")


def _base_context(material: CertMaterial) -> SSL.Context:
    """A context with our policy and our certificate chain loaded."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(
        SSL.OP_NO_COMPRESSION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_NO_RENEGOTIATION
        | SSL.OP_NO_TICKET
    )
    ctx.set_cipher_list(_TLS12_CIPHERS)
    _set_groups(ctx, TLS_GROUPS)
    # Every connection is a fresh full handshake (Twisted never resumes client sessions), so
    # session caches and tickets would only add bytes to each handshake.
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.use_certificate(material.chain[0])
    for extra in material.chain[1:]:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(material.private_key)
    ctx.check_privatekey()
    ctx.set_verify_depth(_VERIFY_DEPTH)
    return ctx


def _set_groups(ctx: SSL.Context, groups: bytes) -> None:
    """Restrict key exchange groups (pyOpenSSL has no public call for it)."""
    from OpenSSL._util import lib

    fn = getattr(lib, "SSL_CTX_set1_curves_list", None)
    if fn is None:  # pragma: no cover - older bindings: keep OpenSSL's defaults
        log.warn("TLS: cannot restrict key exchange groups; handshakes will be larger")
        return
    if fn(ctx._context, groups) != 1:
        raise ValueError(f"OpenSSL rejected the TLS group list {groups!r}")


def _peer_address(conn: SSL.Connection) -> str:
    proto = conn.get_app_data()
    try:
        return str(proto.transport.getPeer())
    except Exception:
        return "?"


def _verify_error_string(errno: int) -> str:
    try:
        from OpenSSL._util import ffi, lib

        return ffi.string(lib.X509_verify_cert_error_string(errno)).decode()
    except Exception:  # pragma: no cover - binding missing
        return f"X509 error {errno}"


def peer_id_of_cert(cert: Any) -> str:
    """The peer id of a certificate (pyOpenSSL X509 or `cryptography` x509.Certificate)."""
    if isinstance(cert, crypto.X509):
        cert = cert.to_cryptography()
    return peer_id_of_public_key(cert.public_key())


def peer_id_of_transport(transport: Any) -> str:
    """The authenticated peer's id, from a TLS transport after the handshake completed."""
    get = getattr(transport, "getPeerCertificate", None)
    cert = get() if get is not None else None
    if cert is None:
        raise PeerIdentityError("no peer certificate: the TLS handshake has not completed")
    return peer_id_of_cert(cert)


@implementer(IOpenSSLServerConnectionCreator)
class ServerCreator:
    """Server side: presents our certificate, requires a client certificate, accepts any key."""

    def __init__(self, material: Material) -> None:
        self.material = _material(material)
        self.peer_id = self.material.peer_id
        ctx = _base_context(self.material)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        # A session id context is required by OpenSSL whenever client certificates are verified.
        ctx.set_session_id(b"shiftpeer")
        self._ctx = ctx

    @staticmethod
    def _verify(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        # Any chain: self-signed node certificates are the norm, the leaf key is the identity and
        # the protocol above decides what that identity may do.
        return True

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """A fresh OpenSSL connection for one accepted transport."""
        return SSL.Connection(self._ctx, None)


@implementer(IOpenSSLClientConnectionCreator)
class ClientCreator:
    """Client side: presents our certificate; checks the server's name and/or pins its key."""

    def __init__(
        self,
        material: Material,
        *,
        hostname: str | None = None,
        trust_root: TrustRoot = None,
        expected_peer_id: str | None = None,
    ) -> None:
        self.material = _material(material)
        self.peer_id = self.material.peer_id
        if expected_peer_id is not None and not is_peer_id(expected_peer_id):
            raise ValueError(f"not a peer id: {expected_peer_id!r}")
        if trust_root is not None and hostname is None:
            raise ValueError("trust_root is only used with hostname")
        self.hostname = hostname
        self.expected_peer_id = expected_peer_id
        self._ip = None
        if hostname is not None:
            try:
                self._ip = ipaddress.ip_address(hostname)
            except ValueError:
                self._ip = None
        ctx = _base_context(self.material)
        if hostname is not None:
            if trust_root is None:
                ctx.set_default_verify_paths()
            elif isinstance(trust_root, bytes):
                store = ctx.get_cert_store()
                for c in x509.load_pem_x509_certificates(trust_root):
                    store.add_cert(crypto.X509.from_cryptography(c))
            else:
                path = Path(trust_root)
                if not path.is_file():
                    raise ValueError(f"trust root {path} is not a file")
                ctx.load_verify_locations(str(path))
        ctx.set_verify(SSL.VERIFY_PEER, self._verify)
        self._ctx = ctx

    def _refuse(self, conn: SSL.Connection, reason: str, **fields: Any) -> bool:
        # Kept on the TLS protocol (the wrapped protocol's transport) so the peer's service can say why
        # it is not connected (``tls_refusal``), not just that the handshake failed.
        proto = conn.get_app_data()
        if proto is not None:
            proto.tls_refusal = reason
        log.error(
            "TLS: refusing server {address}: {reason}",
            address=_peer_address(conn),
            reason=reason,
            **fields,
        )
        return False

    def _verify(self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        if self.hostname is not None:
            if not ok:
                return self._refuse(
                    conn,
                    f"certificate chain for {self.hostname} not trusted (depth {depth}: "
                    f"{_verify_error_string(errno)})",
                )
            if depth == 0:
                leaf = cert.to_cryptography()
                try:
                    if self._ip is not None:
                        verify_certificate_ip_address(leaf, str(self._ip))
                    else:
                        verify_certificate_hostname(leaf, self.hostname)
                except VerificationError as e:
                    return self._refuse(
                        conn, f"certificate is not valid for host {self.hostname}: {e}"
                    )
        if depth == 0 and self.expected_peer_id is not None:
            got = peer_id_of_cert(cert)
            if not hmac.compare_digest(got.encode(), self.expected_peer_id.encode()):
                return self._refuse(
                    conn,
                    f"pinned peer id mismatch (expected {self.expected_peer_id}, got {got})",
                )
        return True

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """A fresh OpenSSL connection for one outgoing transport (sends SNI for a DNS name)."""
        conn = SSL.Connection(self._ctx, None)
        if self.hostname is not None and self._ip is None:
            conn.set_tlsext_host_name(self.hostname.encode("idna"))
        return conn


def server_creator(material: Material) -> ServerCreator:
    """The server-side creator for TLSMemoryBIOFactory(creator, False, factory)."""
    return ServerCreator(material)


def client_creator(
    node_key: Material,
    *,
    hostname: str | None = None,
    trust_root: TrustRoot = None,
    expected_peer_id: str | None = None,
) -> ClientCreator:
    """The client-side creator for TLSMemoryBIOFactory(creator, True, factory)."""
    return ClientCreator(
        node_key, hostname=hostname, trust_root=trust_root, expected_peer_id=expected_peer_id
    )


def tls_refusal(transport: Any) -> str | None:
    """Why our client side refused the server's certificate on this transport, or None."""
    return getattr(transport, "tls_refusal", None)


def negotiated_protocol_version(transport: Any) -> str | None:
    """The TLS version in use ("TLSv1.3", "TLSv1.2"), for logs and tests."""
    conn = getattr(transport, "_tlsConnection", None)
    return conn.get_protocol_version_name() if conn is not None else None
