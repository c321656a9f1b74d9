"""``gatepass request``, ``requests``, ``approve``, ``deny``, ``cancel``, ``revoke``: approval workflow."""

from __future__ import annotations

import argparse
import re
from typing import Any

from cli.api import ApiClient
from cli.context import Context
from cli.durations import format_duration, parse_api_time, parse_duration, parse_start
from cli.errors import ClientError, ServerUnreachable, UsageError
from cli.output import request_line, request_outcome, requests_table, to_json
from cli.sshargs import describe_services, format_time
from cli.state import check_asset_name

POLL_SECONDS = 1.0
# Consecutive failed polls tolerated while waiting, so a broker restart does not abandon the wait.
MAX_POLL_FAILURES = 30
_OBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _argument(parse: Any) -> Any:
    """Adapt a parser raising ``UsageError`` to argparse's ``type=`` (which reports ``ArgumentTypeError``)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    convert.__name__ = parse.__name__
    return convert


def parse_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"'{text}' is not a TCP port: write a number from 1 to 65535")
    return int(text)


def object_id(text: str) -> str:
    if not _OBJECT_ID.match(text):
        raise UsageError(f"'{text}' is not an identifier like req-1a2b3c4d or grt-1a2b3c4d")
    return text


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    request = subparsers.add_parser(
        "request",
        help="ask the plant for time-bound access to one asset",
        description="Ask for access to ASSET. SSH when neither --ssh nor --port is given; "
        "without --start the window begins at approval.",
    )
    request.add_argument("asset", metavar="ASSET", type=_argument(check_asset_name))
    request.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        required=True,
        type=_argument(parse_duration),
        help="how long: 30s, 10m, 2h or 1d",
    )
    request.add_argument("--reason", required=True, metavar="TEXT", help="what the work is, for the approvers")
    request.add_argument("--ssh", action="store_true", help="SSH shell/exec/sftp (the default without --port)")
    request.add_argument(
        "--port",
        dest="ports",
        metavar="N",
        type=_argument(parse_port),
        nargs="+",
        action="extend",
        default=[],
        help="TCP port(s) to forward, e.g. --port 502 4840",
    )
    request.add_argument(
        "--read-only",
        action="store_true",
        help="protocol-aware read-only access to the ports (Modbus/TCP: reads pass, writes are refused)",
    )
    request.add_argument(
        "--start",
        metavar="T",
        type=_argument(parse_start),
        help="window start, ISO 8601 (e.g. 2026-11-27T14:00:00+01:00; no offset means UTC)",
    )
    request.add_argument("--wait", action="store_true", help="wait until the request is decided; exit 0 if approved")
    request.add_argument("--json", action="store_true", help="print the Request object from the API")
    request.set_defaults(func=run_request)

    listing = subparsers.add_parser("requests", help="list the requests you may see")
    listing.add_argument("--pending", action="store_true", help="only those waiting for a decision")
    listing.add_argument("--json", action="store_true", help="print a JSON list of Request objects")
    listing.set_defaults(func=run_requests)

    approve = subparsers.add_parser("approve", help="approve a pending request for your site")
    approve.add_argument("request_id", metavar="REQUEST_ID", type=_argument(object_id))
    approve.add_argument("--comment", metavar="TEXT")
    approve.add_argument(
        "--shorten-to",
        metavar="DURATION",
        type=_argument(parse_duration),
        help="grant less time than asked for (30s, 10m, 2h, 1d)",
    )
    approve.add_argument("--json", action="store_true", help="print the Request object from the API")
    approve.set_defaults(func=run_approve)

    deny = subparsers.add_parser("deny", help="deny a pending request for your site (a comment is required)")
    deny.add_argument("request_id", metavar="REQUEST_ID", type=_argument(object_id))
    deny.add_argument("--comment", metavar="TEXT", required=True, help="why, for the requester")
    deny.add_argument("--json", action="store_true", help="print the Request object from the API")
    deny.set_defaults(func=run_deny)

    cancel = subparsers.add_parser("cancel", help="withdraw your own pending request")
    cancel.add_argument("request_id", metavar="REQUEST_ID", type=_argument(object_id))
    cancel.add_argument("--json", action="store_true", help="print the Request object from the API")
    cancel.set_defaults(func=run_cancel)

    revoke = subparsers.add_parser("revoke", help="end a grant now; its live sessions are cut")
    revoke.add_argument("grant_id", metavar="GRANT_ID", type=_argument(object_id))
    revoke.add_argument("--reason", metavar="TEXT", help="recorded in the audit trail")
    revoke.add_argument("--json", action="store_true", help="print the Grant object from the API")
    revoke.set_defaults(func=run_revoke)


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
    return 0


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
    with ctx.api() as api:
        grant: dict[str, Any] = api.post(f"/grants/{args.grant_id}/revoke", {"reason": args.reason})
    if args.json:
        ctx.say(to_json(grant))
    else:
        ctx.say(
            f"Revoked grant {grant.get('id')} ({grant.get('identity')} on {grant.get('asset')}): "
            "its live sessions are being ended."
        )
    return 0
