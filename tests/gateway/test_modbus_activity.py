"""The Modbus tally the gateway reports at the end of a connection: function codes and register ranges, from
frames in any split, bounded, and quiet once the stream is not Modbus."""

from __future__ import annotations

from gateway.modbus_activity import MAX_RANGES, ModbusActivity
from tests.gateway.test_modbus import frame


def _read(start: int, count: int, transaction: int = 1) -> bytes:
    return frame(transaction, 1, bytes([3]) + start.to_bytes(2, "big") + count.to_bytes(2, "big"))


def test_functions_are_counted_and_registers_merged_into_ranges() -> None:
    activity = ModbusActivity()
    write_multiple = frame(4, 1, bytes([16, 0, 40, 0, 2, 4, 0, 1, 0, 2]))  # registers 40-41
    activity.observe(_read(0, 10) + _read(10, 5) + _read(100, 1) + frame(3, 1, bytes([6, 0, 7, 0, 9]))
                     + write_multiple + frame(5, 1, bytes([8, 0, 0, 0, 0])))
    assert activity.detail() == {"requests": 6, "functions": "3:3,6:1,8:1,16:1",
                                 "registers": "3:0-14,100;6:7;16:40-41"}


def test_frames_split_at_every_byte_are_tallied_once() -> None:
    data = _read(0, 10) + _read(500, 2, transaction=2) + frame(3, 1, bytes([5, 0, 3, 0xFF, 0]))
    activity = ModbusActivity()
    for index in range(len(data)):
        activity.observe(data[index : index + 1])
    assert activity.detail() == {"requests": 3, "functions": "3:2,5:1", "registers": "3:0-9,500-501;5:3"}


def test_ranges_stay_bounded_by_joining_the_closest() -> None:
    activity = ModbusActivity()
    for block in range(MAX_RANGES + 5):
        activity.observe(_read(block * 100, 1))
    spans = activity.ranges[3]
    assert len(spans) == MAX_RANGES
    assert (spans[0][0], spans[-1][1]) == (0, (MAX_RANGES + 4) * 100)  # nothing lost, only coarser


def test_a_stream_that_is_not_modbus_stops_the_tally_and_says_why() -> None:
    activity = ModbusActivity()
    activity.observe(_read(0, 1))
    activity.observe(b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n")
    activity.observe(_read(50, 1))
    detail = activity.detail()
    assert (detail["requests"], detail["functions"], detail["registers"]) == (1, "3:1", "3:0")
    assert "protocol id" in str(detail["not_modbus"])


def test_a_short_frame_counts_its_function_and_names_no_registers() -> None:
    activity = ModbusActivity()
    activity.observe(frame(1, 1, bytes([3, 0])))
    assert activity.detail() == {"requests": 1, "functions": "3:1", "registers": ""}
