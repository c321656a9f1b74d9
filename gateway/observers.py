"""Live supervision at the gateway: a watched session's events go to the broker while, and only while, somebody
watches it; notices and cuts from observers reach the vendor's terminal.

Each shell and exec session's tap is wrapped in a ``WatchTap``. Unwatched it only asks ``live.feed is None`` per
chunk. When the broker says ``watch`` (on the live link, ``follow_live``), the session gets a ``LiveFeed``: the
same events the recorder writes (output, input where the site records it, resizes, notices), as asciicast frames,
in a buffer capped at ``FEED_BUFFER_BYTES`` that drops its oldest frames when the broker falls behind and says how
many went. One sender task per feed posts what piled up, one call at a time: the session never waits for it.
A TCP tunnel is tracked the same way (``track_tunnel``, frames written by ``gateway/tunnel_feed.py``): its feed starts
with the connection's state and is sampled about once a second for its byte totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.broker_client import BrokerClient
from gateway.errors import BrokerCallFailed, BrokerRefused
from gateway.models import StoredRecording
from gateway.recording import DEFAULT_SIZE, StreamText
from gateway.taps import ChannelTap

logger = logging.getLogger("gatepass.gateway.observers")

# Text waiting for the broker, per watched session; past it the oldest frames go (a person cannot read faster,
# and a stalled broker or observer must cost the session nothing).
FEED_BUFFER_BYTES = 64 * 1024
# And at most this many frames: what the broker takes in one call (many small frames, a Modbus poller's requests,
# would otherwise make a call the broker refuses).
FEED_MAX_FRAMES = 1024
# A call that carried this much means bulk output: the next waits a moment, so a `cat` of a large file costs the
# gateway a few calls a second instead of one per chunk (at most about FEED_BUFFER_BYTES / BULK_PAUSE per second).
BULK_BATCH_BYTES = 16 * 1024
BULK_PAUSE = 0.05
RETRY_PAUSE = 0.5
# How often a watched session's ``sample`` runs (a tunnel's byte totals): a person reads a counter once a second.
SAMPLE_INTERVAL = 1.0


class LiveFeed:
    """A watched session's frames (``[seconds, code, text]``, as in the recording) on their way to the broker."""

    def __init__(self, token: str, *, width: int | None = None, height: int | None = None) -> None:
        self.token = token
        self.wake = asyncio.Event()
        self.dropped = 0
        self.ended = False
        self._frames: deque[list[Any]] = deque()
        self._bytes = 0
        self._started = time.monotonic()
        # Own decoders: a character split across chunks stays whole in the feed as in the recording.
        self._stdout = StreamText("o")
        self._stderr = StreamText("o")
        self._input = StreamText("i")
        if width is not None and height is not None:
            self.add("r", f"{width}x{height}")  # the observer's screen starts at the vendor's size

    def output(self, data: bytes, stderr: bool) -> None:
        self.add(*(self._stderr if stderr else self._stdout).decode(data))

    def input(self, data: bytes) -> None:
        self.add(*self._input.decode(data))

    def add(self, code: str, text: str | bytes) -> None:
        if not text:
            return
        if isinstance(text, bytes):  # base64 of output that is not UTF-8 (code "ob"/"ib")
            text = text.decode("ascii")
        self._frames.append([round(time.monotonic() - self._started, 6), code, text])
        self._bytes += len(text)
        while (self._bytes > FEED_BUFFER_BYTES or len(self._frames) > FEED_MAX_FRAMES) and len(self._frames) > 1:
            self._bytes -= len(self._frames.popleft()[2])
            self.dropped += 1
        self.wake.set()

    def end(self, exit_status: int | None) -> None:
        if exit_status is not None:
            self.add("m", f"exit {exit_status}")
        self.ended = True
        self.wake.set()

    def take(self) -> tuple[list[list[Any]], int, int]:
        """(frames, how many were dropped before them, their text size); clears the buffer."""
        frames, dropped, size = list(self._frames), self.dropped, self._bytes
        self._frames.clear()
        self.dropped = self._bytes = 0
        self.wake.clear()
        return frames, dropped, size


@dataclass(eq=False)
class LiveSession:
    """What the live link can do to one session: tell the vendor a line, end it; and its feed while watched."""

    session_id: str
    record_input: bool
    tell: Callable[[str], None]
    end: Callable[[str], None]
    width: int
    height: int
    feed: LiveFeed | None = None
    sender: asyncio.Task[None] | None = field(default=None, repr=False)
    # Whether a supervisor of the site watches now, and who hears when that changes (a supervised session).
    supervised: bool = False
    on_supervision: Callable[[bool], None] | None = None
    # A session without a terminal (a tunnel): what a new feed starts with, and what is sampled about once a second
    # while watched (its byte totals). None: a terminal, whose feed starts with its size.
    opening: Callable[[LiveFeed], None] | None = field(default=None, repr=False)
    sample: Callable[[LiveFeed], None] | None = field(default=None, repr=False)

    def set_supervised(self, supervised: bool) -> None:
        if supervised != self.supervised:
            self.supervised = supervised
            if self.on_supervision is not None:
                self.on_supervision(supervised)


