"""Ids and tokens people type on the command line."""

from shiftpeer.cli import build_parser
from shiftpeer.ids import new_token
from shiftpeer.shifts import new_shift_id


def test_shift_ids_are_never_taken_for_options():
    """A fresh shift id never starts with '-' or '_', so `shift publish ID` always parses it as the id."""
    parser = build_parser()
    ids = [new_shift_id() for _ in range(2000)]
    assert all(i[0].isalnum() for i in ids)
    assert len(set(ids)) == len(ids) and all(len(i) >= 21 for i in ids)
    for sid in ids[:200]:
        args = parser.parse_args(["--data", "d", "shift", "publish", sid, "--public"])
        assert args.id == sid


def test_invite_tokens_are_never_taken_for_options():
    """An invitation token never starts with '-' or '_', so `register --invite TOKEN` always parses."""
    parser = build_parser()
    for _ in range(500):
        token = new_token(16)
        assert token[0].isalnum()
        assert parser.parse_args(["--data", "d", "register", "--invite", token]).invite == token
