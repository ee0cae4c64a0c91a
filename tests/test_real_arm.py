"""The backend against ARM as it really behaves (issue 9): the CLI, as its own
process, drives the emulator (another process) through the real SDK while the
emulator does what Azure does where our backend used to assume otherwise: a
model PATCH under Rolling that lasts the platform's rolling upgrade and fails
with its error, a fault-domain count of 1, 409 Conflict on overlapping writes,
instances protected from scale set actions, model drift that turns
latestModelApplied false, overprovisioned extras on scale-out.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import RG, SCENARIO, Emulated, last_json

from vmss_rollout.backends.journal import Journal
from vmss_rollout.emulator.launch import emulator_process

N = 10


def _start(tmp: Path, scenario_text: str, *args: str) -> Iterator[Emulated]:
    scenario = tmp / "scenario.toml"
    scenario.write_text(scenario_text)
    with emulator_process(
        scenario, tmp, "--time-scale", "600", "--retry-after", "0.05", *args
    ) as info:
        yield Emulated(info, tmp, scenario)


def _journal(emu: Emulated, rollout_id: str) -> Any:
    with Journal(emu.journal) as journal:
        return journal.get(rollout_id)


def _one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- fault domains


@pytest.fixture
def one_fd(tmp_path: Path) -> Iterator[Emulated]:
    """A scale set with platformFaultDomainCount 1 (max spreading, the default of
    zonal Uniform sets): every instance reports fault domain 0."""
    text = SCENARIO.format(instances=N).replace("fault_domains = 3", "fault_domains = 1")
    yield from _start(tmp_path, text)


def test_one_fault_domain_refuses_fault_domain_waves_and_filters(one_fd: Emulated) -> None:
    emu = one_fd
    vmss = emu.cli("status", "-g", RG, "-n", emu.name, "--json", check_json=True)
    assert {i["fault_domain"] for i in json.loads(vmss.stdout)["instances"]} == {0}
    emu.admin("reset-counts", {})
    refused, _ = emu.upgrade("--strategy", "fault-domain")
    assert refused.returncode == 2
    _one_line_error(refused, "the fault-domain strategy: scale set")
    assert "platformFaultDomainCount 1" in refused.stderr
    emu.version -= 1
    filtered, _ = emu.upgrade("--strategy", "update-domain", "--only-fault-domains", "0")
    assert filtered.returncode == 2
    _one_line_error(filtered, "--only-fault-domains: scale set")
    emu.version -= 1
    plan = emu.cli(
        "plan", "-g", RG, "-n", emu.name, "-s", "fault-domain", "--image-version", "9.0.0"
    )
    assert plan.returncode == 2
    _one_line_error(plan, "one fault domain")
    power = emu.cli(
        "instances", "power-off", "-g", RG, "-n", emu.name, "--only-fault-domains", "0", "--yes"
    )
    assert power.returncode == 2  # "fault domain 0" would be every instance
    _one_line_error(power, "--only-fault-domains: scale set")
    assert emu.writes() == 0  # nothing changed
    # other strategies still run
    ok, data = emu.upgrade("--strategy", "update-domain")
    assert ok.returncode == 0 and data["completed"], ok.stderr


# --------------------------------------------------------------------------- Rolling policy


@pytest.fixture
def rolling_bad(tmp_path: Path) -> Iterator[Emulated]:
    yield from _start(
        tmp_path, SCENARIO.format(instances=N), "--upgrade-policy", "Rolling", "--bad-image"
    )


def test_a_faulted_platform_rolling_upgrade_is_a_halt_with_its_error_code(
    rolling_bad: Emulated,
) -> None:
    """On Azure the model PATCH lasts until the platform's rolling upgrade ends and
    then fails with its error; the rollout ends "halted" (exit 1) with the
    platform's error code and progress, never "interrupted" by an Azure error."""
    emu = rolling_bad
    result, data = emu.upgrade("--strategy", "azure-rolling")
    assert result.returncode == 1, result.stderr
    assert data["halted"] and not data["interrupted"] and not data["completed"]
    reason = data["reason"]
    assert "platform rolling upgrade faulted" in reason
    assert "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade" in reason
    assert "progress:" in reason and "failed" in reason
    record = _journal(emu, data["rollout"]["id"])
    assert record.state == "halted"
    assert "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade" in record.reason


@pytest.fixture
def rolling(tmp_path: Path) -> Iterator[Emulated]:
    text = SCENARIO.format(instances=N).replace('upgrade = "fixed(60s)"', 'upgrade = "fixed(600s)"')
    yield from _start(tmp_path, text, "--upgrade-policy", "Rolling")


