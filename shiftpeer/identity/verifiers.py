"""Where shift signatures are checked: inline for a few, else in verification processes (threads where
processes cannot run), never blocking the reactor. What is checked is ``signing``."""

from __future__ import annotations

import collections
import os
import struct
import sys
from typing import Any, Callable, Iterable, Optional, Sequence

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

try:
    import fcntl
except ImportError:   # not POSIX: no verification processes either
    fcntl = None  # type: ignore[assignment]

from shiftpeer.tuning import tune_interpreter

from . import signing
from .signing import canonical_retry, leave_plain_body, prepare_check, verify_chunk, with_payload

log = Logger()

#: Batches smaller than this are verified inline: a thread hop costs more than ~50 verifies.
INLINE_BELOW = 64


#: Threads in the shared verification pool, the fallback where processes cannot run (in parallel only with
#: libsodium, which releases the GIL; ed25519-zebra holds it, so its checks take turns there).
VERIFY_THREADS = max(2, min(4, os.cpu_count() or 2))
_pools: dict[int, tuple[Any, ThreadPool]] = {}


def verify_pool(reactor: Any) -> ThreadPool:
    """The verification pool for `reactor`: VERIFY_THREADS threads, started on first use, stopped at
    reactor shutdown. Not the reactor's own pool (10 threads, shared with everything else): with one
    thread per core and a FIFO queue, the chunks of the oldest batch run first and finish first, so
    the in-order store can take it, instead of every queued batch sharing the cores and all finishing
    late together."""
    return _per_reactor(_pools, reactor, _start_pool, lambda pool: pool.started, ThreadPool.stop)


def _start_pool() -> ThreadPool:
    pool = ThreadPool(minthreads=0, maxthreads=VERIFY_THREADS, name="shiftpeer-verify")
    pool.start()
    # A thread that calls out without the GIL (each verify here; each LMDB get/put of the store's writer; the
    # reactor's socket, TLS and LMDB calls) must win it back afterwards, and while another thread runs Python
    # it waits up to the switch interval for it: at the default 5 ms, two verify threads next to a busy store
    # writer went from ~9,400 to ~1,900 verifies a second, and an LMDB get took 0.7 ms instead of 1 us.
    # At 0.5 ms they keep ~9,100/s (the pull's receiver used ~10% less CPU, and ~25% more docs/s).
    tune_interpreter()
    return pool


def _per_reactor(registry: dict, reactor: Any, make: Callable[[], Any], alive: Callable[[Any], bool],
                 stop: Callable[[Any], Any]) -> Any:
    """`reactor`'s one instance in `registry`: made by `make` on first use (or when no longer `alive`),
    stopped at the reactor's shutdown."""
    entry = registry.get(id(reactor))
    if entry is not None and entry[0] is reactor and alive(entry[1]):
        return entry[1]
    thing = make()
    registry[id(reactor)] = (reactor, thing)

    def shutdown() -> None:
        if registry.get(id(reactor), (None, None))[1] is thing:
            del registry[id(reactor)]
        stop(thing)

    reactor.addSystemEventTrigger("during", "shutdown", shutdown)
    return thing


