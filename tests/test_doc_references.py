"""The docs' references to tests and source files point at things that exist.

README.md and docs/*.md prove their claims by naming tests (``tests/test_x.py::test_y``) and say where code
lives (``shiftpeer/sync/feeder.py``, ``roles/intake.py``). A test renamed or a module moved would leave a
dead reference that nobody notices; these tests make it break the build instead. Test files are parsed
with ``ast``, never imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "shiftpeer"

#: ``tests/test_x.py`` with an optional ``::name`` (or ``::Class::name``), as pytest spells a test.
TEST_REF = re.compile(r"(?<![\w/])tests/([\w/]+\.py)((?:::\w+)*)")
#: a source file, from the repository root or from the package (``roles/intake.py``), with an optional
#: ``::name`` of something defined in it.
SOURCE_REF = re.compile(
    r"(?<![\w/.])((?:shiftpeer/|(?:api|cli|gossip|identity|roles|store|sync)/)[\w/]*\w\.py)((?:::\w+)*)")
#: a package directory named with its trailing slash (``shiftpeer/gossip/``).
PACKAGE_DIR_REF = re.compile(r"(?<![\w/.])(shiftpeer/[\w/]*\w/)(?![\w.])")


def doc_files() -> list[Path]:
    """README.md and every page of docs/: what a user reads."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def references(pattern: re.Pattern, docs: list[Path]) -> list[tuple[str, re.Match]]:
    """Every match of ``pattern`` in ``docs``, with the ``doc:line`` it is on."""
    found = []
    for doc in docs:
        shown = doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            found += [(f"{shown}:{number}", m) for m in pattern.finditer(line)]
    return found


def defines(path: Path, names: list[str]) -> bool:
    """Whether ``path`` defines ``names[0]`` (a function, class or assignment at any level), and each
    further name inside the class before it: the way pytest's ``file.py::Class::test`` addresses a test."""
    scope: list[ast.stmt] = ast.parse(path.read_text(), filename=str(path)).body
    for i, name in enumerate(names):
        nodes = list(ast.walk(ast.Module(body=scope, type_ignores=[]))) if i == 0 else scope
        match = next((n for n in nodes if _name_of(n) == name), None)
        if match is None:
            return False
        scope = getattr(match, "body", [])
    return True


def _name_of(node: ast.AST) -> str | None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        return names[0] if names else None
    return None


def dead_test_refs(docs: list[Path]) -> list[str]:
    """``doc:line: ref`` for each test reference whose file or test does not exist."""
    dead = []
    for where, m in references(TEST_REF, docs):
        path, names = ROOT / "tests" / m.group(1), m.group(2).split("::")[1:]
        if not path.is_file() or (names and not defines(path, names)):
            dead.append(f"{where}: {m.group(0)}")
    return dead


def dead_source_refs(docs: list[Path]) -> list[str]:
    """``doc:line: ref`` for each source file (or ``file.py::name``) or package directory that does not
    exist."""
    dead = []
    for where, m in references(SOURCE_REF, docs):
        rel = m.group(1)
        path = ROOT / rel if rel.startswith("shiftpeer/") else PACKAGE / rel
        names = m.group(2).split("::")[1:]
        if not path.is_file() or (names and not defines(path, names)):
            dead.append(f"{where}: {m.group(0)}")
    for where, m in references(PACKAGE_DIR_REF, docs):
        if not (ROOT / m.group(1)).is_dir():
            dead.append(f"{where}: {m.group(1)}")
    return dead


def test_every_test_the_docs_name_exists():
    """Each ``tests/FILE.py::TEST`` the docs cite as proof names a test that is there, so a renamed or
    deleted test fails here instead of leaving a claim backed by nothing."""
    found = references(TEST_REF, doc_files())
    assert len(found) > 100, "the docs name far more tests than were found: is TEST_REF still right?"
    dead = dead_test_refs(doc_files())
    assert not dead, "tests the docs name that do not exist (rename the reference with the test):\n" + "\n".join(dead)


def test_every_source_file_the_docs_name_exists():
    """Each ``shiftpeer/...py`` (or package-relative ``roles/x.py``) file and ``shiftpeer/x/`` package the
    docs point at is in the tree, and a ``file.py::name`` is defined in it."""
    found = references(SOURCE_REF, doc_files())
    assert len(found) > 50, "the docs name far more source files than were found: is SOURCE_REF still right?"
    dead = dead_source_refs(doc_files())
    assert not dead, "source files or names the docs point at that do not exist:\n" + "\n".join(dead)


def map_entries(internals: Path) -> set[str]:
    """The modules and packages named at the start of a line of the first code block of internals.md, the
    map of the code (``  store/``, ``  node.py``)."""
    block = internals.read_text().split("```", 2)[1]
    return {m.group(1) for m in re.finditer(r"^  (\w+(?:\.py|/))", block, re.M)}


def package_parts(package: Path) -> set[str]:
    """The package's own modules and subpackages, as the map writes them (``node.py``, ``store/``)."""
    return {p.name + "/" if p.is_dir() else p.name for p in package.iterdir()
            if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.name != "__init__.py")}


def test_the_map_of_the_code_names_every_module():
    """docs/internals.md's map names every module and package of shiftpeer/ and nothing that is gone, so a
    new module gets its line (what it is for) in the same branch."""
    named, present = map_entries(ROOT / "docs" / "internals.md"), package_parts(PACKAGE)
    assert "store/" in named and "node.py" in named, "the map is the first code block of internals.md"
    assert sorted(present - named) == [], "modules missing from the map in docs/internals.md"
    assert sorted(named - present) == [], "modules in the map of docs/internals.md that are not in shiftpeer/"


def test_a_dead_reference_is_reported(tmp_path):
    """The checks find a test, a test file, a source file and a name that are not there (and only those),
    so the two tests above cannot pass by matching nothing."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "proved by `tests/test_urls.py::test_normal_form` and `tests/test_urls.py::test_gone_away`,\n"
        "`tests/test_no_such_file.py`, code in `shiftpeer/urls.py` and `roles/validation.py::refusal`,\n"
        "`shiftpeer/no_such_module.py`, `sync/nowhere.py`, `roles/validation.py::no_such_rule`,\n"
        "the packages `shiftpeer/gossip/` and `shiftpeer/nowhere/`.\n")
    dead_tests = [d.split(": ", 1)[1] for d in dead_test_refs([doc])]
    dead_source = [d.split(": ", 1)[1] for d in dead_source_refs([doc])]
    assert dead_tests == ["tests/test_urls.py::test_gone_away", "tests/test_no_such_file.py"]
    assert dead_source == ["shiftpeer/no_such_module.py", "sync/nowhere.py", "roles/validation.py::no_such_rule",
                           "shiftpeer/nowhere/"]