def test_ctrl_c_cancels_the_platform_rolling_upgrade(rolling: Emulated) -> None:
    """The model PATCH is not waited on: instances upgraded by the platform are
    reported as they come, and Ctrl-C cancels the platform's rolling upgrade."""
    emu = rolling
    seen: list[str] = []

    def on_line(line: str, proc: subprocess.Popen[str]) -> None:
        if "upgraded by the platform" in line and not seen:
            seen.append(line)
            proc.send_signal(signal.SIGINT)

    code, output = emu.watch_upgrade("--strategy", "azure-rolling", on_line=on_line)
    assert seen, output  # progress came while the platform rolled
    assert code == 130, output
    assert "cancelled the platform's rolling upgrade" in output
    with emu.sdk() as client:
        latest = client.virtual_machine_scale_set_rolling_upgrades.get_latest(RG, emu.name)
        assert latest.as_dict()["properties"]["runningStatus"]["code"] == "Cancelled"
    rollout = "r-" + output.split("r-", 1)[1].split()[0].rstrip("`;:,.")
    assert _journal(emu, rollout).state == "interrupted"


# --------------------------------------------------------------------------- protection


@pytest.fixture
def protected(tmp_path: Path) -> Iterator[Emulated]:
    yield from _start(tmp_path, SCENARIO.format(instances=N), "--protected-instances", "3,7")


def test_protected_instances_are_shown_and_left_out_of_the_rollout(protected: Emulated) -> None:
    emu = protected
    status = json.loads(emu.cli("status", "-g", RG, "-n", emu.name, "--json").stdout)
    assert status["counts"]["protected"] == 2
    assert sorted(i["instance_id"] for i in status["instances"] if i["protected"]) == ["3", "7"]
    shown = emu.cli("status", "-g", RG, "-n", emu.name)
    assert "protected: 2 instances protected from scale set actions" in shown.stdout
    assert shown.stdout.rstrip().endswith("3 7")
    plan = emu.cli(
        "plan",
        "-g",
        RG,
        "-n",
        emu.name,
        "-s",
        "batch:size=4",
        "--image-version",
        "2.0.0",
        "--runs",
        "5",
        "--json",
    )
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    assert planned["protected"] == ["3", "7"]
    waves = [set(w) for w in planned["waves"]]
    assert set().union(*waves) == {str(i) for i in range(N)} - {"3", "7"}
    emu.admin("reset-counts", {})
    result, data = emu.upgrade("--strategy", "batch:size=4")
    assert result.returncode == 0, result.stderr
    assert data["completed"] and data["upgraded"] == N - 2 and data["scope"] == N - 2
    requests = emu.upgrade_requests()
    assert "3" not in requests and "7" not in requests  # never named in an action
    assert all(requests[str(i)] == 1 for i in range(N) if i not in (3, 7))


def test_a_refusal_naming_protected_instances_is_not_an_unknown_instance(
    protected: Emulated,
) -> None:
    """An action naming a protected instance (listed before it was protected, or
    by another tool) is refused by Azure; the backend drops the protected ids
    the refusal names and sends the rest once, instead of resending the whole
    action as if an instance had been deleted."""
    from vmss_rollout.backends.azure import AzureBackend
    from vmss_rollout.engine.target import target_model

    emu = protected
    emu.admin("reset-counts", {})
    sleeps: list[float] = []
    with emu.sdk() as client:
        backend = AzureBackend(client, RG, emu.name, sleep=sleeps.append)
        scale_set, _ = backend.read()
        backend.update_model(target_model(scale_set.model, image_version="2.0.0"), None)
        emu.admin("reset-counts", {})
        backend.start_upgrade(["2", "3", "4"])
    log = [e for e in emu.admin("requests")["log"] if e["operation"].endswith("manualupgrade")]
    assert [(e["status"], sorted(e.get("instance_ids") or [])) for e in log] == [
        (400, ["2", "3", "4"]),
        (202, ["2", "4"]),
    ]
    assert sleeps == []  # nothing to wait for: the server did nothing


# --------------------------------------------------------------------------- 409 Conflict


@pytest.fixture
def conflicting(tmp_path: Path) -> Iterator[Emulated]:
    """Overlapping writes refused with 409 Conflict on a third of the writes."""
    yield from _start(tmp_path, SCENARIO.format(instances=N), "--conflict-rate", "0.3")


