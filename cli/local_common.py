"""What the local commands on the data directory share: the --data option, their settings, the error guard, notes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt

    from broker.settings import Settings

# The broker and gateway are imported inside each command, not here: `gatepass ssh` and the other client
# commands share this parser and must start in tens of milliseconds, not pay for FastAPI and SQLAlchemy.

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="data directory (default $GATEPASS_DATA or ./gatepass-data)")


class ContextClock:
    """The broker's clock interface over the CLI context's clock: one command runs on one clock (a test's fixed
    clock reaches `gatepass admin …` as it reaches the API it talks to)."""

    def __init__(self, now: Callable[[], dt.datetime]) -> None:
        self._now = now

    def now(self) -> dt.datetime:
        return self._now()


def local_settings(args: argparse.Namespace, **overrides: object) -> Settings:
    """The broker's settings for a local command (flags over the environment, assembly.environment)."""
    from assembly.environment import broker_settings

    context = getattr(args, "client_context", None)
    if context is not None and "clock" not in overrides:
        overrides["clock"] = ContextClock(context.clock)
    return broker_settings(environ_of(args), data_dir=getattr(args, "data", None), **overrides)


def environ_of(args: argparse.Namespace) -> Mapping[str, str]:
    context = getattr(args, "client_context", None)
    return context.environ if context is not None else os.environ


def guarded(func: Any) -> Any:
    """Turn the broker's refusals into ``gatepass: <why>`` and exit code 1 (never a traceback)."""

    def run(args: argparse.Namespace) -> int:
        from broker.errors import BrokerError
        from broker.keys.vault import VaultError

        try:
            return int(func(args))
        except (BrokerError, VaultError) as error:
            message = getattr(error, "message", None) or str(error)
            print(f"gatepass: {terminal_text(message)}", file=sys.stderr)
            return 1
        except (FileNotFoundError, ValueError, OSError) as error:
            print(f"gatepass: {terminal_text(str(error))}", file=sys.stderr)
            return 1

    return run


def terminal_text(text: str) -> str:
    """``text`` with its control characters written out (``\\x1b``), line breaks and tabs kept. What a plant machine
    reports (a file name, an SFTP server's error) reaches the admin's terminal, where an escape sequence would clear
    it, retitle it, or hide the words after it."""
    return "".join(char if char.isprintable() or char in "\n\t" else char.encode("unicode_escape").decode("ascii")
                   for char in text)


def enrolment_note(ttl: dt.timedelta) -> str:
    hours = ttl.total_seconds() / 3600
    lifetime = f"{hours:g} hours" if hours >= 1 else f"{ttl.total_seconds():g} seconds"
    return (f"  The enrolment code is needed once, with the password, at the first sign-in; it expires in {lifetime} "
            "(then ask for `gatepass admin user reset-totp`). Shown once: hand it over like the password.")


def print_policy_changes(noun: str, name: str, changes: Mapping[str, Mapping[str, Any]]) -> None:
    """Say what a `set` changed in a site's or an asset's policy, one line per field, old -> new."""
    if not changes:
        print(f"{noun} {name} unchanged (it already had that policy).")
    for field_name, change in changes.items():
        print(f"{noun} {name}: {field_name.replace('_', ' ')} {_shown(change['old'])} -> {_shown(change['new'])}")


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value).replace("_", "-")
