"""``gatepass admin asset add|set|list|show``: the machines in a site, their services, credentials and policy."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.local_common import data_option, guarded, local_settings, print_policy_changes

if TYPE_CHECKING:
    from cli.local_common import Subparsers


def add_asset_commands(objects: Subparsers) -> None:
    """Register ``admin asset`` and its verbs."""
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
    asset_add.add_argument("--supervision", choices=["required", "optional", "site"], default="site",
                           help=SUPERVISION_HELP + " (default site)")
    data_option(asset_add)
    asset_add.set_defaults(func=guarded(_asset_add))
    asset_set = asset.add_parser("set", help="change an asset's policy (only the options given change)")
    asset_set.add_argument("name")
    _asset_policy_options(asset_set)
    asset_set.add_argument("--no-pass-env", action="store_true",
                           help="pass no client environment variable to this asset (the default)")
    asset_set.add_argument("--supervision", choices=["required", "optional", "site"], help=SUPERVISION_HELP)
    data_option(asset_set)
    asset_set.set_defaults(func=guarded(_asset_set))
    listing = asset.add_parser("list", help="the assets, with the supervision policy in force for each")
    listing.add_argument("--site", help="only this site's assets")
    listing.add_argument("--json", action="store_true", help="print a JSON list of asset records")
    data_option(listing)
    listing.set_defaults(func=guarded(_asset_list))
    show = asset.add_parser("show", help="one asset, with the supervision policy in force and where it comes from")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    data_option(show)
    show.set_defaults(func=guarded(_asset_show))


SUPERVISION_HELP = ("required: every session to this asset waits (nothing relayed) until a supervisor of its site "
                    "watches it live; optional: never; site: follow the site's policy (`admin site set --supervision`, "
                    "and high-criticality assets at sites with --supervise-high-criticality yes, the default for "
                    "new sites)")


def _asset_policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pass-env", action="append", dest="pass_env", metavar="NAME",
                        help="a client environment variable passed to this machine, by exact name, e.g. LC_ALL "
                             "(repeat for several; none by default; with `set` the list replaces the old one)")


def _asset_add(args: argparse.Namespace) -> int:
    from broker import admin

    fields: dict[str, Any] = {"name": args.name, "site": args.site, "host": args.host,
                              "criticality": args.criticality, "ssh_port": args.ssh_port, "ssh_user": args.ssh_user,
                              "host_key": args.host_key, "tcp_ports": args.tcp_ports,
                              "passed_env": args.pass_env or [], "supervision": args.supervision}
    if args.ssh_password_file:
        fields["ssh_password"] = args.ssh_password_file.read_text().rstrip("\n")
    if args.ssh_key_file:
        fields["ssh_private_key"] = args.ssh_key_file.read_text()
    if args.ssh_port is not None and not args.host_key:
        # asyncio only here: importing it costs the client commands, which share this parser, ~10 ms at start.
        import asyncio

        from cli import runtime

        key, fingerprint = asyncio.run(runtime.scan_host_key(args.host, args.ssh_port))
        fields["host_key"] = key
        print(f"Pinned the host key of {args.host}:{args.ssh_port}: {fingerprint}")
        print("  Check this fingerprint with the machine's owner before anyone connects.")
    admin.add_asset(local_settings(args), **fields)
    services = (["ssh"] if args.ssh_port else []) + [f"tcp/{p}" for p in args.tcp_ports]
    print(f"Added asset {args.name} at {args.host} in {args.site} ({', '.join(services) or 'no services'})")
    supervision = admin.show_asset(local_settings(args), name=args.name)["supervision"]
    print(f"  supervision: {supervision['text']}")
    return 0


def _asset_set(args: argparse.Namespace) -> int:
    from broker import admin

    if args.no_pass_env and args.pass_env:
        print("gatepass: give either --pass-env or --no-pass-env, not both", file=sys.stderr)
        return 2
    names = [] if args.no_pass_env else args.pass_env
    changes = admin.update_asset(local_settings(args), name=args.name, passed_env=names,
                                 supervision=args.supervision)
    print_policy_changes("Asset", args.name, changes)
    if args.supervision is not None and "supervision_in_force" not in changes:
        supervision = admin.show_asset(local_settings(args), name=args.name)["supervision"]
        print(f"Asset {args.name}: supervision in force {supervision['text']}")
    return 0


def _asset_list(args: argparse.Namespace) -> int:
    from broker import admin

    records = admin.list_assets(local_settings(args), site=args.site)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print("No assets." if args.site is None else f"No assets in {args.site}.")
    for record in records:
        print(f"{record['name']:<16} {record['site']:<12} {record['criticality']:<5} {_services(record):<20} "
              f"supervision {record['supervision']['text']}")
    return 0


def _asset_show(args: argparse.Namespace) -> int:
    from broker import admin

    record = admin.show_asset(local_settings(args), name=args.name)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(f"{record['name']} at {record['host']} in {record['site']}")
    print(f"  criticality:  {record['criticality']}")
    print(f"  services:     {_services(record)}")
    print(f"  passed env:   {', '.join(record['passed_env']) or '(none)'}")
    print(f"  supervision:  {record['supervision']['text']} (asset setting: {record['supervision']['asset_setting']})")
    return 0


def _services(record: dict[str, Any]) -> str:
    services = (["ssh"] if record["ssh_port"] else []) + [f"tcp/{port}" for port in record["tcp_ports"]]
    return ", ".join(services) or "no services"
