"""A streaming Modbus/TCP frame filter that lets reads through and answers everything else itself.

Pure and synchronous (no sockets): feed it the client's bytes as they arrive, in any split; it returns
the frames to forward to the asset, the exception responses to send back to the client, and one
record per refused request. The asset's answers go the other way untouched; ``ResponseFrames`` only
tracks where they end, so an answer made by the gateway is never spliced into the middle of one.

References:
- Modbus Messaging on TCP/IP Implementation Guide V1.0b, §3.1.3 (MBAP header: transaction id 2 B,
  protocol id 2 B = 0 for Modbus, length 2 B counting the unit id and the PDU, unit id 1 B).
- Modbus Application Protocol Specification V1.1b3, §4.1 (PDU at most 253 bytes, so an ADU on TCP is
  at most 260 bytes), §6 (function codes), §7 (exception responses: function code + 0x80, then the
  exception code; 01 = ILLEGAL FUNCTION).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from gateway.errors import GatewayError

MBAP_HEADER = 7  # transaction id, protocol id, length, unit id (Implementation Guide §3.1.3)
MAX_ADU = 260  # 7 + 253 (Application Protocol §4.1)
MIN_LENGTH = 2  # unit id + function code
MAX_LENGTH = MAX_ADU - MBAP_HEADER + 1  # the length field counts the unit id too: 254
ILLEGAL_FUNCTION = 0x01  # exception code 01 (Application Protocol §7)
# Exception code 03: "a fault in the structure of the remainder of a complex request, such as that the implied
# length is incorrect" (Application Protocol §7) — what a frame whose lengths disagree gets.
ILLEGAL_DATA_VALUE = 0x03
# Exception code 0A, GATEWAY PATH UNAVAILABLE (Application Protocol §7): "the gateway was unable to allocate an
# internal communication path" — what a request gets while a supervised Modbus tunnel waits for its supervisor.
GATEWAY_PATH_UNAVAILABLE = 0x0A
ENCAPSULATED_INTERFACE = 43  # function 43 carries several services; only MEI 14 is a read (§6.21)
READ_DEVICE_IDENTIFICATION = 0x0E

# Function codes that only read (Application Protocol §6): an allow-list, so a code the gateway does
# not know — Write File Record (21), Diagnostics (8, which can restart the device or force it to
# listen-only), Mask Write (22), Read/Write Multiple (23, it writes), vendor-defined codes — is refused.
READ_FUNCTIONS: dict[int, str] = {
    1: "Read Coils",
    2: "Read Discrete Inputs",
    3: "Read Holding Registers",
    4: "Read Input Registers",
    7: "Read Exception Status",
    11: "Get Comm Event Counter",
    12: "Get Comm Event Log",
    17: "Report Server ID",
    20: "Read File Record",
    24: "Read FIFO Queue",
}

# Names for the refusal messages and the audit trail (Application Protocol §6).
OTHER_FUNCTIONS: dict[int, str] = {
    5: "Write Single Coil",
    6: "Write Single Register",
    8: "Diagnostics",
    15: "Write Multiple Coils",
    16: "Write Multiple Registers",
    21: "Write File Record",
    22: "Mask Write Register",
    23: "Read/Write Multiple Registers",
    43: "Encapsulated Interface Transport",
}


class MalformedFrame(GatewayError):
    """The byte stream is not Modbus/TCP; the message says what was wrong."""


@dataclass(frozen=True)
class RefusedRequest:
    """One request the gateway answered itself instead of forwarding."""

    transaction_id: int
    unit_id: int
    function_code: int
    exception_code: int = ILLEGAL_FUNCTION
    # Why, when it is not "not a read": a frame whose length disagrees with its function code.
    problem: str | None = None

    @property
    def function_name(self) -> str:
        return function_name(self.function_code)

    @property
    def reason(self) -> str:
        if self.problem is not None:
            return self.problem
        return f"{self.function_name} is not a read and the grant is read-only"


@dataclass(frozen=True)
class Filtered:
    forward: bytes  # whole frames for the asset, unchanged
    answers: bytes  # exception responses for the client
    refused: tuple[RefusedRequest, ...]


def function_name(code: int) -> str:
    return READ_FUNCTIONS.get(code) or OTHER_FUNCTIONS.get(code) or f"function {code}"


def is_read(pdu: bytes) -> bool:
    """Whether a request PDU (function code first) only reads."""
    code = pdu[0]
    if code == ENCAPSULATED_INTERFACE:
        return len(pdu) > 1 and pdu[1] == READ_DEVICE_IDENTIFICATION
    return code in READ_FUNCTIONS


# Request PDU sizes (function code included) the Application Protocol defines for a fixed-size request (§6).
_FIXED_PDU = {1: 5, 2: 5, 3: 5, 4: 5, 5: 5, 6: 5, 7: 1, 11: 1, 12: 1, 17: 1, 22: 7, 24: 3}
# Requests that say their own size: the byte count's offset in the PDU and the bytes before the counted ones.
_COUNTED_PDU = {15: (5, 6), 16: (5, 6), 20: (1, 2), 21: (1, 2), 23: (9, 10)}
READ_DEVICE_IDENTIFICATION_PDU = 4  # 43/14: function, MEI type, read device id code, object id (§6.21)
FILE_SUB_REQUEST = 7  # Read File Record: reference type, file number, record number, record length (§6.14)


def defined_pdu_length(pdu: bytes) -> int | None:
    """The request PDU length its function code defines (for counted requests: as its byte count says),
    or None where the standard leaves it open (Diagnostics, other MEI types, unknown codes)."""
    code = pdu[0]
    if code in _FIXED_PDU:
        return _FIXED_PDU[code]
    if code in _COUNTED_PDU:
        offset, head = _COUNTED_PDU[code]
        return head + pdu[offset] if len(pdu) > offset else head
    if code == ENCAPSULATED_INTERFACE and len(pdu) > 1 and pdu[1] == READ_DEVICE_IDENTIFICATION:
        return READ_DEVICE_IDENTIFICATION_PDU
    return None


def length_problem(pdu: bytes) -> str | None:
    """Why a read request's framing cannot be trusted, or None. A frame's MBAP length longer than its PDU
    defines carries bytes the PLC may read as a second request (a write hidden behind a read); shorter, the PLC
    reads into whatever follows. Either way the frame is not relayed."""
    expected = defined_pdu_length(pdu)
    name = function_name(pdu[0])
    if expected is not None and len(pdu) != expected:
        return (f"{name} request of {len(pdu)} bytes where its function code defines {expected}: "
                "a frame whose lengths disagree is refused whole")
    if pdu[0] == 20 and (pdu[1] == 0 or pdu[1] % FILE_SUB_REQUEST):
        return f"{name} request whose byte count {pdu[1]} is not a whole number of 7-byte sub-requests"
    return None


def exception_response(transaction_id: int, unit_id: int, function_code: int, exception_code: int) -> bytes:
    """An MBAP-framed exception response: same transaction and unit, function | 0x80, one exception byte."""
    return (
        transaction_id.to_bytes(2, "big")
        + b"\x00\x00\x00\x03"  # protocol 0, length 3: unit id, function, exception code
        + bytes((unit_id, (function_code | 0x80) & 0xFF, exception_code))
    )


def frame_length(header: bytes | bytearray, direction: str) -> int:
    """The whole ADU's size from its first 6 bytes, or MalformedFrame."""
    protocol_id = int.from_bytes(header[2:4], "big")
    if protocol_id != 0:
        raise MalformedFrame(f"{direction} frame has protocol id {protocol_id}, not 0 (Modbus)")
    length = int.from_bytes(header[4:6], "big")
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise MalformedFrame(
            f"{direction} frame declares length {length}, outside {MIN_LENGTH}..{MAX_LENGTH} "
            f"(a Modbus/TCP ADU is at most {MAX_ADU} bytes)"
        )
    return 6 + length


