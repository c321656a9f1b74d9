"""Session starts that wait at the same time go to the broker in one call (``POST /gateway/sessions/batch``).

Every connection through the gateway is recorded by the broker before it reaches the asset (fail closed).
One HTTP call and one commit per start made 1,000 tunnel connections opened at once take 15 s; here a
start that finds the senders idle goes out alone at once (no added wait), and the starts that arrive while
calls are in flight are sent together by the next call. Each start still gets its own answer: a session id,
or its own refusal (``BrokerRefused``); a call that fails fails every start it carried, so none of them is
let through unrecorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.errors import BrokerCallFailed, BrokerProtocolError, BrokerRefused

logger = logging.getLogger("gatepass.gateway.broker")

# Calls carrying starts at once: a lone start never queues behind a large batch, and the broker is not flooded.
SENDERS = 2
# Starts per call: a call stays short (about a millisecond per start on the broker) and well under its limit.
MAX_BATCH = 100

Body = Mapping[str, Any]
SendOne = Callable[[Body], Awaitable[str]]
SendMany = Callable[[list[Body]], Awaitable[list[str | BrokerRefused]]]
Orphaned = Callable[[str], None]


class StartBatcher:
    """Coalesces concurrent ``session_start`` calls of one gateway."""

    def __init__(self, send_one: SendOne, send_many: SendMany, *, senders: int = SENDERS,
                 max_batch: int = MAX_BATCH, orphaned: Orphaned | None = None) -> None:
        self._send_one = send_one
        self._send_many = send_many
        # Told of a session the broker recorded for a caller that had gone away meanwhile (its channel closed),
        # so that session is reported ended instead of staying open in the trail.
        self._orphaned = orphaned
        self._senders = senders
        self._max_batch = max_batch
        self._waiting: list[tuple[Body, asyncio.Future[str]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._batch_supported = True
        self.calls = 0  # HTTP calls made, for tests and the bench's explanation

    async def start(self, body: Body) -> str:
        """The new session's id once the broker recorded it; BrokerCallFailed if it did not."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append((body, future))
        if len(self._running) < self._senders:
            task = asyncio.create_task(self._send_waiting())
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return await future

    async def _send_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            try:
                answers = await self._send(batch)
            except BaseException as exc:
                # Nobody may wait forever, and no start is taken as recorded: every one in the call fails.
                failure = exc if isinstance(exc, BrokerCallFailed) else BrokerCallFailed(
                    f"the session start could not be sent to the broker ({type(exc).__name__})")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(failure)
                if not isinstance(exc, Exception):
                    raise  # cancelled (the gateway is stopping)
                if not isinstance(exc, BrokerCallFailed):
                    logger.exception("sending session starts to the broker failed")
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():  # its caller gave up (the channel went away)
                    if isinstance(answer, str) and self._orphaned is not None:
                        self._orphaned(answer)
                    continue
                if isinstance(answer, BrokerRefused):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _send(self, batch: list[tuple[Body, asyncio.Future[str]]]) -> list[str | BrokerRefused]:
        bodies = [body for body, _ in batch]
        if len(bodies) > 1 and self._batch_supported:
            self.calls += 1
            try:
                answers = await self._send_many(bodies)
            except BrokerRefused as exc:
                if exc.status not in (404, 405):
                    raise
                # A broker from before the batch endpoint: one call per start, as it always was.
                logger.info("the broker has no batch endpoint for session starts; sending them one by one")
                self._batch_supported = False
            else:
                if len(answers) != len(bodies):
                    raise BrokerProtocolError(
                        f"the broker answered {len(answers)} of {len(bodies)} session starts")
                return answers
        self.calls += len(bodies)
        return list(await asyncio.gather(*(self._one(body) for body in bodies)))

    async def _one(self, body: Body) -> str | BrokerRefused:
        try:
            return await self._send_one(body)
        except BrokerRefused as exc:
            return exc
