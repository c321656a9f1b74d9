"""The SFTP and legacy scp inspectors on their own: framing of split and coalesced packets, what is
recorded, what a download-only site refuses, and bytes that are not the protocol (fail closed)."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import pytest

from gateway import sftp_protocol as wire
from gateway.scp_protocol import ScpInspector, parse_scp_command
from gateway.sftp_inspector import MAX_UNANSWERED, SftpInspector
from gateway.sftp_protocol import MalformedPacket, PacketStream
from gateway.taps import TapFailure
from gateway.transfers import Detail, TransferReporter, runs_sftp_server


class Reporter(TransferReporter):
    """Collects events instead of sending them to a broker."""

    def __init__(self) -> None:  # no context: nothing is sent
        self.session_id, self.site, self.refusals = "ses-1", "plant-a", 0
        self._agent = False  # a person's session (the agents' wording is tested with the gateway)
        self.events: list[tuple[str, Detail]] = []

    def report(self, kind: str, detail: Detail) -> None:
        self.events.append((kind, detail))


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def s(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return u32(len(raw)) + raw


def packet(kind: int, *fields: bytes) -> bytes:
    body = bytes([kind]) + b"".join(fields)
    return u32(len(body)) + body


def fields_of(data: bytes) -> list[tuple[int, bytes]]:
    """(type, rest of body) of each packet in ``data``."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((data[pos + 4], data[pos + 5 : pos + 4 + length]))
        pos += 4 + length
    return out


INIT = packet(wire.INIT, u32(3))
VERSION = packet(wire.VERSION, u32(3))
NO_ATTRS = u32(0)


Exchange = list[tuple[str, bytes]]  # ("client" | "target", bytes), in the order they are sent


def feed(inspector: SftpInspector, exchange: Exchange, *, step: int | None = None) -> tuple[bytes, bytes]:
    """Pass each side's bytes through the inspector in turn, ``step`` bytes at a time (whole if None)."""
    to_target = to_client = b""
    for side, data in exchange:
        size = step or max(len(data), 1)
        for start in range(0, len(data), size):
            if side == "client":
                forward, reply = inspector.from_client(data[start : start + size])
                to_target, to_client = to_target + forward, to_client + reply
            else:
                to_client += inspector.from_target(data[start : start + size], stderr=False)
    return to_target, to_client


def sent_by(exchange: Exchange, side: str) -> bytes:
    return b"".join(data for who, data in exchange if who == side)


# -- framing ----------------------------------------------------------------------------------------------


def test_coalesced_packets_come_out_whole_and_a_partial_tail_waits() -> None:
    stream = PacketStream("client")
    first, second, third = packet(wire.STAT, u32(1), s("/a")), packet(wire.STAT, u32(2), s("/b")), INIT
    data, starts = stream.feed(first + second + third[:3])
    assert (data, starts) == (first + second, [0, len(first)])
    assert not stream.at_boundary
    assert stream.feed(third[3:]) == (third, [0])
    assert stream.at_boundary


def test_a_packet_split_into_single_bytes_comes_out_once_complete() -> None:
    stream = PacketStream("target")
    big = packet(wire.DATA, u32(7), s(bytes(range(256)) * 300))
    out = [stream.feed(big[i : i + 1]) for i in range(len(big))]
    assert all(chunk == (b"", []) for chunk in out[:-1])
    assert out[-1] == (big, [0])


@pytest.mark.parametrize("length", [0, wire.MAX_PACKET_LENGTH + 1, 0xFFFFFFFF])
def test_impossible_packet_lengths_are_refused(length: int) -> None:
    with pytest.raises(MalformedPacket, match="SFTP packet of"):
        PacketStream("client").feed(u32(length) + b"\x01")


# -- recording ----------------------------------------------------------------------------------------------


