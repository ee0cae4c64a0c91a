"""The Azure CLI, unchanged, as an operator would run it against the emulator.

``az`` (azure-cli from the package registry, in a virtual environment of its
own: it pins other azure packages; ``.ci/run`` creates it and sets
``VMSS_ROLLOUT_AZ``) runs as its own process against an emulator process: it
registers the emulator as a cloud by endpoint discovery, logs in with the
managed identity the emulator serves, and drives the scale set through an
image rollout by hand. After every step, ``vmss-rollout status --json`` (its
own process, the real SDK) must see what ``az`` did.

Each ``az`` call gets an isolated ``AZURE_CONFIG_DIR``, the emulator's CA
bundle (``REQUESTS_CA_BUNDLE``), the App Service managed-identity variables
(``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``: MSAL's ManagedIdentityClient, which
``az login --identity`` uses, reads them) and telemetry off, so nothing leaves
loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import RG, Emulated

from vmss_rollout.emulator.identity import TOKEN_PREFIX
from vmss_rollout.emulator.launch import emulator_process

AZ = os.environ.get("VMSS_ROLLOUT_AZ", "")
pytestmark = pytest.mark.skipif(
    not AZ,
    reason="VMSS_ROLLOUT_AZ is not set (the path of an az from azure-cli, in its own virtual "
    "environment; .ci/run creates one and sets it)",
)

SCENARIO = """
name = "web-tier"
seed = 11
[scale_set]
instances = 6
update_domains = 3
fault_domains = 3
[timing]
upgrade = "fixed(3600s)"
health_delay = "fixed(30s)"
"""
CLOUD = "vmss-emulator"
#: environment variables from the caller that could send az elsewhere
_DROP = (
    "AZURE_CONFIG_DIR",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "MSI_ENDPOINT",
    "IMDS_ENDPOINT",
    "ARM_CLOUD_METADATA_URL",
    "AZURE_EXTENSION_DIR",
)


class Az:
    """``az`` as its own process, configured for the emulator."""

    def __init__(self, emulated: Emulated, config_dir: Path) -> None:
        info = emulated.info
        self.env = {k: v for k, v in os.environ.items() if k not in _DROP}
        self.env.update(
            {
                "AZURE_CONFIG_DIR": str(config_dir),
                "REQUESTS_CA_BUNDLE": info["env"]["REQUESTS_CA_BUNDLE"],
                "IDENTITY_ENDPOINT": info["env"]["IDENTITY_ENDPOINT"],
                "IDENTITY_HEADER": info["env"]["IDENTITY_HEADER"],
                "AZURE_CORE_COLLECT_TELEMETRY": "false",
                "AZURE_CORE_ONLY_SHOW_ERRORS": "true",
                "AZURE_CORE_NO_COLOR": "true",
                "AZURE_CORE_OUTPUT": "json",
            }
        )
        self.calls: list[tuple[tuple[str, ...], str, str]] = []

    def __call__(self, *args: str, check: bool = True) -> Any:
        result = subprocess.run(
            [AZ, *args], env=self.env, capture_output=True, text=True, timeout=180
        )
        self.calls.append((args, result.stdout, result.stderr))
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
            return json.loads(result.stdout) if result.stdout.strip() else None
        return result


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("az")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO)
    with emulator_process(scenario, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        yield Emulated(info, tmp, scenario)


def status(emu: Emulated) -> dict[str, Any]:
    result = emu.cli("status", "-g", RG, "-n", emu.name, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def by_id(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["instance_id"]: i for i in data["instances"]}


def until(check: Any, what: str, tries: int = 60) -> Any:
    """Call ``check`` (itself a process run: it paces the loop) until it returns
    something truthy; bounded."""
    for _ in range(tries):
        found = check()
        if found:
            return found
    raise AssertionError(f"never: {what}")


def settled(emu: Emulated, ids: set[str], version: str) -> dict[str, Any]:
    """``status`` once the instances ``ids`` run ``version`` and are healthy."""

    def done() -> dict[str, Any] | None:
        data = status(emu)
        now = by_id(data)
        ok = all(version in (now[i]["model"] or "") and now[i]["state"] == "latest" for i in ids)
        return data if ok else None

    return dict(until(done, f"instances {sorted(ids)} on {version}"))


def test_an_operator_flow_with_the_azure_cli(emu: Emulated, tmp_path: Path) -> None:
    az = Az(emu, tmp_path / "azure-config")
    endpoint = emu.info["endpoint"]
    # 1. the emulator as a cloud, found by endpoint discovery (GET /metadata/endpoints)
    az("cloud", "register", "-n", CLOUD, "--endpoint-resource-manager", endpoint)
    az("cloud", "set", "-n", CLOUD)
    cloud = az("cloud", "show", "-n", CLOUD)
    assert cloud["endpoints"]["resourceManager"].rstrip("/") == endpoint
    # 2. managed identity: a JWT carrying tid, then GET /subscriptions
    accounts = az("login", "--identity")
    assert [a["id"] for a in accounts] == [emu.info["subscription"]]
    assert accounts[0]["user"]["type"] == "servicePrincipal"
    account = az("account", "show")
    assert account["tenantId"] and account["environmentName"] == CLOUD

    base = ["-g", RG, "-n", emu.name]
    before = status(emu)
    # 3. reads
    vmss = az("vmss", "show", *base)
    assert vmss["id"].lower() == before["scale_set"].lower()
    assert vmss["sku"]["capacity"] == before["capacity"] == 6
    assert vmss["upgradePolicy"]["mode"] == before["upgrade_policy"] == "Manual"
    listed = az("vmss", "list-instances", *base)
    assert sorted(vm["instanceId"] for vm in listed) == sorted(by_id(before))
    view = az("vmss", "get-instance-view", *base, "--instance-id", "0")
    assert view["platformUpdateDomain"] == by_id(before)["0"]["update_domain"]
    assert view["platformFaultDomain"] == by_id(before)["0"]["fault_domain"]
    summary = az("vmss", "get-instance-view", *base)
    counts = {s["code"]: s["count"] for s in summary["virtualMachine"]["statusesSummary"]}
    assert counts == {"ProvisioningState/succeeded": 6, "PowerState/running": 6}

    # 4. a new image version in the model: az GETs the scale set and PUTs it back
    # with an imageReference holding only the version
    version = "2.0.0"
    az(
        "vmss",
        "update",
        *base,
        "--set",
        f"virtualMachineProfile.storageProfile.imageReference.version={version}",
    )
    after = status(emu)
    assert version in after["model"]["image"]
    assert after["model"]["image"].startswith(before["model"]["image"].rsplit(":", 1)[0])
    assert all(i["state"] == "outdated" for i in after["instances"])

    # 5. the platform's rolling upgrade: start, follow, cancel (each instance's
    # upgrade takes 6 s of wall time here, so it is still rolling when cancelled)
    az("vmss", "rolling-upgrade", "start", *base, "--no-wait")
    latest = az("vmss", "rolling-upgrade", "get-latest", *base)
    assert latest["runningStatus"]["code"] == "RollingForward"
    assert latest["runningStatus"]["lastAction"] == "Start"
    az("vmss", "rolling-upgrade", "cancel", *base, "--no-wait")

    def cancelled() -> dict[str, Any] | None:
        run = az("vmss", "rolling-upgrade", "get-latest", *base)
        return run if run["runningStatus"]["code"] == "Cancelled" else None

    run = until(cancelled, "the rolling upgrade cancelled")
    assert run["runningStatus"]["lastAction"] == "Cancel"

    def quiet() -> dict[str, Any] | None:
        data = status(emu)
        return data if all(i["state"] != "upgrading" for i in data["instances"]) else None

    stopped = until(quiet, "no instance updating after the cancel")
    upgraded = run["progress"]["successfulInstanceCount"]
    assert upgraded == sum(i["state"] == "latest" for i in stopped["instances"])
    assert upgraded < 6  # the cancel stopped it before the end

    # 6. update-instances, one update domain at a time, for the rest
    domains = sorted({i["update_domain"] for i in stopped["instances"]})
    for ud in domains:
        ids = {
            i["instance_id"]
            for i in stopped["instances"]
            if i["update_domain"] == ud and i["state"] == "outdated"
        }
        if not ids:
            continue
        az("vmss", "update-instances", *base, "--instance-ids", *sorted(ids))
        now = by_id(settled(emu, ids, version))
        others = [i for i in now.values() if i["update_domain"] > ud]
        assert all(i["state"] in ("latest", "outdated") for i in others)
    assert all(i["state"] == "latest" for i in status(emu)["instances"])

    # 7. scale out (az PUTs location and sku only), then delete the new instances
    az("vmss", "scale", *base, "--new-capacity", "8")
    scaled = status(emu)
    assert scaled["capacity"] == 8 and len(scaled["instances"]) == 8
    new = sorted(set(by_id(scaled)) - set(by_id(after)), key=int)
    assert len(new) == 2
    assert all(version in (by_id(scaled)[i]["model"] or version) for i in new)
    az("vmss", "delete-instances", *base, "--instance-ids", *new)
    final = status(emu)
    assert sorted(by_id(final), key=int) == sorted(by_id(after), key=int)
    assert final["capacity"] == 6

    # the managed-identity secret and the tokens stay out of what az printed
    printed = "\n".join(out + err for _, out, err in az.calls)
    assert emu.info["env"]["IDENTITY_HEADER"] not in printed
    assert TOKEN_PREFIX not in printed
