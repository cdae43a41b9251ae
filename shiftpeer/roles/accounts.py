"""The hub's account registry: user name <-> account key, unique per hub, open or by invitation.

Registering binds a name to the key the peer proved in TLS and creates the user's two hub databases,
``inbox/<user>`` and ``messages/<user>``, all in one store transaction. Lookups are direct LMDB reads
(``n:<name>`` and ``k:<account id>`` documents in ``hub/accounts``), so a million accounts cost nothing
at start-up.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.logger import Logger

from shiftpeer.ids import new_token
from shiftpeer.identity.keys import is_account_id
from shiftpeer.roles.memo import Memo
from shiftpeer.roles.names import FlowError, check_name, inbox_db, messages_db

ACCOUNTS_DB = "hub/accounts"
#: Account names remembered (``name_of`` runs on every RPC): ~100 bytes each.
NAMES_REMEMBERED = 4096

log = Logger()


class Accounts:
    """Who is registered on this hub, under which name; ``open_registration`` or invite tokens."""

    def __init__(self, store: Any, *, open_registration: bool = True) -> None:
        self._store = store
        self.open_registration = open_registration
        self._db = store.create_database(ACCOUNTS_DB)
        # A registration binds a key to its name for good (nothing unbinds it), so a name once read stays
        # true; "not registered" is never remembered: it may change any moment.
        self._names = Memo(NAMES_REMEMBERED)

    def id_of(self, name: str) -> str | None:
        """The account id registered under ``name``, or None."""
        doc = self._db.get("n:" + name) if isinstance(name, str) else None
        return None if doc is None or doc.deleted else doc.body["account"]

    def name_of(self, account_id: str) -> str | None:
        """The name ``account_id`` registered, or None for an unregistered peer."""
        if not isinstance(account_id, str):
            return None
        name = self._names.get(account_id)
        if name is None:
            doc = self._db.get("k:" + account_id)
            if doc is None or doc.deleted:
                return None
            name = doc.body["name"]
            self._names.put(account_id, name)
        return name

    def new_invite(self) -> str:
        """Make a one-use registration token (only its hash is stored)."""
        token = new_token(16)
        self._db.put("t:" + _hash(token), {"used_by": None})
        return token

    def register(self, name: Any, account_id: str, token: Any = None, *, operator: bool = False) -> dict:
        """Bind ``name`` to ``account_id``; idempotent for the same pair, refused for a taken name.
        ``operator``: the hub's own key, which needs no token on an invite-only hub (it hands them out)."""
        name = check_name(name, "user name")
        if is_account_id(name):
            # author queries take a name or an account id: a name shaped like an id could pass for
            # someone else's account
            raise FlowError(f"the name {name[:12]}... looks like an account id; choose a shorter name",
                            "bad_name")
        holder = self.id_of(name)
        current = self.name_of(account_id)
        if holder == account_id:
            return {"name": name, "account": account_id, "created": False}
        if holder is not None:
            raise FlowError(f"the name {name!r} is already taken on this hub; choose another", "name_taken")
        if current is not None:
            raise FlowError(
                f"this key is already registered as {current!r}; one account per key", "already_registered"
            )
        token_doc = None
        if not (self.open_registration or operator):
            if not isinstance(token, str) or not token:
                raise FlowError("this hub registers by invitation: ask its operator for a token ('shiftpeer "
                                "invite' on the hub), then run 'shiftpeer register --invite TOKEN'", "invite_required")
            token_doc = self._db.get("t:" + _hash(token))
            if token_doc is None or token_doc.body.get("used_by") is not None:
                raise FlowError("that invitation token is unknown or already used", "bad_token")
        # The databases first (idempotent), so a bound name always has its inbox and messages.
        for db in (inbox_db(name), messages_db(name)):
            self._store.create_database(db)
        with self._store.write_txn() as txn:
            self._db.put("n:" + name, {"name": name, "account": account_id}, txn=txn)
            self._db.put("k:" + account_id, {"name": name, "account": account_id}, txn=txn)
            if token_doc is not None:
                self._db.put(token_doc.id, {"used_by": name}, parent=token_doc.rev, txn=txn)
        log.info("registered {name} as {account}", name=name, account=account_id)
        return {"name": name, "account": account_id, "created": True}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
