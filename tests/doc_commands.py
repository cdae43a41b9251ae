"""The shell commands the docs tell a reader to type, read out of their Markdown code blocks.

Tests that walk README.md's tour or check docs/operators.md's commands read them from the documents
themselves, so editing a document changes what is tested and a command that drifts from the software
fails the build instead of a newcomer.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^```(\w*)\s*$")
#: ``name=$(command)``: a command whose output (an id) the reader's shell keeps in a variable.
ASSIGNMENT = re.compile(r"^(\w+)=\$\((.*)\)$")
#: A command in the text: a backticked span that starts like one (not an error line `twistd shiftpeer: ...`).
INLINE = re.compile(r"`((?:shiftpeer|twistd) (?!shiftpeer:)[^`]*)`")


def section(markdown: str, heading: str) -> str:
    """The text under ``heading`` (a whole ``## ...`` line) up to the next heading of the same or a higher
    level; an AssertionError naming the heading when the document has none (a renamed section)."""
    lines = markdown.splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    for start, line in enumerate(lines):
        if line.strip() == heading:
            break
    else:
        raise AssertionError(f"no section {heading!r}: the document changed; update the test that reads it")
    end, fenced = len(lines), False
    for i in range(start + 1, len(lines)):
        fenced ^= bool(_FENCE.match(lines[i]))   # a shell comment in a code block is no heading
        if not fenced and re.match(rf"^#{{1,{level}}} ", lines[i]):
            end = i
            break
    return "\n".join(lines[start + 1:end])


def code_blocks(markdown: str, language: str | None = "") -> list[str]:
    """Fenced code blocks, in order; ``language`` "" keeps only blocks without one (how the docs fence
    shell commands), None keeps every block."""
    blocks, current, lang = [], None, ""
    for line in markdown.splitlines():
        fence = _FENCE.match(line)
        if fence and current is None:
            current, lang = [], fence.group(1)
        elif fence:
            if language is None or lang == language:
                blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def commands(block: str) -> list[str]:
    """The block's commands as a shell reads them: backslash-continued lines joined into one, blank lines
    and whole-line comments dropped (a trailing ``# ...`` stays: the shell ignores it)."""
    out: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        out.append((pending + line.strip()).strip())
        pending = ""
    assert not pending, f"a command ends in a line continuation: {pending!r}"
    return out


def words(command: str) -> list[str]:
    """A command's words for a parser that does not run it: an ``name=$(...)`` assignment is its inner
    command, ``$(...)`` and ``$name`` are a placeholder word each, optional ``[...]`` parts are left out,
    and a trailing comment is dropped."""
    command = ASSIGNMENT.sub(r"\2", command.strip())
    command = re.sub(r"\$\([^)]*\)|\$\w+", "X", command)
    command = re.sub(r"\s*\[[^\]]*\]", "", command)
    return shlex.split(command, comments=True)


def page_commands(page: Path, program: str) -> list[str]:
    """Every ``program`` command on a page: code-block lines (also ``id=$(...)``) and spans in the text
    (those of more than two words: `shiftpeer init` names a command, it does not give one)."""
    text = page.read_text()
    found = [c for block in code_blocks(text) for c in commands(block)]
    spans = [" ".join(span.split()) for span in INLINE.findall(text)]
    found += [span for span in spans if len(span.split()) > 2]
    return [c for c in found if words(c)[:1] == [program]]
