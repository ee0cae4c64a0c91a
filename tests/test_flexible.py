"""Flexible orchestration (issue 10): the emulator serves a Flexible scale set as
Azure does (members are plain VMs named ``<scale set>_<8 hex>``, listed through
``Microsoft.Compute/virtualMachines`` with a ``virtualMachineScaleSet/id`` filter;
the scale set's own VM list is refused; ``orchestrationMode`` is fixed), and
``status``, ``plan``, ``upgrade``, ``resume``, ``instances`` and ``history`` work on
it through the real SDK, the CLI running as its own process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from azure.mgmt.compute import models
from emulated import FAST, RG, Emulated, last_json
from test_arm import RG as ARM_RG
from test_arm import SUB, Arm, error_code, scenario
from test_arm_models import RESOURCE, check

from vmss_rollout.backends.journal import Journal
from vmss_rollout.emulator.launch import emulator_process
from vmss_rollout.engine.errors import InputError
from vmss_rollout.sim import load_scenario, run_once
from vmss_rollout.sim.scenario import Scenario

FLEXIBLE = """
name = "flex"
seed = 5
[scale_set]
orchestration = "Flexible"
instances = {instances}
fault_domains = 3
[timing]
upgrade = "fixed(60s)"
health_delay = "fixed(30s)"
"""
NAME = re.compile(r"^flex_[0-9a-f]{8}$")


# ----------------------------------------------------------- the emulator, in process
def flexible_arm(**changes: Any) -> Arm:
    values: dict[str, Any] = {"orchestration": "Flexible", "instances": 6, "fault_domains": 3}
    values.update(changes)
    return Arm(scenario=scenario(**values))


def vm_list_path() -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/{ARM_RG}/providers/Microsoft.Compute/virtualMachines"
    )


def members(e: Arm, **query: str) -> Any:
    q = {"$filter": f"'virtualMachineScaleSet/id' eq '{e.vmss}'", **query}
    return e.call("GET", vm_list_path(), query=q)


def test_members_are_plain_vms_listed_by_the_scale_set_filter_and_paged() -> None:
    e = flexible_arm()
    first = members(e, **{"$expand": "instanceView"})
    assert first.status == 200, first.body
    assert len(first.body["value"]) == 4 and "nextLink" in first.body  # page size 4
    rest = e.call("GET", first.body["nextLink"])
    docs = first.body["value"] + rest.body["value"]
    assert "nextLink" not in rest.body and len(docs) == 6
    names = [d["name"] for d in docs]
    assert all(re.fullmatch(rf"{e.arm.name}_[0-9a-f]{{8}}", n) for n in names)
    assert len(set(names)) == 6
    for doc in docs:
        assert doc["type"] == "Microsoft.Compute/virtualMachines"
        props = doc["properties"]
        assert props["virtualMachineScaleSet"]["id"] == e.vmss
        assert "latestModelApplied" not in props and "instanceId" not in doc
        view = props["instanceView"]
        assert "platformUpdateDomain" not in view
        assert view["platformFaultDomain"] in (0, 1, 2)
        assert view["vmHealth"]["status"]["code"] == "HealthState/healthy"
    assert {d["properties"]["instanceView"]["platformFaultDomain"] for d in docs} == {0, 1, 2}
    # the subscription-level list and a filter naming another scale set
    everywhere = e.call(
        "GET",
        f"/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines",
        query={"$filter": f"'virtualMachineScaleSet/id' eq '{e.vmss.upper()}'"},
    )
    assert everywhere.status == 200 and len(everywhere.body["value"]) == 4
    other = members(e, **{"$filter": "'virtualMachineScaleSet/id' eq '/nope'"})
    assert other.status == 200 and other.body["value"] == []


#: what Azure fills in on every listed Flexible member (REST spec virtualMachine.json:
#: VirtualMachine and VirtualMachineProperties readOnly fields, the scale set reference)
PLAIN_VM = (
    *RESOURCE,
    "etag",
    "properties.vmId",
    "properties.provisioningState",
    "properties.timeCreated",
    "properties.hardwareProfile.vmSize",
    "properties.virtualMachineScaleSet.id",
    "properties.storageProfile.imageReference.exactVersion",
    "properties.instanceView.statuses[].code",
    "properties.instanceView.vmHealth.status.code",
)


def test_members_read_as_the_sdk_virtual_machine_model() -> None:
    e = flexible_arm()
    for raw in members(e, **{"$expand": "instanceView"}).body["value"]:
        vm = check(models.VirtualMachine, raw, PLAIN_VM)
        assert vm.virtual_machine_scale_set.id == e.vmss
        assert vm.instance_view.platform_update_domain is None


def test_expand_needs_the_filter_and_uniform_routes_are_refused() -> None:
    e = flexible_arm()
    bare = e.call("GET", vm_list_path(), query={"$expand": "instanceView"})
    assert bare.status == 400 and "$filter" in bare.body["error"]["message"]
    refused = e.call("GET", f"{e.vmss}/virtualMachines", query={"$expand": "instanceView"})
    assert refused.status == 400
    assert refused.body["error"]["message"] == (
        "Operation 'VirtualMachineScaleSets.virtualMachines.GET' is not allowed on Virtual "
        f"Machine Scale Set '{e.arm.name}'."
    )
    # a Uniform set's instances are not plain VMs
    uniform = Arm(scenario=scenario(instances=3))
    listed = members(uniform)
    assert listed.status == 200 and listed.body["value"] == []


def test_actions_take_vm_names_and_the_mode_is_fixed() -> None:
    e = flexible_arm()
    names = [d["name"] for d in members(e).body["value"]]
    accepted = e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": names[:2]})
    assert accepted.status == 202
    numbers = e.call("POST", f"{e.vmss}/restart", {"instanceIds": ["0"]})
    assert numbers.status == 400 and error_code(numbers) == "InvalidParameter"
    changed = e.call("PATCH", e.vmss, {"properties": {"orchestrationMode": "Uniform"}})
    assert changed.status == 400 and error_code(changed) == "PropertyChangeNotAllowed"
    doc = e.call("GET", e.vmss).body
    assert doc["properties"]["orchestrationMode"] == "Flexible"
    assert "overprovision" not in doc["properties"]


def test_max_spreading_reports_no_fault_domain() -> None:
    e = flexible_arm(fault_domains=1)
    for doc in members(e, **{"$expand": "instanceView"}).body["value"]:
        assert "platformFaultDomain" not in doc["properties"]
        assert "platformFaultDomain" not in doc["properties"]["instanceView"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fault_domains": 5}, "regional Flexible scale set has 1, 2 or 3 fault domains"),
        ({"fault_domains": 2, "zones": ("1", "2")}, "zonal Flexible scale set has 1 fault"),
        ({"orchestration": "Elastic"}, "expected one of Uniform, Flexible"),
    ],
)
def test_scenario_refuses_what_azure_refuses(changes: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"orchestration": "Flexible", **changes}
    with pytest.raises(InputError, match=message):
        Scenario(**values)


def test_flexible_default_fault_domain_count_is_one() -> None:
    assert Scenario(orchestration="Flexible").fault_domains == 1
    assert Scenario().fault_domains == 5


# ----------------------------------------------------------- the CLI, through the SDK
@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("flex")
    path = tmp / "scenario.toml"
    path.write_text(FLEXIBLE.format(instances=12))
    with emulator_process(path, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        yield Emulated(info, tmp, path)


def status(emu: Emulated) -> dict[str, Any]:
    result = emu.cli("status", "-g", RG, "-n", emu.name, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_status_lists_members_by_name(emu: Emulated) -> None:
    data = status(emu)
    ids = [i["instance_id"] for i in data["instances"]]
    assert len(ids) == 12 and all(NAME.match(i) for i in ids)
    assert data["counts"] == {"latest": 12}
    assert {i["fault_domain"] for i in data["instances"]} == {0, 1, 2}
    log = emu.admin("requests")["by_operation"]
    assert log.get("vm.list", 0) >= 1 and "vms.list" not in log


def test_update_domain_waves_are_refused(emu: Emulated) -> None:
    emu.admin("reset-counts", {})
    for args in (["--strategy", "update-domain"], ["-s", "batch", "--only-update-domains", "0"]):
        result, _ = emu.upgrade(*args)
        emu.version -= 1
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and "Flexible orchestration" in result.stderr
        assert "Traceback" not in result.stderr
    assert emu.accepted_writes() == []
    plan = emu.cli(
        "plan", "-g", RG, "-n", emu.name, "--image-version", "9.0.0", "-s", "update-domain"
    )
    assert plan.returncode == 2 and "Flexible orchestration" in plan.stderr


def test_plan_and_fault_domain_upgrade_by_name(emu: Emulated) -> None:
    plan = emu.cli(
        "plan", "-g", RG, "-n", emu.name, "--image-version", "9.0.0", "-s", "fault-domain",
        "--runs", "3", "--json",
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert len(json.loads(plan.stdout)["waves"]) == 3
    emu.admin("reset-counts", {})
    result, data = emu.upgrade("--strategy", "fault-domain")
    assert result.returncode == 0, result.stderr
    assert data["completed"] and data["upgraded"] == 12
    requests = emu.upgrade_requests()
    assert len(requests) == 12 and set(requests.values()) == {1}
    assert all(NAME.match(i) for i in requests)
    with Journal(emu.journal) as journal:
        waves = journal.waves(data["rollout"]["id"])
    by_name = {i["instance_id"]: i["fault_domain"] for i in status(emu)["instances"]}
    assert [len({by_name[i] for i in w["instances"]}) for w in waves] == [1, 1, 1]
    assert status(emu)["counts"] == {"latest": 12}


@pytest.mark.parametrize("spec", ["batch:size=5", "fault-domain", "one-at-a-time"])
def test_same_waves_as_the_simulator(emu: Emulated, spec: str) -> None:
    """The Flexible twin of test_e2e's differential test."""
    result, data = emu.upgrade("--strategy", spec)
    assert result.returncode == 0, result.stderr
    with Journal(emu.journal) as journal:
        real = [tuple(w["instances"]) for w in journal.waves(data["rollout"]["id"])]
    flex = load_scenario(emu.scenario)
    simulated = run_once(flex, spec, seed=flex.seed, record=True).waves()
    assert real == simulated