def test_409_conflicts_are_retried_and_no_instance_is_asked_twice(conflicting: Emulated) -> None:
    emu = conflicting
    emu.admin("reset-counts", {})
    result, data = emu.upgrade("--strategy", "batch:size=2")
    assert result.returncode == 0, result.stderr
    assert data["completed"] and data["upgraded"] == N
    log = emu.admin("requests")["log"]
    assert any(e["status"] == 409 for e in log), "the emulator refused nothing"
    assert emu.upgrade_requests() == {str(i): 1 for i in range(N)}


# --------------------------------------------------------------------------- model drift


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[Emulated]:
    yield from _start(tmp_path, SCENARIO.format(instances=N))


def _add_extension(emu: Emulated, name: str) -> None:
    """A model change that is not the image or size (as Azure Policy or Defender
    adding an extension to the scale set)."""
    from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

    extension = {
        "name": name,
        "properties": {
            "publisher": "Microsoft.Azure.Security.Monitoring",
            "type": "AzureSecurityLinuxAgent",
            "typeHandlerVersion": "2.0",
        },
    }
    with emu.sdk() as client:
        vmss = client.virtual_machine_scale_sets.get(RG, emu.name).as_dict()
        profile = vmss["properties"]["virtualMachineProfile"]
        extensions = (profile.get("extensionProfile") or {}).get("extensions") or []
        body = {
            "properties": {
                "virtualMachineProfile": {
                    "extensionProfile": {"extensions": [*extensions, extension]}
                }
            }
        }
        client.virtual_machine_scale_sets.begin_update(
            RG, emu.name, VirtualMachineScaleSetUpdate(body)
        ).result()


