"""``gatepass admin gateway``: issue the credential a separately run SSH gateway signs in to the broker with (for
all sites, or only the sites it serves), list the gateways, retire one for good."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from cli.local_common import data_option, guarded, local_settings

if TYPE_CHECKING:
    from cli.local_common import Subparsers


def add_gateway_commands(objects: Subparsers) -> None:
    """Register ``admin gateway`` and its verbs."""
    gateway = objects.add_parser("gateway", help="gateway credentials").add_subparsers(dest="verb", required=True)
    gateway_add = gateway.add_parser("add", help="create a credential for a gateway")
    gateway_add.add_argument("name")
    gateway_add.add_argument("--site", action="append", default=[], metavar="SITE",
                             help="a site whose assets this gateway serves (repeatable); without it, every site. "
                                  "A gateway is handed the credentials of the assets it serves, and no others")
    gateway_add.add_argument("--json", action="store_true")
    data_option(gateway_add)
    gateway_add.set_defaults(func=guarded(_gateway_add))

    gateway_list = gateway.add_parser("list", help="the gateways, the sites they serve, their sessions")
    gateway_list.add_argument("--json", action="store_true")
    data_option(gateway_list)
    gateway_list.set_defaults(func=guarded(_gateway_list))

    gateway_retire = gateway.add_parser(
        "retire", help="withdraw a gateway's credential for good and end the sessions the broker has open on it")
    gateway_retire.add_argument("name")
    gateway_retire.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    gateway_retire.add_argument("--json", action="store_true")
    data_option(gateway_retire)
    gateway_retire.set_defaults(func=guarded(_gateway_retire))


def _gateway_add(args: argparse.Namespace) -> int:
    from broker import admin

    token = admin.add_gateway(local_settings(args), name=args.name, sites=args.site)
    if args.json:
        print(json.dumps({"gateway": args.name, "token": token, "sites": sorted(set(args.site)) or "all"}))
    else:
        served = ", ".join(sorted(set(args.site))) or "every site"
        print(f"Added gateway {args.name}, serving {served}. Its credential (shown once; put it in the gateway's "
              "--token-file):")
        print(f"  {token}")
    return 0


def _gateway_list(args: argparse.Namespace) -> int:
    from broker import admin

    rows = admin.list_gateways(local_settings(args))
    if args.json:
        print(json.dumps([row.as_dict() for row in rows]))
        return 0
    if not rows:
        print("No gateways.")
        return 0
    for row in rows:
        state = f"retired {row.retired_at:%Y-%m-%d %H:%M} UTC" if row.retired_at else (
            f"registered {row.registered_at:%Y-%m-%d %H:%M} UTC at {row.address}" if row.registered_at
            else "never registered")
        print(f"{row.name}: serves {', '.join(row.sites) or 'every site'}; {state}; {row.open_sessions} open "
              f"session(s); {row.recordings_on_gateway} recording(s) still to upload")
    return 0


def _gateway_retire(args: argparse.Namespace) -> int:
    from broker import admin

    ended = admin.retire_gateway(local_settings(args), name=args.name, reason=args.reason)
    if args.json:
        print(json.dumps({"gateway": args.name, "retired": True, "sessions_ended": ended}))
        return 0
    print(f"Retired gateway {args.name}: its credential is refused from now on.")
    if ended:
        print(f"Ended {len(ended)} session(s) the broker still had open on it (gateway_lost): {', '.join(ended)}")
    return 0