class WatchTap:
    """Passes everything to the session's own tap (recorder, guard) and copies its events to a feed, if any."""

    def __init__(self, inner: ChannelTap, live: LiveSession, registry: LiveRegistry) -> None:
        self.inner = inner
        self.live = live
        self._registry = registry

    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        forward, reply = self.inner.from_client(data)
        feed = self.live.feed
        if feed is not None and self.live.record_input:
            feed.input(data)
        return forward, reply

    def from_target(self, data: bytes, stderr: bool) -> bytes:
        passed = self.inner.from_target(data, stderr)
        feed = self.live.feed
        if feed is not None:
            feed.output(passed, stderr)
        return passed

    def resized(self, width: int, height: int) -> None:
        self.inner.resized(width, height)
        self.live.width, self.live.height = width, height
        if self.live.feed is not None:
            self.live.feed.add("r", f"{width}x{height}")

    def note(self, text: str) -> None:
        self.inner.note(text)
        if self.live.feed is not None:
            self.live.feed.add("m", text)

    def close(self, exit_status: int | None) -> StoredRecording | None:
        try:
            return self.inner.close(exit_status)
        finally:
            self._registry.forget(self.live, exit_status)


class LiveRegistry:
    """The gateway's live sessions by id, and the feeds of the watched ones."""

    def __init__(self, broker: BrokerClient) -> None:
        self._broker = broker
        self._sessions: dict[str, LiveSession] = {}

    def track(self, tap: ChannelTap, *, session_id: str, record_input: bool, width: int, height: int,
              tell: Callable[[str], None], end: Callable[[str], None],
              on_supervision: Callable[[bool], None] | None = None) -> WatchTap:
        """Wrap a new session's tap so that it can be watched; ``on_supervision`` hears whether a supervisor of the
        site watches, each time that changes."""
        live = LiveSession(session_id=session_id, record_input=record_input, tell=tell, end=end,
                           width=width or DEFAULT_SIZE[0], height=height or DEFAULT_SIZE[1],
                           on_supervision=on_supervision)
        self._sessions[session_id] = live
        return WatchTap(tap, live, self)

    def track_tunnel(self, *, session_id: str, opening: Callable[[LiveFeed], None],
                     sample: Callable[[LiveFeed], None], end: Callable[[str], None]) -> LiveSession:
        """A tunnel that can be watched: ``opening`` writes a new feed's first frames, ``sample`` runs about once a
        second while watched, ``end`` cuts it (End session). It has no terminal to tell anything."""
        live = LiveSession(session_id=session_id, record_input=False, tell=_no_terminal, end=end, width=0, height=0,
                           opening=opening, sample=sample)
        self._sessions[session_id] = live
        return live

    def forget(self, live: LiveSession, exit_status: int | None) -> None:
        """The session is over: its feed (if watched) sends what is left and says so."""
        if self._sessions.get(live.session_id) is live:
            del self._sessions[live.session_id]
        if live.feed is not None:
            live.feed.end(exit_status)

    def session(self, session_id: str) -> LiveSession | None:
        return self._sessions.get(session_id)

    def watching(self, session_id: str) -> bool:
        live = self._sessions.get(session_id)
        return live is not None and live.feed is not None

    # -- what the live link asks -------------------------------------------------------------------

    def watch(self, session_id: str, token: str, *, supervised: bool = False) -> None:
        live = self._sessions.get(session_id)
        if live is None:
            return  # not ours, or over: the broker hears so from the session's end
        if live.feed is None or live.feed.token != token:  # the same watch again (a reconnect): the feed goes on
            self._stop(live)
            if live.opening is None:
                live.feed = LiveFeed(token, width=live.width, height=live.height)
            else:
                live.feed = LiveFeed(token)
                live.opening(live.feed)
            live.sender = asyncio.ensure_future(self._send(live, live.feed))
        live.set_supervised(supervised)

    def unwatch(self, session_id: str) -> None:
        live = self._sessions.get(session_id)
        if live is not None:
            self._stop(live)
            live.set_supervised(False)

    def supervision(self, session_id: str, supervised: bool) -> None:
        live = self._sessions.get(session_id)
        if live is not None:
            live.set_supervised(supervised)

    def notice(self, session_id: str, text: str) -> None:
        live = self._sessions.get(session_id)
        if live is not None:
            live.tell(text)

    def end(self, session_id: str, text: str) -> None:
        live = self._sessions.get(session_id)
        if live is not None:
            live.end(text)

    def stop_feeds(self) -> None:
        """Stop sending every feed (the live link is gone, or the gateway stops). Nobody can be known to watch
        now: a supervised session counts as unsupervised (fail closed) until the broker says otherwise again."""
        for live in list(self._sessions.values()):
            self._stop(live)
            live.set_supervised(False)

    def _stop(self, live: LiveSession) -> None:
        live.feed = None
        if live.sender is not None:
            live.sender.cancel()
            live.sender = None

    async def _send(self, live: LiveSession, feed: LiveFeed) -> None:
        """Post what piled up, one call at a time, until nobody watches or the session ended."""
        while True:
            if live.sample is None:
                await feed.wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(feed.wake.wait(), SAMPLE_INTERVAL)
                live.sample(feed)
                if not feed.wake.is_set():
                    continue
            frames, dropped, size = feed.take()
            ended = feed.ended
            try:
                watching = await self._broker.live_frames(live.session_id, feed=feed.token, frames=frames,
                                                          dropped=dropped, ended=ended)
            except BrokerRefused as exc:
                logger.warning("live frames of session %s refused: %s", live.session_id, exc.message)
                watching = False
            except BrokerCallFailed as exc:
                if ended:
                    return
                # Lost, and counted as such: the observer is told its view may be incomplete.
                feed.dropped += dropped + len(frames)
                logger.info("live frames of session %s not delivered: %s", live.session_id, exc)
                await asyncio.sleep(RETRY_PAUSE)
                feed.wake.set()
                continue
            if ended or not watching:
                if live.feed is feed:
                    live.feed, live.sender = None, None
                return
            if size >= BULK_BATCH_BYTES:
                await asyncio.sleep(BULK_PAUSE)


