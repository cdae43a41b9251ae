"""Checks of the network addresses a node is given, shared by ``shiftpeer init``, config.json and twistd.

One set of rules wherever a value comes from, so a value ``init`` accepts is one the node can start
with, and the local API's loopback rule cannot be bypassed by writing the endpoint into config.json.
Every check raises ``EndpointError`` (a ``ValueError``) whose message names where the value came from
(``name``: a flag such as ``--api``, or a config.json field) and what to write instead.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from shiftpeer.nodesettings import DEFAULT_API


class EndpointError(ValueError):
    """An endpoint string or HOST:PORT that the node could not (or must not) use."""


class _ParseOnlyReactor:
    """Stands in for the reactor while endpoint strings are checked: parsing must not listen or connect."""


def parse_server_endpoint(description: str, name: str) -> Any:
    """The endpoint Twisted builds from the string (nothing listens yet), else EndpointError naming it."""
    from twisted.internet.endpoints import serverFromString

    if not isinstance(description, str) or not description.strip():
        raise EndpointError(f"{name} {description!r} is not an endpoint string (e.g. 'tcp:7701')")
    try:
        return serverFromString(_ParseOnlyReactor(), description)
    except Exception as e:
        raise EndpointError(
            f"{name} {description!r} is not a valid endpoint string ({e}); "
            f"write e.g. 'tcp:7701' or 'tcp:7701:interface=0.0.0.0'"
        ) from None


def check_server_endpoint(description: str, name: str) -> str:
    """Return the endpoint string if Twisted can parse it, else raise EndpointError naming it."""
    parse_server_endpoint(description, name)
    return description


def _is_loopback(interface: Any) -> bool:
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(interface).strip("[]")).is_loopback
    except ValueError:
        return False


def listens_on_loopback_only(listen: list[str]) -> bool:
    """Do the sync listeners ``listen`` (endpoint strings) all bind a loopback interface (and is there one)?
    A wildcard (``tcp:7701``, no ``interface=``) listens beyond this machine; a UNIX socket never does."""
    def loopback(description: str) -> bool:
        try:
            check_api_endpoint(description, "listen")   # the local API's test: it stays on this machine
        except EndpointError:
            return False
        return True

    return bool(listen) and all(loopback(d) for d in listen)


def check_api_endpoint(description: str, name: str = "--api") -> str:
    """The local API must not be reachable from other machines (its token is the only protection):
    ``tcp``/``tcp6`` on a loopback ``interface=``, or ``unix:PATH``; anything else is refused.

    The interface is read from the endpoint Twisted parsed (escapes and repeats resolved as Twisted
    resolves them), not from the string. The default is known to pass: it skips the parse, and with it
    importing twisted.internet.endpoints, most of what ``shiftpeer init`` took."""
    if description == DEFAULT_API:
        return description
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, UNIXServerEndpoint

    endpoint = parse_server_endpoint(description, name)
    if isinstance(endpoint, UNIXServerEndpoint):
        return description
    if isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint)):
        if _is_loopback(getattr(endpoint, "_interface", None)):
            return description
        raise EndpointError(
            f"{name} {description!r} would listen beyond this machine; "
            "add ':interface=127.0.0.1' (e.g. 'tcp:7780:interface=127.0.0.1')"
        )
    raise EndpointError(
        f"{name} {description!r}: the local API listens only on 'tcp:PORT:interface=127.0.0.1' "
        "(or tcp6 on ::1) or 'unix:PATH'"
    )


def split_host_port(text: str) -> tuple[str, int]:
    """Parse HOST:PORT (or [IPv6]:PORT) into (host, port); ValueError with a clear message if bad."""
    if not isinstance(text, str) or ":" not in text:
        raise EndpointError(f"{text!r} is not HOST:PORT (e.g. hub.example.org:7701)")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise EndpointError(f"{text!r} is not [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise EndpointError(f"{text!r}: write an IPv6 address as [ADDRESS]:PORT")
    if not host:
        raise EndpointError(f"{text!r} has no host (expected HOST:PORT)")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise EndpointError(f"{text!r}: the port must be a number from 1 to 65535 (HOST:PORT)")
    return host, int(port_text)


def check_host_port(text: str, name: str) -> str:
    """Return HOST:PORT unchanged when the node can dial it, else EndpointError naming ``name``."""
    try:
        split_host_port(text)
    except EndpointError as e:
        raise EndpointError(f"{name}: {e}") from None
    return text
