"""The local API routes of the flows (docs/api.md): register, shift show, publish, groups, comments,
messages, notices, follows, favorites and the feed query. Handlers turn a refusal (FlowError) into an
API error whose status says what kind of problem it is."""

from __future__ import annotations

import functools
from typing import Any, Callable

from twisted.internet.defer import maybeDeferred

from shiftpeer.api.app import PREFIX, TIME_PARAMS, ApiError, ApiRequest, resolve_keep, time_range
from shiftpeer.roles.names import FlowError
from shiftpeer.shifts import NotAuthor, ShiftDeleted, ShiftNotFound

STATUS = {"not_connected": 503, "forbidden": 403, "not_author": 403, "not_registered": 403,
          "not_found": 404, "no_user": 404, "no_group": 404, "name_taken": 409, "already_registered": 409,
          "already_member": 409, "conflict": 409, "not_public_here": 409,
          "shift_gone": 409}
FEED_PARAMS = ("href", "domain", "space", "author", "group", "thread", "type")
MAX_NAMES = 100   # account ids per GET /v1/names (one hub call)


def _refusal(f: Any) -> Any:
    f.trap(FlowError)
    err = f.value
    raise ApiError(STATUS.get(err.code, 400), err.message, code=err.code)


def _guard(fn: Callable[[ApiRequest], Any]) -> Callable[[ApiRequest], Any]:
    def handler(req: ApiRequest) -> Any:
        return maybeDeferred(fn, req).addErrback(_refusal)

    return handler


def _limit(req: ApiRequest) -> int:
    try:
        limit = int(req.arg("limit", 50))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 500:
        raise ApiError(400, "limit must be a whole number from 1 to 500")
    return limit


def _flag(req: ApiRequest, name: str) -> bool:
    return str(req.arg(name, "")).lower() in ("1", "true", "yes")


def shift_view(row: dict, source: str) -> dict:
    """A query row in the shape the feed has always answered with (body fields plus id, rev, ...)."""
    return {**row["body"], "id": row["id"], "rev": row["rev"], "deleted": row["deleted"], "conflicts": [],
            "databases": [source]}