def test_no_wait_then_resume_and_history(emu: Emulated) -> None:
    emu.admin("reset-counts", {})
    result, data = emu.upgrade("--strategy", "batch:size=4", "--no-wait")
    assert result.returncode == 0, result.stderr
    rollout = data["rollout"]["id"]
    assert data["rollout"]["state"] == "interrupted"
    resumed = emu.cli("resume", rollout, "--yes", "--json", *FAST[:2])
    assert resumed.returncode == 0, resumed.stderr
    assert last_json(resumed.stdout)["completed"]
    requests = emu.upgrade_requests()
    assert len(requests) == 12 and set(requests.values()) == {1}
    history = emu.cli("history", "--json")
    assert history.returncode == 0, history.stderr
    assert rollout in history.stdout


def test_instances_power_off_by_fault_domain_then_start(emu: Emulated) -> None:
    by_name = {i["instance_id"]: i["fault_domain"] for i in status(emu)["instances"]}
    fd1 = sorted(n for n, fd in by_name.items() if fd == 1)
    off = emu.cli(
        "instances", "power-off", "-g", RG, "-n", emu.name, "--only-fault-domains", "1",
        "--yes", "--json", "--poll-interval", "0.05:0.2",
    )  # fmt: skip
    assert off.returncode == 0, off.stderr
    assert sorted(json.loads(off.stdout)["instances"]) == fd1
    stopped = sorted(i["instance_id"] for i in status(emu)["instances"] if i["state"] == "stopped")
    assert stopped == fd1
    log = emu.admin("requests")["log"]
    named = [e["instance_ids"] for e in log if e["operation"] == "vmss.poweroff"]
    assert named and sorted(named[-1]) == fd1
    on = emu.cli(
        "instances", "start", "-g", RG, "-n", emu.name, "--only-instances", ",".join(fd1),
        "--yes", "--json", "--poll-interval", "0.05:0.2",
    )  # fmt: skip
    assert on.returncode == 0, on.stderr
    assert Counter(i["state"] for i in status(emu)["instances"]) == Counter({"latest": 12})


