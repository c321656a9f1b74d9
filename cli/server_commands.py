"""Server-side subcommands (init, serve, broker, gateway, admin, audit verify/forward) on the data directory."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from assembly.settings import AppSettings
    from broker.settings import Settings

# The broker and gateway are imported inside each command, not here: `gatepass ssh` and the other client
# commands share this parser and must start in tens of milliseconds, not pay for FastAPI and SQLAlchemy.

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_subcommands(subparsers: Subparsers) -> None:
    """Register the server-side subcommands; each sets ``func`` to a callable taking the parsed args."""
    init = subparsers.add_parser("init", help="create the data directory, database, CAs and first admin")
    _data_option(init)
    init.add_argument("--json", action="store_true", help="print the admin's credentials as JSON")
    init.set_defaults(func=_guarded(_init))

    serve = subparsers.add_parser("serve", help="run broker, web and SSH gateway in one process")
    _data_option(serve)
    serve.add_argument("--http", help="web + API address (default $GATEPASS_HTTP or 127.0.0.1:8080)")
    serve.add_argument("--ssh", help="SSH gateway address (default $GATEPASS_SSH or 127.0.0.1:2222)")
    serve.add_argument("--demo", action="store_true", help="add a demo plant, users and a built-in demo machine")
    serve.set_defaults(func=_guarded(_serve))

    broker = subparsers.add_parser("broker", help="run the broker (API + web) alone, for production")
    _data_option(broker)
    broker.add_argument("--http", help="web + API address (default $GATEPASS_HTTP or 127.0.0.1:8080)")
    broker.set_defaults(func=_guarded(_broker))

    gateway = subparsers.add_parser("gateway", help="run an SSH gateway alone, for production")
    gateway.add_argument("--broker", default=os.environ.get("GATEPASS_BROKER_URL", "http://127.0.0.1:8080"),
                         help="the broker's URL (default $GATEPASS_BROKER_URL or http://127.0.0.1:8080)")
    gateway.add_argument("--token-file", type=Path, default=os.environ.get("GATEPASS_GATEWAY_TOKEN_FILE"),
                         required="GATEPASS_GATEWAY_TOKEN_FILE" not in os.environ,
                         help="file holding this gateway's credential (from `gatepass admin gateway add`)")
    gateway.add_argument("--ssh", help="SSH listen address (default $GATEPASS_SSH or 127.0.0.1:2222)")
    gateway.add_argument("--host-key", type=Path, default=Path("gatepass-gateway/ssh_host_ed25519_key"),
                         help="the gateway's SSH host key (made if missing)")
    gateway.add_argument("--public-host", help="host name vendors use to reach this gateway")
    gateway.add_argument("--recordings", type=Path,
                         default=Path(os.environ.get("GATEPASS_RECORDINGS", "gatepass-data/recordings")),
                         help="directory for session recordings (default $GATEPASS_RECORDINGS or "
                              "./gatepass-data/recordings)")
    gateway.set_defaults(func=_guarded(_gateway))

    _add_admin(subparsers)

    audit = subparsers.add_parser("audit", help="verify or export the audit trail")
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check the audit hash chain and each session recording against its "
                                               "recorded hash; exit 0 only if all are intact")
    _data_option(verify)
    verify.add_argument("--json", action="store_true")
    verify.add_argument("--anchor", action="append", default=[], metavar="SEQ:HASH",
                        help="an anchor printed by an earlier verify and kept outside the database; the event "
                             "must still match it (catches a chain rewritten by someone with database rights)")
    verify.add_argument("--recordings", type=Path, metavar="DIR",
                        help="where the session recordings are (default DATA/recordings, where `gatepass serve` "
                             "keeps them; give the gateways' --recordings directory for a separate gateway)")
    verify.set_defaults(func=_guarded(_verify))
    forward = actions.add_parser(
        "forward", help="send the audit trail to a syslog collector (RFC 5424 over TCP/TLS), resuming where it stopped")
    _data_option(forward)
    forward.add_argument("--to", required=True, metavar="URL", help="the collector: tcp://HOST:PORT or tls://HOST:PORT")
    forward.add_argument("--ca-file", type=Path, help="CA certificate(s) to check a tls:// collector against "
                                                       "(default: the system's trust store)")
    forward.add_argument("--once", action="store_true", help="send what is there now, then exit")
    forward.set_defaults(func=_guarded(_forward))


def _add_admin(subparsers: Subparsers) -> None:
    admin_parser = subparsers.add_parser("admin", help="manage sites, assets, users and gateways (local)")
    objects = admin_parser.add_subparsers(dest="admin_object", metavar="OBJECT", required=True)

    site = objects.add_parser("site", help="sites (plants)").add_subparsers(dest="verb", required=True)
    site_add = site.add_parser("add", help="add a site")
    site_add.add_argument("name")
    site_add.add_argument("--approvals-required", type=int, default=1)
    site_add.add_argument("--max-window", default="8h")
    _site_policy_options(site_add)
    _data_option(site_add)
    site_add.set_defaults(func=_guarded(_site_add))
    site_set = site.add_parser("set", help="change a site's policy (only the options given change)")
    site_set.add_argument("name")
    site_set.add_argument("--approvals-required", type=int)
    site_set.add_argument("--max-window")
    _site_policy_options(site_set)
    site_set.add_argument("--no-maintenance-window", action="store_true",
                          help="remove every maintenance window (no request is then flagged as outside one)")
    _data_option(site_set)
    site_set.set_defaults(func=_guarded(_site_set))
    lockdown = site.add_parser("lockdown", help="cut all remote access into a site until lifted")
    lockdown.add_argument("name")
    lockdown.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    _data_option(lockdown)
    lockdown.set_defaults(func=_guarded(_site_lockdown))
    lift = site.add_parser("lift", help="lift a site's lockdown")
    lift.add_argument("name")
    _data_option(lift)
    lift.set_defaults(func=_guarded(_site_lift))

    asset = objects.add_parser("asset", help="machines in a site").add_subparsers(dest="verb", required=True)
    asset_add = asset.add_parser("add", help="add an asset")
    asset_add.add_argument("name")
    asset_add.add_argument("--site", required=True)
    asset_add.add_argument("--host", required=True)
    asset_add.add_argument("--criticality", choices=["low", "high"], default="low")
    asset_add.add_argument("--ssh-port", type=int)
    asset_add.add_argument("--ssh-user")
    credential = asset_add.add_mutually_exclusive_group()
    credential.add_argument("--ssh-password-file", type=Path)
    credential.add_argument("--ssh-key-file", type=Path)
    asset_add.add_argument("--host-key", help='the target\'s SSH host key, "ssh-ed25519 AAAA…" '
                           "(if omitted, it is read from the target now and its fingerprint printed)")
    asset_add.add_argument("--tcp-port", type=int, action="append", default=[], dest="tcp_ports")
    _asset_policy_options(asset_add)
    _data_option(asset_add)
    asset_add.set_defaults(func=_guarded(_asset_add))
    asset_set = asset.add_parser("set", help="change an asset's policy (only the options given change)")
    asset_set.add_argument("name")
    _asset_policy_options(asset_set)
    asset_set.add_argument("--no-pass-env", action="store_true",
                           help="pass no client environment variable to this asset (the default)")
    _data_option(asset_set)
    asset_set.set_defaults(func=_guarded(_asset_set))

    user = objects.add_parser("user", help="people, service accounts and AI agents").add_subparsers(
        dest="verb", required=True)
    user_add = user.add_parser("add", help="add a user")
    user_add.add_argument("name")
    user_add.add_argument("--role", required=True, choices=["vendor", "supervisor", "security", "admin"])
    user_add.add_argument("--site", action="append", default=[], dest="sites")
    user_add.add_argument("--org")
    user_add.add_argument("--kind", choices=["human", "service", "ai_agent"], default="human")
    user_add.add_argument("--owner", help="the accountable person (required for service and AI-agent identities)")
    user_add.add_argument("--purpose")
    user_add.add_argument("--email", help="where this person's notifications go (new requests at their sites)")
    user_add.add_argument("--json", action="store_true")
    _data_option(user_add)
    user_add.set_defaults(func=_guarded(_user_add))
    user_set = user.add_parser("set", help="change a user's e-mail address")
    user_set.add_argument("name")
    user_set.add_argument("--email", required=True, help='the new address ("" removes it)')
    _data_option(user_set)
    user_set.set_defaults(func=_guarded(_user_set))
    reset = user.add_parser("reset-totp", help="issue a new TOTP secret (signs the user out everywhere); they "
                            "confirm it with a code at their next sign-in")
    reset.add_argument("name")
    reset.add_argument("--json", action="store_true",
                       help='print {"username", "totp_secret", "enrolment_code"} as JSON')
    _data_option(reset)
    reset.set_defaults(func=_guarded(_user_reset_totp))
    for verb, help_text in (("disable", "disable a user: signed out, open grants revoked, sessions cut"),
                            ("enable", "enable a disabled user again")):
        toggle = user.add_parser(verb, help=help_text)
        toggle.add_argument("name")
        _data_option(toggle)
        toggle.set_defaults(func=_guarded(_user_disable if verb == "disable" else _user_enable))

    gateway = objects.add_parser("gateway", help="gateway credentials").add_subparsers(dest="verb", required=True)
    gateway_add = gateway.add_parser("add", help="create a credential for a gateway")
    gateway_add.add_argument("name")
    gateway_add.add_argument("--json", action="store_true")
    _data_option(gateway_add)
    gateway_add.set_defaults(func=_guarded(_gateway_add))


def _site_policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--maintenance-window", action="append", dest="maintenance_windows", metavar="SPEC",
                        help='when the plant expects maintenance, in UTC, e.g. "Sat 06:00-14:00", '
                             '"Mon-Fri 22:00-02:00", "daily 12:00-13:00" (repeat for several; requests outside '
                             "are flagged to approvers; with `set` the list replaces the old one)")
    parser.add_argument("--record-input", choices=["on", "off"],
                        help="record what vendors type as well as what they see (default on)")
    parser.add_argument("--transfers", choices=["both", "download-only"],
                        help="whether SFTP/scp may write to the site's machines (default both)")
    parser.add_argument("--exec-upload-limit", metavar="SIZE",
                        help="on a download-only site, the most input a command without a terminal may take from "
                             "the vendor before it is cut as an upload, e.g. 64k or 1M (default 64k)")
    parser.add_argument("--cut-grace", metavar="DURATION",
                        help="when access ends, how long the vendor's commands on a machine get between TERM and "
                             "KILL, e.g. 2s, 500ms or 0 (at most 30s; default 2s)")


def _asset_policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pass-env", action="append", dest="pass_env", metavar="NAME",
                        help="a client environment variable passed to this machine, by exact name, e.g. LC_ALL "
                             "(repeat for several; none by default; with `set` the list replaces the old one)")


def _data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="data directory (default $GATEPASS_DATA or ./gatepass-data)")


class _ContextClock:
    """The broker's clock interface over the CLI context's clock: one command runs on one clock (a test's fixed
    clock reaches `gatepass admin …` as it reaches the API it talks to)."""

    def __init__(self, now: Callable[[], dt.datetime]) -> None:
        self._now = now

    def now(self) -> dt.datetime:
        return self._now()


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    """The broker's settings for a local command (flags over the environment, assembly.environment)."""
    from assembly.environment import broker_settings

    context = getattr(args, "client_context", None)
    if context is not None and "clock" not in overrides:
        overrides["clock"] = _ContextClock(context.clock)
    return broker_settings(_environ(args), data_dir=getattr(args, "data", None), **overrides)


