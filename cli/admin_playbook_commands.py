"""``gatepass admin playbook edit``: a new version of a playbook's steps, on the data directory (audited)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cli.local_common import data_option, guarded, local_settings

if TYPE_CHECKING:
    from cli.local_common import Subparsers

# The broker's respond.playbooks.Step, written out so `--help` does not import the broker (a test keeps them equal).
STEPS = ("lock_down_site", "revoke_site_grants", "site_read_only", "suspend_recent_identities", "suspend_identity",
         "reset_second_factor", "preserve_evidence", "notify")


def add_playbook_commands(objects: Subparsers) -> None:
    playbook = objects.add_parser("playbook", help="edit the containment playbooks (each edit is a new version)")
    verbs = playbook.add_subparsers(dest="verb", required=True)
    change = verbs.add_parser("edit", help="give a playbook new steps (a new version; the old ones stay in the trail)")
    change.add_argument("name")
    change.add_argument("--steps", required=True, metavar="STEP,STEP,…",
                        help=f"the steps in order, from: {', '.join(STEPS)}")
    change.add_argument("--description", help="when to run it (required for a new playbook)")
    data_option(change)
    change.set_defaults(func=guarded(_edit))


def _edit(args: argparse.Namespace) -> int:
    from broker import admin

    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    version = admin.edit_playbook(local_settings(args), name=args.name, steps=steps, description=args.description)
    print(f"Playbook {args.name} is now version {version}: {', '.join(steps)}")
    return 0
