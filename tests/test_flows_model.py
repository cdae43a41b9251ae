"""A model-based test of the ShiftSpace flows: hypothesis drives random sequences of operations against a real
hub, three users and a full peer over real TLS (``flowmesh``) and, after each one, checks the mesh against a small
model of who should hold and see what.

Operations: create, edit and delete a shift; publish it publicly, to a group, to a user; comment, edit a comment
and delete one; make a group, invite, join, leave, remove; disconnect a user from the hub and reconnect; fork a
shift (a branch written by another copy of the author's account, as a restored backup does) and resolve it; that
other copy deletes a shift (its tombstones reach the author's feed through the groups, or from the hub's ``master``
and inboxes when the author's node asks before a show or change, and the author's node then counts the shift
deleted: ``other_copy_deletes``);
queries by page, domain, author, group and a shift's comment thread. The full peer (``fp``: registered, in no
group, sent nothing) only watches: it pulls the public firehose.

A group that refused a document's later revisions (its author may no longer publish, or read, there) keeps the
copy it has; the hub shows the winner through it only while no other place took a later revision
(``shown_groups``), and after that serves the group's readers the copy it keeps (``shows``, ``held_groups``); a
comment takes the audience of that winner, and goes only to the groups it names (``goes_to``). The model tracks a
comment's latest text. A comment's revision goes only where its author can still see the shift on the hub
(``hub_shows``): an edit after the shift was deleted, or by a commenter who lost the group it came through, is
refused by the commenter's node at once (``shift_gone``, ``edit_refused``: it asks the hub first), and were it
written, every place would refuse it and the hub keep the last one it took (``frozen``); into a group only while
the author can read it (else that group keeps an older revision, ``refused``).

Invariants, once the mesh has settled (polled with a bounded deadline):
- privacy: a shift or comment no one was ever sent is on no node but its author's (a tombstone may reach a group
  it was published to offline and deleted before it went: the outbox sends a delete to every target it has not
  confirmed); a group's documents reach
  only users who could read the group at or after the time they were sent there; an inbox shift only its
  recipients; the hub holds a document only in the databases its (ever) audience names; the full peer holds
  public documents only;
- nothing lost: a live published shift or comment is in each place its audience names at its author's latest
  revision, in the feed of every connected reader, and (public) in the full peer's feed;
- deletes delete: a deleted shift or comment is not live on the hub, in any connected reader's feed, nor in the
  full peer's;
- settled: each connected author's outbox has nothing left to deliver; a notification of a comment reaches only
  users who may hold that comment and (a connected reader's) quotes the text the hub holds (an edit rewrites
  it);
- queries: a connected user's query by page URL, domain, author or group answers exactly the model's visible
  set, each once, newest first, across pages of a small ``limit``; a thread answers every live comment the user
  surely sees (its own, or through the comment's audience on the hub) and none it may not (neither through the
  places that took the comment nor as the shift's author: a comment reaches only the places that take it, not
  every reader of its shift's), each once, at its latest revision; the full peer's thread, the live public
  comments.

CI runs 20 sequences of up to 40 steps, the same ones each run (``derandomize``), and one scripted sequence
(``scripted_sequence``: hypothesis' swarm testing leaves some rules out of each of so few sequences, so the
comment edits, threads and the full peer get a fixed walk through them): about 15 s on a quiet machine. Hunt longer
with ``SHIFTPEER_MODEL_EXAMPLES=400 SHIFTPEER_MODEL_STEPS=50 SHIFTPEER_MODEL_RANDOM=1 pytest tests/test_flows_model.py``
(``RANDOM``: new sequences each run; ``SHIFTPEER_MODEL_SETTLE=5`` shrinks a failure faster;
``SHIFTPEER_MODEL_TRACE=1`` prints each sequence's size, ``=steps`` every step). The mesh is not deterministic
(real TLS, timers), so a failure that only shows under load may not shrink well: read the failing step's
message, then reproduce it in a focused test.

Known blind spots: random sequences rarely line up the six steps of "removed from a group, then edit, then
delete" (tests/test_flows_removed_author_delete.py), which the model checks but 800 random sequences did not
find. No rule writes another copy's edit of a comment (tests/test_flows_comment_edit_elsewhere.py): the model
would have to know which revision every place holds while the copies disagree.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import greenlet
import pytest
import pytest_twisted
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from flowmesh import Mesh, other_copy_revision, other_copy_tombstone
from shiftpeer.roles.groups import RANK
from shiftpeer.roles.merge import SHARED_DB
from shiftpeer.roles.names import FlowError
from shiftpeer.roles.tokenjudge import Judge
from shiftpeer.shifts import ShiftDeleted, ShiftGone
from tests.helpers_node import eventually as _poll

USERS = ("alice", "bob", "carol")
PEER = "fp"   # a full peer: registered, in no group, sent nothing; it holds the public firehose
GROUPS = ("g1", "g2")
HREFS = ("https://a.example/1", "https://a.example/2", "https://b.example/1")
SETTLE = float(os.environ.get("SHIFTPEER_MODEL_SETTLE", "10"))   # seconds; a hunt may lower it

EXAMPLES = int(os.environ.get("SHIFTPEER_MODEL_EXAMPLES", "20"))
STEPS = int(os.environ.get("SHIFTPEER_MODEL_STEPS", "40"))
RANDOM = os.environ.get("SHIFTPEER_MODEL_RANDOM", "") not in ("", "0")
TRACE = os.environ.get("SHIFTPEER_MODEL_TRACE", "") not in ("", "0")
STEPS_SHOWN = os.environ.get("SHIFTPEER_MODEL_TRACE", "") == "steps"   # print every step of every sequence


def run(coro: Any) -> Any:
    """Run a coroutine (or wait for a Deferred) on the reactor from the state machine's synchronous rules."""
    return pytest_twisted.blockon(coro if isinstance(coro, Deferred) else Deferred.fromCoroutine(coro))


