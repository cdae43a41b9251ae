"""The API's listening service: creates the token, listens on loopback, records the bound URL."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.web.server import Site

from shiftpeer.api import token as tokens
from shiftpeer.api.resource import ApiResource
from shiftpeer.endpoints import check_api_endpoint
from shiftpeer.selflink import describe
from shiftpeer.startup import cannot_listen


class QuietSite(Site):
    """A Site without the access log: the extension asks about every page the user visits, and
    those URLs must not end up in operator logs."""

    def log(self, request: Any) -> None:
        pass


def url_of(address: Any) -> str:
    """The http:// URL clients use for a listening port's address."""
    host = getattr(address, "host", None)
    if host is None:  # a UNIX socket: clients need the path (Twisted gives it as bytes), not a URL
        return f"unix:{describe(address)}"
    if ":" in host:
        host = f"[{host}]"
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{address.port}"


class ApiService(Service):
    """Serves the node's ApiApp on one endpoint; stopService fires once the port is closed."""

    name = "api"
    log = Logger()

    def __init__(self, node: Any, endpoint: str, directory: str):
        self._node = node
        # init, config.json and twistd check this already; an embedder's NodeSettings too.
        self._endpoint = check_api_endpoint(endpoint, "api")
        self._directory = directory
        self._port: Any = None
        self._connections: WrappingFactory | None = None
        self._listening: Deferred | None = None
        self._waiters: list[Deferred] = []
        self._binding = False
        self._bind_failure: Any = None
        self.url: str | None = None

    def startService(self) -> None:
        super().startService()
        token = tokens.ensure_token(self._directory)
        site = QuietSite(ApiResource(self._node.api, token))
        site.noisy = False
        # WrappingFactory keeps the live connections, so stopping closes keep-alive ones too.
        self._connections = WrappingFactory(site)
        self._connections.noisy = False
        endpoint = serverFromString(self._node.reactor, self._endpoint)
        self._binding = True   # a port that cannot be bound fails at once (tcp, unix): the node must not start
        self._listening = endpoint.listen(self._connections)
        self._listening.addCallbacks(self._listened, self._failed)
        self._binding, failure, self._bind_failure = False, self._bind_failure, None
        if failure is not None:
            raise cannot_listen("--api", self._endpoint, failure.value)

    def _listened(self, port: Any) -> None:
        self._port = port
        self.url = url_of(port.getHost())
        tokens.write_url(self._directory, self.url)
        self.log.info("local API listening on {url}", url=self.url)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self.url)

    def _failed(self, failure: Any) -> None:
        if self._binding:
            self._bind_failure = failure   # startService raises it
        else:   # a later failure: nothing else reports it
            self.log.critical("local API could not listen on {endpoint}: {why}", endpoint=self._endpoint,
                              why=failure.getErrorMessage())
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(failure)

    def forget_url(self) -> None:
        """Remove DIR/api.url only when it is the URL this service wrote: the file is the way clients find
        the running node, and may be another process's."""
        url, self.url = self.url, None
        if url is None:
            return
        try:
            written = tokens.read_url(self._directory)
        except OSError:
            return
        if written == url:
            tokens.remove_url(self._directory)

    def when_listening(self) -> Deferred:
        """Fires with the URL once the port is bound."""
        if self.url is not None:
            return succeed(self.url)
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    def stopService(self) -> Deferred:
        super().stopService()
        self.forget_url()
        port, self._port = self._port, None
        if self._connections is not None:
            for proto in list(self._connections.protocols):
                proto.transport.loseConnection()
        if port is None:
            if self._listening is not None and not self._listening.called:
                self._listening.cancel()
            return succeed(None)
        return port.stopListening()
