"""The flows through the `shiftpeer` command against real `twistd -n shiftpeer` processes: a hub with a
CA-signed certificate and two users on 127.0.0.1, driven only by the command line."""

from __future__ import annotations

import json

import pytest

from shiftpeer.identity.makecerts import main as make_certs
from tests.test_cli import run, start_node, stop_node, wait_for
from tests.ports import free_port


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """A hub and two users made with `shiftpeer init`, each served by its own twistd process."""
    from shiftpeer.cli import main

    base = tmp_path_factory.mktemp("flows-cli")
    certs = base / "certs"
    assert make_certs([str(certs), "--host", "127.0.0.1", "--new-ca"]) == 0
    port = free_port()
    dirs = {name: str(base / name) for name in ("hub", "alice", "bob")}
    assert main(["init", dirs["hub"], "--user", "op", "--hub", "--tls-cert", str(certs / "127.0.0.1.pem"),
                 "--tls-key", str(certs / "127.0.0.1.key"), "--listen", f"tcp:{port}:interface=127.0.0.1"]) == 0
    for name in ("alice", "bob"):
        assert main(["init", dirs[name], "--user", name, "--connect", f"127.0.0.1:{port}",
                     "--ca", str(certs / "ca.pem")]) == 0
    procs = []
    try:
        for name, d in dirs.items():
            procs.append(start_node(d, str(base / f"{name}.log")))
        yield dirs
    finally:
        for proc in procs:
            stop_node(proc)


def cli_json(capsys, *argv: str) -> dict:
    status, out, err = run(capsys, *argv, "--json")
    assert status == 0, err
    return json.loads(out)


def test_register_publish_group_comment_notice(mesh, capsys):
    """register, shift publish (public, group, to), group new/invite/join/members, feed, comment,
    messages and notice all work from the command line between real processes."""
    hub, alice, bob = mesh["hub"], mesh["alice"], mesh["bob"]

    def registered(d: str) -> bool:
        status, out, err = run(capsys, "--data", d, "register", "--json")
        return status == 0
    wait_for(lambda: registered(alice), timeout=20)
    wait_for(lambda: registered(bob), timeout=20)
    status, out, err = run(capsys, "--data", bob, "register", "--name", "alice")
    assert status != 0 and "already" in err

    href = "https://example.org/cli"
    ids = {}
    for kind in ("public", "group", "direct"):
        status, out, err = run(capsys, "--data", alice, "shift", "new", "--space", "Notes", "--href", href,
                               "--summary", kind)
        assert status == 0, err
        ids[kind] = out.strip()
    cli_json(capsys, "--data", alice, "group", "new", "club")
    cli_json(capsys, "--data", alice, "group", "invite", "club", "bob", "--level", "read")
    assert cli_json(capsys, "--data", bob, "group", "join", "club")["level"] == "read"
    members = cli_json(capsys, "--data", bob, "group", "members", "club")["members"]
    assert {m["user"]: m["level"] for m in members} == {"alice": "owner", "bob": "read"}
    assert cli_json(capsys, "--data", alice, "shift", "publish", ids["public"], "--public")["public"] is True
    assert cli_json(capsys, "--data", alice, "shift", "publish", ids["group"], "--group", "club")["targets"] == \
        {"group:club": "ok"}
    # a target the connected hub would refuse refuses the whole publish, naming it; nothing changes
    status, out, err = run(capsys, "--data", alice, "shift", "publish", ids["direct"], "--to", "bob",
                           "--to", "nobody", "--json")
    assert status == 1 and out == "" and "user:nobody: there is no user 'nobody' on this hub" in err
    assert "audience" not in cli_json(capsys, "--data", alice, "shift", "show", ids["direct"])
    status, out, err = run(capsys, "--data", alice, "shift", "publish", ids["public"], "--to", "nobody")
    assert status == 1 and out == "" and "no user 'nobody'" in err and "nothing changed" in err
    status, out, err = run(capsys, "--data", alice, "shift", "publish", ids["direct"], "--to", "bob")
    assert status == 0 and out == f"published {ids['direct']}\n  user:bob: ok\n", err
    cli_json(capsys, "--data", alice, "group", "new", "band")
    status, out, err = run(capsys, "--data", alice, "shift", "publish", ids["direct"], "--group", "band")
    assert status == 0 and out == f"published {ids['direct']}\n  group:band: ok\n  user:bob: ok\n", err

    def bob_sees() -> set:
        return {r["id"] for r in cli_json(capsys, "--data", bob, "feed", "--href", href)["rows"]}
    wait_for(lambda: bob_sees() == set(ids.values()), timeout=20)
    assert [r["id"] for r in cli_json(capsys, "--data", bob, "feed", "--group", "club")["rows"]] == [ids["group"]]

    status, out, err = run(capsys, "--data", bob, "comment", ids["group"], "nice")
    assert status == 0, err
    status, out, err = run(capsys, "--data", hub, "notice", "welcome")
    assert status == 0, err
    status, out, err = run(capsys, "--data", bob, "notice", "not an operator")
    assert status != 0 and "operators" in err

    def alice_unread() -> int:
        return cli_json(capsys, "--data", alice, "messages")["unread"]
    wait_for(lambda: alice_unread() == 2, timeout=20)
    status, out, err = run(capsys, "--data", alice, "messages")
    assert "nice" in out and "welcome" in out
    assert cli_json(capsys, "--data", alice, "messages", "--mark-read")["unread"] == 0
    thread = cli_json(capsys, "--data", alice, "feed", "--thread", ids["group"])["rows"]
    assert [r["text"] for r in thread] == ["nice"]
    status, out, err = run(capsys, "--data", bob, "group", "leave", "club")
    assert status == 0, err
    status, out, err = run(capsys, "--data", bob, "feed", "--group", "club")
    assert status != 0 and "not a reader" in err


