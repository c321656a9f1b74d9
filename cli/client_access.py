"""``gatepass request``, ``requests``, ``approve``, ``deny``, ``cancel``, ``revoke``: approval workflow."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cli import quick_http
from cli.context import Context
from cli.durations import format_duration, parse_api_time
from cli.errors import ClientError, ServerUnreachable, UsageError
from cli.output import request_line, request_outcome, requests_table, to_json
from cli.sshargs import describe_services, format_time

if TYPE_CHECKING:  # httpx is imported only by the commands that use it (`gatepass revoke` must start at once)
    from cli.api import ApiClient

# How often `request --wait` asks: the approval reaches the vendor half an interval later on average, and issue 14
# wants approval -> `gatepass ssh` connected within 1 s (bench/bench_approval.py). Half a second keeps a waiting
# vendor at two cheap reads a second; a wait pushed by the broker would do better still.
POLL_SECONDS = 0.5
# Consecutive failed polls tolerated while waiting (30 s), so a broker restart does not abandon the wait.
MAX_POLL_FAILURES = 60


def _connect_hint(request: dict[str, Any]) -> str:
    asset = request.get("asset")
    hints = [f"`gatepass ssh {asset}`"] if request.get("ssh") else []
    hints += [f"`gatepass tunnel {asset} --port {port}`" for port in request.get("ports") or []]
    if not hints:
        return ""
    grant = request.get("grant") or {}
    when = f" from {format_time(parse_api_time(grant['starts_at']))}" if grant.get("status") == "scheduled" else ""
    return f"Connect{when} with " + " or ".join(hints) + "."


def run_request(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    session = ctx.session()
    if not args.reason.strip():
        raise UsageError("--reason must say what the work is: the approvers decide on it")
    ports = sorted(set(args.ports))
    body = {
        "asset": args.asset,
        "duration": format_duration(args.duration),
        "reason": args.reason.strip(),
        "ssh": bool(args.ssh or not ports),
        "ports": ports,
        "read_only": bool(args.read_only),
        "start": args.start.isoformat() if args.start else None,
        "public_key": ctx.state.ensure_key(),
    }
    with ctx.api(session) as api:
        request: dict[str, Any] = api.post("/requests", body)
        if args.wait and request.get("status") == "pending":
            request = _wait_for_decision(ctx, api, request, json_output=args.json)
    if args.json:
        ctx.say(to_json(request))
    else:
        ctx.say(request_line(request))
    if not args.wait:
        return 0
    if request.get("status") != "approved":
        ctx.note(f"gatepass: request {request.get('id')} for {request.get('asset')} was {request_outcome(request)}")
        return 1
    if not args.json and (hint := _connect_hint(request)):
        ctx.say(hint)
    _refresh_ssh_config(ctx, request)
    return 0


def _refresh_ssh_config(ctx: Context, request: dict[str, Any]) -> None:
    """The grant's host in the ssh_config `ssh-config --write` set up, if it did: the access is granted whatever
    happens here, so a failure is a note with the command that does it by hand, never a failed request."""
    from cli.client_connect import refresh_written_config

    try:
        hosts = refresh_written_config(ctx)
    except ClientError as exc:
        ctx.note(f"gatepass: {exc.message}; run `gatepass ssh-config --write` to bring the ssh config up to date")
        return
    host = f"{request.get('asset')}.gatepass"
    if hosts is not None and host in hosts:
        ctx.note(f"Updated {ctx.state.ssh_config_path}: `ssh {host}` works now (also scp, sftp and editors)")


def _wait_for_decision(ctx: Context, api: ApiClient, request: dict[str, Any], *, json_output: bool) -> dict[str, Any]:
    announce = ctx.note if json_output else ctx.say
    request_id = request["id"]
    announce(
        f"Waiting for approval of {request_id} ({request.get('asset')}, "
        f"{describe_services(ssh=bool(request.get('ssh')), ports=request.get('ports') or [])}) "
        f"by {request.get('site') or 'the plant'}… (Ctrl-C stops waiting; the request stays open)"
    )
    if not json_output:
        ctx.out.flush()
    seen_approvals = len(request.get("approvals") or [])
    failures = 0
    try:
        while request.get("status") == "pending":
            ctx.sleep(POLL_SECONDS)
            try:
                request = api.get(f"/requests/{request_id}")
                failures = 0
            except ServerUnreachable:
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise
                continue
            approvals = request.get("approvals") or []
            if request.get("status") == "pending" and len(approvals) > seen_approvals:
                seen_approvals = len(approvals)
                names = ", ".join(str(a.get("approver")) for a in approvals)
                announce(f"{seen_approvals} of {request.get('approvals_required')} approvals so far ({names})…")
    except KeyboardInterrupt:
        raise ClientError(
            f"stopped waiting; request {request_id} is still pending (see `gatepass requests --pending`, "
            f"or withdraw it with `gatepass cancel {request_id}`)"
        ) from None
    return request


def run_requests(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    with ctx.api() as api:
        requests = api.get("/requests", params={"pending": "true"} if args.pending else None)
    ctx.say(to_json(requests) if args.json else requests_table(requests))
    return 0


def _decide(args: argparse.Namespace, action: str, body: dict[str, Any] | None) -> dict[str, Any]:
    ctx: Context = args.client_context
    with ctx.api() as api:
        request: dict[str, Any] = api.post(f"/requests/{args.request_id}/{action}", body)
    if args.json:
        ctx.say(to_json(request))
    return request


def run_approve(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"comment": args.comment}
    if args.shorten_to is not None:
        body["shorten_to"] = format_duration(args.shorten_to)
    request = _decide(args, "approve", body)
    if not args.json:
        who = f"{request.get('requester')} on {request.get('asset')}"
        if request.get("status") == "pending":
            args.client_context.say(
                f"Recorded your approval of {request.get('id')} ({who}): {request_outcome(request)}."
            )
        else:
            args.client_context.say(f"Approved {request.get('id')} ({who}): {request_outcome(request)}.")
    return 0


def run_deny(args: argparse.Namespace) -> int:
    if not args.comment.strip():
        raise UsageError("--comment must say why the request is denied: the requester reads it")
    request = _decide(args, "deny", {"comment": args.comment.strip()})
    if not args.json:
        args.client_context.say(f"Denied {request.get('id')} ({request.get('requester')} on {request.get('asset')}).")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    request = _decide(args, "cancel", None)
    if not args.json:
        args.client_context.say(f"Cancelled {request.get('id')} ({request.get('asset')}).")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    path, body = f"/grants/{args.grant_id}/revoke", {"reason": args.reason}
    session = ctx.session()
    grant: dict[str, Any]
    if ctx.transport is None and quick_http.usable(session.server, ctx.environ):
        # Access that must end now does not wait for httpx to load (cli/quick_http.py).
        grant = quick_http.post(session.server, path, body, token=session.token, username=session.username)
    else:
        with ctx.api(session) as api:
            grant = api.post(path, body)
    if args.json:
        ctx.say(to_json(grant))
    else:
        ctx.say(
            f"Revoked grant {grant.get('id')} ({grant.get('identity')} on {grant.get('asset')}): "
            "its live sessions are being ended."
        )
    return 0
