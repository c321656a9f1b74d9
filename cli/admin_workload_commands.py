"""``gatepass admin identity join-token|instances|lock-instance``: the machines of service and AI identities."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from cli.local_common import data_option, environ_of, guarded, local_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from broker.keys.vault import Vault
    from cli.local_common import Subparsers


def add_workload_admin_commands(verbs: Subparsers) -> None:
    """Attach the workload verbs to ``admin identity``."""
    token = verbs.add_parser("join-token", help="a single-use token (valid 1 h, shown once) with which one machine "
                             "of a service or AI identity joins (`gatepass join`)")
    token.add_argument("name")
    token.add_argument("--json", action="store_true", help='print {"username", "token", "expires_at"} as JSON')
    data_option(token)
    token.set_defaults(func=guarded(_join_token))

    listing = verbs.add_parser("instances", help="the machines (keys) an identity joined from, and their state")
    listing.add_argument("name")
    listing.add_argument("--json", action="store_true", help="print a JSON list of instances")
    data_option(listing)
    listing.set_defaults(func=guarded(_instances))

    lock = verbs.add_parser("lock-instance", help="lock one machine's credential (its siblings keep working)")
    lock.add_argument("instance", metavar="INSTANCE")
    lock.add_argument("--reason", required=True, help="why, for the audit trail")
    data_option(lock)
    lock.set_defaults(func=guarded(_lock_instance))


def _join_token(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.identity import workloads
    from cli.state import default_server

    settings = local_settings(args)
    issued = admin.run(settings, lambda session, _vault: workloads.issue_join_token(
        session, now=settings.clock.now(), actor=admin.operator_name(), username=args.name))
    if args.json:
        print(json.dumps(issued.as_dict()))
        return 0
    print(f"Join token for {issued.username} (shown once; single use; expires {issued.expires_at:%Y-%m-%d %H:%M} "
          "UTC):")
    print(f"  {issued.token}")
    print("On the machine, as the account the service runs under (the key is made there and never leaves it):")
    print(f"  gatepass join --server {default_server(environ_of(args))} --token {issued.token}")
    return 0


def _instances(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.identity import workloads
    from cli.output import table

    def read(session: Session, _vault: Vault) -> list[dict[str, Any]]:
        return [workloads.instance_record(i) for i in workloads.instances_of(session, username=args.name)]

    records = admin.run(local_settings(args), read)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print(f"{args.name} has not joined from any machine.")
        return 0
    rows = [[r["id"], r["status"], r["fingerprint"][:16], (r["created_at"] or "-")[:16],
             (r["last_renewed_at"] or "never")[:16], str(r["renewals"]), r["locked_reason"] or "-"] for r in records]
    print(table(["INSTANCE", "STATUS", "KEY SHA-256", "JOINED", "RENEWED", "RENEWALS", "LOCKED BECAUSE"], rows))
    return 0


def _lock_instance(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.identity import workloads
    from broker.inventory.gateway_events import NullPublisher

    settings = local_settings(args)

    def lock(session: Session, _vault: Vault) -> dict[str, Any]:
        # The serving brokers relay the outbox to the gateways: a revoked grant's sessions end within a second.
        return workloads.instance_record(workloads.lock_instance(
            session, now=settings.clock.now(), events=NullPublisher(), actor=admin.operator_name(),
            instance_id=args.instance, reason=args.reason))

    record = admin.run(settings, lock)
    print(f"Locked instance {record['id']} of {record['identity']}: its credentials are revoked, and grants issued "
          "for its key end; the identity's other instances keep working.")
    return 0