#: The verification processes' program: read requests from stdin, answer on stdout, exit at end of input.
#: A request is a 4-byte big-endian length, then records of [4-byte message length, 32-byte public key,
#: 64-byte signature, message]; the answer is a 4-byte length, then one byte per record (1: valid).
#: Self-contained, so a process starts in ~40 ms (it imports nothing but the two signature libraries). The
#: rules are keys.verify_with_key's: a key must be a valid prime-order point (libsodium's check, remembered
#: per key), then ed25519-zebra checks the signature (~60 us a record here), or, where zebra is not
#: installed, libsodium's crypto_sign_open given pointers into the request (signature and message are
#: adjacent there, as it wants them) and one reused output buffer, not PyNaCl's copying wrapper.
#: A record that runs past the end of its request is answered 0 and ends the request's answers early,
#: which the node takes as a broken process.
_WORKER_SOURCE = """
import struct, sys
from nacl._sodium import ffi, lib
if lib.sodium_init() == -1:
    sys.exit(2)
try:
    from ed25519_zebra import ed_verify
except ImportError:
    ed_verify = None
open_, valid_point = lib.crypto_sign_open, lib.crypto_core_ed25519_is_valid_point
read, write, flush = sys.stdin.buffer.read, sys.stdout.buffer.write, sys.stdout.buffer.flush
u32 = struct.Struct(">I")
out_len = ffi.new("unsigned long long *")
scratch, room = None, 0
keys = {}
while True:
    head = read(4)
    if len(head) < 4:
        break
    (n,) = u32.unpack(head)
    data = read(n)
    if len(data) < n:
        break
    if n > room:
        room = max(n, 1 << 16)
        scratch = ffi.new("unsigned char[]", room)
    base = ffi.from_buffer(data)
    out = bytearray()
    pos = 0
    while pos < n:
        if pos + 4 > n:
            out.append(0)
            break
        (m,) = u32.unpack_from(data, pos)
        end = pos + 100 + m
        if end > n:
            out.append(0)
            break
        pk = data[pos + 4 : pos + 36]
        ok = keys.get(pk)
        if ok is None:
            if len(keys) >= 65536:
                keys.clear()
            ok = keys[pk] = valid_point(pk) == 1
        if not ok:
            out.append(0)
        elif ed_verify is not None:
            out.append(ed_verify(data[pos + 36 : pos + 100], data[pos + 100 : end], pk))
        else:
            out.append(open_(scratch, out_len, base + (pos + 36), m + 64, base + (pos + 4)) == 0)
        pos = end
    del base
    write(u32.pack(len(out)) + out)
    flush()
"""
_U32 = struct.Struct(">I")


class VerifierGone(Exception):
    """A verification process ended (or broke its protocol) with requests outstanding."""


