"""Session recordings (asciicast v2). Placeholder until the recorder lands: records nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.taps import ChannelTap, PassThrough, SessionInfo

if TYPE_CHECKING:
    from gateway.context import GatewayContext


def open_recorder(ctx: GatewayContext, info: SessionInfo) -> ChannelTap:  # noqa: ARG001 - placeholder
    return PassThrough()