def test_status_shows_zone_by_fault_domain_and_no_update_domain(emu: Emulated) -> None:
    data = status(emu)
    assert data["orchestration"] == "Flexible"
    assert {i["update_domain"] for i in data["instances"]} == {None}
    text = emu.cli("status", "-g", RG, "-n", emu.name)
    assert text.returncode == 0, text.stderr
    assert "instances by zone x fault domain" in text.stdout
    assert "orchestration: Flexible" in text.stdout and "update domain x" not in text.stdout


# ----------------------------------------------------------- the simulator
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    command = [sys.executable, "-m", "vmss_rollout.cli.app", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


def test_simulate_and_compare_reflect_a_flexible_topology(tmp_path: Any) -> None:
    path = tmp_path / "flex.toml"
    path.write_text(FLEXIBLE.format(instances=12).replace("seed = 5", "seed = 5\nruns = 5"))
    flex = load_scenario(path)
    run = run_once(flex, "fault-domain", seed=flex.seed, record=True)
    waves = run.waves()
    assert len(waves) == 3 and all(NAME.match(i) for w in waves for i in w)
    refused = run_cli("simulate", str(path), "-s", "update-domain")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: the update-domain strategy") and "Flexible" in (
        refused.stderr
    )
    compared = run_cli("compare", str(path), "-s", "fault-domain", "-s", "batch:size=4")
    assert compared.returncode == 0, compared.stderr
    assert "Flexible: no UDs, 3 FDs" in compared.stdout


