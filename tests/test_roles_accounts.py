"""The hub's account registry and the name rules, without a reactor."""

from __future__ import annotations

import pytest

from shiftpeer.identity import NodeKey
from shiftpeer.roles.accounts import Accounts
from shiftpeer.roles.names import FlowError, split_db
from shiftpeer.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "store"))
    yield s
    s.close()


def test_register_binds_name_and_creates_inbox_and_messages(store):
    """Registering binds the name to the key both ways and creates inbox/<name> and messages/<name>."""
    accounts = Accounts(store)
    key = NodeKey.generate().account_id
    assert accounts.register("alice", key)["created"] is True
    assert accounts.id_of("alice") == key and accounts.name_of(key) == "alice"
    assert store.has_database("inbox/alice") and store.has_database("messages/alice")
    assert accounts.register("alice", key)["created"] is False


def test_taken_names_and_second_names_are_refused(store):
    """A taken name is refused for another key, and a key gets only one name."""
    accounts = Accounts(store)
    a, b = NodeKey.generate().account_id, NodeKey.generate().account_id
    accounts.register("alice", a)
    with pytest.raises(FlowError, match="already taken") as e:
        accounts.register("alice", b)
    assert e.value.code == "name_taken"
    with pytest.raises(FlowError, match="already registered"):
        accounts.register("alice2", a)


def test_a_name_shaped_like_an_account_id_is_refused(store):
    """Nobody can register another user's account id as a name (author queries accept either, so the
    name would pass for that account); nothing is written."""
    accounts = Accounts(store)
    victim = NodeKey.generate().account_id
    with pytest.raises(FlowError, match="looks like an account id") as e:
        accounts.register(victim, NodeKey.generate().account_id)
    assert e.value.code == "bad_name"
    assert accounts.id_of(victim) is None and not store.has_database(f"inbox/{victim}")


@pytest.mark.parametrize("name", ["", "Alice", "../x", "a/b", "a" * 65, "-x", ".x", "x y", None, 5, "ünï"])
def test_bad_names_are_refused(store, name):
    """Names that could play path games or fold case are refused before anything is written."""
    with pytest.raises(FlowError, match="not valid"):
        Accounts(store).register(name, NodeKey.generate().account_id)
    assert store.list_databases("inbox/") == []


def test_invite_tokens_are_single_use(store):
    """With registration by invitation, a token registers exactly one account; without one the refusal
    names the command line that works (register's flag is --invite)."""
    accounts = Accounts(store, open_registration=False)
    a, b = NodeKey.generate().account_id, NodeKey.generate().account_id
    with pytest.raises(FlowError, match="invitation") as refused:
        accounts.register("alice", a)
    assert "'shiftpeer register --invite TOKEN'" in refused.value.message and "--token" not in refused.value.message
    token = accounts.new_invite()
    accounts.register("alice", a, token)
    with pytest.raises(FlowError, match="already used"):
        accounts.register("bob", b, token)
    assert accounts.id_of("bob") is None


def test_split_db_only_accepts_whole_names():
    """Database names split into kind and name only when the name is well formed."""
    assert split_db("group/club") == ("group", "club")
    assert split_db("inbox/alice/../bob")[1] is None
    assert split_db("group/")[1] is None
    assert split_db("master") == ("master", None)


def test_hub_config_file(tmp_path):
    """DIR/hub.json chooses open or invite-only registration; a bad value is refused clearly."""
    from shiftpeer.roles.flowroles import load_hub_config

    assert load_hub_config(str(tmp_path))["registration"] == "open"
    op = "a" * 52
    (tmp_path / "hub.json").write_text('{"registration": "invite", "operators": ["%s"]}' % op)
    assert load_hub_config(str(tmp_path)) == {"registration": "invite", "operators": [op], "relays": [], "quota": {}}
    (tmp_path / "hub.json").write_text('{"registration": "maybe"}')
    with pytest.raises(ValueError, match="open"):
        load_hub_config(str(tmp_path))
