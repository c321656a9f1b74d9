"""A real Modbus/TCP server (pymodbus) standing in for a PLC, on port 502 of its own loopback address.

The gateway recognises Modbus/TCP by its registered port 502, so the PLC listens on 502; each one
gets a distinct address in 127.0.0.0/8 (all loopback on Linux) so tests never share a server. It runs
in a thread with its own event loop, so synchronous end-to-end tests and async gateway tests use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import threading
import time
from dataclasses import dataclass, field

from pymodbus.client import ModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

MODBUS_PORT = 502
UNIT = 1
REGISTERS = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]


def free_loopback_address(port: int = MODBUS_PORT) -> str:
    """An address in 127.0.0.0/8 where ``port`` is free (every such address is loopback on Linux)."""
    for _ in range(200):
        host = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"  # noqa: S311
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            return host
    raise RuntimeError(f"no free loopback address with port {port}")


@dataclass
class ModbusPlc:
    host: str = field(default_factory=free_loopback_address)
    port: int = MODBUS_PORT
    _loop: asyncio.AbstractEventLoop | None = None
    _server: ModbusTcpServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> ModbusPlc:
        ready = threading.Event()

        def run() -> None:
            async def serve() -> None:
                self._loop = asyncio.get_running_loop()
                device = SimDevice(id=UNIT, simdata=[SimData(0, values=list(REGISTERS), datatype=DataType.REGISTERS)])
                self._server = ModbusTcpServer(device, address=(self.host, self.port))
                await self._server.serve_forever(background=True)
                ready.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server.serving

            try:
                asyncio.run(serve())
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name=f"modbus-plc-{self.host}", daemon=True)
        self._thread.start()
        ready.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"the Modbus server on {self.host}:{self.port} did not start")

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            future = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
            with contextlib.suppress(Exception):
                future.result(10)
        if self._thread is not None:
            self._thread.join(10)

    def registers(self, count: int = len(REGISTERS)) -> list[int]:
        """The holding registers as the PLC holds them, read directly (not through the gateway)."""
        with ModbusTcpClient(self.host, port=self.port, timeout=5, retries=0) as client:
            result = client.read_holding_registers(0, count=count, device_id=UNIT)
        assert not result.isError(), result
        return list(result.registers)
