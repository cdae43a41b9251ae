"""User and group names: one strict shape, so a name can never play path games in a database name.

A name becomes part of database names (``inbox/<user>``, ``messages/<user>``, ``group/<name>``), so it
may hold only lower-case letters, digits, ``.``, ``-`` and ``_`` and starts with a letter or digit: no
``/``, so no path games, and no upper case to fold.
"""

from __future__ import annotations

import re
from typing import Any

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class FlowError(Exception):
    """A request a flow refuses; ``code`` is a short machine name, the message is for a person."""

    code = "refused"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


def is_name(value: Any) -> bool:
    """True when value is a well-formed user or group name."""
    return isinstance(value, str) and _NAME_RE.match(value) is not None


def check_name(value: Any, what: str = "name") -> str:
    """Return value when it is a well-formed name, else raise FlowError saying what is allowed."""
    if not is_name(value):
        raise FlowError(
            f"{what} {str(value)[:40]!r} is not valid: use 1-64 lower-case letters, digits, '.', '-' or '_',"
            " starting with a letter or digit",
            "bad_name",
        )
    return value


def inbox_db(user: str) -> str:
    """The hub database holding shifts sent to ``user``."""
    return "inbox/" + check_name(user, "user name")


def messages_db(user: str) -> str:
    """The hub database holding notifications for ``user``."""
    return "messages/" + check_name(user, "user name")


def group_db(group: str) -> str:
    """The hub database holding what was published to ``group``."""
    return "group/" + check_name(group, "group name")


def split_db(dbname: str) -> tuple[str, str | None]:
    """Split ``kind/name`` into (kind, name) when name is a well-formed name, else (dbname, None)."""
    kind, sep, rest = dbname.partition("/")
    if sep and is_name(rest):
        return kind, rest
    return dbname, None