def upload(path: str, chunks: list[tuple[int, bytes]], pflags: int = 0x1A) -> Exchange:
    """An OpenSSH-style upload: OPEN, HANDLE, WRITEs at the given offsets, CLOSE, and the answers."""
    writes = b"".join(
        packet(wire.WRITE, u32(index), s(b"h0"), u64(offset), s(data))
        for index, (offset, data) in enumerate(chunks, start=2)
    )
    answers = b"".join(packet(wire.STATUS, u32(index), u32(0), s(""), s("")) for index in range(2, len(chunks) + 2))
    close_id = len(chunks) + 2
    return [
        ("client", INIT + packet(wire.OPEN, u32(1), s(path), u32(pflags), NO_ATTRS)),
        ("target", VERSION + packet(wire.HANDLE, u32(1), s(b"h0"))),
        ("client", writes + packet(wire.CLOSE, u32(close_id), s(b"h0"))),
        ("target", answers + packet(wire.STATUS, u32(close_id), u32(0), s("Success"), s(""))),
    ]


@pytest.mark.parametrize("step", [None, 1, 7, 4096])
def test_an_upload_is_recorded_with_its_sha256_however_the_bytes_are_cut(step: int | None) -> None:
    data = bytes(range(256)) * 1000
    exchange = upload("/fw.bin", [(0, data[:100_000]), (100_000, data[100_000:])])
    reporter = Reporter()
    inspector = SftpInspector(reporter, download_only=False)
    # Everything passes unchanged.
    assert feed(inspector, exchange, step=step) == (sent_by(exchange, "client"), sent_by(exchange, "target"))
    ((kind, detail),) = reporter.events
    assert kind == "file_transferred"
    assert detail == {
        "protocol": "sftp", "path": "/fw.bin", "mode": "write", "bytes_read": 0, "bytes_written": len(data),
        "sha256_written": hashlib.sha256(data).hexdigest(), "size": len(data), "status": "ok",
        "open_flags": "write,creat,trunc",
    }  # fmt: skip
    assert inspector.close(0) is None


def test_writes_out_of_order_leave_the_hash_unknown_and_say_why() -> None:
    reporter = Reporter()
    feed(SftpInspector(reporter, download_only=False), upload("/fw.bin", [(5, b"world"), (0, b"hello")]))
    ((_, detail),) = reporter.events
    assert detail["bytes_written"] == 10
    assert detail["sha256_written"] is None
    assert detail["sha256_note"] == "non-sequential writes"
    assert detail["size"] is None


def test_a_download_is_hashed_in_order_and_its_size_found_at_end_of_file() -> None:
    reads = b"".join(packet(wire.READ, u32(i), s(b"h"), u64(offset), u32(4)) for i, offset in ((2, 0), (3, 4), (4, 8)))
    # A short read (2 of 4 bytes): the next read asked from offset 8, which leaves a gap at 6.
    answers = packet(wire.DATA, u32(2), s(b"abcd")) + packet(wire.DATA, u32(3), s(b"ef"))
    answers += packet(wire.STATUS, u32(4), u32(wire.FX_EOF), s("EOF"), s(""))
    reporter = Reporter()
    feed(SftpInspector(reporter, download_only=False), [
        ("client", INIT + packet(wire.OPEN, u32(1), s("/cfg"), u32(wire.FXF_READ), NO_ATTRS)),
        ("target", VERSION + packet(wire.HANDLE, u32(1), s(b"h"))),
        ("client", reads + packet(wire.CLOSE, u32(5), s(b"h"))),
        ("target", answers + packet(wire.STATUS, u32(5), u32(0), s(""), s(""))),
    ])  # fmt: skip
    ((_, detail),) = reporter.events
    assert (detail["mode"], detail["bytes_read"], detail["sha256_read"]) == (
        "read",
        6,
        hashlib.sha256(b"abcdef").hexdigest(),
    )
    assert detail["size"] is None  # the EOF came at 8, not at 6: the size is not known for sure


