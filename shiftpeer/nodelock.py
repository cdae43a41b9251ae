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
NODE, RESTORE = "node", "restore"


class NodeBusy(Exception):
    """Another process holds the node directory's lock; ``pid`` and ``holder`` ("node" or "restore") are
    what it recorded (None when it has not yet)."""

    def __init__(self, directory: str, pid: int | None, holder: str | None = None):
        self.directory = directory
        self.pid = pid
        self.holder = holder
        who = f" (pid {pid})" if pid else ""
        what = "a restore is running on it" if holder == RESTORE else "a node is already running on it"
        super().__init__(f"--data {directory}: {what}{who}")


class NodeLock:
    """The held lock on one node directory; ``release()`` (or process exit) gives it back."""

    def __init__(self, directory: str, fd: int, holder: str):
        self.directory = directory
        self.holder = holder
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def record_pid(self) -> None:
        """Write this process's pid into the lock file (again after a daemonizing fork)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()} {self.holder}\n".encode(), 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            os.close(fd)   # closing the last descriptor drops the flock


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    """The pid and holder the lock's owner wrote ("PID HOLDER"); Nones when it has not written them yet."""
    words = os.pread(fd, 64, 0).decode("ascii", "replace").split()
    pid = int(words[0]) if words and words[0].isdigit() else None
    return pid, (words[1] if len(words) > 1 else None)


def lock_node_dir(directory: str, holder: str = NODE) -> NodeLock:
    """Take the node directory's lock without waiting, for a ``holder`` (NODE or RESTORE); NodeBusy when
    another process holds it."""
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, other = _read_holder(fd)
        os.close(fd)
        raise NodeBusy(directory, pid, other) from None
    except BaseException:
        os.close(fd)
        raise
    lock = NodeLock(directory, fd, holder)
    lock.record_pid()
    return lock


def check_not_running(directory: str) -> None:
    """NodeBusy when a process holds the directory's lock; else nothing (the lock is not kept)."""
    lock_node_dir(directory).release()


__all__ = ["LOCK_FILE", "NODE", "RESTORE", "NodeBusy", "NodeLock", "check_not_running", "lock_node_dir"]
