"""Which OT protocol a granted TCP port speaks, for the protocol-aware (read-only) grants."""

from __future__ import annotations

MODBUS_TCP = "Modbus/TCP"

# IANA registered ports. Only protocols the gateway can filter are listed: a read-only grant on any
# other port is refused, never relayed unfiltered.
PROTOCOL_BY_PORT: dict[int, str] = {502: MODBUS_TCP}


def protocol_of(port: int) -> str | None:
    return PROTOCOL_BY_PORT.get(port)


def read_only_refusal(port: int) -> str | None:
    """Why a read-only grant cannot reach ``port``, or None if the gateway can enforce read-only there."""
    if protocol_of(port) == MODBUS_TCP:
        return None
    filterable = ", ".join(f"{name} (port {p})" for p, name in sorted(PROTOCOL_BY_PORT.items()))
    return f"read-only access is only available for {filterable}, not port {port}"