def _environ(args: argparse.Namespace) -> Mapping[str, str]:
    context = getattr(args, "client_context", None)
    return context.environ if context is not None else os.environ


def _guarded(func: Any) -> Any:
    """Turn the broker's refusals into ``gatepass: <why>`` and exit code 1 (never a traceback)."""

    def run(args: argparse.Namespace) -> int:
        from broker.errors import BrokerError
        from broker.keys.vault import VaultError

        try:
            return int(func(args))
        except (BrokerError, VaultError) as error:
            message = getattr(error, "message", None) or str(error)
            print(f"gatepass: {message}", file=sys.stderr)
            return 1
        except (FileNotFoundError, ValueError, OSError) as error:
            print(f"gatepass: {error}", file=sys.stderr)
            return 1

    return run


def _init(args: argparse.Namespace) -> int:
    from assembly.database import initialise
    from broker.identity.totp import provisioning_uri

    settings = _settings(args)
    result = initialise(settings)
    creds = result.admin
    if args.json:
        print(json.dumps({"admin": creds.as_dict()}))
        return 0
    print(f"Initialised {result.gateway_token_path.parent}")
    print("First admin (shown once; store it in your password manager):")
    print(f"  username:     {creds.username}")
    print(f"  password:     {creds.password}")
    print(f"  TOTP secret:  {creds.totp_secret}")
    print(f"  TOTP URI:     {provisioning_uri(creds.totp_secret, username=creds.username)}")
    print(f"  enrolment code: {creds.enrolment_code}")
    print(_enrolment_note(settings.enrolment_code_ttl))
    print("Next: `gatepass serve` (add --demo for a demo plant with a built-in machine).")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from cli import runtime

    settings = _app_settings(args)
    return runtime.run_forever(runtime.serve(settings, demo=args.demo))