def whole_frames(buffer: bytes | bytearray, direction: str) -> Iterator[tuple[int, bytes]]:
    """Each whole ADU at the start of ``buffer``, in turn, with the offset just after it (the caller keeps what
    follows the last one: a frame still arriving); MalformedFrame when a header is not Modbus/TCP's."""
    offset, end = 0, len(buffer)
    while end - offset >= 6:
        size = frame_length(buffer[offset : offset + 6], direction)
        if end - offset < size:
            return
        offset += size
        yield offset, bytes(buffer[offset - size : offset])


class RequestFilter:
    """Client → asset: forwards whole read requests of the length their function defines; answers other
    functions with ILLEGAL FUNCTION and reads whose lengths disagree with ILLEGAL DATA VALUE."""

    def __init__(self) -> None:
        # At most one partial frame (< 260 bytes) waits here between reads.
        self._partial = bytearray()

    def feed(self, data: bytes) -> Filtered:
        """Filter the next bytes from the client; raises MalformedFrame (the caller closes the connection)."""
        buffer = self._partial + data if self._partial else data
        forward: list[bytes] = []
        answers: list[bytes] = []
        refused: list[RefusedRequest] = []
        offset = 0
        for offset, frame in whole_frames(buffer, "request"):  # noqa: B007 - offset: where the last one ended
            pdu = frame[MBAP_HEADER:]
            transaction_id, unit_id, code = int.from_bytes(frame[0:2], "big"), frame[6], pdu[0]
            if not is_read(pdu):
                request = RefusedRequest(transaction_id, unit_id, code)
            elif (problem := length_problem(pdu)) is not None:
                request = RefusedRequest(transaction_id, unit_id, code, ILLEGAL_DATA_VALUE, problem)
            else:
                forward.append(frame)
                continue
            refused.append(request)
            answers.append(exception_response(transaction_id, unit_id, code, request.exception_code))
        self._partial = bytearray(buffer[offset:])
        return Filtered(b"".join(forward), b"".join(answers), tuple(refused))


class ResponseFrames:
    """Asset → client: counts bytes through the frames so the gateway knows where one ends."""

    def __init__(self) -> None:
        self._header = bytearray()  # the first bytes of a frame whose length is not known yet
        self._left = 0  # bytes of the current frame still to come, once its length is known

    @property
    def at_boundary(self) -> bool:
        return self._left == 0 and not self._header

    def last_boundary(self, data: bytes) -> int | None:
        """Advance over ``data``; the offset in it after the last complete frame, or None if none ends in it."""
        last: int | None = None
        offset, end = 0, len(data)
        while offset < end:
            if self._left:
                step = min(self._left, end - offset)
                self._left -= step
                offset += step
                if not self._left:
                    last = offset
                continue
            need = 6 - len(self._header)
            self._header += data[offset : offset + need]
            offset += min(need, end - offset)
            if len(self._header) == 6:
                self._left = frame_length(self._header, "response") - 6
                self._header.clear()
        return last
