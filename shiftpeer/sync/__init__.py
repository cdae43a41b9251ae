"""The sync protocol: framing, message schemas, replication, authorisation (docs/protocol.md)."""

from shiftpeer.sync.authz import AllowAll, DenyAll, Policy, StaticPolicy
from shiftpeer.sync.messages import PROTOCOL_VERSION, ProtocolError
from shiftpeer.sync.protocol import RemoteError, SyncFactory, SyncProtocol
from shiftpeer.sync.replication import Replication, SyncError

__all__ = ["AllowAll", "DenyAll", "Policy", "StaticPolicy", "PROTOCOL_VERSION", "ProtocolError",
           "RemoteError", "SyncFactory", "SyncProtocol", "Replication", "SyncError"]
