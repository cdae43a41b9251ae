"""Who may enter ``master``: the hub's registration rule and a full peer's KnownAuthors, without a reactor."""

from __future__ import annotations

from twisted.internet.defer import fail, succeed

from shiftpeer.identity import NodeKey
from shiftpeer.roles.accounts import Accounts
from shiftpeer.roles.groups import Groups
from shiftpeer.roles.intake import KnownAuthors, authors_of
from shiftpeer.roles.names import FlowError
from shiftpeer.roles.validation import HubRules
from tests.test_roles_rules import shift, signed, store  # noqa: F401 (the store fixture)


def test_master_takes_only_registered_authors_unless_a_relay_hands_them_in(store):  # noqa: F811
    """A document by an unregistered key is refused into master, whoever hands it in (a gossip pull
    names no pusher), except a configured relay; a registered author's is taken from anyone; other
    databases keep their own rules."""
    accounts, groups = Accounts(store), Groups(store)
    alice, stranger, relay, fullpeer = (NodeKey.generate() for _ in range(4))
    accounts.register("alice", alice.account_id)
    rules = HubRules(accounts, groups, relays=[relay.account_id])
    db = store.create_database("scratch")
    mine = signed(alice, "a", shift(alice, public=True))
    theirs = signed(stranger, "s", shift(stranger, public=True))
    assert rules.unregistered(fullpeer.account_id, mine) is None
    assert rules.unregistered(None, mine) is None
    why = rules.unregistered(fullpeer.account_id, theirs)
    assert stranger.account_id in why and "not registered" in why
    assert rules.unregistered(None, theirs) is not None
    assert rules.unregistered(relay.account_id, theirs) is None
    # pushes: a stranger pushing its own shift into master is refused by the rules too, not only the policy
    assert "not registered" in rules.check(db, "master", stranger.account_id, theirs)
    assert rules.check(db, "master", relay.account_id, theirs) is None
    assert rules.check(db, "master", alice.account_id, mine) is None


class FakeNames:
    """AuthorNames.names_of with canned answers: ``registered`` ids get names, a raise simulates a link
    failure; every call is recorded."""

    def __init__(self, registered=(), error=None) -> None:
        self.registered = set(registered)
        self.error = error
        self.calls: list[list[str]] = []

    def names_of(self, ids):
        self.calls.append(list(ids))
        if self.error is not None:
            return fail(self.error)
        return succeed({a: "name" for a in ids if a in self.registered})


def _ids(n: int) -> list[str]:
    return [NodeKey.generate().account_id for _ in range(n)]


def test_known_authors_ask_the_hub_only_about_unknown_ids_in_calls_of_at_most_100():
    """Own account and learnt ids are known without asking; unknown ids are asked in chunks of 100,
    registered ones remembered (not asked again), unregistered ones stay unknown."""
    own, taught, *rest = _ids(152)
    registered = set(rest[:120])
    names = FakeNames(registered)
    known = KnownAuthors(names, own=[own])
    known.learn([taught])
    assert own in known and taught in known
    done = []
    known.prefetch([own, taught, *rest, "not-an-id"]).addCallback(done.append)
    assert done == [None]
    assert [len(c) for c in names.calls] == [100, 50]
    assert all(a in known for a in registered) and not any(a in known for a in rest[120:])
    names.calls.clear()
    known.prefetch(list(registered))
    assert names.calls == []


def test_known_authors_without_an_answer_leave_ids_unknown_and_do_not_fail():
    """The hub down or failing: prefetch still fires, and the ids stay unknown (refused)."""
    stranger, = _ids(1)
    known = KnownAuthors(FakeNames(error=FlowError("not connected", "not_connected")))
    done = []
    known.prefetch([stranger]).addCallback(done.append)
    assert done == [None] and stranger not in known


def test_known_authors_held_in_master_are_known_without_the_hub():
    """An author master holds documents by is known with the hub down (a restart forgets what the hub
    said), and is not asked about; the others are still asked, and stay unknown without an answer."""
    held, stranger = _ids(2)
    names = FakeNames(error=FlowError("not connected", "not_connected"))
    known = KnownAuthors(names, held=lambda author: author == held)
    done = []
    known.prefetch([held, stranger]).addCallback(done.append)
    assert done == [None] and held in known and stranger not in known
    assert names.calls == [[stranger]]


def test_authors_of_lists_each_author_once_in_order():
    a, b = _ids(2)
    docs = [{"body": {"author": a}}, {"body": {"author": b}}, {"body": {"author": a}}, {"body": {}}]
    assert authors_of(docs) == [a, b]
