"""The flows as Node roles: ``HubRole`` (the hub) and ``FlowsRole`` (every user node's flows).

They plug into the Node's seams (see ``shiftpeer/roles/__init__.py``): a role is a Service with a
``name``; ``may_read``/``may_write`` feed the node's Policy (a database is served when any role allows
it); ``install_sync(factory)`` registers RPC handlers and the incoming-document checks;
``peer_connected(conn, kind)`` hears of each authenticated connection; API routes are added to
``node.api`` when the role starts.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import succeed
from twisted.logger import Logger

from shiftpeer.identity.keys import is_account_id, is_peer_id
from shiftpeer.roles.hub import Hub
from shiftpeer.roles.quota import check_quota_config
from shiftpeer.roles.userflows import UserFlows
from shiftpeer.roles.validation import filtering_store_batch, refusal
from shiftpeer.selflink import hub_target
from shiftpeer.startup import StartupError

log = Logger()


HUB_CONFIG = "hub.json"
#: Seconds an API call that needs the hub waits for the connection when the node has only just started.
CONNECT_WAIT = 10.0


_HUB_FIELDS = ('"registration" ("open" or "invite"), "operators" (account ids), "relays" (peer ids) and "quota" '
               '({"docs_per_day": N, "bytes_per_day": N})')


def load_hub_config(directory: str) -> dict:
    """The hub's flow settings from ``DIR/hub.json`` (optional): ``registration`` ("open" or "invite"),
    ``operators`` (account ids that may post notices besides the hub), ``relays`` (peer ids that may
    hand in documents by other authors: federated hubs, trusted full peers) and ``quota`` (documents and
    bytes a day each account may have the hub store, roles/quota.py; none by default). Every field is checked, and
    an unknown one refused (a misspelt "registration" would silently leave registration open); the
    ValueError names the file, the field and what it may hold."""
    path = os.path.join(directory, HUB_CONFIG)
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {"registration": "open", "operators": [], "relays": [], "quota": {}}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable or not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} must hold a JSON object with {_HUB_FIELDS}")
    unknown = sorted(set(doc) - {"registration", "operators", "relays", "quota"})
    if unknown:
        raise ValueError(f"{path}: unknown field {unknown[0]!r}; the fields are {_HUB_FIELDS}")
    registration = doc.get("registration", "open")
    if registration not in ("open", "invite"):
        raise ValueError(f'{path}: "registration" must be "open" or "invite", not {json.dumps(registration)}')
    return {"registration": registration,
            "operators": _ids(path, doc, "operators", is_account_id, "account ids (as 'shiftpeer init' prints)"),
            "relays": _ids(path, doc, "relays", is_peer_id, "peer ids"),
            "quota": _quota(path, doc["quota"]) if "quota" in doc else {}}


def _quota(path: str, doc: Any) -> dict:
    try:
        return check_quota_config(doc)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _ids(path: str, doc: dict, field: str, valid: Any, what: str) -> list[str]:
    values = doc.get(field, [])
    if not isinstance(values, list):
        raise ValueError(f'{path}: "{field}" must be a list of {what}, not {json.dumps(values)[:60]}')
    for value in values:
        if not valid(value):
            raise ValueError(f'{path}: "{field}": {json.dumps(value)[:60]} is not one of the {what}')
    return list(values)


class HubRole(Service):
    """The hub: registry, groups, routing, shared, RPC methods (``roles/hub.py``)."""

    name = "hub"

    def __init__(self, node: Any) -> None:
        self.node = node
        self.hub: Hub | None = None

    def startService(self) -> None:
        super().startService()
        node = self.node
        try:
            config = load_hub_config(node.settings.directory)
        except ValueError as e:
            raise StartupError(str(e)) from None
        self.hub = Hub(node.store, node.key, node.clock, open_registration=config["registration"] == "open",
                       relays=config["relays"], operators=config["operators"], quota=config["quota"])
        self.hub.start()
        from shiftpeer.roles.flowroutes import install_hub_routes

        install_hub_routes(node.api, self)
        log.info("hub role started as {account}", account=node.account_id)

    def stopService(self):
        super().stopService()
        if self.hub is not None:
            self.hub.stop()
        return succeed(None)

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return self.hub is not None and self.hub.policy.may_read(peer_id, dbname, conn)

    def may_write(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return self.hub is not None and self.hub.policy.may_write(peer_id, dbname, conn)

    def install_sync(self, factory: Any) -> None:
        """RPC methods, live revocation, and the hub's checks on every document received."""
        hub = self.hub
        hub.factory = factory
        hub.quota.counters = factory.counters
        factory.rpc_handlers.update(hub.handlers())
        factory.store_batch = filtering_store_batch(
            lambda db, peer_id, doc: (hub.rules.check(db, db.name, peer_id, doc) if _hub_db(db.name)
                                      else refusal(db, doc)), write=hub.quota.store_batch)


def _hub_db(dbname: str) -> bool:
    return dbname == "master" or dbname.startswith(("group/", "inbox/", "messages/", "system/"))


class FlowsRole(Service):
    """A user node's flows: hub link, publishing, comments, messages, groups, queries (``roles/userflows.py``)."""

    name = "flows"

    def __init__(self, node: Any) -> None:
        self.node = node
        self.flows: UserFlows | None = None

    def startService(self) -> None:
        super().startService()
        node = self.node
        self.flows = UserFlows(node.store, node.key, node.clock, user=node.settings.user,
                               full_peer=bool(node.settings.full_peer),
                               connect_wait=CONNECT_WAIT if hub_target(node.settings) else 0.0)
        self.flows.start()
        from shiftpeer.roles.flowroutes import install_user_routes

        install_user_routes(node.api, self)

    def stopService(self):
        super().stopService()
        if self.flows is not None:
            self.flows.stop()
        return succeed(None)

    def may_read(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return self.flows is not None and self.flows.policy.may_read(peer_id, dbname, conn)

    def may_write(self, peer_id: str, dbname: str, conn: Any) -> bool:
        return False

    def install_sync(self, factory: Any) -> None:
        """Authorship checks on every document received (a hub role, added later, refines them)."""
        if factory.store_batch is None:
            factory.store_batch = self.flows.store_batch

    def peer_connected(self, conn: Any, kind: str) -> None:
        self.flows.peer_connected(conn, kind)
