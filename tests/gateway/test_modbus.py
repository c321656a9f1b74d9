"""The Modbus/TCP request filter: framing across reads, reads forwarded, everything else answered; frames whose
lengths disagree with their function code refused (also through the gateway to a real pymodbus PLC)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.modbus import (
    ILLEGAL_DATA_VALUE,
    MAX_ADU,
    MalformedFrame,
    RefusedRequest,
    RequestFilter,
    ResponseFrames,
    exception_response,
)
from gateway.protocols import read_only_refusal
from tests.gateway.conftest import GrantFactory
from tests.gateway.fake_broker import FakeBroker
from tests.gateway.modbus_plc import REGISTERS, ModbusPlc
from tests.gateway.test_readonly import plc  # noqa: F401 - the real PLC fixture


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


def test_largest_frame_is_framed_whole_and_nothing_is_held_beyond_it() -> None:
    big = frame(1, 1, bytes([3]) + bytes(252))  # PDU of 253 bytes: the 260-byte maximum ADU
    assert len(big) == MAX_ADU
    flt = RequestFilter()
    first = flt.feed(big[:259])
    assert (first.forward, first.answers, first.refused) == (b"", b"", ())
    last = flt.feed(big[259:] + READ)
    assert last.forward == READ  # the next frame starts right after it
    assert last.answers == exception_response(1, 1, 3, ILLEGAL_DATA_VALUE)  # 253 bytes is no read's length


# -- frames whose lengths disagree with their function code (issue 9) ------------------------------------------

READ_THEN_WRITE = frame(5, 1, bytes([3, 0, 0, 0, 10]) + bytes([6, 0, 2, 0, 42]))  # one MBAP length around both


def test_a_read_with_a_write_inside_the_same_frame_is_refused_whole() -> None:
    result = RequestFilter().feed(READ + READ_THEN_WRITE + READ)
    assert result.forward == READ + READ
    assert result.answers == exception_response(5, 1, 3, ILLEGAL_DATA_VALUE)
    (refused,) = result.refused
    assert (refused.function_code, refused.exception_code) == (3, ILLEGAL_DATA_VALUE)
    assert refused.reason == ("Read Holding Registers request of 10 bytes where its function code defines 5: "
                              "a frame whose lengths disagree is refused whole")


@pytest.mark.parametrize("pdu", [
    bytes([1, 0, 0, 0]), bytes([2, 0, 0, 0, 8, 0]), bytes([4, 0, 0, 0, 1, 0, 0]),  # reads 1-4: exactly 5
    bytes([7, 0]), bytes([11, 0, 0]), bytes([17, 1]), bytes([24, 0, 0, 0]),  # fixed sizes
    bytes([20, 14, 6, 0, 1, 0, 0, 0, 1]),  # Read File Record shorter than its byte count says
    bytes([20, 7, 6, 0, 1, 0, 0, 0, 1, 0, 6]),  # … longer: a second request after it
    bytes([20, 8, 6, 0, 1, 0, 0, 0, 1, 0]),  # … a byte count that is no whole sub-request
    bytes([43, 0x0E, 1, 0, 6]),  # Read Device Identification with a byte too many
])  # fmt: skip
def test_reads_of_a_length_their_function_does_not_define_are_refused(pdu: bytes) -> None:
    result = RequestFilter().feed(frame(4, 1, pdu))
    assert result.forward == b""
    assert result.answers == exception_response(4, 1, pdu[0], ILLEGAL_DATA_VALUE)
    assert "refused whole" in result.refused[0].reason or "sub-requests" in result.refused[0].reason


@pytest.mark.parametrize("pdu", [
    bytes([7]), bytes([11]), bytes([12]), bytes([17]), bytes([24, 0, 4]),
    bytes([20, 7, 6, 0, 1, 0, 0, 0, 2]), bytes([20, 14, 6, 0, 1, 0, 0, 0, 2, 6, 0, 1, 0, 4, 0, 1]),
])  # fmt: skip
def test_reads_of_their_defined_length_pass(pdu: bytes) -> None:
    assert RequestFilter().feed(frame(3, 1, pdu)).forward == frame(3, 1, pdu)


@pytest.mark.anyio
async def test_a_hidden_write_never_reaches_a_real_plc(
    grant_for: GrantFactory, fake_broker: FakeBroker, plc: ModbusPlc  # noqa: F811 - the fixture
) -> None:
    vendor = grant_for(None, ssh=False, ports=[502], read_only=True, asset_host=plc.host)
    async with await vendor.connect() as conn:
        reader, writer = await conn.open_connection("hmi-01", 502)
        writer.write(READ_THEN_WRITE)
        answer = await asyncio.wait_for(reader.readexactly(9), 5)
        assert answer == exception_response(5, 1, 3, ILLEGAL_DATA_VALUE)
        writer.write(READ)  # the connection stays in step: a proper read still gets the PLC's answer
        header = await asyncio.wait_for(reader.readexactly(9), 5)
        assert header[:2] == b"\x00\x01"
        assert header[7:9] == bytes([3, 20])
        data = await asyncio.wait_for(reader.readexactly(20), 5)
        assert [int.from_bytes(data[i : i + 2], "big") for i in range(0, 20, 2)] == REGISTERS
        writer.close()
    assert await asyncio.to_thread(plc.registers) == REGISTERS
    await fake_broker.until(lambda: fake_broker.session_events, what="the refused write")
    ((_, event),) = [e for e in fake_broker.session_events if e[1]["kind"] == "modbus_write_refused"]
    assert event["kind"] == "modbus_write_refused"
    assert (event["detail"]["function_code"], event["detail"]["exception_code"]) == (3, ILLEGAL_DATA_VALUE)
    assert "lengths disagree" in event["detail"]["reason"]


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