def _broker(args: argparse.Namespace) -> int:
    from cli import runtime

    settings = _app_settings(args)
    return runtime.run_forever(runtime.serve(settings, demo=False, with_gateway=False))


def _app_settings(args: argparse.Namespace) -> AppSettings:
    """Everything `serve`/`broker` is configured with (assembly.settings), the --http/--ssh flags first."""
    from assembly.settings import load
    from broker.settings import split_address

    overrides: dict[str, object] = {}
    if getattr(args, "http", None):
        overrides["http_host"], overrides["http_port"] = split_address(args.http, what="HTTP")
    if getattr(args, "ssh", None):
        overrides["ssh_host"], overrides["ssh_port"] = split_address(args.ssh, what="SSH")
    context = getattr(args, "client_context", None)
    if context is not None:
        overrides["clock"] = _ContextClock(context.clock)
    return load(_environ(args), data_dir=getattr(args, "data", None), **overrides)


def _gateway(args: argparse.Namespace) -> int:
    from broker.settings import split_address
    from cli import runtime

    host, port = split_address(args.ssh or os.environ.get("GATEPASS_SSH", "127.0.0.1:2222"), what="SSH")
    token = args.token_file.read_text().strip()
    return runtime.run_forever(runtime.run_gateway_only(broker_url=args.broker, token=token, host=host, port=port,
                                                host_key_path=args.host_key, public_host=args.public_host,
                                                recordings_dir=args.recordings.absolute()))


