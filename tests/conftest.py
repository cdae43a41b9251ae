"""Shared pytest fixtures: pytest-twisted conventions in one place (STYLE.md practice 12)."""

from __future__ import annotations

import pytest
from twisted.logger import LogLevel, globalLogPublisher


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_logged_errors: the test expects errors to be logged (refusals, bad input)"
    )


@pytest.fixture(autouse=True)
def forget_genuine_payloads():
    """Each test starts with no signed payload remembered as genuine (identity/genuine.py), so what one
    test verified never spares another a check."""
    from shiftpeer.identity.signing import GENUINE

    GENUINE.clear()
    yield


@pytest.fixture(autouse=True)
def fail_on_logged_errors(request):
    """Fail a test when anything logged an error or failure it did not expect."""
    errors: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("log_failure") is not None or event.get("log_level") in (
            LogLevel.error,
            LogLevel.critical,
        ):
            errors.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        yield errors
    finally:
        globalLogPublisher.removeObserver(observer)
    if errors and request.node.get_closest_marker("allow_logged_errors") is None:
        from twisted.logger import formatEvent

        lines = [formatEvent(e) for e in errors]
        for e in errors:
            if e.get("log_failure") is not None:
                lines.append(e["log_failure"].getTraceback())
        pytest.fail("errors were logged during the test:\n" + "\n".join(lines))
