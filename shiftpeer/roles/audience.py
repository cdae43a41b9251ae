"""The signed audience of a published document, and routing by it.

A published body carries ``audience = {"public": bool, "groups": [names], "to": [user names]}``.
It is inside the signed body, so a relay cannot widen it; the hub writes a document to ``master``,
``group/<g>`` or ``inbox/<u>`` only when the audience names that target. Every hub database that feeds
``shared`` gives its documents one visibility token, the key of the store's visibility index.
"""

from __future__ import annotations

from typing import Any

from shiftpeer.roles.names import FlowError, check_name, split_db

MAX_TARGETS = 256
PUBLIC_TOKEN = "public"


def empty() -> dict:
    """The audience of an unpublished shift."""
    return {"public": False, "groups": [], "to": []}


def of(body: dict) -> dict:
    """The audience a body carries (empty when it has none or a malformed one)."""
    aud = body.get("audience") if isinstance(body, dict) else None
    if not isinstance(aud, dict):
        return empty()
    groups = aud.get("groups") if isinstance(aud.get("groups"), list) else []
    to = aud.get("to") if isinstance(aud.get("to"), list) else []
    return {"public": aud.get("public") is True, "groups": [g for g in groups if isinstance(g, str)],
            "to": [u for u in to if isinstance(u, str)]}


def widen(old: dict, *, public: bool = False, groups: list[Any] = (), to: list[Any] = ()) -> dict:
    """The union of an audience and new targets: publishing again keeps every earlier target."""
    new_groups = [check_name(g, "group name") for g in groups]
    new_to = [check_name(u, "user name") for u in to]
    merged = {
        "public": bool(old.get("public")) or bool(public),
        "groups": sorted(set(old.get("groups", [])) | set(new_groups)),
        "to": sorted(set(old.get("to", [])) | set(new_to)),
    }
    if len(merged["groups"]) + len(merged["to"]) > MAX_TARGETS:
        raise FlowError(f"a shift may be sent to at most {MAX_TARGETS} groups and users", "too_many_targets")
    return merged


def targets(aud: dict) -> list[str]:
    """The delivery targets an audience names, ``group:<g>`` and ``user:<u>`` (public goes by replication)."""
    return [f"group:{g}" for g in aud.get("groups", [])] + [f"user:{u}" for u in aud.get("to", [])]


def without(aud: dict, refused: list[str]) -> dict:
    """The audience less some delivery targets (``group:<g>``, ``user:<u>``) the hub refused."""
    gone = set(refused)
    return {"public": aud["public"], "groups": [g for g in aud["groups"] if f"group:{g}" not in gone],
            "to": [u for u in aud["to"] if f"user:{u}" not in gone]}


def target_db(target: str) -> str:
    """The hub database a delivery target writes to; FlowError for a malformed target."""
    kind, _, name = target.partition(":")
    if kind == "group":
        return "group/" + check_name(name, "group name")
    if kind == "user":
        return "inbox/" + check_name(name, "user name")
    raise FlowError(f"unknown target {target[:60]!r} (use group:NAME or user:NAME)", "bad_target")


def admits(aud: dict, dbname: str) -> bool:
    """Does the signed audience allow this hub database to hold the document?"""
    if dbname == "master":
        return aud["public"]
    kind, name = split_db(dbname)
    if kind == "group":
        return name in aud["groups"]
    if kind == "inbox":
        return name in aud["to"]
    return False


def vis_token(dbname: str) -> str | None:
    """The visibility token a hub database gives its documents in ``shared`` (None: not merged)."""
    if dbname == "master":
        return PUBLIC_TOKEN
    kind, name = split_db(dbname)
    if kind == "group":
        return f"group:{name}"
    if kind == "inbox":
        return f"user:{name}"
    return None


def source_db(token: str) -> str | None:
    """The hub database that gives its documents ``token`` in ``shared`` (``vis_token`` the other way round;
    None for a token no database gives, such as ``author:``)."""
    if token == PUBLIC_TOKEN:
        return "master"
    kind, _, name = token.partition(":")
    prefix = {"group": "group/", "user": "inbox/"}.get(kind)
    return prefix + name if prefix is not None and name else None


def names_token(aud: dict, token: str) -> bool:
    """Does the signed audience reach those who hold this visibility token: name the place it stands for
    (``public``, ``group:<g>``, ``user:<u>``)? An ``author:`` token always (an author sees what they wrote,
    and what is written on their shifts, wherever it went)."""
    if token == PUBLIC_TOKEN:
        return aud["public"]
    kind, _, name = token.partition(":")
    if kind == "group":
        return name in aud["groups"]
    if kind == "user":
        return name in aud["to"]
    return kind == "author"


def author_token(account_id: str) -> str:
    """The token that lets an author see everything they wrote, whatever its audience."""
    return f"author:{account_id}"
