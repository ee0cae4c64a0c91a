"""`vmss-rollout calibrate` and `plan --calibrated`: scenarios fitted from the journal.

Recovery is measured on journals of real (engine-driven, polled) rollouts of
the simulated scale set with known distributions and rates
(:func:`simulated_history`); the CLI tests run calibrate and plan as their own
processes against the ARM emulator (topology through the real SDK), and one
calibrates from a journal written by a real `upgrade` through the emulator.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vmss_rollout.backends.calibrate import (
    AzureFigures,
    History,
    azure_figures,
    fit,
    golden_section,
    nelder_mead,
    observations,
    parse_since,
    simulated_history,
)
from vmss_rollout.backends.journal import Journal
from vmss_rollout.engine.errors import InputError
from vmss_rollout.engine.options import EngineOptions
from vmss_rollout.sim.distributions import (
    Distribution,
    Exponential,
    Fixed,
    LogNormal,
    Uniform,
)
from vmss_rollout.sim.scenario import default_scenario, load_scenario_text

SSID = (
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web"
)
#: no halts: every instance of every rollout is a sample
NO_HALT = EngineOptions(max_unhealthy=100, max_unhealthy_upgraded=100)


def journal_of(
    path: Path,
    upgrade: Distribution,
    health: Distribution,
    *,
    failure: float = 0.0,
    unhealthy: float = 0.0,
    rollouts: int = 4,
    instances: int = 40,
    seed: int = 11,
    ssid: str = SSID,
    poll: tuple[float, float] = (5.0, 30.0),
) -> Journal:
    scenario = dataclasses.replace(
        default_scenario(),
        instances=instances,
        upgrade=upgrade,
        health_delay=health,
        upgrade_failure=failure,
        unhealthy_after_upgrade=unhealthy,
        engine=NO_HALT,
    )
    journal = Journal(path)
    simulated_history(
        journal,
        scenario,
        "batch:size=10",
        rollouts=rollouts,
        seed=seed,
        scale_set_id=ssid,
        poll_interval=poll,
    )
    return journal


# --------------------------------------------------------------------------- optimisers


def test_golden_section_finds_a_minimum() -> None:
    assert golden_section(lambda x: (x - 3.25) ** 2 + 1, -10, 10) == pytest.approx(3.25, abs=1e-5)


def test_nelder_mead_finds_rosenbrocks_minimum() -> None:
    def rosenbrock(p: list[float] | tuple[float, ...]) -> float:
        return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2

    x, y = nelder_mead(rosenbrock, [-1.2, 1.0], [0.5, 0.5], iterations=5000, tol=1e-16)
    assert (x, y) == pytest.approx((1.0, 1.0), abs=1e-3)


# --------------------------------------------------------------------------- fits


def test_fit_of_exact_intervals_around_a_constant_is_fixed() -> None:
    result = fit([(59.0, 61.0), (55.0, 60.5), (59.5, 90.0)])
    assert result.family == "fixed"
    assert isinstance(result.chosen, Fixed)
    assert 59.5 < result.chosen.seconds <= 60.5
    assert result.ks == 0.0
    assert math.isinf(next(c for c in result.candidates if c.family == "fixed").aic) is False


def test_fit_rejects_an_empty_sample_and_bad_intervals() -> None:
    with pytest.raises(ValueError, match="no observations"):
        fit([])
    with pytest.raises(ValueError, match="not an observation interval"):
        fit([(5.0, 3.0)])


@pytest.mark.parametrize(
    ("upgrade", "family"),
    [
        (Fixed(150), "fixed"),
        (Uniform(120, 360), "uniform"),
        (Exponential(180), "exponential"),
        (LogNormal(240, 40), "lognormal"),
    ],
    ids=["fixed", "uniform", "exponential", "lognormal"],
)
def test_calibrate_chooses_the_right_family_and_mean(
    tmp_path: Path, upgrade: Distribution, family: str
) -> None:
    # 8 rollouts x 40 instances = 320 samples, seen at the default 5:30 polls
    journal = journal_of(tmp_path / "j.sqlite", upgrade, Fixed(30), rollouts=8)
    history = observations(journal, SSID)
    assert len(history.upgrade) == 320
    result = fit(history.upgrade)
    assert result.family == family, "\n".join(result.comment("upgrade"))
    assert result.chosen.mean() == pytest.approx(upgrade.mean(), rel=0.10)
    assert result.ks < 0.08


def test_calibrate_recovers_timings_and_rates(tmp_path: Path) -> None:
    upgrade, health = LogNormal(240, 60), Exponential(45)
    journal = journal_of(
        tmp_path / "j.sqlite",
        upgrade,
        health,
        failure=0.05,
        unhealthy=0.10,
        rollouts=8,
        instances=40,
        seed=1,
    )
    history = observations(journal, SSID)
    # 320 instance samples: a rate's standard error is about 1.7 points at 10%
    assert history.finished == 320
    up, hd = fit(history.upgrade), fit(history.health_delay)
    assert up.chosen.mean() == pytest.approx(240, rel=0.10)
    assert hd.chosen.mean() == pytest.approx(45, rel=0.10)
    assert abs(history.failed / history.finished - 0.05) <= 0.03
    unhealthy = (history.unhealthy + history.never_healthy) / history.provisioned
    assert abs(unhealthy - 0.10) <= 0.03


def test_censoring_intervals_hold_the_true_times(tmp_path: Path) -> None:
    """Fixed 61 s upgrades and 17 s health delays, seen at 5:30 polls: every
    reconstructed interval must contain the true value (a fixed fit has log L 0
    only then); the driver's schedule narrows the intervals below the bound
    the 30 s poll maximum alone gives."""
    journal = journal_of(tmp_path / "j.sqlite", Fixed(61), Fixed(17), rollouts=3)
    history = observations(journal, SSID)
    assert all(a < 61 <= b for a, b in history.upgrade)
    assert all(a < 17 <= b for a, b in history.health_delay)
    assert fit(history.upgrade).family == "fixed"
    # fixed upgrade times keep every instance in step with the polls, so all
    # health intervals are alike: 17 s is identified only up to their common part
    health = fit(history.health_delay)
    assert health.family == "fixed"
    low = max(a for a, _ in history.health_delay)
    high = min(b for _, b in history.health_delay)
    assert low < health.chosen.mean() <= high
    assert max(b - a for a, b in history.upgrade) <= 30 + 1e-9
    # each health interval spans two sightings' gaps: the schedule after the
    # upgrade's sighting (5 s, then 10, 20) keeps them under the 2 x 30 s bound
    assert max(b - a for a, b in history.health_delay) < 60


def test_rollouts_before_since_and_other_scale_sets_are_left_out(tmp_path: Path) -> None:
    journal = journal_of(tmp_path / "j.sqlite", Fixed(60), Fixed(10), rollouts=2, instances=10)
    other = SSID.replace("/web", "/db")
    simulated_history(
        journal,
        dataclasses.replace(default_scenario(), instances=7, engine=NO_HALT),
        "batch:size=7",
        rollouts=1,
        seed=1,
        scale_set_id=other,
        start=1.8e9,
    )
    assert len(observations(journal, SSID).upgrade) == 20
    assert len(observations(journal, other).upgrade) == 7
    assert observations(journal, SSID, since=1.8e9).upgrade == []
    assert parse_since("2027-01-15") == datetime(2027, 1, 15, tzinfo=UTC).timestamp()
    assert parse_since("2027-01-15T10:00+01:00") == datetime(2027, 1, 15, 9, tzinfo=UTC).timestamp()
    with pytest.raises(InputError, match="--since: expected a date"):
        parse_since("last tuesday")


def test_azure_figures_give_a_coarse_time_per_batch() -> None:
    # rollingUpgrades/latest: RollingUpgradeRunningStatus has no end time
    latest = {
        "properties": {
            "runningStatus": {
                "code": "Completed",
                "startTime": "2026-11-01T10:00:00Z",
                "lastAction": "Start",
                "lastActionTime": "2026-11-01T10:00:00Z",
            },
            "progress": {"successfulInstanceCount": 18, "failedInstanceCount": 2},
        }
    }
    # osUpgradeHistory: UpgradeOperationHistoryStatus has startTime and endTime
    history = [
        {
            "properties": {
                "runningStatus": {
                    "code": "Completed",
                    "startTime": "2026-10-01T10:00:00Z",
                    "endTime": "2026-10-01T10:40:00Z",
                },
                "progress": {"successfulInstanceCount": 19, "failedInstanceCount": 1},
            }
        }
    ]
    # 20 instances, 20% per batch: 5 batches of 4; 40 min -> 480 s per batch
    figures = azure_figures(latest, history, 20, 20)
    assert figures.seconds == pytest.approx(480)
    assert (figures.finished, figures.failed) == (40, 3)
    assert "took 2400s in 5 batches of up to 4" in figures.notes[0]
    assert "no end time: counted, not timed" in figures.notes[1]
    # less a 60 s pause between batches
    assert azure_figures(None, history, 20, 20, pause=60).seconds == pytest.approx(420)
    # latest is also the history's newest entry when they started together: counted once
    same = [
        {
            "properties": {
                **latest["properties"],
                "runningStatus": {
                    **latest["properties"]["runningStatus"],
                    "endTime": "2026-11-01T10:20:00Z",
                },
            }
        }
    ]
    once = azure_figures(latest, same, 20, 20)
    assert (once.finished, once.seconds) == (20, pytest.approx(240))
    assert azure_figures(None, [], 20, 20) == AzureFigures()


def test_azure_figures_stand_in_without_journal_history() -> None:
    from vmss_rollout.backends.calibrate import calibrated_scenario
    from vmss_rollout.engine.model import Instance

    figures = AzureFigures(seconds=300.04, finished=40, failed=3, notes=["# Azure: a note"])
    text, scenario = calibrated_scenario(
        History(),
        name="web",
        instances=[Instance(str(i), update_domain=i % 5, fault_domain=0) for i in range(20)],
        upgrade_policy="Rolling",
        scale_set_id=SSID,
        azure=figures,
    )
    assert scenario.upgrade == Fixed(300)
    assert scenario.upgrade_failure == pytest.approx(3 / 40)
    assert "no journaled history; Azure's own coarse figure" in text
    assert "# Azure: a note" in text
    assert "upgrade failure from Azure's records: 3 of 40 instances failed" in text


def test_the_calibrated_toml_loads_as_a_scenario(tmp_path: Path) -> None:
    from vmss_rollout.backends.calibrate import calibrated_scenario
    from vmss_rollout.engine.model import Instance

    journal = journal_of(
        tmp_path / "j.sqlite", LogNormal(240, 60), Fixed(30), failure=0.05, rollouts=2
    )
    fleet = [
        Instance(str(i), update_domain=i % 5, fault_domain=i % 3, zone=str(1 + i % 2))
        for i in range(12)
    ]
    text, scenario = calibrated_scenario(
        observations(journal, SSID),
        name="web",
        instances=fleet,
        upgrade_policy="Manual",
        scale_set_id=SSID,
    )
    assert load_scenario_text(text) == scenario
    assert (scenario.instances, scenario.update_domains, scenario.fault_domains) == (12, 5, 3)
    assert scenario.zones == ("1", "2")
    assert isinstance(scenario.upgrade, LogNormal)
    assert scenario.health_delay == Fixed(30)
    seen = len(observations(journal, SSID).upgrade)
    assert 70 < seen < 80  # 80 upgrades, a few failed
    assert f"# upgrade time: {seen} interval-censored observations" in text
    assert "AIC" in text and "log L" in text and "KS distance" in text
    assert "poll interval 5:30 (journaled)" in text
    empty = calibrated_scenario(
        History(), name="web", instances=fleet, upgrade_policy="Manual", scale_set_id=SSID
    )[0]
    assert "no history at all; the default lognormal(mean=4m, sd=1m)" in empty


# --------------------------------------------------------------------------- CLI, emulator

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import FAST, RG, SCENARIO, Emulated  # noqa: E402

from vmss_rollout.emulator.launch import emulator_process  # noqa: E402


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("calibrate")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=30))
    with emulator_process(scenario, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        yield Emulated(info, tmp, scenario)


def scale_set_id(emu: Emulated) -> str:
    return (
        f"/subscriptions/{emu.info['subscription']}/resourceGroups/{RG}/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/{emu.name}"
    )


def arm(emu: Emulated) -> list[str]:
    return ["--arm-endpoint", emu.info["endpoint"]]


def plan(emu: Emulated, *args: str) -> subprocess.CompletedProcess[str]:
    """`plan` of batch:size=10 to image 9.0.0 on the emulated scale set."""
    target = ["-s", "batch:size=10", "--image-version", "9.0.0"]
    return emu.cli("plan", "-g", RG, "-n", emu.name, *target, *args)


def calibrate(emu: Emulated, *args: str) -> subprocess.CompletedProcess[str]:
    return emu.cli("calibrate", "-g", RG, "-n", emu.name, *args, *arm(emu))


def test_calibrate_and_plan_calibrated_against_the_emulator(emu: Emulated, tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    journal_of(
        path, LogNormal(300, 60), Fixed(45), failure=0.04, rollouts=4, ssid=scale_set_id(emu)
    ).close()
    emu.admin("reset-counts", {})
    out = tmp_path / "calibrated.toml"
    run = calibrate(emu, "--journal", str(path), "--out-file", str(out))
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    scenario = load_scenario_text(text)
    # the live topology (the emulator's 30 instances in 5 update and 3 fault domains)
    assert (scenario.instances, scenario.update_domains, scenario.fault_domains) == (30, 5, 3)
    assert scenario.upgrade.mean() == pytest.approx(300, rel=0.10)
    assert scenario.health_delay == Fixed(45)
    assert "from 4 journaled rollout(s)" in text
    # stdout gives the same scenario; it loads and simulates
    printed = calibrate(emu, "--journal", str(path))
    assert printed.returncode == 0 and printed.stdout == text
    sim = emu.cli("simulate", str(out), "--runs", "5", "-s", "batch:size=10", "--json")
    assert sim.returncode == 0, sim.stderr
    simulated = json.loads(sim.stdout)
    assert simulated["runs"] == 5
    # the calibrated topology: 30 instances (the built-in scenario has 20)
    assert 20 < simulated["upgraded"]["max"] <= 30

    planned = plan(
        emu,
        "--calibrated",
        "--journal",
        str(path),
        "--runs",
        "20",
        "--json",
    )
    assert planned.returncode == 0, planned.stderr
    data = json.loads(planned.stdout)
    assert data["assumed"]["upgrade"] == str(scenario.upgrade)
    assert data["assumed"]["health_delay"] == "fixed(45s)"
    assert data["assumed"]["origin"] == "calibrated from 4 journaled rollout(s) of this scale set"
    default = json.loads(
        plan(
            emu,
            "--runs",
            "20",
            "--json",
        ).stdout
    )
    assert default["assumed"]["origin"] == "built-in default scenario"
    # slower calibrated upgrades (5 min against the default 4) predict a longer rollout
    assert data["simulation"]["duration_s"]["p50"] > default["simulation"]["duration_s"]["p50"]
    assert emu.writes() == 0  # calibrate and plan change nothing

    text_plan = plan(
        emu,
        "--calibrated",
        "--journal",
        str(path),
        "--runs",
        "5",
    )
    assert (
        "assumed (calibrated from 4 journaled rollout(s) of this scale set): upgrade lognormal("
        in " ".join(text_plan.stdout.split())
    )
    assert "calibrated from 4 journaled rollout(s)" in text_plan.stdout


def test_calibrate_bad_input_and_no_history(emu: Emulated, tmp_path: Path) -> None:
    path = str(tmp_path / "empty.sqlite")
    bad = calibrate(emu, "--journal", path, "--since", "soon")
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: --since: expected a date")
    assert "Traceback" not in bad.stderr
    both = plan(
        emu,
        "--calibrated",
        "--scenario",
        str(emu.scenario),
    )
    assert both.returncode == 2 and "--calibrated and --scenario" in both.stderr
    # no journal history, and Azure's osUpgradeHistory is empty (no platform
    # rolling upgrade ever ran): the defaults, said so
    empty = calibrate(emu, "--journal", path)
    assert empty.returncode == 0, empty.stderr
    assert "from 0 journaled rollout(s)" in empty.stdout
    assert "# upgrade time: no history at all; the default lognormal(mean=4m, sd=1m)" in (
        empty.stdout
    )
    assert "vmss.osupgradehistory" in emu.admin("requests")["by_operation"]
    assert load_scenario_text(empty.stdout).instances == 30


def test_calibrate_from_a_real_upgrade_through_the_emulator(emu: Emulated) -> None:
    """A journal written by `upgrade` through the real SDK: one rollout, 30
    instances, every upgrade and health seen, none failed."""
    result, _ = emu.upgrade("--strategy", "batch:size=10")
    assert result.returncode == 0, result.stderr
    run = calibrate(emu, "--journal", str(emu.journal), "--poll-interval", FAST[1])
    assert run.returncode == 0, run.stderr
    assert "# upgrade time: 30 interval-censored observations" in run.stdout
    assert "# upgrade failure: 0 of 30 finished upgrades failed" in run.stdout
    # the upgrade journaled its poll interval: that one, not the caller's, is used
    assert f"poll interval {FAST[1]} (journaled)" in run.stdout
    scenario = load_scenario_text(run.stdout)
    assert scenario.upgrade_failure == 0.0
    assert scenario.upgrade.mean() > 0


def test_without_history_azures_records_stand_in(tmp_path: Path) -> None:
    """A platform rolling upgrade (azure-rolling on a Rolling scale set), then
    calibrate with an empty journal: Azure's records (osUpgradeHistory, read
    through the real SDK, with startTime and endTime as the REST spec's
    UpgradeOperationHistoryStatus has them) give a fixed time per instance and
    the failure rate."""
    scenario = tmp_path / "rolling.toml"
    scenario.write_text(
        SCENARIO.format(instances=10).replace(
            "fault_domains = 3", 'fault_domains = 3\nupgrade_policy = "Rolling"'
        )
    )
    with emulator_process(
        scenario, tmp_path, "--time-scale", "600", "--retry-after", "0.05"
    ) as info:
        emu = Emulated(info, tmp_path, scenario)
        result, _ = emu.upgrade("--strategy", "azure-rolling")
        assert result.returncode == 0, result.stderr
        run = calibrate(emu, "--journal", str(tmp_path / "empty.sqlite"))
    assert run.returncode == 0, run.stderr
    assert re.search(
        r"# Azure: a rolling upgrade of 10 instances took \d+s in 5 batches", run.stdout
    )
    assert "upgrade failure from Azure's records: 0 of 10 instances failed" in run.stdout
    assert "# upgrade time: no journaled history; Azure's own coarse figure" in run.stdout
    # the fitted upgrade time is that figure: fixed, from the history's duration
    assert 'upgrade = "fixed(' in run.stdout
    assert load_scenario_text(run.stdout).upgrade_policy == "Rolling"
