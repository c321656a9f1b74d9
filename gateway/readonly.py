"""A forwarded Modbus/TCP connection under a read-only grant: reads relayed, everything else answered here.

The client's requests go through ``modbus.RequestFilter``; a refused request gets an ILLEGAL FUNCTION
exception response from the gateway (Modbus Application Protocol Specification V1.1b3, §7) and one
``modbus_write_refused`` event to the broker's audit trail — so does a read whose frame length disagrees with
what its function code defines (ILLEGAL DATA VALUE, the reason saying so): it could hide a write behind a
read. Framing that is not Modbus/TCP closes the connection (fail closed): a read-only grant is never relayed
unfiltered.
"""

from __future__ import annotations

from gateway.modbus import MalformedFrame, RefusedRequest, RequestFilter, ResponseFrames
from gateway.tunnels import TunnelHost, TunnelSession, logger

# Refusals reported one by one per connection; a tool retrying a write in a loop must not flood the
# audit trail (the log still counts them all).
MAX_REPORTED_REFUSALS = 100


class ModbusReadOnlyTunnel(TunnelSession):
    """``TunnelSession`` with a Modbus/TCP request filter in the client → asset direction."""

    def __init__(self, host: TunnelHost, session_id: str | None) -> None:
        super().__init__(host, session_id)
        self._requests = RequestFilter()
        self._responses = ResponseFrames()
        self._pending_answers = b""  # waits for the end of the asset's frame in flight
        self.refusals = 0

    def from_client(self, data: bytes) -> None:
        self.bytes_in += len(data)
        try:
            filtered = self._requests.feed(data)
        except MalformedFrame as exc:
            self._malformed(str(exc))
            return
        if filtered.forward and self._transport is not None:
            self._transport.write(filtered.forward)
        for refused in filtered.refused:
            self._refused(refused)
        if filtered.answers:
            if self._responses.at_boundary and not self._pending_answers:
                self._to_client(filtered.answers)
            else:
                self._pending_answers += filtered.answers

    def target_data(self, data: bytes) -> None:
        try:
            boundary = self._responses.last_boundary(data)
        except MalformedFrame as exc:
            self._malformed(str(exc))
            return
        if self._pending_answers and boundary is not None:
            data = data[:boundary] + self._pending_answers + data[boundary:]
            self._pending_answers = b""
        self._to_client(data)

    def _to_client(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self._chan is not None:
            self._chan.write(data)

    def _refused(self, refused: RefusedRequest) -> None:
        self.refusals += 1
        logger.info(
            "Modbus request refused on read-only session %s: %s (function %d), unit %d, transaction %d",
            self._session_id, refused.function_name, refused.function_code, refused.unit_id,
            refused.transaction_id,
        )  # fmt: skip
        if self._session_id is None or self.refusals > MAX_REPORTED_REFUSALS:
            if self.refusals == MAX_REPORTED_REFUSALS + 1:
                logger.warning("session %s: further Modbus refusals are logged only", self._session_id)
            return
        detail: dict[str, int | str | bool] = {
            "function_code": refused.function_code,
            "function": refused.function_name,
            "unit_id": refused.unit_id,
            "transaction_id": refused.transaction_id,
            "exception_code": refused.exception_code,
            "reason": refused.reason,
        }
        ctx = self._host.ctx
        report = ctx.broker.session_event(self._session_id, kind="modbus_write_refused", detail=detail)
        ctx.spawn(report, f"reporting a refused Modbus request on session {self._session_id}")

    def _malformed(self, why: str) -> None:
        logger.warning("closing read-only Modbus/TCP session %s: %s", self._session_id, why)
        if self._error is None:
            self._error = f"connection closed: {why}, and a read-only grant is never relayed unfiltered"
        self.terminate()
