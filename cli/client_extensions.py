"""``gatepass extend``, ``extensions``, ``approve-extension``, ``deny-extension``: more time on an active grant."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from cli.context import Context
from cli.durations import format_duration, parse_api_time
from cli.errors import UsageError
from cli.output import table, to_json
from cli.sshargs import format_time


def _time(value: Any) -> str:
    try:
        return format_time(parse_api_time(str(value))) if value else "?"
    except ValueError:
        return str(value)


def extension_outcome(extension: Mapping[str, Any]) -> str:
    status = str(extension.get("status", "?"))
    if status == "pending":
        required = int(extension.get("approvals_required") or 1)
        text = f"pending approval by {extension.get('site') or 'the plant'}"
        return text + (f" ({len(extension.get('approvals') or [])} of {required} approvals)" if required > 1 else "")
    if status == "approved":
        grant_id = (extension.get("grant") or {}).get("id")
        return f"approved; grant {grant_id} now ends {_time(extension.get('new_ends_at'))}"
    if status == "denied":
        denial = extension.get("denial") or {}
        return f"denied by {denial.get('approver')}: {denial.get('comment')}"
    if status == "lapsed":
        return "lapsed: the grant ended before a decision"
    return status


def extension_line(extension: Mapping[str, Any]) -> str:
    seconds = extension.get("duration_seconds")
    more = format_duration(int(seconds)) if isinstance(seconds, int) else "?"
    return (f"Extension {extension.get('id')} of grant {(extension.get('grant') or {}).get('id')} "
            f"({extension.get('asset')}) by {more}: {extension_outcome(extension)}")


def extensions_table(extensions: Sequence[Mapping[str, Any]]) -> str:
    if not extensions:
        return "No extensions."
    rows = [
        [
            str(e.get("id")),
            str(e.get("status")),
            str((e.get("grant") or {}).get("id")),
            str(e.get("asset")),
            str(e.get("requester") or ""),
            format_duration(int(e.get("duration_seconds") or 0)),
            _time(e.get("previous_ends_at")),
            str(e.get("reason") or "")[:40],
        ]
        for e in extensions
    ]
    return table(["ID", "STATUS", "GRANT", "ASSET", "REQUESTER", "MORE", "ENDS", "REASON"], rows)


def run_extend(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    if not args.reason.strip():
        raise UsageError("--reason must say why more time is needed: the approvers decide on it")
    body = {"duration": format_duration(args.duration), "reason": args.reason.strip()}
    with ctx.api() as api:
        extension: dict[str, Any] = api.post(f"/grants/{args.grant_id}/extend", body)
    ctx.say(to_json(extension) if args.json else extension_line(extension))
    return 0


def run_extensions(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    with ctx.api() as api:
        extensions = api.get("/extensions", params={"pending": "true"} if args.pending else None)
    ctx.say(to_json(extensions) if args.json else extensions_table(extensions))
    return 0


def _decide(args: argparse.Namespace, action: str, body: dict[str, Any]) -> int:
    ctx: Context = args.client_context
    with ctx.api() as api:
        extension: dict[str, Any] = api.post(f"/extensions/{args.extension_id}/{action}", body)
    ctx.say(to_json(extension) if args.json else extension_line(extension))
    return 0


def run_approve_extension(args: argparse.Namespace) -> int:
    return _decide(args, "approve", {"comment": args.comment})


def run_deny_extension(args: argparse.Namespace) -> int:
    if not args.comment.strip():
        raise UsageError("--comment must say why the extension is denied: the requester reads it")
    return _decide(args, "deny", {"comment": args.comment.strip()})
