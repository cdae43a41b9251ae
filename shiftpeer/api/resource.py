"""HTTP to route calls: bearer-token check, JSON bodies in, JSON answers and JSON errors out."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from shiftpeer import jsontext
from shiftpeer.api.app import ApiApp, ApiError, ApiRequest
from shiftpeer.api.token import bearer_matches
from shiftpeer.shifts import ShiftError

MAX_BODY = 2 << 20


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode_json(value: Any) -> bytes:
    """The API's JSON encoding (bytes become hex, so signatures and cursors can be shown)."""
    return json.dumps(value, default=_json_default, separators=(",", ":"), sort_keys=True).encode("utf-8")


class ApiResource(Resource):
    """The whole API as one leaf resource: every request is authenticated, then routed."""

    isLeaf = True
    log = Logger()

    def __init__(self, app: ApiApp, token: str):
        super().__init__()
        self._app = app
        if not token.strip():
            raise ValueError("the API token is empty: an empty bearer would pass")
        self._token = token.encode("ascii")

    def render(self, request: Request) -> Any:
        request.notifyFinish().addErrback(lambda _: setattr(request, "_shiftpeer_gone", True))
        d = maybeDeferred(self._handle, request)
        d.addCallbacks(self._answer, self._error, callbackArgs=(request,), errbackArgs=(request,))
        d.addErrback(lambda f: self.log.failure("writing an API answer failed", f))
        return NOT_DONE_YET

    def _handle(self, request: Request) -> Any:
        if not bearer_matches(request, self._token):
            raise ApiError(401, "missing or wrong API token: send 'Authorization: Bearer <DIR/api.token>'")
        method = request.method.decode("ascii", "replace").upper()
        path = request.path.decode("utf-8", "replace").rstrip("/") or "/"
        handler, params = self._app.resolve(method, path)
        # The query string only: request.args would also hold a form-encoded body.
        query = parse_qs(request.uri.decode("utf-8", "replace").partition("?")[2])
        body = self._body(request, method)
        return handler(ApiRequest(method, path, params, query, body, self._app.node))

    def _body(self, request: Request, method: str) -> Any:
        if method not in ("POST", "PUT", "PATCH"):
            return None
        raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(raw) > MAX_BODY:
            raise ApiError(413, f"request body larger than {MAX_BODY} bytes")
        if not raw.strip():
            return {}
        try:
            return jsontext.loads(raw)   # NaN, Infinity, 1e999: bad input here, not a 500 from the store
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}") from None

    def _answer(self, result: Any, request: Request) -> None:
        status = 200
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int):
            status, result = result
        self._write(request, status, result)

    def _error(self, failure: Failure, request: Request) -> None:
        err = failure.value
        if isinstance(err, ApiError):
            status, body = err.status, {"error": err.message}
            if err.code:
                body["code"] = err.code
        elif isinstance(err, ShiftError):
            status, body = err.status, {"error": err.message}
            if err.code:
                body["code"] = err.code
        else:
            self.log.failure(
                "API {method} {path} failed", failure,
                method=request.method.decode("ascii", "replace"), path=request.path.decode("utf-8", "replace"),
            )
            status, body = 500, {"error": f"internal error: {type(err).__name__}: {err}"}
        if 400 <= status < 500:
            self._app.refused[status] += 1
        self._write(request, status, body)

    def _write(self, request: Request, status: int, value: Any) -> None:
        if request.finished or getattr(request, "_shiftpeer_gone", False):
            return  # the client went away while the handler ran
        data = encode_json(value)
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", str(len(data)).encode("ascii"))
        if request.method != b"HEAD":
            request.write(data)
        request.finish()
