"""Follow the broker's event stream, reconnecting with backoff, and resync live grants on every connect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from gateway.broker_client import BrokerClient
from gateway.errors import BrokerCallFailed, BrokerRefused
from gateway.models import GrantState
from gateway.monitor import GrantMonitor

logger = logging.getLogger("gatepass.gateway.sync")
# The broker's answer to a retired gateway's credential (broker.errors.GatewayRetired).
RETIRED = "gateway_retired"


async def resync(broker: BrokerClient, monitor: GrantMonitor) -> None:
    """Ask the broker about every grant with a live connection and apply the answers.

    A grant the broker no longer knows is cut: deny by default rather than keep an
    unaccountable connection open.
    """
    grant_ids = monitor.live_grant_ids()
    if not grant_ids:
        return
    states = await broker.grants_status(grant_ids)
    for grant_id in grant_ids:
        state = states.get(grant_id)
        if state is None:
            monitor.cut_grant(grant_id, "revoked", detail="the broker no longer knows this grant")
        else:
            monitor.apply(state)


def apply_event(monitor: GrantMonitor, event_type: str, data: object) -> None:
    if event_type != "grant" or not isinstance(data, dict):
        return
    grant_id = data.get("grant_id")
    if not isinstance(grant_id, str):
        logger.warning("grant event without grant_id ignored")
        return
    try:
        monitor.apply(GrantState.from_json(grant_id, data))
    except BrokerCallFailed as exc:
        # An unreadable event is logged and the next resync catches up; ends_at still holds.
        logger.warning("unreadable grant event for %s: %s", grant_id, exc)


async def follow_broker(
    broker: BrokerClient,
    monitor: GrantMonitor,
    *,
    initial_backoff: float = 0.5,
    max_backoff: float = 30.0,
    connected: asyncio.Event | None = None,
) -> None:
    """Run until cancelled: consume ``/gateway/events``; ``connected`` is set after each resync.

    A broker that says this gateway was retired (401 ``gateway_retired``: `gatepass admin gateway retire`) has ended
    the sessions the gateway carries in its trail: the gateway cuts every one of them then, rather than carry
    sessions nobody accounts for (logins are refused anyway, as the broker refuses to authorize them). Any other 401
    (a proxy's challenge, a broker on another database) is logged once and waited out like an outage: the sessions
    keep their own end times. It keeps asking, in case the credential is accepted again."""
    backoff = initial_backoff
    cut_for_retirement = refusal_logged = False  # each once per run of refusals (a hello starts afresh)
    while True:
        try:
            async with contextlib.aclosing(broker.events()) as events:
                async for event in events:
                    if event.type == "hello":
                        cut_for_retirement = refusal_logged = False
                        # The stream is open, so nothing from now on is missed: catch up on the gap.
                        await resync(broker, monitor)
                        backoff = initial_backoff
                        if connected is not None:
                            connected.set()
                    else:
                        apply_event(monitor, event.type, event.data)
            logger.info("the broker closed the event stream; reconnecting")
        except BrokerRefused as exc:
            if exc.status != 401:
                logger.warning("the broker refused the event stream: %s; retrying in %.1f s", exc.message, backoff)
            elif exc.code == RETIRED:
                if not cut_for_retirement:  # also after a 401 of another kind: that one cut nothing
                    cut_for_retirement = True
                    cut = monitor.cut_all("gateway_retired", detail=exc.message)
                    logger.error("%s: the connections of %d grant(s) were cut, and logins are refused until the "
                                 "credential is accepted again", exc.message, cut)
            elif not refusal_logged:
                refusal_logged = True  # said once; sessions keep their own end times meanwhile
                logger.error("the broker refuses this gateway's credential (%s); retrying", exc.message)
        except BrokerCallFailed as exc:
            logger.warning("event stream from the broker lost: %s; retrying in %.1f s", exc, backoff)
        except Exception:
            # A bug here must not silence revocations for the rest of the process: log it, go on.
            logger.exception("following the broker's events failed; retrying in %.1f s", backoff)
        if connected is not None:
            connected.clear()
        # Jitter keeps a fleet of gateways from reconnecting in lockstep after a broker restart.
        await asyncio.sleep(backoff * (0.5 + random.random() / 2))  # noqa: S311
        backoff = min(backoff * 2, max_backoff)
