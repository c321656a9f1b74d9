"""``gatepass admin gateway add``: issue the credential a separately run SSH gateway signs in to the broker with."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from cli.local_common import data_option, guarded, local_settings

if TYPE_CHECKING:
    from cli.local_common import Subparsers


def add_gateway_commands(objects: Subparsers) -> None:
    """Register ``admin gateway`` and its verb."""
    gateway = objects.add_parser("gateway", help="gateway credentials").add_subparsers(dest="verb", required=True)
    gateway_add = gateway.add_parser("add", help="create a credential for a gateway")
    gateway_add.add_argument("name")
    gateway_add.add_argument("--json", action="store_true")
    data_option(gateway_add)
    gateway_add.set_defaults(func=guarded(_gateway_add))


def _gateway_add(args: argparse.Namespace) -> int:
    from broker import admin

    token = admin.add_gateway(local_settings(args), name=args.name)
    if args.json:
        print(json.dumps({"gateway": args.name, "token": token}))
    else:
        print(f"Added gateway {args.name}. Its credential (shown once; put it in the gateway's --token-file):")
        print(f"  {token}")
    return 0
