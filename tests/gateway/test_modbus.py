"""The Modbus/TCP request filter: framing across reads, reads forwarded, everything else answered."""

from __future__ import annotations

import pytest

from gateway.modbus import (
    MAX_ADU,
    MalformedFrame,
    RefusedRequest,
    RequestFilter,
    ResponseFrames,
    exception_response,
)
from gateway.protocols import read_only_refusal


def frame(transaction: int, unit: int, pdu: bytes, *, protocol: int = 0, length: int | None = None) -> bytes:
    size = len(pdu) + 1 if length is None else length
    return transaction.to_bytes(2, "big") + protocol.to_bytes(2, "big") + size.to_bytes(2, "big") + bytes([unit]) + pdu


READ = frame(1, 1, bytes([3, 0, 0, 0, 10]))  # Read Holding Registers 0..9
WRITE = frame(2, 7, bytes([6, 0, 2, 0, 42]))  # Write Single Register 2 := 42


def test_reads_pass_unchanged_and_writes_are_answered_with_illegal_function() -> None:
    result = RequestFilter().feed(READ + WRITE + READ)
    assert result.forward == READ + READ
    assert result.answers == bytes([0, 2, 0, 0, 0, 3, 7, 0x86, 0x01])
    assert result.refused == (RefusedRequest(transaction_id=2, unit_id=7, function_code=6),)


@pytest.mark.parametrize("code", [5, 6, 8, 15, 16, 21, 22, 23, 43, 90, 100])
def test_everything_but_reads_is_refused(code: int) -> None:
    result = RequestFilter().feed(frame(9, 1, bytes([code, 0, 1, 0, 1])))
    assert result.forward == b""
    assert result.refused[0].function_code == code
    assert result.answers == exception_response(9, 1, code, 1)


@pytest.mark.parametrize(
    "pdu", [bytes([1, 0, 0, 0, 8]), bytes([2, 0, 0, 0, 8]), bytes([4, 0, 0, 0, 1]), bytes([43, 0x0E, 1, 0])]
)
def test_read_functions_and_device_identification_pass(pdu: bytes) -> None:
    assert RequestFilter().feed(frame(3, 1, pdu)).forward == frame(3, 1, pdu)


def test_frames_split_at_every_byte_come_out_whole() -> None:
    stream = READ + WRITE + READ + WRITE
    flt = RequestFilter()
    forward, answers, refused = b"", b"", 0
    for byte in stream:
        result = flt.feed(bytes([byte]))
        forward += result.forward
        answers += result.answers
        refused += len(result.refused)
    assert (forward, refused) == (READ + READ, 2)
    assert answers == exception_response(2, 7, 6, 1) * 2


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (frame(1, 1, bytes([3, 0, 0, 0, 1]), protocol=1), "protocol id 1, not 0"),
        (frame(1, 1, b"", length=1), "length 1, outside 2..254"),
        (frame(1, 1, b"", length=255), "length 255, outside 2..254"),
        (b"GET / HTTP/1.1\r\n", "protocol id"),
    ],
)
def test_malformed_framing_raises(data: bytes, says: str) -> None:
    with pytest.raises(MalformedFrame, match=says):
        RequestFilter().feed(data)


def test_largest_frame_is_accepted_and_nothing_is_held_beyond_it() -> None:
    big = frame(1, 1, bytes([3]) + bytes(252))  # PDU of 253 bytes: the 260-byte maximum ADU
    assert len(big) == MAX_ADU
    flt = RequestFilter()
    assert flt.feed(big[:259]).forward == b""
    assert flt.feed(big[259:]).forward == big


def test_response_boundaries_across_reads() -> None:
    answer = frame(1, 1, bytes([3, 4, 0, 1, 0, 2]))  # 13 bytes
    frames = ResponseFrames()
    assert frames.at_boundary
    assert frames.last_boundary(answer[:5]) is None
    assert not frames.at_boundary
    assert frames.last_boundary(answer[5:] + answer[:3]) == len(answer) - 5
    assert frames.last_boundary(answer[3:]) == len(answer) - 3
    assert frames.at_boundary
    with pytest.raises(MalformedFrame, match="response frame has protocol id"):
        frames.last_boundary(b"\x00\x01\x00\x09\x00\x03\x01")


def test_read_only_is_refused_on_ports_the_gateway_cannot_filter() -> None:
    assert read_only_refusal(502) is None
    assert read_only_refusal(4840) == "read-only access is only available for Modbus/TCP (port 502), not port 4840"
