"""free_port: ports outside the ephemeral range, never handed to two test processes at once (make test's two
passes run side by side; CI once failed when both, or an outgoing connection, landed on one port)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.fixtures.ports import ephemeral_range, free_port

# A child process that reserves ports and prints them, then waits for its stdin to close.
CHILD = textwrap.dedent("""
    import sys
    from tests.fixtures.ports import free_port
    print(" ".join(str(free_port()) for _ in range(int(sys.argv[1]))), flush=True)
    sys.stdin.read()
""")


def test_ports_come_from_below_the_ephemeral_range_and_are_not_repeated() -> None:
    low, _high = ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < port < low for port in ports), [port for port in ports if port >= low]


def test_another_process_never_gets_a_port_this_one_holds() -> None:
    mine = {free_port() for _ in range(300)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, "3000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None
        theirs = {int(port) for port in child.stdout.readline().split()}
    finally:
        child.communicate("", timeout=30)
    assert len(theirs) == 3000
    assert not mine & theirs


def test_a_port_is_free_again_once_the_process_holding_it_exited() -> None:
    # 1,000 of the span's ~12,000 ports: if exiting did not free them, repeated runs would soon run dry.
    first = subprocess.run([sys.executable, "-c", CHILD, "1000"], input="", capture_output=True, text=True,
                           timeout=60, check=True)
    freed = {int(port) for port in first.stdout.split()}
    taken_after = {free_port() for _ in range(3000)}
    # Drawn at random from ~12,000 ports, 3,000 draws miss all 1,000 freed ones with a chance below 1e-100.
    assert freed & taken_after
