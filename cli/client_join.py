"""``gatepass join`` and ``gatepass renew``: a service or AI identity's machine joins with a key made here (the
private key never leaves this state directory) and keeps its short-lived credential renewed at half-life.

The credential is kept like a person's sign-in, in session.json, so `gatepass request`, `ssh` and `tunnel` work
unchanged; the file gains a "workload" part (instance, renewal counter, when the credential was issued). One
file written atomically: a counter and the credential it belongs to never part, since a mismatch would look
like a second copy to the broker and lock the instance. The key is the state directory's id_ed25519, so the
grant certificates of `gatepass request` are issued for it as well. The signed messages are those of
docs/API.md, "Workloads" (and broker.identity.workloads).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import hashlib
import json
import sys
from typing import TYPE_CHECKING, Any

from cli.context import Context
from cli.durations import parse_api_time
from cli.errors import ClientError, LocalSetupError, NotLoggedIn, ServerUnreachable, UsageError
from cli.output import to_json
from cli.sshargs import format_time
from cli.state import ClientState, Session, default_server, normalize_server

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_JOIN_CONTEXT = "gatepass-workload-join-v1"
_RENEW_CONTEXT = "gatepass-workload-renew-v1"
# Commands that look after the credential themselves, or do not use it.
_NOT_RENEWED_FOR = frozenset({"join", "renew", "login", "logout", "init", "serve", "broker", "gateway", "admin"})


def join_message(*, token_hash: str, public_key: str) -> bytes:
    return "\n".join((_JOIN_CONTEXT, token_hash, public_key)).encode()


def renewal_message(*, instance_id: str, counter: int, timestamp: int, token_hash: str) -> bytes:
    return "\n".join((_RENEW_CONTEXT, instance_id, str(counter), str(timestamp), token_hash)).encode()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Workload:
    """A joined machine's credential: the session, plus the instance and the counter of its last renewal."""

    session: Session
    instance_id: str
    renewals: int
    issued_at: dt.datetime

    def half_life(self) -> dt.datetime:
        return self.issued_at + (self.session.expires_at - self.issued_at) / 2

    def to_json(self) -> dict[str, Any]:
        return {**self.session.to_json(), "workload": {"instance_id": self.instance_id, "renewals": self.renewals,
                                                         "issued_at": self.issued_at.isoformat()}}


def load_workload(state: ClientState) -> Workload | None:
    """The workload credential in this state directory, or None (a person's session, or none at all)."""
    session = state.load_session()
    if session is None:
        return None
    try:
        part = json.loads(state.session_path.read_text(encoding="utf-8")).get("workload")
        if not isinstance(part, dict):
            return None
        return Workload(session=session, instance_id=str(part["instance_id"]), renewals=int(part["renewals"]),
                        issued_at=parse_api_time(str(part["issued_at"])))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _save(state: ClientState, workload: Workload) -> None:
    state.ensure_home()
    # The state's own atomic 0600 writer: a reader (another gatepass command) never sees half a file.
    state._write_private(state.session_path, json.dumps(workload.to_json(), indent=2) + "\n")


