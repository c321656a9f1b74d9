"""Server-side subcommands (init, serve, broker, gateway, admin, audit verify) that work on the data directory."""

from __future__ import annotations

import argparse


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the server-side subcommands; each sets ``func`` to a callable taking the parsed args."""
