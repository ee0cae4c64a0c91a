"""``plan`` predicts the rehearsal it precedes: the CLI, as its own process,
plans and then upgrades a 30-instance scale set on the ARM emulator (another
process) through the real SDK, the rehearsal waiting on the emulator's clock.
The simulated driver polls as ``upgrade`` does, with the seconds per ARM call
plan measured, so the plan's p50 is within 15% of the rehearsal's duration
(the benchmark's goal is 10%: ``benchmarks/run.py``, section 9)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import FAST, RG, Emulated, last_json

from vmss_rollout.backends.journal import Journal
from vmss_rollout.emulator.launch import emulator_process

#: fixed timings: the rehearsal draws nothing, so what differs from the plan is the
#: driver (when its polls see each change, what its calls cost), what is tested here
SCENARIO = """
name = "predicted"
seed = 5
[scale_set]
instances = 30
update_domains = 5
[timing]
upgrade = "fixed(4m)"
health_delay = "fixed(30s)"
"""
#: fast enough for a test (a 30-minute rollout in about 6 s), slow enough that the
#: driver's own wall-clock work (x300 in emulated time) stays a small part of it
TIME_SCALE = "300"


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("prediction")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO)
    with emulator_process(scenario, tmp, "--time-scale", TIME_SCALE) as info:
        yield Emulated(info, tmp, scenario)


def plan(emu: Emulated, *args: str) -> dict[str, object]:
    result = emu.cli(
        "plan",
        "-g",
        RG,
        "-n",
        emu.name,
        "-s",
        "update-domain",
        "--image-version",
        f"{emu.version + 1}.0.0",
        "--scenario",
        str(emu.scenario),
        "-o",
        "json",
        *args,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_plan_p50_is_within_15_percent_of_the_rehearsal(emu: Emulated) -> None:
    planned = plan(emu)
    driver = planned["assumed"]["driver"]  # type: ignore[index]
    assert driver["poll_interval"] == "5:30"  # upgrade's default, as the rehearsal's
    assert driver["request_latency_origin"].startswith("measured")
    assert driver["request_latency_s"] > 0
    p50 = planned["simulation"]["duration_s"]["p50"]  # type: ignore[index]
    # the rehearsal: upgrade with its default poll interval, on the emulator's clock
    result = emu.cli(
        "upgrade",
        "-g",
        RG,
        "-n",
        emu.name,
        "-s",
        "update-domain",
        "--image-version",
        emu.next_target(),
        "--yes",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    rollout = last_json(result.stdout)["rollout"]["id"]
    with Journal(emu.journal) as journal:
        times = {e["kind"]: e["time"] for e in journal.events(rollout)}
    took = times["rollout_finished"] - times["rollout_started"]
    # 5 waves of 4m30s at least: the emulator's time, not the wall clock's
    assert took > 5 * 270
    assert abs(p50 / took - 1) <= 0.15, (p50, took)
    # the idealised driver (every change seen at once, the simulator before issue
    # 11) predicts the lower bound: 5 x 4m30s, short of the rehearsal
    ideal = emu.tmp / "ideal.toml"
    ideal.write_text(emu.scenario.read_text() + '[driver]\npoll_interval = "0"\n')
    lower = plan(emu, "--scenario", str(ideal))
    assert lower["simulation"]["duration_s"]["p50"] == 5 * 270  # type: ignore[index]


def test_plan_poll_interval_overrides_the_scenarios(emu: Emulated) -> None:
    slow = plan(emu, "--poll-interval", "120:120")
    driver = slow["assumed"]["driver"]  # type: ignore[index]
    assert driver["poll_interval"] == "120:120"
    assert driver["poll_interval_origin"] == "--poll-interval"
    default = plan(emu)
    origin = default["assumed"]["driver"]["poll_interval_origin"]  # type: ignore[index]
    assert origin == f"--scenario {emu.scenario}"
    slow_p50 = slow["simulation"]["duration_s"]["p50"]  # type: ignore[index]
    assert slow_p50 > default["simulation"]["duration_s"]["p50"]  # type: ignore[index]
    text = emu.cli(
        "plan", "-g", RG, "-n", emu.name, "-s", "batch", "--image-version", "9.0.0",
        "--poll-interval", "10",
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "driver: polls every 10:30 s (--poll-interval)" in text.stdout
    assert "per ARM call (measured: median of this command's timed lists)" in text.stdout


@pytest.mark.parametrize("bad", ["0", "5:1", "fast"])
def test_plan_refuses_a_bad_poll_interval(emu: Emulated, bad: str) -> None:
    before = emu.admin("requests")["by_operation"]
    result = emu.cli(
        "plan", "-g", RG, "-n", emu.name, "-s", "batch", "--image-version", "9.0.0",
        "--poll-interval", bad,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: --poll-interval: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert emu.admin("requests")["by_operation"] == before  # refused before any call


def test_upgrades_prompt_plans_with_its_own_poll_interval(emu: Emulated) -> None:
    result = emu.cli(
        "upgrade", "-g", RG, "-n", emu.name, "-s", "batch", "--image-version",
        emu.next_target(), "--yes", *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"driver: polls every {FAST[1]} s (--poll-interval)" in result.stderr


def test_upgrade_journals_its_poll_interval_for_calibrate(emu: Emulated) -> None:
    """calibrate reconstructs the polls from the interval the rollout used: the
    journal keeps it, and resume still reads the engine's options from the record."""
    result = emu.cli(
        "upgrade", "-g", RG, "-n", emu.name, "-s", "batch", "--image-version",
        emu.next_target(), "--yes", "--json", "--poll-interval", "3:12",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rollout = last_json(result.stdout)["rollout"]["id"]
    with Journal(emu.journal) as journal:
        [record] = [r for r in journal.history() if r.id == rollout]
    assert record.options["poll_interval"] == "3:12"
    assert "poll_interval" not in record.engine_options
    calibrated = emu.cli("calibrate", "-g", RG, "-n", emu.name, "--arm-endpoint",
                         emu.info["endpoint"])  # fmt: skip
    assert calibrated.returncode == 0, calibrated.stderr
    assert f"#   {rollout}: poll interval 3:12 (journaled)" in calibrated.stdout


def test_upgrades_prompt_predicts_with_the_scenario_or_calibration_given(emu: Emulated) -> None:
    """The prompt and the live view's ETA use the timings ``plan`` was given:
    --scenario FILE or --calibrated, with their origin on the assumed line."""
    slow = emu.tmp / "slow.toml"
    slow.write_text(emu.scenario.read_text().replace('"fixed(4m)"', '"fixed(40m)"'))
    base = ["upgrade", "-g", RG, "-n", emu.name, "-s", "batch", "--yes", *FAST]
    result = emu.cli(*base, "--image-version", emu.next_target(), "--scenario", str(slow))
    assert result.returncode == 0, result.stderr
    assert f"assumed (--scenario {slow}): upgrade fixed(40m)" in result.stderr
    # batch:size=6 on 30: 5 waves of at least 40 minutes
    p50 = re.search(r"duration p50 (\d+)h(\d+)m", result.stderr)
    assert p50 is not None and int(p50[1]) * 60 + int(p50[2]) >= 200, result.stderr
    result = emu.cli(*base, "--image-version", emu.next_target(), "--calibrated")
    assert result.returncode == 0, result.stderr
    assert "assumed (calibrated from " in result.stderr
    assert "upgrade fixed(40m)" not in result.stderr  # fitted from the rehearsals: 4m
    before = emu.admin("requests")["by_operation"]
    both = emu.cli(*base, "--image-version", "99.0.0", "--calibrated", "--scenario", str(slow))
    assert both.returncode == 2 and both.stderr.count("\n") == 1, both.stderr
    assert both.stderr.startswith("error: --calibrated and --scenario: give one of them")
    assert emu.admin("requests")["by_operation"] == before  # refused before any ARM call
