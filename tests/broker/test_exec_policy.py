"""The policy the gateway enforces on command channels (issue 9): a site's exec upload limit and an asset's passed
client environment variables — set with `gatepass admin site|asset add|set`, checked with a reason, audited, and
sent to the gateway in the authorize answer."""

from __future__ import annotations

import json

import pytest

from tests.broker.conftest import AdminCli
from tests.broker.test_gateway_api import PEER, _serial
from tests.fixtures.broker import Api, Plant


def _names(raw: object) -> object:
    return raw if isinstance(raw, list) else json.loads(str(raw))


def _authorize(api: Api, plant: Plant, grant_id: str) -> dict[str, object]:
    response = api.gateway().post("/gateway/authorize", json={
        "grant_id": grant_id, "serial": _serial(plant, grant_id), "asset": "hmi-01", "peer": PEER})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_authorize_answer_carries_the_sites_limit_and_the_assets_variables(
    api: Api, plant: Plant, admin_cli: AdminCli
) -> None:
    grant = api.grant("vendor1", "sup-a1")
    answer = _authorize(api, plant, grant["id"])
    assert (answer["exec_upload_limit"], answer["passed_env"]) == (65536, [])

    assert admin_cli("admin", "site", "set", "plant-a", "--exec-upload-limit", "4k")[0] == 0
    assert admin_cli("admin", "asset", "set", "hmi-01", "--pass-env", "LC_ALL", "--pass-env", "TZ")[0] == 0

    answer = _authorize(api, plant, grant["id"])
    assert (answer["exec_upload_limit"], answer["passed_env"]) == (4096, ["LC_ALL", "TZ"])


def test_site_exec_upload_limit_is_set_shown_audited_and_checked(
    plant: Plant, admin_cli: AdminCli
) -> None:
    code, out, err = admin_cli("admin", "site", "set", "plant-a", "--exec-upload-limit", "1M")
    assert code == 0, err
    assert "exec upload limit 65536 -> 1048576" in out
    assert plant.row("SELECT exec_upload_limit FROM sites WHERE name = 'plant-a'")[0] == 1048576
    [event] = plant.audit("admin:site:updated")
    assert event["details"] == {"exec_upload_limit": {"old": 65536, "new": 1048576}}

    for bad, says in (("lots", "is not a size"), ("-5", "is not a size"), ("2G", "out of range: 0 to 1073741824"),
                      ("64 kb x", "is not a size")):
        code, _, err = admin_cli("admin", "site", "set", "plant-a", "--exec-upload-limit", bad, "--transfers",
                                 "download-only")
        assert code == 1, bad
        assert says in err, err
    row = plant.row("SELECT exec_upload_limit, transfers FROM sites WHERE name = 'plant-a'")
    assert tuple(row) == (1048576, "both")  # a refused command changes nothing
    assert len(plant.audit("admin:site:updated")) == 1

    code, _, err = admin_cli("admin", "site", "add", "plant-c", "--transfers", "download-only",
                             "--exec-upload-limit", "0")
    assert code == 0, err
    assert plant.row("SELECT exec_upload_limit FROM sites WHERE name = 'plant-c'")[0] == 0
    assert plant.audit("admin:site:created")[-1]["details"]["exec_upload_limit"] == 0


def test_asset_passed_env_is_set_audited_and_refuses_dangerous_names(
    plant: Plant, admin_cli: AdminCli
) -> None:
    code, out, err = admin_cli("admin", "asset", "set", "hmi-01", "--pass-env", "LC_ALL", "--pass-env", "LANG")
    assert code == 0, err
    assert "passed env (none) -> LC_ALL, LANG" in out
    assert _names(plant.row("SELECT passed_env FROM assets WHERE name = 'hmi-01'")[0]) == ["LC_ALL", "LANG"]
    [event] = plant.audit("admin:asset:updated")
    assert event["details"] == {"passed_env": {"old": [], "new": ["LC_ALL", "LANG"]}}

    for bad, says in (
        ("LD_PRELOAD", "LD_PRELOAD cannot be passed from a vendor's client to a machine: the dynamic loader"),
        ("PATH", "PATH cannot be passed from a vendor's client to a machine: it decides which programs"),
        ("IFS", "IFS cannot be passed"),
        ("BASH_ENV", "BASH_ENV cannot be passed"),
        ("SSH_CONNECTION", "the gateway finds a cut session's processes on the target by it"),
        ("BASH_FUNC_ls%%", "is not an environment variable name"),
        ("lc_all", "is not an environment variable name"),
        ("1LANG", "is not an environment variable name"),
        ("LC ALL", "is not an environment variable name"),
    ):
        code, _, err = admin_cli("admin", "asset", "set", "hmi-01", "--pass-env", "TZ", "--pass-env", bad)
        assert code == 1, bad
        assert says in err, err
    assert _names(plant.row("SELECT passed_env FROM assets WHERE name = 'hmi-01'")[0]) == ["LC_ALL", "LANG"]

    code, out, _ = admin_cli("admin", "asset", "set", "hmi-01", "--no-pass-env")
    assert code == 0
    assert _names(plant.row("SELECT passed_env FROM assets WHERE name = 'hmi-01'")[0]) == []
    code, _, err = admin_cli("admin", "asset", "set", "hmi-01", "--no-pass-env", "--pass-env", "TZ")
    assert code == 2
    assert "not both" in err
    code, _, err = admin_cli("admin", "asset", "set", "no-such-asset", "--pass-env", "TZ")
    assert code == 1
    assert "there is no asset named 'no-such-asset'" in err


@pytest.mark.parametrize("name", ["LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES", "PYTHONPATH", "PROMPT_COMMAND"])
def test_asset_add_refuses_a_dangerous_variable_and_adds_nothing(
    plant: Plant, admin_cli: AdminCli, name: str
) -> None:
    code, _, err = admin_cli("admin", "asset", "add", "hmi-new", "--site", "plant-a", "--host", "10.1.2.3",
                             "--tcp-port", "502", "--pass-env", name)
    assert code == 1
    assert f"{name} cannot be passed" in err
    assert plant.count("assets", "WHERE name = 'hmi-new'") == 0

    code, _, err = admin_cli("admin", "asset", "add", "hmi-new", "--site", "plant-a", "--host", "10.1.2.3",
                             "--tcp-port", "502", "--pass-env", "TZ")
    assert code == 0, err
    assert _names(plant.row("SELECT passed_env FROM assets WHERE name = 'hmi-new'")[0]) == ["TZ"]
