"""README.md's five-minute tour, typed as written: its commands are read from the README's code block and
run one by one with bash against real `twistd` nodes, and what the README says they do is checked.

What the test changes, and only this (so the README stays the reader's text, with nothing to fill in):

- the hub's port: every ``7701`` becomes a free loopback port, so parallel runs and other programs on
  the machine cannot collide with it;
- ``.venv``: the tour runs in a temporary directory that has ``scripts`` and ``certs`` linked from the
  checkout and a ``.venv`` whose ``activate`` puts this test's interpreter's ``bin`` (``shiftpeer``,
  ``twistd``) first on PATH; its ``pip`` does nothing, so ``scripts/make-certs`` runs as written without
  reinstalling, and ``PYTHONPATH`` names the checkout, so the nodes run the source under test.

Ids the reader would otherwise copy are captured by the tour itself in shell variables (``id=$(...)``);
the test keeps each one for the commands after it, as the reader's shell does. Every command must exit 0;
the outcomes the README states are in ``EXPECT`` (keyed by what the command says), and each of them must
match a command, so a command removed from the README fails here until the test is told. Outcomes that
arrive asynchronously (a comment's notification) are polled with a deadline, never slept for. Every node
the tour starts is stopped by the tour's own last line, and by the test if it fails before that.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.doc_commands import ASSIGNMENT, ROOT, code_blocks, commands, section
from tests.ports import free_port
from tests.test_cli import _env

#: The port the README's hub listens on; the test gives the hub a free one instead.
README_PORT = "7701"
#: How long an asynchronous outcome may take, and one whole command.
OUTCOME_DEADLINE = 15.0
COMMAND_TIMEOUT = 60.0


def tour_commands() -> list[str]:
    """The commands of README.md's tour, in order, as the README has them."""
    tour = section((ROOT / "README.md").read_text(), "## A five-minute tour")
    blocks = code_blocks(tour)
    assert len(blocks) == 1, f"the tour has {len(blocks)} command blocks; this test reads exactly one"
    return commands(blocks[0])


@dataclass
class Step:
    """One tour command as run: the README's text, its words, exit status and output."""
    readme: str
    status: int
    out: str
    value: str | None = None   # what an ``name=$(...)`` assignment captured

    @property
    def argv(self) -> list[str]:
        return shlex.split(ASSIGNMENT.sub(r"\2", self.readme), comments=True)


