"""``gatepass audit export``: page through the broker's audit trail and write it out for a SIEM."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from cli.client_commands import AUDIT_FORMATS as FORMATS
from cli.context import Context
from cli.durations import parse_since
from cli.errors import ServerUnreachable, UsageError

PAGE_SIZE = 1000  # the broker allows up to 5000 per page


def check_since(text: str) -> str:
    """``--since``, checked as the command line is parsed (cli.client_commands)."""
    # Validated here for a clear usage error; resolved against the context's clock when the command runs.
    parse_since(text, now=dt.datetime.now(dt.UTC))
    return text


def _renderer(name: str, *, broker_host: str | None) -> Callable[[dict[str, Any]], str]:
    """One line per event. The formatters are the broker's own (stdlib-only, so importing them stays cheap):
    a file exported here and the broker's syslog forwarding say the same thing about each event, and escape
    control characters by the same rules (``broker/siem_escaping.py``), so no value can start a second line."""
    from broker.audit import siem_formats

    if name == "jsonl":
        return siem_formats.to_jsonl
    if name == "cef":
        return siem_formats.to_cef
    if name == "syslog":
        # HOSTNAME names the originator (RFC 5424 §6.2.4): the broker that keeps the trail, not this laptop.
        return lambda event: siem_formats.to_syslog(event, hostname=broker_host)
    if name == "ocsf":
        return siem_formats.to_ocsf_line
    raise UsageError(f"format {name} is not one of {', '.join(FORMATS)}")


def run_export(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    since = parse_since(args.since, now=ctx.clock()) if args.since else None
    # Page on the chain's sequence number (``after_seq``), which is gapless and ordered; ``since`` only
    # filters. Paging on time would skip or repeat events that share a timestamp.
    after_seq = 0
    session = ctx.session()
    render = _renderer(args.format, broker_host=urlsplit(session.server).hostname)
    with ctx.api(session) as api:
        while True:
            params = {"limit": str(PAGE_SIZE), "after_seq": str(after_seq)}
            if since is not None:
                params["since"] = since.isoformat()
            page = api.get("/audit/events", params=params)
            if not isinstance(page, list):
                raise ServerUnreachable("the broker answered the audit export with something that is not a list")
            for event in page:
                if not isinstance(event, dict):
                    raise ServerUnreachable("the broker answered the audit export with an event that is not an object")
                ctx.out.write(render(event) + "\n")
            ctx.out.flush()
            if len(page) < PAGE_SIZE:
                return 0
            last_seq = page[-1].get("seq") if isinstance(page[-1], dict) else None
            if not isinstance(last_seq, int) or last_seq <= after_seq:
                raise ServerUnreachable("the broker's audit events carry no usable sequence number to page on")
            after_seq = last_seq
