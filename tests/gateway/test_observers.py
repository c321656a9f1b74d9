"""The gateway's side of live supervision without a network: a feed's buffer is bounded and says what it dropped,
and the watch tap changes nothing for the session it wraps (bytes, recording, fail-closed)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.observers import FEED_BUFFER_BYTES, LiveFeed, LiveSession, WatchTap, apply_live_event
from gateway.taps import PassThrough, is_recorded

pytestmark = pytest.mark.anyio


async def test_a_feed_keeps_at_most_its_buffer_and_counts_what_it_dropped() -> None:
    feed = LiveFeed("token", width=120, height=40)
    chunk = b"x" * 4096
    for _ in range(1000):  # 4 MB of output while the broker is slow
        feed.output(chunk, stderr=False)
    frames, dropped, size = feed.take()
    assert size <= FEED_BUFFER_BYTES
    assert sum(len(frame[2]) for frame in frames) == size
    assert dropped == 1001 - len(frames)  # the resize frame went first, then the oldest output
    assert frames[-1][1:] == ["o", "x" * 4096]  # the newest is kept: what the screen shows now
    assert feed.take() == ([], 0, 0)


async def test_a_feed_keeps_a_character_split_across_chunks_whole_and_marks_binary() -> None:
    feed = LiveFeed("token", width=80, height=24)
    text = "Temperatur 21 °C\n".encode()
    cut = text.index(b"\xb0")
    feed.output(text[:cut], stderr=False)
    feed.output(text[cut:], stderr=False)
    feed.output(b"\xff\xfe\x00", stderr=False)
    frames, _, _ = feed.take()
    assert [frame[1:] for frame in frames] == [["r", "80x24"], ["o", "Temperatur 21 "], ["o", "°C\n"],
                                               ["ob", "//4A"]]


class Notes:
    def __init__(self) -> None:
        self.told: list[str] = []
        self.ended: list[str] = []


async def test_the_watch_tap_passes_everything_and_copies_only_while_watched() -> None:
    from gateway.broker_client import BrokerClient
    from gateway.observers import LiveRegistry

    broker = BrokerClient("http://127.0.0.1:9", "gpg_unused")  # never called: no feed sends in this test
    registry = LiveRegistry(broker)
    notes = Notes()
    tap = registry.track(PassThrough(), session_id="ses-1", record_input=False, width=0, height=0,
                         tell=notes.told.append, end=notes.ended.append)
    assert isinstance(tap, WatchTap)
    assert tap.from_target(b"before", stderr=False) == b"before"
    assert tap.live.feed is None  # unwatched: nothing kept
    feed = LiveFeed("t", width=tap.live.width, height=tap.live.height)
    tap.live.feed = feed  # as registry.watch would, without its sender
    assert tap.from_client(b"typed") == (b"typed", b"")
    assert tap.from_target(b"after", stderr=True) == b"after"
    tap.note("gatepass: bob (supervisor, plant-a) is watching this session")
    tap.resized(100, 30)
    frames, _, _ = feed.take()
    # Input is not copied where the site does not record it; the default size stands in for no PTY.
    assert [frame[1:] for frame in frames] == [["r", "80x24"], ["o", "after"],
                                               ["m", "gatepass: bob (supervisor, plant-a) is watching this session"],
                                               ["r", "100x30"]]
    apply_live_event(registry, "notice", {"session_id": "ses-1", "text": "hello\x1b[2J"})
    apply_live_event(registry, "end", {"session_id": "ses-1", "text": "gatepass: ended"})
    apply_live_event(registry, "notice", {"session_id": "ses-other", "text": "not ours"})
    assert notes.told == ["hello?[2J"]  # never an escape sequence on the vendor's terminal
    assert notes.ended == ["gatepass: ended"]
    assert tap.close(0) is None
    frames, _, _ = feed.take()
    assert frames[-1][1:] == ["m", "exit 0"]
    assert feed.ended
    assert not registry.watching("ses-1")
    await broker.aclose()


async def test_is_recorded_looks_through_the_watch_tap() -> None:
    live = LiveSession(session_id="s", record_input=True, tell=print, end=print, width=80, height=24)
    assert not is_recorded(WatchTap(PassThrough(), live, registry=None))  # type: ignore[arg-type]


async def test_a_broker_without_live_supervision_leaves_supervised_sessions_unsupervised() -> None:
    """A 404 on the live link (a broker from before live supervision, e.g. after a downgrade) ends the link for
    good; a session a supervisor was watching must not stay released (fail closed)."""
    from gateway.errors import BrokerRefused
    from gateway.observers import LiveRegistry, follow_live

    class OldBroker:
        async def live_events(self) -> Any:
            raise BrokerRefused(404, "not_found", "Not Found")
            yield  # an async generator, as BrokerClient.live_events is

    registry = LiveRegistry(OldBroker())  # type: ignore[arg-type]
    heard: list[bool] = []
    notes = Notes()
    registry.track(PassThrough(), session_id="ses-1", record_input=False, width=0, height=0,
                   tell=notes.told.append, end=notes.ended.append, on_supervision=heard.append)
    registry.supervision("ses-1", True)
    assert heard == [True]
    await follow_live(OldBroker(), registry)  # type: ignore[arg-type]  # returns: nothing to follow
    assert heard == [True, False]
    assert registry.session("ses-1").supervised is False  # type: ignore[union-attr]
