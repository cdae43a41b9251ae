"""The ``shiftpeer`` command line (DESIGN.md's contract): one sub-command per operation."""

from __future__ import annotations

import argparse
import os

from shiftpeer import __version__, times, urls
from shiftpeer.cli.commands import (COMMENT_USAGE, cmd_backup, cmd_comment, cmd_favorite, cmd_feed, cmd_follow,
                                    cmd_gossip_unban, cmd_group, cmd_init, cmd_invite, cmd_messages, cmd_notice,
                                    cmd_rebuild_tokens, cmd_register, cmd_restore, cmd_shift_delete, cmd_shift_edit,
                                    cmd_shift_new, cmd_shift_publish, cmd_shift_resolve, cmd_shift_show, cmd_status,
                                    cmd_sync_dir, comment_request, feed_query, publish_body, shift_edit_body,
                                    shift_new_body, status_query, unban_body)
from shiftpeer.cli.errors import EXIT_USAGE

def page_url(value: str) -> str:
    """argparse type of --href: an absolute http(s) URL (the node would refuse anything else, and a refusal
    from the node is exit 1, not the usage error it is). Passed on as given: the node normalizes it."""
    try:
        urls.normalize_href(value)
    except urls.BadHref as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


#: The API's page size bounds (shiftpeer.shifts.MAX_LIMIT; not imported: it pulls in Twisted).
MAX_LIMIT = 500


