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