def test_upgrade_policies_as_azure_allows_them_on_flexible() -> None:
    e = flexible_arm()
    rolling = e.write("PATCH", e.vmss, {"properties": {"upgradePolicy": {"mode": "Rolling"}}})
    assert rolling.status == 200, rolling.body
    rollback = e.write(
        "PATCH",
        e.vmss,
        {
            "properties": {
                "upgradePolicy": {
                    "rollingUpgradePolicy": {"rollbackFailedInstancesOnPolicyBreach": True}
                }
            }
        },
    )
    assert rollback.status == 400 and "Uniform" in rollback.body["error"]["message"]
    no_health = Arm(
        scenario=scenario(orchestration="Flexible", instances=3), health_extension=False
    )
    refused = no_health.write(
        "PATCH", no_health.vmss, {"properties": {"upgradePolicy": {"mode": "Rolling"}}}
    )
    assert refused.status == 400 and "Application Health" in refused.body["error"]["message"]


def set_policy(emu: Emulated, mode: str) -> None:
    with emu.sdk() as client:
        body = {"properties": {"upgradePolicy": {"mode": mode}}}
        client.virtual_machine_scale_sets.begin_update(RG, emu.name, body).result()
    emu.admin("reset-counts", {})


def test_platform_rolling_upgrade_and_switch_to_manual(emu: Emulated) -> None:
    set_policy(emu, "Rolling")
    try:
        native, data = emu.upgrade("--strategy", "azure-rolling")
        assert native.returncode == 0, native.stderr
        assert data["policy"] == "native-rolling" and data["completed"]
        assert status(emu)["counts"] == {"latest": 12}
        switched, data = emu.upgrade("--strategy", "fault-domain", "--switch-to-manual")
        assert switched.returncode == 0, switched.stderr
        assert data["policy"] == "switch-to-manual" and data["upgraded"] == 12
        after = status(emu)
        assert after["upgrade_policy"] == "Rolling" and after["counts"] == {"latest": 12}
    finally:
        set_policy(emu, "Manual")