def _site_add(args: argparse.Namespace) -> int:
    from broker import admin

    windows = args.maintenance_windows or []
    from broker.inventory.sites import DEFAULT_EXEC_UPLOAD_LIMIT, parse_size

    limit = DEFAULT_EXEC_UPLOAD_LIMIT if args.exec_upload_limit is None else parse_size(args.exec_upload_limit)
    admin.add_site(_settings(args), name=args.name, approvals_required=args.approvals_required,
                   max_window=args.max_window, maintenance_windows=windows,
                   record_input=args.record_input != "off", transfers=(args.transfers or "both").replace("-", "_"),
                   exec_upload_limit=limit, cut_grace=args.cut_grace or "2s")
    print(f"Added site {args.name} ({args.approvals_required} approval(s) required, windows up to {args.max_window})")
    if windows:
        print(f"  maintenance windows (UTC): {', '.join(windows)}")
    return 0


def _site_set(args: argparse.Namespace) -> int:
    from broker import admin

    if args.no_maintenance_window and args.maintenance_windows:
        print("gatepass: give either --maintenance-window or --no-maintenance-window, not both", file=sys.stderr)
        return 2
    windows = [] if args.no_maintenance_window else args.maintenance_windows
    from broker.inventory.sites import parse_size

    limit = None if args.exec_upload_limit is None else parse_size(args.exec_upload_limit)
    changes = admin.update_site(
        _settings(args), name=args.name, approvals_required=args.approvals_required, max_window=args.max_window,
        maintenance_windows=windows,
        record_input=None if args.record_input is None else args.record_input == "on",
        transfers=None if args.transfers is None else args.transfers.replace("-", "_"), exec_upload_limit=limit,
        cut_grace=args.cut_grace)
    if not changes:
        print(f"Site {args.name} unchanged (it already had that policy).")
    for field_name, change in changes.items():
        print(f"Site {args.name}: {field_name.replace('_', ' ')} {_shown(change['old'])} -> {_shown(change['new'])}")
    return 0


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value).replace("_", "-")


