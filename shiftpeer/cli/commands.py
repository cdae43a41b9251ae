"""The ``shiftpeer`` sub-commands: each takes the parsed arguments (and a client of the running node when
it needs one) and returns the exit status."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from typing import Any

from shiftpeer import jsontext, times
from shiftpeer.cli.client import START_WAIT, ApiClient, StartingNodeClient
from shiftpeer.cli.errors import EXIT_ERROR, EXIT_USAGE, CliError
from shiftpeer.cli.output import (Progress, author_names, flow_text, print_feed, print_json, print_more,
                                  print_shift, print_status, progress_line, when_text, who_text)



def _content(text: str | None) -> Any:
    if text is None:
        return None
    try:
        value = jsontext.loads(text)
    except ValueError as e:
        raise CliError(f"--content is not valid JSON ({e}); e.g. --content '{{\"text\": \"hi\"}}'", EXIT_USAGE) from None
    if not isinstance(value, dict):
        raise CliError("--content must be a JSON object, e.g. --content '{\"text\": \"hi\"}'", EXIT_USAGE)
    return value


#: A hub without a certificate is allowed (peers dialling it with --peer pin nothing and accept it), but
#: user nodes check the hub's name against a CA and refuse it: say so while the fix is one command away.
HUB_WITHOUT_CERT = (
    "shiftpeer: warning: the hub {dir} has no certificate (--tls-cert/--tls-key): it will present its\n"
    "  self-signed node certificate, which user nodes refuse (they check the hub's host name against\n"
    "  --ca or the system's CAs) unless they pin its key ('init ... --connect HOST:PORT --hub-id {account}');\n"
    "  nodes dialling it with --peer sync with it too. For users without the pin, make a\n"
    "  certificate with 'scripts/make-certs OUTDIR --host NAME' (or use one from a CA), start the hub\n"
    "  with 'twistd shiftpeer --data {dir} --tls-cert OUTDIR/NAME.pem --tls-key OUTDIR/NAME.key' (on every\n"
    "  start; or init a new hub directory with those flags) and give users --ca OUTDIR/ca.pem.\n"
)


def cmd_init(args: argparse.Namespace) -> int:
    try:
        from shiftpeer.nodedir import NodeDirArgumentError, init_node_dir
    except ImportError:
        raise CliError("this shiftpeer build cannot create node directories (shiftpeer.nodedir missing)")
    kwargs = dict(
        user=args.user, hub=args.hub, tls_cert=args.tls_cert, tls_key=args.tls_key, full_peer=args.full_peer,
        listen=args.listen, api=args.api, connect=args.connect, peers=args.peer, ca=args.ca,
        hub_id=args.hub_id,
    )
    try:
        config = init_node_dir(args.dir, **kwargs)
    except NodeDirArgumentError as e:   # a bad command line: nothing was written
        raise CliError(f"init: {e} (see 'shiftpeer init --help')", EXIT_USAGE) from None
    except (FileExistsError, ValueError, OSError) as e:
        raise CliError(f"cannot create node directory {args.dir}: {e}") from None
    account = getattr(config, "account_id", None)
    if account is None:
        from shiftpeer.nodesettings import load_key

        account = load_key(args.dir, config).account_id
    if args.hub and not args.tls_cert:
        sys.stderr.write(HUB_WITHOUT_CERT.format(dir=args.dir, account=account))
    print(account)
    return 0


def shift_new_body(args: argparse.Namespace) -> dict:
    """The body of ``shift new`` (also the parser's check: bad --content is exit 2 with the node stopped)."""
    body = {"space": args.space, "href": args.href}
    if args.summary is not None:
        body["summary"] = args.summary
    content = _content(args.content)
    if content is not None:
        body["content"] = content
    return body


def cmd_shift_new(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("POST", "/shifts", shift_new_body(args))
    if args.json:
        print_json(result)
    else:
        print(result["id"])
    return 0


def shift_edit_body(args: argparse.Namespace) -> dict:
    """The body of ``shift edit``; a usage error when it changes nothing (also the parser's check)."""
    body: dict = {}
    if args.summary is not None:
        body["summary"] = args.summary
    content = _content(args.content)
    if content is not None:
        body["content"] = content
    if not body:
        raise CliError("nothing to change: give --summary TEXT and/or --content JSON", EXIT_USAGE)
    if args.rev is not None:
        body["rev"] = args.rev
    return body


def cmd_shift_edit(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("PATCH", f"/shifts/{_quote(args.id)}", shift_edit_body(args))
    print_json(result) if args.json else print(result["rev"])
    say_note(result, args)
    return 0


def say_note(result: Any, args: argparse.Namespace) -> None:
    """The ``note`` a node adds to a shift's answer when its hub could not be asked what another copy of the
    account wrote on it (roles/othercopies.py), on standard error: the answer stands, on what the node holds.
    With ``--json`` the note is in the answer printed, and standard error stays as it was."""
    note = result.get("note") if isinstance(result, dict) else None
    if note and not args.json:
        sys.stderr.write(f"shiftpeer: note: {note}\n")


def cmd_shift_delete(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("DELETE", f"/shifts/{_quote(args.id)}")
    print_json(result) if args.json else print(f"deleted {result['id']}")
    say_note(result, args)
    return 0


def cmd_shift_show(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("GET", f"/shifts/{_quote(args.id)}")
    print_json(result) if args.json else print_shift(result)
    say_note(result, args)
    return 0


def cmd_shift_resolve(client: ApiClient, args: argparse.Namespace) -> int:
    body = {} if args.keep is None else {"keep": args.keep}
    result = client.call("POST", f"/shifts/{_quote(args.id)}/resolve", body)
    print_json(result) if args.json else print(result["rev"])
    say_note(result, args)
    return 0


def publish_body(args: argparse.Namespace) -> dict:
    """The body of ``shift publish``; a usage error without a target (also the parser's check)."""
    if not (args.public or args.group or args.to):
        raise CliError("say where to publish: --public, --group NAME and/or --to USER", EXIT_USAGE)
    return {"public": args.public, "groups": args.group, "to": args.to}


def cmd_shift_publish(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("POST", f"/shifts/{_quote(args.id)}/publish", publish_body(args))
    say_note(result, args)
    targets = result.get("targets") or {}
    failed = {t: o for t, o in targets.items() if str(o).startswith("error")}
    if args.json:
        print_json(result)
    elif result.get("public") and args.public or len(failed) < len(targets):
        print(f"published {args.id}" + (" publicly" if result.get("public") and args.public else ""))
        for target, outcome in sorted(targets.items()):
            if target not in failed:
                print(f"  {target}: {outcome}")
    if not failed:
        return 0
    for target, outcome in sorted(failed.items()):
        sys.stderr.write(f"shiftpeer: not published to {target}: {str(outcome).removeprefix('error: ')}\n")
    # a target refused for good leaves the signed audience; one refused for now (the whole delivery: the author's
    # quota by day on the hub) stays in it and gets the shift's next revision
    aud = result.get("audience") or {}
    named = {f"group:{g}" for g in aud.get("groups", ())} | {f"user:{u}" for u in aud.get("to", ())}
    dropped = [t for t in failed if t not in named]
    if dropped:
        sys.stderr.write(f"shiftpeer: the hub refused {len(dropped)} of {len(targets)} target(s); "
                         "they are left out of the shift's audience\n")
    if len(dropped) < len(failed):
        sys.stderr.write(f"shiftpeer: the hub refused {len(failed) - len(dropped)} of {len(targets)} target(s) for "
                         "now; they stay in the shift's audience and get its next revision\n")
    return EXIT_ERROR


def feed_query(args: argparse.Namespace) -> dict:
    """The query of ``feed``; a usage error for a swapped time range (also the parser's check)."""
    query = {"limit": args.limit}
    for name in ("href", "domain", "space", "author", "group", "thread", "type", "cursor"):
        value = getattr(args, name)
        if value:
            query[name] = value
    for flag in ("following", "favorites"):
        if getattr(args, flag):
            query[flag] = "1"
    query.update(_time_range(args))
    return query


def cmd_feed(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("GET", "/feed", query=feed_query(args))
    if args.json:
        print_json(result)
    else:
        comments = [r for r in result.get("rows", []) if r.get("type") == "comment"]
        print_feed(result, author_names(client, comments))
    return 0


def _time_range(args: argparse.Namespace) -> dict:
    """--since/--until (already parsed to seconds) as query parameters; a swapped range is exit 2."""
    try:
        times.check_range(args.since, args.until)
    except times.BadTime as e:
        raise CliError(str(e), EXIT_USAGE) from None
    return {name: repr(value) for name in ("since", "until") if (value := getattr(args, name)) is not None}


def status_query(args: argparse.Namespace) -> dict:
    """The query of ``status``; a usage error for paging without --databases (also the parser's check)."""
    if args.databases == "":
        raise CliError("--databases needs a prefix such as inbox/ ('*' lists every database)", EXIT_USAGE)
    if args.databases is not None:
        query = {"databases": args.databases, "limit": args.limit, "after": args.after}
        return {k: v for k, v in query.items() if v is not None}
    if args.after or args.limit is not None:
        raise CliError("--limit and --after page a database listing: give --databases PREFIX too", EXIT_USAGE)
    return {}


def cmd_status(client: ApiClient, args: argparse.Namespace) -> int:
    query = status_query(args)
    if args.watch is None:
        result = client.call("GET", "/status", query=query)
        print_json(result) if args.json else print_status(result)
        return 0
    tty = sys.stdout.isatty()
    progress = Progress()
    try:
        while True:
            result = client.call("GET", "/status", query=query)
            progress.add(result)
            if args.json:
                sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
            else:
                sys.stdout.write("\x1b[H\x1b[2J" if tty else "\n")
                print_status(result, progress, bar=tty)
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def _ready(st: dict) -> str | None:
    """Why the node is not in step yet (None when it is): a peer not connected, a replication behind."""
    for p in st.get("peers", []):
        if not p.get("connected"):
            why = f": {p['last_error']}" if p.get("last_error") else ""
            return f"not connected to {p.get('kind', 'peer')} {p.get('address')}{why}"
    for r in st.get("replications", []):
        if not r.get("caught_up") or r.get("lag", 0):
            return f"{flow_text(r)} is {r.get('lag', 0)} changes behind"
    return None


def cmd_sync(client: ApiClient, args: argparse.Namespace) -> int:
    """Show replication progress; with --wait, follow it until every peer is connected and caught up."""
    tty = sys.stderr.isatty() and not args.json
    progress = Progress()
    interval = 0.2
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    last_line = 0.0
    steady = 0
    while True:
        st = client.call("GET", "/status")
        progress.add(st)
        why = _ready(st)
        summary = progress.overall(st)
        if not args.wait:
            break
        steady = steady + 1 if why is None else 0
        if steady >= 2:   # in step on two samples in a row: replications a new connection starts are seen
            break
        now = time.monotonic()
        if tty:
            if summary["total"]:
                line = progress_line(summary["done"], summary["total"], summary["docs_rate"], summary["eta"], True)
                line += "" if why is None else f"  ({why})"
            else:
                line = f"waiting: {why or 'settling'}"
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
        elif why is not None and now - last_line >= 2.0:
            last_line = now
            sys.stderr.write(progress_line(summary["done"], summary["total"], summary["docs_rate"],
                                           summary["eta"], False) + f"  ({why})\n")
            sys.stderr.flush()
        if deadline is not None and now > deadline:
            if tty:
                sys.stderr.write("\n")
            raise CliError(f"not in step after {args.timeout:g}s: {why or 'still settling'} "
                           "(see 'shiftpeer status')")
        time.sleep(interval)
    if tty:
        sys.stderr.write("\r\x1b[K")
    result = {"caught_up": why is None, "waiting_for": why, "replications": st.get("replications", []),
              "peers": st.get("peers", [])}
    if args.json:
        print_json(result)
    elif why is None:
        n = len(st.get("replications", []))
        print(f"in step: {len(st.get('peers', []))} peer(s) connected, {n} replication(s) caught up")
    else:
        print(f"not in step: {why}")
        for r in st.get("replications", []):
            if not r.get("caught_up") or r.get("lag"):
                print(f"  {flow_text(r)}: " + progress_line(r.get("seq", 0), r.get("remote_seq", 0), None, None, False))
    return 0


def cmd_sync_dir(args: argparse.Namespace) -> int:
    """`sync`: with --wait, a node that is still starting is waited for (within --timeout, else START_WAIT),
    so `twistd ... & shiftpeer sync --wait` works; without --wait, a node not running is exit 3 at once."""
    if not args.wait:
        return cmd_sync(ApiClient(args.data), args)
    return cmd_sync(StartingNodeClient(args.data, START_WAIT if args.timeout is None else args.timeout), args)


def cmd_invite(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("POST", "/hub/invites", {})
    print_json(result) if args.json else print(result["token"])
    return 0


def cmd_rebuild_tokens(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("POST", "/hub/tokens/rebuild", {})
    print_json(result) if args.json else print(result["message"])
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Put a backup back as the node's store; refused while a node runs on the directory. The directory's
    lock (shiftpeer.nodelock) is held throughout, so no node can start on a half-restored store."""
    from shiftpeer.backup import BackupError, restore, store_path
    from shiftpeer.nodelock import RESTORE, NodeBusy, lock_node_dir

    try:
        store_path(args.data)   # a node directory, before a lock file is made in it
        lock = lock_node_dir(args.data, RESTORE)
    except BackupError as e:
        raise CliError(str(e)) from None
    except NodeBusy as e:
        then = "stop it first, then restore" if e.holder != RESTORE else "wait for it to finish"
        raise CliError(f"{e}: {then}") from None
    except OSError as e:
        raise CliError(f"cannot lock {args.data}: {e.strerror or e}") from None
    try:
        info = restore(args.data, args.infile)
    except BackupError as e:
        raise CliError(str(e)) from None
    finally:
        lock.release()
    if args.json:
        print_json(info)
    else:
        kept = f"; the previous store is kept in {info['previous']}" if info["previous"] else ""
        print(f"restored {args.infile} as {info['store']} (schema {info['schema']}){kept}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """A consistent, compacted copy of the node's LMDB store in one file, the node running or not."""
    from shiftpeer.backup import BackupError, backup

    try:
        info = backup(args.data, args.outfile, force=args.force)
    except BackupError as e:
        raise CliError(str(e)) from None
    if args.json:
        print_json(info)
    else:
        print(f"backed up {info['store']} to {info['path']} ({info['bytes']:,} bytes, schema {info['schema']})")
    return 0


def cmd_register(client: ApiClient, args: argparse.Namespace) -> int:
    body = {}
    if args.name:
        body["name"] = args.name
    if args.invite:
        body["token"] = args.invite
    result = client.call("POST", "/register", body)
    print_json(result) if args.json else print(result.get("message", "registered"))
    return 0


def cmd_group(client: ApiClient, args: argparse.Namespace) -> int:
    name = _quote(args.name)
    if args.group_cmd == "new":
        body: dict = {"name": args.name}
        if args.open:
            body["open"] = True
        if args.join_level:
            body["join_level"] = args.join_level
        result = client.call("POST", "/groups", body)
    elif args.group_cmd == "invite":
        body = {"user": args.user}
        if args.level:
            body["level"] = args.level
        result = client.call("POST", f"/groups/{name}/invite", body)
    elif args.group_cmd == "remove":
        result = client.call("POST", f"/groups/{name}/remove", {"user": args.user})
    elif args.group_cmd == "level":
        result = client.call("POST", f"/groups/{name}/level", {"user": args.user, "level": args.level})
    elif args.group_cmd == "join":
        result = client.call("POST", f"/groups/{name}/join", {})
    elif args.group_cmd == "leave":
        result = client.call("POST", f"/groups/{name}/leave", {})
    else:
        result = client.call("GET", f"/groups/{name}/members")
        if not args.json:
            for m in result.get("members", []):
                print(f"{m.get('user')}  {m.get('level', '')}")
            return 0
    print_json(result) if args.json else print(result.get("message", "ok"))
    return 0


COMMENT_USAGE = "comment SHIFT_ID TEXT | comment edit COMMENT_ID TEXT [--rev REV] | comment delete COMMENT_ID"


def comment_request(args: argparse.Namespace) -> tuple[str, str, dict | None]:
    """(method, path, body) for ``comment ID TEXT`` (add), ``comment edit ID TEXT [--rev REV]`` or
    ``comment delete ID``; a usage error otherwise. A shift id is never the word edit or delete (ids are
    22 random characters), so the old form keeps working."""
    words = args.words
    if words[0] == "edit" and len(words) == 3:
        body = {"text": words[2]} if args.rev is None else {"text": words[2], "rev": args.rev}
        return "PATCH", f"/comments/{_quote(words[1])}", body
    if args.rev is not None:
        raise CliError(f"--rev goes with 'comment edit' only (usage: {COMMENT_USAGE})", EXIT_USAGE)
    if words[0] == "delete" and len(words) == 2:
        return "DELETE", f"/comments/{_quote(words[1])}", None
    if len(words) != 2 or words[0] in ("edit", "delete"):
        raise CliError(f"usage: {COMMENT_USAGE}", EXIT_USAGE)
    return "POST", f"/shifts/{_quote(words[0])}/comments", {"text": words[1]}


def cmd_comment(client: ApiClient, args: argparse.Namespace) -> int:
    method, path, body = comment_request(args)
    result = client.call(method, path, body)
    if args.json:
        print_json(result)
    elif method == "PATCH":
        print(result["rev"])
    elif method == "DELETE":
        print(f"deleted {result['id']}")
    else:
        print(result.get("id", "ok"))
    return 0


def cmd_follow(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("POST", "/follows", {"user": args.user, "on": not args.off})
    print_json(result) if args.json else print(("unfollowed " if args.off else "following ") + args.user)
    return 0


def cmd_favorite(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("POST", f"/shifts/{_quote(args.id)}/favorite", {"on": not args.off})
    print_json(result) if args.json else print(("unfavorited " if args.off else "favorited ") + args.id)
    return 0


def cmd_messages(client: ApiClient, args: argparse.Namespace) -> int:
    if args.mark_read:
        result = client.call("POST", "/messages/read", {})
        print_json(result) if args.json else print(f"all read ({result.get('unread', 0)} unread)")
        return 0
    query = {"limit": args.limit}
    if args.unread:
        query["unread"] = "1"
    if args.cursor:
        query["cursor"] = args.cursor
    result = client.call("GET", "/messages", query=query)
    if args.json:
        print_json(result)
    else:
        rows = result.get("rows", [])
        names = author_names(client, [m for m in rows if not m.get("from")])
        for m in rows:
            mark = " " if m.get("read") else "*"
            who = m.get("from") or who_text(m.get("author"), names)
            print(f"{mark} {when_text(m.get('created'))}  {who}  {m.get('text', '')}")
        if not result.get("rows"):
            print("(no messages)")
        print_more(result)
    return 0


def cmd_notice(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("POST", "/notices", {"text": args.text})
    print_json(result) if args.json else print(result.get("id", "ok"))
    return 0


def unban_body(args: argparse.Namespace) -> dict:
    """The body of ``gossip unban``: peer ids or --all, not both nor neither (also the parser's check)."""
    if args.all == bool(args.peer_ids):
        raise CliError("give PEER_ID... or --all ('shiftpeer status' lists the banned peers)", EXIT_USAGE)
    return {"all": True} if args.all else {"peers": args.peer_ids}


def cmd_gossip_unban(client: ApiClient, args: argparse.Namespace) -> int:
    """Lift gossip bans (POST /v1/gossip/unban): the peers are dialled and accepted again."""
    result = client.call("POST", "/gossip/unban", unban_body(args))
    if args.json:
        print_json(result)
    else:
        lifted = result.get("lifted", [])
        print(f"lifted {len(lifted)} ban(s)" + "".join(f"\n  {p}" for p in lifted)
              + f"\n{result.get('banned', 0)} still banned")
    return 0


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