def test_surge_replaces_members_with_new_named_vms(emu: Emulated) -> None:
    before = {i["instance_id"] for i in status(emu)["instances"]}
    result, data = emu.upgrade("--strategy", "surge:max-surge=3")
    assert result.returncode == 0, result.stderr
    assert data["completed"]
    after = status(emu)
    names = {i["instance_id"] for i in after["instances"]}
    assert len(names) == 12 and after["counts"] == {"latest": 12}
    assert all(NAME.match(n) for n in names) and names != before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--orchestration", "Bogus"], "error: --orchestration: expected one of Uniform, Flexible"),
        (
            ["--orchestration", "Flexible", "--fault-domains", "5"],
            "error: --fault-domains: a regional Flexible scale set has 1, 2 or 3 fault domains",
        ),
    ],
)
def test_emulate_refuses_a_flexible_set_azure_would_not_create(
    args: list[str], message: str
) -> None:
    result = run_cli("emulate", "--port", "0", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1


def test_heat_map_of_a_flexible_set_is_zone_by_fault_domain() -> None:
    from rich.console import Console

    from vmss_rollout.cli.operate import heat_map
    from vmss_rollout.engine.model import Instance

    fleet = [Instance(f"flex_0000000{i}", 0, i % 2, zone=str(1 + i // 2)) for i in range(4)]
    console = Console(width=120, record=True)
    console.print(heat_map(fleet, flexible=True))
    text = console.export_text()
    assert "instances by zone x fault domain" in text and "UD" not in text
    rows = [line for line in text.splitlines() if "flex_" in line]
    assert len(rows) == 2  # one row per zone, one column per fault domain
    assert "flex_00000000" in rows[0] and "flex_00000001" in rows[0]


def test_protected_members_by_creation_index_refuse_scale_set_actions() -> None:
    e = flexible_arm(protected_instances=("1",))
    docs = members(e).body["value"]
    shielded = [d["name"] for d in docs if d["properties"].get("protectionPolicy")]
    assert len(shielded) == 1 and shielded[0] == list(e.arm.ss.instances)[1]
    refused = e.call("POST", f"{e.vmss}/manualupgrade", {"instanceIds": shielded})
    assert refused.status == 400 and shielded[0] in refused.body["error"]["message"]


def test_uniform_only_scale_set_features_are_refused_on_flexible() -> None:
    e = flexible_arm()
    view = e.call("GET", f"{e.vmss}/instanceView")
    assert view.status == 400 and error_code(view) == "OperationNotAllowed"
    auto_os = e.write(
        "PATCH",
        e.vmss,
        {
            "properties": {
                "upgradePolicy": {"automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": True}}
            }
        },
    )
    assert (
        auto_os.status == 400 and "Automatic OS image upgrades" in auto_os.body["error"]["message"]
    )
    overprovision = e.write("PATCH", e.vmss, {"properties": {"overprovision": True}})
    assert overprovision.status == 400 and "Overprovision" in overprovision.body["error"]["message"]
    uniform = Arm(scenario=scenario(instances=3))
    assert uniform.call("GET", f"{uniform.vmss}/instanceView").status == 200


def test_simulate_refuses_fault_domain_waves_on_one_fault_domain(tmp_path: Any) -> None:
    """A zonal scenario defaults to one fault domain, as Azure does: the dry run
    refuses fault-domain waves exactly as ``upgrade`` refuses them on the live
    set (one check, engine/topology.py), instead of simulating one wave of all."""
    path = tmp_path / "zonal.toml"
    path.write_text('name = "zonal"\nruns = 3\n[scale_set]\ninstances = 6\nzones = ["1", "2"]\n')
    refused = run_cli("simulate", str(path), "-s", "fault-domain")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("error: the fault-domain strategy: scenario zonal has one")
    scoped = path.with_name("scoped.toml")
    scoped.write_text(path.read_text() + "[engine]\nonly_fault_domains = [0]\n")
    refused = run_cli("simulate", str(scoped), "-s", "batch:size=2")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: engine.only_fault_domains: scenario zonal has one")
    assert run_cli("simulate", str(path), "-s", "zone").returncode == 0
