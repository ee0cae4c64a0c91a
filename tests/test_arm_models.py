"""Every emulator response the backend reads, read as azure-mgmt-compute reads it.

Each document is taken raw (HTTPS, a managed-identity token, the api-version
the installed SDK sends) from an emulator process, then

* deserialized with the SDK's own model (``VirtualMachineScaleSet``,
  ``VirtualMachineScaleSetVM``, ``VirtualMachineScaleSetVMInstanceView``,
  ``RollingUpgradeStatusInfo``), and every key it carries must be a field the
  model knows (a misspelt key would be kept by the hybrid models but read as
  ``None`` by every attribute access);
* checked for the fields Azure's REST spec marks ``required`` or ``readOnly``
  (the service fills them in every response).

Source of the lists below: Azure/azure-rest-api-specs,
``specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/
2024-11-01/virtualMachineScaleSet.json`` (the newest stable Compute spec in that
repository's JSON form; azure-mgmt-compute 39 sends api-version 2026-04-01,
generated from the TypeSpec successor of the same definitions, see
/work/shared/reference/azure-facts.md section 3.1), definitions
``VirtualMachineScaleSet``, ``VirtualMachineScaleSetProperties``,
``VirtualMachineScaleSetVM``, ``VirtualMachineScaleSetVMProperties``,
``VirtualMachineScaleSetVMInstanceView``, ``VirtualMachineScaleSetVMListResult``
(``required: [value]``), ``RollingUpgradeStatusInfo(Properties)``,
``RollingUpgradeRunningStatus``, ``RollingUpgradeProgressInfo``; and
``.../Microsoft.Compute/common-types/v1/common.json`` ``Resource`` (``id``,
``name``, ``type`` readOnly, ``location`` required). The operation-status
document is ARM's, not Compute's: MicrosoftDocs/azure-docs
``articles/azure-resource-manager/management/async-operations.md`` ("status"
is required, one of the terminal values Succeeded/Failed/Canceled, with
``startTime``/``endTime``; Compute's own example carries ``name`` too).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

import requests
from azure.mgmt.compute import models
from azure.mgmt.compute._utils.model_base import Model as SdkModel
from emulated import RG

from vmss_rollout.emulator.launch import emulator_process

ROLLING = """
name = "web-tier"
seed = 5
[scale_set]
instances = 7
update_domains = 5
fault_domains = 3
upgrade_policy = "Rolling"
[timing]
upgrade = "fixed(60s)"
health_delay = "fixed(30s)"
"""

#: the fields the spec marks readOnly (or required) that Azure fills in every
#: response, as JSON paths (dots; "[]" = every element of a list)
RESOURCE = ("id", "name", "type", "location")  # common.json Resource
SCALE_SET = (
    *RESOURCE,
    "etag",  # VirtualMachineScaleSet.etag (readOnly)
    "sku.name",
    "sku.capacity",
    "properties.provisioningState",  # VirtualMachineScaleSetProperties (readOnly)
    "properties.uniqueId",
    "properties.timeCreated",
    "properties.upgradePolicy.mode",
    "properties.virtualMachineProfile.storageProfile.osDisk.createOption",  # OSDisk required
    # VirtualMachineScaleSetNetworkConfiguration: name and ipConfigurations required
    "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations[].name",
    "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations[]"
    ".properties.ipConfigurations[].name",
)
VM = (
    *RESOURCE,
    "instanceId",  # VirtualMachineScaleSetVM (readOnly)
    "sku.name",
    "etag",
    "properties.latestModelApplied",  # VirtualMachineScaleSetVMProperties (readOnly)
    "properties.vmId",
    "properties.provisioningState",
    "properties.modelDefinitionApplied",
    "properties.timeCreated",
    "properties.hardwareProfile.vmSize",
    "properties.storageProfile.imageReference.exactVersion",  # ImageReference (readOnly)
)
#: VirtualMachineScaleSetVMInstanceView: nothing is required; these are what a
#: Uniform VM always reports (and what the backend reads): its domains, its
#: statuses, and (readOnly) vmHealth when the health extension is installed
INSTANCE_VIEW = (
    "platformUpdateDomain",
    "platformFaultDomain",
    "statuses[].code",
    "vmHealth.status.code",
)
ROLLING_STATUS = (
    *RESOURCE,
    "properties.policy.maxBatchInstancePercent",
    "properties.runningStatus.code",
    "properties.runningStatus.startTime",
    "properties.runningStatus.lastAction",
    "properties.runningStatus.lastActionTime",
    "properties.progress.successfulInstanceCount",
    "properties.progress.failedInstanceCount",
    "properties.progress.inProgressInstanceCount",
    "properties.progress.pendingInstanceCount",
)
OPERATION = ("name", "status", "startTime")
VMSS_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
TERMINAL = ("Succeeded", "Failed", "Canceled")


def missing(document: Any, paths: tuple[str, ...]) -> list[str]:
    """The paths with no value (absent or null) in ``document``."""

    def walk(node: Any, parts: list[str], where: str) -> list[str]:
        if not parts:
            return [] if node is not None else [where]
        head, rest = parts[0], parts[1:]
        listed = head.endswith("[]")
        key = head[:-2] if listed else head
        if not isinstance(node, dict) or node.get(key) is None:
            return [f"{where}.{key}".lstrip(".")]
        child = node[key]
        if not listed:
            return walk(child, rest, f"{where}.{key}")
        if not isinstance(child, list) or not child:
            return [f"{where}.{key}[]".lstrip(".")]
        found: list[str] = []
        for i, item in enumerate(child):
            found += walk(item, rest, f"{where}.{key}[{i}]")
        return found

    found: list[str] = []
    for path in paths:
        found += walk(document, path.split("."), "")
    return found


def unknown_keys(model: Any, document: Any, where: str = "") -> list[str]:
    """Keys of ``document`` the SDK model ``model`` (deserialized from it) has
    no field for, at any depth where the SDK has a typed model."""
    fields = {f._rest_name for f in type(model)._attr_to_rest_field.values()}
    found: list[str] = []
    for key, value in document.items():
        path = f"{where}.{key}".lstrip(".")
        if key not in fields:
            found.append(path)
            continue
        attr = next(a for a, f in type(model)._attr_to_rest_field.items() if f._rest_name == key)
        typed = getattr(model, attr)
        if isinstance(typed, SdkModel) and isinstance(value, dict):
            found += unknown_keys(typed, value, path)
        elif isinstance(typed, list) and isinstance(value, list):
            for i, (item, raw) in enumerate(zip(typed, value, strict=True)):
                if isinstance(item, SdkModel) and isinstance(raw, dict):
                    found += unknown_keys(item, raw, f"{path}[{i}]")
    return found


def check(cls: Any, document: dict[str, Any], paths: tuple[str, ...]) -> Any:
    model = cls(document)
    assert unknown_keys(model, document) == [], cls.__name__
    assert missing(document, paths) == [], cls.__name__
    return model


class Arm:
    """Raw ARM requests to the emulator, with a managed-identity token."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.verify = info["env"]["REQUESTS_CA_BUNDLE"]
        token = requests.get(
            info["env"]["IDENTITY_ENDPOINT"],
            params={"api-version": "2019-08-01", "resource": "https://management.azure.com"},
            headers={"X-IDENTITY-HEADER": info["env"]["IDENTITY_HEADER"]},
            verify=self.verify,
            timeout=10,
        ).json()["access_token"]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        # the api-version the installed SDK sends for scale sets
        self.api_version = _sdk_api_version()
        self.base = (
            f"{info['endpoint']}/subscriptions/{info['subscription']}/resourceGroups/{RG}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{info['name']}"
        )

    def call(self, method: str, url: str, body: Any = None) -> requests.Response:
        params = {} if "api-version=" in url else {"api-version": self.api_version}
        response = self.session.request(
            method, url, params=params, json=body, verify=self.verify, timeout=30
        )
        assert response.status_code < 300, (method, url, response.status_code, response.text)
        return response

    def get(self, path: str = "", **query: str) -> Any:
        suffix = "&".join(f"{k}={v}" for k, v in query.items())
        url = f"{self.base}{path}"
        if suffix:
            url += f"?{suffix}&api-version={self.api_version}"
        return self.call("GET", url).json()


