"""Server-side subcommands (init, serve, broker, gateway, admin, audit verify/forward): wire each module's parsers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cli import audit_commands, run_commands

if TYPE_CHECKING:
    from cli.lazy import Commands


def add_subcommands(subparsers: Commands) -> None:
    """Register the server-side subcommands; each sets ``func`` to a callable taking the parsed args."""
    # The order here is the order `gatepass --help` lists them in.
    run_commands.add_run_commands(subparsers)
    _add_admin(subparsers)
    audit_commands.add_audit_commands(subparsers)


def _add_admin(subparsers: Commands) -> None:
    admin_parser = subparsers.add_parser("admin", help="manage sites, assets, users and gateways (local)")
    if not subparsers.builds("admin"):
        return  # listed only: the admin modules are imported for `gatepass admin …` alone
    from cli import (
        admin_asset_commands,
        admin_gateway_commands,
        admin_identity_commands,
        admin_playbook_commands,
        admin_recording_commands,
        admin_site_commands,
        admin_standing_commands,
        admin_user_commands,
    )

    objects = admin_parser.add_subparsers(dest="admin_object", metavar="OBJECT", required=True)
    admin_site_commands.add_site_commands(objects)
    admin_asset_commands.add_asset_commands(objects)
    admin_user_commands.add_user_commands(objects)
    admin_identity_commands.add_identity_commands(objects)
    admin_standing_commands.add_standing_commands(objects)
    admin_gateway_commands.add_gateway_commands(objects)
    admin_playbook_commands.add_playbook_commands(objects)
    admin_recording_commands.add_recording_commands(objects)