def _registered(capsys, d: str) -> bool:
    """Register the node's account (or find it already registered by an earlier test of this module)."""
    status, out, err = run(capsys, "--data", d, "register", "--json")
    return status == 0 or "already" in err


def test_comment_edit_and_delete(mesh, capsys):
    """`comment edit` (with --rev) and `comment delete` change bob's comment for alice too; alice may not
    change bob's comment (exit 1, says why), a stale --rev is refused, a malformed command is exit 2,
    and `comment ID TEXT` still adds a comment."""
    alice, bob = mesh["alice"], mesh["bob"]
    wait_for(lambda: _registered(capsys, alice), timeout=20)
    wait_for(lambda: _registered(capsys, bob), timeout=20)
    status, out, err = run(capsys, "--data", alice, "shift", "new", "--space", "Notes",
                           "--href", "https://example.org/cli-comments")
    assert status == 0, err
    sid = out.strip()
    cli_json(capsys, "--data", alice, "shift", "publish", sid, "--public")

    def comment() -> dict | None:
        status, out, err = run(capsys, "--data", bob, "comment", sid, "v1", "--json")
        return json.loads(out) if status == 0 else None
    made = wait_for(comment, timeout=20)

    def alice_sees() -> list:
        return [r["text"] for r in cli_json(capsys, "--data", alice, "feed", "--thread", sid)["rows"]]
    wait_for(lambda: alice_sees() == ["v1"], timeout=20)

    edited = cli_json(capsys, "--data", bob, "comment", "edit", made["id"], "v2", "--rev", made["rev"])
    assert edited["id"] == made["id"] and edited["rev"] != made["rev"]
    wait_for(lambda: alice_sees() == ["v2"], timeout=20)

    status, out, err = run(capsys, "--data", alice, "comment", "edit", made["id"], "mine now")
    assert status == 1 and "only its author" in err and out == ""
    status, out, err = run(capsys, "--data", alice, "comment", "delete", made["id"])
    assert status == 1 and "only its author" in err
    status, out, err = run(capsys, "--data", bob, "comment", "edit", made["id"], "v3", "--rev", made["rev"])
    assert status == 1 and edited["rev"] in err
    status, out, err = run(capsys, "--data", bob, "comment", "edit", made["id"])
    assert status == 2 and "comment edit COMMENT_ID TEXT" in err
    assert alice_sees() == ["v2"]

    status, out, err = run(capsys, "--data", bob, "comment", "delete", made["id"])
    assert status == 0 and out == f"deleted {made['id']}\n", err
    wait_for(lambda: alice_sees() == [], timeout=20)
    status, out, err = run(capsys, "--data", bob, "comment", "delete", made["id"], "--json")
    assert status == 1 and "no comment" in err


