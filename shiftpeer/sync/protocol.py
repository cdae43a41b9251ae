"""The sync connection: framing, the handshake state machine, dispatch. Replication lives elsewhere.

``SyncProtocol`` is thin on purpose: it turns bytes into validated messages (``framing`` +
``messages``), runs the connection state machine (awaiting_hello -> ready -> closed, see
docs/protocol.md), answers RPCs, and hands replication messages to a ``ReplicationManager``.
"""

from __future__ import annotations

import collections
import weakref
from typing import Any, Callable, Iterable, Optional

from automat import MethodicalMachine
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from shiftpeer.sync import messages
from shiftpeer.sync.framing import MAX_FRAME, FrameDecoder, FrameTooLarge
from shiftpeer.sync.limits import (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS, MAX_CONNECTIONS_PER_BLOCK,
                                   MAX_CONNECTIONS_PER_NETWORK, MAX_CONNECTIONS_PER_PEER, TOO_MANY_CONNECTIONS,
                                   ConnectionLimits, address_key)
from shiftpeer.sync.messages import FEATURE_PREFIX, FEATURES, MAX_BATCH, PROTOCOL_VERSION, ProtocolError
from shiftpeer.sync.manager import ReplicationManager
from shiftpeer.sync.replication import (BATCH_CHANGES, DOCS_FRAME_BYTES, MAX_FEEDERS, WINDOW, RateLimit,
                                        Replication)
from shiftpeer.sync.refusallog import RefusalLog
from shiftpeer.sync.sendnow import send_now
from shiftpeer.sync.uploadcap import UploadCap

#: Seconds from the TCP connection to the peer's hello (the TLS handshake included).
HANDSHAKE_TIMEOUT = 30.0
#: Seconds from the first byte of a frame to its last: a peer that trickles bytes is cut off.
FRAME_TIMEOUT = 120.0
#: Received frames are handled for at most this many seconds at a time; the rest wait for the next reactor
#: turn, so what the handled ones wrote goes out first (the reactor writes to sockets only between turns).
HANDLE_SLICE = 0.002

log = Logger()

#: The summary line of the violations a peer (or address) went on with after its first was logged.
VIOLATION_SUMMARY = ("closed {more:,} more sync connections with {what} on protocol violations in the last "
                     "{interval:g} s ({why})")

RPC_FAILURE_SUMMARY = "{more:,} more RPC calls from {what} failed in the last {interval:g} s ({why})"
PEER_ERROR_SUMMARY = "{what} closed {more:,} more sync connections with an error in the last {interval:g} s ({why})"

_REPLICATION_TYPES = frozenset(("pull", "need", "ack", "refused", "accept", "changes", "docs", "caught_up", "push",
                                "stop"))


class RemoteError(Exception):
    """An RPC failed on the peer (or the connection went away before the answer)."""