def _asset_add(args: argparse.Namespace) -> int:
    from broker import admin

    fields: dict[str, Any] = {"name": args.name, "site": args.site, "host": args.host,
                              "criticality": args.criticality, "ssh_port": args.ssh_port, "ssh_user": args.ssh_user,
                              "host_key": args.host_key, "tcp_ports": args.tcp_ports,
                              "passed_env": args.pass_env or []}
    if args.ssh_password_file:
        fields["ssh_password"] = args.ssh_password_file.read_text().rstrip("\n")
    if args.ssh_key_file:
        fields["ssh_private_key"] = args.ssh_key_file.read_text()
    if args.ssh_port is not None and not args.host_key:
        from cli import runtime

        key, fingerprint = asyncio.run(runtime.scan_host_key(args.host, args.ssh_port))
        fields["host_key"] = key
        print(f"Pinned the host key of {args.host}:{args.ssh_port}: {fingerprint}")
        print("  Check this fingerprint with the machine's owner before anyone connects.")
    admin.add_asset(_settings(args), **fields)
    services = (["ssh"] if args.ssh_port else []) + [f"tcp/{p}" for p in args.tcp_ports]
    print(f"Added asset {args.name} at {args.host} in {args.site} ({', '.join(services) or 'no services'})")
    return 0


def _asset_set(args: argparse.Namespace) -> int:
    from broker import admin

    if args.no_pass_env and args.pass_env:
        print("gatepass: give either --pass-env or --no-pass-env, not both", file=sys.stderr)
        return 2
    names = [] if args.no_pass_env else args.pass_env
    changes = admin.update_asset(_settings(args), name=args.name, passed_env=names)
    if not changes:
        print(f"Asset {args.name} unchanged (it already had that policy).")
    for field_name, change in changes.items():
        print(f"Asset {args.name}: {field_name.replace('_', ' ')} {_shown(change['old'])} -> {_shown(change['new'])}")
    return 0


def _user_add(args: argparse.Namespace) -> int:
    from broker import admin

    settings = _settings(args)
    creds = admin.add_user(settings, username=args.name, role=args.role, kind=args.kind,
                           site_names=args.sites, organisation=args.org, owner=args.owner, purpose=args.purpose,
                           email=args.email)
    from broker.identity.totp import provisioning_uri

    if args.json:
        print(json.dumps(creds.as_dict() if creds else {"username": args.name}))
        return 0
    print(f"Added {args.kind} user {args.name} with role {args.role}")
    if creds:
        print("Credentials (shown once; give them to the user over a safe channel):")
        print(f"  password:     {creds.password}")
        print(f"  TOTP secret:  {creds.totp_secret}")
        print(f"  TOTP URI:     {provisioning_uri(creds.totp_secret, username=creds.username)}")
        print(f"  enrolment code: {creds.enrolment_code}")
        print(_enrolment_note(settings.enrolment_code_ttl))
        print("  At the first web sign-in (password and enrolment code, One-time code left empty) the user sees "
              "this secret as a QR code and confirms it with a code; `gatepass login --enrolment-code CODE --totp "
              "CODE` confirms it too.")
    return 0


def _user_set(args: argparse.Namespace) -> int:
    from broker import admin

    admin.set_user_email(_settings(args), name=args.name, email=args.email.strip() or None)
    print(f"{args.name}: e-mail {'set to ' + args.email.strip() if args.email.strip() else 'removed'}.")
    return 0


