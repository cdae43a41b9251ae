"""The LMDB document store (see docs/store.md and the Store section of docs/internals.md)."""

from .database import Change, Database, Doc
from .errors import ConflictError, InvalidDocument, NotFound, SchemaVersionError, StoreError
from .store import SCHEMA_VERSION, Store, WriteTxn

__all__ = [
    "Change",
    "ConflictError",
    "Database",
    "Doc",
    "InvalidDocument",
    "NotFound",
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "Store",
    "StoreError",
    "WriteTxn",
]
