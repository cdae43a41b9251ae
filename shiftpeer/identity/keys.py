"""Ed25519 node keys and the account ids derived from them.

An account id is the base32 (lowercase, no padding) encoding of the raw 32-byte Ed25519 public
key: 52 characters. A peer whose certificate key is not Ed25519 (a hub certificate from a real CA)
gets the id ``"x" + base32(sha256(SubjectPublicKeyInfo DER))``: 53 characters, so the two kinds can
never be confused. Only the first kind can sign shifts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

try:  # ed25519-zebra (Rust, curve25519-dalek): ~1.6x libsodium's verify on this machine (docs/identity.md)
    from ed25519_zebra import ed_verify as _zebra_verify
except ImportError:  # pragma: no cover - no wheel for this platform: libsodium checks every signature
    _zebra_verify = None

KEY_FILE = "node.key"
CERT_FILE = "node.pem"

ACCOUNT_ID_LEN = 52
_ACCOUNT_ID_RE = re.compile(r"^[a-z2-7]{52}$")
_FOREIGN_ID_RE = re.compile(r"^x[a-z2-7]{52}$")


class KeyFileError(Exception):
    """A key file is missing, unreadable, or holds something other than what we need."""


def b32(raw: bytes) -> str:
    """Lowercase unpadded base32: short, case-insensitive-safe, file-name-safe."""
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def account_id_of_raw(raw_public_key: bytes) -> str:
    """The account id of a raw 32-byte Ed25519 public key."""
    if len(raw_public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return b32(raw_public_key)


def is_account_id(value: object) -> bool:
    """True for a well-formed Ed25519 account id (the kind that can sign shifts)."""
    return isinstance(value, str) and _ACCOUNT_ID_RE.match(value) is not None


def is_peer_id(value: object) -> bool:
    """True for any well-formed peer id: an account id or an ``x``-prefixed foreign key id."""
    return isinstance(value, str) and (
        _ACCOUNT_ID_RE.match(value) is not None or _FOREIGN_ID_RE.match(value) is not None
    )


@functools.lru_cache(maxsize=65536)
def public_key_of(account_id: str) -> bytes:
    """The raw 32-byte Ed25519 public key an account id names; ValueError if it names none."""
    if not is_account_id(account_id):
        raise ValueError(f"not an account id: {account_id!r}")
    try:
        return base64.b32decode(account_id.upper() + "====")
    except binascii.Error as e:  # pragma: no cover - the regex already rules this out
        raise ValueError(f"not an account id: {account_id!r}") from e


def peer_id_of_public_key(public_key: object) -> str:
    """The peer id of any certificate public key (Ed25519: the account id; else the x-id)."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return account_id_of_raw(
            public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
    spki = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "x" + b32(hashlib.sha256(spki).digest())


def verify(account_id: str, msg: bytes, sig: bytes) -> bool:
    """True when sig is account_id's Ed25519 signature of msg; never raises on bad input."""
    if not isinstance(sig, (bytes, bytearray)) or len(sig) != 64:
        return False
    try:
        pk = public_key_of(account_id)
    except (ValueError, TypeError):
        return False
    return verify_with_key(pk, msg, bytes(sig))


#: Which library checks signatures: "ed25519-zebra" (ZIP-215 rules) where its wheel installed, else "libsodium".
VERIFIER = "ed25519-zebra" if _zebra_verify is not None else "libsodium"


@functools.lru_cache(maxsize=65536)
def usable_public_key(pk: bytes) -> bool:
    """True for a key that can sign: a canonical encoding of a point in the prime-order subgroup
    (libsodium's `crypto_core_ed25519_is_valid_point`). Small-order keys must never verify: under the
    cofactored check every Ed25519 library following ZIP-215 uses, anyone can make a signature that a
    small-order key "signed". Checked once per key (about one scalar multiplication), then cached."""
    return (type(pk) is bytes and len(pk) == 32
            and bool(nacl.bindings.crypto_core_ed25519_is_valid_point(pk)))


