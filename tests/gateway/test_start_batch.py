"""gateway/start_batch.py: how session starts that wait together are sent, answered one by one, and failed closed.

The senders here are plain coroutines standing in for the two gateway API calls (the HTTP side of the same
paths runs against the fake and the real broker in test_broker_contract.py and test_tunnels.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from gateway.errors import BrokerCallFailed, BrokerProtocolError, BrokerRefused, BrokerUnavailable
from gateway.start_batch import StartBatcher

pytestmark = pytest.mark.anyio


class Broker:
    """Answers starts like the broker: a session id each, a 403 for grant ``grt-revoked``."""

    def __init__(self) -> None:
        self.singles: list[Mapping[str, Any]] = []
        self.batches: list[list[Mapping[str, Any]]] = []
        self.fail: Exception | None = None
        self.short = False
        self.release = asyncio.Event()
        self.release.set()
        self._next = 0

    def _answer(self, body: Mapping[str, Any]) -> str | BrokerRefused:
        if body["grant_id"] == "grt-revoked":
            return BrokerRefused(403, "forbidden", "the grant for plc-01 is revoked")
        self._next += 1
        return f"ses-{self._next:08x}"

    async def one(self, body: Mapping[str, Any]) -> str:
        await self.release.wait()
        self.singles.append(body)
        answer = self._answer(body)
        if isinstance(answer, BrokerRefused):
            raise answer
        return answer

    async def many(self, bodies: list[Mapping[str, Any]]) -> list[str | BrokerRefused]:
        await self.release.wait()
        self.batches.append(bodies)
        if self.fail is not None:
            raise self.fail
        answers = [self._answer(body) for body in bodies]
        return answers[:-1] if self.short else answers


def _body(grant_id: str = "grt-1", index: int = 0) -> dict[str, Any]:
    return {"grant_id": grant_id, "kind": "tcp", "peer": f"198.51.100.7:{50000 + index}", "command": None, "port": 502}


async def test_a_lone_start_goes_alone_and_at_once() -> None:
    broker = Broker()
    batcher = StartBatcher(broker.one, broker.many)

    assert await batcher.start(_body()) == "ses-00000001"
    assert (len(broker.singles), broker.batches, batcher.calls) == (1, [], 1)


async def test_starts_waiting_together_share_calls_and_keep_their_own_answers() -> None:
    broker = Broker()
    batcher = StartBatcher(broker.one, broker.many, max_batch=100)
    bodies = [_body("grt-revoked" if index == 7 else "grt-1", index) for index in range(250)]

    answers = await asyncio.gather(*(batcher.start(body) for body in bodies), return_exceptions=True)

    assert [len(batch) for batch in broker.batches] == [100, 100, 50]
    assert [body for batch in broker.batches for body in batch] == bodies  # in order, each once
    refused = answers.pop(7)
    assert isinstance(refused, BrokerRefused)
    assert refused.status == 403
    assert answers == [f"ses-{n:08x}" for n in range(1, 250)]


@pytest.mark.parametrize("failure", ["unavailable", "short answer", "bug"])
async def test_a_call_that_fails_fails_every_start_it_carried(failure: str) -> None:
    broker = Broker()
    if failure == "unavailable":
        broker.fail = BrokerUnavailable("the broker answered 503")
    elif failure == "short answer":
        broker.short = True
    else:
        broker.fail = KeyError("grant_id")
    batcher = StartBatcher(broker.one, broker.many)

    answers = await asyncio.gather(*(batcher.start(_body(index=i)) for i in range(5)), return_exceptions=True)

    assert all(isinstance(answer, BrokerCallFailed) for answer in answers), answers
    if failure == "short answer":
        assert all(isinstance(answer, BrokerProtocolError) for answer in answers)
    # Nothing is stuck: the next start is sent as usual.
    broker.fail, broker.short = None, False
    assert (await batcher.start(_body())).startswith("ses-")


async def test_a_start_whose_caller_went_away_does_not_disturb_the_others_and_is_ended() -> None:
    broker = Broker()
    broker.release.clear()
    orphans: list[str] = []
    batcher = StartBatcher(broker.one, broker.many, orphaned=orphans.append)
    waiting = [asyncio.ensure_future(batcher.start(_body(index=i))) for i in range(4)]
    await asyncio.sleep(0)  # all four are waiting for the broker
    waiting[1].cancel()
    broker.release.set()

    answers = await asyncio.gather(*waiting, return_exceptions=True)

    assert isinstance(answers[1], asyncio.CancelledError)
    assert answers[0::2] == ["ses-00000001", "ses-00000003"]
    assert answers[3] == "ses-00000004"
    assert orphans == ["ses-00000002"]  # recorded for nobody: handed over to be reported ended


async def test_a_broker_without_the_batch_endpoint_gets_one_call_per_start() -> None:
    broker = Broker()

    async def no_batch_endpoint(_bodies: list[Mapping[str, Any]]) -> list[str | BrokerRefused]:
        raise BrokerRefused(404, "not_found", "there is no such page or API endpoint")

    batcher = StartBatcher(broker.one, no_batch_endpoint)

    answers = await asyncio.gather(*(batcher.start(_body(index=i)) for i in range(6)))

    assert len(set(answers)) == 6
    assert len(broker.singles) == 6
