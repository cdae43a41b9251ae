"""One process at a time on a node directory: an flock on ``DIR/node.lock``, holding the owner's pid.

A running node holds the lock from before its store opens until it exits, and ``shiftpeer restore`` holds
it while it swaps the store, so neither a second node nor a restore can work on a store another process
is using (two nodes on one store would answer as one account and undo each other's api.url; a restore
under a live node loses what it writes next). ``flock`` (not ``fcntl``'s POSIX locks) because the kernel
drops it when the last descriptor closes, so a crashed node never blocks a restart, and a daemonizing
``twistd`` keeps it across its fork. The file itself stays; only the lock on it matters.
"""

from __future__ import annotations

import fcntl
import os

LOCK_FILE = "node.lock"


class NodeBusy(Exception):
    """Another process holds the node directory's lock; ``pid`` is the one it recorded (None if unknown)."""

    def __init__(self, directory: str, pid: int | None):
        self.directory = directory
        self.pid = pid
        who = f" (pid {pid})" if pid else ""
        super().__init__(f"--data {directory}: a node is already running on it{who}")


class NodeLock:
    """The held lock on one node directory; ``release()`` (or process exit) gives it back."""

    def __init__(self, directory: str, fd: int):
        self.directory = directory
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def record_pid(self) -> None:
        """Write this process's pid into the lock file (again after a daemonizing fork)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            os.close(fd)   # closing the last descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def lock_node_dir(directory: str) -> NodeLock:
    """Take the node directory's lock without waiting; NodeBusy when another process holds it."""
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise NodeBusy(directory, pid) from None
    except BaseException:
        os.close(fd)
        raise
    lock = NodeLock(directory, fd)
    lock.record_pid()
    return lock


def check_not_running(directory: str) -> None:
    """NodeBusy when a process holds the directory's lock; else nothing (the lock is not kept)."""
    lock_node_dir(directory).release()


__all__ = ["LOCK_FILE", "NodeBusy", "NodeLock", "check_not_running", "lock_node_dir"]
