"""Live supervision under attack: who may watch a session (and so count as the plant's supervisor that a supervised
session waits for), what each refusal says and leaves in the trail — on the real domain and the real API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from broker.api.watch_routes import RECHECK_SECONDS
from broker.errors import Forbidden
from broker.inventory import gateways
from broker.live import supervision
from broker.models import Identity
from tests.fixtures.broker import Api, Plant, new_public_key


def _start(plant: Plant, grant_id: str, kind: str = "shell") -> str:
    with plant.session() as session:
        gateway = gateways.authenticate_gateway(session, plant.gateway_token)
        return gateways.start_session(session, now=plant.clock.now(), gateway=gateway, grant_id=grant_id,
                                      kind=kind, peer="10.0.0.5:50000", command=None, port=None).id


def _join(plant: Plant, username: str, session_id: str) -> supervision.WatchTarget:
    with plant.session() as session:
        viewer = session.scalars(select(Identity).where(Identity.username == username)).one()
        return supervision.join(session, now=plant.clock.now(), viewer=viewer, session_id=session_id, via="api")


def _refusals(plant: Plant, after: int) -> list[dict[str, Any]]:
    return plant.audit("live:watch:refused", after_seq=after)


@pytest.mark.parametrize(("kind", "role"), [("ai_agent", "security"), ("service", "security"),
                                            ("ai_agent", "supervisor"), ("service", "supervisor")])
def test_a_service_or_ai_agent_with_a_watching_role_is_refused(plant: Plant, kind: str, role: str) -> None:
    plant.ensure("vendor1", "sup-a1")
    session_id = _start(plant, plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01"))
    plant.add_user("bot-1", role=role, sites=["plant-a"] if role == "supervisor" else None, kind=kind,
                   owner="sup-a1")
    before = plant.last_seq()

    with pytest.raises(Forbidden, match=f"only people watch live sessions; bot-1 is a {kind} identity"):
        _join(plant, "bot-1", session_id)

    assert plant.audit("live:watch:joined", after_seq=before) == []  # it never joined, nor released the session
    [refusal] = _refusals(plant, before)
    assert (refusal["actor"], refusal["subject"], refusal["outcome"]) == ("bot-1", session_id, "refused")


def test_a_vendor_who_also_supervises_the_site_cannot_watch_their_own_session(api: Api, plant: Plant) -> None:
    plant.ensure("vendor1", "sup-a1", "sup-a2")
    grant = api.grant("vendor1", "sup-a1", asset="hmi-01")
    session_id = _start(plant, grant["id"])
    plant.add_role("vendor1", "supervisor", "plant-a")  # e.g. a company sign-in that maps both groups
    before = plant.last_seq()

    refused = api.as_user("vendor1").get(f"/sessions/{session_id}/watch")

    assert refused.status_code == 403, refused.text
    assert "runs under their own grant" in refused.json()["message"]
    assert plant.audit("live:watch:joined", after_seq=before) == []
    [refusal] = _refusals(plant, before)
    assert refusal["actor"] == "vendor1"
    # Nor can they send themselves a message or end it from the watch view; another supervisor can watch.
    assert api.as_user("vendor1").post(f"/sessions/{session_id}/messages", json={"text": "hi"}).status_code == 403
    assert _join(plant, "sup-a2", session_id).supervises


def test_the_sponsor_of_an_ai_agent_cannot_supervise_the_agents_session(api: Api, plant: Plant) -> None:
    plant.ensure("vendor1", "sup-a1")
    plant.add_user("agent-7", role="vendor", sites=["plant-a"], kind="ai_agent", owner="vendor1", sponsor="vendor1")
    parent = api.grant("vendor1", "sup-a1", asset="hmi-01")
    delegated = api.as_user("vendor1").post(f"/grants/{parent['id']}/delegate", json={
        "agent": "agent-7", "duration": "10m", "commands": [["uptime"]], "public_key": new_public_key()})
    assert delegated.status_code == 201, delegated.text
    session_id = _start(plant, delegated.json()["id"], kind="exec")
    plant.add_role("vendor1", "supervisor", "plant-a")

    with pytest.raises(Forbidden, match="runs under their own grant"):
        _join(plant, "vendor1", session_id)
    assert _join(plant, "sup-a1", session_id).supervises


@pytest.mark.parametrize("text", ["first\u2028second", "first\u2029second", "a\x9b2Jb", "bidi \u202etxt.exe",
                                  "a\r\nb"])
def test_a_message_or_reason_that_is_not_one_plain_line_is_refused_and_nothing_reaches_the_vendor(
        api: Api, plant: Plant, text: str) -> None:
    plant.ensure("vendor1", "sup-a1")
    session_id = _start(plant, api.grant("vendor1", "sup-a1", asset="hmi-01")["id"])
    before = plant.last_seq()
    supervisor = api.as_user("sup-a1")

    message = supervisor.post(f"/sessions/{session_id}/messages", json={"text": text})
    end = supervisor.post(f"/sessions/{session_id}/end", json={"reason": text})

    for refused in (message, end):
        assert refused.status_code == 400, refused.text
        assert "control characters" in refused.json()["message"]
    assert plant.audit("live:message:sent", after_seq=before) == []
    assert plant.audit("access:grant:revoked", after_seq=before) == []  # the session was not ended either


def _drop_role(plant: Plant, username: str, role: str) -> None:
    with plant.session() as session:
        identity = session.scalars(select(Identity).where(Identity.username == username)).one()
        identity.roles = [assignment for assignment in identity.roles if assignment.role != role]


def test_a_supervisor_who_loses_the_site_but_stays_a_reviewer_no_longer_counts_as_supervising(plant: Plant) -> None:
    plant.ensure("vendor1", "sup-a1", "sup-a2")
    session_id = _start(plant, plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01"))
    plant.add_role("sup-a2", "security")
    joined = _join(plant, "sup-a2", session_id)
    assert joined.supervises
    _drop_role(plant, "sup-a2", "supervisor")

    with plant.session() as session:
        viewer = session.scalars(select(Identity).where(Identity.username == "sup-a2")).one()
        with pytest.raises(Forbidden, match="sup-a2 is no longer a supervisor of plant-a"):
            supervision.recheck(session, now=plant.clock.now(), viewer=viewer, target=joined)
        # Joining again as the reviewer they now are is fine, and does not count as supervising.
        assert not supervision.recheck(session, now=plant.clock.now(), viewer=viewer, target=supervision.find_watchable(
            session, now=plant.clock.now(), viewer=viewer, session_id=session_id))


def test_the_watch_stream_ends_when_its_supervisor_is_only_a_reviewer_any_more(api: Api, plant: Plant) -> None:
    """Through the API's stream (asked again every RECHECK_SECONDS): the watch that held a supervised session open
    ends, and its leaving is audited."""
    plant.ensure("vendor1", "sup-a1", "sup-a2")
    session_id = _start(plant, api.grant("vendor1", "sup-a1", asset="hmi-01")["id"])
    plant.add_role("sup-a2", "security")
    client = api.as_user("sup-a2")
    with client.stream("GET", f"/sessions/{session_id}/watch",
                       timeout=httpx.Timeout(RECHECK_SECONDS * 4)) as stream:
        assert stream.status_code == 200
        events = _events(stream.iter_lines())
        assert next(events)[0] == "hello"
        _drop_role(plant, "sup-a2", "supervisor")
        event, data = next(event for event in events if event[0] != "frames")

    assert (event, data["why"]) == ("ended", "sup-a2 is no longer a supervisor of plant-a; watch session "
                                              f"{session_id} again to follow it as sup-a2 (security)")
    deadline = time.monotonic() + 10  # the leave is audited by a task of its own once the stream closed
    while not plant.audit("live:watch:left") and time.monotonic() < deadline:
        time.sleep(0.05)
    [left] = plant.audit("live:watch:left")
    assert (left["actor"], left["subject"]) == ("sup-a2", session_id)


def _events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event is not None:
            yield event, json.loads(line.removeprefix("data: "))
            event = None


@pytest.mark.parametrize("seconds", [b"NaN", b"Infinity", b"-Infinity"])
def test_frames_whose_time_is_not_a_number_are_refused(api: Api, plant: Plant, seconds: bytes) -> None:
    plant.ensure("vendor1", "sup-a1")
    session_id = _start(plant, plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01"))

    refused = api.gateway().post(f"/gateway/live/{session_id}/frames",
                                 content=b'{"frames": [[' + seconds + b', "o", "x"]]}',
                                 headers={"content-type": "application/json"})

    assert refused.status_code == 400, refused.text
    assert "frames.0.0" in refused.json()["message"]


def test_a_supervisor_signed_in_without_a_second_factor_watches_but_does_not_release_a_held_session(
        plant: Plant) -> None:
    """Releasing a supervised session opens the machine to the vendor: it takes a second factor at sign-in, as
    approving does. A supervisor whose company sign-in reported none may watch, as an observer only."""
    from types import SimpleNamespace

    from broker.identity import assurance

    plant.ensure("vendor1", "sup-a1", "sup-a2")
    session_id = _start(plant, plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01"))
    with plant.session() as session:
        viewer = session.scalars(select(Identity).where(Identity.username == "sup-a2")).one()
        # What authenticate_token notes for a token issued without multi-factor (a company sign-in without amr).
        assurance.note_session(session, SimpleNamespace(without_mfa=True, identity_id=viewer.id))  # type: ignore[arg-type]
        weak = supervision.join(session, now=plant.clock.now(), viewer=viewer, session_id=session_id, via="web")
    assert not weak.supervises
    assert weak.label == "sup-a2 (supervisor, plant-a)"  # the vendor still reads who watches
    assert _join(plant, "sup-a2", session_id).supervises  # the same person with a second factor releases it


def test_a_vendor_probing_the_frames_endpoint_cannot_tell_whether_a_silent_observer_watches(
        api: Api, plant: Plant) -> None:
    """The frames endpoint answers a caller without the feed's token the same whether or not anybody watches
    (before, an unwatched session answered 200 and a watched one 403: a vendor could spot a silent observer)."""
    plant.ensure("vendor1", "sup-a1", "sup-a2")
    session_id = _start(plant, api.grant("vendor1", "sup-a1", asset="hmi-01")["id"])
    vendor = api.as_user("vendor1")

    def probe() -> tuple[int, str]:
        answer = vendor.post(f"/gateway/live/{session_id}/frames", json={"frames": []},
                             headers={"X-Gatepass-Feed": "a-guess"})
        return answer.status_code, answer.json()["message"]

    unwatched = probe()
    with api.as_user("sup-a2").stream("GET", f"/sessions/{session_id}/watch", timeout=10) as stream:
        assert stream.status_code == 200
        assert next(_events(stream.iter_lines()))[0] == "hello"
        watched = probe()
    assert unwatched == watched == (
        403, f"live frames for session {session_id} need the feed token the broker gave its gateway")
    refused = [event for event in plant.audit("api:request:refused") if event["subject"].endswith("/frames")]
    assert len(refused) == 2  # both probes are audited, the same way
    assert refused[0]["details"] == refused[1]["details"]
