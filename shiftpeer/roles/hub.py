"""The hub role: its databases, the merge into ``shared``, the Policy, the write checks and the RPC handlers.

A hub is a node with this role on. It holds ``master``, ``shared``, ``system/messages``, every
``group/<g>``, ``inbox/<u>`` and ``messages/<u>``, and the ``hub/*`` registries. Peers reach it only
through sync: replication, which ``HubPolicy`` and ``HubRules`` guard database by database and
document by document, and the RPC methods below, which act for ``conn.peer_id`` (the key TLS proved).

RPC methods: ``register``, ``whoami``, ``deliver``, ``group.create``, ``group.invite``, ``group.join``,
``group.leave``, ``group.remove``, ``group.level``, ``group.members``, ``notice``, ``query``, ``get``,
``revisions``, ``follow``, ``favorite``, ``social``, ``accounts`` (docs/flows.md lists their arguments and results).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

from shiftpeer.identity.signing import verify_repl_doc
from shiftpeer.roles import groups as groupmodel
from shiftpeer.roles.accounts import Accounts
from shiftpeer.roles.audience import target_db
from shiftpeer.roles.groups import Groups
from shiftpeer.roles.merge import SharedMerger
from shiftpeer.roles.names import FlowError, check_name
from shiftpeer.roles.policy import HubPolicy
from shiftpeer.roles.queries import HubQueries
from shiftpeer.roles.quota import DailyQuota
from shiftpeer.roles.revocation import membership_listener
from shiftpeer.roles.social import HubSocial
from shiftpeer.roles.tokenrebuild import TokenRebuild
from shiftpeer.roles.validation import HubRules, check_repl_doc, filtering_store_batch, held_author
from shiftpeer.sync.refusedrevs import Refused, note_refused_alone

HUB_DATABASES = ("master", "system/messages")
MAX_TARGETS_PER_CALL = 256

log = Logger()


class Hub:
    """Everything a hub does, on one store, signing its own notices and notifications with ``key``."""

    name = "hub"

    def __init__(self, store: Any, key: Any, clock: Any, *, open_registration: bool = True,
                 relays: Any = (), operators: Any = (), quota: Any = None) -> None:
        self.store = store
        self.key = key
        self.clock = clock
        for name in HUB_DATABASES:
            store.create_database(name)
        self.accounts = Accounts(store, open_registration=open_registration)
        self.groups = Groups(store)
        self.rules = HubRules(self.accounts, self.groups, relays=relays)
        self.policy = HubPolicy(self.accounts, self.groups, relays=relays)
        self.operators = set(operators) | {key.account_id}
        self.social = HubSocial(store, key, clock, self.accounts)
        self.merger = SharedMerger(store, clock, on_new=self.social.notify_comments,
                                   on_revised=self.social.revise_notifications)
        self.queries = HubQueries(store, self.accounts, self.groups, self.social)
        self.tokens = TokenRebuild(store)
        self.rules.shared = self.queries
        self.social.sees = self.queries.sees
        self.factory: Any = None
        #: documents and bytes a day per registered author (hub.json "quota"; none by default); the hub's own
        #: account has none
        self.quota = DailyQuota(store, clock, **(quota or {}), counted=lambda author: author != key.account_id
                                and self.accounts.name_of(author) is not None)
        self.store_batch = filtering_store_batch(
            lambda db, peer_id, doc: self.rules.check(db, db.name, peer_id, doc), write=self.quota.store_batch)
        self._unsubscribe_groups = self.groups.subscribe(
            membership_listener(lambda: self.factory, self.policy, self.accounts))

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start merging into ``shared`` (catching up first), and rebuild its visibility tokens in the store's
        writer if an older version wrote the store (roles/tokenrebuild.py; a failure is logged there)."""
        self.merger.start()
        self.tokens.start().addErrback(lambda _: None)

    def stop(self) -> None:
        """Stop merging and rebuilding; the store stays open (the node owns it)."""
        self.merger.stop()
        self.tokens.stop()

    def install(self, factory: Any) -> None:
        """Make ``factory`` serve as this hub: its Policy, its write checks, its RPC methods."""
        self.factory = factory
        self.quota.counters = factory.counters
        factory.policy = self.policy
        factory.store_batch = self.store_batch
        factory.rpc_handlers.update(self.handlers())

    def handlers(self) -> dict[str, Callable[[Any, dict], Any]]:
        """The RPC methods this hub answers, by name (a refusal travels as ``[code] message``)."""
        return {name: _coded(fn) for name, fn in self._methods().items()}

    def _methods(self) -> dict[str, Callable[[Any, dict], Any]]:
        return {
            "register": self.rpc_register,
            "whoami": self.rpc_whoami,
            "deliver": self.rpc_deliver,
            "group.create": self.rpc_group_create,
            "group.invite": self.rpc_group_invite,
            "group.join": self.rpc_group_join,
            "group.leave": self.rpc_group_leave,
            "group.remove": self.rpc_group_remove,
            "group.level": self.rpc_group_level,
            "group.members": self.rpc_group_members,
            "notice": self.rpc_notice,
            "query": self.rpc_query,
            "get": self.rpc_get,
            "revisions": self.rpc_revisions,
            "follow": self.rpc_follow,
            "favorite": self.rpc_favorite,
            "social": self.rpc_social,
            "accounts": self.rpc_accounts,
        }

    # -- helpers -------------------------------------------------------------------------------
    def user_of(self, conn: Any) -> str:
        """The caller's registered name, or a FlowError telling them to register."""
        name = self.accounts.name_of(conn.peer_id)
        if name is None:
            raise FlowError("this key is not registered on this hub: run 'shiftpeer register' first",
                            "not_registered")
        return name

    def _registered(self, user: Any) -> str:
        check_name(user, "user name")
        if self.accounts.id_of(user) is None:
            raise FlowError(f"there is no user {user!r} on this hub", "no_user")
        return user

    # -- accounts ------------------------------------------------------------------------------
    def rpc_register(self, conn: Any, args: dict) -> dict:
        """Bind the caller's key to a name; creates ``inbox/<name>`` and ``messages/<name>``. The hub's own
        key (its operator's account, over the self link) needs no invitation from itself."""
        return self.accounts.register(args.get("name"), conn.peer_id, args.get("token"),
                                      operator=conn.peer_id == self.key.account_id)

    def rpc_whoami(self, conn: Any, args: dict) -> dict:
        """The caller's name (None when unregistered), groups with levels, and this hub's id."""
        name = self.accounts.name_of(conn.peer_id)
        return {"name": name, "account": conn.peer_id, "hub": self.key.account_id,
                "groups": self.groups.memberships(name) if name else {}}

    # -- publishing ----------------------------------------------------------------------------
    def rpc_deliver(self, conn: Any, args: dict) -> dict:
        """Store one signed revision in each target its audience names; a result per target."""
        self.user_of(conn)
        doc = check_repl_doc(args.get("doc"))
        targets = args.get("targets")
        if not isinstance(targets, list) or not targets or len(targets) > MAX_TARGETS_PER_CALL:
            raise FlowError("targets must be a non-empty list of group:NAME and user:NAME", "bad_request")
        why = verify_repl_doc(doc)   # remembered when genuine: the rules' check of each target finds it so
        if isinstance(why, Refused):  # every target refuses it (the rules' bad_revision): logged and counted once
            note_refused_alone(getattr(self.factory, "counters", None), "deliver", conn.peer_id, doc, why)
        results: dict[str, str] = {}
        taken: list[tuple[str, Any]] = []
        with self.store.read_txn():   # the rules' lookups share it
            for target in targets:
                try:
                    taken.append((str(target), self.deliverable(conn.peer_id, str(target), doc)))
                except FlowError as e:
                    results[str(target)] = "error: " + e.message
        # past the author's quota the whole call is refused, nothing stored, so no target is refused for good
        charge = self.quota.charge_copies([db for _, db in taken], doc, conn.peer_id)
        try:
            with self.store.write_txn() as txn:   # every copy and the quota's count, together
                for target, db in taken:
                    db.bulk_replicated([doc], txn=txn)
                    results[target] = "ok"
                if charge:
                    self.quota.record(charge, txn)
        except BaseException:
            self.quota.refund(charge)
            raise
        log.info("deliver {doc} from {peer}: {results}", doc=doc["id"], peer=conn.peer_id, results=results)
        return results

    def deliverable(self, peer_id: str, target: str, doc: dict) -> Any:
        """The database of one target that takes ``doc`` after every check (the caller stores it there), or a
        FlowError saying why that target refuses it."""
        dbname, (kind, _, name) = target_db(target), target.partition(":")
        if not self.store.has_database(dbname):
            raise FlowError(f"there is no {kind} {name!r} on this hub", "no_" + kind)
        db = self.store.database(dbname)
        why = self.rules.check(db, dbname, peer_id, doc)
        if why is not None:
            raise FlowError(why, "refused")
        if doc["deleted"] and kind == "group" and held_author(db, doc["id"]) is None and \
                groupmodel.rank(self.groups.level(name, self.accounts.name_of(peer_id))) < groupmodel.RANK["read"]:
            # a tombstone names no audience, so the rules check no level: one of a shift the group does not
            # hold comes only from a member (a removed member may still delete what it published there)
            raise FlowError(f"only members of group {name!r} may deliver to it", "refused")
        return db

    # -- groups --------------------------------------------------------------------------------
    def rpc_group_create(self, conn: Any, args: dict) -> dict:
        """Create a group owned by the caller (``open``: anyone may join at ``join_level``)."""
        owner = self.user_of(conn)
        group = self.groups.create(args.get("name"), owner, open=bool(args.get("open", False)),
                                   join_level=args.get("join_level", "publish"))
        return _public_view(group)

    def rpc_group_invite(self, conn: Any, args: dict) -> dict:
        """An admin invites a registered user at a level."""
        actor, user = self.user_of(conn), self._registered(args.get("user"))
        level = args.get("level", "publish")
        self.groups.update(args.get("name"), lambda g: groupmodel.invite(g, actor, user, level))
        return {"group": args["name"], "user": user, "level": "invited", "grant": level}

    def rpc_group_join(self, conn: Any, args: dict) -> dict:
        """Join with an invitation or an open group; returns the level granted."""
        user = self.user_of(conn)
        level = self.groups.update(args.get("name"), lambda g: groupmodel.join(g, user))
        return {"group": args["name"], "user": user, "level": level}

    def rpc_group_leave(self, conn: Any, args: dict) -> dict:
        """Leave a group; live replications of it to the caller end now."""
        user = self.user_of(conn)
        self.groups.update(args.get("name"), lambda g: groupmodel.leave(g, user))
        return {"group": args["name"], "user": user, "level": None}

    def rpc_group_remove(self, conn: Any, args: dict) -> dict:
        """An admin removes a lower-level member; their live replications of it end now."""
        actor, user = self.user_of(conn), args.get("user")
        self.groups.update(args.get("name"), lambda g: groupmodel.remove(g, actor, user))
        return {"group": args["name"], "user": user, "level": None}

    def rpc_group_level(self, conn: Any, args: dict) -> dict:
        """An admin changes a member's level (read, publish, admin)."""
        actor, user, level = self.user_of(conn), args.get("user"), args.get("level")
        self.groups.update(args.get("name"), lambda g: groupmodel.set_level(g, actor, user, level))
        return {"group": args["name"], "user": user, "level": level}

    def rpc_group_members(self, conn: Any, args: dict) -> dict:
        """Members and levels, for members of the group (invitees included)."""
        user = self.user_of(conn)
        group = self.groups.require(args.get("name"))
        if user not in group["members"]:
            raise FlowError(f"only members of {group['name']!r} may list its members", "forbidden")
        return _public_view(group)

    # -- messages, queries, social -------------------------------------------------------------
    def rpc_notice(self, conn: Any, args: dict) -> dict:
        """A hub operator posts a notice to ``system/messages``."""
        if conn.peer_id not in self.operators:
            raise FlowError("only this hub's operators may post notices", "forbidden")
        return self.social.post_notice(args.get("text"))

    def rpc_query(self, conn: Any, args: dict) -> dict:
        """A query over ``shared`` with only what the caller may see."""
        return self.queries.query(conn.peer_id, self.user_of(conn), args)

    def rpc_get(self, conn: Any, args: dict) -> dict:
        """Documents by id, those the caller may see."""
        return self.queries.get(conn.peer_id, self.user_of(conn), args.get("ids"))

    def rpc_revisions(self, conn: Any, args: dict) -> dict:
        """Every leaf (live or a tombstone) the hub holds of one of the caller's own documents, with history and
        signature, so that its node sees what another copy of the account wrote where the node does not read
        (``master``, other users' inboxes: roles/othercopies.py). Only the caller's revisions."""
        self.user_of(conn)
        return {"rows": self.queries.own_revisions(conn.peer_id, args.get("id"))}

    def rpc_follow(self, conn: Any, args: dict) -> dict:
        """Follow (or with ``on: false`` unfollow) a registered user."""
        user = self.user_of(conn)
        return self.social.follow(user, self._registered(args.get("user")), bool(args.get("on", True)))

    def rpc_favorite(self, conn: Any, args: dict) -> dict:
        """Favorite (or unfavorite) a shift the caller may see; returns its favorite count."""
        user = self.user_of(conn)
        shift = args.get("id")
        if not self.queries.get(conn.peer_id, user, [shift])["rows"]:
            raise FlowError(f"no shift {str(shift)[:60]!r} that you can see", "not_found")
        return self.social.favorite(user, shift, bool(args.get("on", True)))

    def rpc_social(self, conn: Any, args: dict) -> dict:
        """Whom the caller follows and what they favorited."""
        user = self.user_of(conn)
        follows = self.social.follows_of(user)
        return {"follows": follows, "follows_ids": [a for a in map(self.accounts.id_of, follows) if a],
                "favorites": self.social.favorites_of(user)}

    def rpc_accounts(self, conn: Any, args: dict) -> dict:
        """The account id of each user name (None when unregistered), for nodes that query their own
        feed, and (``ids``) the name of each account id, so nodes can show who wrote a comment or notice:
        documents name their author by id, and only the hub knows the names."""
        self.user_of(conn)
        names, ids = args.get("names", []), args.get("ids", [])
        if not isinstance(names, list) or not isinstance(ids, list) or \
                not 1 <= len(names) + len(ids) <= MAX_NAMES_PER_CALL or not all(isinstance(i, str) for i in ids):
            raise FlowError(f"names and ids must be lists of 1-{MAX_NAMES_PER_CALL} user names and account ids "
                            "in all", "bad_request")
        answer: dict = {"accounts": {check_name(n, "user name"): self.accounts.id_of(n) for n in names}}
        if ids:
            answer["names"] = {i: self.accounts.name_of(i) for i in ids}
        return answer


MAX_NAMES_PER_CALL = 100


def _coded(fn: Callable[[Any, dict], Any]) -> Callable[[Any, dict], Any]:
    def handler(conn: Any, args: dict) -> Any:
        try:
            return fn(conn, args if isinstance(args, dict) else {})
        except FlowError as e:
            raise FlowError(f"[{e.code}] {e.message}", e.code) from None

    return handler


def _public_view(group: dict) -> dict:
    return {"group": group["name"], "open": group["open"], "join_level": group["join_level"],
            "members": dict(group["members"]), "invites": dict(group["invites"])}
