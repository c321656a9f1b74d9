"""``gatepass init``, ``serve``, ``broker`` and ``gateway``: make the data directory, run the services on it."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cli.local_common import ContextClock, data_option, enrolment_note, environ_of, guarded, local_settings

if TYPE_CHECKING:
    from assembly.settings import AppSettings
    from cli.local_common import Subparsers


def add_run_commands(subparsers: Subparsers) -> None:
    """Register ``init``, ``serve``, ``broker`` and ``gateway``."""
    init = subparsers.add_parser("init", help="create the data directory, database, CAs and first admin")
    data_option(init)
    init.add_argument("--json", action="store_true", help="print the admin's credentials as JSON")
    init.set_defaults(func=guarded(_init))

    serve = subparsers.add_parser("serve", help="run broker, web and SSH gateway in one process")
    data_option(serve)
    serve.add_argument("--http", help="web + API address (default $GATEPASS_HTTP or 127.0.0.1:8080)")
    serve.add_argument("--ssh", help="SSH gateway address (default $GATEPASS_SSH or 127.0.0.1:2222)")
    serve.add_argument("--demo", action="store_true", help="add a demo plant, users and a built-in demo machine")
    serve.set_defaults(func=guarded(_serve))

    broker = subparsers.add_parser("broker", help="run the broker (API + web) alone, for production")
    data_option(broker)
    broker.add_argument("--http", help="web + API address (default $GATEPASS_HTTP or 127.0.0.1:8080)")
    broker.set_defaults(func=guarded(_broker))

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
    gateway.add_argument("--keep-recordings", action="store_true",
                         help="keep recordings here instead of uploading each to the broker when its session ends "
                              "(only where the broker reads this directory itself)")
    gateway.add_argument("--recording-reserve", metavar="SIZE",
                         help="free space kept on the recordings disk, e.g. 256M or 1G (default "
                              "$GATEPASS_RECORDING_RESERVE or 256M; 0: none): below it new recorded sessions are "
                              "refused, below half of it the session writing the most is ended")
    gateway.set_defaults(func=guarded(_gateway))


def _init(args: argparse.Namespace) -> int:
    import json

    from assembly.database import initialise
    from broker.identity.totp import provisioning_uri

    settings = local_settings(args)
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
    print(enrolment_note(settings.enrolment_code_ttl))
    print("Next: `gatepass serve` (add --demo for a demo plant with a built-in machine).")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from cli import runtime

    settings = _app_settings(args)
    return runtime.run_forever(runtime.serve(settings, demo=args.demo,
                                             recording_reserve=recording_reserve(environ_of(args))))


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
        overrides["clock"] = ContextClock(context.clock)
    return load(environ_of(args), data_dir=getattr(args, "data", None), **overrides)


def recording_reserve(environ: Mapping[str, str], flag: str | None = None) -> int:
    """Free space the gateway keeps on its recordings disk: --recording-reserve, else $GATEPASS_RECORDING_RESERVE
    (256M, 1G; 0 for none), else 256 MiB."""
    from broker.errors import InvalidInput
    from broker.inventory.sites import parse_size
    from gateway.settings import DEFAULT_RECORDING_RESERVE

    source = "--recording-reserve" if flag is not None else "GATEPASS_RECORDING_RESERVE"
    text = (flag if flag is not None else environ.get("GATEPASS_RECORDING_RESERVE", "")).strip()
    try:
        return parse_size(text) if text else DEFAULT_RECORDING_RESERVE
    except InvalidInput as exc:  # say which setting: the operator may not know the environment carries one
        raise InvalidInput(f"{source}: {exc.message}; nothing was started") from None


def _gateway(args: argparse.Namespace) -> int:
    from broker.settings import split_address
    from cli import runtime

    reserve = recording_reserve(environ_of(args), args.recording_reserve)
    host, port = split_address(args.ssh or os.environ.get("GATEPASS_SSH", "127.0.0.1:2222"), what="SSH")
    token = args.token_file.read_text().strip()
    return runtime.run_forever(runtime.run_gateway_only(broker_url=args.broker, token=token, host=host, port=port,
                                                host_key_path=args.host_key, public_host=args.public_host,
                                                recordings_dir=args.recordings.absolute(),
                                                upload_recordings=not args.keep_recordings,
                                                recording_reserve=reserve))
