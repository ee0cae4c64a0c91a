"""vmss-rollout against the ARM emulator, end to end: the CLI runs as its own
process and drives the emulator (another process) through the real
azure-mgmt-compute SDK over HTTPS, authenticated by azure-identity's
DefaultAzureCredential from the environment the emulator prints.

The differential test checks that the same strategy, scenario and seed give
the same waves, in the same order, through the SimPy backend directly and
through the Azure backend against the emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")


from emulated import FAST, RG, SCENARIO, Emulated, last_json

from vmss_rollout.backends.journal import Journal
from vmss_rollout.emulator.launch import emulator_process
from vmss_rollout.sim import load_scenario, run_once


def journal_waves(emu: Emulated, rollout_id: str) -> list[dict[str, Any]]:
    with Journal(emu.journal) as journal:
        return journal.waves(rollout_id)


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("e2e")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=30))
    with emulator_process(scenario, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        yield Emulated(info, tmp, scenario)


def test_upgrade_one_update_domain_at_a_time(emu: Emulated) -> None:
    emu.admin("reset-counts", {})
    result, data = emu.upgrade("--strategy", "update-domain")
    assert result.returncode == 0, result.stderr
    assert data["completed"] and data["upgraded"] == 30 and data["failed"] == 0
    # every instance received exactly one upgrade request
    assert emu.upgrade_requests() == Counter({str(i): 1 for i in range(30)})
    waves = journal_waves(emu, data["rollout"]["id"])
    assert len(waves) == 5
    for wave in waves:  # one update domain per wave: instances i, i+5, i+10, ...
        assert len({int(i) % 5 for i in wave["instances"]}) == 1
    status = json.loads(emu.cli("status", "-g", RG, "-n", emu.name, "--json").stdout)
    assert status["counts"] == {"latest": 30}
    assert status["model"]["image"].endswith(f":{emu.version}.0.0")


@pytest.mark.parametrize("spec", ["batch:size=7", "fault-domain:order=desc", "one-at-a-time"])
def test_same_waves_as_the_simulator(emu: Emulated, spec: str) -> None:
    result, data = emu.upgrade("--strategy", spec)
    assert result.returncode == 0, result.stderr
    real = [tuple(w["instances"]) for w in journal_waves(emu, data["rollout"]["id"])]
    scenario = load_scenario(emu.scenario)
    simulated = run_once(scenario, spec, seed=scenario.seed, record=True).waves()
    assert real == simulated


def test_plan_changes_nothing(emu: Emulated) -> None:
    before = emu.admin("requests")["by_operation"]
    result = emu.cli(
        "plan",
        "-g",
        RG,
        "-n",
        emu.name,
        "--image-version",
        "99.0.0",
        "--strategy",
        "update-domain",
        "--runs",
        "5",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["waves"]) == 5 and data["outage_runs"] == 0
    after = emu.admin("requests")["by_operation"]
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert all(op.startswith(READS) for op in changed), changed


def test_bad_input_changes_nothing(emu: Emulated) -> None:
    cases = [
        (["status", "-g", "nope", "-n", emu.name], "ResourceGroupNotFound"),
        (
            ["upgrade", "-g", RG, "-n", "nope", "--image-version", "9.0.0", "-s", "batch", "--yes"],
            "not found",
        ),
        (
            ["upgrade", "-g", RG, "-n", emu.name, "--image-version", "9.0", "-s", "batch", "--yes"],
            "--image-version: expected MAJOR.MINOR.BUILD",
        ),
        (
            [
                "upgrade",
                "-g",
                RG,
                "-n",
                emu.name,
                "--image-version",
                "9.0.0",
                "-s",
                "batch:size=0",
                "--yes",
            ],
            "batch:size: must be >= 1",
        ),
    ]
    before = emu.admin("requests")["total"]
    writes_before = _writes(emu)
    for args, needle in cases:
        result = emu.cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _writes(emu) == writes_before
    assert emu.admin("requests")["total"] >= before


READS = ("vmss.get", "vms.list", "vms.get", "identity.token", "operations")


def _writes(emu: Emulated) -> int:
    """Requests that could change the scale set (PUT, PATCH, POST actions, deletes)."""
    by_op = emu.admin("requests")["by_operation"]
    return sum(n for op, n in by_op.items() if not op.startswith(READS))


def test_target_equal_to_the_current_model_is_a_noop(emu: Emulated) -> None:
    result = emu.cli(
        "upgrade",
        "-g",
        RG,
        "-n",
        emu.name,
        "--image-version",
        f"{emu.version}.0.0",
        "-s",
        "batch",
        "--yes",
        "--json",
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["noop"] is True


def test_no_wait_then_resume_never_upgrades_an_instance_twice(emu: Emulated) -> None:
    emu.admin("reset-counts", {})
    result, data = emu.upgrade("--strategy", "batch:size=10", "--no-wait")
    assert result.returncode == 0, result.stderr
    rollout = data["rollout"]["id"]
    assert data["rollout"]["state"] == "interrupted"
    assert sum(emu.upgrade_requests().values()) == 10  # only the first wave started
    resumed = emu.cli("resume", rollout, "--yes", "--json", *FAST[:2])
    assert resumed.returncode == 0, resumed.stderr
    assert last_json(resumed.stdout)["completed"]
    assert emu.upgrade_requests() == Counter({str(i): 1 for i in range(30)})
    with Journal(emu.journal) as journal:
        assert journal.get(rollout).state == "completed"


def test_policy_automatic_needs_consent(emu: Emulated) -> None:
    _set_policy(emu, "Automatic")
    try:
        result, _ = emu.upgrade("--strategy", "update-domain")
        assert result.returncode == 2
        assert (
            "upgrade policy is Automatic" in result.stderr and "--allow-automatic" in result.stderr
        )
        assert _writes_since_reset(emu) == 0
    finally:
        _set_policy(emu, "Manual")
    emu.version -= 1  # nothing was upgraded


def test_policy_rolling_native_and_switched(emu: Emulated) -> None:
    _set_policy(emu, "Rolling")
    try:
        refused, _ = emu.upgrade("--strategy", "update-domain")
        assert refused.returncode == 2 and "--switch-to-manual" in refused.stderr
        emu.version -= 1
        native, data = emu.upgrade("--strategy", "azure-rolling")
        assert native.returncode == 0, native.stderr
        assert data["policy"] == "native-rolling" and data["completed"]
        switched, data = emu.upgrade("--strategy", "update-domain", "--switch-to-manual")
        assert switched.returncode == 0, switched.stderr
        assert data["policy"] == "switch-to-manual" and data["upgraded"] == 30
        status = json.loads(emu.cli("status", "-g", RG, "-n", emu.name, "--json").stdout)
        assert status["upgrade_policy"] == "Rolling"  # restored
        assert status["counts"] == {"latest": 30}
    finally:
        _set_policy(emu, "Manual")


def _set_policy(emu: Emulated, mode: str) -> None:
    from azure.identity import DefaultAzureCredential
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

    saved = {k: os.environ.get(k) for k in emu.info["env"]}
    os.environ.update(emu.info["env"])
    try:
        client = ComputeManagementClient(
            DefaultAzureCredential(), emu.info["subscription"], base_url=emu.info["endpoint"]
        )
        body = VirtualMachineScaleSetUpdate({"properties": {"upgradePolicy": {"mode": mode}}})
        client.virtual_machine_scale_sets.begin_update(RG, emu.name, body).result()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    emu.admin("reset-counts", {})


def _writes_since_reset(emu: Emulated) -> int:
    return _writes(emu)


def test_requests_per_instance_for_a_100_instance_update_domain_rollout(
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=100))
    with emulator_process(scenario, tmp_path, "--time-scale", "600") as info:
        emu = Emulated(info, tmp_path, scenario)
        result, data = emu.upgrade("--strategy", "update-domain")
        assert result.returncode == 0, result.stderr
        assert data["upgraded"] == 100
        total = emu.admin("requests")["total"]
        # 1 GET + 2 list pages to read; 1 PATCH; per wave 1 manualupgrade and a few
        # polls of 2 pages each: well under one request per upgraded instance
        assert total / 100 < 1.0, emu.admin("requests")["by_operation"]
        print(
            f"\nARM requests for a 100-instance update-domain rollout: {total} "
            f"({total / 100:.2f} per instance): {emu.admin('requests')['by_operation']}"
        )


def test_power_actions_on_a_fault_domain_and_on_single_vms(emu: Emulated) -> None:
    fd1 = [str(i) for i in range(30) if i % 3 == 1]  # instance i is in fault domain i % 3
    off = emu.cli(
        "instances",
        "power-off",
        "-g",
        RG,
        "-n",
        emu.name,
        "--only-fault-domains",
        "1",
        "--yes",
        "--json",
        "--poll-interval",
        "0.05:0.2",
    )
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["instances"] == fd1
    status = json.loads(emu.cli("status", "-g", RG, "-n", emu.name, "--json").stdout)
    stopped = sorted(
        (i["instance_id"] for i in status["instances"] if i["state"] == "stopped"), key=int
    )
    assert stopped == fd1
    on = emu.cli(
        "instances",
        "start",
        "-g",
        RG,
        "-n",
        emu.name,
        "--only-instances",
        ",".join(fd1),
        "--yes",
        "--json",
        "--poll-interval",
        "0.05:0.2",
    )
    assert on.returncode == 0, on.stderr
    status = json.loads(emu.cli("status", "-g", RG, "-n", emu.name, "--json").stdout)
    assert status["counts"] == {"latest": 30}


def test_instance_actions_need_a_selection_and_a_valid_action(emu: Emulated) -> None:
    none = emu.cli("instances", "restart", "-g", RG, "-n", emu.name, "--yes")
    assert none.returncode == 2 and "--all" in none.stderr
    bad = emu.cli("instances", "explode", "-g", RG, "-n", emu.name, "--all", "--yes")
    assert bad.returncode == 2 and "unknown action 'explode'" in bad.stderr
    missing = emu.cli(
        "instances", "restart", "-g", RG, "-n", emu.name, "--only-instances", "99", "--yes"
    )
    assert missing.returncode == 2 and "only_instances: 99 not in the scale set" in missing.stderr


def test_ctrl_c_stops_after_the_wave_in_flight_and_resume_finishes(emu: Emulated) -> None:
    import signal

    emu.admin("reset-counts", {})
    emu.version += 1
    command = [
        sys.executable,
        "-m",
        "vmss_rollout.cli.app",
        "upgrade",
        "-g",
        RG,
        "-n",
        emu.name,
        "--image-version",
        f"{emu.version}.0.0",
        "--strategy",
        "batch:size=6",
        "--yes",
        "--arm-endpoint",
        emu.info["endpoint"],
        *FAST,
    ]
    proc = subprocess.Popen(command, env=emu.env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # the event log: wait for the first wave, then Ctrl-C
        lines.append(line)
        if "wave_started" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=60)[1]
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    assert "stopping after the instances in flight" in output
    assert "continue with: vmss-rollout resume r-" in output
    rollout = output.split("vmss-rollout resume ")[1].split()[0]
    with Journal(emu.journal) as journal:
        record = journal.get(rollout)
        assert record.state == "interrupted"
        assert record.upgraded == 6  # the wave in flight finished; nothing more started
    assert sum(emu.upgrade_requests().values()) == 6
    resumed = emu.cli("resume", rollout, "--yes", "--json", *FAST[:2])
    assert resumed.returncode == 0, resumed.stderr
    assert emu.upgrade_requests() == Counter({str(i): 1 for i in range(30)})


def test_a_second_upgrade_of_the_same_scale_set_is_refused(emu: Emulated) -> None:
    scale_set_id = (
        f"/subscriptions/{emu.info['subscription']}/resourceGroups/{RG}/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/{emu.name}"
    )
    with Journal(emu.journal) as journal:  # as a crashed (SIGKILLed) upgrade leaves it
        running = journal.start(
            scale_set_id=scale_set_id,
            previous_model={},
            target_model={},
            strategy="one-at-a-time",
            options={},
            now=1.0e9,
        )
    try:
        result, _ = emu.upgrade("--strategy", "batch")
        assert result.returncode == 2
        assert running.id in result.stderr and "running" in result.stderr
    finally:
        emu.version -= 1
        with Journal(emu.journal) as journal:
            journal.finish(running.id, "failed", "test", 1.0e9 + 1)


def test_a_concurrent_model_change_stops_the_model_update(emu: Emulated) -> None:
    from vmss_rollout.backends.azure import AzureBackend, connect
    from vmss_rollout.engine.errors import ConcurrencyError
    from vmss_rollout.engine.target import target_model

    saved = dict(os.environ)
    os.environ.update(emu.info["env"])
    try:
        client, counter, clock = connect(emu.info["subscription"], emu.info["endpoint"])
        backend = AzureBackend(client, RG, emu.name, counter, clock=clock)
        scale_set, _ = backend.read()
        from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

        someone = VirtualMachineScaleSetUpdate({"tags": {"changed-by": "someone else"}})
        client.virtual_machine_scale_sets.begin_update(RG, emu.name, someone).result()
        target = target_model(scale_set.model, image_version="77.0.0")
        with pytest.raises(ConcurrencyError, match="changed by someone else"):
            backend.update_model(target, scale_set.etag)
        assert backend.read()[0].model == scale_set.model  # nothing was overwritten
    finally:
        os.environ.clear()
        os.environ.update(saved)
