"""``gatepass admin user add|set|reset-totp|disable|enable``: people, service accounts and AI agents."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from cli.admin_identity_commands import parse_end_date
from cli.local_common import data_option, enrolment_note, guarded, local_settings

if TYPE_CHECKING:
    from cli.local_common import Subparsers


def add_user_commands(objects: Subparsers) -> None:
    """Register ``admin user`` and its verbs."""
    user = objects.add_parser("user", help="people, service accounts and AI agents").add_subparsers(
        dest="verb", required=True)
    user_add = user.add_parser("add", help="add a user")
    user_add.add_argument("name")
    user_add.add_argument("--role", required=True, choices=["vendor", "supervisor", "security", "admin"])
    user_add.add_argument("--site", action="append", default=[], dest="sites")
    user_add.add_argument("--org")
    user_add.add_argument("--kind", choices=["human", "service", "ai_agent"], default="human")
    user_add.add_argument("--owner", help="the accountable person (required for service and AI-agent identities)")
    user_add.add_argument("--sponsor", help="for an AI agent (required): the person whose grants it may be "
                          "delegated (`gatepass delegate`)")
    user_add.add_argument("--purpose")
    user_add.add_argument("--email", help="where this person's notifications go (new requests at their sites)")
    user_add.add_argument("--expires", type=parse_end_date, metavar="DATE",
                          help="its end date (default: a year for vendors, service and AI identities)")
    user_add.add_argument("--json", action="store_true")
    data_option(user_add)
    user_add.set_defaults(func=guarded(_user_add))
    user_set = user.add_parser("set", help="change a user's e-mail address")
    user_set.add_argument("name")
    user_set.add_argument("--email", required=True, help='the new address ("" removes it)')
    data_option(user_set)
    user_set.set_defaults(func=guarded(_user_set))
    reset = user.add_parser("reset-totp", help="issue a new TOTP secret (signs the user out everywhere); they "
                            "confirm it with a code at their next sign-in")
    reset.add_argument("name")
    reset.add_argument("--json", action="store_true",
                       help='print {"username", "totp_secret", "enrolment_code"} as JSON')
    data_option(reset)
    reset.set_defaults(func=guarded(_user_reset_totp))
    for verb, help_text in (("disable", "disable a user: signed out, open grants revoked, sessions cut"),
                            ("enable", "enable a disabled user again")):
        toggle = user.add_parser(verb, help=help_text)
        toggle.add_argument("name")
        data_option(toggle)
        toggle.set_defaults(func=guarded(_user_disable if verb == "disable" else _user_enable))


def _user_add(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.identity.totp import provisioning_uri

    settings = local_settings(args)
    creds = admin.add_user(settings, username=args.name, role=args.role, kind=args.kind,
                           site_names=args.sites, organisation=args.org, owner=args.owner, purpose=args.purpose,
                           email=args.email, expires_at=args.expires, sponsor=args.sponsor)
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
        print(enrolment_note(settings.enrolment_code_ttl))
        print("  At the first web sign-in (password and enrolment code, One-time code left empty) the user sees "
              "this secret as a QR code and confirms it with a code; `gatepass login --enrolment-code CODE --totp "
              "CODE` confirms it too.")
    return 0


def _user_set(args: argparse.Namespace) -> int:
    from broker import admin

    admin.set_user_email(local_settings(args), name=args.name, email=args.email.strip() or None)
    print(f"{args.name}: e-mail {'set to ' + args.email.strip() if args.email.strip() else 'removed'}.")
    return 0


def _user_reset_totp(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.identity.totp import provisioning_uri

    settings = local_settings(args)
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
    print(enrolment_note(settings.enrolment_code_ttl))
    return 0


def _user_disable(args: argparse.Namespace) -> int:
    from broker import admin

    revoked = admin.set_user_disabled(local_settings(args), name=args.name, disabled=True)
    print(f"Disabled {args.name}: signed out everywhere, {len(revoked)} open grant(s) revoked.")
    return 0


def _user_enable(args: argparse.Namespace) -> int:
    from broker import admin

    admin.set_user_disabled(local_settings(args), name=args.name, disabled=False)
    print(f"Enabled {args.name}.")
    return 0
