"""``gatepass login``, ``logout`` and ``whoami``: getting, dropping and showing the broker session."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from cli import client_oidc
from cli.context import Context
from cli.durations import parse_api_time
from cli.errors import ApiError, ClientError, NotLoggedIn, ServerUnreachable, UsageError
from cli.output import to_json
from cli.sshargs import format_time
from cli.state import Session, default_server, normalize_server


def _read_password(path: str) -> str:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the password file {path}: {exc.strerror}") from exc
    password = text.splitlines()[0] if text else ""
    if not password:
        raise UsageError(f"the password file {path} is empty")
    return password


def _prompt(label: str, *, secret: bool) -> str:
    try:
        value = getpass.getpass(f"{label}: ") if secret else input(f"{label}: ")
    except EOFError:
        raise UsageError(f"no {label.lower()} given and none could be prompted for") from None
    if not value.strip():
        raise UsageError(f"no {label.lower()} given")
    return value.strip() if not secret else value


def run_login(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    server = normalize_server(args.server) if args.server else default_server(ctx.environ)
    if args.oidc:
        if args.user or args.password_file or args.totp or args.enrolment_code:
            raise UsageError("--oidc signs in with your company account: leave out --user, --password-file, --totp "
                             "and --enrolment-code")
        return _signed_in(ctx, args, server, client_oidc.company_sign_in(ctx, server,
                                                                         open_browser=not args.no_browser), "")
    if args.no_browser:
        raise UsageError("--no-browser goes with --oidc")
    username = args.user or _prompt("Username", secret=False)
    password = _read_password(args.password_file) if args.password_file else _prompt("Password", secret=True)
    totp = args.totp or _prompt("One-time code", secret=False)
    body = {"username": username, "password": password, "totp": totp.strip()}
    if args.enrolment_code and args.enrolment_code.strip():
        body["enrolment_code"] = args.enrolment_code.strip()
    try:
        with ctx.anonymous_api(server) as api:
            answer = api.post("/auth/login", body)
    except ApiError as refused:
        if refused.code == "login_failed" and "enrolment_code" not in body:
            # The broker's answer never says which part was wrong; this is only the one thing to check first.
            ctx.note("gatepass: first sign-in, or your one-time codes were reset? Add --enrolment-code CODE (the "
                     "code you were given with your password).")
        raise
    return _signed_in(ctx, args, server, answer, username)


def _signed_in(ctx: Context, args: argparse.Namespace, server: str, answer: Any, username: str) -> int:
    """Keep the broker's session in the state directory and say who is signed in, until when."""
    try:
        session = Session(
            server=server,
            username=str(answer.get("identity", {}).get("username") or username),
            token=str(answer["token"]),
            expires_at=parse_api_time(str(answer["expires_at"])),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ServerUnreachable(f"the broker at {server} answered the login with an unexpected body") from exc
    ctx.state.save_session(session)
    identity: dict[str, Any] = answer.get("identity") or {}
    if args.json:
        ctx.say(
            to_json(
                {
                    "server": server,
                    "username": session.username,
                    "expires_at": session.expires_at.isoformat(),
                    "identity": identity,
                }
            )
        )
    else:
        roles = ", ".join(identity.get("roles") or []) or "no roles"
        ctx.say(
            f"Logged in to {server} as {session.username} ({roles}) until {format_time(session.expires_at)}."
        )
    return 0


def run_logout(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    session = ctx.state.load_session()
    if session is None:
        ctx.say("Not logged in.")
        return 0
    if not session.is_expired(ctx.clock()):
        try:
            with ctx.api(session) as api:
                api.post("/auth/logout")
        except NotLoggedIn:
            pass  # the token had already expired or been revoked: nothing left to revoke
        except ClientError as exc:
            ctx.state.delete_session()
            ctx.note(
                f"gatepass: forgot the session, but could not revoke its token on {session.server}: {exc}"
            )
            return 1
    ctx.state.delete_session()
    ctx.say(f"Logged out of {session.server}.")
    return 0


def run_whoami(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    session = ctx.session()
    with ctx.api(session) as api:
        identity = api.get("/me")
    if args.json:
        ctx.say(to_json(identity))
        return 0
    details = [str(identity.get("kind", "?")), "roles " + (", ".join(identity.get("roles") or []) or "none")]
    if identity.get("organisation"):
        details.append(f"organisation {identity['organisation']}")
    if identity.get("sites"):
        details.append("sites " + ", ".join(identity["sites"]))
    ctx.say(
        f"{identity.get('username', session.username)} ({'; '.join(details)}) on {session.server}, "
        f"session until {format_time(session.expires_at)}"
    )
    return 0