def test_model_drift_neither_re_upgrades_nor_stalls(manual: Emulated) -> None:
    """An extension added to the model turns latestModelApplied false on every
    instance (Azure: any model change the instance has not picked up); instances
    on the target image and size are still done."""
    emu = manual
    first, data = emu.upgrade("--strategy", "batch:size=5")
    assert first.returncode == 0 and data["completed"], first.stderr
    _add_extension(emu, "defender")
    state = emu.state()["instances"]
    assert not any(i["latest_model_applied"] for i in state.values())  # Azure's drift
    emu.admin("reset-counts", {})
    again = emu.cli(
        "upgrade",
        "-g",
        RG,
        "-n",
        emu.name,
        "--image-version",
        f"{emu.version}.0.0",
        "-s",
        "batch:size=5",
        "--yes",
        "--json",
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["noop"] is True
    assert emu.writes() == 0
    # drift in the middle of a rollout: nothing is upgraded twice, it completes
    emu.faults(concurrent_change_after=3, concurrent_change_kind="extension")
    mid, data = emu.upgrade("--strategy", "batch:size=2")
    emu.faults(concurrent_change_after=None)
    assert mid.returncode == 0 and data["completed"] and data["upgraded"] == N, mid.stderr
    assert max(emu.upgrade_requests().values()) == 1


# --------------------------------------------------------------------------- overprovisioning


@pytest.fixture
def uneven(tmp_path: Path) -> Iterator[Emulated]:
    """Instances take 20 s to 5 min to provision: the extras an overprovisioned
    scale-out deletes are not always the highest ids."""
    text = SCENARIO.format(instances=N).replace(
        'upgrade = "fixed(60s)"', 'upgrade = "uniform(20s, 300s)"'
    )
    yield from _start(tmp_path, text)


def test_overprovisioned_extras_are_never_taken_for_surge_replacements(uneven: Emulated) -> None:
    emu = uneven
    with emu.sdk() as client:
        vmss = client.virtual_machine_scale_sets.get(RG, emu.name).as_dict()
    assert vmss["properties"]["overprovision"] is True  # Azure's default for Uniform sets
    result, data = emu.upgrade("--strategy", "surge:max-surge=2")
    assert result.returncode == 0, result.stderr
    assert data["completed"] and data["upgraded"] == N and data["failed"] == 0, emu.outputs[-1]
    state = emu.state()["instances"]
    assert len(state) == N  # as many as before: every old one replaced, extras gone
    target = f":{emu.version}.0.0 ("
    assert all(target in i["model"] and i["health"] == "healthy" for i in state.values())
    rollout = data["rollout"]["id"]
    with Journal(emu.journal) as journal:
        outcomes = journal.instance_outcomes(rollout)
    assert "gone" not in outcomes.values(), outcomes


# --------------------------------------------------------------------------- marked for deletion


@pytest.fixture
def slow_deletes(tmp_path: Path) -> Iterator[Emulated]:
    """Simulated time x60: a delete lasts half a second of wall-clock time."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=N))
    with emulator_process(
        scenario, tmp_path, "--time-scale", "60", "--retry-after", "0.05"
    ) as info:
        yield Emulated(info, tmp_path, scenario)


def test_an_instance_marked_for_deletion_counts_as_gone(slow_deletes: Emulated) -> None:
    """An action naming an instance being deleted gets 409 OperationNotAllowed
    ("... since the VM is marked for deletion"): the instance is dropped like a
    deleted one and the rest is sent at once, not taken for a fatal error."""
    from vmss_rollout.backends.azure import AzureBackend
    from vmss_rollout.engine.target import target_model

    emu = slow_deletes
    sleeps: list[float] = []
    with emu.sdk() as client:
        backend = AzureBackend(client, RG, emu.name, sleep=sleeps.append)
        scale_set, _ = backend.read()
        backend.update_model(target_model(scale_set.model, image_version="2.0.0"), None)
        client.virtual_machine_scale_sets.begin_delete_instances(
            RG, emu.name, {"instanceIds": ["5"]}, polling=False
        )
        emu.admin("reset-counts", {})
        backend.start_upgrade(["4", "5"])
    log = [e for e in emu.admin("requests")["log"] if e["operation"].endswith("manualupgrade")]
    assert [(e["status"], sorted(e.get("instance_ids") or [])) for e in log] == [
        (409, ["4", "5"]),
        (202, ["4"]),
    ]
    assert sleeps == []


def test_a_second_platform_rollout_follows_its_own_run_and_an_early_ctrl_c_waits_for_it(
    rolling: Emulated,
) -> None:
    """rollingUpgrades/latest still shows the previous, finished run right after
    the model PATCH: the rollout follows the run that starts after it; a Ctrl-C
    before that run exists cancels it once it does."""
    emu = rolling
    first, data = emu.upgrade("--strategy", "azure-rolling")
    assert first.returncode == 0 and data["completed"] and data["upgraded"] == N, first.stderr

    def stop_at_once(line: str, proc: subprocess.Popen[str]) -> None:
        if "model_updated" in line:
            proc.send_signal(signal.SIGINT)

    code, output = emu.watch_upgrade("--strategy", "azure-rolling", on_line=stop_at_once)
    assert code == 130, output
    assert "cancelled the platform's rolling upgrade" in output
    with emu.sdk() as client:
        latest = client.virtual_machine_scale_set_rolling_upgrades.get_latest(RG, emu.name)
        assert latest.as_dict()["properties"]["runningStatus"]["code"] == "Cancelled"
    target = f":{emu.version}.0.0 ("
    assert not all(target in i["model"] for i in emu.state()["instances"].values())


# --------------------------------------------------------------------------- gallery ids


def test_a_direct_shared_gallery_image_is_upgraded_in_its_own_field(manual: Emulated) -> None:
    """imageReference.sharedGalleryImageId round-trips: the new version is
    written to that field (the other id kinds nulled), never to ``id``."""
    from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

    emu = manual
    shared = "/SharedGalleries/0a1b2c-WEBIMAGES/Images/web/Versions/1.0.0"
    ref = {
        "publisher": None,
        "offer": None,
        "sku": None,
        "version": None,
        "id": None,
        "sharedGalleryImageId": shared,
    }
    body = {"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": ref}}}}
    with emu.sdk() as client:
        client.virtual_machine_scale_sets.begin_update(
            RG, emu.name, VirtualMachineScaleSetUpdate(body)
        ).result()
        emu.cli("instances", "reimage", "-g", RG, "-n", emu.name, "--all", "--yes")
        result = emu.cli(
            "upgrade",
            "-g",
            RG,
            "-n",
            emu.name,
            "--image-version",
            "1.1.0",
            "-s",
            "batch:size=5",
            "--yes",
            "--json",
        )
        assert result.returncode == 0, result.stderr
        assert last_json(result.stdout)["upgraded"] == N
        stored = client.virtual_machine_scale_sets.get(RG, emu.name).as_dict()
        image = stored["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
        assert image.get("sharedGalleryImageId", "").endswith("/Versions/1.1.0"), image
        assert not image.get("id") and not image.get("communityGalleryImageId"), image
        vm = next(iter(client.virtual_machine_scale_set_vms.list(RG, emu.name))).as_dict()
        on_vm = vm["properties"]["storageProfile"]["imageReference"]
        assert on_vm.get("sharedGalleryImageId", "").endswith("/Versions/1.1.0"), on_vm
