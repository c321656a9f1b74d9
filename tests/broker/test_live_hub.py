"""The broker's live fan-out on its own event loop: a slow observer loses its oldest frames (and is told how
many) without holding up anything else; the gateway is asked for a feed while, and only while, someone watches."""

from __future__ import annotations

import asyncio

import pytest

from broker.live.hub import OBSERVER_BYTES, OBSERVER_QUEUE, LiveHub, Observer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_the_first_observer_asks_for_the_feed_and_the_last_one_stops_it() -> None:
    hub = LiveHub()
    link = hub.connect(7)
    alice, bob = Observer("alice", "alice (security)"), Observer("bob", "bob (supervisor, plant-a)")
    hub.join(session_id="ses-1", gateway_id=7, observer=alice)
    hub.join(session_id="ses-1", gateway_id=7, observer=bob)
    event, data = link.queue.get_nowait()
    assert event == "watch"
    assert data["session_id"] == "ses-1"
    assert link.queue.empty()  # one feed, however many watch
    # A gateway that reconnects is asked again for what is watched.
    again = hub.connect(7)
    assert again.queue.get_nowait() == ("watch", data)
    hub.leave(session_id="ses-1", observer=alice)
    assert link.queue.empty()
    hub.leave(session_id="ses-1", observer=bob)
    assert link.queue.get_nowait() == ("unwatch", {"session_id": "ses-1"})
    assert hub.frames(session_id="ses-1", token=data["feed"], frames=[], dropped=0, ended=False) is False


async def test_a_stalled_observer_drops_its_oldest_frames_and_the_others_get_everything() -> None:
    hub = LiveHub()
    link = hub.connect(1)
    stalled, reading = Observer("s", "s (security)"), Observer("r", "r (security)")
    hub.join(session_id="ses-2", gateway_id=1, observer=stalled)
    hub.join(session_id="ses-2", gateway_id=1, observer=reading)
    token = link.queue.get_nowait()[1]["feed"]
    got: list[list[object]] = []
    for index in range(10 * OBSERVER_QUEUE):
        assert hub.frames(session_id="ses-2", token=token, frames=[[0.0, "o", str(index)]], dropped=0,
                          ended=False) is True
        frames, dropped = reading.take()
        assert dropped == 0
        got += frames
    assert len(got) == 10 * OBSERVER_QUEUE
    frames, dropped = stalled.take()
    assert len(frames) == OBSERVER_QUEUE  # bounded
    assert dropped == 9 * OBSERVER_QUEUE  # and told how many went
    assert frames[-1][2] == str(10 * OBSERVER_QUEUE - 1)  # the newest kept
    # Frames the gateway itself had to drop reach every observer as a count.
    # Large frames are bounded by their size as well.
    big = [[0.0, "o", "y" * 32768] for _ in range(64)]
    hub.frames(session_id="ses-2", token=token, frames=big, dropped=0, ended=False)
    reading.take()
    frames, dropped = stalled.take()
    assert sum(len(str(frame[2])) for frame in frames) <= OBSERVER_BYTES
    assert dropped == 64 - len(frames)
    hub.frames(session_id="ses-2", token=token, frames=[], dropped=5, ended=True)
    assert reading.take() == ([], 5)
    assert reading.ended == "the session ended"


async def test_frames_with_another_feeds_token_are_refused() -> None:
    hub = LiveHub()
    hub.join(session_id="ses-3", gateway_id=1, observer=Observer("a", "a (security)"))
    assert hub.frames(session_id="ses-3", token="guessed", frames=[[0.0, "o", "x"]], dropped=0, ended=False) is None


async def test_the_gateway_hears_when_a_supervisor_of_the_site_starts_and_stops_watching() -> None:
    hub = LiveHub()
    link = hub.connect(3)
    reviewer = Observer("alice", "alice (security)")
    supervisor = Observer("bob", "bob (supervisor, plant-s)", supervises=True)
    hub.join(session_id="ses-4", gateway_id=3, observer=reviewer)
    assert link.queue.get_nowait()[1]["supervised"] is False  # a security reviewer is no plant supervisor
    hub.join(session_id="ses-4", gateway_id=3, observer=supervisor)
    assert link.queue.get_nowait() == ("supervision", {"session_id": "ses-4", "supervised": True})
    assert hub.connect(3).queue.get_nowait()[1]["supervised"] is True  # a reconnect hears it with the watch
    hub.leave(session_id="ses-4", observer=supervisor)
    assert link.queue.get_nowait() == ("supervision", {"session_id": "ses-4", "supervised": False})
    hub.leave(session_id="ses-4", observer=reviewer)
    assert link.queue.get_nowait() == ("unwatch", {"session_id": "ses-4"})


