"""Gatepass gateway: the per-plant data plane that proxies granted SSH access and cuts it on time."""

from gateway.broker_client import BrokerClient
from gateway.errors import (
    BrokerError,
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
    "BrokerClient",
    "BrokerError",
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
