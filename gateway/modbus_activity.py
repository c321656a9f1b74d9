"""What a Modbus/TCP connection asked of the asset: function codes and register ranges, tallied as the client's
bytes pass and reported to the broker once when the connection ends (the watcher learns each identity's usual
Modbus use from it: a first write, or registers far from the usual ones, is a signal).

Passive: the bytes are relayed unchanged by the tunnel; this only reads the MBAP headers and the address fields of
the requests (Modbus Application Protocol Specification V1.1b3, §6). A stream that turns out not to be Modbus is
no longer tallied (on a read-write grant that is the client's business; a read-only grant closes on it in
``readonly.py``). Bounded: at most ``MAX_RANGES`` merged ranges per function code, however long the connection.
While somebody watches the tunnel, each chunk's requests also go to the live feed (``gateway/tunnel_feed.py``).
"""

from __future__ import annotations

from collections import Counter

from gateway.modbus import (
    GATEWAY_PATH_UNAVAILABLE,
    MBAP_HEADER,
    MalformedFrame,
    RefusedRequest,
    ResponseFrames,
    exception_response,
    whole_frames,
)
from gateway.readonly import ModbusReadOnlyTunnel
from gateway.tunnel_feed import modbus_frames
from gateway.tunnels import TunnelHost, TunnelSession

# One request as the watch view shows it: transaction id, unit id, function code, "0-9" / "40" / "-".
SeenRequest = tuple[int, int, int, str]

MAX_RANGES = 16
MAX_ADDRESS = 0xFFFF
# The address fields of a request PDU by function code (Application Protocol §6): (offset of the starting
# address, offset of the quantity or None for a single item). 23 (Read/Write Multiple) is tallied by what it writes.
_ADDRESSES: dict[int, tuple[int, int | None]] = {
    1: (1, 3), 2: (1, 3), 3: (1, 3), 4: (1, 3),  # reads: address, quantity
    5: (1, None), 6: (1, None), 22: (1, None),  # one coil or register
    15: (1, 3), 16: (1, 3),  # writes of several
    23: (5, 7),  # its write half: write address, write quantity
}


def _merge(ranges: list[list[int]], low: int, high: int) -> list[list[int]]:
    """``ranges`` (sorted, disjoint) with [low, high] added; adjacent or overlapping ranges become one, and past
    ``MAX_RANGES`` the two closest are joined (coarser, never lost)."""
    merged: list[list[int]] = []
    for start, end in sorted([*ranges, [low, high]]):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    while len(merged) > MAX_RANGES:
        _gap, at = min((merged[i + 1][0] - merged[i][1], i) for i in range(len(merged) - 1))
        merged[at : at + 2] = [[merged[at][0], merged[at + 1][1]]]
    return merged


def _span(code: int, pdu: bytes) -> tuple[int, int] | None:
    """The addresses a request names (first, last), or None (a function without addresses, a short frame)."""
    fields = _ADDRESSES.get(code)
    if fields is None:
        return None
    address_at, quantity_at = fields
    if len(pdu) < address_at + 2 or (quantity_at is not None and len(pdu) < quantity_at + 2):
        return None  # a short frame: its function is counted, it names no registers
    low = int.from_bytes(pdu[address_at : address_at + 2], "big")
    quantity = int.from_bytes(pdu[quantity_at : quantity_at + 2], "big") if quantity_at is not None else 1
    return low, min(low + max(quantity, 1) - 1, MAX_ADDRESS)


class ModbusActivity:
    """The running tally of one connection's requests."""

    def __init__(self) -> None:
        self._partial = b""
        self.functions: Counter[int] = Counter()
        self.ranges: dict[int, list[list[int]]] = {}
        self.not_modbus: str | None = None
        # Requests answered GATEWAY PATH UNAVAILABLE while a supervised tunnel waited (ModbusObservedTunnel).
        self.held_answers = 0
        # Set (by a watched tunnel) for one chunk: its requests, in order, for the live feed.
        self.seen: list[SeenRequest] | None = None

    @property
    def at_boundary(self) -> bool:
        """Every request so far was whole (nothing half-way): Modbus, and no partial frame waits."""
        return self.not_modbus is None and not self._partial

    def observe(self, data: bytes) -> None:
        if self.not_modbus is not None:
            return
        buffer = self._partial + data if self._partial else data
        offset = 0
        try:
            for offset, frame in whole_frames(buffer, "request"):  # noqa: B007 - offset: where the last one ended
                self._request(frame)
        except MalformedFrame as exc:
            self.not_modbus, self._partial = str(exc), b""
            return
        self._partial = bytes(buffer[offset:])

    def _request(self, adu: bytes) -> None:
        pdu = adu[MBAP_HEADER:]
        code = pdu[0]
        self.functions[code] += 1
        span = _span(code, pdu)
        if span is not None:
            self.ranges[code] = _merge(self.ranges.get(code, []), *span)
        if self.seen is not None:
            where = "-" if span is None else str(span[0]) if span[0] == span[1] else f"{span[0]}-{span[1]}"
            self.seen.append((int.from_bytes(adu[0:2], "big"), adu[6], code, where))

    def detail(self) -> dict[str, int | str]:
        """The flat facts the broker's session event carries: "3:12,6:2" and "3:0-9,100-109;6:40".

        Ranges are written as the address in the PDU (0-based), as the refusals and the protocol analysers show."""
        detail: dict[str, int | str] = {
            "requests": sum(self.functions.values()),
            "functions": ",".join(f"{code}:{count}" for code, count in sorted(self.functions.items())),
            "registers": ";".join(
                f"{code}:" + ",".join(f"{low}-{high}" if high != low else str(low) for low, high in spans)
                for code, spans in sorted(self.ranges.items())),
        }
        if self.not_modbus is not None:
            detail["not_modbus"] = self.not_modbus[:200]
        if self.held_answers:
            detail["answered_while_held"] = self.held_answers
        return detail