def test_changes_are_reported_with_the_targets_answer_and_unanswered_ones_at_the_end() -> None:
    client = INIT + packet(wire.RENAME, u32(1), s("/a"), s("/b")) + packet(wire.REMOVE, u32(2), s("/c"))
    client += packet(wire.SETSTAT, u32(3), s("/b"), u32(wire.ATTR_PERMISSIONS), u32(0o100600))
    target = VERSION + packet(wire.STATUS, u32(2), u32(2), s("No such file"), s(""))
    target += packet(wire.STATUS, u32(1), u32(0), s(""), s(""))
    reporter = Reporter()
    inspector = SftpInspector(reporter, download_only=False)
    feed(inspector, [("client", client), ("target", target)])
    inspector.close(None)
    assert reporter.events == [
        ("file_changed", {"protocol": "sftp", "operation": "remove", "path": "/c", "status": "no such file"}),
        ("file_changed", {"protocol": "sftp", "operation": "rename", "path": "/a", "new_path": "/b", "status": "ok"}),
        ("file_changed", {"protocol": "sftp", "operation": "setstat", "path": "/b", "attributes": "mode=0600",
                          "status": "no answer"}),
    ]  # fmt: skip


def test_a_later_sftp_version_is_asked_down_to_3_and_a_target_insisting_on_another_ends_the_session() -> None:
    inspector = SftpInspector(Reporter(), download_only=False)
    extension = s("check-file") + s("md5")
    forward, _ = inspector.from_client(packet(wire.INIT, u32(6), extension))
    assert forward == packet(wire.INIT, u32(3), extension)
    with pytest.raises(TapFailure, match="SFTP version 4"):
        inspector.from_target(packet(wire.VERSION, u32(4)), stderr=False)


def test_the_targets_limits_are_capped_to_what_the_gateway_inspects() -> None:
    inspector = SftpInspector(Reporter(), download_only=False)
    inspector.from_client(INIT + packet(wire.EXTENDED, u32(9), s("limits@openssh.com")))
    answer = packet(wire.EXTENDED_REPLY, u32(9), u64(4 * 1024 * 1024), u64(0), u64(1024), u64(64))
    (reply,) = fields_of(inspector.from_target(VERSION + answer, stderr=False))[1:]
    assert reply == (wire.EXTENDED_REPLY, u32(9) + u64(256 * 1024) + u64(255 * 1024) + u64(1024) + u64(64))


def test_bytes_that_are_not_sftp_end_the_session() -> None:
    inspector = SftpInspector(Reporter(), download_only=False)
    with pytest.raises(TapFailure, match="cannot be inspected"):
        inspector.from_client(b"GET / HTTP/1.1\r\n")
    with pytest.raises(TapFailure, match="cannot be inspected"):  # an OPEN whose path runs past the packet
        SftpInspector(Reporter(), download_only=False).from_client(INIT + packet(wire.OPEN, u32(1), u32(99), b"/x"))


def test_a_client_that_never_waits_for_answers_ends_the_session() -> None:
    inspector = SftpInspector(Reporter(), download_only=False)
    inspector.from_client(INIT)
    requests = b"".join(packet(wire.REMOVE, u32(i), s(f"/f{i}")) for i in range(MAX_UNANSWERED))
    inspector.from_client(requests)
    with pytest.raises(TapFailure, match="requests waiting for an answer"):
        inspector.from_client(packet(wire.REMOVE, u32(MAX_UNANSWERED), s("/one-more")))


@pytest.mark.parametrize(
    ("command", "expected"),
    [("/usr/lib/openssh/sftp-server", True), ("'/usr/lib/sftp-server' -l INFO", True), ("sftp-server", True),
     ("ls sftp-server", False), ("sftp", False), ("", False), (None, False)],
)  # fmt: skip
def test_sftp_server_run_as_a_command_is_recognised(command: str | None, expected: bool) -> None:
    assert runs_sftp_server(command) is expected


