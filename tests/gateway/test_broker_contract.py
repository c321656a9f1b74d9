"""The fake broker answers like the real one (issue 10, "a fake is only as good as its contract test"): the same
``BrokerClient`` calls, run against ``tests/gateway/fake_broker.py`` and against the real broker under uvicorn,
must give the same answers — or the gateway tests that run on the fake prove nothing about production."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncssh
import pytest
from sqlalchemy import select

from broker.access import workflow
from broker.inventory.gateway_events import NullPublisher
from broker.models import Identity
from gateway.broker_client import BrokerClient
from gateway.errors import BrokerRefused
from tests.fixtures.broker import BrokerServer, Plant, new_public_key
from tests.gateway.fake_broker import TOKEN, FakeBroker

pytestmark = pytest.mark.anyio
PEER = "198.51.100.7:50123"
# What the real broker sends for the standard plant's hmi-01 (a password login); the fake sends what it is given.
TARGET = {"host": "10.20.0.5", "ssh_port": 22, "username": "root", "password": "target-password", "private_key": None,
          "host_key": new_public_key()}


@dataclass
class Side:
    """One broker, fake or real, as the contract cases see it."""

    client: BrokerClient
    make_grant: Callable[[], tuple[str, int]]  # (grant id, certificate serial) of a fresh grant on hmi-01
    revoke: Callable[[str], None]


def _fake_side(fake: FakeBroker, client: BrokerClient) -> Side:
    def make_grant() -> tuple[str, int]:
        key = asyncssh.generate_private_key("ssh-ed25519")
        grant, _ = fake.issue(key, asset="hmi-01", ends_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
                              target=TARGET)
        return grant.grant_id, grant.serial

    return Side(client=client, make_grant=make_grant, revoke=fake.revoke)


def _real_side(plant: Plant, client: BrokerClient) -> Side:
    def make_grant() -> tuple[str, int]:
        grant_id = plant.request_and_approve("vendor1", "sup-a1", asset="hmi-01", public_key=new_public_key())
        return grant_id, int(plant.row("SELECT serial FROM grants WHERE id = :id", id=grant_id)[0])

    def revoke(grant_id: str) -> None:
        with plant.session() as session:
            admin = session.scalars(select(Identity).where(Identity.username == "admin")).one()
            workflow.revoke_grant(session, now=plant.clock.now(), events=NullPublisher(), actor=admin,
                                grant_id=grant_id, reason="contract test")

    return Side(client=client, make_grant=make_grant, revoke=revoke)


@pytest.fixture(params=["fake", "real"])
async def side(request: pytest.FixtureRequest, fake_broker: FakeBroker, broker: BrokerServer,
               plant: Plant) -> AsyncIterator[Side]:
    if request.param == "fake":
        client = BrokerClient(fake_broker.url, TOKEN)
        made = _fake_side(fake_broker, client)
    else:
        client = BrokerClient(broker.url, plant.gateway_token)
        made = _real_side(plant, client)
    try:
        yield made
    finally:
        await client.aclose()


async def test_register_names_the_gateway_and_the_user_ca(side: Side) -> None:
    registration = await side.client.register(ssh_host="127.0.0.1", ssh_port=2222, host_key=new_public_key())
    assert registration.user_ca.startswith("ssh-ed25519 ")
    assert registration.gateway


async def test_authorize_a_usable_grant(side: Side) -> None:
    grant_id, serial = side.make_grant()
    auth = await side.client.authorize(grant_id=grant_id, serial=serial, asset="hmi-01", peer=PEER)
    assert (auth.grant_id, auth.asset, auth.identity, auth.ssh, auth.interactive) == (
        grant_id, "hmi-01", "vendor1", True, True)
    assert auth.target is not None
    assert auth.ends_at.tzinfo is not None


@pytest.mark.parametrize("case", ["unknown grant", "wrong serial", "other asset", "revoked"])
async def test_authorize_refuses_with_403_and_a_reason(side: Side, case: str) -> None:
    grant_id, serial = side.make_grant()
    asset = "hmi-01"
    if case == "unknown grant":
        grant_id = "grt-00000000"
    elif case == "wrong serial":
        serial += 1
    elif case == "other asset":
        asset = "plc-01"
    else:
        side.revoke(grant_id)
    with pytest.raises(BrokerRefused) as refused:
        await side.client.authorize(grant_id=grant_id, serial=serial, asset=asset, peer=PEER)
    assert refused.value.status == 403
    assert refused.value.message


async def test_grants_status_knows_its_grants_only(side: Side) -> None:
    grant_id, _ = side.make_grant()
    states = await side.client.grants_status([grant_id, "grt-00000000"])
    assert set(states) == {grant_id}
    assert states[grant_id].status == "active"
    side.revoke(grant_id)
    assert (await side.client.grants_status([grant_id]))[grant_id].status == "revoked"


async def test_a_session_starts_ends_once_and_a_second_end_is_a_conflict(side: Side) -> None:
    grant_id, _ = side.make_grant()
    session_id = await side.client.session_start(grant_id=grant_id, kind="exec", peer=PEER, command="uptime")
    assert session_id.startswith("ses-")
    await side.client.session_end(session_id, reason="client_closed", bytes_in=1, bytes_out=2)
    with pytest.raises(BrokerRefused) as refused:
        await side.client.session_end(session_id, reason="client_closed", bytes_in=1, bytes_out=2)
    assert refused.value.status == 409


async def test_reports_on_unknown_things_are_404(side: Side) -> None:
    with pytest.raises(BrokerRefused) as refused:
        await side.client.refusal(grant_id="grt-00000000", kind="forward", reason="not granted")
    assert refused.value.status == 404
    with pytest.raises(BrokerRefused) as refused:
        await side.client.session_end("ses-00000000", reason="client_closed", bytes_in=0, bytes_out=0)
    assert refused.value.status == 404


async def test_starts_sent_together_are_each_answered_as_alone(side: Side) -> None:
    """Starts waiting at the same time share one call (gateway/start_batch.py); each gets its own session or
    its own refusal, as a call of its own would."""
    grant_id, _ = side.make_grant()
    revoked, _ = side.make_grant()
    side.revoke(revoked)
    calls = side.client.starts.calls

    answers = await asyncio.gather(
        *(side.client.session_start(grant_id=gid, kind="exec", peer=PEER, command="uptime")
          for gid in (grant_id, revoked, grant_id, grant_id)), return_exceptions=True)

    assert side.client.starts.calls == calls + 1
    first, refused, *others = answers
    assert isinstance(refused, BrokerRefused)
    assert refused.status == 403
    assert refused.message
    ids = [first, *others]
    assert all(isinstance(session_id, str) and session_id.startswith("ses-") for session_id in ids)
    assert len(set(ids)) == 3
    for session_id in ids:
        assert isinstance(session_id, str)
        await side.client.session_end(session_id, reason="client_closed", bytes_in=0, bytes_out=0)
