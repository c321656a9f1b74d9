"""``gatepass admin standing add|list|revoke``: standing access for a service identity, approved once, bounded."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from cli.admin_identity_commands import parse_end_date
from cli.local_common import data_option, guarded, local_settings

if TYPE_CHECKING:
    from cli.local_common import Subparsers


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a TCP port: write a number from 1 to 65535")
    return int(text)


def add_standing_commands(objects: Subparsers) -> None:
    """Register ``admin standing`` and its verbs."""
    standing = objects.add_parser("standing", help="standing access for automation: approved once, each use "
                                  "a short-lived grant").add_subparsers(dest="verb", required=True)
    add = standing.add_parser(
        "add", help="approve standing access for a service identity to one asset",
        description="Each `gatepass request` of IDENTITY for ASSET that this covers (inside a window, services "
        "within it) is granted at once for at most an hour and audited as a use; anything else goes to the plant.")
    add.add_argument("identity", metavar="IDENTITY")
    add.add_argument("--asset", required=True)
    add.add_argument("--ssh", action="store_true", help="SSH commands and SFTP (never a terminal)")
    add.add_argument("--port", dest="ports", metavar="N", type=_port, nargs="+", action="extend", default=[])
    add.add_argument("--read-only", action="store_true", help="Modbus/TCP (502) reads only")
    add.add_argument("--window", "--windows", dest="windows", action="append", default=[], metavar="SPEC",
                     help='when it may be used, in UTC, e.g. "Mon-Fri 06:00-18:00" (repeat for several; none: '
                          "at any time)")
    add.add_argument("--until", required=True, type=parse_end_date, metavar="DATE",
                     help="its end, at most 90 days ahead (2027-02-28, or an ISO time)")
    add.add_argument("--json", action="store_true")
    data_option(add)
    add.set_defaults(func=guarded(_add))
    listing = standing.add_parser("list", help="standing policies (of one identity)")
    listing.add_argument("identity", metavar="IDENTITY", nargs="?")
    listing.add_argument("--json", action="store_true")
    data_option(listing)
    listing.set_defaults(func=guarded(_list))
    revoke = standing.add_parser("revoke", help="end a standing policy now (its open grants too)")
    revoke.add_argument("policy", metavar="POLICY_ID")
    revoke.add_argument("--reason", required=True, help="why, for the audit trail")
    data_option(revoke)
    revoke.set_defaults(func=guarded(_revoke))


def _add(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.access import standing

    settings = local_settings(args)
    view = admin.run(settings, lambda session, _vault: standing.policy_view(standing.approve_policy(
        session, now=settings.clock.now(), actor=admin.operator_name(), username=args.identity, asset_name=args.asset,
        ssh=args.ssh, ports=args.ports, read_only=args.read_only, windows=args.windows, ends_at=args.until),
        settings.clock.now()))
    if args.json:
        print(json.dumps(view))
        return 0
    services = (["SSH"] if view["ssh"] else []) + [f"port {port}" for port in view["ports"]]
    print(f"Standing policy {view['id']}: {view['identity']} may use {', '.join(services)} of {view['asset']}"
          f"{' read-only' if view['read_only'] else ''} {_when(view['windows'])} until {view['ends_at'][:16]} UTC; "
          "each use is a grant of at most an hour.")
    return 0


def _when(windows: list[str]) -> str:
    return f"within {', '.join(windows)} (UTC)" if windows else "at any time"


def _list(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.access import standing

    settings = local_settings(args)
    with admin.local_session(settings, read_only=True) as session:
        views = [standing.policy_view(policy, settings.clock.now())
                 for policy in standing.policies(session, username=args.identity)]
    if args.json:
        print(json.dumps(views))
        return 0
    if not views:
        print("No standing policies.")
    for view in views:
        services = (["ssh"] if view["ssh"] else []) + [str(port) for port in view["ports"]]
        print(f"{view['id']}  {view['status']:<7}  {view['identity']} -> {view['asset']} ({', '.join(services)}"
              f"{', read-only' if view['read_only'] else ''}) {_when(view['windows'])} until {view['ends_at'][:16]}; "
              f"approved by {view['approved_by']}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.access import standing
    from broker.inventory.gateway_events import NullPublisher

    settings = local_settings(args)
    admin.run(settings, lambda session, _vault: standing.revoke_policy(
        session, now=settings.clock.now(), events=NullPublisher(), actor=admin.operator_name(),
        policy_id=args.policy, reason=args.reason))
    print(f"Standing policy {args.policy} revoked; its open grants are revoked and their sessions are being cut.")
    return 0
