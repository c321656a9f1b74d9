"""What the command line imports and builds before it knows what to do (issue 14: `gatepass --version` is the start-up).

The parser names its handlers and argument checks without importing them (cli.lazy.Later) and builds only the
command a command line names (cli.lazy.Commands); these tests keep it that way. How long start-up takes is measured,
not asserted: bench/bench_cli.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import client_commands
from cli.lazy import Later
from cli.main import build_parser
from cli.version import __version__

ROOT = Path(__file__).resolve().parents[2]

# What the commands do, and what `--version`, `--help` and a usage error must not pay for.
HEAVY = ("httpx", "sqlalchemy", "asyncssh", "cryptography", "fastapi", "uvicorn", "pyotp", "importlib.metadata",
         "broker", "assembly", "gateway")
# The modules the parser is made of; every other cli module belongs to a command and waits for it.
PARSER_MODULES = {"cli", "cli.main", "cli.version", "cli.errors", "cli.lazy", "cli.client_commands",
                  "cli.server_commands", "cli.run_commands", "cli.audit_commands", "cli.local_common"}


def _imported(argv: list[str]) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules a fresh ``gatepass ARGV`` imports, read from ``python -X importtime``."""
    script = f"import sys; from cli.main import main; sys.exit(main({argv!r}))"
    # No coverage in the child: its start-up hook would import its own modules.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_", "COVERAGE_"))}
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:") and "self [us]" not in line}
    return modules, done


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY))


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["ssh", "--help"], ["requests", "--help"],
                                  ["request"], ["nosuch"]])
def test_the_version_help_and_usage_errors_import_only_the_parser(argv: list[str]) -> None:
    modules, done = _imported(argv)
    assert done.returncode in (0, 2), done.stderr[-2000:]
    assert _heavy(modules) == []
    assert sorted(m for m in modules if m.split(".")[0] == "cli" and m not in PARSER_MODULES) == []


def test_the_version_is_printed_as_before() -> None:
    modules, done = _imported(["--version"])
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr.splitlines()[-1] == f"gatepass {__version__}"
    assert "cli.client_commands" in modules  # the parser was built, not skipped


def test_admin_help_imports_the_admin_commands_but_not_the_broker() -> None:
    modules, done = _imported(["admin", "site", "set", "--help"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cli.admin_site_commands" in modules
    assert _heavy(modules) == []


def test_the_version_is_the_one_in_pyproject() -> None:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        assert __version__ == tomllib.load(handle)["project"]["version"]


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_a_command_line_gets_the_same_parser_as_if_all_were_built() -> None:
    everything = dict(_commands(build_parser()))
    assert len(everything) > 60
    top = build_parser(named=set())
    assert top.format_help() == everything[()].format_help()
    for path, parser in everything.items():
        if path:
            built = dict(_commands(build_parser(named={path[0]})))
            assert built[path].format_help() == parser.format_help(), path
            assert built[path]._defaults.keys() == parser._defaults.keys(), path


def test_every_handler_and_check_named_for_later_exists() -> None:
    later = [p._defaults["func"] for _, p in _commands(build_parser()) if "func" in p._defaults]
    later += [value for value in vars(client_commands).values() if isinstance(value, Later)]
    assert later
    for named in later:
        if isinstance(named, Later):
            assert callable(named.resolve()), named
