"""The group membership model and its persistence, without a reactor."""

from __future__ import annotations

import pytest

from shiftpeer.roles import groups as g
from shiftpeer.roles.names import FlowError
from shiftpeer.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"))
    yield s
    s.close()


def _club() -> dict:
    club = g.new_group("club", "olga")
    g.invite(club, "olga", "adam", "admin")
    g.join(club, "adam")
    return club


def test_levels_are_ordered():
    """invited < read < publish < admin < owner, and non-members rank below all."""
    assert [g.rank(level) for level in g.LEVELS] == [0, 1, 2, 3, 4]
    assert g.rank(None) == -1


def test_invite_then_join_grants_the_invited_level():
    """An invitee is 'invited' until joining, then gets the level the invitation named."""
    club = _club()
    g.invite(club, "adam", "rita", "read")
    assert g.level_of(club, "rita") == "invited"
    assert g.join(club, "rita") == "read"
    assert g.level_of(club, "rita") == "read"
    assert g.join(club, "rita") == "read"  # joining again changes nothing


def test_closed_group_refuses_uninvited_and_open_group_admits():
    """Without an invitation a closed group refuses; an open one admits at its join level."""
    club = _club()
    with pytest.raises(FlowError, match="invitation only"):
        g.join(club, "nora")
    open_club = g.new_group("open", "olga", open=True, join_level="read")
    assert g.join(open_club, "nora") == "read"


def test_only_admins_invite_and_only_the_owner_makes_admins():
    """Members below admin cannot invite; an admin cannot create admins; the owner can."""
    club = _club()
    g.invite(club, "adam", "pete", "publish")
    g.join(club, "pete")
    with pytest.raises(FlowError, match="admin or higher"):
        g.invite(club, "pete", "nora")
    with pytest.raises(FlowError, match="only the owner"):
        g.invite(club, "adam", "nora", "admin")
    with pytest.raises(FlowError, match="already a member"):
        g.invite(club, "olga", "pete")
    with pytest.raises(FlowError, match="not one of"):
        g.invite(club, "olga", "nora", "owner")


def test_remove_and_set_level_respect_rank():
    """Admins act only on lower levels; nobody removes the owner; the owner cannot leave, and is told what
    can be done instead."""
    club = _club()
    g.invite(club, "olga", "pete")
    g.join(club, "pete")
    g.set_level(club, "adam", "pete", "read")
    assert g.level_of(club, "pete") == "read"
    with pytest.raises(FlowError, match="below your own"):
        g.set_level(club, "adam", "pete", "admin")
    with pytest.raises(FlowError, match="not below yours"):
        g.remove(club, "adam", "olga")
    g.remove(club, "adam", "pete")
    assert g.level_of(club, "pete") is None
    with pytest.raises(FlowError, match="owner cannot leave") as refused:
        g.leave(club, "olga")
    assert f"'shiftpeer group remove {club['name']} USER'" in refused.value.message
    g.leave(club, "adam")
    assert club["members"] == {"olga": "owner"}


def test_a_user_that_is_not_a_name_is_bad_name_not_an_internal_error():
    """``group.remove`` and ``group.level`` take the user from the caller's RPC arguments as they come: a list
    or a map there was an internal ``TypeError: unhashable type``, and the club is unchanged."""
    club = _club()
    for user in (["pete"], {"pete": 1}, None, 5):
        for act in (lambda u: g.remove(club, "olga", u), lambda u: g.set_level(club, "olga", u, "read")):
            with pytest.raises(FlowError) as refused:
                act(user)
            assert refused.value.code == "bad_name"
    assert club == _club()


def test_groups_persist_memberships_and_tell_listeners(store):
    """Groups keeps each user's memberships in step and calls listeners for every level change."""
    groups = g.Groups(store)
    heard = []
    groups.subscribe(lambda group, user: heard.append((group, user)))
    groups.create("club", "olga", open=True)
    assert store.has_database("group/club")
    groups.update("club", lambda c: g.join(c, "nora"))
    assert groups.memberships("nora") == {"club": "publish"}
    assert groups.level("club", "nora") == "publish"
    groups.update("club", lambda c: g.leave(c, "nora"))
    assert groups.memberships("nora") == {}
    assert heard == [("club", "olga"), ("club", "nora"), ("club", "nora")]
    with pytest.raises(FlowError, match="already exists"):
        groups.create("club", "nora")
    with pytest.raises(FlowError, match="no group"):
        groups.require("nothing")
    reopened = g.Groups(store)
    assert reopened.get("club")["members"] == {"olga": "owner"}
