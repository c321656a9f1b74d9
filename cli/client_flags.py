"""``gatepass flags`` and ``gatepass flag benign|confirmed``: identities behaving unlike themselves, explained."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from cli.context import Context
from cli.errors import UsageError
from cli.output import to_json


def flag_lines(found: Sequence[Mapping[str, Any]]) -> str:
    if not found:
        return "No flags."
    lines = []
    for flag in found:
        where = flag.get("site") or "-"
        learning = " (learning: shown, never acted on)" if flag.get("learning") else ""
        lines.append(f"{flag['id']}  {str(flag['severity']).upper():6}  {flag['status']:9}  {where}  "
                     f"{str(flag['created_at'])[:19]}{learning}")
        for signal in flag.get("signals") or []:
            usual = f" — {signal['usual']}" if signal.get("usual") else ""
            lines.append(f"    {signal['signal']}: {signal['observed']}{usual}")
    return "\n".join(lines)


def run_flags(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    with ctx.api() as api:
        found = api.get("/flags", params={"status": args.status})
    ctx.say(to_json(found) if args.json else flag_lines(found))
    return 0


def run_decide(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    if not args.comment.strip():
        raise UsageError("--comment must say why: the decision is kept with the flag")
    with ctx.api() as api:
        flag: dict[str, Any] = api.post(f"/flags/{args.flag_id}/{args.verdict}", {"comment": args.comment.strip()})
    ctx.say(to_json(flag) if args.json else f"Flag {flag['id']} marked {flag['status']}.")
    return 0
