"""Made-up node feed cursors (shiftpeer/roles/feedpage.py) that decode as JSON of the right shape but carry
values the node never hands out: each is a 400 ``bad_request`` naming the cursor, never a 500 from deep inside
the page code, through the real API of a user node whose feed the hub answers."""

from __future__ import annotations

import base64

import pytest
import pytest_twisted

from shiftpeer.roles.feedpage import PREFIX, Position
from shiftpeer.roles.names import FlowError
from shiftpeer.shifts import BAD_CURSOR
from tests.test_flows_nodes import _hub_and_users, nodes  # noqa: F401 (the nodes fixture)


def _cursor(raw: str) -> str:
    return PREFIX + base64.urlsafe_b64encode(raw.encode()).decode()


#: the time (``at``) as an integer too large for a float (json.loads gives an int; float() of it overflows).
HUGE_HIGH = _cursor("[" + "9" * 400 + ',[],null,null]')


@pytest.mark.parametrize("cursor", [HUGE_HIGH])
def test_a_cursor_with_a_number_no_float_holds_is_bad_request(cursor):
    with pytest.raises(FlowError) as e:
        Position.decode(cursor)
    assert e.value.code == "bad_request" and str(e.value) == BAD_CURSOR


@pytest_twisted.ensureDeferred
async def test_a_huge_cursor_time_is_400_through_the_hub(nodes):
    _, _, api = await _hub_and_users(nodes, ("bob",))
    code, body = await api["bob"].request("GET", f"/v1/feed?cursor={HUGE_HIGH}")
    assert code == 400 and body["error"].startswith(BAD_CURSOR[:40]), body
    code, body = await api["bob"].request("GET", "/v1/feed")
    assert code == 200, body
