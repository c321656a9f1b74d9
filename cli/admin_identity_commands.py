"""``gatepass admin identity list|show|suspend|resume|retire|set|report|sweep``: every identity governed, locally."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cli.admin_workload_commands import add_workload_admin_commands
from cli.local_common import data_option, guarded, local_settings

if TYPE_CHECKING:
    from cli.local_common import Subparsers

KINDS = ("human", "service", "ai_agent")
FLAGS = ("no_owner", "owner_inactive", "unused_90_days", "attestation_overdue", "expiring_within_14_days",
         "credential_older_than_policy", "human_with_standing_access")
STATUSES = ("active", "suspended", "retired", "expired")

# Other slices of the identity work attach their verbs here (join tokens and workload instances).
EXTRA_VERBS: list[Callable[[Subparsers], None]] = [add_workload_admin_commands]


def parse_end_date(text: str) -> dt.datetime:
    """``2027-06-30`` (the end of that day, UTC) or an ISO 8601 time with its offset."""
    try:
        if len(text) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(23, 59, 59), tzinfo=dt.UTC)
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date: give 2027-06-30 or 2027-06-30T18:00Z") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def add_identity_commands(objects: Subparsers) -> None:
    """Register ``admin identity`` and its verbs."""
    identity = objects.add_parser("identity", help="the inventory of identities: list, review, suspend, retire")
    verbs = identity.add_subparsers(dest="verb", required=True)

    listing = verbs.add_parser("list", help="every identity with its flags (computed now)")
    listing.add_argument("--kind", choices=KINDS)
    listing.add_argument("--flag", choices=FLAGS, help="only identities with this flag")
    listing.add_argument("--status", choices=STATUSES)
    shape = listing.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print a JSON list of identity records")
    shape.add_argument("--csv", action="store_true", help="print CSV (RFC 4180) for a spreadsheet")
    data_option(listing)
    listing.set_defaults(func=guarded(_list))

    show = verbs.add_parser("show", help="one identity in full")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    data_option(show)
    show.set_defaults(func=guarded(_show))

    for verb, text in (("suspend", "stop it now: signed out, grants ended, sessions cut within a second"),
                       ("resume", "bring a suspended identity back"),
                       ("retire", "end it for good (final; the name is never reused); cuts like suspend")):
        change = verbs.add_parser(verb, help=text)
        change.add_argument("name")
        change.add_argument("--reason", required=True, help="why, for the audit trail")
        data_option(change)
        change.set_defaults(func=guarded(_change), verb_name=verb)

    update = verbs.add_parser("set", help="give an identity a new owner or end date")
    update.add_argument("name")
    update.add_argument("--owner", help="the accountable person (an active human user)")
    update.add_argument("--expires", type=parse_end_date, metavar="DATE",
                        help="its end date (service and AI identities: at most a year ahead)")
    update.add_argument("--no-expiry", action="store_true", help="remove a person's end date")
    data_option(update)
    update.set_defaults(func=guarded(_set))

    report = verbs.add_parser("report", help="every access review: who reviewed what, when, and the outcome")
    shape = report.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true")
    shape.add_argument("--csv", action="store_true")
    data_option(report)
    report.set_defaults(func=guarded(_report))

    sweep = verbs.add_parser("sweep", help="apply end dates, missing owners and overdue reviews now (the broker "
                                           "does this by itself every minute)")
    data_option(sweep)
    sweep.set_defaults(func=guarded(_sweep))

    for attach in EXTRA_VERBS:
        attach(verbs)


def _list(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.identity import inventory

    records = admin.list_identities(local_settings(args), kind=args.kind, flag=args.flag, status=args.status)
    if args.json:
        print(json.dumps([record.as_dict() for record in records], indent=2))
    elif args.csv:
        print(inventory.as_csv(records), end="")
    else:
        print(_table(records))
    return 0


def _table(records: list[Any]) -> str:
    from cli.output import table

    if not records:
        return "No identities."
    rows = [[r.username, r.kind, r.status, ",".join(r.roles), r.owner or "-", (r.last_used_at or "never")[:10],
             (r.expires_at or "-")[:10], (r.attestation_due_at or "-")[:10], ", ".join(r.flags) or "-"]
            for r in records]
    return table(["NAME", "KIND", "STATUS", "ROLES", "OWNER", "LAST USED", "EXPIRES", "REVIEW DUE", "FLAGS"], rows)


def _show(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.identity.inventory import FLAG_TEXT, Flag

    record = admin.show_identity(local_settings(args), name=args.name)
    if args.json:
        print(json.dumps(record.as_dict(), indent=2))
        return 0
    values = record.as_dict()
    for key, value in values.items():
        if key == "flags":
            value = "; ".join(FLAG_TEXT[Flag(f)] for f in value) or "none"
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        print(f"{key.replace('_', ' '):>20}: {value if value is not None else '-'}")
    return 0


def _change(args: argparse.Namespace) -> int:
    from broker import admin

    done = admin.change_identity_state(local_settings(args), name=args.name, verb=args.verb_name, reason=args.reason)
    cut = f"; {len(done.grants_revoked)} grant(s) revoked, their sessions end within a second" \
        if done.grants_revoked else ""
    print(f"{done.username}: {done.was} -> {done.now}{cut}")
    return 0


def _set(args: argparse.Namespace) -> int:
    from broker import admin

    if args.owner is None and args.expires is None and not args.no_expiry:
        print("gatepass: nothing to change: give --owner, --expires or --no-expiry")
        return 2
    admin.set_identity(local_settings(args), name=args.name, owner=args.owner, expires_at=args.expires,
                       clear_expiry=args.no_expiry)
    print(f"{args.name}: updated")
    return 0


def _report(args: argparse.Namespace) -> int:
    import csv
    import io

    from broker import admin

    rows = admin.review_report(local_settings(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["identity", "kind", "reviewer", "outcome", "comment", "decided_at"],
                                lineterminator="\r\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v) for k, v in row.items()})
        print(out.getvalue(), end="")
        return 0
    for row in rows:
        print(f"{row['decided_at'][:16]}  {row['identity']} ({row['kind']}) {row['outcome']} by {row['reviewer']}: "
              f"{row['comment']}")
    if not rows:
        print("No reviews yet.")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from broker import admin

    for line in admin.sweep_identities(local_settings(args)) or ["Nothing to do."]:
        print(line)
    return 0
