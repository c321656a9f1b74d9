"""``gatepass admin asset add|set|list|show|scan|rotate``: the machines in a site, their services, credentials and
policy."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.local_common import data_option, guarded, local_settings, print_policy_changes, terminal_text

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

    scan = asset.add_parser(
        "scan", help="compare the SSH host key an asset presents now with the pinned one (--pin: pin the new one)",
        description="Reads the host key the asset's SSH service presents now and compares it with the one pinned "
                    "in the inventory. The asset is reached from the machine this command runs on (like `asset "
                    "add` without --host-key), not through a gateway. Exit 0: the keys match (or --pin pinned the "
                    "new one); 1: they differ or the asset cannot be scanned. Nothing changes without --pin.")
    scan.add_argument("name")
    scan.add_argument("--pin", action="store_true",
                      help="pin the presented key if it differs (audited); check its fingerprint with the machine's "
                           "owner first")
    scan.add_argument("--json", action="store_true",
                      help='print {"asset", "host", "port", "pinned", "presented", "matches", "pinned_now"}')
    data_option(scan)
    scan.set_defaults(func=guarded(_asset_scan))
    rotate = asset.add_parser(
        "rotate", help="give an asset's SSH service a new credential, proven to log in before the vault holds it",
        description="With --ssh-key-file or --ssh-password-file: you already set the new credential on the machine; "
                    "Gatepass checks that it logs in (pinned host key enforced), then vaults it. With neither (the "
                    "vault holds a key): Gatepass generates an Ed25519 key, adds it to the login's authorized_keys "
                    "over SFTP, checks it logs in, vaults it, then removes the old key's line and checks the old key "
                    "is refused. The new key exists only in the vault. The asset is reached from the machine this "
                    "command runs on, not through a gateway. Running sessions go on; the next login through a "
                    "gateway uses the new credential. Audited. The vault takes the new credential only once it has "
                    "logged in; until then, whatever fails, it keeps the old one.")
    rotate.add_argument("name")
    new_credential = rotate.add_mutually_exclusive_group()
    new_credential.add_argument("--ssh-key-file", type=Path, metavar="FILE",
                                help="a private key already authorised on the machine for the asset's SSH user")
    new_credential.add_argument("--ssh-password-file", type=Path, metavar="FILE",
                                help="a file holding the password already set on the machine for the asset's SSH user")
    rotate.add_argument("--authorized-keys", default=".ssh/authorized_keys", metavar="PATH",
                        help="the authorized_keys file Gatepass edits when it generates the key, absolute or relative "
                             "to the login's home (default .ssh/authorized_keys; unused with a credential file)")
    rotate.add_argument("--json", action="store_true", help="print what was done as a JSON object (never a secret)")
    data_option(rotate)
    rotate.set_defaults(func=guarded(_asset_rotate))

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

        from broker.inventory.asset_credentials import fingerprint
        from broker.inventory.target_access import presented_host_key

        key = asyncio.run(presented_host_key(host=args.host, port=args.ssh_port))
        fields["host_key"] = key
        print(f"Pinned the host key of {args.host}:{args.ssh_port}: {fingerprint(key)}")
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


def _asset_scan(args: argparse.Namespace) -> int:
    from broker import admin

    result = admin.scan_asset(local_settings(args), name=args.name, pin=args.pin)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
        return 0 if result.matches or result.pinned_now else 1
    shown = result.as_json()
    pinned, presented = shown["pinned"], shown["presented"]
    where = f"{result.asset} ({result.host}:{result.port})"
    print(f"{where}, read from this machine:")
    print(f"  pinned:    {pinned['fingerprint']} ({pinned['key'].split()[0]})")
    print(f"  presented: {presented['fingerprint']} ({presented['key'].split()[0]})")
    if result.matches:
        print("  matches: the machine presents the pinned host key.")
        return 0
    if result.pinned_now:
        print(f"Pinned the presented key for {result.asset}: gateways check the machine against it from the next "
              "login on.")
        return 0
    print(f"gatepass: {where} presents ANOTHER host key than the one pinned for it. Either the machine was "
          "reinstalled or re-keyed, or something between here and the machine answers in its place. Until this is "
          "settled the gateway refuses to log in to it.\n"
          f"  Check the presented fingerprint with the machine's owner (on the machine: ssh-keygen -lf "
          f"/etc/ssh/ssh_host_*_key.pub). If it is the machine's own key: "
          f"gatepass admin asset scan {result.asset} --pin\n"
          "  Nothing was changed.", file=sys.stderr)
    return 1


def _asset_rotate(args: argparse.Namespace) -> int:
    from broker import admin

    key = args.ssh_key_file.read_text() if args.ssh_key_file else None
    password = args.ssh_password_file.read_text().rstrip("\n") if args.ssh_password_file else None
    done = admin.rotate_asset_credential(local_settings(args), name=args.name, ssh_private_key=key,
                                         ssh_password=password, authorized_keys=args.authorized_keys)
    if args.json:
        print(json.dumps(done.as_json(), indent=2))
        return 0
    # The file's path and the warning come from the machine (its SFTP server's answers): never raw to the terminal.
    if done.method == "generated":
        _say(f"Rotated the SSH key of {done.asset}: Gatepass generated a new one.")
        _say(f"  new key: {done.fingerprint} (ssh-ed25519), added to {done.authorized_keys}; it logs in")
        removed = ("no line of it was in that file" if done.old_lines_removed == 0 else
                   "its line could not be removed" if done.old_lines_removed is None else
                   f"{done.old_lines_removed} line(s) removed from {done.authorized_keys}")
        refused = (" the machine now refuses it" if done.old_key_still_logs_in is False else "")
        _say(f"  old key: {done.old_fingerprint}, {removed};{refused or ' see the warning below'}")
    else:
        kind = "key " + str(done.fingerprint) if done.fingerprint else "password"
        _say(f"Rotated the SSH credential of {done.asset}: the {kind} you gave logs in and is in the vault now.")
    _say("  The vault holds the new credential: the next login through a gateway uses it; sessions already "
         "running go on.")
    if done.warning:
        _say(f"gatepass: WARNING: {done.warning}", file=sys.stderr)
    return 0


def _say(text: str, **options: Any) -> None:
    print(terminal_text(text), **options)


def _services(record: dict[str, Any]) -> str:
    services = (["ssh"] if record["ssh_port"] else []) + [f"tcp/{port}" for port in record["tcp_ports"]]
    return ", ".join(services) or "no services"
