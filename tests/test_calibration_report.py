"""``calibrate --report FILE.html`` (issue 11, item 3's end): each fit drawn as
the empirical CDF band of the interval-censored observations against the
fitted CDFs, with the numbers; on a journal of known timings, then through the
CLI against the ARM emulator."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from vmss_rollout.backends.calibrate import fit, observations, simulated_history
from vmss_rollout.backends.journal import Journal
from vmss_rollout.cli.calibration_report import cdf_band, midpoint_cdf, write_calibration_report
from vmss_rollout.engine.options import EngineOptions
from vmss_rollout.sim.distributions import Fixed, LogNormal
from vmss_rollout.sim.scenario import default_scenario

NO_HALT = EngineOptions(max_unhealthy=100, max_unhealthy_upgraded=100)


def history_journal(path: Path, ssid: str, rollouts: int = 3) -> Journal:
    """Polled rollouts of 40 instances with lognormal(5m, 1m) upgrades and a
    fixed 45 s health delay, journaled as the driver would."""
    scenario = dataclasses.replace(
        default_scenario(),
        instances=40,
        upgrade=LogNormal(300, 60),
        health_delay=Fixed(45),
        upgrade_failure=0.03,
        engine=NO_HALT,
    )
    journal = Journal(path)
    simulated_history(
        journal, scenario, "batch:size=10", rollouts=rollouts, seed=5, scale_set_id=ssid
    )
    return journal


SSID = (
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web"
)


def test_the_band_is_every_empirical_cdf_the_intervals_allow() -> None:
    data = [(0.0, 10.0), (4.0, 6.0), (7.0, 8.0)]
    below, maybe = cdf_band(data, [3.0, 5.0, 6.0, 8.0, 10.0])
    # surely done by x: intervals ending by x; possibly: intervals starting before x
    assert below == [0, 0, 1 / 3, 2 / 3, 1]
    assert maybe == [1 / 3, 2 / 3, 2 / 3, 1, 1]
    mids = midpoint_cdf(data, [3.0, 5.0, 6.0, 8.0, 10.0])
    assert all(lo <= m <= hi for lo, m, hi in zip(below, mids, maybe, strict=True))


def test_the_report_has_one_figure_per_fit_and_its_numbers(tmp_path: Path) -> None:
    with history_journal(tmp_path / "j.sqlite", SSID) as journal:
        history = observations(journal, SSID)
    path = write_calibration_report(
        tmp_path / "cal.html", history=history, toml="# the toml\n", title="calibration of web"
    )
    page = path.read_text(encoding="utf-8")
    assert page.count("<figure>") == 2
    labels = re.findall(r'<svg role="img" aria-label="([^"]+)"', page)
    assert labels == ["upgrade time fit", "health delay fit"]
    for data, what in ((history.upgrade, "upgrade time"), (history.health_delay, "health delay")):
        result = fit(data)
        section = page.split(f'<h2 id="{what.replace(" ", "-")}">')[1].split("</section>")[0]
        assert f"{result.samples} interval-censored observations" in section
        assert f"<strong>{result.chosen}</strong>" in section
        assert f"<strong>{result.ks:.3f}</strong>" in section
        for c in result.candidates:  # every candidate's log L and AIC in its table
            assert f'<td class="num">{c.log_likelihood:.2f}</td>' in section
            assert f'<td class="num">{c.aic:.2f}</td>' in section
        # the figure's text (matplotlib writes each string as a comment by its glyphs)
        text = " ".join(re.findall(r"<!-- (.*?) -->", section))
        assert f"chosen: {result.chosen}" in text
        assert "empirical CDFs the intervals allow (band)" in text
    assert "lognormal" in page.split('id="upgrade-time"')[1].split("</section>")[0]
    assert f"{history.failed} of {history.finished} finished upgrades failed" in page
    assert "http" not in page.split("<body>")[1].replace("http-equiv", "")


def test_without_observations_the_report_says_so(tmp_path: Path) -> None:
    from vmss_rollout.backends.calibrate import History

    page = write_calibration_report(
        tmp_path / "none.html", history=History(), toml="", title="t"
    ).read_text(encoding="utf-8")
    assert "<figure>" not in page
    assert "No journaled observations of upgrade time or health delay" in page


# --------------------------------------------------------------------------- CLI, emulator

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import RG, SCENARIO, Emulated  # noqa: E402

from vmss_rollout.emulator.launch import emulator_process  # noqa: E402


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("calreport")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=12))
    with emulator_process(scenario, tmp, "--time-scale", "600") as info:
        yield Emulated(info, tmp, scenario)


def test_calibrate_report_through_the_cli(emu: Emulated, tmp_path: Path) -> None:
    ssid = (
        f"/subscriptions/{emu.info['subscription']}/resourceGroups/{RG}/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/{emu.name}"
    )
    history_journal(tmp_path / "h.sqlite", ssid).close()
    base = ["calibrate", "-g", RG, "-n", emu.name, "--journal", str(tmp_path / "h.sqlite")]
    base += ["--arm-endpoint", emu.info["endpoint"]]
    plain = emu.cli(*base)
    report = tmp_path / "cal.html"
    run = emu.cli(*base, "--report", str(report))
    assert run.returncode == 0, run.stderr
    assert run.stdout == plain.stdout  # the TOML is unchanged
    page = report.read_text(encoding="utf-8")
    assert page.count("<figure>") == 2 and f"calibration of scale set {emu.name}" in page
    assert "upgrade time: " in run.stdout and "lognormal" in page
    before = emu.admin("requests")["by_operation"]
    bad = emu.cli(*base, "--report", str(tmp_path / "cal.txt"))
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == f"error: --report: expected FILE.html or FILE.htm, got '{tmp_path}/cal.txt'"
    )
    assert emu.admin("requests")["by_operation"] == before  # refused before any call