def _user_reset_totp(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.identity.totp import provisioning_uri

    settings = _settings(args)
    issued = admin.reset_totp(settings, name=args.name)
    if args.json:
        print(json.dumps(issued.as_dict()))
        return 0
    print(f"Issued a new TOTP secret for {args.name}; their API tokens and web sessions are revoked.")
    print("New secret (shown once; the user confirms it with a code at their next sign-in, where the web page")
    print("also shows it as a QR code):")
    print(f"  TOTP secret:  {issued.totp_secret}")
    print(f"  TOTP URI:     {provisioning_uri(issued.totp_secret, username=args.name)}")
    print(f"  enrolment code: {issued.enrolment_code}")
    print(_enrolment_note(settings.enrolment_code_ttl))
    return 0


def _enrolment_note(ttl: dt.timedelta) -> str:
    hours = ttl.total_seconds() / 3600
    lifetime = f"{hours:g} hours" if hours >= 1 else f"{ttl.total_seconds():g} seconds"
    return (f"  The enrolment code is needed once, with the password, at the first sign-in; it expires in {lifetime} "
            "(then ask for `gatepass admin user reset-totp`). Shown once: hand it over like the password.")


def _gateway_add(args: argparse.Namespace) -> int:
    from broker import admin

    token = admin.add_gateway(_settings(args), name=args.name)
    if args.json:
        print(json.dumps({"gateway": args.name, "token": token}))
    else:
        print(f"Added gateway {args.name}. Its credential (shown once; put it in the gateway's --token-file):")
        print(f"  {token}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.audit.trail import Anchor

    anchors = tuple(Anchor.parse(text) for text in args.anchor)
    verification = admin.verify_audit(_settings(args), anchors=anchors, recordings_dir=args.recordings)
    result, recordings = verification.chain, verification.recordings
    if args.json:
        print(json.dumps({"ok": verification.ok, "chain_ok": result.ok, "events_checked": result.events_checked,
                          "problem": result.problem, "first_bad_seq": result.first_bad_seq, "anchor": result.anchor,
                          "recordings_checked": recordings.checked, "recording_problems": recordings.problems}))
        return 0 if verification.ok else 1
    if result.ok:
        print(f"Audit trail intact: {result.events_checked} events, hash chain verified"
              f"{f', {len(anchors)} anchor(s) matched' if anchors else ''}.")
        print(f"Anchor (keep it outside this system; pass it to a later verify with --anchor): {result.anchor}")
    else:
        print(f"gatepass: AUDIT TRAIL BROKEN at event {result.first_bad_seq}: {result.problem} "
              f"({result.events_checked} events verified before it)", file=sys.stderr)
    for problem in recordings.problems:
        print(f"gatepass: RECORDING FAILED: {problem}", file=sys.stderr)
    if recordings.ok:
        print(f"Recordings intact: {recordings.checked} recordings checked against their recorded hashes.")
    else:
        print(f"gatepass: {recordings.checked} recordings checked, {len(recordings.problems)} problem(s) found",
              file=sys.stderr)
    return 0 if verification.ok else 1


def _forward(args: argparse.Namespace) -> int:
    import signal
    import threading

    from broker.audit import siem_forward
    from broker.db import make_engine, make_session_factory

    settings = _settings(args)
    destination = siem_forward.Destination.parse(args.to)
    if not settings.master_key_path.exists():
        raise FileNotFoundError(f"{settings.data_dir} is not a Gatepass data directory: run `gatepass init` first")
    engine = make_engine(settings.effective_database_url)
    try:
        forwarder = siem_forward.Forwarder(session_factory=make_session_factory(engine), destination=destination,
                                           clock=settings.clock, ssl_context=destination.ssl_context(args.ca_file))
        if args.once:
            try:
                sent = forwarder.drain()
            except (siem_forward.ForwardError, OSError) as error:
                print(f"gatepass: forwarding to {destination.url} stopped at event {forwarder.cursor()}: {error}",
                      file=sys.stderr)
                return 1
            print(f"Forwarded {sent} events to {destination.url}; its cursor is at event {forwarder.cursor()}.")
            return 0
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda _signum, _frame: stop.set())
        print(f"Forwarding the audit trail to {destination.url} from event {forwarder.cursor() + 1}; "
              "Ctrl-C stops.", flush=True)
        forwarder.run(stop)
        return 0
    finally:
        engine.dispose()


def _site_lockdown(args: argparse.Namespace) -> int:
    from broker import admin

    revoked = admin.lock_down_site(_settings(args), name=args.name, reason=args.reason)
    print(f"Site {args.name} is locked down: {len(revoked)} grant(s) revoked, their sessions are being cut; "
          "new requests and connections are refused until `gatepass admin site lift`.")
    return 0


def _site_lift(args: argparse.Namespace) -> int:
    from broker import admin

    admin.lift_lockdown(_settings(args), name=args.name)
    print(f"Lockdown of site {args.name} lifted: vendors may request access again.")
    return 0


def _user_disable(args: argparse.Namespace) -> int:
    from broker import admin

    revoked = admin.set_user_disabled(_settings(args), name=args.name, disabled=True)
    print(f"Disabled {args.name}: signed out everywhere, {len(revoked)} open grant(s) revoked.")
    return 0


def _user_enable(args: argparse.Namespace) -> int:
    from broker import admin

    admin.set_user_disabled(_settings(args), name=args.name, disabled=False)
    print(f"Enabled {args.name}.")
    return 0