def test_messages_page_with_cursor_and_feed_by_type(mesh, capsys):
    """`messages --limit N` ends with a `--cursor` hint (--json: next_cursor) and `messages --cursor C`
    reaches the messages past the first page; `feed --type comment` lists comments, which the default
    (shifts) leaves out."""
    hub, alice, bob = mesh["hub"], mesh["alice"], mesh["bob"]
    wait_for(lambda: _registered(capsys, alice), timeout=20)
    wait_for(lambda: _registered(capsys, bob), timeout=20)
    for text in ("page one", "page two"):
        status, out, err = run(capsys, "--data", hub, "notice", text)
        assert status == 0, err

    def everything() -> list:
        rows = cli_json(capsys, "--data", bob, "messages", "--limit", "500")["rows"]
        return rows if {"page one", "page two"} <= {m.get("text") for m in rows} else []
    every = [m["id"] for m in wait_for(everything, timeout=20)]
    assert len(every) >= 2
    status, out, err = run(capsys, "--data", bob, "messages", "--limit", "1")
    assert status == 0, err
    hint = out.splitlines()[-1]
    assert hint.startswith("more: --cursor ")
    seen, cursor = [], None
    while True:
        args = ["--data", bob, "messages", "--limit", "1"] + (["--cursor", cursor] if cursor else [])
        page = cli_json(capsys, *args)
        seen += [m["id"] for m in page["rows"]]
        cursor = page["next_cursor"]
        if cursor is None or len(seen) > len(every):
            break
        if len(seen) == 1:
            assert hint == f"more: --cursor {cursor}"
    assert seen == every
    status, out, err = run(capsys, "--data", bob, "messages", "--cursor", "made-up")
    assert status == 1 and "cursor" in err and "internal" not in err

    status, out, err = run(capsys, "--data", alice, "shift", "new", "--space", "Notes",
                           "--href", "https://example.org/cli-types")
    sid = out.strip()
    cli_json(capsys, "--data", alice, "shift", "publish", sid, "--public")
    made = wait_for(lambda: run(capsys, "--data", bob, "comment", sid, "typed", "--json")[0] == 0, timeout=20)
    assert made

    def bobs_comments() -> list:
        rows = cli_json(capsys, "--data", alice, "feed", "--author", "bob", "--type", "comment")["rows"]
        return rows if any(r.get("text") == "typed" for r in rows) else []
    rows = wait_for(bobs_comments, timeout=20)
    assert {r["type"] for r in rows} == {"comment"}
    plain = cli_json(capsys, "--data", alice, "feed", "--author", "bob")["rows"]
    assert all(r.get("type", "shift") == "shift" for r in plain)


def test_shift_show_finds_what_the_user_can_see_through_the_hub(mesh, capsys):
    """bob's `shift show` finds alice's public shift (not on bob's node) through the hub, with its content;
    alice's unpublished shift and her shift for a group bob is not in stay 'no shift' (exit 1)."""
    alice, bob = mesh["alice"], mesh["bob"]
    wait_for(lambda: _registered(capsys, alice), timeout=20)
    wait_for(lambda: _registered(capsys, bob), timeout=20)
    made = {}
    for kind in ("public", "private", "secret"):
        status, out, err = run(capsys, "--data", alice, "shift", "new", "--space", "Notes", "--href",
                               "https://example.org/cli-show", "--summary", kind, "--content", '{"k": "%s"}' % kind)
        assert status == 0, err
        made[kind] = out.strip()
    cli_json(capsys, "--data", alice, "shift", "publish", made["public"], "--public")
    cli_json(capsys, "--data", alice, "group", "new", "secret-club")
    cli_json(capsys, "--data", alice, "shift", "publish", made["secret"], "--group", "secret-club")

    def bob_shows() -> dict | None:
        status, out, err = run(capsys, "--data", bob, "shift", "show", made["public"], "--json")
        return json.loads(out) if status == 0 else None
    shown = wait_for(bob_shows, timeout=20)
    assert shown["id"] == made["public"] and shown["summary"] == "public" and shown["content"] == {"k": "public"}
    assert shown["databases"] == ["shared"]
    status, out, err = run(capsys, "--data", bob, "shift", "show", made["public"])
    assert status == 0 and "summary:   public" in out
    wait_for(lambda: made["secret"] in {r["id"] for r in cli_json(capsys, "--data", alice, "feed", "--group",
                                                                   "secret-club")["rows"]}, timeout=20)
    for hidden in ("private", "secret"):
        status, out, err = run(capsys, "--data", bob, "shift", "show", made[hidden])
        assert status == 1 and out == "" and f"no shift {made[hidden]} that you can see" in err
    assert cli_json(capsys, "--data", alice, "shift", "show", made["private"])["databases"] == ["user/private", "user/feed"]
