"""Groups: the membership model with its levels, and its persistence in the hub's ``hub/groups``.

Levels, lowest first: ``invited`` (may join, sees nothing), ``read`` (replicates the group),
``publish`` (may also write to it), ``admin`` (invites, removes, sets levels below admin),
``owner`` (everything, one per group). The rules are plain functions over a group dict so they are
tested without a store; ``Groups`` persists them and tells listeners whose access changed, which is
how the hub revokes live replications.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

from shiftpeer.roles.memo import Memo
from shiftpeer.roles.names import FlowError, check_name

GROUPS_DB = "hub/groups"
LEVELS = ("invited", "read", "publish", "admin", "owner")
RANK = {level: i for i, level in enumerate(LEVELS)}
#: Users whose memberships are remembered (``memberships`` runs on every query and replication check).
MEMBERSHIPS_REMEMBERED = 4096

log = Logger()


def rank(level: str | None) -> int:
    """The order of a level; -1 for a non-member."""
    return RANK.get(level, -1) if level is not None else -1


def check_level(level: Any, *, grantable: bool = True) -> str:
    """Return a valid level name (owner is never granted), else raise FlowError."""
    allowed = LEVELS[1:4] if grantable else LEVELS
    if level not in allowed:
        raise FlowError(f"level {level!r} is not one of {', '.join(allowed)}", "bad_level")
    return level


def new_group(name: str, owner: str, *, open: bool = False, join_level: str = "publish") -> dict:
    """A fresh group owned by ``owner``; an open group lets anyone join at ``join_level``."""
    return {"name": check_name(name, "group name"), "open": bool(open),
            "join_level": check_level(join_level), "members": {owner: "owner"}, "invites": {}}


def level_of(group: dict, user: str) -> str | None:
    """The user's level in the group, or None."""
    return group["members"].get(user)


def _require(group: dict, actor: str, level: str, doing: str) -> None:
    if rank(level_of(group, actor)) < RANK[level]:
        raise FlowError(f"only a group {level} or higher may {doing} in {group['name']!r}", "forbidden")


def invite(group: dict, actor: str, user: str, level: str = "publish") -> None:
    """An admin invites ``user`` to join at ``level`` (at most the admin's own grant power)."""
    _require(group, actor, "admin", "invite")
    level = check_level(level)
    if level == "admin" and level_of(group, actor) != "owner":
        raise FlowError("only the owner may invite an admin", "forbidden")
    if rank(level_of(group, user)) > RANK["invited"]:
        raise FlowError(f"{user!r} is already a member of {group['name']!r}", "already_member")
    group["members"][user] = "invited"
    group["invites"][user] = level


def join(group: dict, user: str) -> str:
    """Join with an invitation, or freely when the group is open; returns the level granted."""
    current = level_of(group, user)
    if rank(current) > RANK["invited"]:
        return current  # already in: joining again changes nothing
    if current == "invited":
        level = group["invites"].pop(user, "publish")
    elif group["open"]:
        level = group["join_level"]
    else:
        raise FlowError(f"group {group['name']!r} is by invitation only; ask an admin to invite you", "forbidden")
    group["members"][user] = level
    return level


def leave(group: dict, user: str) -> None:
    """A member (or invitee) leaves; the owner must hand the group over first."""
    current = level_of(group, user)
    if current is None:
        raise FlowError(f"you are not a member of {group['name']!r}", "not_member")
    if current == "owner":
        raise FlowError(f"the owner cannot leave {group['name']!r}: a group keeps its owner (there is no hand-over); "
                        f"to wind it down, remove its members ('shiftpeer group remove {group['name']} USER')",
                        "forbidden")
    del group["members"][user]
    group["invites"].pop(user, None)


def remove(group: dict, actor: str, user: str) -> None:
    """An admin removes a member of a lower level (the owner removes anyone but itself)."""
    _require(group, actor, "admin", "remove members")
    target = level_of(group, check_name(user, "user name"))
    if target is None:
        raise FlowError(f"{user!r} is not a member of {group['name']!r}", "not_member")
    if rank(target) >= rank(level_of(group, actor)):
        raise FlowError(f"you cannot remove {user!r}: their level is not below yours", "forbidden")
    del group["members"][user]
    group["invites"].pop(user, None)


