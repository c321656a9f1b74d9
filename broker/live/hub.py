"""The in-memory fan-out of live sessions: each gateway's control links, one feed per watched session, and a
bounded queue per observer. Everything here runs on the broker's event loop; ``tell_threadsafe`` is the one way
in from a worker thread (a domain function whose transaction has just committed)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

# How far an observer may fall behind before its oldest frames are dropped (and it is told how many): frames, and
# their text, so a stalled observer costs the broker at most about OBSERVER_BYTES (plus one frame).
OBSERVER_QUEUE = 512
OBSERVER_BYTES = 256 * 1024
# Control messages waiting for one gateway link: a gateway that stops reading loses them, not the broker memory.
LINK_QUEUE = 1000
# Frames that state where a session stands (a terminal's size; a tunnel's connection and byte totals): the latest of
# each code is kept per feed and given first to an observer who joins a feed already running, which would otherwise
# start without them (the gateway sends them when the feed starts, and when they change).
STATE_CODES = frozenset({"r", "co", "cb"})
# The tokens of feeds that ended, kept this long (seconds) and at most this many: the gateway's call already on its
# way when the last observer left still gets "nobody watches" rather than a refusal. Any other token is refused
# whether or not the session is watched, so the answer never tells a caller without the token that it is.
ENDED_FEED_SECONDS = 300.0
ENDED_FEEDS = 4096
# What a token is compared with when the session has no feed, so a refusal takes as long either way.
_NO_TOKEN = secrets.token_urlsafe(32).encode()


@dataclass(eq=False)
class Observer:
    """One person watching one session: frames waiting for them, and how many they lost by being slow."""

    username: str
    label: str  # "bob (supervisor, plant-a)": how the vendor's terminal names them
    supervises: bool = False  # a supervisor of the session's site (what a supervised session waits for)
    frames: deque[list[Any]] = field(default_factory=deque)
    queued_bytes: int = 0
    dropped: int = 0
    ended: str | None = None  # why the feed ended (the session is over), once it has
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, frames: list[list[Any]], dropped: int = 0) -> None:
        """Queue ``frames``; when full the oldest go (drop-oldest: the newest screen matters most)."""
        self.dropped += dropped
        for frame in frames:
            self.frames.append(frame)
            self.queued_bytes += len(frame[2])
            while len(self.frames) > 1 and (len(self.frames) > OBSERVER_QUEUE or self.queued_bytes > OBSERVER_BYTES):
                self.queued_bytes -= len(self.frames.popleft()[2])
                self.dropped += 1
        self.wake.set()

    def finish(self, why: str) -> None:
        self.ended = why
        self.wake.set()

    def take(self) -> tuple[list[list[Any]], int]:
        """What is waiting and how many frames were lost since the last take; clears both."""
        frames, dropped = list(self.frames), self.dropped
        self.frames.clear()
        self.dropped = self.queued_bytes = 0
        self.wake.clear()
        return frames, dropped

    async def wait(self, timeout: float) -> bool:
        """True when something is waiting (or the feed ended); False after ``timeout`` seconds of nothing."""
        if self.frames or self.dropped or self.ended:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)
        return bool(self.frames or self.dropped or self.ended)


@dataclass(eq=False)
class Feed:
    """A watched session: which gateway carries it, the token its frames must carry, who watches."""

    session_id: str
    gateway_id: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    observers: set[Observer] = field(default_factory=set)
    state: dict[str, list[Any]] = field(default_factory=dict)  # the latest frame of each of STATE_CODES


@dataclass(eq=False)
class GatewayLink:
    """One open ``GET /gateway/live`` stream of a gateway: control messages for it, in order."""

    gateway_id: int
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=LINK_QUEUE))

    def send(self, event: str, data: dict[str, Any]) -> bool:
        if self.queue.full():
            return False
        self.queue.put_nowait((event, data))
        return True


class LiveHub:
    """Who watches which session, and the way to the gateway that carries it."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: dict[int, set[GatewayLink]] = {}
        self._feeds: dict[str, Feed] = {}
        self._ended: OrderedDict[str, tuple[str, float]] = OrderedDict()  # session id -> (feed token, ended at)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # -- gateways ---------------------------------------------------------------------------------

    def connect(self, gateway_id: int) -> GatewayLink:
        """A gateway opened its live stream: it is asked again for every session of its that is watched (it
        may have restarted, or the stream broke while an observer joined)."""
        link = GatewayLink(gateway_id)
        self._links.setdefault(gateway_id, set()).add(link)
        for feed in self._feeds.values():
            if feed.gateway_id == gateway_id:
                link.send("watch", self._watch_message(feed))
        return link

    def disconnect(self, link: GatewayLink) -> None:
        links = self._links.get(link.gateway_id)
        if links is not None:
            links.discard(link)
            if not links:
                del self._links[link.gateway_id]

    def gateway_connected(self, gateway_id: int) -> bool:
        return bool(self._links.get(gateway_id))

    def tell(self, gateway_id: int, event: str, data: dict[str, Any]) -> bool:
        """Send a control message to the gateway (every open link: a reconnect may overlap the old one; the
        gateway ignores what it has no session for). False when no link took it."""
        delivered = False
        for link in list(self._links.get(gateway_id, ())):
            delivered = link.send(event, data) or delivered
        return delivered

    def tell_threadsafe(self, gateway_id: int, event: str, data: dict[str, Any]) -> None:
        """``tell`` from a worker thread (after a commit): handed to the event loop, in call order."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.tell, gateway_id, event, data)

    # -- observers --------------------------------------------------------------------------------

    def join(self, *, session_id: str, gateway_id: int, observer: Observer) -> None:
        """Start following ``session_id``; the first observer asks the gateway for the feed."""
        feed = self._feeds.get(session_id)
        if feed is None:
            feed = self._feeds[session_id] = Feed(session_id=session_id, gateway_id=gateway_id)
            feed.observers.add(observer)
            self.tell(gateway_id, "watch", self._watch_message(feed))
            return
        supervised = self._supervised(feed)
        if feed.state:
            observer.offer(list(feed.state.values()))
        feed.observers.add(observer)
        if self._supervised(feed) != supervised:
            self.tell(gateway_id, "supervision", {"session_id": session_id, "supervised": True})

    def leave(self, *, session_id: str, observer: Observer) -> None:
        """Stop following; the last observer to leave tells the gateway to stop sending (an unwatched session
        costs nothing)."""
        feed = self._feeds.get(session_id)
        if feed is None:
            return
        supervised = self._supervised(feed)
        feed.observers.discard(observer)
        if not feed.observers:
            self._end_feed(feed)
            self.tell(feed.gateway_id, "unwatch", {"session_id": session_id})
        elif supervised and not self._supervised(feed):
            self.tell(feed.gateway_id, "supervision", {"session_id": session_id, "supervised": False})

    def observers(self, session_id: str) -> list[Observer]:
        feed = self._feeds.get(session_id)
        return list(feed.observers) if feed is not None else []

    def frames(self, *, session_id: str, token: str, frames: list[list[Any]], dropped: int,
               ended: bool) -> bool | None:
        """Frames from the gateway: fanned out to every observer. Returns whether anybody still watches, or
        None when ``token`` is not this feed's (the caller refuses the call). A session nobody watches has no
        feed: its answer is the same refusal, unless ``token`` is that of its feed that just ended (False), so
        that a caller without the token cannot tell whether a session is watched (a site's silent observers)."""
        feed = self._feeds.get(session_id)
        if feed is None:
            recent = self._ended.get(session_id)
            known = recent[0].encode() if recent is not None else _NO_TOKEN
            if secrets.compare_digest(token.encode(), known) and recent is not None:
                return False
            return None
        if not secrets.compare_digest(token.encode(), feed.token.encode()):
            return None
        for frame in frames:
            if frame[1] in STATE_CODES:
                feed.state[frame[1]] = frame
        for observer in feed.observers:
            observer.offer(frames, dropped)
            if ended:
                observer.finish("the session ended")
        if ended:
            self._end_feed(feed)
        return not ended and bool(feed.observers)

    def _end_feed(self, feed: Feed) -> None:
        """Forget the feed, keeping its token a while (ENDED_FEED_SECONDS) for the gateway's late calls."""
        del self._feeds[feed.session_id]
        now = time.monotonic()
        self._ended[feed.session_id] = (feed.token, now)
        self._ended.move_to_end(feed.session_id)
        while self._ended and (len(self._ended) > ENDED_FEEDS
                               or next(iter(self._ended.values()))[1] < now - ENDED_FEED_SECONDS):
            self._ended.popitem(last=False)

    @staticmethod
    def _supervised(feed: Feed) -> bool:
        return any(observer.supervises for observer in feed.observers)

    def _watch_message(self, feed: Feed) -> dict[str, Any]:
        # "supervised": a supervisor of the site is among the observers (a supervised session runs only then).
        return {"session_id": feed.session_id, "feed": feed.token, "supervised": self._supervised(feed)}
