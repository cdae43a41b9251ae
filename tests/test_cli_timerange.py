"""`shiftpeer feed --since T --until T` against a real `twistd -n shiftpeer` node on loopback."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from shiftpeer.cli import EXIT_USAGE
from tests.test_cli import run, running, wait_for  # noqa: F401 (the running fixture)


def _feed(capsys, d: str, *args: str) -> dict:
    status, out, err = run(capsys, "--data", d, "feed", "--domain", "cli-time.example", "--json", *args)
    assert status == 0, err
    return json.loads(out)


def test_feed_since_until(running, capsys):
    """--since (inclusive) and --until (exclusive) take seconds or ISO 8601 with a zone, page with
    --cursor inside the range, and print the human listing too."""
    d = running
    ids = []
    for i in range(3):
        status, out, err = run(capsys, "--data", d, "shift", "new", "--space", "Notes",
                               "--href", f"https://cli-time.example/{i}", "--summary", f"number {i}")
        assert status == 0, err
        ids.append(out.strip())
    rows = wait_for(lambda: len(_feed(capsys, d)["rows"]) == 3 and _feed(capsys, d)["rows"])
    t = {r["id"]: r["created"] for r in rows}
    window = _feed(capsys, d, "--since", repr(t[ids[1]]), "--until", repr(t[ids[2]]))
    assert [r["id"] for r in window["rows"]] == [ids[1]]
    mid = (t[ids[0]] + t[ids[1]]) / 2
    iso = datetime.fromtimestamp(mid, timezone.utc).isoformat().replace("+00:00", "Z")
    page = _feed(capsys, d, "--since", iso, "--limit", "1")
    assert [r["id"] for r in page["rows"]] == [ids[2]] and page["next_cursor"]
    rest = _feed(capsys, d, "--since", iso, "--limit", "1", "--cursor", page["next_cursor"])
    assert [r["id"] for r in rest["rows"]] == [ids[1]] and rest["next_cursor"] is None
    status, out, err = run(capsys, "--data", d, "feed", "--until", iso)
    assert status == 0 and "number 0" in out and "number 1" not in out


@pytest.mark.parametrize("args,message", [
    (("--since", "yesterday"), "ISO 8601 with a time zone"),
    (("--until", "2026-11-26"), "has no time zone"),
    (("--since", "-3"), "seconds since the epoch"),
    (("--since", "20", "--until", "10"), "is after until"),
])
def test_feed_bad_times_exit_2(running, capsys, args, message):
    """A bound that is not a time, has no zone, or ends the range before it starts is a usage error."""
    status, out, err = run(capsys, "--data", running, "feed", *args)
    assert status == EXIT_USAGE and message in err and out == ""
