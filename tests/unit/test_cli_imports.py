"""The `oms` command line starts light: its grammar imports none of what the commands run on,
every command it accepts resolves to its coroutine, and choices added late still refuse what
they refused before."""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys

import pytest

from oms_tools.cli import COMMANDS, command
from oms_tools.cli.arguments import parser

HEAVY = ("temporalio", "grpc", "asyncpg", "oms_tools.bench", "oms_platform.auth", "services")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded = json.loads(out.splitlines()[-1])
    return [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_help_and_parsing_a_command_import_nothing_the_commands_run_on() -> None:
    code = (
        "import contextlib, io\n"
        "from oms_tools.cli import parser\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    parser().parse_args(['--help'])\n"
        "parser().parse_args(['order', 'show', 'o-1'])\n"
        "parser().parse_args(['outbox', 'dead-letters', '--service', 'fulfillment'])\n"
    )
    assert _loaded_after(code) == []


def _keys(top: argparse.ArgumentParser) -> set[str]:
    """The COMMANDS key of every command the grammar accepts (`order <sub>` as order:<sub>)."""
    [sub] = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    keys = set()
    for name, p in sub.choices.items():
        if name in ("order", "orders"):
            [osub] = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
            keys.update(f"order:{o}" for o in osub.choices)
        else:
            keys.add(name)
    return keys


def test_every_command_the_grammar_accepts_resolves_to_its_coroutine() -> None:
    assert _keys(parser()) == set(COMMANDS)
    for key in COMMANDS:
        assert inspect.iscoroutinefunction(command(key)), key


@pytest.mark.parametrize(
    "argv",
    [
        ["fo", "list", "--status", "lost"],
        ["token", "issue", "--role", "workflow"],
        ["order", "submit", "--channel", "fax"],
        ["supply", "create", "--kind", "gift", "--location", "L", "--sku", "S", "--qty", "1",
         "--expected", "2030-01-01"],
        ["subscription", "list", "--status", "sleeping"],
        ["postal", "load", "atlantis"],
    ],
)  # fmt: skip
def test_choices_added_when_their_command_parses_still_refuse_others(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(argv)


def test_choices_added_when_their_command_parses_accept_theirs() -> None:
    args = parser().parse_args(["token", "issue", "--role", "warehouse", "--channel", "store"])
    assert (args.role, args.channel) == ("warehouse", ["store"])
    args = parser().parse_args(["fo", "list", "--status", "shipped", "--json"])
    assert (args.status, args.json) == (["shipped"], True)
    assert parser().parse_args(["bench", "memory", "--orders", "5"]).orders == 5


def _subparser(top: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    """The parser of the subcommand at `path` (e.g. "order", "return")."""
    found = top
    for name in path:
        [sub] = [a for a in found._actions if isinstance(a, argparse._SubParsersAction)]
        found = sub.choices[name]
    return found


@pytest.mark.parametrize(
    "argv",
    [
        ["order", "return", "o-1", "--line", "l-1", "--reason", "r"],
        ["order", "exchange", "o-1", "--line", "l-1", "--sku", "S"],
        ["return", "receive", "o-1-R1", "--line", "l-1"],
        ["return", "policies", "set", "boxed"],
    ],
)  # fmt: skip
def test_the_condition_choices_are_the_return_domain_s_when_the_command_parses(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.servicing.domain import return_orders

    # A condition the domain gains is one the command line takes, with no copy to update.
    conditions = (*return_orders.CONDITIONS, "refurbished")
    monkeypatch.setattr(return_orders, "CONDITIONS", conditions)
    top = parser()
    args = top.parse_args([*argv, "--condition", "refurbished"])
    assert args.condition in ("refurbished", ["refurbished"])
    depth = 3 if argv[1] == "policies" else 2
    [action] = [
        a for a in _subparser(top, *argv[:depth])._actions if "--condition" in a.option_strings
    ]
    assert tuple(action.choices or ()) == conditions
    with pytest.raises(SystemExit):
        parser().parse_args([*argv, "--condition", "pristine"])