def verify_with_key(pk: bytes, msg: bytes, sig: bytes) -> bool:
    """True when sig is the Ed25519 signature of msg by public key pk; never raises on bad input.

    The one signature check of a node (inline, in the verification processes' program, and in threads):
    the key must be `usable_public_key`, the signature 64 bytes with a canonical scalar; then
    ed25519-zebra's check (cofactored), or libsodium's where zebra is not installed. The two agree on
    every signature made by a signing library; they differ only on signatures an author's own key was
    used to craft with a small-order component, and neither lets anyone else forge one (docs/identity.md).
    zebra holds the GIL during the ~60 us check, libsodium releases it."""
    if type(sig) is not bytes or len(sig) != 64 or type(pk) is not bytes or not usable_public_key(pk):
        return False
    if type(msg) is not bytes:
        try:
            msg = bytes(msg)
        except TypeError:
            return False
    if _zebra_verify is not None:
        return _zebra_verify(sig, msg, pk)
    try:
        nacl.bindings.crypto_sign_open(sig + msg, pk)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False
    return True


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only, never following or replacing a file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


class NodeKey:
    """A node's Ed25519 key pair: signs shifts (libsodium) and backs its TLS certificate."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._signing = nacl.signing.SigningKey(seed)
        self._secret: bytes = nacl.bindings.crypto_sign_seed_keypair(seed)[1]   # libsodium's 64-byte form
        self._private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key: bytes = bytes(self._signing.verify_key)
        self.account_id: str = account_id_of_raw(self.public_key)
        self._cert = None  # x509.Certificate, made or loaded lazily

    def __repr__(self) -> str:
        return f"<NodeKey {self.account_id}>"

    @classmethod
    def generate(cls) -> "NodeKey":
        """A fresh random key."""
        return cls(os.urandom(32))

    @classmethod
    def from_private_key(cls, private_key: ed25519.Ed25519PrivateKey) -> "NodeKey":
        """Wrap a `cryptography` Ed25519 private key (e.g. a hub's TLS key)."""
        seed = private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(seed)

    @classmethod
    def from_pem(cls, data: bytes) -> "NodeKey":
        """Parse an unencrypted PEM PKCS#8 Ed25519 private key."""
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise KeyFileError(f"not an unencrypted PEM private key: {e}") from e
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise KeyFileError(f"not an Ed25519 key ({type(private).__name__})")
        return cls.from_private_key(private)

    @property
    def private_key(self) -> ed25519.Ed25519PrivateKey:
        """The `cryptography` private key, for certificates and TLS."""
        return self._private

    def private_pem(self) -> bytes:
        """PEM PKCS#8, the format OpenSSL and `--tls-key` both read."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, msg: bytes) -> bytes:
        """The 64-byte Ed25519 signature of msg: libsodium's through PyNaCl's binding, without the
        SignedMessage that `SigningKey.sign` builds around it (three more copies of the message, ~5 us of
        a ~45 us signature; every local put signs, on the live path too)."""
        return nacl.bindings.crypto_sign(msg, self._secret)[:64]

    def certificate(self):
        """This key's self-signed TLS certificate (made on first use; saved by `save`)."""
        if self._cert is None:
            from .certs import make_node_cert

            self._cert = make_node_cert(self)
        return self._cert

    def save(self, directory: str | os.PathLike) -> None:
        """Write node.key (mode 0600, refuses to overwrite) and node.pem into directory."""
        from cryptography.hazmat.primitives.serialization import Encoding

        d = Path(directory)
        _write_private(d / KEY_FILE, self.private_pem())
        (d / CERT_FILE).write_bytes(self.certificate().public_bytes(Encoding.PEM))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "NodeKey":
        """Read node.key (and node.pem if present and matching) from directory."""
        from cryptography import x509

        d = Path(directory)
        try:
            data = (d / KEY_FILE).read_bytes()
        except OSError as e:
            raise KeyFileError(f"cannot read the node key {d / KEY_FILE}: {e.strerror}") from e
        key = cls.from_pem(data)
        try:
            cert = x509.load_pem_x509_certificate((d / CERT_FILE).read_bytes())
        except (OSError, ValueError):
            cert = None
        if cert is not None and peer_id_of_public_key(cert.public_key()) == key.account_id:
            key._cert = cert
        return key