async def _settled(check: Any, deadline: float = SETTLE) -> None:
    """Poll ``check`` (it returns a list of problems) until it returns none; fail naming what is still wrong."""
    last: list = []

    def ok() -> bool:
        last[:] = check()
        return not last

    try:
        await _poll(ok, timeout=deadline, interval=0.005)
    except AssertionError:
        raise AssertionError("the mesh did not settle:\n  " + "\n  ".join(map(str, last[:20]))) from None


def state(db: Any, docid: str) -> tuple | None:
    """(rev, deleted) of a document's winner in ``db``, None when it does not hold it."""
    doc = db.get(docid)
    return None if doc is None else (doc.rev, doc.deleted)


@dataclass
class Doc:
    """The model of a shift or comment: where its author sent it and where the hub has it."""

    author: str
    kind: str                     # "shift" or "comment"
    href: str = ""
    shift: str = ""               # a comment's shift
    public: bool = False
    groups: set = field(default_factory=set)
    to: set = field(default_factory=set)
    deleted: bool = False
    conflicted: bool = False
    text: str = ""                # a comment's text at its latest revision
    frozen: bool = False          # every place refused a comment's later revisions: the hub keeps an older one
    edit_refused: bool = False    # the commenter's node refused an edit at once (shift_gone): nothing written
    sent: dict = field(default_factory=dict)   # group -> the step it was first sent there
    refused: set = field(default_factory=set)  # groups that refused a revision (the author was no longer allowed)
    waiting: set = field(default_factory=set)  # groups named while the author was offline, not delivered yet
    tombed: set = field(default_factory=set)   # groups named offline that got only the delete (a tombstone)
    shown: set | None = None      # the groups the hub's winner names when no place took the later revisions
    hub: dict | None = None       # what the hub has: {public, groups, to, deleted}, as of the author's last link

    def targets_ever(self) -> bool:
        return bool(self.public or self.groups or self.to)


