"""What an observer sees of a watched TCP tunnel: the connection, its bytes each way and, for Modbus/TCP, each request
and each refused one, as frames in the live feed (``gateway/observers.py``; the codes are in docs/API.md).

Frames are ``[seconds, code, text]`` like a terminal's, so the broker and its bounds treat them alike:

    co  "PEER PORT"                  the connection (the vendor's SSH address, the asset's port): a feed starts with it
    cb  "IN OUT"                     bytes so far, to the asset and from it: about once a second while they change
    cc  "IN OUT[ WHY]"               the connection closed (WHY: what went wrong, or how the client went)
    m   "TEXT"                       a line about the session: a supervised one held or relayed, an observer's End
    q   "UNIT FC RANGE NAME"         a Modbus request as it passes (RANGE: "0-9", "40" or "-" when it names none)
    qx  "UNIT FC RANGE REASON"       a Modbus request the gateway refused (read-only grant), and why

Nothing here runs for an unwatched tunnel except one attribute check per Modbus chunk; the byte counts are read
by the feed's sender, never from the relay's callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gateway.modbus import RefusedRequest, function_name
from gateway.observers import SAMPLE_INTERVAL, LiveFeed, LiveRegistry, LiveSession

if TYPE_CHECKING:
    from gateway.modbus_activity import SeenRequest


class TunnelWatch:
    """One tunnel's place in the live registry, and the frames its observers get."""

    def __init__(self, registry: LiveRegistry, *, session_id: str, peer: str, port: int,
                 totals: Callable[[], tuple[int, int]], end: Callable[[str], None],
                 state: Callable[[], str | None] | None = None) -> None:
        self._registry = registry
        self._peer = peer
        self._port = port
        self._totals = totals
        self._state = state  # a line a new feed starts with, if any (a supervised tunnel held: why)
        self._sent: tuple[int, int] = (0, 0)
        self._sampled = 0.0
        self.live: LiveSession = registry.track_tunnel(session_id=session_id, opening=self._opening,
                                                       sample=self._sample, end=end)

    @property
    def feed(self) -> LiveFeed | None:
        return self.live.feed

    def _opening(self, feed: LiveFeed) -> None:
        # Peer and port carry no spaces (an address, a number): the text splits on the first one.
        feed.add("co", f"{self._peer or '-'} {self._port}")
        self._sent = (0, 0)
        self._sample(feed, force=True)
        if self._state is not None and (line := self._state()) is not None:
            feed.add("m", line)

    def _sample(self, feed: LiveFeed, *, force: bool = False) -> None:
        now = time.monotonic()
        if feed.ended or (not force and now - self._sampled < SAMPLE_INTERVAL):  # after "cc", no more totals
            return
        totals = self._totals()
        if totals != self._sent:
            self._sent, self._sampled = totals, now
            feed.add("cb", f"{totals[0]} {totals[1]}")

    def closed(self, why: str | None) -> None:
        """The connection ended: a watched feed says so with the final totals, then ends."""
        feed = self.live.feed
        if feed is not None:
            bytes_in, bytes_out = self._totals()
            feed.add("cc", f"{bytes_in} {bytes_out}" + (f" {_one_line(why)}" if why else ""))
        self._registry.forget(self.live, None)

    def note(self, text: str) -> None:
        if self.live.feed is not None:
            self.live.feed.add("m", text)


def modbus_frames(feed: LiveFeed, seen: Sequence[SeenRequest], refused: Sequence[RefusedRequest]) -> None:
    """One chunk's requests, in order; a refused one (same transaction, unit and function) as ``qx`` with why."""
    pending = list(refused)
    for transaction_id, unit_id, code, span in seen:
        request = pending[0] if pending else None
        if request is not None and (request.transaction_id, request.unit_id, request.function_code) == (
                transaction_id, unit_id, code):
            pending.pop(0)
            feed.add("qx", f"{unit_id} {code} {span} {_one_line(request.reason)}")
        else:
            feed.add("q", f"{unit_id} {code} {span} {function_name(code)}")
    for request in pending:  # the tally had stopped (not Modbus): the refusal still shows
        feed.add("qx", f"{request.unit_id} {request.function_code} - {_one_line(request.reason)}")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
