"""Before a publish changes anything, ask the connected hub whether it will take each target named.

Without this a publish to a group the user may not write to, or to a user who does not exist, wrote
a revision, reported "pending" (or a refusal found only later) and narrowed the audience after the fact.
When the hub is connected it can answer up front: ``whoami`` gives this account's groups and levels,
``accounts`` which user names exist. A target it would refuse refuses the whole publish, naming the
target, and nothing is written. Offline nothing can be checked: the publish goes ahead and every target
(public included) is reported pending; a refusal at delivery still leaves the audience (publishing.py).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from shiftpeer.roles.groups import RANK, rank
from shiftpeer.roles.names import FlowError
from shiftpeer.roles.publishing import NotConnected

#: The hub's ``accounts`` RPC takes at most this many names per call (roles/hub.py).
NAMES_PER_CALL = 100


@inlineCallbacks
def check_targets(link: Any, groups: list[str], to: list[str]):
    """Fire with None when the hub will take every group and user named (or cannot be asked now);
    fail with FlowError naming each target it would refuse."""
    if not (groups or to) or not link.connected:
        return None
    try:
        info = yield link.call("whoami", {})
        if not info.get("name"):
            targets = ", ".join([f"group:{g}" for g in groups] + [f"user:{u}" for u in to])
            raise FlowError(f"not published to {targets}: this key is not registered on the hub; "
                            "run 'shiftpeer register' first", "not_registered")
        refused = [f"group:{g}: you may not publish in group {g!r} (you are "
                   f"{_level_phrase(info.get('groups', {}).get(g))}; join it or ask its admin for publish level)"
                   for g in groups if rank(info.get("groups", {}).get(g)) < RANK["publish"]]
        accounts: dict = {}
        for i in range(0, len(to), NAMES_PER_CALL):
            answer = yield link.call("accounts", {"names": to[i:i + NAMES_PER_CALL]})
            accounts.update(answer.get("accounts", {}))
        refused += [f"user:{u}: there is no user {u!r} on this hub" for u in to if accounts.get(u) is None]
    except NotConnected:
        return None  # the hub went away meanwhile: publish offline, reported pending
    if refused:
        code = "forbidden" if refused[0].startswith("group:") else "no_user"
        raise FlowError("not published (nothing changed): " + "; ".join(refused), code)
    return None


def _level_phrase(level: str | None) -> str:
    if level is None:
        return "not a member, or it does not exist"
    return f"at level {level}"