class _VerifyProcess(ProcessProtocol):
    """One verification process; requests are answered in the order they were written."""

    def __init__(self, owner: Optional["VerifyProcesses"] = None) -> None:
        self.owner = owner
        self.pending: collections.deque[tuple[Deferred, int]] = collections.deque()
        self.gone = False
        self.answered = 0
        self._buf = bytearray()

    def submit(self, items: Sequence[tuple[bytes, bytes, Any, bytes]]) -> Deferred:
        """Fires with one bool per (public key, signature, anything, message) (``signing.prepare_check``'s records)."""
        parts: list[bytes] = []
        add = parts.append
        pack = _U32.pack
        for pk, sig, _, msg in items:
            add(pack(len(msg)))
            add(pk)
            add(sig)
            add(msg)
        body = b"".join(parts)
        d: Deferred = Deferred()
        self.pending.append((d, len(items)))
        self.transport.writeSequence([pack(len(body)), body])
        return d

    def childDataReceived(self, fd: int, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= 4:
            (n,) = _U32.unpack_from(buf)
            if len(buf) < 4 + n:
                break
            answer = bytes(buf[4 : 4 + n])
            del buf[: 4 + n]
            if not self.pending or self.pending[0][1] != n:
                self._end("it answered out of turn")
                return
            d, _ = self.pending.popleft()
            self.answered += 1
            d.callback([b == 1 for b in answer])

    def childConnectionLost(self, fd: int) -> None:
        if fd == 1:
            self._end("its output closed")

    def processEnded(self, reason: Any) -> None:
        self._end("it exited")

    def stop(self) -> None:
        """No more requests: the process exits once it has answered what it has (end of its input)."""
        if not self.gone:
            self.transport.closeStdin()

    def _end(self, why: str) -> None:
        if self.gone:
            return
        self.gone = True
        try:
            self.transport.signalProcess("KILL")
        except Exception:   # already gone
            pass
        pending, self.pending = self.pending, collections.deque()
        if self.owner is not None:
            self.owner._ended(self, why)
        for d, _ in pending:
            d.errback(VerifierGone(f"the verification process ended: {why}"))


class VerifyProcesses:
    """VERIFY_THREADS verification processes for one reactor (``verify_processes``).

    A libsodium check (~70 us) releases the GIL, but every check in a thread must win it back afterwards,
    against the reactor and the store writer running Python: beside them a check cost ~120 us of CPU
    instead of ~70 and waited for the GIL; ed25519-zebra's holds it. Processes have their own interpreters: the
    node sends each one the payloads to check (built here, ~4 us a document) and gets one byte back for
    each. Each process answers in order, so the chunks of the oldest batch finish first.
    """

    program = _WORKER_SOURCE

    def __init__(self, reactor: Any, n: int = 0) -> None:
        self.reactor = reactor
        self.procs: list[Optional[_VerifyProcess]] = [None] * (n or VERIFY_THREADS)
        self.stopped = False
        #: a process ended before it answered anything (it cannot start here): verify_many uses threads
        self.broken = False

    def _proc(self, i: int) -> _VerifyProcess:
        proc = self.procs[i]
        if proc is None or proc.gone:
            proc = _VerifyProcess(self)
            self.reactor.spawnProcess(proc, sys.executable, [sys.executable, "-c", self.program],
                                      env=dict(os.environ), childFDs={0: "w", 1: "r", 2: 2})
            _widen_pipe(proc.transport, 0)
            self.procs[i] = proc
        return proc

    def check(self, items: Sequence[tuple[bytes, bytes, Any, bytes]]) -> Deferred:
        """Fires with one bool per (public key, signature, anything, message), split over the processes."""
        if not items:
            return succeed([])
        n = min(len(self.procs), len(items))
        size = -(-len(items) // n)
        d = gatherResults([self._proc(i).submit(items[j : j + size])
                           for i, j in enumerate(range(0, len(items), size))], consumeErrors=True)
        return d.addCallback(_flatten)

    def start(self) -> None:
        """Start every process not running yet (each takes ~50 ms to be ready)."""
        for i in range(len(self.procs)):
            self._proc(i)

    def _ended(self, proc: _VerifyProcess, why: str) -> None:
        if self.stopped:
            return
        if not proc.answered and not self.broken:
            self.broken = True
            log.warn("a signature verification process ended before its first answer ({why}); "
                     "verifying in threads from now on", why=why)

    def stop(self) -> None:
        self.stopped = True
        for proc in self.procs:
            if proc is not None:
                proc.stop()


#: Bytes a verification process's request pipe holds (Linux; the default 64 KiB): a request (half of a
#: 500-document batch, ~340 KB) then goes in one write instead of six, each a reactor turn and a wakeup of
#: the process (the pipe writes were ~9% of the reactor thread's time in a pull).
PIPE_BYTES = 1 << 20


def _widen_pipe(transport: Any, child_fd: int) -> None:
    """Best effort: grow the pipe to `child_fd` of a spawned process to PIPE_BYTES (kept as it is where the
    system does not allow it)."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    pipe = getattr(transport, "pipes", {}).get(child_fd)
    if setsize is None or pipe is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), setsize, PIPE_BYTES)
    except OSError:
        pass


def _flatten(results: list[list[bool]]) -> list[bool]:
    return [ok for chunk in results for ok in chunk]


_processes: dict[int, tuple[Any, VerifyProcesses]] = {}


def verify_processes(reactor: Any) -> Optional[VerifyProcesses]:
    """The verification processes of `reactor` (started on first use, stopped at its shutdown), or None
    when it cannot run processes (a test Clock, a non-POSIX reactor)."""
    if not IReactorProcess.providedBy(reactor) or os.name != "posix":
        return None
    return _per_reactor(_processes, reactor, lambda: VerifyProcesses(reactor), lambda procs: not procs.stopped,
                        VerifyProcesses.stop)


def warm_verifiers(reactor: Any, expected: int) -> None:
    """`expected` documents are about to arrive for verify_many: if that many go to the verification
    processes, start them now, so that the first batch does not wait the ~50 ms they take to start."""
    if expected < INLINE_BELOW:
        return
    procs = verify_processes(reactor)
    if procs is not None and not procs.broken and not procs.stopped:
        procs.start()


def _check_in_processes(docs: list, procs: VerifyProcesses) -> Deferred:
    """verify_chunk over a batch, the signature checks in `procs`: the plain payloads first, then the
    canonical ones of the documents that failed and have a different canonical payload. A document whose
    revision does not check (a BadRevision) has its signature checked with the rest: its answer is its `why`
    when that verifies, else False."""
    prepared = [prepare_check(d) for d in docs]
    todo = [i for i, p in enumerate(prepared) if p is not None]
    results: list[Any] = [False] * len(docs)

    def first(oks: list[bool]) -> Any:
        retry: list[int] = []
        payloads: list[tuple[bytes, bytes, Any, bytes]] = []
        for i, ok in zip(todo, oks):
            p = prepared[i]
            if ok:
                if type(p) is tuple:
                    results[i] = True
                    leave_plain_body(docs[i], p)
                else:
                    results[i] = p.why
                continue
            canonical = canonical_retry(p)
            if canonical is not None:
                retry.append(i)
                payloads.append((p[0], p[1], None, canonical))
        if not retry:
            return results
        return _check_payloads(payloads, procs).addCallback(second, retry, payloads)

    def second(oks: list[bool], retry: list[int], payloads: list) -> list[Any]:
        for i, ok, payload in zip(retry, oks, payloads):
            p = prepared[i]
            if not ok:
                continue
            if type(p) is tuple:
                results[i] = True
                leave_plain_body(docs[i], with_payload(p, payload[3]))   # the bytes its author signed
            else:
                results[i] = p.why
        return results

    ready = prepared if len(todo) == len(docs) else [prepared[i] for i in todo]
    return _check_payloads(ready, procs).addCallback(first)


def _check_payloads(items: Sequence[Any], procs: VerifyProcesses) -> Deferred:
    """Check (public key, signature, anything, message) records: inline when few, else in the processes."""
    if len(items) < INLINE_BELOW:
        return succeed([signing.check_signature(pk, msg, sig) for pk, sig, _, msg in items])
    return procs.check(items)


def verify_many(
    repl_docs: Iterable[dict],
    threadpool: Any = None,
    *,
    reactor: Any = None,
    workers: int = 2,
) -> "Deferred[list[Any]]":
    """verify_repl_doc over a batch, without blocking the reactor; results are in input order: True, False
    (a forgery) or, for a document whose signature verifies but whose revision does not check, its falsy
    ``signing.BAD_REVISION``/``STEMMED_HISTORY`` (refused on its own, not as forged: the puller). Small
    batches are verified inline. Large ones go to the reactor's verification processes
    (``verify_processes``), or, given a `threadpool` or where processes cannot run, are split over
    `workers` threads of ``verify_pool(reactor)`` (parallel only with libsodium, which releases the GIL)."""
    docs = list(repl_docs)
    if len(docs) < INLINE_BELOW or workers < 1:
        return succeed(verify_chunk(docs))
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    if threadpool is None:
        procs = verify_processes(reactor)
        if procs is not None and not procs.broken:
            return _check_in_processes(docs, procs)
        threadpool = verify_pool(reactor)
    n = min(workers, len(docs))
    size = -(-len(docs) // n)
    chunks = [docs[i : i + size] for i in range(0, len(docs), size)]
    d = gatherResults(
        [deferToThreadPool(reactor, threadpool, verify_chunk, c) for c in chunks],
        consumeErrors=True,
    )
    return d.addCallback(_flatten)
