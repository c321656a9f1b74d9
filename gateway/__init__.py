"""Gatepass gateway: the per-plant data plane that proxies granted SSH access and cuts it on time.

Use it as ``await run_gateway(GatewaySettings(broker_url=..., token=..., host_key_path=...))``
(runs until cancelled), or, to control it step by step (tests, ``gatepass serve``)::

    gateway = Gateway(settings)
    await gateway.start()        # bind, register with the broker, follow grant events
    gateway.port                 # the bound SSH port
    gateway.host_public_key      # "ssh-ed25519 AAAA…" for clients to pin
    await gateway.stop()         # cut every connection (gateway_lost), report, close

The gateway never imports the broker: it speaks only the gateway API in docs/API.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.broker_client import BrokerClient
    from gateway.errors import (
        BrokerCallFailed,
        BrokerProtocolError,
        BrokerRefused,
        BrokerUnavailable,
        CertificateRefused,
        GatewayError,
        TargetError,
        TargetNotPinned,
        TargetUnreachable,
    )
    from gateway.server import Gateway, run_gateway
    from gateway.settings import GatewaySettings

# Where each public name lives. Imported on first use (PEP 562), so a process that needs one small module of the
# package (the recording writer, gateway.recording_worker) does not pay for asyncssh and the rest on start-up.
_HOMES = {
    "BrokerClient": "gateway.broker_client", "Gateway": "gateway.server", "run_gateway": "gateway.server",
    "GatewaySettings": "gateway.settings",
    **dict.fromkeys(("BrokerCallFailed", "BrokerProtocolError", "BrokerRefused", "BrokerUnavailable",
                     "CertificateRefused", "GatewayError", "TargetError", "TargetNotPinned", "TargetUnreachable"),
                    "gateway.errors"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


__all__ = [
    "BrokerCallFailed",
    "BrokerClient",
    "BrokerProtocolError",
    "BrokerRefused",
    "BrokerUnavailable",
    "CertificateRefused",
    "Gateway",
    "GatewayError",
    "GatewaySettings",
    "TargetError",
    "TargetNotPinned",
    "TargetUnreachable",
    "run_gateway",
]