def apply_live_event(registry: LiveRegistry, event_type: str, data: Mapping[str, Any]) -> None:
    """One control message from the broker's live link."""
    session_id, text, feed = data.get("session_id"), data.get("text"), data.get("feed")
    if not isinstance(session_id, str):
        return
    if event_type == "watch" and isinstance(feed, str):
        registry.watch(session_id, feed, supervised=data.get("supervised") is True)
    elif event_type == "supervision":
        registry.supervision(session_id, data.get("supervised") is True)
    elif event_type == "unwatch":
        registry.unwatch(session_id)
    elif event_type == "notice" and isinstance(text, str):
        registry.notice(session_id, _printable(text))
    elif event_type == "end" and isinstance(text, str):
        registry.end(session_id, _printable(text))


def _no_terminal(_text: str) -> None:
    """A tunnel has no terminal: the broker announces nothing to it (its watch says so to the observer)."""


def _printable(text: str) -> str:
    """The broker checked it already; a line for a terminal still never carries a control character."""
    return "".join(char if char.isprintable() else "?" for char in text)[:500]


async def follow_live(broker: BrokerClient, registry: LiveRegistry, *, initial_backoff: float = 0.5,
                      max_backoff: float = 30.0, connected: asyncio.Event | None = None) -> None:
    """Run until cancelled: hold ``/gateway/live`` open, reconnecting with backoff (the broker asks again for
    every watched session on each connect)."""
    backoff = initial_backoff
    while True:
        try:
            async with contextlib.aclosing(broker.live_events()) as events:
                async for event in events:
                    if event.type == "hello":
                        backoff = initial_backoff
                        if connected is not None:
                            connected.set()
                    else:
                        apply_live_event(registry, event.type, event.data)
        except BrokerRefused as exc:
            if exc.status == 404:  # a broker from before live supervision: nothing to follow
                logger.info("the broker offers no live supervision (%s)", exc.message)
                # Nobody can be watching through it: supervised sessions count as unsupervised (fail closed).
                registry.stop_feeds()
                return
            logger.warning("live link refused: %s; retrying in %.1f s", exc.message, backoff)
        except BrokerCallFailed as exc:
            logger.warning("live link to the broker lost: %s; retrying in %.1f s", exc, backoff)
        except Exception:
            logger.exception("following the broker's live link failed; retrying in %.1f s", backoff)
        if connected is not None:
            connected.clear()
        # Nobody is watching what the gateway cannot send: watched feeds stop until the broker asks again.
        registry.stop_feeds()
        await asyncio.sleep(backoff * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not a secret
        backoff = min(backoff * 2, max_backoff)