# -- download-only ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_packet", "what"),
    [
        (packet(wire.OPEN, u32(5), s("/fw"), u32(wire.FXF_WRITE | wire.FXF_CREAT), NO_ATTRS), "writing /fw"),
        (packet(wire.OPEN, u32(5), s("/log"), u32(wire.FXF_READ | wire.FXF_APPEND), NO_ATTRS), "writing /log"),
        (packet(wire.REMOVE, u32(5), s("/cfg")), "removing /cfg"),
        (packet(wire.RENAME, u32(5), s("/a"), s("/b")), "renaming /a to /b"),
        (packet(wire.MKDIR, u32(5), s("/d"), NO_ATTRS), "creating the directory /d"),
        (packet(wire.RMDIR, u32(5), s("/d")), "removing the directory /d"),
        (packet(wire.SETSTAT, u32(5), s("/cfg"), NO_ATTRS), "changing the attributes of /cfg"),
        (packet(wire.FSETSTAT, u32(5), s(b"h"), NO_ATTRS), "changing the attributes of an open file"),
        (packet(wire.SYMLINK, u32(5), s("/etc/passwd"), s("/l")), "creating the link /l"),
        (packet(wire.WRITE, u32(5), s(b"h"), u64(0), s(b"x")), "writing to an open file"),
        (packet(wire.EXTENDED, u32(5), s("posix-rename@openssh.com"), s("/a"), s("/b")), "renaming /a to /b"),
        (packet(wire.EXTENDED, u32(5), s("hardlink@openssh.com"), s("/a"), s("/b")), "linking /b to /a"),
        (packet(wire.EXTENDED, u32(5), s("lsetstat@openssh.com"), s("/l"), NO_ATTRS),
         "changing the attributes of /l"),
        (packet(wire.EXTENDED, u32(5), s("something-new@example.com")), "the SFTP request something-new@example.com"),
    ],
)  # fmt: skip
def test_download_only_refuses_what_changes_the_target_and_answers_itself(request_packet: bytes, what: str) -> None:
    reporter, told = Reporter(), list[str]()
    inspector = SftpInspector(reporter, download_only=True, tell_user=told.append)
    stat = packet(wire.STAT, u32(6), s("/cfg"))
    forward, reply = inspector.from_client(INIT + request_packet + stat)
    assert forward == INIT + stat  # the refused request never reaches the target
    message = f"site plant-a allows downloads only: {what} is refused"
    assert fields_of(reply) == [(wire.STATUS, u32(5) + u32(wire.FX_PERMISSION_DENIED) + s(message) + s("en"))]
    assert told == [f"gatepass: {message}"]
    ((kind, detail),) = reporter.events
    assert (kind, detail["protocol"], detail["reason"]) == ("file_refused", "sftp", message)
    assert detail["operation"]


def test_download_only_lets_reads_and_harmless_extensions_through() -> None:
    reporter = Reporter()
    inspector = SftpInspector(reporter, download_only=True)
    looking = (
        INIT + packet(wire.OPEN, u32(1), s("/cfg"), u32(wire.FXF_READ), NO_ATTRS)
        + packet(wire.EXTENDED, u32(2), s("statvfs@openssh.com"), s("/"))
        + packet(wire.EXTENDED, u32(3), s("expand-path@openssh.com"), s("~"))
        + packet(wire.OPENDIR, u32(4), s("/")) + packet(wire.REALPATH, u32(5), s("."))
    )  # fmt: skip
    assert inspector.from_client(looking) == (looking, b"")
    assert reporter.events == []


# -- legacy scp ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("scp -t -- /tmp/fw.bin", {"upload": True, "paths": ("/tmp/fw.bin",), "into_directory": False}),
        ("scp -v -r -p -d -t -- /srv", {"upload": True, "paths": ("/srv",), "into_directory": True, "recursive": True}),
        ("/usr/bin/scp -f '/data/a b.cfg'", {"upload": False, "paths": ("/data/a b.cfg",)}),
        ("scp -pf x", {"upload": False, "paths": ("x",)}),
        # Odd spellings are taken for the stricter case (an upload).
        ("scp -t -f x", {"upload": True}),
        ("scp -X -f x", {"upload": True}),
        ("scp -t", {"upload": True, "paths": ()}),
    ],
)
def test_legacy_scp_commands_are_recognised(command: str, expected: dict[str, Any]) -> None:
    parsed = parse_scp_command(command)
    assert parsed is not None
    for name, value in expected.items():
        assert getattr(parsed, name) == value