class FlowModel(RuleBasedStateMachine):
    """The mesh and the model side by side; each rule acts on both, the invariant compares them."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="flowmodel-"))
        self.mesh = Mesh(self.tmp)
        self.errors: list[dict] = []
        globalLogPublisher.addObserver(self._observe)
        run(self.mesh.start(users=USERS))
        run(self.mesh.add_user(PEER, full_peer=True))
        self.online = {u: True for u in USERS}
        self.groups: dict[str, dict] = {}           # name -> {"members": {user: level}, "invites": {user: level}}
        self.last_read: dict[str, dict] = {}        # group -> user -> last step they could read it
        self.docs: dict[str, Doc] = {}
        self.step = 0

    def _observe(self, event: dict) -> None:
        if event.get("log_failure") is not None or event.get("log_level") in (LogLevel.error, LogLevel.critical):
            self.errors.append(event)

    def teardown(self) -> None:
        if TRACE:
            print("example:", self.step, "steps", sum(d.kind == "shift" for d in self.docs.values()), "shifts",
                  sum(d.kind == "comment" for d in self.docs.values()), "comments", len(self.groups), "groups")
        globalLogPublisher.removeObserver(self._observe)
        try:
            run(self.mesh.stop())
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- model helpers ---------------------------------------------------------------------------
    def level(self, g: str, u: str) -> int:
        return RANK.get(self.groups.get(g, {}).get("members", {}).get(u), -1)

    def reads(self, g: str, u: str) -> bool:
        return self.level(g, u) >= RANK["read"]

    def owner(self, g: str) -> str:
        return next(u for u, lv in self.groups[g]["members"].items() if lv == "owner")

    def shifts(self, pred: Any = lambda d: True) -> list[str]:
        return [i for i, d in self.docs.items() if d.kind == "shift" and pred(d)]   # in order made: ids are random

    def comments(self, pred: Any = lambda d: True) -> list[str]:
        return [i for i, d in self.docs.items() if d.kind == "comment" and pred(d)]

    def may_hold(self, docid: str, u: str) -> bool:
        """May user ``u`` hold this document in their feed at all (privacy)?"""
        d = self.docs[docid]
        if u == d.author or u in d.to:
            return True
        if d.kind == "comment" and u == self.docs[d.shift].author:
            return True   # the shift's author sees what is written on it; its readers, only where the comment went
        return any(self.last_read.get(g, {}).get(u, -1) >= at for g, at in d.sent.items())

    def _tombed(self, d: Doc, u: str) -> bool:
        """Could ``u`` hold the tombstone of ``d`` from a group it was named for offline (and deleted before
        it went)? The outbox sends a delete to every target it has not confirmed, in case it got the document."""
        return any(self.last_read.get(g, {}).get(u, -1) >= 0 for g in d.tombed)

    def visible(self, u: str, sid: str) -> bool:
        """Does the hub (plus ``u``'s own node) show this shift to ``u`` now?"""
        d = self.docs[sid]
        if d.author == u:
            return not d.deleted
        h = d.hub
        if h is None or h["deleted"]:
            return False
        # a group that refused the later revisions left the signed audience: the hub no longer shows it through it
        return h["public"] or u in h["to"] or any(self.reads(g, u) for g in self.shown_groups(d) & h["groups"])

    def shows(self, u: str, sid: str) -> bool:
        """Does the hub show this shift to ``u`` now at some revision: its winner (``visible``), or the copy a group
        ``u`` reads keeps of it, having refused its later revisions (``held_groups``: the hub serves that group's
        readers the revision it holds, ``HubQueries._shown``)?"""
        d, h = self.docs[sid], self.docs[sid].hub
        return self.visible(u, sid) or h is not None and not h["deleted"] and \
            any(self.reads(g, u) for g in self.held_groups(d) & h["groups"])

    def held_groups(self, d: Doc) -> set:
        """The groups that keep an earlier revision of ``d``, having refused its later ones: their readers are
        served that one where the winner does not name the group (a shift's record keeps the group's token)."""
        return d.refused & d.groups if d.kind == "shift" else set()

    def shown_groups(self, d: Doc) -> set:
        """The groups through which the hub shows a document: those its winner in ``shared`` names. A group
        that refused the later revisions left the signed audience, so once another place took one the hub no
        longer shows it through that group (though the group keeps the older copy); while no place took one,
        the winner is still the last revision the groups took, and it names them."""
        return d.groups - d.refused if d.shown is None else d.shown

    def _refuse(self, d: Doc, groups: set) -> None:
        """``groups`` refuse a new revision of ``d``: each keeps the one it has (see ``shown_groups``)."""
        before = self.shown_groups(d)
        d.refused |= groups
        took = not d.frozen and (d.public or d.to or d.groups - d.refused)
        d.shown = None if took else before

    def hub_shows(self, u: str, sid: str) -> bool:
        """Does the hub show this shift to ``u`` now at some revision (its author included: it checks a comment's
        author can see the shift there, ``HubQueries.sees_a_revision``)?"""
        d, h = self.docs[sid], self.docs[sid].hub
        return h is not None and not h["deleted"] and (u == d.author or self.shows(u, sid))

    def goes_to(self, sid: str, g: str) -> bool:
        """Does the shift go to group ``g`` as the hub's winner stands (its audience names ``g``, which holds it)?
        A comment goes only there (``HubQueries.places_of``)."""
        d = self.docs[sid]
        return d.hub is not None and g in self.shown_groups(d) & d.hub["groups"]

    def _tick(self) -> None:
        """After each operation: the hub learns what online authors did; readers' last steps move on."""
        self.step += 1
        for d in self.docs.values():
            if self.online[d.author] and d.targets_ever():
                d.hub = {"public": d.public, "groups": set(d.groups), "to": set(d.to), "deleted": d.deleted}
            if self.online[d.author]:
                for g in d.groups:
                    d.sent.setdefault(g, self.step)
        for g, info in self.groups.items():
            for u in info["members"]:
                if self.reads(g, u):
                    self.last_read.setdefault(g, {})[u] = self.step

    # -- rules: shifts ---------------------------------------------------------------------------
    @initialize(hrefs=st.lists(st.sampled_from(HREFS), min_size=len(USERS), max_size=len(USERS)))
    def some_shifts(self, hrefs: list[str]) -> None:
        """Each user starts with a shift, so that the first steps have something to act on."""
        for u, href in zip(USERS, hrefs):
            self.create(u, href)

    @initialize(level=st.sampled_from(("read", "publish")))
    def a_group(self, level: str) -> None:
        """alice owns g1 and bob is in it, so that group flows start early."""
        self.group_new("alice", "g1")
        self.member("g1", "bob", level)

    @rule(u=st.sampled_from(USERS), href=st.sampled_from(HREFS))
    def create(self, u: str, href: str) -> None:
        sid = self.mesh[u].new_shift(href, summary=f"made by {u}")
        self.docs[sid] = Doc(author=u, kind="shift", href=href)

    @precondition(lambda self: self.shifts(lambda d: not d.deleted))
    @rule(data=st.data())
    def edit(self, data: Any) -> None:
        sid = data.draw(st.sampled_from(self.shifts(lambda d: not d.deleted)), "shift")
        self.mesh[self.docs[sid].author].shifts.edit(sid, {"summary": f"edit {self.step}"})
        self._revised(self.docs[sid])

    def _revised(self, d: Doc) -> None:
        """A new revision: a group the author may no longer publish in refuses it and keeps the one it has."""
        self._refuse(d, {g for g in d.groups - d.refused if self.level(g, d.author) < RANK["publish"]})

    @precondition(lambda self: self.shifts(lambda d: not d.deleted))
    @rule(data=st.data())
    def delete(self, data: Any) -> None:
        sid = data.draw(st.sampled_from(self.shifts(lambda d: not d.deleted)), "shift")
        self.mesh[self.docs[sid].author].shifts.delete(sid)
        self.docs[sid].deleted = True

    @precondition(lambda self: self.shifts(lambda d: not d.deleted and not d.conflicted))
    @rule(data=st.data(), how=st.sampled_from(("public", "group", "user")))
    def publish(self, data: Any, how: str) -> None:
        sid = data.draw(st.sampled_from(self.shifts(lambda d: not d.deleted and not d.conflicted)), "shift")
        d = self.docs[sid]
        user = self.mesh[d.author]
        if how == "public":
            run(user.publish(sid, public=True))
            self._revised(d)
            d.public, d.shown = True, None
        elif how == "user":
            to = data.draw(st.sampled_from([u for u in USERS if u != d.author]), "to")
            run(user.publish(sid, to=[to]))
            self._revised(d)
            d.to.add(to)
            d.shown = None
        else:
            if not self.groups:
                return
            g = data.draw(st.sampled_from(sorted(self.groups)), "group")
            if not self.online[d.author]:   # the hub checks the group when the outbox delivers, on reconnecting
                run(user.publish(sid, groups=[g]))
                self._revised(d)
                d.waiting.add(g)
                return
            if self.level(g, d.author) < RANK["publish"]:
                with pytest.raises(FlowError):
                    run(user.publish(sid, groups=[g]))
                return
            run(user.publish(sid, groups=[g]))
            self._revised(d)
            d.groups.add(g)
            d.refused.discard(g)
            d.shown = None

    @precondition(lambda self: self.shifts(lambda d: not d.deleted and not d.conflicted))
    @rule(data=st.data())
    def fork(self, data: Any) -> None:
        """Another copy of the author's account (a restored backup) edited the shift beside this one; its
        branch arrives in the database the shift lives in."""
        sid = data.draw(st.sampled_from(self.shifts(lambda d: not d.deleted and not d.conflicted)), "shift")
        d = self.docs[sid]
        user = self.mesh[d.author]
        db = user.store.database("user/public" if d.public else "user/private")
        base = db.get_repl_docs([(sid, None)])[0]
        if len(base["history"]) < 2:
            return
        parent = {**base, "rev": base["history"][1], "history": base["history"][1:]}   # the body is the winner's
        db.bulk_replicated([other_copy_revision(user, parent, summary=f"backup {self.step}")])
        self._revised(d)
        d.conflicted = True

    @precondition(lambda self: self.shifts(lambda d: not d.deleted and d.conflicted))
    @rule(data=st.data())
    def resolve(self, data: Any) -> None:
        sid = data.draw(st.sampled_from(self.shifts(lambda d: not d.deleted and d.conflicted)), "shift")
        d = self.docs[sid]
        self.mesh[d.author].shifts.resolve(sid)
        self._revised(d)
        d.conflicted = False

    def continue_losing_branch(self, data: Any) -> None:
        """The other copy of the author's account (which kept the branch that lost here) edits on from the own
        copy's losing branch of a forked group shift and sends the edit to the shift's groups; the author's
        feed has it from there. Not a rule: until a resolve, every place holds that edit (deeper than the own
        winner), which the model does not track, so the scripted sequence resolves in the same step."""
        sid = data.draw(st.sampled_from(self.shifts(lambda d: not d.deleted and d.conflicted)), "shift")
        d = self.docs[sid]
        user = self.mesh[d.author]
        db = user.store.database("user/public" if d.public else "user/private")
        loser = db.get_repl_docs([(sid, [db.get(sid).conflicts[0]])])[0]
        later = other_copy_revision(user, loser, summary=f"the other copy {self.step}")
        targets = [f"group:{g}" for g in sorted(d.groups - d.refused)]
        assert run(user.flows.link.deliver(later, targets)) == {t: "ok" for t in targets}
        run(_settled(lambda: [] if user.feed().get(sid).rev == later["rev"] else ["the author's feed lacks it"]))

    def _deletable_elsewhere(self, d: Doc) -> bool:
        """Would every place the shift went take another copy's tombstone of it? Sent somewhere (publicly, to
        users, to groups the author still publishes in), each place holding its latest revision, the author
        online."""
        return d.kind == "shift" and not (d.deleted or d.conflicted or d.waiting or d.refused) \
            and d.targets_ever() and self.online[d.author] \
            and all(self.level(g, d.author) >= RANK["publish"] for g in d.groups)

    @precondition(lambda self: self.shifts(self._deletable_elsewhere))
    @rule(data=st.data())
    def other_copy_deletes(self, data: Any) -> None:
        """Another copy of the author's account deletes a shift: its tombstone of the revision the places hold goes
        to each group and inbox, and (a public shift) to ``master``, as that copy's push of user/public takes it.
        The author's feed gets it from the groups, or from the hub when the author's node asks before a show or
        change (roles/othercopies.py). The author's node then counts the shift deleted, though its own copy still
        holds that revision: `shift show` says so, an edit is refused at once (``shift_gone``), and the author's
        queries no longer list it."""
        sid = data.draw(st.sampled_from(self.shifts(self._deletable_elsewhere)), "shift")
        d = self.docs[sid]
        user = self.mesh[d.author]
        tomb = other_copy_tombstone(user, user.flows.publisher.current(sid))
        targets = [f"group:{g}" for g in sorted(d.groups)] + [f"user:{u}" for u in sorted(d.to)]
        if targets:
            assert run(user.flows.link.deliver(tomb, targets)) == {t: "ok" for t in targets}
        if d.public:
            self.mesh.hub.db("master").bulk_replicated([tomb])
        shared = self.mesh.hub.db(SHARED_DB)
        run(_settled(lambda: [] if shared.get(sid).deleted else ["the hub's shared lacks the tombstone"]))
        with pytest.raises(ShiftDeleted):
            run(user.flows.on_latest(sid, lambda: user.shifts.show(sid)))
        with pytest.raises(ShiftGone):
            run(user.flows.on_latest(sid, lambda: user.shifts.edit(sid, {"summary": f"after the delete {self.step}"})))
        d.deleted = True

    # -- rules: comments -------------------------------------------------------------------------
    @precondition(lambda self: self.shifts(lambda d: not d.deleted))
    @rule(data=st.data())
    def comment(self, data: Any) -> None:
        u = data.draw(st.sampled_from([u for u in USERS if self.online[u]] or ["-"]), "commenter")
        seen = [s for s in self.shifts() if u != "-" and self.visible(u, s)]
        if not seen:
            return
        sid = data.draw(st.sampled_from(seen), "shift")
        s = self.docs[sid]
        # the comment takes the audience of the shift as the commenter finds it: their own, or the hub's winner's
        # (the groups it names: see shown_groups), not a copy in their feed that may be stale
        aud = {"public": s.public, "groups": set(s.groups), "to": set(s.to)} if s.author == u else \
            {"public": s.hub["public"], "groups": self.shown_groups(s) & s.hub["groups"], "to": s.hub["to"]}
        text = f"comment {self.step}"
        result = run(self.mesh[u].flows.comment(sid, text))
        # a group the commenter cannot read refuses the comment: it leaves the comment's audience
        groups = {g for g in aud["groups"] if self.reads(g, u)}
        self.docs[result["id"]] = Doc(author=u, kind="comment", shift=sid, public=aud["public"],
                                      groups=groups, to=set(aud["to"]), text=text)

    @precondition(lambda self: self.comments(lambda d: not d.deleted and self.online[d.author]))
    @rule(data=st.data())
    def edit_comment(self, data: Any) -> None:
        """The commenter edits (online: the hub checks the edit as it arrives). A revision of a comment goes
        only where its author can still see the shift (else every place refuses it and keeps the one it has)
        and into the groups its author can still read."""
        cid = data.draw(st.sampled_from(self.comments(lambda d: not d.deleted and self.online[d.author])),
                        "comment")
        c = self.docs[cid]
        try:
            run(self.mesh[c.author].flows.edit_comment(cid, f"edit {self.step}"))
        except FlowError as refused:   # the node asks the hub first: nothing written, nothing changes anywhere
            assert refused.code == "shift_gone" and not self.hub_shows(c.author, c.shift), refused
            c.edit_refused = True
            return
        c.text = f"edit {self.step}"
        if not self.hub_shows(c.author, c.shift):
            c.frozen = c.frozen or c.targets_ever()
            self._refuse(c, c.groups - c.refused)
        self._refuse(c, {g for g in c.groups - c.refused
                         if not self.reads(g, c.author) or not self.goes_to(c.shift, g)})

    @precondition(lambda self: self.comments(lambda d: not d.deleted))
    @rule(data=st.data())
    def delete_comment(self, data: Any) -> None:
        cid = data.draw(st.sampled_from(self.comments(lambda d: not d.deleted)), "comment")
        c = self.docs[cid]
        run(self.mesh[c.author].flows.delete_comment(cid))
        c.deleted = True

    # -- rules: groups ---------------------------------------------------------------------------
    @rule(u=st.sampled_from(USERS), g=st.sampled_from(GROUPS))
    def group_new(self, u: str, g: str) -> None:
        if g in self.groups or not self.online[u]:
            return
        run(self.mesh[u].flows.group("new", g))
        self.groups[g] = {"members": {u: "owner"}, "invites": {}}

    @precondition(lambda self: self.groups)
    @rule(data=st.data(), level=st.sampled_from(("read", "publish")))
    def invite(self, data: Any, level: str) -> None:
        g = data.draw(st.sampled_from(sorted(self.groups)), "group")
        owner = self.owner(g)
        who = [u for u in USERS if self.level(g, u) < RANK["read"]]
        if not who or not self.online[owner]:
            return
        u = data.draw(st.sampled_from(who), "invitee")
        run(self.mesh[owner].flows.group("invite", g, user=u, level=level))
        self.groups[g]["members"][u] = "invited"
        self.groups[g]["invites"][u] = level

    @rule(g=st.sampled_from(GROUPS), u=st.sampled_from(USERS), level=st.sampled_from(("read", "publish")))
    def member(self, g: str, u: str, level: str) -> None:
        """The owner invites ``u`` and ``u`` joins, in one step."""
        info = self.groups.get(g)
        if info is None or u in info["members"] or not (self.online[u] and self.online[self.owner(g)]):
            return
        run(self.mesh[self.owner(g)].flows.group("invite", g, user=u, level=level))
        run(self.mesh[u].flows.group("join", g))
        info["members"][u] = level

    @precondition(lambda self: self.groups)
    @rule(data=st.data(), u=st.sampled_from(USERS))
    def join(self, data: Any, u: str) -> None:
        g = data.draw(st.sampled_from(sorted(self.groups)), "group")
        if not self.online[u]:
            return
        info = self.groups[g]
        if info["members"].get(u) == "invited":
            run(self.mesh[u].flows.group("join", g))
            info["members"][u] = info["invites"].pop(u)
        elif u not in info["members"]:
            with pytest.raises(FlowError):
                run(self.mesh[u].flows.group("join", g))

    def _members(self) -> list[tuple[str, str]]:
        """(group, user) of every member or invitee but the owner, in a fixed order."""
        return [(g, u) for g in sorted(self.groups) for u in USERS
                if u in self.groups[g]["members"] and self.groups[g]["members"][u] != "owner"]

    @precondition(lambda self: self._members())
    @rule(data=st.data())
    def leave(self, data: Any) -> None:
        g, u = data.draw(st.sampled_from(self._members()), "member")
        info = self.groups[g]
        if not self.online[u]:
            return
        run(self.mesh[u].flows.group("leave", g))
        del info["members"][u]
        info["invites"].pop(u, None)

    @precondition(lambda self: self._members())
    @rule(data=st.data())
    def remove(self, data: Any) -> None:
        g, u = data.draw(st.sampled_from(self._members()), "member")
        info = self.groups[g]
        owner = self.owner(g)
        if not self.online[owner]:
            return
        run(self.mesh[owner].flows.group("remove", g, user=u))
        del info["members"][u]
        info["invites"].pop(u, None)

    # -- rules: connections ----------------------------------------------------------------------
    @rule(u=st.sampled_from(USERS))
    def disconnect(self, u: str) -> None:
        if not self.online[u]:
            return
        user = self.mesh[u]
        user.disconnect()
        run(_poll(lambda: not user.flows.link.connected and user.proto not in self.mesh.hub.factory.connections))
        self.online[u] = False

    @rule(u=st.sampled_from(USERS))
    def reconnect(self, u: str) -> None:
        if self.online[u]:
            return
        user = self.mesh[u]

        async def again() -> None:
            await user.connect(self.mesh.hub)
            await user.flows.link.when_ready()

        run(again())
        self.online[u] = True
        for d in self.docs.values():   # what was published to groups offline: the hub decides now
            if d.author == u and d.waiting:
                if not d.deleted:
                    taken = {g for g in d.waiting if self.level(g, u) >= RANK["publish"]}
                    d.groups |= taken
                    d.refused -= taken
                    d.shown = None if taken else d.shown
                else:   # deleted before it went: the outbox sends the tombstone, which carries no content
                    d.tombed |= d.waiting
                d.waiting = set()

    # -- rules: queries --------------------------------------------------------------------------
    @rule(u=st.sampled_from(USERS), href=st.sampled_from(HREFS), by=st.sampled_from(("href", "domain")),
          limit=st.integers(1, 3))
    def query(self, u: str, href: str, by: str, limit: int) -> None:
        value = href if by == "href" else href.split("/")[2]
        self._paged(u, {by: value}, limit, lambda d: (d.href if by == "href" else d.href.split("/")[2]) == value)

    @rule(u=st.sampled_from(USERS), author=st.sampled_from(USERS), limit=st.integers(1, 3))
    def query_author(self, u: str, author: str, limit: int) -> None:
        self._paged(u, {"author": author}, limit, lambda d: d.author == author)

    @precondition(lambda self: self.groups)
    @rule(data=st.data(), u=st.sampled_from(USERS), limit=st.integers(1, 3))
    def query_group(self, data: Any, u: str, limit: int) -> None:
        """A reader's query of one group: the live shifts the hub has in it (the own unpublished ones are not)."""
        g = data.draw(st.sampled_from(sorted(self.groups)), "group")
        if not self.reads(g, u):
            return
        self._paged(u, {"group": g}, limit, lambda d: d.hub is not None and not d.hub["deleted"] and
                    g in (self.shown_groups(d) | self.held_groups(d)) & d.hub["groups"], lambda s: True)

    @precondition(lambda self: self.comments())
    @rule(data=st.data(), u=st.sampled_from((*USERS, PEER)), limit=st.integers(1, 3))
    def query_thread(self, data: Any, u: str, limit: int) -> None:
        """A shift's comment thread as ``u`` asks for it (the full peer answers from its own feed): every live
        comment ``u`` surely sees, nothing ``u`` may not see, each once, at its latest revision."""
        sid = data.draw(st.sampled_from(sorted({self.docs[c].shift for c in self.comments()})), "shift")
        if u != PEER and not self.online[u]:
            return
        on = self.comments(lambda d: d.shift == sid)
        if u == PEER:   # the firehose: public comments, a delete its author has not sent yet still live
            sent = {c for c in on if self.docs[c].public and self.online[self.docs[c].author]}
            must = {c for c in sent if not self.docs[c].deleted}
            may = must | {c for c in on if self.docs[c].public and c not in sent}
        else:
            must = {c for c in on if self.visible(u, c)}
            may = {c for c in on if self._may_see(u, c)}
        rows = self._pages(u, {"thread": sid}, limit)
        ids = {r["id"] for r in rows}
        assert must <= ids <= may, (f"{u}'s thread of {sid} (limit {limit}): missing {must - ids}, "
                                    f"unexpected {ids - may}")
        for r in rows:
            c = self.docs[r["id"]]
            if self.online[c.author] and self._latest_on_hub(c):
                latest = self.mesh[c.author].flows.publisher.current(r["id"])["rev"]
                assert (r["rev"], r["body"]["text"]) == (latest, c.text), \
                    f"{u}'s thread of {sid} shows {r['id']} at {r['rev']}, not {latest}: {r['body']} ({c})"

    def _may_see(self, u: str, cid: str) -> bool:
        """May a thread query show ``u`` this comment? Its own places and the shift's author (``may_hold``): a
        comment reaches only the places that take it, not every reader of its shift's (a group that refused its
        author), nor the public its shift went to later; a delete not sent yet."""
        c = self.docs[cid]
        if c.deleted and self.online[c.author]:
            return False
        return c.author == u or c.public or self.may_hold(cid, u)

    def _latest_on_hub(self, c: Doc) -> bool:
        """Does the hub hold the comment at its author's latest revision (some place it went took the edits)?"""
        return not c.frozen and (not c.targets_ever() or c.public or bool(c.to) or bool(c.groups - c.refused))

    def _paged(self, u: str, filters: dict, limit: int, match: Any, visible: Any = None) -> None:
        """Page through ``u``'s query: each row of the model's visible set once, nothing else, newest first."""
        if not self.online[u]:
            return
        visible = visible or (lambda s: self.shows(u, s))
        rows = self._pages(u, filters, limit)
        ids = {r["id"] for r in rows}
        want = {s for s in self.shifts(match) if visible(s)}
        assert ids == want, f"{u}'s query {filters} (limit {limit}): missing {want - ids}, unexpected {ids - want}"

    def _pages(self, u: str, filters: dict, limit: int) -> list[dict]:
        """Every row of ``u``'s query, page by page (``limit`` rows at most each), once the mesh has settled;
        no row twice, newest first."""
        self._tick()
        run(_settled(self.problems))
        rows, cursor = [], None
        for _ in range(50):
            page = run(self.mesh[u].flows.query({"filters": filters, "limit": limit, "cursor": cursor}))
            assert len(page["rows"]) <= limit
            rows += page["rows"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), f"{u}'s query {filters} (limit {limit}) repeats a row: {ids}"
        created = [r["body"]["created"] for r in rows]
        assert created == sorted(created, reverse=True), f"{u}'s query {filters} is not newest first: {created}"
        return rows

    # -- the invariant ---------------------------------------------------------------------------
    @invariant()
    def mesh_matches_model(self) -> None:
        self._tick()
        run(_settled(self.problems))
        assert not self.errors, "errors were logged:\n" + "\n".join(formatEvent(e) for e in self.errors)

    def problems(self) -> list[str]:
        """What differs between the mesh and the model now (empty once it has settled)."""
        out: list[str] = []
        hub = self.mesh.hub
        hub_dbs = hub.store.list_databases()
        for u in USERS:
            if self.online[u] and self.mesh[u].flows.publisher.pending():
                out.append(f"PENDING: {u}'s outbox has deliveries to make")
        out += self._notifications()
        out += self._full_peer()
        out += self._tokens_as_merged()
        for docid, d in self.docs.items():
            out += self._privacy(docid, d, hub_dbs)
            if not self.online[d.author]:
                continue
            own = self.mesh[d.author].flows.publisher.current(docid)
            rev = own["rev"] if own else None
            out += self._placed(docid, d, rev, hub_dbs)
        return out

    def _notifications(self) -> list[str]:
        """A notification quotes a comment: only someone who may hold the comment (anyone: a public one) gets it."""
        out = []
        for u in USERS:
            for m in self.mesh[u].feed().docs_since(0):
                cid = m.body.get("comment")
                if m.body.get("type") != "message" or m.deleted or cid not in self.docs:
                    continue
                if not self.docs[cid].public and not self.may_hold(cid, u):
                    out.append(f"PRIVACY: {u} was notified of comment {cid} ({self.docs[cid]})")
                held = self.mesh.hub.db("shared").get(cid)   # an edit rewrites the notifications it sent
                if self.online[u] and held is not None and not held.deleted and \
                        m.body.get("text") != held.body.get("text"):
                    out.append(f"STALE: {u}'s notification of {cid} quotes {m.body.get('text')!r}, the comment "
                               f"reads {held.body.get('text')!r}")
        return out

    def _full_peer(self) -> list[str]:
        """The full peer holds every public shift and comment at its author's latest revision (a deleted one not
        live), and nothing else."""
        out = []
        peer = self.mesh[PEER]
        names = peer.store.list_databases()
        for docid, d in self.docs.items():
            if not d.public:
                out += [f"PRIVACY: the full peer's {name} holds {d.kind} {docid} by {d.author} ({d})"
                        for name in names if peer.store.database(name).get(docid) is not None]
                continue
            if not self.online[d.author]:
                continue
            have = state(peer.feed(), docid)
            if d.deleted and have is not None and not have[1]:
                out.append(f"UNDELETED: the full peer's feed holds deleted {d.kind} {docid} live")
            elif not d.deleted and not d.frozen:
                rev = self.mesh[d.author].flows.publisher.current(docid)["rev"]
                if have != (rev, False):
                    out.append(f"LOST: the full peer's feed holds {d.kind} {docid} at {have}, not {rev}")
        return out

    def _tokens_as_merged(self) -> list[str]:
        """Every token today's merge gave in the hub's ``shared`` is one the tokens' rebuild keeps: else a hub
        rebuilding its tokens (once per store, or ``shiftpeer rebuild-tokens``) would hide what it should show."""
        store = self.mesh.hub.store
        shared = store.database(SHARED_DB)
        judge = Judge(store, shared)
        return [f"REBUILD: would take {judge.unjustified(doc)} off {doc.id} ({doc.body.get('type')}, vis {doc.vis})"
                for doc in shared.docs_since(0) if judge.unjustified(doc)]

    def _privacy(self, docid: str, d: Doc, hub_dbs: list[str]) -> list[str]:
        out = []
        for u in USERS:
            if u == d.author:
                continue
            store = self.mesh[u].store
            for name in store.list_databases():
                held = store.database(name).get(docid)
                if held is not None and not (name == "user/feed" and (self.may_hold(docid, u) or
                                                                      held.deleted and self._tombed(d, u))):
                    out.append(f"PRIVACY: {u}'s {name} holds {d.kind} {docid} by {d.author} "
                               f"(public {d.public}, groups {d.groups}, to {d.to}, sent {d.sent})")
        allowed = set()
        if d.public:
            allowed |= {"master", "shared"}
        if d.groups or d.to:
            allowed.add("shared")
        allowed |= {f"group/{g}" for g in d.groups} | {f"inbox/{u}" for u in d.to}
        tombed = {f"group/{g}" for g in d.tombed} | ({"shared"} if d.tombed else set())
        for name in hub_dbs:
            held = self.mesh.hub.db(name).get(docid) if name not in allowed else None
            if held is not None and not (held.deleted and name in tombed):
                out.append(f"PRIVACY: the hub's {name} holds {d.kind} {docid} by {d.author} "
                           f"(public {d.public}, groups {d.groups}, to {d.to})")
        return out

    def _placed(self, docid: str, d: Doc, rev: str | None, hub_dbs: list[str]) -> list[str]:
        """Nothing lost, deletes delete: the hub's places and the connected readers' feeds (author online)."""
        out = []
        hub = self.mesh.hub
        author = self.mesh[d.author]
        mine = state(author.feed(), docid)
        if d.deleted and mine is not None and not mine[1]:   # deleted here, or by another copy of the account
            out.append(f"UNDELETED: {d.author}'s own feed holds deleted {d.kind} {docid} live")
        elif not d.deleted and (mine is None or mine[0] != rev):
            out.append(f"LOST: {d.author}'s own feed holds {docid} at {mine}, not {rev}")
        if d.deleted:
            for name in hub_dbs:
                s = state(hub.db(name), docid)
                if s is not None and not s[1]:
                    out.append(f"UNDELETED: the hub's {name} holds deleted {d.kind} {docid} live")
        elif d.targets_ever() and not d.frozen:
            places = ({"master"} if d.public else set()) | {f"group/{g}" for g in d.groups - d.refused} | \
                     {f"inbox/{u}" for u in d.to}
            places |= {"shared"} if places else set()   # a group that refused the latest keeps an older one
            for name in sorted(places):
                s = state(hub.db(name), docid) if name in hub_dbs else None
                if s != (rev, False):
                    pub = author.flows.publisher
                    out.append(f"LOST: the hub's {name} holds {d.kind} {docid} at {s}, not {rev} (model {d}; "
                               f"signed audience {(pub.current(docid) or {}).get('body', {}).get('audience')}, outbox "
                               f"{pub.targets(docid)}, refused {pub.refused(docid)})")
        for u in USERS:
            if u == d.author or not self.online[u]:
                continue
            have = state(self.mesh[u].feed(), docid)
            if d.deleted and have is not None and not have[1] and any(self.reads(g, u) for g in d.groups):
                out.append(f"UNDELETED: {u}'s feed holds deleted {d.kind} {docid} live (groups {d.groups})")
            # a feed merges its sources: it holds the newest, and a group that refused the latest keeps an older one
            sources = [f"group/{g}" for g in d.groups - d.refused if self.reads(g, u)] + \
                      ([f"inbox/{u}"] if u in d.to else [])
            for name in sources:
                want = state(hub.db(name), docid) if name in hub_dbs else None
                if want is not None and have != want:
                    out.append(f"STALE: {u}'s feed holds {d.kind} {docid} at {have}, the hub's {name} at {want}")
        return out


def in_greenlet(fn: Any) -> Deferred:
    """Run the synchronous ``fn`` in a greenlet of its own, whose ``run`` calls block on the reactor (pytest-twisted
    runs tests in the reactor's greenlet, where blocking is not allowed); fires with its result."""
    done: Deferred = Deferred()

    def body() -> None:
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 (handed to the test, hypothesis' report included)
            reactor.callLater(0, done.errback, e)
        else:
            reactor.callLater(0, done.callback, result)

    reactor.callLater(0, greenlet.greenlet(body).switch)
    return done


@pytest.mark.timeout(900)
@pytest_twisted.ensureDeferred
async def test_the_flows_match_the_model() -> None:
    """Random sequences of flow operations keep the mesh and the model in agreement (see the module text)."""
    machine_settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
                                derandomize=not RANDOM, suppress_health_check=list(HealthCheck),
                                verbosity=Verbosity.debug if STEPS_SHOWN else
                                Verbosity.verbose if TRACE else Verbosity.normal)
    await in_greenlet(lambda: run_state_machine_as_test(FlowModel, settings=machine_settings))


class Picks:
    """Stands in for hypothesis' ``data`` in a scripted sequence: a draw takes the value given for its label,
    else the last one offered (the newest shift or comment)."""

    def __init__(self, **chosen: Any) -> None:
        self.chosen = chosen

    def draw(self, strategy: Any, label: str = "") -> Any:
        return self.chosen[label] if label in self.chosen else strategy.elements[-1]


def scripted_sequence() -> None:
    """One fixed sequence through the model's rules, its invariant after each step: the flows the random
    sequences of CI's few examples may not line up (swarm testing leaves rules out of each one) — comment
    edits that land, one after its shift went public (the comment stays with the club), ones refused because
    their author lost the shift, threads, a fork and resolve of a public shift, all watched by the full peer, and
    a group shift whose losing branch another copy of the account edited on, resolved, then deleted by that copy,
    and a public shift sent to a user too that such a copy deletes."""
    m = FlowModel()
    made: dict[str, str] = {}   # name -> id of what the steps made

    def new(kind: str, author: str, name: str) -> None:
        made[name] = [i for i, d in m.docs.items() if d.kind == kind and d.author == author][-1]

    def meant(name: str, what: str) -> None:
        """The step before did what the sequence is for (``what``: a Doc flag the model set)."""
        assert getattr(m.docs[made[name]], what), f"the sequence meant {name} to be {what}: {m.docs[made[name]]}"

    def club_comment(shift: str, comment: str) -> list:
        """alice sends a new shift to g1, bob comments and edits the comment, carol and bob ask for the thread."""
        return [lambda: m.create("alice", HREFS[0]), lambda: new("shift", "alice", shift),
                lambda: m.publish(Picks(shift=made[shift], group="g1"), "group"),
                lambda: m.comment(Picks(commenter="bob", shift=made[shift])), lambda: new("comment", "bob", comment),
                lambda: m.edit_comment(Picks(comment=made[comment])),
                lambda: m.query_thread(Picks(shift=made[shift]), "carol", 2),
                lambda: m.query_thread(Picks(shift=made[shift]), "bob", 2)]

    try:
        m.some_shifts(list(HREFS))
        m.a_group("read")                                       # g1: alice owns it, bob reads it
        m.mesh_matches_model()
        new("shift", "alice", "public")
        steps = [
            lambda: m.publish(Picks(shift=made["public"]), "public"),
            lambda: m.comment(Picks(commenter="bob", shift=made["public"])), lambda: new("comment", "bob", "on public"),
            lambda: m.edit_comment(Picks(comment=made["on public"])),
            lambda: m.query_thread(Picks(shift=made["public"]), "carol", 1),
            lambda: m.query_thread(Picks(shift=made["public"]), PEER, 1),
            *club_comment("later public", "club, then public"),
            lambda: m.publish(Picks(shift=made["later public"]), "public"),
            lambda: m.edit_comment(Picks(comment=made["club, then public"])),
            lambda: m.query_thread(Picks(shift=made["later public"]), "carol", 1),
            lambda: m.query_thread(Picks(shift=made["later public"]), PEER, 1),
            *club_comment("club", "on club"),
            lambda: m.remove(Picks(member=("g1", "bob"))),
            lambda: m.edit_comment(Picks(comment=made["on club"])),   # bob no longer sees the shift
            lambda: meant("on club", "edit_refused"),
            lambda: m.query_thread(Picks(shift=made["club"]), "alice", 1),
            # carol, removed from g1, edits what she sent there: g1 keeps (and the hub shows) the one it has
            lambda: m.member("g1", "carol", "publish"), lambda: m.create("carol", HREFS[2]),
            lambda: new("shift", "carol", "carol's"),
            lambda: m.publish(Picks(shift=made["carol's"], group="g1"), "group"),
            lambda: m.remove(Picks(member=("g1", "carol"))), lambda: m.edit(Picks(shift=made["carol's"])),
            lambda: m.query_group(Picks(group="g1"), "alice", 1),
            # the other copy of alice's account edits on from the branch that lost in her copy: the resolve keeps
            # that edit (it is the one shown) and the group and every feed end with it alone
            lambda: m.fork(Picks(shift=made["club"])), lambda: meant("club", "conflicted"),
            lambda: (m.continue_losing_branch(Picks(shift=made["club"])), m.resolve(Picks(shift=made["club"]))),
            lambda: m.edit(Picks(shift=made["club"])),
            # then that other copy deletes it: alice's node counts it deleted, refuses an edit, lists it nowhere
            lambda: m.other_copy_deletes(Picks(shift=made["club"])), lambda: meant("club", "deleted"),
            lambda: m.query_author("alice", "alice", 2),
            # a shift of bob's, public and sent to carol, that another copy of his account deletes: through
            # master and carol's inbox, which bob's node reads only by asking the hub
            lambda: m.create("bob", HREFS[1]), lambda: new("shift", "bob", "bob's"),
            lambda: m.publish(Picks(shift=made["bob's"]), "public"),
            lambda: m.publish(Picks(shift=made["bob's"], to="carol"), "user"),
            lambda: m.other_copy_deletes(Picks(shift=made["bob's"])), lambda: meant("bob's", "deleted"),
            lambda: m.query_author("bob", "bob", 2),
            lambda: m.fork(Picks(shift=made["public"])), lambda: meant("public", "conflicted"),
            lambda: m.resolve(Picks(shift=made["public"])),
            lambda: m.delete(Picks(shift=made["public"])),
            lambda: m.edit_comment(Picks(comment=made["on public"])),   # on a deleted shift: refused at once
            lambda: meant("on public", "edit_refused"),
            lambda: m.query_thread(Picks(shift=made["public"]), "carol", 3),
            lambda: m.delete_comment(Picks(comment=made["on public"])),
            lambda: m.query_thread(Picks(shift=made["public"]), PEER, 3),
        ]
        for step in steps:
            step()
            m.mesh_matches_model()
    finally:
        m.teardown()


@pytest.mark.timeout(300)
@pytest_twisted.ensureDeferred
async def test_a_scripted_sequence_of_comment_edits_threads_and_a_full_peer() -> None:
    """The model's invariants hold along ``scripted_sequence``."""
    await in_greenlet(scripted_sequence)
