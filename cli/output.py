"""Human-readable rendering of API objects: one-line summaries and plain-text tables."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from cli.durations import format_duration, parse_api_time
from cli.sshargs import describe_services, format_time


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False)


def _time(value: Any) -> str:
    if not value:
        return "?"
    try:
        return format_time(parse_api_time(str(value)))
    except ValueError:
        return str(value)


def _services(request: Mapping[str, Any]) -> str:
    return describe_services(ssh=bool(request.get("ssh")), ports=[int(p) for p in request.get("ports") or []])


def _duration(request: Mapping[str, Any]) -> str:
    seconds = request.get("duration_seconds")
    return format_duration(int(seconds)) if isinstance(seconds, int | float) else "?"


def request_outcome(request: Mapping[str, Any]) -> str:
    """The state of a request in words: who it waits for, or what was decided."""
    status = str(request.get("status", "?"))
    site = request.get("site") or "the plant"
    if status == "pending":
        text = f"pending approval by {site}"
        required = int(request.get("approvals_required") or 1)
        if required > 1:
            text += f" ({len(request.get('approvals') or [])} of {required} approvals)"
        return text
    if status == "approved":
        grant = request.get("grant") or {}
        if not grant:
            return "approved"
        return (
            f"approved; grant {grant.get('id')} ({grant.get('status', 'scheduled')}) "
            f"from {_time(grant.get('starts_at'))} until {_time(grant.get('ends_at'))}"
        )
    if status == "denied":
        denial = request.get("denial")
        if isinstance(denial, Mapping):
            who = denial.get("approver") or denial.get("by")
            comment = denial.get("comment")
            return "denied" + (f" by {who}" if who else "") + (f": {comment}" if comment else "")
        return f"denied: {denial}" if denial else "denied"
    if status == "expired":
        return "expired without a decision"
    return status


def request_line(request: Mapping[str, Any]) -> str:
    """``Request req-… for hmi-01 (ssh) for 2h: pending approval by plant-a``."""
    start = request.get("start")
    window = f" starting {_time(start)}" if start and request.get("status") == "pending" else ""
    return (
        f"Request {request.get('id')} for {request.get('asset')} ({_services(request)}) "
        f"for {_duration(request)}{window}: {request_outcome(request)}"
    )


def _window(request: Mapping[str, Any]) -> str:
    grant = request.get("grant")
    if isinstance(grant, Mapping) and grant.get("starts_at"):
        return f"{_time(grant.get('starts_at'))} to {_time(grant.get('ends_at'))}"
    start = request.get("start")
    return f"{_duration(request)} from " + (_time(start) if start else "approval")


def _status(request: Mapping[str, Any]) -> str:
    """``approved (revoked)``: once approved, what matters is where the grant stands."""
    grant = request.get("grant")
    if isinstance(grant, Mapping) and grant.get("status"):
        return f"{request.get('status')} ({grant['status']})"
    return str(request.get("status"))


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def requests_table(requests: Sequence[Mapping[str, Any]]) -> str:
    if not requests:
        return "No requests."
    rows = [
        [
            str(r.get("id")),
            _status(r),
            str(r.get("asset")),
            str(r.get("site") or ""),
            str(r.get("requester") or ""),
            _services(r),
            _window(r),
            _shorten(str(r.get("reason") or ""), 40),
        ]
        for r in requests
    ]
    return table(["ID", "STATUS", "ASSET", "SITE", "REQUESTER", "ACCESS", "WINDOW", "REASON"], rows)
