"""The API route table and the handlers of the user's local operations.

A route is (method, path template, handler). Templates use ``{name}`` for one path segment. A handler
takes an ``ApiRequest`` and returns a JSON-able value (200), a ``(status, value)`` pair, or a Deferred of
either; it raises ``ApiError`` (or a ``shiftpeer.shifts.ShiftError``) to answer with an error. Later roles
add their routes with ``node.api.add_route(...)``, replacing the 501 placeholders registered here.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import unquote

from shiftpeer import times
from shiftpeer.shifts import DEFAULT_LIMIT, FILTER_INDEXES, check_limit
from shiftpeer.store.store import MAX_NAME_BYTES

PREFIX = "/v1"


class ApiError(Exception):
    """An HTTP error answer with a message a person can act on."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass
class ApiRequest:
    """One authenticated API call, already parsed: path parameters, query string, JSON body."""

    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    body: Any
    node: Any

    def arg(self, name: str, default: Any = None) -> Any:
        """The last value of a query-string argument."""
        values = self.query.get(name)
        return values[-1] if values else default

    def json_object(self) -> dict:
        """The body, which must be a JSON object."""
        if not isinstance(self.body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return self.body


Handler = Callable[[ApiRequest], Any]


@dataclass
class Route:
    method: str
    template: str
    handler: Handler
    pattern: re.Pattern = field(init=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        self.pattern = re.compile("^" + regex + "$")


class ApiApp:
    """The node's route table: resolves (method, path) to a handler and its path parameters."""

    def __init__(self, node: Any):
        self.node = node
        self.routes: list[Route] = []
        self.refused: collections.Counter = collections.Counter()   # 4xx answers by status (metrics)
        install_core_routes(self)
        install_placeholder_routes(self)

    def add_route(self, method: str, template: str, handler: Handler) -> None:
        """Add (or replace) the handler of ``method template``; templates start with /v1."""
        method = method.upper()
        self.routes = [r for r in self.routes if not (r.method == method and r.template == template)]
        self.routes.append(Route(method, template, handler))

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """The handler and (decoded) path parameters for a request; ApiError 404 or 405 when none fits."""
        allowed = []
        for route in self.routes:
            m = route.pattern.match(path)
            if m is None:
                continue
            if route.method == method:
                # a segment arrives percent-encoded (the CLI quotes ids and names): handlers, and the errors
                # that name an id, see what the person typed
                return route.handler, {k: unquote(v) for k, v in m.groupdict().items()}
            allowed.append(route.method)
        if allowed:
            raise ApiError(405, f"{method} is not allowed on {path} (use {', '.join(sorted(set(allowed)))})")
        raise ApiError(404, f"no such API route: {method} {path} (see docs/api.md)")


# -- core handlers ------------------------------------------------------------------------------


#: Databases listed by one ``GET /v1/status?databases=PREFIX`` page when ``limit`` is not given.
DATABASE_PAGE = 100
#: ``databases=*`` lists every database (no name starts with ``*``).
ALL_DATABASES = "*"


def status(req: ApiRequest) -> Any:
    """The node's status; ``databases=PREFIX`` (``*`` for all; with ``limit``, ``after``) adds one page of
    the databases under PREFIX as ``database_page``, listed in a thread (O(databases under PREFIX))."""
    unknown = set(req.query) - {"databases", "limit", "after"}
    if unknown:
        raise ApiError(400, f"unknown status parameter(s): {', '.join(sorted(unknown))} "
                            "(use databases=PREFIX, limit=N, after=NAME)")
    if "databases" not in req.query:
        if req.query:
            raise ApiError(400, "limit and after page a database listing: give databases=PREFIX too")
        return req.node.status()
    prefix, after = req.arg("databases"), req.arg("after") or None
    if prefix == ALL_DATABASES:     # an empty value never arrives: the query string parser drops it
        prefix = ""
    if len(prefix.encode()) > MAX_NAME_BYTES or (after is not None and len(after.encode()) > MAX_NAME_BYTES):
        raise ApiError(400, f"databases and after are database names (prefixes), at most {MAX_NAME_BYTES} bytes")
    limit = check_limit(req.arg("limit", DATABASE_PAGE))
    node = req.node
    if not node.census.running:
        raise ApiError(503, "the node is stopping: ask again once it runs")
    return node.census.page(prefix, limit, after).addCallback(
        lambda page: {**node.status(), "database_page": page})


def shift_create(req: ApiRequest) -> tuple[int, dict]:
    return 201, req.node.shifts.create(req.json_object())


def shift_get(req: ApiRequest) -> dict:
    return req.node.shifts.show(req.params["id"]).to_json()


def shift_edit(req: ApiRequest) -> dict:
    return req.node.shifts.edit(req.params["id"], req.json_object())


def shift_delete(req: ApiRequest) -> dict:
    return req.node.shifts.delete(req.params["id"])


def shift_resolve(req: ApiRequest) -> dict:
    """End a conflict on your shift: body ``{"keep": REV}`` (optional; default the current winner)."""
    return req.node.shifts.resolve(req.params["id"], resolve_keep(req))


def resolve_keep(req: ApiRequest) -> Any:
    """The ``keep`` of a resolve's body (None when not given); 400 for any other field."""
    body = req.json_object() if req.body is not None else {}
    unknown = set(body) - {"keep"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))} (a resolve takes keep)", "bad_request")
    return body.get("keep")


