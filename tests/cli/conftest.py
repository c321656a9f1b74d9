"""Fixtures for the CLI tests: a client state directory, and the real broker (``tests/fixtures/broker.py``).

- ``plant`` / ``broker`` / ``api``: a fresh copy of the standard plant for this test, the broker app over it
  under uvicorn on 127.0.0.1, and httpx clients to set things up and look at them through the API
- ``ctx``: the CLI's ``Context`` pointed at that broker (no transport: the CLI's own httpx client over TCP),
  on the plant's ``FixedClock`` so the client's expiry checks agree with the broker's
- ``signed_in("sup-a1")`` / ``logged_in``: a saved session holding a token the broker itself issued
- ``offline_ctx``: for commands that must fail before any request is made (no broker is started)

The fixtures are composed here rather than shared with ``tests/broker/conftest.py``: pytest scopes them per
directory, so each suite builds its own template plant once per run (~1 s).
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.clock import FixedClock
from cli.context import Context
from cli.state import ClientState, Session
from tests.fixtures.broker import T0, BrokerServer, Plant

# Never contacted: the server named by offline tests, whose commands fail before any request is made.
OFFLINE_SERVER = "https://gatepass.plant.example"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "gatepass-home"


def make_context(home: Path, *, server: str, clock: Callable[[], dt.datetime]) -> Context:
    return Context(
        environ={"GATEPASS_HOME": str(home), "GATEPASS_SERVER": server},
        state=ClientState(home),
        out=io.StringIO(),
        err=io.StringIO(),
        clock=clock,
        sleep=lambda _seconds: None,
        transport=None,  # the CLI's own httpx client, over TCP to the broker
    )


@pytest.fixture
def ctx(home: Path, broker: BrokerServer, plant: Plant) -> Context:
    """The CLI's context against the real broker, on the plant's clock."""
    return make_context(home, server=broker.url, clock=plant.clock.now)


@pytest.fixture
def offline_ctx(home: Path) -> Context:
    """The CLI's context for commands that fail before reaching a broker; none is started."""
    clock = FixedClock(T0)
    return make_context(home, server=OFFLINE_SERVER, clock=clock.now)


@pytest.fixture
def signed_in(ctx: Context, broker: BrokerServer, plant: Plant) -> Callable[[str], Session]:
    """``signed_in("sup-a1")`` saves a session for that user (replacing any saved one) holding the token the
    broker issued to them at ``T0`` through its own login."""

    def sign_in(username: str) -> Session:
        token, expires_at = plant.tokens[username]
        assert plant.clock.now() < expires_at, f"the sign-in of {username} at T0 has expired"
        session = Session(server=broker.url, username=username, token=token, expires_at=expires_at)
        ctx.state.save_session(session)
        return session

    return sign_in


@pytest.fixture
def logged_in(signed_in: Callable[[str], Session]) -> Session:
    """vendor1 (vendor, every site) signed in."""
    return signed_in("vendor1")
