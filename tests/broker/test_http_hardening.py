"""Smaller holes hostile testing found on the broker's HTTP side: /metrics without a credential, API answers and
/openapi.json without the pages' security headers, /docs loading script from a CDN, weak vendor SSH keys.
Against the real broker under uvicorn."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import asyncssh
import httpx
import pytest

from assembly.environment import broker_settings
from tests.fixtures.broker import Api, BrokerServer, Plant, assert_refusal

METRICS_TOKEN = "metrics-scrape-secret-5f2a9c7e"


@pytest.fixture
def metrics_broker(plant: Plant) -> Iterator[BrokerServer]:
    running = BrokerServer(dataclasses.replace(plant.settings, metrics_token=METRICS_TOKEN)).start()
    try:
        yield running
    finally:
        running.stop()


def test_metrics_are_off_without_a_configured_token(api: Api) -> None:
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        answer = client.get("/metrics")
    body = assert_refusal(answer, 404, "not_found")
    assert "GATEPASS_METRICS_TOKEN" in body["message"]
    assert "gatepass_grants_active" not in answer.text


def test_metrics_need_the_scrape_token(metrics_broker: BrokerServer, plant: Plant) -> None:
    seq = plant.last_seq()
    with httpx.Client(base_url=metrics_broker.url, timeout=10) as client:
        anonymous = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer metrics-scrape-secret-5f2a9c7X"})
        user_token = client.get("/metrics", headers={"Authorization": f"Bearer {plant.gateway_token}"})
        right = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    for refused in (anonymous, wrong, user_token):
        assert_refusal(refused, 401, "not_authenticated")
        assert "gatepass_" not in refused.text
    assert right.status_code == 200
    assert "gatepass_grants_active 0" in right.text
    events = plant.audit("api:request:refused", after_seq=seq)
    assert [e["subject"] for e in events] == ["/metrics"] * 3
    assert METRICS_TOKEN not in str(plant.audit(after_seq=seq))


def test_a_short_metrics_token_is_refused_at_start(plant: Plant) -> None:
    with pytest.raises(ValueError, match="too short"):
        broker_settings({"GATEPASS_METRICS_TOKEN": "secret"}, data_dir=str(plant.settings.data_dir))
    with pytest.raises(ValueError, match="too short"):
        dataclasses.replace(plant.settings, metrics_token="secret")


@pytest.mark.parametrize("path", ["/openapi.json", "/healthz", "/api/v1/me", "/api/v1/nothing-here"])
def test_every_answer_carries_the_security_headers(api: Api, path: str) -> None:
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        answer = client.get(path)
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["cache-control"] == "no-store"


def test_the_pages_keep_their_own_policy(api: Api) -> None:
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        answer = client.get("/sign-in")
    assert "script-src 'self'" in answer.headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_no_api_docs_page_loading_script_from_a_cdn(api: Api, path: str) -> None:
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        answer = client.get(path)
    assert answer.status_code == 404
    assert "cdn" not in answer.text.lower()


def _rsa_public_key(bits: int) -> str:
    return asyncssh.generate_private_key("ssh-rsa", key_size=bits).export_public_key("openssh").decode().strip()


def test_rsa_keys_below_2048_bits_are_refused_with_a_reason(api: Api, plant: Plant) -> None:
    before = plant.count("access_requests")
    answer = api.request("vendor1", public_key=_rsa_public_key(1024))
    body = assert_refusal(answer, 400, "invalid_input")
    assert "1024 bits" in body["message"]
    assert "2048" in body["message"]
    assert plant.count("access_requests") == before
    assert api.request("vendor1", public_key=_rsa_public_key(2048)).status_code == 201


def test_dsa_keys_are_refused_with_a_reason(api: Api, plant: Plant) -> None:
    # A well-formed ssh-dss line (p, q, g, y as SSH mpints): the refusal must name DSA, not say "malformed".
    dsa_line = ("ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1AIlH7WT2NWPq/xfW6MPbLm1"
                "Vs14E7gB00b/JmYLdrmVClpJ+f6AR7ECLCT7up1/63xhv4O1fnxqimFQ8E+4P208UewwI1VBNaFpEy9nXzrith1yrv8iIDGZ3R"
                "SAHHAAAAFQCXYFCPFSMLzLKSuYKi64QL8Fgc9QAAAIEA9+GghdabPd7LvKtcNrhXuXmUr7v6OuqC+VdMCz0HgmdRWVeOutRZT+"
                "ZxBxCBgLRJFnEj6EwoFhO3zwkyjMim4TwWeotUfI0o4KOuHiuzpnWRbqN/C/ohNWLx+2J6ASQ7zKTxvqhRkImog9/hWuWfBpKL"
                "Zl6Ae1UlZAFMO/7PSSoAAACBAKKSU2PFl/qOLxIwmBZPPIcJshVe7bVUpFvyl3BbJDow8rXfskl8wO63OzP/qLmcJM0+JbcRU/"
                "53JjAjxzXCEJdLwLPFBhRU0nbnsKaZRK6ApM4EMGhmMfd0NjnaK4O8NS5bGmnpm0gmMUdbaZszJmE2WSz3Rb5qAzXq+4oBxNrV"
                " legacy")
    answer = api.request("vendor1", public_key=dsa_line)
    body = assert_refusal(answer, 400, "invalid_input")
    assert "DSA" in body["message"]