def _sdk_api_version() -> str:
    from azure.core.rest import HttpRequest
    from azure.mgmt.compute.operations import _operations as ops

    request: HttpRequest = ops.build_virtual_machine_scale_sets_get_request(
        "rg", "vmss", subscription_id="sub"
    )
    return str(request.url.split("api-version=")[1].split("&")[0])


@pytest.fixture(scope="module")
def arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arm]:
    tmp = tmp_path_factory.mktemp("arm-models")
    scenario = tmp / "scenario.toml"
    scenario.write_text(ROLLING)
    args = ("--time-scale", "600", "--retry-after", "0.05", "--page-size", "3")
    with emulator_process(scenario, tmp, *args) as info:
        yield Arm(info)


def test_the_scale_set_reads_as_the_sdk_model_with_its_read_only_fields(arm: Arm) -> None:
    vmss = check(models.VirtualMachineScaleSet, arm.get(), SCALE_SET)
    assert vmss.unique_id and vmss.upgrade_policy.mode == "Rolling"
    assert vmss.sku.capacity == 7


def test_every_page_of_the_instance_list_reads_as_the_sdk_models(arm: Arm) -> None:
    page = arm.get("/virtualMachines", **{"$expand": "instanceView"})
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        # VirtualMachineScaleSetVMListResult: value required, nextLink optional
        assert isinstance(page.get("value"), list), page
        assert set(page) <= {"value", "nextLink"}, sorted(page)
        for raw in page["value"]:
            vm = check(models.VirtualMachineScaleSetVM, raw, VM)
            assert missing(raw["properties"]["instanceView"], INSTANCE_VIEW) == []
            assert vm.instance_view.platform_update_domain is not None
            seen.append(vm.instance_id)
        if not page.get("nextLink"):
            break
        page = arm.call("GET", page["nextLink"]).json()
    assert pages == 3  # 7 instances, 3 a page
    assert sorted(seen, key=int) == [str(i) for i in range(7)]


