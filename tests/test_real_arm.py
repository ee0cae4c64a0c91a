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

from emulated import RG, SCENARIO, Emulated

from vmss_rollout.emulator.launch import emulator_process
from vmss_rollout.engine.journal import Journal

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