def limit_arg(text: str) -> int:
    """argparse type of --limit: a page size the node accepts, so a bad one is a usage error (exit 2)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return n


def time_arg(text: str) -> float:
    """argparse type of --since/--until: seconds since the epoch or ISO 8601 with a zone."""
    try:
        return times.parse_time(text)
    except times.BadTime as e:
        raise argparse.ArgumentTypeError(str(e)) from None




class _Parser(argparse.ArgumentParser):
    """argparse that exits with EXIT_USAGE and a one-line message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (DESIGN.md's contract), one sub-command per operation."""
    p = _Parser(prog="shiftpeer", description="Make shiftpeer nodes and drive a running one.")
    p.add_argument("--data", metavar="DIR", default=os.environ.get("SHIFTPEER_DATA"),
                   help="node directory (default: $SHIFTPEER_DATA)")
    p.add_argument("--version", action="version", version=f"shiftpeer {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def reader(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--json", action="store_true", help="print one JSON document")
        # --data may also follow the command ('shiftpeer feed --data DIR').
        sp.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS, help="node directory")
        return sp

    init = sub.add_parser("init", help="create a node directory and its account key")
    init.add_argument("dir", metavar="DIR")
    init.add_argument("--user", required=True, metavar="NAME")
    init.add_argument("--hub", action="store_true", help="run the hub (publishing server) role")
    init.add_argument("--tls-cert", metavar="FILE")
    init.add_argument("--tls-key", metavar="FILE")
    init.add_argument("--full-peer", action="store_true")
    init.add_argument("--listen", action="append", default=[], metavar="ENDPOINT")
    init.add_argument("--api", metavar="ENDPOINT")
    init.add_argument("--connect", metavar="HOST:PORT")
    init.add_argument("--peer", action="append", default=[], metavar="HOST:PORT")
    init.add_argument("--ca", metavar="FILE", help="trust root for the hub's certificate")
    init.add_argument("--hub-id", metavar="PEER_ID",
                      help="pin the hub's key: its TLS peer id (tls_peer_id in the hub's config.json; the account "
                           "id init printed, unless its certificate has an RSA/ECDSA key). Its certificate is "
                           "then checked by key; with --ca too, by both")
    init.set_defaults(func=cmd_init, needs_node=False)

    register = reader(sub.add_parser("register", help="create the account on the hub"))
    register.add_argument("--name", metavar="NAME", help="account name on the hub (default: the init --user)")
    register.add_argument("--invite", metavar="TOKEN", help="invitation token, for hubs that require one")
    register.set_defaults(func=cmd_register)

    shift = sub.add_parser("shift", help="make, change and show shifts")
    ssub = shift.add_subparsers(dest="shift_cmd", metavar="ACTION", parser_class=_Parser)
    ssub.required = True
    new = reader(ssub.add_parser("new", help="create a private shift; prints its id"))
    new.add_argument("--space", required=True, metavar="NAME")
    new.add_argument("--href", required=True, metavar="URL", type=page_url)
    new.add_argument("--summary", metavar="TEXT")
    new.add_argument("--content", metavar="JSON")
    new.set_defaults(func=cmd_shift_new, check=shift_new_body)
    edit = reader(ssub.add_parser("edit", help="write a new revision of your shift"))
    edit.add_argument("id", metavar="ID")
    edit.add_argument("--summary", metavar="TEXT")
    edit.add_argument("--content", metavar="JSON")
    edit.add_argument("--rev", metavar="REV", help="the revision you edited (refused if it changed since)")
    edit.set_defaults(func=cmd_shift_edit, check=shift_edit_body)
    delete = reader(ssub.add_parser("delete", help="delete your shift everywhere it went"))
    delete.add_argument("id", metavar="ID")
    delete.set_defaults(func=cmd_shift_delete)
    publish = reader(ssub.add_parser("publish", help="publish publicly, to groups, or to users"))
    publish.add_argument("id", metavar="ID")
    publish.add_argument("--public", action="store_true")
    publish.add_argument("--group", action="append", default=[], metavar="NAME")
    publish.add_argument("--to", action="append", default=[], metavar="USER")
    publish.set_defaults(func=cmd_shift_publish, check=publish_body)
    show = reader(ssub.add_parser("show", help="show a shift, its conflicts and where it lives"))
    show.add_argument("id", metavar="ID")
    show.set_defaults(func=cmd_shift_show)
    resolve = reader(ssub.add_parser("resolve", help="end a conflict on your shift: delete every other live "
                                                     "revision (prints the revision that now wins)"))
    resolve.add_argument("id", metavar="ID")
    resolve.add_argument("--keep", metavar="REV", help="the revision to keep (default: the current winner; "
                                                       "'shift show' lists the others as conflicts)")
    resolve.set_defaults(func=cmd_shift_resolve)

    feed = reader(sub.add_parser("feed", help="query your feed, newest first"))
    for name, meta in (("href", "URL"), ("domain", "D"), ("space", "S"), ("author", "U"), ("group", "G")):
        feed.add_argument(f"--{name}", metavar=meta, type=page_url if name == "href" else None)
    feed.add_argument("--thread", metavar="ID", help="comments on the shift ID")
    feed.add_argument("--type", metavar="TYPE", help="only documents of this type: shift (the default), comment, message or notice")
    feed.add_argument("--following", action="store_true", help="only authors you follow")
    feed.add_argument("--favorites", action="store_true", help="only shifts you favorited")
    feed.add_argument("--limit", type=limit_arg, default=50, metavar="N", help=f"rows per page (1-{MAX_LIMIT})")
    feed.add_argument("--since", type=time_arg, metavar="T",
                      help=f"created at or after T: seconds since the epoch or ISO 8601 with a zone ({times.EXAMPLE})")
    feed.add_argument("--until", type=time_arg, metavar="T", help="created before T (same forms as --since)")
    feed.add_argument("--cursor", metavar="CURSOR", help="next_cursor of the previous page")
    feed.set_defaults(func=cmd_feed, check=feed_query)

    group = sub.add_parser("group", help="groups: new, invite, join, leave, members, remove, level")
    gsub = group.add_subparsers(dest="group_cmd", metavar="ACTION", parser_class=_Parser)
    gsub.required = True
    new_group = reader(gsub.add_parser("new", help="create a group; you are its owner"))
    new_group.add_argument("name", metavar="NAME")
    new_group.add_argument("--open", action="store_true", help="anyone may join without an invitation")
    new_group.add_argument("--join-level", metavar="LEVEL", help="level of members who join an open group")
    new_group.set_defaults(func=cmd_group)
    for action, text in (("join", "join a group you were invited to (or an open one)"),
                         ("leave", "leave a group"), ("members", "list members and their levels")):
        g = reader(gsub.add_parser(action, help=text))
        g.add_argument("name", metavar="NAME")
        g.set_defaults(func=cmd_group)
    invite = reader(gsub.add_parser("invite", help="invite a user"))
    invite.add_argument("name", metavar="NAME")
    invite.add_argument("user", metavar="USER")
    invite.add_argument("--level", metavar="LEVEL", help="read, publish or admin (the hub's default otherwise)")
    invite.set_defaults(func=cmd_group)
    remove = reader(gsub.add_parser("remove", help="remove a member"))
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("user", metavar="USER")
    remove.set_defaults(func=cmd_group)
    level = reader(gsub.add_parser("level", help="change a member's level"))
    level.add_argument("name", metavar="NAME")
    level.add_argument("user", metavar="USER")
    level.add_argument("level", metavar="LEVEL")
    level.set_defaults(func=cmd_group)

    comment = reader(sub.add_parser("comment", help="comment on a shift; edit or delete your comment",
                                    usage=f"shiftpeer {COMMENT_USAGE}"))
    comment.add_argument("words", nargs="+", metavar="ARG",
                         help="SHIFT_ID TEXT (add), edit COMMENT_ID TEXT, or delete COMMENT_ID")
    comment.add_argument("--rev", metavar="REV", help="with edit: the revision you edited (refused if it changed)")
    comment.set_defaults(func=cmd_comment, check=comment_request)

    follow = reader(sub.add_parser("follow", help="follow a user (feed --following)"))
    follow.add_argument("user", metavar="USER")
    follow.add_argument("--off", action="store_true", help="unfollow")
    follow.set_defaults(func=cmd_follow)
    favorite = reader(sub.add_parser("favorite", help="favorite a shift (feed --favorites)"))
    favorite.add_argument("id", metavar="ID")
    favorite.add_argument("--off", action="store_true", help="unfavorite")
    favorite.set_defaults(func=cmd_favorite)

    messages = reader(sub.add_parser("messages", help="your messages and notices, newest first"))
    messages.add_argument("--unread", action="store_true", help="only those not yet read")
    messages.add_argument("--limit", type=limit_arg, default=50, metavar="N", help=f"rows per page (1-{MAX_LIMIT})")
    messages.add_argument("--cursor", metavar="CURSOR", help="next_cursor of the previous page")
    messages.add_argument("--mark-read", action="store_true", help="mark every message read")
    messages.set_defaults(func=cmd_messages)

    status = reader(sub.add_parser("status", help="roles, peers, database counts, replication lag"))
    status.add_argument("--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until interrupted")
    status.add_argument("--databases", metavar="PREFIX",
                        help="also list the databases whose names start with PREFIX ('*' for all), a page at a time")
    status.add_argument("--limit", type=limit_arg, metavar="N",
                        help="with --databases: at most N per page (1-500, default 100)")
    status.add_argument("--after", metavar="NAME", help="with --databases: the page after NAME (the 'next' shown)")
    status.set_defaults(func=cmd_status, check=status_query)

    sync = reader(sub.add_parser("sync", help="replication progress (exit 0 in step or not); --wait follows it "
                                              "until in step"))
    sync.add_argument("--wait", action="store_true",
                      help="wait until every peer is connected and every replication caught up, "
                           "with a progress bar on a terminal (a node still starting is waited for)")
    sync.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="with --wait: give up after this (exit 1; exit 3 if the node never answered)")
    sync.set_defaults(func=cmd_sync_dir, needs_node=False, needs_data=True)

    invite_token = reader(sub.add_parser("invite", help="hub operators: make a one-use registration token"))
    invite_token.set_defaults(func=cmd_invite)
    rebuild = reader(sub.add_parser("rebuild-tokens", help="hub operators: rebuild the visibility tokens of shared "
                                    "(a hub does it by itself once after an upgrade)"))
    rebuild.set_defaults(func=cmd_rebuild_tokens)

    backup = reader(sub.add_parser("backup", help="copy the node's store to OUTFILE (running or stopped)"))
    backup.add_argument("outfile", metavar="OUTFILE")
    backup.add_argument("--force", action="store_true", help="replace OUTFILE if it exists")
    backup.set_defaults(func=cmd_backup, needs_node=False, needs_data=True)
    restore = reader(sub.add_parser("restore", help="replace the stopped node's store with a backup"))
    restore.add_argument("infile", metavar="INFILE")
    restore.set_defaults(func=cmd_restore, needs_node=False, needs_data=True)

    gossip = sub.add_parser("gossip", help="full peers and hubs: lift gossip bans")
    gossub = gossip.add_subparsers(dest="gossip_cmd", metavar="ACTION", parser_class=_Parser)
    gossub.required = True
    unban = reader(gossub.add_parser("unban", help="lift the ban of gossip neighbours ('status' lists them)"))
    unban.add_argument("peer_ids", nargs="*", metavar="PEER_ID", help="full peer id(s), as status lists them")
    unban.add_argument("--all", action="store_true", help="lift every ban")
    unban.set_defaults(func=cmd_gossip_unban, check=unban_body)

    notice = reader(sub.add_parser("notice", help="hub operators: post a notice to system/messages"))
    notice.add_argument("text", metavar="TEXT")
    notice.set_defaults(func=cmd_notice)
    return p