def install_user_routes(api: Any, role: Any) -> None:
    """Every user node's flow routes (they replace the 501 placeholders and the local-only feed)."""
    flows = lambda: role.flows  # noqa: E731 - read at call time: the role builds its flows on start

    def register(req: ApiRequest) -> Any:
        body = req.json_object() if req.body is not None else {}
        d = flows().register(body.get("name"), body.get("token"))
        return d.addCallback(lambda r: {**r, "message": f"registered as {r['name']} on the hub"})

    def publish(req: ApiRequest) -> Any:
        body = req.json_object()
        return flows().publish(req.params["id"], public=bool(body.get("public")),
                               groups=body.get("groups") or [], to=body.get("to") or [])

    def show(req: ApiRequest) -> Any:
        """The local copy with its conflicts and databases, once what another copy of the account wrote on the
        user's own shift that the hub holds joined it (``UserFlows.on_latest``); else what this user can see on
        the hub. The user's own shift deleted (here, or by another copy of the account) is not asked of the hub's
        ``get``, which may still hold it where the tombstone has not gone yet: it is deleted, and the answer says
        so."""
        sid = req.params["id"]
        return flows().on_latest(sid, lambda: shown(req, sid))

    def shown(req: ApiRequest, sid: str) -> Any:
        try:
            return req.node.shifts.show(sid).to_json()
        except ShiftDeleted:
            raise
        except ShiftNotFound:
            if not flows().hub_answers:
                raise

        def answer(row: dict | None) -> dict:
            if row is None:
                raise ShiftNotFound(f"no shift {sid} that you can see, on this node or on the hub "
                                    "(list shifts with 'shiftpeer feed')")
            return shift_view(row, "shared")

        return flows().from_hub(sid).addCallback(answer)

    def change(action: str) -> Callable[[ApiRequest], Any]:
        """Edit, delete or resolve a shift, once what another copy of the account wrote on it that the hub holds
        joined it (``UserFlows.on_latest``). One this node holds no copy of but the hub shows this user (as `shift
        show` does) is someone else's: 403 not yours, rather than a 404 for a shift the user can see."""
        def handler(req: ApiRequest) -> Any:
            sid, shifts = req.params["id"], req.node.shifts
            # the body is read first: one that is no JSON object is refused before the hub is asked
            if action == "edit":
                run = functools.partial(shifts.edit, sid, req.json_object())
            elif action == "resolve":
                run = functools.partial(shifts.resolve, sid, resolve_keep(req))
            else:
                run = functools.partial(shifts.delete, sid)
            return flows().on_latest(sid, lambda: changed(req, sid, run))

        def changed(req: ApiRequest, sid: str, run: Callable[[], Any]) -> Any:
            try:
                return run()
            except ShiftDeleted:
                raise
            except ShiftNotFound as e:
                if not flows().hub_answers:
                    raise
                missing = e

            def answer(row: dict | None) -> Any:
                author = (row or {}).get("body", {}).get("author")
                if row is None or author == req.node.account_id:
                    raise missing
                raise NotAuthor(f"shift {sid} is by {author}; only its author may change it")

            return flows().from_hub(sid).addCallback(answer)

        return handler

    def comment(req: ApiRequest) -> Any:
        return flows().comment(req.params["id"], req.json_object().get("text"))

    def comment_edit(req: ApiRequest) -> Any:
        body = req.json_object()
        unknown = set(body) - {"text", "rev"}
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))} (an edit takes text and rev)")
        return flows().edit_comment(req.params["id"], body.get("text"), body.get("rev"))

    def comment_delete(req: ApiRequest) -> Any:
        return flows().delete_comment(req.params["id"])

    def comments(req: ApiRequest) -> Any:
        d = flows().query({"filters": {"thread": req.params["id"]}, "limit": _limit(req),
                           "cursor": req.arg("cursor")})
        return d.addCallback(lambda a: {"rows": [shift_view(r, a["source"]) for r in a["rows"]],
                                        "next_cursor": a["next_cursor"]})

    def group_action(action: str) -> Callable[[ApiRequest], Any]:
        def handler(req: ApiRequest) -> Any:
            body = req.json_object() if req.body is not None else {}
            name = req.params.get("name") or body.get("name")
            extra = {k: body.get(k) for k in ("user", "level", "open", "join_level") if k in body}
            d = flows().group(action, name, **extra)
            return d.addCallback(_members_list if action == "members" else _with_message(action))

        return handler

    def feed(req: ApiRequest) -> Any:
        unknown = set(req.query) - set(FEED_PARAMS) - {"limit", "cursor", "following", "favorites", *TIME_PARAMS}
        if unknown:
            raise ApiError(400, f"unknown feed parameter(s): {', '.join(sorted(unknown))}")
        limit = _limit(req)
        filters = {k: req.query[k] for k in FEED_PARAMS if req.query.get(k)}
        d = flows().query({"filters": filters, "limit": limit, "cursor": req.arg("cursor"),
                           "following": _flag(req, "following"), "favorites": _flag(req, "favorites"),
                           **time_range(req)})
        return d.addCallback(lambda a: {"rows": [shift_view(r, a["source"]) for r in a["rows"]],
                                        "next_cursor": a["next_cursor"], "source": a["source"]})

    def names(req: ApiRequest) -> Any:
        """The names of account ids, for showing who wrote a comment or notice (best effort: ids the hub
        has no name for, or that cannot be asked now, are left out)."""
        ids = req.query.get("id", [])
        if set(req.query) - {"id"} or not 1 <= len(ids) <= MAX_NAMES:
            raise ApiError(400, f"give 1-{MAX_NAMES} account ids as id=ID (repeated)")
        return flows().authors.names_of(ids).addCallback(lambda found: {"names": found})

    def messages(req: ApiRequest) -> Any:
        return flows().messages(limit=_limit(req), cursor=req.arg("cursor"),
                                unread_only=_flag(req, "unread"))

    def mark_read(req: ApiRequest) -> Any:
        body = req.json_object() if req.body is not None else {}
        return flows().mark_read(body.get("ids"))

    def notice(req: ApiRequest) -> Any:
        hub = running_hub(req)
        text = req.json_object().get("text")
        if hub is not None:
            return hub.social.post_notice(text)
        return flows().notice(text)

    def follow(req: ApiRequest) -> Any:
        body = req.json_object()
        return flows().follow(body.get("user"), bool(body.get("on", True)))

    def favorite(req: ApiRequest) -> Any:
        body = req.json_object() if req.body is not None else {}
        return flows().favorite(req.params["id"], bool(body.get("on", True)))

    routes = [
        ("POST", "/register", register), ("GET", "/shifts/{id}", show), ("POST", "/shifts/{id}/publish", publish),
        ("PATCH", "/shifts/{id}", change("edit")), ("DELETE", "/shifts/{id}", change("delete")),
        ("POST", "/shifts/{id}/resolve", change("resolve")),
        ("POST", "/shifts/{id}/comments", comment), ("GET", "/shifts/{id}/comments", comments),
        ("PATCH", "/comments/{id}", comment_edit), ("PUT", "/comments/{id}", comment_edit),
        ("DELETE", "/comments/{id}", comment_delete),
        ("POST", "/shifts/{id}/favorite", favorite), ("POST", "/follows", follow),
        ("POST", "/groups", group_action("new")), ("GET", "/groups/{name}/members", group_action("members")),
        ("GET", "/feed", feed), ("GET", "/names", names),
        ("GET", "/messages", messages), ("POST", "/messages/read", mark_read),
        ("POST", "/notices", notice), ("POST", "/hub/invites", hub_invite),
        ("POST", "/hub/tokens/rebuild", hub_rebuild_tokens),
    ]
    routes += [("POST", f"/groups/{{name}}/{a}", group_action(a)) for a in ("invite", "join", "leave", "remove", "level")]
    for method, template, handler in routes:
        api.add_route(method, PREFIX + template, _guard(handler))


