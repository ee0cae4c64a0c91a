"""The ARM emulator end to end: a real server process (``python -m
vmss_rollout.emulator``) over HTTPS, driven by the real azure-mgmt-compute
SDK with azure-identity's DefaultAzureCredential, configured only through the
environment the emulator prints.

One emulator serves the whole module (10 instances, 60 s upgrades, 30 s health
delay, simulated time x600, LRO Retry-After 0.1 s, 4 VMs per page). Tests that
change the model read the current one first, so they do not depend on order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("trustme")
pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("azure.identity")

import requests
from azure.core import MatchConditions
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.identity import DefaultAzureCredential
from azure.mgmt.compute import ComputeManagementClient

from vmss_rollout.emulator.launch import emulator_process

RG = "vmss-rollout-rg"
NAME = "web-tier"
INSTANCES = 10
SCENARIO = f"""
name = "{NAME}"
seed = 11
[scale_set]
instances = {INSTANCES}
update_domains = 5
fault_domains = 3
[timing]
upgrade = "fixed(60s)"
health_delay = "fixed(30s)"
"""
#: environment variables that would make DefaultAzureCredential pick another identity
FOREIGN_IDENTITY = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("emulator")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO)
    flags = ("--time-scale", "600", "--page-size", "4", "--retry-after", "0.1")
    with emulator_process(scenario, tmp, *flags) as info:
        env_file = tmp / "env.json"
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"  # it holds the identity secret
        yield info


@pytest.fixture
def azure_env(emulator: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in FOREIGN_IDENTITY:
        monkeypatch.delenv(name, raising=False)
    env: dict[str, str] = emulator["env"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def client(azure_env: dict[str, str]) -> ComputeManagementClient:
    return ComputeManagementClient(
        DefaultAzureCredential(),
        azure_env["AZURE_SUBSCRIPTION_ID"],
        base_url=azure_env["VMSS_ROLLOUT_ARM_ENDPOINT"],
    )


def admin(emulator: dict[str, Any], path: str, body: Any = None) -> Any:
    """The unauthenticated loopback control endpoints."""
    url = f"{emulator['endpoint']}/_emulator/{path}"
    ca = emulator["ca_cert"]
    if body is None and path != "reset-counts":
        response = requests.get(url, verify=ca, timeout=10)
    else:
        response = requests.post(url, json=body, verify=ca, timeout=10)
    response.raise_for_status()
    return response.json()


def list_vms(client: ComputeManagementClient) -> list[Any]:
    return list(client.virtual_machine_scale_set_vms.list(RG, NAME, expand="instanceView"))


def health(vm: Any) -> str:
    return str(vm.instance_view.vm_health.status.code)


def power(vm: Any) -> str:
    return next(s.code for s in vm.instance_view.statuses if str(s.code).startswith("PowerState/"))


def next_version(client: ComputeManagementClient) -> tuple[Any, str]:
    vmss = client.virtual_machine_scale_sets.get(RG, NAME)
    major = int(vmss.virtual_machine_profile.storage_profile.image_reference.version.split(".")[0])
    return vmss, f"{major + 1}.0.0"


def image_patch(version: str) -> dict[str, Any]:
    return {
        "properties": {
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"version": version}}}
        }
    }


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


# --------------------------------------------------------------------------- identity and TLS


def test_default_azure_credential_gets_a_token(azure_env: dict[str, str]) -> None:
    token = DefaultAzureCredential().get_token("https://management.azure.com/.default")
    assert token.token and token.expires_on > time.time() + 3600


def test_startup_prints_only_what_to_export(emulator: dict[str, Any]) -> None:
    text = Path(emulator["log"]).read_text()
    for key, value in emulator["env"].items():
        assert f"export {key}={value}\n" in text
    assert f"# scale set: -g {RG} -n {NAME} ({INSTANCES} instances)" in text
    assert text.count(emulator["env"]["IDENTITY_HEADER"]) == 1  # the secret: export line only
    assert emulator["env"]["REQUESTS_CA_BUNDLE"].startswith("/")


def test_requests_without_or_with_a_foreign_token_are_refused(
    emulator: dict[str, Any], azure_env: dict[str, str]
) -> None:
    url = (
        f"{emulator['endpoint']}/subscriptions/{emulator['subscription']}/resourceGroups/{RG}"
        f"/providers/Microsoft.Compute/virtualMachineScaleSets/{NAME}?api-version=2024-11-01"
    )
    response = requests.get(url, verify=emulator["ca_cert"], timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"

    class Foreign:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("not-issued-here", int(time.time()) + 3600)

    foreign = ComputeManagementClient(
        Foreign(), emulator["subscription"], base_url=emulator["endpoint"]
    )
    with pytest.raises(ClientAuthenticationError) as info:
        foreign.virtual_machine_scale_sets.get(RG, NAME)
    assert info.value.status_code == 401
    assert info.value.error.code == "InvalidAuthenticationToken"


# --------------------------------------------------------------------------- reads


def test_get_scale_set(client: ComputeManagementClient) -> None:
    vmss = client.virtual_machine_scale_sets.get(RG, NAME)
    assert vmss.etag.startswith('"') and vmss.etag.endswith('"')
    assert vmss.upgrade_policy.mode == "Manual"
    assert vmss.upgrade_policy.rolling_upgrade_policy.max_batch_instance_percent == 20
    ref = vmss.virtual_machine_profile.storage_profile.image_reference
    assert (ref.publisher, ref.offer, ref.sku) == ("Canonical", "ubuntu-24_04-lts", "server")
    assert vmss.sku.capacity == INSTANCES
    extensions = vmss.virtual_machine_profile.extension_profile.extensions
    assert extensions[0].properties.type == "ApplicationHealthLinux"


def test_list_vms_pages_with_instance_view(
    client: ComputeManagementClient, emulator: dict[str, Any]
) -> None:
    admin(emulator, "reset-counts")
    pages = list(
        client.virtual_machine_scale_set_vms.list(RG, NAME, expand="instanceView").by_page()
    )
    vms = [vm for page in pages for vm in page]
    assert len(pages) == 3  # 4 per page
    assert sorted(int(vm.instance_id) for vm in vms) == list(range(INSTANCES))
    for vm in vms:
        i = int(vm.instance_id)
        assert vm.name == f"{NAME}_{i}"
        assert vm.instance_view.platform_update_domain == i % 5
        assert vm.instance_view.platform_fault_domain == i % 3
        assert vm.provisioning_state == "Succeeded"
        assert power(vm) == "PowerState/running"
        assert health(vm).startswith("HealthState/")
    counts = admin(emulator, "requests")
    assert counts["by_operation"]["vms.list"] == 3


def test_unknown_scale_set_and_resource_group(client: ComputeManagementClient) -> None:
    with pytest.raises(ResourceNotFoundError) as info:
        client.virtual_machine_scale_sets.get(RG, "no-such-set")
    assert info.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as info:
        client.virtual_machine_scale_sets.get("no-such-rg", NAME)
    assert info.value.error.code == "ResourceGroupNotFound"


def test_api_version_out_of_range(client: ComputeManagementClient) -> None:
    with pytest.raises(HttpResponseError) as info:
        client.virtual_machine_scale_sets.get(RG, NAME, api_version="2015-01-01")
    assert info.value.status_code == 400
    assert info.value.error.code == "InvalidApiVersionParameter"


# --------------------------------------------------------------------------- changes


def test_patch_image_under_etag_then_a_stale_etag_is_refused(
    client: ComputeManagementClient,
) -> None:
    vmss, version = next_version(client)
    updated = client.virtual_machine_scale_sets.begin_update(
        RG,
        NAME,
        image_patch(version),
        etag=vmss.etag,
        match_condition=MatchConditions.IfNotModified,
    ).result()
    assert updated.virtual_machine_profile.storage_profile.image_reference.version == version
    assert updated.etag != vmss.etag
    with pytest.raises(ResourceModifiedError) as info:
        client.virtual_machine_scale_sets.begin_update(
            RG,
            NAME,
            {"tags": {"owner": "test"}},
            etag=vmss.etag,
            match_condition=MatchConditions.IfNotModified,
        ).result()
    assert info.value.status_code == 412
    assert info.value.error.code == "PreconditionFailed"


def test_publisher_cannot_change(client: ComputeManagementClient) -> None:
    body = {
        "properties": {
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"publisher": "MicrosoftWindowsServer"}}
            }
        }
    }
    with pytest.raises(HttpResponseError) as info:
        client.virtual_machine_scale_sets.begin_update(RG, NAME, body).result()
    assert info.value.status_code == 400
    assert info.value.error.code == "OperationNotAllowed"


def test_manual_upgrade_without_polling_then_follow_the_list(
    client: ComputeManagementClient, emulator: dict[str, Any]
) -> None:
    _, version = next_version(client)
    client.virtual_machine_scale_sets.begin_update(RG, NAME, image_patch(version)).result()
    stale = [vm.instance_id for vm in list_vms(client) if not vm.latest_model_applied]
    assert sorted(stale, key=int) == [str(i) for i in range(INSTANCES)]
    admin(emulator, "reset-counts")
    started = time.monotonic()
    client.virtual_machine_scale_sets.begin_update_instances(
        RG, NAME, {"instanceIds": stale[:5]}, polling=False
    )
    client.virtual_machine_scale_sets.begin_update_instances(
        RG, NAME, {"instanceIds": stale[5:]}, polling=False
    )

    def all_upgraded() -> bool:
        vms = list_vms(client)
        return all(
            vm.latest_model_applied
            and vm.storage_profile.image_reference.version == version
            and health(vm) == "HealthState/healthy"
            for vm in vms
        )

    wait_for(all_upgraded)
    assert time.monotonic() - started < 5  # 90 simulated seconds at x600
    log = admin(emulator, "requests")["log"]
    upgrades = [e for e in log if e["operation"] == "vmss.manualupgrade"]
    assert [e["instance_ids"] for e in upgrades] == [stale[:5], stale[5:]]
    assert all(e["status"] == 202 for e in upgrades)
    assert upgrades[0]["t_sim"] <= upgrades[1]["t_sim"]


def test_lro_result_waits_for_the_operation(client: ComputeManagementClient) -> None:
    _, version = next_version(client)
    client.virtual_machine_scale_sets.begin_update(RG, NAME, image_patch(version)).result()
    poller = client.virtual_machine_scale_sets.begin_update_instances(
        RG, NAME, {"instanceIds": ["0", "1"]}
    )
    poller.result(timeout=15)
    assert poller.status() == "Succeeded"
    vms = {vm.instance_id: vm for vm in list_vms(client)}
    assert vms["0"].latest_model_applied and vms["1"].latest_model_applied
    assert vms["0"].provisioning_state == "Succeeded"


def test_unknown_instance_ids_are_refused(client: ComputeManagementClient) -> None:
    with pytest.raises(HttpResponseError) as info:
        client.virtual_machine_scale_sets.begin_update_instances(
            RG, NAME, {"instanceIds": ["0", "99"]}
        )
    assert info.value.status_code == 400
    assert info.value.error.code == "InvalidParameter"
    assert "99" in info.value.error.message


def test_power_off_then_start(client: ComputeManagementClient) -> None:
    client.virtual_machine_scale_sets.begin_power_off(RG, NAME, {"instanceIds": ["3"]}).result(
        timeout=15
    )
    vm = client.virtual_machine_scale_set_vms.get(RG, NAME, "3", expand="instanceView")
    assert power(vm) == "PowerState/stopped"
    view = client.virtual_machine_scale_set_vms.get_instance_view(RG, NAME, "3")
    assert "PowerState/stopped" in [s.code for s in view.statuses]
    client.virtual_machine_scale_sets.begin_start(RG, NAME, {"instanceIds": ["3"]}).result(
        timeout=15
    )
    vm = client.virtual_machine_scale_set_vms.get(RG, NAME, "3", expand="instanceView")
    assert power(vm) == "PowerState/running"


def test_os_rolling_upgrade_completes(client: ComputeManagementClient) -> None:
    _, version = next_version(client)
    client.virtual_machine_scale_sets.begin_update(RG, NAME, image_patch(version)).result()
    rolling = client.virtual_machine_scale_set_rolling_upgrades
    rolling.begin_start_os_upgrade(RG, NAME).result(timeout=20)
    latest = rolling.get_latest(RG, NAME)
    assert latest.running_status.code == "Completed"
    assert latest.progress.successful_instance_count == INSTANCES
    assert latest.progress.pending_instance_count == 0
    assert latest.policy.max_batch_instance_percent == 20
    assert all(vm.latest_model_applied for vm in list_vms(client))


def test_throttling_is_retried_by_azure_core(
    client: ComputeManagementClient, emulator: dict[str, Any]
) -> None:
    admin(emulator, "reset-counts")
    admin(emulator, "faults", {"throttle_rate": 0.3, "throttle_retry_after": 0.01})
    try:
        for _ in range(12):
            assert client.virtual_machine_scale_sets.get(RG, NAME).name == NAME
        assert len(list_vms(client)) == INSTANCES
    finally:
        admin(emulator, "faults", {"throttle_rate": 0.0})
    counts = admin(emulator, "requests")
    assert counts["by_status"].get("429", 0) > 0
    assert counts["by_operation"]["vmss.get"] > 12  # the retries are requests too


def test_fault_knobs_are_validated(emulator: dict[str, Any]) -> None:
    url = f"{emulator['endpoint']}/_emulator/faults"
    response = requests.post(url, json={"throttle_rate": 5}, verify=emulator["ca_cert"], timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("throttle_rate:")
    current = requests.get(url, verify=emulator["ca_cert"], timeout=10).json()
    assert current["throttle_rate"] == 0.0 and current["lro_retry_after"] == 0.1