@dataclass
class Tour:
    """The walk so far: the shell state the next command starts from, and every step."""
    cwd: Path
    port: int
    env: dict
    shell: list[str] = field(default_factory=lambda: ["set -e -o pipefail"])
    steps: list[Step] = field(default_factory=list)
    vars: dict[str, str] = field(default_factory=dict)

    def run(self, readme: str) -> Step:
        """Run one README command in the state the earlier ones left (sourced files, assigned ids)."""
        command = re.sub(rf"\b{README_PORT}\b", str(self.port), readme)
        assigned = ASSIGNMENT.match(command)
        line = f'{command} && printf %s "${assigned.group(1)}"' if assigned else command
        done = subprocess.run(["bash", "-c", "\n".join([*self.shell, line])], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        step = Step(readme, done.returncode, done.stdout + done.stderr)
        if assigned and done.returncode == 0:
            step.value = done.stdout
            self.vars[assigned.group(1)] = done.stdout
        return step

    def keep(self, step: Step) -> None:
        """Record a step; a sourced file or an assigned id carries over to the commands after it."""
        self.steps.append(step)
        if step.readme.startswith(". "):
            self.shell.append(step.readme)
        elif (assigned := ASSIGNMENT.match(step.readme)) and step.value is not None:
            self.shell.append(f"{assigned.group(1)}={shlex.quote(step.value)}")

    def last_arg(self, *words: str) -> str:
        """The last argument of the latest earlier command whose words include ``words`` in order."""
        for step in reversed(self.steps):
            argv = step.argv
            if any(argv[i:i + len(words)] == list(words) for i in range(len(argv))):
                return argv[-1]
        raise AssertionError(f"no tour command with {' '.join(words)!r} before this one")


def _one_id(step: Step, tour: Tour) -> bool:
    """It prints the new document's id: one word, nothing else."""
    return step.value is not None and re.fullmatch(r"[\w.-]+", step.value.strip()) is not None


def _messages(step: Step, tour: Tour) -> bool:
    """The operator's notice, and exactly one message for bob's comment, with the edited text."""
    edited, notice = tour.last_arg("comment", "edit"), tour.last_arg("notice")
    lines = step.out.splitlines()
    about_comment = [line for line in lines if "  bob  " in line]
    return (len(about_comment) == 1 and about_comment[0].endswith(f"  {edited}")
            and any(line.endswith(f"  {notice}") for line in lines))


def _domain_json(step: Step, tour: Tour) -> bool:
    """Both of alice's shifts on the domain, as JSON."""
    rows = json.loads(step.out)["rows"]
    return {tour.vars["id"], tour.vars["club"]} <= {r["id"] for r in rows}


def _nodes_stopped(step: Step, tour: Tour) -> bool:
    return not tour_nodes(tour.cwd)


@dataclass(frozen=True)
class Expect:
    """What the README says a command does: ``pattern`` finds the command (a regex on its README text),
    ``check`` tells whether its outcome holds; ``eventually``: it may hold only a moment later, so it is
    checked again until then (bounded), re-running the command unless ``rerun`` is False (its effect is
    looked at instead)."""
    pattern: str
    says: str
    check: Callable[[Step, Tour], bool]
    eventually: bool = False
    rerun: bool = True


EXPECT = [
    Expect(r"^scripts/make-certs tour/certs --host 127\.0\.0\.1$", "writes the hub's certificate and key and the CA",
           lambda s, t: all((t.cwd / "tour/certs" / f).is_file() for f in ("ca.pem", "127.0.0.1.pem", "127.0.0.1.key"))),
    Expect(r"^shiftpeer init ", "prints the new account's id", lambda s, t: re.fullmatch(r"[a-z2-7]{52}\n", s.out)),
    Expect(r" sync --wait$", "waits until the node is in step", lambda s, t: s.out.startswith("in step:")),
    Expect(r"^shiftpeer --data tour/\w+ register$", "registers the account",
           lambda s, t: re.fullmatch(r"registered as \w+ on the hub\n", s.out)),
    Expect(r"^id=\$\(.* shift new ", "prints the shift's id", _one_id),
    Expect(r" shift publish \$id --public$", "publishes it to everyone", lambda s, t: "public: ok" in s.out),
    Expect(r"tour/bob feed --href https://example\.org/$", "bob's feed has alice's public shift",
           lambda s, t: t.vars["id"] in s.out),
    Expect(r"group join club$", "bob joins", lambda s, t: "joined club" in s.out),
    Expect(r"^club=\$\(.* shift new ", "prints the second shift's id", _one_id),
    Expect(r" shift publish \$club --group club$", "publishes it to the group", lambda s, t: "group:club: ok" in s.out),
    Expect(r"tour/bob feed --group club$", "bob sees the group's shift", lambda s, t: t.vars["club"] in s.out),
    Expect(r"^cid=\$\(.* comment \$id ", "prints the comment's id", _one_id),
    Expect(r" comment edit \$cid ", "edits it (prints the new revision)", lambda s, t: s.out.startswith("2-")),
    Expect(r"tour/alice messages$", "alice has the notice and one message, with the new text", _messages,
           eventually=True),
    Expect(r"tour/alice feed --thread \$id$", "the shift's thread has bob's comment, edited",
           lambda s, t: t.vars["cid"] in s.out and t.last_arg("comment", "edit") in s.out, eventually=True),
    Expect(r"feed --domain example\.org --json$", "alice's shifts on the domain, as JSON", _domain_json),
    Expect(r"tour/alice status$", "who alice is connected to and her replications",
           lambda s, t: f"127.0.0.1:{t.port}" in s.out and "connected" in s.out and "replication:" in s.out),
    Expect(r"tour/hub backup tour/hub-backup\.mdb$", "backs the hub's store up to the file",
           lambda s, t: "backed up" in s.out and (t.cwd / "tour/hub-backup.mdb").stat().st_size > 0),
    Expect(r"^for n in hub alice bob; do kill ", "stops every node", _nodes_stopped, eventually=True,
           rerun=False),
]


def expectation(readme: str) -> Expect | None:
    found = [e for e in EXPECT if re.search(e.pattern, readme)]
    assert len(found) <= 1, f"{readme!r} matches more than one expectation: {[e.pattern for e in found]}"
    return found[0] if found else None


def tour_nodes(cwd: Path) -> list[int]:
    """The twistd processes running in the tour's directory (the daemons the tour started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") == str(cwd) and b"twistd" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:   # gone meanwhile, or not ours to look at
            continue
    return pids


def stop_nodes(cwd: Path) -> None:
    """SIGTERM every node left in ``cwd``, then SIGKILL what has not stopped within the deadline."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in tour_nodes(cwd):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while tour_nodes(cwd) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not tour_nodes(cwd):
            return


def tour_directory(tmp: Path) -> Path:
    """A directory to walk the tour in, set up as a checkout after ``scripts/demo`` (see the docstring)."""
    cwd = tmp / "checkout"
    (cwd / ".venv" / "bin").mkdir(parents=True)
    for name in ("scripts", "certs"):
        (cwd / name).symlink_to(ROOT / name)
    bin_ = cwd / ".venv" / "bin"
    (bin_ / "activate").write_text(f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:\"$PATH\"\n")
    for name, body in (("python", f'exec {shlex.quote(sys.executable)} "$@"'), ("pip", "exit 0")):
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    return cwd.resolve()


def walk(tour: Tour, readme: str) -> None:
    """Run one command, check it exited 0 and, when the README says what it does, that it did."""
    expect = expectation(readme)
    step = tour.run(readme)
    deadline = time.monotonic() + OUTCOME_DEADLINE
    while expect is not None and expect.eventually and step.status == 0 and not expect.check(step, tour):
        assert time.monotonic() < deadline, f"{readme}\n  {expect.says}: not within {OUTCOME_DEADLINE}s:\n{step.out}"
        time.sleep(0.1)
        step = tour.run(readme) if expect.rerun else step
    assert step.status == 0, f"{readme}\n  exited {step.status}:\n{step.out}"
    if expect is not None:
        assert expect.check(step, tour), f"{readme}\n  should say: {expect.says}\n  but printed:\n{step.out}"
    tour.keep(step)


@pytest.mark.slow
def test_the_readme_tour_works_as_written(tmp_path):
    """Every command of the README's tour exits 0, in order, and does what the README says: bob's feed has
    alice's public shift and the group's one, alice gets the notice and one message for bob's edited
    comment, status names the hub, the backup file is written, and the tour's own last line stops every
    node it started."""
    readme = tour_commands()
    assert any(README_PORT in c for c in readme), f"the tour's hub no longer listens on {README_PORT}: update README_PORT"
    env = {k: v for k, v in _env().items() if k not in ("SHIFTPEER_VENV", "SHIFTPEER_DATA")}
    tour = Tour(tour_directory(tmp_path), free_port(), env)
    try:
        for command in readme:
            walk(tour, command)
    finally:
        stop_nodes(tour.cwd)
    unmatched = [e.pattern for e in EXPECT if not any(re.search(e.pattern, s.readme) for s in tour.steps)]
    assert not unmatched, f"the README's tour no longer has these commands; update EXPECT: {unmatched}"