def test_the_instance_view_reads_as_the_sdk_model(arm: Arm) -> None:
    raw = arm.get("/virtualMachines/0/instanceView")
    view = check(models.VirtualMachineScaleSetVMInstanceView, raw, INSTANCE_VIEW)
    assert view.statuses and view.statuses[0].code.startswith("ProvisioningState/")


def test_a_model_update_its_operation_and_the_rolling_upgrade_read_as_the_sdk_models(
    arm: Arm,
) -> None:
    before = arm.get()
    image = before["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
    body = {
        "properties": {
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {**image, "version": "9.9.9"}}
            }
        }
    }
    patched = arm.call("PATCH", arm.base, body)
    # the PATCH answer is what begin_update returns: a scale set too
    check(models.VirtualMachineScaleSet, patched.json(), SCALE_SET)
    # VirtualMachineScaleSets_Update is x-ms-long-running-operation: its status
    # document, in progress while the platform's rolling upgrade runs, then done
    status_url = patched.headers["Azure-AsyncOperation"]
    latest = arm.get("/rollingUpgrades/latest")
    run = check(models.RollingUpgradeStatusInfo, latest, ROLLING_STATUS)
    assert run.running_status.code in ("RollingForward", "Completed", "Faulted", "Cancelled")
    assert run.progress.pending_instance_count is not None
    # bounded by wall time, not by a count of polls: the emulator's clock runs
    # x600 on the wall clock, so a busy machine makes fast polls cover little of it
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        operation = arm.call("GET", status_url).json()
        assert missing(operation, OPERATION) == [], operation
        assert operation["status"] in ("InProgress", *TERMINAL)
        if operation["status"] in TERMINAL:
            break
    assert operation["status"] == "Succeeded", operation
    assert operation.get("endTime"), operation
    done = check(
        models.RollingUpgradeStatusInfo, arm.get("/rollingUpgrades/latest"), ROLLING_STATUS
    )
    assert done.running_status.code == "Completed"
    assert done.progress.successful_instance_count == 7


def test_a_manual_upgrade_operation_status_reads_as_arm_documents_it(arm: Arm) -> None:
    answer = arm.call("POST", f"{arm.base}/manualupgrade", {"instanceIds": ["1"]})
    assert answer.status_code in (200, 202)
    if answer.status_code == 202:
        operation = arm.call("GET", answer.headers["Azure-AsyncOperation"]).json()
        assert missing(operation, OPERATION) == [], operation
        assert operation["status"] in ("InProgress", *TERMINAL)


def test_the_checks_catch_a_misspelt_key_and_a_missing_read_only_field() -> None:
    """The helpers above can fail: a typo and a dropped field are reported."""
    document = {
        "id": "/x",
        "name": "x",
        "type": VMSS_TYPE,
        "location": "westeurope",
        "properties": {"provisioningState": "Succeeded", "uniqeId": "typo"},
    }
    model = models.VirtualMachineScaleSet(document)
    assert unknown_keys(model, document) == ["properties.uniqeId"]
    assert "properties.uniqueId" in missing(document, SCALE_SET)
    assert "etag" in missing(document, SCALE_SET)