def running_hub(req: ApiRequest) -> Any:
    """The node's started ``Hub`` (its hub role's), or None: no hub role, or one not started."""
    return getattr(req.node.role("hub"), "hub", None)


def hub_invite(req: ApiRequest) -> dict:
    """A one-use registration token; a node without the hub role says who can make one (403), rather
    than that the route does not exist."""
    hub = running_hub(req)
    if hub is None:
        raise FlowError("only a hub's operator can make invitations: run 'shiftpeer --data HUB_DIR invite' "
                        "with the hub's node directory", "forbidden")
    return {"token": hub.accounts.new_invite()}


def hub_rebuild_tokens(req: ApiRequest) -> dict:
    """Run the rebuild of the visibility tokens in ``shared`` again from the first document
    (roles/tokenrebuild.py; a hub runs it by itself once, on a store an older version wrote). It answers at
    once: on a big hub the pass takes minutes, and the hub's log says when it is done."""
    hub = running_hub(req)
    if hub is None:
        raise FlowError("only a hub rebuilds the visibility tokens of shared: run 'shiftpeer --data HUB_DIR "
                        "rebuild-tokens' with the hub's node directory", "forbidden")
    hub.tokens.rebuild().addErrback(lambda _: None)   # a failure is logged by the pass
    return {"rebuilding": True,
            "message": "rebuilding the visibility tokens of shared from the first document: the hub's log shows "
                       "its progress, and 'rebuilt the visibility tokens of shared: ...' when it is done"}


def install_hub_routes(api: Any, role: Any) -> None:
    """Hub operator routes: registration invitations and the tokens' rebuild (every user node answers the
    routes too, with who may use them)."""
    api.add_route("POST", PREFIX + "/hub/invites", _guard(hub_invite))
    api.add_route("POST", PREFIX + "/hub/tokens/rebuild", _guard(hub_rebuild_tokens))


def _members_list(group: dict) -> dict:
    members = [{"user": u, "level": lvl} for u, lvl in sorted(group["members"].items())]
    return {"group": group["group"], "open": group["open"], "members": members}


def _with_message(action: str) -> Callable[[dict], dict]:
    def add(result: dict) -> dict:
        who, group, level = result.get("user"), result.get("group"), result.get("level")
        text = {"new": f"created group {group}", "invite": f"invited {who} to {group}",
                "join": f"joined {group} as {level}", "leave": f"left {group}",
                "remove": f"removed {who} from {group}", "level": f"{who} is now {level} in {group}"}[action]
        return {**result, "message": text}

    return add
