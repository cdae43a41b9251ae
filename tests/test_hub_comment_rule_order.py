"""The order of the hub's refusals of a comment (``HubRules._comment_refusal``), on a real store.

A comment may fail several of the hub's comment checks at once: its author cannot see the shift
(``not_visible``), the place it is handed into does not hold what it answers (``not_there``), and what it
answers is no shift (``not_a_shift``). The first that fails is the one its author is told (the ``refused``
frame's code and text, and ``status``), so the order is part of what a user sees: these pin it, and that a
configured relay is asked only the last (its users are not ours)."""

from __future__ import annotations

from shiftpeer.roles.groups import join
from tests.test_comment_answers_a_shift import reply_to
from tests.test_hub_token_rebuild import CLUB, PUBLIC, Party, hand_in

from tests import test_hub_token_rebuild

hub = test_hub_token_rebuild.hub   # the fixture: a hub on a real store, not started

NOT_VISIBLE = ("not_visible", "a comment needs a shift its author can see")


def not_there(dbname: str) -> tuple[str, str]:
    return "not_there", f"a comment goes only where its shift went, and {dbname} does not hold it"


def not_a_shift(docid: str) -> tuple[str, str]:
    return "not_a_shift", f"a comment answers a shift, and {docid} is a comment"


def refused(hub, dbname: str, by: Party, doc: dict) -> tuple[str, str] | None:
    """The code and text of the hub's refusal of ``doc`` handed into ``dbname`` by ``by`` (None: taken)."""
    why = hub.rules.check(hub.store.create_database(dbname), dbname, by.account, doc)
    return None if why is None else (why.code, str(why))


def registered(hub, *names: str) -> list[Party]:
    parties = [Party(n) for n in names]
    for p in parties:
        hub.accounts.register(p.name, p.account)
    return parties


def club_of(hub, owner: Party, *members: Party) -> None:
    hub.groups.create("club", owner.name, open=True, join_level="read")
    for m in members:
        hub.groups.update("club", lambda g, name=m.name: join(g, name))


def test_a_shift_its_author_cannot_see_is_told_before_the_place_and_the_kind(hub):
    """carol, no reader of the club, answers bob's club comment on alice's club shift, signed public into
    ``master``: every check fails (she sees neither, ``master`` holds neither, a comment is no shift), and she
    is told she cannot see it. Her comment on a shift the hub does not hold is told the same."""
    alice, bob, carol = registered(hub, "alice", "bob", "carol")
    club_of(hub, alice, bob)
    shift = alice.shift(CLUB)
    comment = bob.comment(shift, CLUB)
    hand_in(hub, "group/club", shift, comment)

    assert refused(hub, "master", carol, carol.comment(shift, PUBLIC)) == NOT_VISIBLE
    assert refused(hub, "master", carol, reply_to(carol.key, comment["id"])) == NOT_VISIBLE
    assert refused(hub, "master", carol, reply_to(carol.key, "no-such-shift")) == NOT_VISIBLE
    assert refused(hub, "group/club", bob, bob.comment(shift, CLUB, "a second")) is None   # a reader may


def test_a_place_that_does_not_hold_what_is_answered_is_told_before_its_kind(hub):
    """bob's public comment is in ``master`` alone: carol sees it, and her reply to it signed for the club
    (which she reads) is refused for the place (the club never held it) before it is found to answer a
    comment; signed public into ``master``, where the comment is, it is refused for its kind."""
    alice, bob, carol = registered(hub, "alice", "bob", "carol")
    club_of(hub, alice, carol)
    shift = alice.shift(PUBLIC)
    comment = bob.comment(shift, PUBLIC)
    hand_in(hub, "master", shift, comment)
    to_club = carol.comment(comment, CLUB)   # a comment whose ``shift`` is bob's comment

    assert refused(hub, "group/club", carol, to_club) == not_there("group/club")
    assert refused(hub, "master", carol, reply_to(carol.key, comment["id"])) == not_a_shift(comment["id"])
    assert refused(hub, "group/club", carol, carol.comment(shift, CLUB)) == not_there("group/club")
    assert refused(hub, "master", carol, carol.comment(shift, PUBLIC)) is None


def test_a_deleted_shift_or_comment_is_one_its_author_cannot_see(hub):
    """Deleted, a shift is neither seen nor anywhere (``not_visible`` first), and a deleted comment still no
    shift: a user's reply to it is told it cannot be seen, a relay's (asked only the last check) that it
    answers a comment."""
    alice, bob, carol = registered(hub, "alice", "bob", "carol")
    relay = Party("relay")
    hub.rules.relays.add(relay.account)
    shift = alice.shift(PUBLIC)
    comment = bob.comment(shift, PUBLIC)
    hand_in(hub, "master", shift, comment)
    hand_in(hub, "master", bob.tombstone(comment))
    assert refused(hub, "master", carol, reply_to(carol.key, comment["id"])) == NOT_VISIBLE
    relayed = reply_to(carol.key, comment["id"])
    assert refused(hub, "master", relay, relayed) == not_a_shift(comment["id"])

    hand_in(hub, "master", alice.tombstone(shift))
    assert refused(hub, "master", carol, carol.comment(shift, PUBLIC)) == NOT_VISIBLE
    assert refused(hub, "master", relay, carol.comment(shift, PUBLIC)) is None   # a relay's users are not ours


def test_a_relay_is_asked_only_what_is_answered(hub):
    """A relay hands in carol's public reply to bob's club comment: the hub neither asks whether carol (not its
    user) can see it nor whether ``master`` holds it, only what it answers, and refuses it for its kind."""
    alice, bob = registered(hub, "alice", "bob")
    carol, relay = Party("carol"), Party("relay")
    hub.rules.relays.add(relay.account)
    club_of(hub, alice, bob)
    shift = alice.shift(CLUB)
    comment = bob.comment(shift, CLUB)
    hand_in(hub, "group/club", shift, comment)
    assert refused(hub, "master", relay, reply_to(carol.key, comment["id"])) == not_a_shift(comment["id"])
    assert refused(hub, "master", relay, carol.comment(shift, PUBLIC)) is None
