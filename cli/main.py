"""The ``gatepass`` command: parse the command line, run one subcommand, turn its errors into exit codes.

Exit codes: 0 success; 1 refused or failed (``gatepass: <message>`` on stderr); 2 usage error; for
``gatepass ssh``/``tunnel``, whatever ssh exits with.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, NoReturn, cast

from cli import client_commands, server_commands
from cli.errors import ClientError
from cli.lazy import Commands
from cli.version import __version__

if TYPE_CHECKING:
    from cli.context import Context


class Parser(argparse.ArgumentParser):
    """argparse with errors in the house format: the usage, then ``gatepass: <message>``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"gatepass: {message}\n")


def _subparsers_of(
    parser: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _audit_subparsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """``audit verify`` is server-side and ``audit export`` client-side: share one ``audit`` command."""
    audit = subparsers.choices.get("audit")
    if audit is None:
        audit = subparsers.add_parser("audit", help="verify or export the audit trail")
    nested = _subparsers_of(audit)
    if nested is None:
        nested = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    return nested


class _VersionAction(argparse.Action):
    """``gatepass VERSION`` on stderr, exit 0 (argparse's own "version" action would print it on stdout)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help=str(kwargs.get("help", "")))

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        parser.exit(0, f"gatepass {__version__}\n")


def build_parser(named: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``gatepass`` command line. With ``named`` (the words of the command line to parse), only the commands
    among them get their arguments; the others are listed with their help, which is all argparse reads of them."""
    parser = Parser(
        prog="gatepass",
        description="Just-in-time, time-bound remote access to plant machines, approved by the plant.",
        epilog="State (session, SSH key, certificates) lives in $GATEPASS_HOME or ~/.gatepass.",
    )
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    # Subparsers are built with the parent's class (Parser); the cast gives Commands' own attributes.
    subparsers = cast(
        Commands, parser.add_subparsers(action=Commands, dest="command", metavar="COMMAND", required=True)
    )
    subparsers.named = named
    server_commands.add_subcommands(subparsers)
    client_commands.add_subcommands(subparsers)
    if subparsers.builds("audit"):
        client_commands.add_audit_export(_audit_subparsers(subparsers))
    return parser


def main(argv: Sequence[str] | None = None, *, context: Context | None = None) -> int:
    """Run one ``gatepass`` command and return its exit code (the console script exits with it)."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(named=set(words)).parse_args(words)
    # Imported once the command line is known to be a command to run (not --version, --help or a usage error):
    # the parser itself imports none of what the commands do.
    from cli import client_join
    from cli.context import Context

    ctx = context or Context.from_process()
    args.client_context = ctx
    try:
        client_join.renew_if_due(args)  # a workload's credential, past its half-life
        return int(args.func(args))
    except ClientError as exc:
        print(f"gatepass: {exc.message}", file=ctx.err)
        return exc.exit_code
    except KeyboardInterrupt:
        print(file=ctx.err)
        return 130
    except BrokenPipeError:
        # The reader went away (`gatepass audit export | head`); silence the flush at interpreter exit.
        if ctx.out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