#: The created-time range of a feed query: ``since <= created < until``.
TIME_PARAMS = ("since", "until")


def time_range(req: ApiRequest) -> dict:
    """``since`` and ``until`` from the query string (seconds since the epoch, or ISO 8601 with a time
    zone) as numbers or None; a 400 that says what to write for anything else."""
    bounds = {}
    try:
        for name in TIME_PARAMS:
            values = req.query.get(name) or []
            if len(values) > 1:
                raise times.BadTime(f"{name} may be given once")
            bounds[name] = times.parse_time(values[0], name) if values else None
        times.check_range(bounds["since"], bounds["until"])
    except times.BadTime as e:
        raise ApiError(400, str(e)) from None
    return bounds


def feed(req: ApiRequest) -> dict:
    filters = {name: req.query[name] for name in FILTER_INDEXES if req.query.get(name)}
    unknown = set(req.query) - set(FILTER_INDEXES) - {"limit", "cursor", "group", *TIME_PARAMS}
    if unknown:
        raise ApiError(400, f"unknown feed parameter(s): {', '.join(sorted(unknown))}")
    if req.query.get("group"):
        raise ApiError(501, "feed --group needs the groups role, which this node does not have yet")
    return req.node.shifts.feed(filters, limit=req.arg("limit", DEFAULT_LIMIT), cursor=req.arg("cursor"),
                                **time_range(req))


def install_core_routes(app: ApiApp) -> None:
    """Status, shift create/get/edit/delete/resolve and the feed query."""
    app.add_route("GET", PREFIX + "/status", status)
    app.add_route("POST", PREFIX + "/shifts", shift_create)
    app.add_route("GET", PREFIX + "/shifts/{id}", shift_get)
    app.add_route("PATCH", PREFIX + "/shifts/{id}", shift_edit)
    app.add_route("DELETE", PREFIX + "/shifts/{id}", shift_delete)
    app.add_route("POST", PREFIX + "/shifts/{id}/resolve", shift_resolve)
    app.add_route("GET", PREFIX + "/feed", feed)


#: Routes the CLI already calls whose server side a later role provides; until then they answer 501.
PLACEHOLDERS = [
    ("POST", "/register", "registering an account on the hub"),
    ("POST", "/shifts/{id}/publish", "publishing shifts"),
    ("POST", "/shifts/{id}/comments", "comments"),
    ("PATCH", "/comments/{id}", "comments"),
    ("PUT", "/comments/{id}", "comments"),
    ("DELETE", "/comments/{id}", "comments"),
    ("POST", "/groups", "groups"),
    ("POST", "/groups/{name}/invite", "groups"),
    ("POST", "/groups/{name}/join", "groups"),
    ("POST", "/groups/{name}/leave", "groups"),
    ("GET", "/groups/{name}/members", "groups"),
    ("GET", "/messages", "messages"),
    ("POST", "/notices", "hub notices"),
]


def _not_implemented(what: str) -> Handler:
    def handler(req: ApiRequest) -> Any:
        raise ApiError(501, f"{what} is not implemented on this node yet", code="not_implemented")

    return handler


def _no_gossip(req: ApiRequest) -> Any:
    """A node that does not gossip bans no one: say so, rather than that the route does not exist."""
    raise ApiError(404, "this node does not gossip, so it has no bans to lift: only full peers and hubs ban "
                        "gossip neighbours", code="no_gossip")


def install_placeholder_routes(app: ApiApp) -> None:
    """Register the 501 placeholders so clients get a clear answer rather than a 404; and the gossip unban
    route's answer on a node without gossip (the gossiping roles replace it, shiftpeer.gossip.routes)."""
    for method, template, what in PLACEHOLDERS:
        app.add_route(method, PREFIX + template, _not_implemented(what))
    app.add_route("POST", PREFIX + "/gossip/unban", _no_gossip)
