"""Decisions made at the same moment by different approvers (DESIGN invariant 3 under concurrency)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.fixtures.broker import Api, Plant

ROUNDS = 6


def _at_once(calls: list[tuple[httpx.Client, str]]) -> list[httpx.Response]:
    """POST each (client, path) from its own thread, released together."""
    barrier = threading.Barrier(len(calls))

    def post(call: tuple[httpx.Client, str]) -> httpx.Response:
        client, path = call
        barrier.wait()
        return client.post(path, json={"comment": "at once"})

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(post, calls))


def test_two_approvals_at_the_same_moment_grant_access(api: Api, plant: Plant) -> None:
    """Two distinct approvers of a two-approval asset approve together: the request must end up approved with
    one grant, not pending with both approvals recorded (a lost update)."""
    first, second = api.as_user("sup-a1"), api.as_user("sup-a2")
    outcomes = []
    for _ in range(ROUNDS):
        request = api.create_request("vendor1", asset="rtu-01")
        path = f"/requests/{request['id']}/approve"

        responses = _at_once([(first, path), (second, path)])

        assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
        status = plant.row("SELECT status FROM access_requests WHERE id = :id", id=request["id"])[0]
        outcomes.append((status, plant.count("decisions", f"WHERE request_id = '{request['id']}'"),
                         plant.count("grants", f"WHERE request_id = '{request['id']}'")))
    assert outcomes == [("approved", 2, 1)] * ROUNDS


def test_one_approval_at_a_time_even_when_two_approvers_click_together(api: Api, plant: Plant) -> None:
    first, second = api.as_user("sup-a1"), api.as_user("sup-a2")
    for _ in range(ROUNDS):
        request = api.create_request("vendor1", asset="hmi-01")
        path = f"/requests/{request['id']}/approve"

        responses = _at_once([(first, path), (second, path)])

        assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
        assert plant.count("grants", f"WHERE request_id = '{request['id']}'") == 1
        assert plant.count("decisions", f"WHERE request_id = '{request['id']}'") == 1
        approved = [e for e in plant.audit("access:request:approved") if e["subject"] == request["id"]]
        assert len(approved) == 1