class ModbusObservedTunnel(TunnelSession):
    """A tunnel to a Modbus/TCP port whose requests are tallied: relayed unchanged on a read-write grant; with
    the read-only filter (``ModbusReadOnlyObservedTunnel``) refused requests are tallied too.

    Supervised and held (waiting for its first supervisor, or the last one left), it answers each request itself
    with GATEWAY PATH UNAVAILABLE and drops it, where any other tunnel holds the bytes for the release: a write the
    engineering tool sent (and gave up on) minutes before a supervisor arrived must not reach the PLC then. The
    tool hears at once that the path is not there, and asks again once it is. Held while a request was half-way
    to the PLC or an answer half-way to the client (either direction not at a frame boundary), or on a stream that
    is not Modbus, it holds the bytes like any tunnel. The PLC's answers to requests relayed before the hold are
    held and passed on at the release (a Modbus/TCP client matches answers by transaction id)."""

    def __init__(self, host: TunnelHost, session_id: str | None) -> None:
        super().__init__(host, session_id)
        self.activity = ModbusActivity()
        self._refusals: list[RefusedRequest] | None = None  # a watched chunk's refusals (the read-only filter's)
        self._waiting = b""  # the start of a request that arrived while held (at most one ADU)
        self._not_modbus_while_waiting = False
        self._answering = False  # held again at a frame boundary: requests are answered, not kept
        # Where the asset's answers end, so the gateway's own are never written into the middle of one.
        self._answers_from_asset = ResponseFrames()
        self._asset_not_modbus = False

    def target_data(self, data: bytes) -> None:
        if not self._asset_not_modbus:
            try:
                self._answers_from_asset.last_boundary(data)
            except MalformedFrame:
                self._asset_not_modbus = True  # never at a boundary again: a hold holds the bytes
        super().target_data(data)

    def _stop_relaying(self) -> None:
        super()._stop_relaying()
        both_at_boundary = self.activity.at_boundary and not self._asset_not_modbus \
            and self._answers_from_asset.at_boundary  # nothing half-way either way
        if self._transport is not None and self._chan is not None and both_at_boundary \
                and not self._not_modbus_while_waiting:
            self._answering = True
            self._chan.resume_reading()  # the asset's side stays paused: only the client is heard, and answered

    def _start_relaying(self) -> None:
        self._answering, self._waiting = False, b""  # what waited is in the held bytes, passed on now
        super()._start_relaying()

    def answer_while_held(self, data: bytes) -> bool:
        held_mid_request = self._transport is not None and not self._answering
        if self._chan is None or self._not_modbus_while_waiting or held_mid_request:
            return False  # not Modbus, or held mid-request: kept for the release, as by any tunnel
        buffer = self._waiting + data
        answers, offset = [], 0
        try:
            for offset, frame in whole_frames(buffer, "request"):  # noqa: B007 - offset: where the last one ended
                self.activity.observe(frame)  # asked, though not relayed: the baselines see it, as refused writes
                answers.append(exception_response(int.from_bytes(frame[0:2], "big"), frame[6], frame[7],
                                                  GATEWAY_PATH_UNAVAILABLE))
        except MalformedFrame:
            self._not_modbus_while_waiting, self._waiting = True, b""
            self._keep(self._held_from_client, bytes(buffer))  # what it is, the release decides (as before)
            self._chan.pause_reading()
            return True
        self._waiting = bytes(buffer[offset:])
        # Only an unanswered request's first bytes pass on at the release (its rest follows them).
        self._held_from_client, self._held_bytes = ([self._waiting] if self._waiting else []), len(self._waiting)
        if answers:
            if not self.activity.held_answers:
                self._note("gatepass: Modbus requests are answered 'gateway path unavailable' (exception 10) and "
                           "dropped until a supervisor watches")
            self.activity.held_answers += len(answers)
            self._chan.write(b"".join(answers))
        return True

    def from_client(self, data: bytes) -> None:
        feed = self.watch.feed if self.watch is not None else None
        if feed is None:  # unwatched: the tally and the relay, nothing more
            self.activity.observe(data)
            super().from_client(data)
            return
        seen: list[SeenRequest] = []
        refusals: list[RefusedRequest] = []
        self.activity.seen, self._refusals = seen, refusals
        try:
            self.activity.observe(data)
            super().from_client(data)
        finally:
            self.activity.seen = self._refusals = None
        modbus_frames(feed, seen, refusals)

    def _report(self) -> None:
        if not self._reported and self._session_id is not None and self.activity.functions:
            # Once, at the end, in the background: one event per connection, however many requests it made.
            ctx, session_id = self._host.ctx, self._session_id
            report = ctx.broker.session_event(session_id, kind="modbus_activity", detail=self.activity.detail())
            ctx.spawn(report, f"reporting the Modbus activity of session {session_id}")
        super()._report()


class ModbusReadOnlyObservedTunnel(ModbusObservedTunnel, ModbusReadOnlyTunnel):
    """The read-only filter (``readonly.py``) with the tally in front of it (method order: tally, filter, relay)."""

    def _refused(self, refused: RefusedRequest) -> None:
        if self._refusals is not None:
            self._refusals.append(refused)
        super()._refused(refused)