async def test_an_observer_joining_a_running_feed_starts_from_where_the_session_stands() -> None:
    hub = LiveHub()
    link = hub.connect(3)
    first, later = Observer("a", "a (security)"), Observer("b", "b (supervisor, plant-a)")
    hub.join(session_id="ses-4", gateway_id=3, observer=first)
    token = link.queue.get_nowait()[1]["feed"]
    hub.frames(session_id="ses-4", token=token, dropped=0, ended=False, frames=[
        [0.0, "co", "192.0.2.7:50122 502"], [0.1, "cb", "12 29"], [0.2, "q", "1 3 0-9 Read Holding Registers"],
        [1.1, "cb", "24 58"]])
    hub.join(session_id="ses-4", gateway_id=3, observer=later)
    # The connection and its latest totals, not the requests that passed before this observer came.
    assert later.take() == ([[0.0, "co", "192.0.2.7:50122 502"], [1.1, "cb", "24 58"]], 0)
    assert len(first.take()[0]) == 4


async def test_an_observer_joins_only_once_its_stream_runs_and_leaves_when_it_closes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A watch response that is never streamed (the client went away before its first byte) must leave nothing
    joined: a supervisor's watch that never left would keep a supervised session released with nobody watching."""
    from types import SimpleNamespace

    from broker.api import watch_routes
    from broker.api.watch_routes import observe
    from broker.live.supervision import WatchTarget

    audited: list[str] = []

    async def audit_leave(_state: object, target: WatchTarget, _seconds: float, _dropped: int) -> None:
        audited.append(target.observer)

    monkeypatch.setattr(watch_routes, "_audit_leave", audit_leave)

    hub = LiveHub()
    link = hub.connect(7)
    target = WatchTarget(session_id="ses-1", gateway_id=7, grant_id="grt-1", vendor="vendor1", asset="hmi-01",
                         site="plant-a", kind="shell", command=None, observer="bob",
                         label="bob (supervisor, plant-a)", supervises=True)
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(live=hub)))

    never_streamed = observe(request, None, target, "token")  # type: ignore[arg-type]
    assert hub.observers("ses-1") == []
    assert link.queue.empty()  # the gateway was not asked for a feed, nor told of a supervisor
    del never_streamed

    streamed = observe(request, None, target, "token")  # type: ignore[arg-type]
    body = streamed.body_iterator
    assert (await body.__anext__()).startswith(b"event: hello")  # type: ignore[union-attr]
    assert [o.label for o in hub.observers("ses-1")] == ["bob (supervisor, plant-a)"]
    assert link.queue.get_nowait()[0] == "watch"
    await body.aclose()  # type: ignore[union-attr]
    assert hub.observers("ses-1") == []
    await asyncio.sleep(0)  # the leave's audit runs as a task of its own
    assert audited == ["bob"]


async def test_a_wrong_token_gets_the_same_refusal_whether_or_not_the_session_is_watched() -> None:
    """A site may let observers watch silently: nobody without the feed's token may learn from the answer that
    a session is watched. The gateway's own late call for a watch that just ended still hears "stop"."""
    hub = LiveHub()
    link = hub.connect(1)
    observer = Observer("a", "a (security)")
    assert hub.frames(session_id="ses-5", token="guessed", frames=[], dropped=0, ended=False) is None  # unwatched
    hub.join(session_id="ses-5", gateway_id=1, observer=observer)
    token = link.queue.get_nowait()[1]["feed"]
    assert hub.frames(session_id="ses-5", token="guessed", frames=[], dropped=0, ended=False) is None  # watched
    hub.leave(session_id="ses-5", observer=observer)
    assert hub.frames(session_id="ses-5", token=token, frames=[[0.0, "o", "x"]], dropped=0, ended=False) is False
    assert hub.frames(session_id="ses-5", token="guessed", frames=[], dropped=0, ended=False) is None
    assert hub.frames(session_id="ses-6", token=token, frames=[], dropped=0, ended=False) is None  # not ses-6's


async def test_ended_feed_tokens_are_kept_for_a_while_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.live import hub as hub_module

    monkeypatch.setattr(hub_module, "ENDED_FEEDS", 3)
    hub = LiveHub()
    link = hub.connect(1)
    tokens = {}
    for index in range(5):
        observer = Observer("a", "a (security)")
        hub.join(session_id=f"ses-{index}", gateway_id=1, observer=observer)
        tokens[index] = link.queue.get_nowait()[1]["feed"]
        hub.leave(session_id=f"ses-{index}", observer=observer)
        while not link.queue.empty():
            link.queue.get_nowait()
    # The oldest two were forgotten (refused now); the last three still hear "stop".
    answers = [hub.frames(session_id=f"ses-{i}", token=tokens[i], frames=[], dropped=0, ended=False) for i in range(5)]
    assert answers == [None, None, False, False, False]
    monkeypatch.setattr(hub_module, "ENDED_FEED_SECONDS", 0.0)
    observer = Observer("a", "a (security)")
    hub.join(session_id="ses-9", gateway_id=1, observer=observer)
    hub.leave(session_id="ses-9", observer=observer)  # ending one drops every entry past its time
    assert hub.frames(session_id="ses-4", token=tokens[4], frames=[], dropped=0, ended=False) is None