@pytest.mark.parametrize("command", ["ls -l", "scp a b", "cat scp", "sh -c 'echo scp -t'", ""])
def test_other_commands_are_not_scp_transfers(command: str) -> None:
    assert parse_scp_command(command) is None


def scp_upload(inspector: ScpInspector, client: list[bytes], target: list[bytes]) -> bytes:
    """Alternate: the target (sink) answers, the client (source) sends, as real scp does; returns to-client."""
    to_client = b""
    for index, answer in enumerate(target):
        to_client += inspector.from_target(answer, stderr=False)
        if index < len(client):
            for byte in range(len(client[index])):  # a byte at a time: the worst cutting there is
                assert inspector.from_client(client[index][byte : byte + 1]) == (client[index][byte : byte + 1], b"")
    return to_client


def test_legacy_scp_upload_is_recorded_even_when_file_data_looks_like_control_lines() -> None:
    command = parse_scp_command("scp -r -t -- /srv")
    assert command is not None
    reporter = Reporter()
    inspector = ScpInspector(reporter, command, download_only=False)
    data = b"C0644 5 evil\nE\n\x00\x01"
    scp_upload(
        inspector,
        client=[b"D0755 0 cfg\n", b"T1700000000 0 1700000000 0\n", b"C0600 %d a.cfg\n" % len(data), data + b"\x00",
                b"C0644 3 refused.cfg\n", b"E\n"],
        target=[b"\x00", b"\x00", b"\x00", b"\x00", b"\x00", b"\x01scp: refused.cfg: Permission denied\n", b"\x00"],
    )  # fmt: skip
    inspector.close(0)
    assert [(d["path"], d["status"], d["bytes_written"], d["sha256_written"]) for _, d in reporter.events] == [
        ("/srv/cfg/a.cfg", "ok", len(data), hashlib.sha256(data).hexdigest()),
        ("/srv/cfg/refused.cfg", "refused: scp: refused.cfg: Permission denied", 0, hashlib.sha256().hexdigest()),
    ]


def test_legacy_scp_upload_cut_off_mid_file_is_reported_incomplete() -> None:
    command = parse_scp_command("scp -t -- /srv/fw.bin")
    assert command is not None
    reporter = Reporter()
    inspector = ScpInspector(reporter, command, download_only=False)
    scp_upload(inspector, client=[b"C0644 10 fw.bin\n", b"12345"], target=[b"\x00", b"\x00"])
    inspector.close(None)
    ((_, detail),) = reporter.events
    assert (detail["path"], detail["status"], detail["bytes_written"], detail["size"]) == (
        "/srv/fw.bin",
        "incomplete",
        5,
        10,
    )


def test_legacy_scp_out_of_step_ends_the_session() -> None:
    command = parse_scp_command("scp -t -- /srv")
    assert command is not None
    inspector = ScpInspector(Reporter(), command, download_only=False)
    with pytest.raises(TapFailure, match="while waiting for the other side's answer"):
        inspector.from_client(b"C0644 1 x\n")  # before the sink said it is ready
    inspector = ScpInspector(Reporter(), command, download_only=False)
    inspector.from_target(b"\x00", stderr=False)
    with pytest.raises(TapFailure, match="not part of the scp protocol"):
        inspector.from_client(b"rm -rf /\n")


def test_legacy_scp_upload_on_a_download_only_site_never_reaches_the_target() -> None:
    command = parse_scp_command("scp -t -- /srv/fw.bin")
    assert command is not None
    reporter = Reporter()
    inspector = ScpInspector(reporter, command, download_only=True)
    message = "site plant-a allows downloads only: writing /srv/fw.bin is refused"
    assert inspector.from_target(b"\x00", stderr=False) == b"\x02gatepass: " + message.encode() + b"\n"
    assert inspector.from_client(b"C0644 1 fw.bin\nx\x00") == (b"", b"")
    assert inspector.from_target(b"\x00", stderr=False) == b""
    assert reporter.events == [
        ("file_refused", {"protocol": "scp", "operation": "upload", "path": "/srv/fw.bin", "reason": message})
    ]
