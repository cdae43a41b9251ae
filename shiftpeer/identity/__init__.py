"""Identity: Ed25519 node keys and account ids, shift signatures, certificates, TLS.

See docs/identity.md. Submodules: `keys` (NodeKey, ids), `signing` (shift signatures: what is signed,
one check), `verifiers` (where batches are checked: inline, processes, threads), `certs` (X.509), `tls`
(Twisted connection creators with peer-key checks).
"""

from __future__ import annotations

from .keys import (
    KeyFileError,
    NodeKey,
    account_id_of_raw,
    is_account_id,
    is_peer_id,
    peer_id_of_public_key,
    public_key_of,
    verify,
)

__all__ = [
    "KeyFileError",
    "NodeKey",
    "account_id_of_raw",
    "is_account_id",
    "is_peer_id",
    "peer_id_of_public_key",
    "public_key_of",
    "verify",
]
