"""The node's ``store`` service: it locks the node directory, opens the Store and closes it again.

The first child of a ``Node`` to start and the last to stop, so nothing can use the store after it closed;
in its own module because locking and opening the store (and every way that can fail) is one job.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from shiftpeer.nodelock import NodeBusy, NodeLock, lock_node_dir
from shiftpeer.startup import StartupError
from shiftpeer.tuning import tune_interpreter

if TYPE_CHECKING:
    from shiftpeer.node import Node


class StoreService(Service):
    """Locks the node directory (``shiftpeer.nodelock``), then opens the node's Store when started; closes
    it and gives the lock back when stopped. Every way it cannot start is a one-line StartupError."""

    name = "store"
    log = Logger()

    def __init__(self, node: "Node", path: str, store_factory: Callable[..., Any]):
        self._node = node
        self._path = path
        self._factory = store_factory
        self._lock: NodeLock | None = None

    def privilegedStartService(self) -> None:
        """Take the lock first, so a second node on the directory stops before it binds any port."""
        super().privilegedStartService()
        self._take_lock()

    def _take_lock(self) -> None:
        if self._lock is None:
            try:
                self._lock = lock_node_dir(self._node.settings.directory)
            except NodeBusy as e:
                raise StartupError(str(e)) from None
            except OSError as e:
                raise StartupError(f"--data {self._node.settings.directory}: cannot lock it: "
                                   f"{e.strerror or e}") from None
        self._lock.record_pid()   # twistd may have forked since privilegedStartService

    def startService(self) -> None:
        self._take_lock()
        try:
            self._node.store = self._open()
        except BaseException:
            self._release()
            raise
        self.log.info("store open at {path}", path=self._path)
        super().startService()

    def _open(self) -> Any:
        """The store, or a StartupError that says what to do: the path cannot be created, or the file
        there is not a store LMDB can open (then a backup can be put back with ``shiftpeer restore``)."""
        import lmdb

        from shiftpeer.store import SchemaVersionError

        try:
            os.makedirs(self._path, exist_ok=True)
        except OSError as e:
            raise StartupError(f"the store {self._path} cannot be created: {e.strerror or e}; fix the "
                               f"\"store\" path in {self._node.settings.directory}/config.json or its "
                               "permissions") from None
        tune_interpreter()   # bulk reads and received batches build thousands of documents at a time
        try:
            return self._factory(self._path, reactor=self._node.reactor)
        except SchemaVersionError as e:   # its message says which versions and what to do
            raise StartupError(str(e)) from None
        except lmdb.Error as e:
            raise StartupError(
                f"the store {self._path} cannot be opened ({type(e).__name__}: {e}); if it is damaged, put "
                f"a backup back with 'shiftpeer --data {self._node.settings.directory} restore BACKUP'"
            ) from None

    def stopService(self) -> Deferred:
        super().stopService()
        store, self._node.store = self._node.store, None
        if store is not None:
            store.close()
            self.log.info("store closed at {path}", path=self._path)
        self._release()
        return succeed(None)

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()
