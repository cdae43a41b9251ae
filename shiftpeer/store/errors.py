"""Store errors: one hierarchy so callers can catch StoreError, and ValueError for bad input."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class ConflictError(StoreError):
    """A local edit named a revision that is not the document's current one."""


class InvalidDocument(StoreError, ValueError):
    """Input the store refuses (bad body, id, revision, size, database name); nothing was written."""


class NotFound(StoreError, LookupError):
    """The named database (or document, where a document is required) does not exist."""


class SchemaVersionError(StoreError):
    """The LMDB environment was written by a store of a schema version this code does not know."""