def _from_answer(server: str, answer: Any) -> Workload:
    try:
        session = Session(server=server, username=str(answer["identity"]["username"]), token=str(answer["token"]),
                          expires_at=parse_api_time(str(answer["expires_at"])))
        instance = answer["instance"]
        return Workload(session=session, instance_id=str(instance["id"]), renewals=int(instance["renewals"]),
                        issued_at=parse_api_time(str(answer["issued_at"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerUnreachable(f"the broker at {server} answered with an unexpected body") from exc


def _sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


def _read_token(text: str) -> str:
    token = (sys.stdin.readline() if text == "-" else text).strip()
    if not token:
        raise UsageError("no join token given: pass the one from `gatepass admin identity join-token NAME`")
    return token


# --- join ------------------------------------------------------------------------------------------------------


def run_join(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ctx: Context = args.client_context
    server = normalize_server(args.server) if args.server else default_server(ctx.environ)
    token = _read_token(args.token)
    state = ctx.state
    held = load_workload(state)
    if held is not None:
        raise UsageError(f"{state.home} already holds the credential of {held.session.username} (instance "
                         f"{held.instance_id}): join each machine once, or use another state directory "
                         "(GATEPASS_HOME)")
    if state.key_path.exists() or state.public_key_path.exists():
        raise UsageError(f"{state.home} already holds an SSH key ({state.key_path}): a workload joins with a key of "
                         "its own, made by `gatepass join`; use a fresh state directory (GATEPASS_HOME)")

    key = Ed25519PrivateKey.generate()
    public_key = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption()).decode()
    state.ensure_home()
    # Written before the broker is asked, so the key exists on disk (0600) whatever happens next; removed
    # again if the join is refused.
    state._write_private(state.key_path, private_pem)
    state._write_private(state.public_key_path, f"{public_key} gatepass-workload\n")
    body = {"token": token, "public_key": public_key,
            "signature": _sign(key, join_message(token_hash=_sha256(token), public_key=public_key))}
    try:
        with ctx.anonymous_api(server) as api:
            answer = api.post("/workloads/join", body)
        workload = _from_answer(server, answer)
        _save(state, workload)
    except BaseException:
        state.key_path.unlink(missing_ok=True)
        state.public_key_path.unlink(missing_ok=True)
        raise
    _report(ctx, "Joined", server, answer, workload, json_output=args.json)
    return 0


def _report(ctx: Context, verb: str, server: str, answer: Any, workload: Workload, *, json_output: bool) -> None:
    instance = answer.get("instance") or {}
    if json_output:
        ctx.say(to_json({"server": server, "username": workload.session.username, "instance": instance,
                         "issued_at": workload.issued_at.isoformat(),
                         "expires_at": workload.session.expires_at.isoformat()}))
        return
    kind = (answer.get("identity") or {}).get("kind", "workload")
    ctx.say(f"{verb} {server} as {workload.session.username} ({kind}), instance {workload.instance_id}: credential "
            f"until {format_time(workload.session.expires_at)}, renewed from "
            f"{format_time(workload.half_life())} by any gatepass command (or `gatepass renew`).")


# --- renewal ---------------------------------------------------------------------------------------------------


def _private_key(state: ClientState) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_ssh_private_key(state.key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise LocalSetupError(f"the workload's key {state.key_path} is gone: without it the credential cannot be "
                              "renewed; ask the owner for a new join token and join again") from None
    except (OSError, ValueError, TypeError) as exc:
        raise LocalSetupError(f"cannot read the workload's key {state.key_path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise LocalSetupError(f"{state.key_path} is not the Ed25519 key `gatepass join` made")
    return key


def renew(ctx: Context, workload: Workload) -> tuple[Workload, Any]:
    """Prove the key by signing the next counter; keep the new credential. Returns it and the broker's answer."""
    from cli.api import ApiClient

    key = _private_key(ctx.state)
    counter = workload.renewals + 1
    timestamp = int(ctx.clock().timestamp())
    session = workload.session
    message = renewal_message(instance_id=workload.instance_id, counter=counter, timestamp=timestamp,
                              token_hash=_sha256(session.token))
    public_key = ctx.state.public_key_path.read_text(encoding="utf-8").strip() \
        if ctx.state.public_key_path.exists() else None
    body = {"counter": counter, "timestamp": timestamp, "signature": _sign(key, message), "public_key": public_key}
    try:
        with ApiClient(session.server, token=session.token, username=session.username,
                       transport=ctx.transport) as api:
            answer = api.post("/workloads/renew", body)
    except NotLoggedIn as exc:
        raise NotLoggedIn(f"the broker at {session.server} no longer knows this machine's credential: ask the owner "
                          f"of {session.username} for a new join token and run `gatepass join` again") from exc
    renewed = _from_answer(session.server, answer)
    _save(ctx.state, renewed)
    return renewed, answer


def _require_workload(ctx: Context) -> Workload:
    workload = load_workload(ctx.state)
    if workload is None:
        raise UsageError(f"{ctx.state.home} holds no workload credential: join this machine first with "
                         "`gatepass join --server URL --token T`")
    return workload


def run_renew(args: argparse.Namespace) -> int:
    ctx: Context = args.client_context
    workload = _require_workload(ctx)
    renewed, answer = renew(ctx, workload)
    _report(ctx, "Renewed on", renewed.session.server, answer, renewed, json_output=args.json)
    return 0


def renew_if_due(args: argparse.Namespace) -> None:
    """Before a command runs: past its half-life (and not yet expired), a workload credential is renewed. A renewal
    that fails is said on stderr and the command goes on; it fails by itself if the credential no longer works."""
    command = getattr(args, "command", None)  # `gatepass ssh` keeps its remote command (a list) under this name
    if isinstance(command, str) and command in _NOT_RENEWED_FOR:
        return
    ctx: Context = args.client_context
    workload = load_workload(ctx.state)
    now = ctx.clock()
    if workload is None or now < workload.half_life() or workload.session.is_expired(now):
        return
    try:
        renew(ctx, workload)
    except ClientError as failed:
        ctx.note(f"gatepass: the workload credential was not renewed: {failed.message}")
