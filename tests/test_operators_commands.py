"""What docs/operators.md tells an operator to type is accepted by the software it names.

Its `shiftpeer` and `twistd ... shiftpeer` commands (in code blocks and in the text), read out of the page
itself, parse with the real parsers (`shiftpeer`'s, and twistd's with the plugin's, against a real hub
directory, so `--data`, endpoints and limits get their checks too); every flag its tables list is a flag of
`twistd shiftpeer`; its JSON examples are read by the code that reads those files; and the metrics it
lists are the ones the node exports. Nothing here runs a node: what the commands do is tested elsewhere
(tests/test_cli_ops.py, tests/test_sync_config.py, tests/test_backup_restore_refusals.py); this catches
the page drifting from the software, a renamed flag or metric, a command that no longer parses.
"""

from __future__ import annotations

import json
import re
from contextlib import redirect_stderr
from io import StringIO

import pytest

from tests import doc_commands
from tests.doc_commands import ROOT, code_blocks, section, words

PAGE = ROOT / "docs" / "operators.md"


def page_commands(program: str) -> list[str]:
    """Every ``program`` command on the page: code-block lines (also ``id=$(...)``) and spans in the text."""
    return doc_commands.page_commands(PAGE, program)


def _parse_cli(argv: list[str]) -> str | None:
    """None when `shiftpeer ARGV` is a good command line, else what the parser said."""
    from shiftpeer.cli.errors import CliError
    from shiftpeer.cli.parser import build_parser

    err = StringIO()
    try:
        with redirect_stderr(err):
            args = build_parser().parse_args(argv)
        if getattr(args, "check", None) is not None:
            args.check(args)
    except SystemExit:
        return err.getvalue().strip()
    except CliError as e:
        return e.message
    return None


def test_the_shiftpeer_commands_parse():
    """Every `shiftpeer ...` the page gives (ids and dates as placeholders) is a command line the
    `shiftpeer` parser accepts, with its own checks (exit 2 otherwise)."""
    found = page_commands("shiftpeer")
    assert len(found) >= 15, f"found only {len(found)} shiftpeer commands on {PAGE.name}: {found}"
    bad = {c: why for c in found if (why := _parse_cli(words(c)[1:])) is not None}
    assert not bad, "\n".join(f"{c}\n  -> {why}" for c, why in bad.items())


@pytest.fixture
def hub_dir(tmp_path):
    from shiftpeer.nodedir import init_node_dir

    return init_node_dir(tmp_path / "hub", user="operator", hub=True, listen=["tcp:7701"]).path


def test_the_twistd_commands_parse(hub_dir):
    """Every `twistd ... shiftpeer ...` the page gives parses with twistd's own options and the plugin's,
    `--data hub` being a real hub directory; a `--logger` names a log observer that imports."""
    from twisted.python.usage import UsageError
    from twisted.scripts._twistd_unix import ServerOptions

    found = page_commands("twistd")
    assert len(found) >= 4, f"found only {len(found)} twistd commands on {PAGE.name}: {found}"
    for command in found:
        argv = words(command)[1:]
        assert argv[argv.index("--data") + 1] == "hub", command
        argv[argv.index("--data") + 1] = str(hub_dir)
        options = ServerOptions()
        try:
            options.parseOptions(argv)
        except (UsageError, SystemExit) as e:
            pytest.fail(f"{command}\n  -> {e}")
        assert options.subCommand == "shiftpeer", command
        if "--logger" in argv:   # twistd imported the observer it names (ModuleNotFound, else)
            assert callable(options["logger"]), command


def test_every_flag_in_the_tables_is_a_flag_of_twistd_shiftpeer():
    """The flags the *Starting it*, *Sync limits* and *Announced full-peer addresses* tables list are all
    options of `twistd shiftpeer`."""
    from shiftpeer.tap import Options

    known = {opt.rstrip("=") for opt in Options().longOpt}
    text = PAGE.read_text()
    tables = section(text, "## Starting it") + section(text, "## Sync limits") + \
        section(text, "## Announced full-peer addresses")
    flags = {f for row in tables.splitlines() if row.startswith("| ") for f in re.findall(r"`--([a-z-]+)", row)}
    assert len(flags) >= 20 and not flags - known, f"not flags of twistd shiftpeer: {sorted(flags - known)}"


def test_the_json_examples_are_read_as_the_page_says(tmp_path):
    """hub.json's example is a valid hub.json (invite-only); config.json's `sync` example is valid limits,
    its `gossip` example valid gossip settings."""
    from shiftpeer.gossip.settings import check_gossip_config
    from shiftpeer.roles.flowroles import load_hub_config
    from shiftpeer.sync.config import check_sync_config

    examples = [json.loads(block) for block in code_blocks(PAGE.read_text(), "json")]
    hub = [e for e in examples if "registration" in e]
    config = [e for e in examples if "sync" in e]
    assert len(hub) == 1 and len(config) == 1, examples
    (tmp_path / "hub.json").write_text(json.dumps(hub[0]))
    assert load_hub_config(str(tmp_path))["registration"] == "invite"
    assert check_sync_config(config[0]["sync"]) == config[0]["sync"]
    [gossip] = [e["gossip"] for e in examples if "gossip" in e]
    assert check_gossip_config(gossip) == gossip
    [quota] = [e for e in examples if "quota" in e]
    (tmp_path / "hub.json").write_text(json.dumps(quota))
    assert load_hub_config(str(tmp_path))["quota"] == quota["quota"]


def test_the_metrics_listed_are_the_ones_the_node_exports():
    """The *Metrics* table names exactly the metric families the node's collector exports (a counter's
    family gains `_total` in the exposition)."""
    source = (ROOT / "shiftpeer" / "api" / "metrics.py").read_text()
    exported = {name + ("_total" if kind == "Counter" else "")
                for kind, name in re.findall(r'(Counter|Gauge)MetricFamily\(\s*"(shiftpeer_\w+)"', source)}
    table = section(PAGE.read_text(), "## Metrics")
    listed = {name for row in table.splitlines() if row.startswith("| `")
              for name in re.findall(r"`(shiftpeer_\w+)", row.split("|")[1])}
    assert len(exported) >= 20
    assert listed == exported, f"only on the page: {sorted(listed - exported)}; only exported: {sorted(exported - listed)}"
