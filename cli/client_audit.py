"""``gatepass audit export``: page through the broker's audit trail and write it out for a SIEM."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from cli.client_access import _argument
from cli.context import Context
from cli.durations import parse_api_time, parse_since
from cli.errors import ServerUnreachable, UsageError

FORMATS = ("jsonl", "cef", "syslog", "ocsf")
AVAILABLE_FORMATS = ("jsonl",)
PAGE_SIZE = 500
# The event's time field; docs/API.md does not name it yet, so accept the usual spellings.
_TIME_FIELDS = ("occurred_at", "at", "timestamp", "time", "created_at")


def add_export(audit_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = audit_subparsers.add_parser(
        "export",
        help="write audit events for a SIEM (security and admin roles)",
        description="Print the audit trail from the broker, oldest first, one event per line.",
    )
    export.add_argument("--format", choices=FORMATS, default="jsonl", help="output format (default: jsonl)")
    export.add_argument(
        "--since",
        metavar="T",
        type=_argument(_since_text),
        help="ISO 8601 time (no offset means UTC) or a duration back from now, like 1d",
    )
    export.set_defaults(func=run_export)


def _since_text(text: str) -> str:
    # Validated here for a clear usage error; resolved against the context's clock when the command runs.
    parse_since(text, now=dt.datetime.now(dt.UTC))
    return text


def event_time(event: Mapping[str, Any]) -> dt.datetime | None:
    for field in _TIME_FIELDS:
        value = event.get(field)
        if isinstance(value, str):
            try:
                return parse_api_time(value)
            except ValueError:
                continue
    return None


def _event_key(event: Mapping[str, Any]) -> str:
    for field in ("id", "seq", "sequence", "hash"):
        if field in event:
            return f"{field}={event[field]}"
    return json.dumps(event, sort_keys=True)


def run_export(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    if args.format not in AVAILABLE_FORMATS:
        raise UsageError(f"format {args.format} is not available yet: use --format jsonl")

    since = parse_since(args.since, now=ctx.clock()) if args.since else None
    # Paging by time: the next page asks for events since the last one's time (assumed inclusive), and the
    # events already written at exactly that time are skipped, so none is written twice.
    seen_at_since: set[str] = set()
    with ctx.api() as api:
        while True:
            params = {"limit": str(PAGE_SIZE)} | ({"since": since.isoformat()} if since else {})
            page = api.get("/audit/events", params=params)
            if not isinstance(page, list):
                raise ServerUnreachable(
                    "the broker answered the audit export with something that is not a list"
                )
            fresh = [event for event in page if _event_key(event) not in seen_at_since]
            for event in fresh:
                ctx.out.write(json.dumps(event, separators=(",", ":")) + "\n")
            ctx.out.flush()
            if len(page) < PAGE_SIZE or not fresh:
                return 0
            last = event_time(page[-1])
            if last is None:
                raise ServerUnreachable(
                    "the broker's audit events carry no time, so the export cannot page on"
                )
            at_last = {_event_key(e) for e in page if event_time(e) == last}
            seen_at_since = (seen_at_since | at_last) if last == since else at_last
            since = last