def set_level(group: dict, actor: str, user: str, level: str) -> None:
    """Change a member's level: admins below admin, the owner up to admin; never to or from owner."""
    _require(group, actor, "admin", "change levels")
    level = check_level(level)
    target = level_of(group, check_name(user, "user name"))
    if target is None or target == "invited":
        raise FlowError(f"{user!r} is not a member of {group['name']!r} (invite them first)", "not_member")
    mine = rank(level_of(group, actor))
    if rank(target) >= mine or RANK[level] >= mine:
        raise FlowError("you may only change levels below your own", "forbidden")
    group["members"][user] = level


#: Called with (group name, user name) whenever that user's level in that group changed.
Listener = Callable[[str, str], None]


class Groups:
    """Persisted groups (``g:<name>``) and each user's memberships (``u:<user>``), with change listeners."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._db = store.create_database(GROUPS_DB)
        self._listeners: list[Listener] = []
        # Each user's memberships as last read; ``_save``, the only writer of ``u:<user>``, forgets a user's
        # before its listeners run and before anything else can ask.
        self._memberships = Memo(MEMBERSHIPS_REMEMBERED)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear about every membership change; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def get(self, name: str) -> dict | None:
        """The group dict, or None when there is no such group."""
        doc = self._db.get("g:" + name) if isinstance(name, str) else None
        return None if doc is None or doc.deleted else doc.body

    def require(self, name: Any) -> dict:
        """The group dict, or a FlowError naming the missing group."""
        group = self.get(check_name(name, "group name"))
        if group is None:
            raise FlowError(f"there is no group {name!r} on this hub", "no_group")
        return group

    def level(self, name: str, user: str | None) -> str | None:
        """``user``'s level in group ``name`` (None for a non-member or an unknown group)."""
        if user is None:
            return None
        return self.memberships(user).get(name)

    def memberships(self, user: str) -> dict[str, str]:
        """Every group ``user`` belongs to (invitations included), with the level."""
        known = self._memberships.get(user)
        if known is None:
            doc = self._db.get("u:" + user)
            known = {} if doc is None or doc.deleted else dict(doc.body.get("groups", {}))
            self._memberships.put(user, known)
        return dict(known)

    def create(self, name: Any, owner: str, *, open: bool = False, join_level: str = "publish") -> dict:
        """Create a group owned by ``owner`` and its ``group/<name>`` database; a taken name is refused."""
        group = new_group(name, owner, open=open, join_level=join_level)
        if self.get(group["name"]) is not None:
            raise FlowError(f"a group named {group['name']!r} already exists on this hub", "name_taken")
        self._store.create_database("group/" + group["name"])
        self._save(None, group, before={})
        return group

    def update(self, name: Any, change: Callable[[dict], Any]) -> Any:
        """Apply one model function to a copy of the group, persist it, and tell the listeners."""
        group = self.require(name)
        doc = self._db.get("g:" + group["name"])
        before = dict(group["members"])
        new = {**group, "members": dict(group["members"]), "invites": dict(group["invites"])}
        result = change(new)
        self._save(doc.rev, new, before=before)
        return result

    def _save(self, parent: str | None, group: dict, *, before: dict[str, str]) -> None:
        name = group["name"]
        after = group["members"]
        changed = [u for u in set(before) | set(after) if before.get(u) != after.get(u)]
        try:
            with self._store.write_txn() as txn:
                self._db.put("g:" + name, group, parent=parent, txn=txn)
                for user in changed:
                    udoc = self._db.get("u:" + user)
                    groups = {} if udoc is None or udoc.deleted else dict(udoc.body.get("groups", {}))
                    if user in after:
                        groups[name] = after[user]
                    else:
                        groups.pop(name, None)
                    self._db.put("u:" + user, {"groups": groups},
                                 parent=None if udoc is None else udoc.rev, txn=txn)
        finally:
            for user in changed:
                self._memberships.forget(user)
        for user in changed:
            log.info("group {group}: {user} is now {member_level}", group=name, user=user, member_level=after.get(user))
            for listener in list(self._listeners):
                listener(name, user)
