"""Revoking "all of a person's tokens" (a TOTP reset, a disabled account) does not depend on any clock: a token the
revoking clock thinks expired is revoked too, so a broker whose clock runs behind never lets it back in."""

from __future__ import annotations

import datetime as dt

from broker.identity import identities, lifecycle
from broker.inventory.gateway_events import NullPublisher
from tests.fixtures.broker import Api, Plant


def _live_tokens(plant: Plant, username: str) -> int:
    return int(plant.row(
        "SELECT count(*) FROM api_tokens t JOIN identities i ON i.id = t.identity_id "
        "WHERE i.username = :u AND t.revoked_at IS NULL", u=username)[0])


def test_a_reset_by_a_clock_that_runs_ahead_still_signs_the_person_out(api: Api, plant: Plant) -> None:
    token = api.login("vendor1")
    assert api.client(token).get("/me").status_code == 200

    # The operator's host thinks it is two hours later: by its clock the token expired an hour ago.
    with plant.session() as session:
        identities.reset_totp(session, vault=plant.vault, now=plant.clock.now() + dt.timedelta(hours=2),
                              actor="cli:ops", username="vendor1")

    assert _live_tokens(plant, "vendor1") == 0
    # The broker's clock (still inside the token's hour) must refuse it all the same.
    assert api.client(token).get("/me").status_code == 401
    [event] = plant.audit("admin:identity:totp_reset")
    assert event["details"]["tokens_revoked"] >= 1


def test_disabling_by_a_clock_that_runs_ahead_still_signs_the_person_out(api: Api, plant: Plant) -> None:
    token = api.login("vendor1")

    with plant.session() as session:
        lifecycle.set_disabled(session, now=plant.clock.now() + dt.timedelta(days=1),
                                          events=NullPublisher(), actor="cli:ops", username="vendor1", disabled=True)

    assert _live_tokens(plant, "vendor1") == 0
    assert api.client(token).get("/me").status_code == 401
