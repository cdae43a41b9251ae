"""X.509 certificates: self-signed node certificates, a CA, and CA-signed hub certificates.

A node certificate only carries its key (the key is the identity, nobody checks its names or
dates), so it is kept small for handshakes: subject = issuer = CN="shiftpeer node" (the id is
derived from the key, repeating it in the name would cost ~150 bytes per handshake), no
extensions, valid until 9999-12-31 (RFC 5280's "no well-defined expiration"). A hub certificate is an ordinary server certificate for a host name
(SAN dNSName, or iPAddress for a literal address), signed by a CA, checked by users with
`service_identity`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .keys import KeyFileError, NodeKey, _write_private, peer_id_of_public_key

PrivateKey = Union[ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]

NODE_CERT_NAME = "shiftpeer node"
_FOREVER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)


class CertificateError(Exception):
    """A certificate file is missing, unreadable, or does not match its key."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _sign_hash(key: PrivateKey):
    """Ed25519 signs without a separate hash; everything else uses SHA-256."""
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def generate_private_key(kind: str = "ed25519") -> PrivateKey:
    """A new private key: "ed25519" (node-sized handshakes) or "ecdsa" (P-256, like many CAs)."""
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {kind!r} (ed25519 or ecdsa)")


def make_node_cert(key: NodeKey) -> x509.Certificate:
    """The minimal self-signed certificate of a node key."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE_CERT_NAME)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_FOREVER)
        .sign(key.private_key, None)
    )


def make_ca(
    common_name: str, key: PrivateKey | None = None, *, days: int = 36500
) -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed CA that may sign leaf certificates only (pathlen 0)."""
    key = key or generate_private_key("ed25519")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, _sign_hash(key))
    )
    return key, cert


def _san_for(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_hub_cert(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    host: str,
    key: PrivateKey | None = None,
    *,
    days: int = 3650,
) -> tuple[PrivateKey, x509.Certificate]:
    """A CA-signed server (and client) certificate for host, checked with service_identity."""
    key = key or generate_private_key("ed25519")
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_san_for(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, _sign_hash(ca_key))
    )
    return key, cert


def cert_pem(*certs: x509.Certificate) -> bytes:
    """PEM text of one or more certificates (leaf first)."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PEM PKCS#8 of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_key(path: str | os.PathLike, key: PrivateKey) -> None:
    """Write a private key file with mode 0600 (refuses to overwrite)."""
    _write_private(Path(path), key_pem(key))


def load_cert_chain(path: str | os.PathLike) -> list[x509.Certificate]:
    """All certificates in a PEM file, leaf first; CertificateError when there are none."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CertificateError(f"cannot read certificate file {path}: {e.strerror}") from e
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CertificateError(f"{path} holds no PEM certificate: {e}") from e
    if not chain:
        raise CertificateError(f"{path} holds no PEM certificate")
    return chain


def load_private_key(path: str | os.PathLike) -> PrivateKey:
    """An unencrypted PEM private key from a file, with a clear error otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from e
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise KeyFileError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def _same_public_key(a, b) -> bool:
    return peer_id_of_public_key(a) == peer_id_of_public_key(b)


@dataclass(frozen=True)
class CertMaterial:
    """What a TLS endpoint presents: a certificate chain (leaf first) and the leaf's private key."""

    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKey

    def __post_init__(self) -> None:
        if not self.chain:
            raise CertificateError("a certificate chain needs at least the leaf certificate")
        if not _same_public_key(self.chain[0].public_key(), self.private_key.public_key()):
            raise CertificateError("the certificate does not belong to the private key")

    @property
    def peer_id(self) -> str:
        """The id peers derive from this material's leaf certificate."""
        return peer_id_of_public_key(self.chain[0].public_key())

    @classmethod
    def from_node_key(cls, key: NodeKey) -> "CertMaterial":
        """A node key with its self-signed certificate."""
        return cls((key.certificate(),), key.private_key)

    @classmethod
    def from_files(cls, cert_path: str | os.PathLike, key_path: str | os.PathLike) -> "CertMaterial":
        """A PEM certificate chain file and its PEM private key file (e.g. a hub's)."""
        return cls(tuple(load_cert_chain(cert_path)), load_private_key(key_path))
