"""File transfer inspection (SFTP, scp). Placeholder until the inspector lands: inspects nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.taps import ChannelTap, SessionInfo

if TYPE_CHECKING:
    from gateway.context import GatewayContext


def open_inspector(ctx: GatewayContext, info: SessionInfo) -> ChannelTap | None:  # noqa: ARG001 - placeholder
    """A tap for sftp sessions and scp commands; None for anything else."""
    return None
