"""``gatepass admin site add|set|lockdown|lift``: sites (plants), their access policy and their lockdown."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cli.local_common import data_option, guarded, local_settings, print_policy_changes

if TYPE_CHECKING:
    from cli.local_common import Subparsers


def add_site_commands(objects: Subparsers) -> None:
    """Register ``admin site`` and its verbs."""
    site = objects.add_parser("site", help="sites (plants)").add_subparsers(dest="verb", required=True)
    site_add = site.add_parser("add", help="add a site")
    site_add.add_argument("name")
    site_add.add_argument("--approvals-required", type=int, default=1)
    site_add.add_argument("--max-window", default="8h")
    _site_policy_options(site_add)
    site_add.add_argument("--supervise-high-criticality", choices=["yes", "no"], default="yes",
                          help=HIGH_CRITICALITY_HELP + " (default yes for a new site)")
    data_option(site_add)
    site_add.set_defaults(func=guarded(_site_add))
    site_set = site.add_parser("set", help="change a site's policy (only the options given change)")
    site_set.add_argument("name")
    site_set.add_argument("--approvals-required", type=int)
    site_set.add_argument("--max-window")
    _site_policy_options(site_set)
    site_set.add_argument("--agent-writes", choices=["on", "off"],
                          help="whether AI agents' delegated grants may write (Modbus writes, uploads) when their "
                               "sponsor allows it (default off: agents read only)")
    _governance_options(site_set)
    site_set.add_argument("--recording-retention-days", metavar="N|forever|default",
                          help="days a session's recording is kept after the session ends, then purged unless held "
                               "as evidence; 0 or 'forever' keeps them forever; 'default' follows the broker's "
                               "GATEPASS_RECORDING_RETENTION_DAYS (itself forever unless set)")
    site_set.add_argument("--supervision", choices=["required", "optional"],
                          help="required: every session waits (nothing relayed) until a supervisor of the site "
                               "watches it live, and is cut after --supervision-grace once the last one left")
    site_set.add_argument("--supervision-grace", metavar="DURATION",
                          help="how long a supervised session goes on, input held, after the last supervisor "
                               "stopped watching (5s-30m; default 60s)")
    site_set.add_argument("--supervise-high-criticality", choices=["yes", "no"], help=HIGH_CRITICALITY_HELP)
    site_set.add_argument("--silent-observers", choices=["allowed", "no"],
                          help="allowed: supervisors and security watch sessions without the vendor's terminal "
                               "announcing them; every session there then starts with a line saying so (default no)")
    site_set.add_argument("--no-maintenance-window", action="store_true",
                          help="remove every maintenance window (no request is then flagged as outside one)")
    data_option(site_set)
    site_set.set_defaults(func=guarded(_site_set))
    lockdown = site.add_parser("lockdown", help="cut all remote access into a site until lifted")
    lockdown.add_argument("name")
    lockdown.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    data_option(lockdown)
    lockdown.set_defaults(func=guarded(_site_lockdown))
    lift = site.add_parser("lift", help="lift a site's lockdown")
    lift.add_argument("name")
    data_option(lift)
    lift.set_defaults(func=guarded(_site_lift))


HIGH_CRITICALITY_HELP = ("yes: sessions to the site's high-criticality assets wait until a supervisor of the site "
                         "watches, unless an asset's own --supervision says otherwise (sites that existed before "
                         "this option have it off)")


def _site_policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--maintenance-window", action="append", dest="maintenance_windows", metavar="SPEC",
                        help='when the plant expects maintenance, in UTC, e.g. "Sat 06:00-14:00", '
                             '"Mon-Fri 22:00-02:00", "daily 12:00-13:00" (repeat for several; requests outside '
                             "are flagged to approvers; with `set` the list replaces the old one)")
    parser.add_argument("--record-input", choices=["on", "off"],
                        help="record what vendors type as well as what they see (default on)")
    parser.add_argument("--transfers", choices=["both", "download-only"],
                        help="whether SFTP/scp may write to the site's machines (default both)")
    parser.add_argument("--exec-upload-limit", metavar="SIZE",
                        help="on a download-only site, the most input a command without a terminal may take from "
                             "the vendor before it is cut as an upload, e.g. 64k or 1M (default 64k)")
    parser.add_argument("--cut-grace", metavar="DURATION",
                        help="when access ends, how long the vendor's commands on a machine get between TERM and "
                             "KILL, e.g. 2s, 500ms or 0 (at most 30s; default 2s)")


def _governance_options(parser: argparse.ArgumentParser) -> None:
    """How the identities using the site are governed (issue 11)."""
    parser.add_argument("--attestation-days", type=int, metavar="N",
                        help="re-confirm each vendor, service and AI identity using the site every N days "
                             "(7-365; default 90)")
    parser.add_argument("--attestation-overdue", choices=["suspend", "flag"],
                        help="what an overdue review does: suspend the identity (default) or only flag it")
    parser.add_argument("--owner-grace-days", type=int, metavar="N",
                        help="days a service or AI identity may outlive its owner's departure before it is "
                             "suspended (0-90; default 7)")
    parser.add_argument("--credential-max-age-days", type=int, metavar="N",
                        help="flag a password or key older than N days (1-3650; default 365)")
    parser.add_argument("--learning-days", type=int, metavar="N",
                        help="days the site's behaviour baselines learn before their flags may act (0-90; "
                             "default 14)")
    parser.add_argument("--auto-response", metavar="PLAYBOOK",
                        help='run this playbook by itself on a flag of --auto-response-severity or above ("off": '
                             "never, the default)")
    parser.add_argument("--auto-response-severity", choices=["low", "medium", "high"])
    parser.add_argument("--read-only-mode", choices=["on", "off"],
                        help="only read-only protocol access (Modbus reads) may be requested or approved there")
    parser.add_argument("--drill-site", choices=["on", "off"],
                        help="mark the site as kept for rehearsals: a playbook drill may really run there")
    parser.add_argument("--workload-credential", metavar="DURATION",
                        help="how long a service or AI identity's credential lives before it renews it, e.g. 1h "
                             "(5m-24h; default 1h)")


def _site_add(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.inventory.sites import DEFAULT_EXEC_UPLOAD_LIMIT, parse_size

    windows = args.maintenance_windows or []
    limit = DEFAULT_EXEC_UPLOAD_LIMIT if args.exec_upload_limit is None else parse_size(args.exec_upload_limit)
    admin.add_site(local_settings(args), name=args.name, approvals_required=args.approvals_required,
                   max_window=args.max_window, maintenance_windows=windows,
                   record_input=args.record_input != "off", transfers=(args.transfers or "both").replace("-", "_"),
                   exec_upload_limit=limit, cut_grace=args.cut_grace or "2s",
                   supervise_high_criticality=args.supervise_high_criticality == "yes")
    print(f"Added site {args.name} ({args.approvals_required} approval(s) required, windows up to {args.max_window})")
    if args.supervise_high_criticality == "yes":
        print("  sessions to its high-criticality assets wait for a supervisor watching "
              "(--supervise-high-criticality no to change)")
    if windows:
        print(f"  maintenance windows (UTC): {', '.join(windows)}")
    return 0


def _site_set(args: argparse.Namespace) -> int:
    from broker import admin
    from broker.inventory.sites import CLEAR, parse_size
    from broker.recordings.retention import parse_retention

    retention: object = None
    if args.recording_retention_days is not None:
        days = parse_retention(args.recording_retention_days)
        retention = CLEAR if days is None else days
    if args.no_maintenance_window and args.maintenance_windows:
        print("gatepass: give either --maintenance-window or --no-maintenance-window, not both", file=sys.stderr)
        return 2
    windows = [] if args.no_maintenance_window else args.maintenance_windows
    limit = None if args.exec_upload_limit is None else parse_size(args.exec_upload_limit)
    changes = admin.update_site(
        local_settings(args), name=args.name, approvals_required=args.approvals_required, max_window=args.max_window,
        maintenance_windows=windows,
        record_input=None if args.record_input is None else args.record_input == "on",
        transfers=None if args.transfers is None else args.transfers.replace("-", "_"), exec_upload_limit=limit,
        cut_grace=args.cut_grace, agent_writes=None if args.agent_writes is None else args.agent_writes == "on",
        attestation_days=args.attestation_days, attestation_overdue=args.attestation_overdue,
        owner_grace_days=args.owner_grace_days, credential_max_age_days=args.credential_max_age_days,
        workload_credential=args.workload_credential,
        drill_site=None if args.drill_site is None else args.drill_site == "on",
        learning_days=args.learning_days, auto_response=args.auto_response,
        auto_response_severity=args.auto_response_severity,
        read_only_mode=None if args.read_only_mode is None else args.read_only_mode == "on",
        recording_retention_days=retention,
        supervision_required=None if args.supervision is None else args.supervision == "required",
        supervision_grace=args.supervision_grace,
        silent_observers=None if args.silent_observers is None else args.silent_observers == "allowed",
        supervise_high_criticality=None if args.supervise_high_criticality is None
        else args.supervise_high_criticality == "yes")
    print_policy_changes("Site", args.name, changes)
    return 0


def _site_lockdown(args: argparse.Namespace) -> int:
    from broker import admin

    revoked = admin.lock_down_site(local_settings(args), name=args.name, reason=args.reason)
    print(f"Site {args.name} is locked down: {len(revoked)} grant(s) revoked, their sessions are being cut; "
          "new requests and connections are refused until `gatepass admin site lift`.")
    return 0


def _site_lift(args: argparse.Namespace) -> int:
    from broker import admin

    admin.lift_lockdown(local_settings(args), name=args.name)
    print(f"Lockdown of site {args.name} lifted: vendors may request access again.")
    return 0