@implementer(IPushProducer)
class SyncProtocol(Protocol):
    """One sync connection (either side). After the handshake: ``peer_id``, ``peer_roles``,
    ``pull``, ``push``, ``call``."""

    _machine = MethodicalMachine()

    def __init__(self, factory: "SyncFactory") -> None:
        self.factory = factory
        self.peer_id: Optional[str] = None
        self.peer_roles: tuple[str, ...] = ()
        self.peer_features: frozenset[str] = frozenset()  # optional messages the peer understands
        self.peer_error: Optional[dict] = None     # the error frame the peer closed with, if any
        self.close_reason: Optional[dict] = None   # the error we closed with, if any
        self.lost_reason: Optional[Failure] = None # why the transport went away (connectionLost)
        self.paused = False                          # the transport asked us to stop producing
        self.frames_in = self.frames_out = 0
        self.bytes_in = self.bytes_out = 0
        #: frame bytes received (with the 4-byte prefix) per message type; live changes carrying documents
        #: count as "changes_docs"
        self.bytes_in_by_type: collections.Counter = collections.Counter()
        self._decoder = FrameDecoder(factory.max_frame)
        # Under the node's upload cap every frame goes out through this (shiftpeer.sync.uploadcap)
        cap = factory.upload_cap
        self._paced = cap.output(self) if cap is not None else None
        # The input for every frame after hello, bound once: automat builds a new bound input (a copied
        # function) on each attribute access, a third of the ~12 us an input costs.
        self._message = self.message
        #: the machine is in state ready: set by _authenticate, cleared first by every output that leaves it
        #: (so a leaving output that raised before closing still stops the direct dispatch, _handle_frame)
        self._in_ready = False
        self._closing = False
        self._calls: dict[int, Deferred] = {}
        self._next_call = 1
        self.replications = ReplicationManager(
            self, factory.store, factory.policy, factory.validator, factory.counters,
            window=factory.window, batch_changes=factory.batch_changes, store_batch=factory.store_batch,
            max_batch=factory.max_batch, max_replications=factory.max_replications, clock=factory.reactor,
            expect=factory.expect_docs, docs_frame_bytes=cap.frame_bytes if cap is not None else DOCS_FRAME_BYTES)
        self._hello_timer: Any = None
        self._frame_timer: Any = None
        self._ready: Deferred | None = None
        self._ready_waiters: list[Deferred] = []
        self.extra_hooks: list[Callable[["SyncProtocol"], Any]] = []
        self._lost = False
        self._closed_waiters: list[Deferred] = []
        # Frames written while we handle received data are queued and written together when it is done:
        # one TLS write (records, one send) instead of one per frame, e.g. accept + caught_up, need + ack.
        self._out: Optional[list[bytes]] = None
        # Received frames not handled yet (HANDLE_SLICE), the reactor turn that will, and why reading is paused
        self._inbox: collections.deque[bytes] = collections.deque()
        self._next_slice: Any = None
        self._read_holds: set[str] = set()
        # Serving side only (SyncFactory.buildProtocol): the address and peer slots this connection holds
        self.serving = False
        self.address: Optional[str] = None
        self._peer_slot: Optional[str] = None

    # ---------------------------------------------------------------- state machine
    @_machine.state(initial=True)
    def awaiting_hello(self) -> None:
        "We sent our hello and wait for the peer's."

    @_machine.state()
    def ready(self) -> None:
        "Handshake done: the peer is authenticated; replication and RPC flow both ways."

    @_machine.state()
    def closed(self) -> None:
        "The connection is closing or gone; input is ignored."

    @_machine.input()
    def hello(self, msg: dict) -> None:
        "A hello with our protocol version."

    @_machine.input()
    def message(self, msg: dict) -> None:
        "Any other valid message."

    @_machine.input()
    def bad_input(self, code: str, text: str, db: Optional[str]) -> None:
        "The peer broke the protocol (or failed authentication/validation)."

    @_machine.input()
    def over_limit(self, text: str) -> None:
        "The authenticated peer already holds as many connections as this listener allows."

    @_machine.input()
    def lost(self) -> None:
        "The transport is gone."

    @_machine.output()
    def _authenticate(self, msg: dict) -> None:
        try:
            peer_id = self.factory.peer_id_of(self.transport)
        except Exception as e:
            peer_id = None
            log.warn("no peer identity: {err}", err=e)
        if not peer_id:
            self.bad_input("unauthenticated", "no verified peer certificate", None)
            return
        if self.serving:
            refusal = self.factory.limits.admit_peer(peer_id, self.address)
            if refusal is not None:
                self.over_limit(refusal)
                return
            self._peer_slot = peer_id
        self.peer_id = peer_id
        self._in_ready = True
        if self.factory.docs_per_second:   # one documents-per-second budget per peer, not per connection
            self.replications.rate = self.factory.rate_for(peer_id)
        self.peer_roles, self.peer_features = messages.split_roles(msg["roles"])
        self._cancel_timer("_hello_timer")
        self.factory.connections.add(self)
        log.info("connected to {peer} (roles {roles})", peer=peer_id, roles=",".join(self.peer_roles))
        for hook in [*self.factory.on_connected, *self.extra_hooks]:
            try:
                hook(self)
            except Exception:
                log.failure("connection hook failed for {peer}", peer=peer_id)
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(self)

    @_machine.output()
    def _dispatch(self, msg: dict) -> None:
        self._dispatch_ready(msg)

    def _dispatch_ready(self, msg: dict) -> None:
        """A message in state ``ready``. `_handle_frame` calls it directly while ``_in_ready`` says that is
        the state and the connection is not closing: an automat input costs ~8 us warm, several times that
        on a cold path such as a live change."""
        t = msg["t"]
        if t in _REPLICATION_TYPES:
            self.replications.handle(msg)
        elif t == "call":
            self._on_call(msg)
        elif t == "result":
            self._on_result(msg)
        elif t == "error":
            self._on_error(msg)

    @_machine.output()
    def _early_message(self, msg: dict) -> None:
        if msg["t"] == "error":
            self._on_error(msg)
        else:
            self._refuse_and_close("unexpected", f"{msg['t']} before hello", None)

    @_machine.output()
    def _second_hello(self, msg: dict) -> None:
        self._in_ready = False
        self._refuse_and_close("unexpected", "a second hello", None)

    @_machine.output()
    def _violate(self, code: str, text: str, db: Optional[str]) -> None:
        self._in_ready = False
        self._refuse_and_close(code, text, db)

    @_machine.output()
    def _refuse_over_limit(self, text: str) -> None:
        self._in_ready = False
        # not a protocol violation: counted and logged by the limits, the peer told why
        self.close_reason = {"code": TOO_MANY_CONNECTIONS, "msg": text, "db": None}
        self._write(messages.encode("error", code=TOO_MANY_CONNECTIONS, msg=text, db=None))
        self._close()

    def _refuse_and_close(self, code: str, text: str, db: Optional[str]) -> None:
        self.close_reason = {"code": code, "msg": text, "db": db}
        self.factory.counters["violations"] += 1
        self.factory.counters["violation." + code] += 1
        # one line for the first violation of a peer (an address before the hello), then summed up
        who = self._log_key()
        self.factory.violation_log.refused(who, who, code, "closing the connection to {peer}: {code}: {text}",
                                           peer=self.peer_id or self._address(), code=code, text=text, db=db)
        self._write(messages.encode("error", code=code, msg=text, db=db))
        self._close()

    @_machine.output()
    def _cleanup(self) -> None:
        self._in_ready = False
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._cancel_timer("_hello_timer")
        self._cancel_timer("_frame_timer")
        self._cancel_timer("_next_slice")
        self._inbox.clear()
        self.factory.connections.discard(self)
        if self._paced is not None:
            self._paced.close(flush=False)
        if self.serving:
            self.factory.limits.release(self._peer_slot, self.address)
            self._peer_slot = self.address = None
        self.replications.connection_lost()
        calls, self._calls = self._calls, {}
        for d in calls.values():
            d.errback(RemoteError("the connection was lost"))
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(RemoteError("the connection closed before the handshake"))
        closed, self._closed_waiters = self._closed_waiters, []
        for d in closed:
            d.callback(None)

    awaiting_hello.upon(hello, enter=ready, outputs=[_authenticate])
    awaiting_hello.upon(message, enter=closed, outputs=[_early_message])
    awaiting_hello.upon(bad_input, enter=closed, outputs=[_violate])
    awaiting_hello.upon(lost, enter=closed, outputs=[_cleanup])
    ready.upon(over_limit, enter=closed, outputs=[_refuse_over_limit])
    ready.upon(hello, enter=closed, outputs=[_second_hello])
    ready.upon(message, enter=ready, outputs=[_dispatch])
    ready.upon(bad_input, enter=closed, outputs=[_violate])
    ready.upon(lost, enter=closed, outputs=[_cleanup])
    closed.upon(hello, enter=closed, outputs=[])
    closed.upon(message, enter=closed, outputs=[])
    closed.upon(bad_input, enter=closed, outputs=[])
    closed.upon(over_limit, enter=closed, outputs=[])
    closed.upon(lost, enter=closed, outputs=[_cleanup])

    # ---------------------------------------------------------------- transport events
    def connectionMade(self) -> None:
        self._no_delay()
        # under the upload cap the paced output is the transport's producer, and pauses us in turn
        self.transport.registerProducer(self._paced or self, True)
        if self.factory.handshake_timeout:
            self._hello_timer = self.factory.reactor.callLater(
                self.factory.handshake_timeout, self._timed_out,
                f"no hello within {self.factory.handshake_timeout:g} seconds")
        roles = [*self.factory.roles, *(FEATURE_PREFIX + f for f in self.factory.features)]
        self._write(messages.encode("hello", v=self.factory.protocol_version, roles=roles,
                                    maxf=self.factory.max_frame))

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.bytes_in += len(data)
        try:
            frames = self._decoder.feed(data)
        except FrameTooLarge as e:
            self.bad_input("frame_too_large", str(e), None)
            return
        if not self._decoder.buffered or frames:   # no partial frame, or a new one began in this read
            self._cancel_timer("_frame_timer")
        if self._decoder.buffered and self._frame_timer is None and self.factory.frame_timeout:
            self._frame_timer = self.factory.reactor.callLater(
                self.factory.frame_timeout, self._timed_out,
                f"a frame took more than {self.factory.frame_timeout:g} seconds to arrive")
        if not frames:
            return
        self._inbox.extend(frames)
        if self._out is None and self._next_slice is None:   # else the running (or next) slice takes them
            self._handle_inbox()

    def _handle_inbox(self) -> None:
        """Handle received frames in order for up to HANDLE_SLICE, then write what they produced. Frames left
        over wait for the next reactor turn, reading paused meanwhile (so they cannot pile up): the reactor
        first sends what was written. Without this a feeder answering several `need`s from one read held all
        their `docs` until the last was encoded (the first batch of a 1,000-doc increment reached the puller
        after ~27 ms instead of ~2 ms), and a puller decoding several `docs` frames held back its `need`s
        and `ack`s."""
        self._next_slice = None
        clock = self.factory.reactor
        self._out = []
        try:
            deadline = clock.seconds() + HANDLE_SLICE
            while self._inbox and not self._closing:
                self._handle_frame(self._inbox.popleft())
                if clock.seconds() >= deadline:
                    break
        finally:
            self._flush_out()
        if self._closing:
            self._inbox.clear()
        elif self._inbox:
            self._hold_reading("inbox")
            self._next_slice = clock.callLater(0, self._handle_inbox)
            return
        self._release_reading("inbox")

    def _handle_frame(self, frame: bytes) -> None:
        self.frames_in += 1
        try:
            msg = messages.decode(frame)
        except ProtocolError as e:
            self.bad_input(e.code, str(e), None)
            return
        self.bytes_in_by_type["changes_docs" if msg["t"] == "changes" and msg.get("docs") is not None
                              else msg["t"]] += len(frame) + 4
        if msg["t"] == "hello" and msg["v"] != self.factory.protocol_version:
            self.bad_input("version", f"protocol version {msg['v']} is not supported; this node speaks "
                           f"version {self.factory.protocol_version}", None)
            return
        try:
            if msg["t"] == "hello":
                self.hello(msg)
            elif self._in_ready and not self._closing:
                self._dispatch_ready(msg)
            else:
                self._message(msg)
        except Exception:
            log.failure("handling a {t} message from {peer} failed", t=msg["t"], peer=self.peer_id)
            self.bad_input("internal", "internal error", None)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost_reason = reason
        if self.peer_id:
            log.info("disconnected from {peer}", peer=self.peer_id)
        self.lost()

    def _no_delay(self) -> None:
        """TCP_NODELAY: every frame is written whole, so Nagle only delays small ones (a live change, an
        ack) until the peer's delayed ACK, up to 40 ms on Linux. TLS and wrappers pass the call down to TCP."""
        try:
            set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
            if set_no_delay is not None:
                set_no_delay(True)
        except Exception:   # not TCP (iosim, a pipe): nothing to do
            pass

    # IPushProducer: the transport tells us when its buffer is full
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.replications.resume()

    def stopProducing(self) -> None:
        self.paused = True

    # ---------------------------------------------------------------- the connection API
    def when_ready(self) -> Deferred:
        """A Deferred that fires with this connection once the handshake is done."""
        if self.peer_id is not None:
            from twisted.internet.defer import succeed
            return succeed(self)
        d: Deferred = Deferred()
        self._ready_waiters.append(d)
        return d

    def pull(self, remote_db: str, local_db: str, live: bool = True, vis: Optional[list] = None) -> Replication:
        """Replicate the peer's ``remote_db`` into our ``local_db``; ``vis``: visibility tokens that record
        where the documents came from, on every document the source holds (``Puller``)."""
        return self.replications.pull(remote_db, local_db, live, vis=vis)

    def push(self, local_db: str, remote_db: str, live: bool = True) -> Replication:
        """Replicate our ``local_db`` into the peer's ``remote_db`` (the peer pulls it from us)."""
        return self.replications.push(local_db, remote_db, live)

    def call(self, method: str, args: dict) -> Deferred:
        """Call ``method`` in the peer's ``rpc_handlers``; fires with its result or RemoteError."""
        cid, self._next_call = self._next_call, self._next_call + 1
        d: Deferred = Deferred()
        self._calls[cid] = d
        self.send("call", id=cid, method=method, args=args)
        return d

    def close(self) -> None:
        """Close the connection."""
        self._close()

    def when_closed(self) -> Deferred:
        """A Deferred that fires (with None) once the connection is gone."""
        d: Deferred = Deferred()
        if self._lost:
            d.callback(None)
        else:
            self._closed_waiters.append(d)
        return d

    # ---------------------------------------------------------------- used by ReplicationManager
    def encode(self, t: str, **fields: Any) -> bytes:
        return messages.encode(t, **fields)

    def send(self, t: str, **fields: Any) -> None:
        self._write(messages.encode(t, **fields))

    def write_frame(self, frame: bytes, lane: Any = None) -> None:
        """Write an encoded frame; ``lane``: the rid of the replication this side serves that it belongs to
        (under the upload cap, its frames keep their order and take turns with the other replications')."""
        self._write(frame, lane)

    def send_now(self, queued: bool = False) -> None:
        """Hand what this connection has written to the kernel now, not on the reactor's next turn (a live
        change, an eager batch: ``sendnow``). While received frames are handled their replies wait to go out
        together, unless `queued`: then what they wrote so far goes now, the rest still together after (an
        eager pull's first batch no longer waits for the whole window to be encoded). Never under the upload
        cap (it paces the frames)."""
        if self._paced is not None or self._closing:
            return
        if self._out is not None:
            if not queued:
                return
            out, self._out = self._out, []
            self._write_frames(out)
        send_now(self.transport)

    def drop_lane(self, lane: Any) -> None:
        """The replication we served as ``lane`` ended: under the upload cap, its frames still waiting are
        dropped (a peer whose access was revoked gets nothing more)."""
        if self._paced is not None:
            self._paced.drop(lane)

    def violation(self, code: str, text: str, db: Optional[str] = None) -> None:
        self.bad_input(code, text, db)

    def pause_reading(self) -> None:
        self._hold_reading("backlog")

    def resume_reading(self) -> None:
        self._release_reading("backlog")

    def _hold_reading(self, why: str) -> None:
        if not self._read_holds and self.transport is not None:
            self.transport.pauseProducing()
        self._read_holds.add(why)

    def _release_reading(self, why: str) -> None:
        if why not in self._read_holds:
            return
        self._read_holds.discard(why)
        if not self._read_holds and self.transport is not None and not self._closing:
            self.transport.resumeProducing()

    def pushed(self, handle: Replication) -> None:
        """The peer started pushing into one of our databases (we pull it)."""
        for hook in self.factory.on_pushed:
            try:
                hook(self, handle)
            except Exception:
                log.failure("push hook failed")

    # ---------------------------------------------------------------- internals
    def _write(self, frame: bytes, lane: Any = None) -> None:
        if self.transport is None or self._closing:
            return
        self.frames_out += 1
        self.bytes_out += len(frame)
        if self._paced is not None:
            self._paced.put(frame, lane, send=self._out is None)
        elif self._out is not None:
            self._out.append(frame)
        else:
            self.transport.write(frame)

    def _flush_out(self) -> None:
        out, self._out = self._out, None
        if self._paced is not None:
            self._paced.offer()
        elif out and self.transport is not None:
            self._write_frames(out)

    def _write_frames(self, out: list[bytes]) -> None:
        """Hand queued frames to TLS in one write (one record run, one send)."""
        if len(out) == 1:
            self.transport.write(out[0])
        elif out:
            self.transport.writeSequence(out)

    def _cancel_timer(self, name: str) -> None:
        timer = getattr(self, name)
        setattr(self, name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _timed_out(self, why: str) -> None:
        """A slow or silent peer: say why, then drop it at once (it may not be reading, so do not wait)."""
        self._hello_timer = self._frame_timer = None
        if self._closing:
            return
        self.bad_input("timeout", why, None)
        if self.transport is not None:
            self.transport.abortConnection()

    def _close(self) -> None:
        if not self._closing:
            self._flush_out()   # an error frame queued just before must go out before close_notify
            if self._paced is not None:
                self._paced.close(flush=True)
            self._closing = True
            if self.transport is not None:
                if self._read_holds:     # read on (input is ignored now), or the peer's close never arrives
                    self._read_holds.clear()
                    self.transport.resumeProducing()
                # TLSMemoryBIOProtocol only sends close_notify once no producer is registered
                self.transport.unregisterProducer()
                self.transport.loseConnection()

    def _address(self) -> str:
        try:
            return str(self.transport.getPeer())
        except Exception:
            return "?"

    def _log_key(self) -> str:
        """Who a summed-up log line is about (``refusallog``): the peer once known, else its IP address."""
        return "peer " + self.peer_id if self.peer_id else self.address or self._host()

    def _host(self) -> str:
        """The peer's IP address without the port (a dialled connection's; a served one has ``address``)."""
        try:
            return address_key(self.transport.getPeer()) or self._address()
        except Exception:
            return "?"

    def _on_call(self, msg: dict) -> None:
        cid, method = msg["id"], msg["method"]
        handler = self.factory.rpc_handlers.get(method)
        if handler is None:
            self.send("result", id=cid, ok=False, error=f"unknown method {method!r}")
            return
        d = maybeDeferred(handler, self, msg["args"])

        def ok(value: Any) -> None:
            try:
                self.send("result", id=cid, ok=True, value=value)
            except Exception:
                log.failure("RPC {method} returned an unencodable result", method=method)
                self.send("result", id=cid, ok=False, error="unencodable result")

        def failed(f: Failure) -> None:
            # a peer may make a handler refuse at wire speed on one connection: the first failure of a peer is
            # logged in full, the rest summed up (``SyncFactory.rpc_failure_log``)
            who = self._log_key()
            self.factory.rpc_failure_log.refused(who, who, method, "RPC {method} from {peer} failed: {err}",
                                                 method=method, peer=self.peer_id, err=f.getErrorMessage())
            self.send("result", id=cid, ok=False, error=f"{f.type.__name__}: {f.getErrorMessage()}"[:4000])

        d.addCallbacks(ok, failed)

    def _on_result(self, msg: dict) -> None:
        d = self._calls.pop(msg["id"], None)
        if d is None:
            return
        if msg["ok"]:
            d.callback(msg.get("value"))
        else:
            d.errback(RemoteError(msg.get("error") or "remote error"))

    def _on_error(self, msg: dict) -> None:
        if msg.get("rid") is not None:
            self.replications.on_error(msg)
            return
        if msg.get("id") is not None:
            d = self._calls.pop(msg["id"], None)
            if d is not None:
                d.errback(RemoteError(msg["msg"]))
            return
        self.peer_error = msg
        # a peer can send one each time it connects, as a violation costs it: the first of a peer is logged in
        # full, the rest summed up (``SyncFactory.peer_error_log``)
        who = self._log_key()
        self.factory.peer_error_log.refused(who, who, msg["code"], "{peer} closed the connection: {code}: {text}",
                                            peer=self.peer_id or self._address(), code=msg["code"], text=msg["msg"])
        self._close()


def _default_peer_id_of(transport: Any) -> Optional[str]:
    from shiftpeer.identity.tls import peer_id_of_transport
    return peer_id_of_transport(transport)


class SyncFactory(Factory):
    """Makes SyncProtocols for listening and connecting; holds what every connection shares."""

    protocol = SyncProtocol  # type: ignore[assignment]

    def __init__(self, store: Any, key: Any, policy: Any, *, reactor: Any, roles: Iterable[str] = (),
                 validator: Optional[Callable[[list], Any]] = None,
                 peer_id_of: Optional[Callable[[Any], Optional[str]]] = None,
                 window: int = WINDOW, batch_changes: int = BATCH_CHANGES, max_frame: int = MAX_FRAME,
                 store_batch: Optional[Callable[..., Deferred]] = None,
                 protocol_version: int = PROTOCOL_VERSION,
                 handshake_timeout: Optional[float] = HANDSHAKE_TIMEOUT,
                 frame_timeout: Optional[float] = FRAME_TIMEOUT, max_batch: int = MAX_BATCH,
                 max_replications: int = MAX_FEEDERS, docs_per_second: Optional[float] = None,
                 max_connections_per_peer: Optional[int] = MAX_CONNECTIONS_PER_PEER,
                 max_connections_per_address: Optional[int] = MAX_CONNECTIONS_PER_ADDRESS,
                 max_connections_per_network: Optional[int] = MAX_CONNECTIONS_PER_NETWORK,
                 max_connections_per_block: Optional[int] = MAX_CONNECTIONS_PER_BLOCK,
                 max_connections: Optional[int] = MAX_CONNECTIONS,
                 max_upload_bytes_per_second: Optional[int] = None,
                 features: Iterable[str] = FEATURES) -> None:
        self.store = store
        self.key = key
        self.policy = policy
        self.reactor = reactor
        self.roles = tuple(roles)
        #: the optional messages this side names in its hello (tests name fewer to stand for an older build)
        self.features = tuple(features)
        self.validator = validator or self._verify_signatures
        #: told how many changes a pull is about to bring: the default validator starts its processes then
        self.expect_docs: Optional[Callable[[int], Any]] = None if validator else self._warm_verifiers
        self.peer_id_of = peer_id_of or _default_peer_id_of
        self.window = window
        self.batch_changes = batch_changes
        self.max_frame = max_frame
        self.store_batch = store_batch
        self.protocol_version = protocol_version
        self.handshake_timeout = handshake_timeout   # per-peer limits and timeouts: docs/protocol.md section 8
        self.frame_timeout = frame_timeout
        self.max_batch = max_batch
        self.max_replications = max_replications
        self.docs_per_second = docs_per_second
        #: the documents-per-second bucket of each authenticated peer with a connection here (``rate_for``)
        self._rates: "weakref.WeakValueDictionary[str, RateLimit]" = weakref.WeakValueDictionary()
        self.rpc_handlers: dict[str, Callable[[SyncProtocol, dict], Any]] = {}
        self.on_connected: list[Callable[[SyncProtocol], Any]] = []
        self.on_pushed: list[Callable[[SyncProtocol, Replication], Any]] = []
        self.connections: set[SyncProtocol] = set()
        self.counters: collections.Counter = collections.Counter()
        #: connection caps of the serving side (None: no cap); docs/protocol.md section 8
        self.limits = ConnectionLimits(self.counters, per_peer=max_connections_per_peer,
                                       per_address=max_connections_per_address,
                                       per_network=max_connections_per_network,
                                       per_block=max_connections_per_block, total=max_connections, clock=reactor)
        #: logs connections closed on a violation: the first per peer (or address), then a summary a minute
        self.violation_log = RefusalLog(reactor, log, summary=VIOLATION_SUMMARY)
        #: failed RPC calls, logged the same way: the first of a peer, then a summary a minute by method
        self.rpc_failure_log = RefusalLog(reactor, log, summary=RPC_FAILURE_SUMMARY)
        #: connections a peer closed with an error frame, the same way, by its error code
        self.peer_error_log = RefusalLog(reactor, log, summary=PEER_ERROR_SUMMARY)
        #: the node-wide cap on what all its sync connections send (None: no cap); docs/operators.md
        self.upload_cap = UploadCap(max_upload_bytes_per_second, reactor, self.counters) \
            if max_upload_bytes_per_second else None

    def rate_for(self, peer_id: str) -> RateLimit:
        """The ``docs_per_second`` bucket of ``peer_id``: one for all its connections (several connections of one
        account store no faster than one), kept while any of them holds it."""
        rate = self._rates.get(peer_id)
        if rate is None:
            rate = self._rates[peer_id] = RateLimit(self.docs_per_second, self.reactor)
        return rate

    def buildProtocol(self, addr: Any) -> Protocol:
        """A connection a listener accepted (the serving side): counted against its address and, after the
        hello, its peer id. Past ``max_connections`` in all, ``max_connections_per_address``,
        ``max_connections_per_network`` or ``max_connections_per_block`` it is dropped at once, before TLS.
        Connections we dial are built by ``build_outgoing`` (``sync.client`` does it) and are not capped."""
        address = address_key(addr)
        if not self.limits.admit_address(address):
            return _Refused()
        proto = self.protocol(self)
        proto.serving = True
        proto.address = address
        return proto

    def build_outgoing(self, addr: Any) -> SyncProtocol:
        """A connection this node dials: the caps are the serving side's business."""
        return self.protocol(self)

    def _verify_signatures(self, docs: list) -> Deferred:
        from shiftpeer.identity.verifiers import verify_many
        return verify_many(docs, reactor=self.reactor)

    def _warm_verifiers(self, expected: int) -> None:
        from shiftpeer.identity.verifiers import warm_verifiers
        warm_verifiers(self.reactor, expected)


class _Refused(Protocol):
    """Stands in for a connection refused before TLS: aborted as soon as it is made, with nothing sent (the
    peer is not authenticated yet, so no sync byte may go out, and it might not read a close)."""

    def connectionMade(self) -> None:
        self.transport.abortConnection()
