"""The user node's side of its hub connection: register, pull into ``user/feed``, push ``user/public``.

When the connection the node dialled to its hub is up, the link asks ``whoami``; once the
account exists it pulls ``inbox/<me>``, ``messages/<me>``, ``system/messages`` and each group it may
read into ``user/feed`` (and ``master`` on a full peer), pushes ``user/public`` into ``master``, and
delivers whatever waits in the outbox. Every RPC the user-side flows need goes through ``call``.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.logger import Logger

from shiftpeer.roles.groups import RANK
from shiftpeer.roles.names import FlowError
from shiftpeer.roles.publishing import FEED, PUBLIC, NotConnected
from shiftpeer.sync.protocol import RemoteError

HUB_KIND = "hub"
_CODED = re.compile(r"^FlowError: \[(\w+)\] (.*)$", re.S)

log = Logger()


def flow_error(err: RemoteError) -> FlowError:
    """A hub's refusal (``FlowError: [code] message``) as a FlowError with the hub's code and message."""
    m = _CODED.match(str(err))
    if m is None:
        return FlowError(f"the hub failed: {err}", "hub_failed")
    return FlowError(m.group(2), m.group(1))


def feed_source(dbname: str) -> dict:
    """How the feed's pull of the hub's ``dbname`` records where its documents came from: a ``group/<g>``
    pull gives them ``group:<g>`` (``vis``), which a ``group`` query answered from the feed asks for, since
    only the hub's ``group/<g>`` vouches that a document's author may publish there; other pulls record
    nothing (docs/flows.md, *Queries*)."""
    return {"vis": [f"group:{dbname[len('group/'):]}"]} if dbname.startswith("group/") else {}


class HubLink:
    """Tracks the hub connection and keeps this node's replications with it in step with its account."""

    def __init__(self, store: Any, *, policy: Any = None, full_peer: bool = False, clock: Any = None,
                 connect_wait: float = 0.0) -> None:
        self._store = store
        self._policy = policy
        self.full_peer = full_peer
        #: how long a call made while the hub is not (yet) connected waits for it (a node just started)
        self._clock = clock
        self.connect_wait = connect_wait
        self._connect_waiters: list[Deferred] = []
        self.conn: Any = None
        self.account: dict = {}
        self.pulls: dict[str, Any] = {}
        self.push: Any = None
        self.publisher: Any = None   # set by the user flows; flushed once the account is known
        self._ready: list[Deferred] = []

    # -- connection events ---------------------------------------------------------------------
    def peer_connected(self, conn: Any, kind: str) -> None:
        """A sync connection is up; the one we dialled as our hub (``kind == "hub"``) is adopted.

        Only the direction decides: an incoming peer that merely claims the hub role is not our hub.
        """
        if kind != HUB_KIND:
            return
        self.conn = conn
        self.pulls, self.push, self.account = {}, None, {}
        if self._policy is not None:
            self._policy.hub_ids = {conn.peer_id}
        waiters, self._connect_waiters = self._connect_waiters, []
        for d in waiters:
            d.callback(conn)
        self.refresh().addErrback(lambda f: log.warn("hub {hub}: {err}", hub=conn.peer_id,
                                                     err=f.getErrorMessage()))

    @property
    def connected(self) -> bool:
        """True while the hub connection is up."""
        conn = self.conn
        return conn is not None and conn in conn.factory.connections

    def call(self, method: str, args: dict) -> Deferred:
        """Call the hub; fails with NotConnected offline and FlowError with the hub's message.

        Offline, the call first waits up to ``connect_wait`` seconds for the hub connection."""
        if not self.connected:
            if self._clock is None or self.connect_wait <= 0:
                return fail(NotConnected("not connected to the hub (is it running? check 'shiftpeer status')"))
            return self._wait_connected().addCallback(lambda _: self.call(method, args))

        def refused(f: Any) -> Any:
            f.trap(RemoteError)
            if not self.connected:
                raise NotConnected("the hub connection was lost")
            raise flow_error(f.value)

        return self.conn.call(method, args).addErrback(refused)

    def _wait_connected(self) -> Deferred:
        d: Deferred = Deferred()
        self._connect_waiters.append(d)

        def give_up() -> None:
            if d in self._connect_waiters:
                self._connect_waiters.remove(d)
                d.errback(NotConnected(f"not connected to the hub after {self.connect_wait:g}s "
                                       "(is it running? check 'shiftpeer status')"))

        timer = self._clock.callLater(self.connect_wait, give_up)
        return d.addBoth(lambda r: (timer.cancel() if timer.active() else None) or r)

    def when_ready(self) -> Deferred:
        """Fires once the account is known and its replications are started."""
        d: Deferred = Deferred()
        if self.account.get("name") and self.connected:
            d.callback(self.account)
        else:
            self._ready.append(d)
        return d

    # -- account and replications --------------------------------------------------------------
    @inlineCallbacks
    def register(self, name: str, token: str | None = None):
        """Create the account on the hub, then start replicating."""
        args = {"name": name} if token is None else {"name": name, "token": token}
        result = yield self.call("register", args)
        yield self.refresh()
        return result

    @inlineCallbacks
    def refresh(self):
        """Ask the hub who we are and bring the replications in line with the answer."""
        info = yield self.call("whoami", {})
        self.account = info
        if info.get("name"):
            self._sync_replications(info)
            waiters, self._ready = self._ready, []
            for d in waiters:
                d.callback(info)
            if self.publisher is not None:
                self.publisher.flush_quietly()
        return info

    def wanted(self, info: dict) -> set[str]:
        """The hub databases this account replicates into its feed."""
        me = info["name"]
        dbs = {f"inbox/{me}", f"messages/{me}", "system/messages"}
        dbs |= {f"group/{g}" for g, level in info.get("groups", {}).items() if RANK.get(level, -1) >= RANK["read"]}
        if self.full_peer:
            dbs.add("master")
        return dbs

    def _sync_replications(self, info: dict) -> None:
        conn = self.conn
        wanted = self.wanted(info)
        for name in [n for n, r in self.pulls.items() if n not in wanted or r.finished]:
            self.pulls.pop(name).stop()
        for name in sorted(wanted - set(self.pulls)):
            self.pulls[name] = conn.pull(name, FEED, live=True, **feed_source(name))
            self.pulls[name].done.addErrback(self._pull_ended, name)
        if self.push is None or self.push.finished:
            self.push = conn.push(PUBLIC, "master", live=True)
            self.push.done.addErrback(self._pull_ended, "master (push)")

    def _pull_ended(self, f: Any, name: str) -> None:
        log.info("replication of {db} with the hub ended: {why}", db=name, why=f.getErrorMessage())

    def deliver(self, doc: dict, targets: list[str]) -> Deferred:
        """The publisher's delivery: one ``deliver`` RPC. Its per-target errors are the hub's refusals of
        those targets; a refusal of the whole call fails with that FlowError (no target is refused)."""
        if not self.connected or not self.account.get("name"):
            return fail(NotConnected("not connected to the hub"))
        return self.call("deliver", {"doc": doc, "targets": targets})
