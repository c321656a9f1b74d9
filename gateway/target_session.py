"""The gateway's end of a session channel on the target: every callback goes back to its ProxySession."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncssh

if TYPE_CHECKING:
    from gateway.sessions import ProxySession


class TargetSession(asyncssh.SSHClientSession[bytes]):
    """Client side on the target: hands everything back to its ProxySession."""

    def __init__(self, proxy: ProxySession) -> None:
        self._proxy = proxy
        self._status: int | None = None
        self._signal: tuple[str, bool, str] | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._proxy.target_data(data, datatype)

    def eof_received(self) -> bool:
        self._proxy.target_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self._proxy.target_exit(status, None)

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:  # noqa: ARG002
        self._proxy.target_exit(None, (signal, core_dumped, msg))

    def pause_writing(self) -> None:
        self._proxy.target_paused()

    def resume_writing(self) -> None:
        self._proxy.target_resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._proxy.target_closed(exc)
