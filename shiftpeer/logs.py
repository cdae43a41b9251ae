"""JSON log lines for operators: ``twistd --logger shiftpeer.logs.json_observer -n shiftpeer --data DIR``.

Each event becomes one line of JSON on standard output (or ``SHIFTPEER_LOG_FILE`` when set) with
``time``, ``level``, ``namespace``, the formatted ``text``, the event's own named fields, and ``failure``
(a traceback) when one was logged; log shippers then need no parsing rules.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

_SKIP = {"log_logger", "log_source", "log_io", "log_format", "log_trace", "format", "message", "system", "time"}


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def event_to_json(event: dict) -> str:
    """One log event as a single JSON line (no newline)."""
    level = event.get("log_level")
    out: dict[str, Any] = {
        "time": event.get("log_time"),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace"),
        "text": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _SKIP or key in out:
            continue
        out[key] = _plain(value)
    failure = event.get("log_failure")
    if failure is not None:
        out["failure"] = failure.getTraceback()
    return json.dumps(out, default=repr, separators=(",", ":"))


@implementer(ILogObserver)
class JsonLineObserver:
    """Writes each event as a JSON line to a text stream and flushes it."""

    def __init__(self, stream: IO[str]):
        self._stream = stream

    def __call__(self, event: dict) -> None:
        self._stream.write(event_to_json(event) + "\n")
        self._stream.flush()


def json_observer() -> JsonLineObserver:
    """Log observer factory for twistd's ``--logger`` option."""
    path = os.environ.get("SHIFTPEER_LOG_FILE")
    stream = open(path, "a", encoding="utf-8") if path else sys.stdout
    return JsonLineObserver(stream)
