"""`gatepass watch` prints a tunnel's frames (docs/API.md, live supervision) as one line each."""

from __future__ import annotations

from cli.client_watch import tunnel_line


def test_each_tunnel_frame_is_one_readable_line_and_terminal_frames_are_left_alone() -> None:
    assert tunnel_line("co", "203.0.113.5:50122 502") == "connection from 203.0.113.5:50122 to port 502 open"
    assert tunnel_line("cb", "24 58") == "bytes: 24 to the asset, 58 from it (open)"
    assert tunnel_line("cc", "24 58") == "bytes: 24 to the asset, 58 from it (closed)"
    assert tunnel_line("cc", "24 58 target connection lost: reset") == \
        "bytes: 24 to the asset, 58 from it (closed: target connection lost: reset)"
    assert tunnel_line("q", "1 3 0-9 Read Holding Registers") == \
        "modbus unit 1 function 3 addresses 0-9: Read Holding Registers"
    assert tunnel_line("q", "1 43 - Encapsulated Interface Transport") == \
        "modbus unit 1 function 43: Encapsulated Interface Transport"
    assert tunnel_line("qx", "1 6 2 Write Single Register is not a read and the grant is read-only") == \
        "REFUSED modbus unit 1 function 6 addresses 2: Write Single Register is not a read and the grant is read-only"
    assert tunnel_line("o", "hello") is None
    assert tunnel_line("q", "malformed") is None  # a frame that does not parse is not printed as one
