"""Shared helpers for identity and TLS tests: certificates made on the fly, TLS over iosim."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from zope.interface import implementer

from shiftpeer.identity import NodeKey
from shiftpeer.identity.certs import (
    CertMaterial,
    cert_pem,
    generate_private_key,
    make_ca,
    make_hub_cert,
)
from shiftpeer.identity.tls import negotiated_protocol_version, peer_id_of_transport


@dataclass
class TestPKI:
    """A throwaway CA and a hub certificate, with the CA written to a PEM file."""

    ca_key: Any
    ca_cert: Any
    ca_path: Path
    hub_host: str
    hub: CertMaterial

    def hub_material(self, host: str, kind: str = "ed25519") -> CertMaterial:
        """Another CA-signed hub certificate for host."""
        key, cert = make_hub_cert(self.ca_key, self.ca_cert, host, generate_private_key(kind))
        return CertMaterial((cert,), key)


def make_pki(directory: Path, host: str = "hub.example", kind: str = "ed25519") -> TestPKI:
    """A fresh CA (its cert written to directory/ca.pem) and a hub certificate for host."""
    ca_key, ca_cert = make_ca("shiftpeer TEST CA (tests only)")
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(cert_pem(ca_cert))
    key, cert = make_hub_cert(ca_key, ca_cert, host, generate_private_key(kind))
    return TestPKI(ca_key, ca_cert, ca_path, host, CertMaterial((cert,), key))


@implementer(IHandshakeListener)
class RecordingProtocol(Protocol):
    """Records the peer id and TLS version at handshake, the bytes received, and how it ended."""

    def __init__(self) -> None:
        self.peer_id: str | None = None
        self.tls_version: str | None = None
        self.received = b""
        self.lost_reason = None
        self.handshake_done = False
        self.handshake = Deferred()
        self.lost = Deferred()

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        self.peer_id = peer_id_of_transport(self.transport)
        self.tls_version = negotiated_protocol_version(self.transport)
        if getattr(self.factory, "greeting", None):
            self.transport.write(self.factory.greeting)
        self.handshake.callback(self.peer_id)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        self.lost_reason = reason
        self.lost.callback(None)


def recording_factory(greeting: bytes = b"") -> Factory:
    f = Factory.forProtocol(RecordingProtocol)
    f.greeting = greeting
    return f


@dataclass
class TLSPair:
    """Both ends of an in-memory TLS connection and the inner protocols (kept: TLS drops them)."""

    client: RecordingProtocol
    server: RecordingProtocol
    pump: iosim.IOPump
    clock: Clock
    bytes_c2s: int = 0
    bytes_s2c: int = 0
    chunk: int | None = None

    def run(self, rounds: int = 200) -> None:
        """Move bytes both ways (in chunks of `chunk` bytes if set) until the wire is quiet."""
        for _ in range(rounds):
            self.clock.advance(0)
            c = self.pump.clientIO.getOutBuffer() or b""
            s = self.pump.serverIO.getOutBuffer() or b""
            self.bytes_c2s += len(c)
            self.bytes_s2c += len(s)
            step = self.chunk or max(len(c), len(s), 1)
            for i in range(0, len(c), step):
                self.pump.serverIO.bufferReceived(c[i : i + step])
            for i in range(0, len(s), step):
                self.pump.clientIO.bufferReceived(s[i : i + step])
            if not c and not s and not self.pump.pump():
                return


def tls_pair(server_creator, client_creator, *, chunk: int | None = None, greeting: bytes = b"") -> TLSPair:
    """Connect a TLS server and client over iosim with a shared Clock, then run the handshake."""
    clock = Clock()
    sf = TLSMemoryBIOFactory(server_creator, False, recording_factory(greeting), clock=clock)
    cf = TLSMemoryBIOFactory(client_creator, True, recording_factory(greeting), clock=clock)
    inner: dict[str, RecordingProtocol] = {}

    def server():
        p = sf.buildProtocol(IPv4Address("TCP", "127.0.0.1", 7471))
        inner["server"] = p.wrappedProtocol
        return p

    def client():
        p = cf.buildProtocol(IPv4Address("TCP", "127.0.0.1", 7471))
        inner["client"] = p.wrappedProtocol
        return p

    _, _, pump = iosim.connectedServerAndClient(server, client, greet=False, clock=clock)
    pair = TLSPair(inner["client"], inner["server"], pump, clock, chunk=chunk)
    pair.run()
    return pair


__all__ = ["NodeKey", "TestPKI", "make_pki", "RecordingProtocol", "TLSPair", "tls_pair", "field"]


def signed_doc(key: NodeKey, docid: str, body: dict, deleted: bool = False, parent: str | None = None) -> dict:
    """A replicated document as its author's node sends it: the real revision of `body` under `parent`
    (every receiver recomputes it), signed with `key`, and its history."""
    from shiftpeer.identity.signing import sign_doc
    from shiftpeer.store.codec import encode_canonical
    from shiftpeer.store.revs import rev_from_bytes

    rev = rev_from_bytes(parent, deleted, encode_canonical(body))
    return {"id": docid, "rev": rev, "deleted": deleted, "body": body,
            "sig": sign_doc(key, docid, rev, body, deleted), "history": [rev] if parent is None else [rev, parent]}


def count_signature_checks(monkeypatch: Any) -> list[bytes]:
    """Count the signature checks from now on (identity/signing.py check_signature, the one check every path
    calls): the list of payloads each was over."""
    import shiftpeer.identity.signing as signing

    calls: list[bytes] = []
    real = signing.check_signature

    def counting(pk: bytes, msg: bytes, sig: bytes) -> bool:
        calls.append(msg)
        return real(pk, msg, sig)

    monkeypatch.setattr(signing, "check_signature", counting)
    return calls
