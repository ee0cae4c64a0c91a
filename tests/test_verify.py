"""`vmss-rollout verify` on fleets where the SLO is achievable (issue 12, item 1):
the smallest fleet follows from the SLO, a property the strategy's own guarantee
breaks is reported as infeasible by construction (no counterexample), and a real
violation (a plugin that breaks its declared guarantee) still prints a scenario
that reproduces it."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

pytest.importorskip("hypothesis")

from vmss_rollout.cli.app import app
from vmss_rollout.engine.options import Amount
from vmss_rollout.sim.scenario import load_scenario_text
from vmss_rollout.sim.verify import default_min_instances, verify
from vmss_rollout.strategies import registry


@pytest.fixture(autouse=True)
def _columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMSS_ROLLOUT_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("COLUMNS", "200")


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_default_fleet_size_follows_the_slo() -> None:
    eighty = Amount(80, percent=True)
    assert default_min_instances(eighty, None) == 5  # 4 of 5 serve while one upgrades
    assert default_min_instances(None, 0.0) == 2  # an outage bound needs a second instance
    assert default_min_instances(None, None) == 1
    assert default_min_instances(Amount(100, percent=True), None) is None
    assert default_min_instances(Amount(100, percent=True), None, least_down=0) == 1  # surge


def test_the_issue_example_passes_on_feasible_fleets() -> None:
    """window:max-unavailable=20% keeps 80% serving on every fleet of 5 or more
    (the report that it "failed" came from 1-instance fleets)."""
    result = run(
        "verify", "--strategy", "window:max-unavailable=20%", "--min-serving", "80%",
        "--examples", "40",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "OK: 40 examples"
    assert "of 5-500 instances passed" in result.stderr
    assert "fault-free examples" in result.stderr


def test_smaller_fleets_on_request_are_skipped_with_the_reason() -> None:
    report = verify(
        "window:max-unavailable=20%", min_serving=Amount(80, percent=True), examples=40,
        min_instances=1,
    )  # fmt: skip
    assert report.ok, report.message
    assert report.skipped > 0
    assert "must serve while at least 1 is down" in report.message


def test_a_guarantee_that_breaks_the_slo_is_infeasible_not_a_counterexample() -> None:
    result = run("verify", "--strategy", "batch:size=5", "--min-serving", "80%", "--examples", "30")
    assert result.exit_code == 1
    assert result.stdout == ""  # no scenario to reproduce
    line = " ".join(result.stderr.split())
    assert "infeasible by construction on 5 instances" in line
    assert "may take 5 down at once" in line and "4 must serve" in line


def test_an_slo_no_in_place_rollout_can_keep_is_said_up_front() -> None:
    result = run("verify", "--strategy", "one-at-a-time", "--min-serving", "100%")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no scale set of 1-500 instances can keep it" in " ".join(result.stderr.split())
    surge = run("verify", "--strategy", "surge", "--min-serving", "100%", "--examples", "20")
    assert surge.exit_code == 0, surge.output


def test_min_instances_and_examples_out_of_range_are_input_errors() -> None:
    result = run("verify", "--strategy", "batch", "--min-instances", "0")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: min_instances")
    endless = run("verify", "--strategy", "batch", "--examples", "99999999999999999999")
    assert endless.exit_code == 2  # refused at once, not a search that never ends
    assert endless.stderr.startswith("error: --examples: expected a whole number from 1 to")


@pytest.fixture
def liar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A third-party strategy (a real entry point on sys.path) that declares one
    instance down at a time but upgrades two."""
    (tmp_path / "liar_plugin.py").write_text(
        textwrap.dedent("""
        from dataclasses import dataclass
        from vmss_rollout.strategies import StrategyBase

        @dataclass(frozen=True)
        class Liar(StrategyBase):
            name = "liar"
            summary = "Claims one at a time, upgrades two."

            def next_wave(self, view):
                return [] if view.in_flight else list(view.pending)[:2]

            def max_down(self, scope, fleet_size):
                return min(1, len(scope))

            def guarantee(self):
                return "at most 1 down"
    """)
    )
    info = tmp_path / "liar_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: liar-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[vmss_rollout.strategies]\nliar = liar_plugin:Liar\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(registry.DISABLE_ENV, raising=False)
    registry._entry_points.cache_clear()
    yield
    registry._entry_points.cache_clear()
    sys.modules.pop("liar_plugin", None)


def test_a_real_violation_prints_a_reproducing_scenario(liar: None, tmp_path: Path) -> None:
    result = run("verify", "--strategy", "liar", "--examples", "30", "--seed", "1")
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("# vmss-rollout verify counterexample: liar: 2 in-scope")
    scenario = load_scenario_text(result.stdout, "counterexample")
    assert scenario.strategy == "liar" and scenario.instances == 2  # shrunk
    path = tmp_path / "cex.toml"
    path.write_text(result.stdout, encoding="utf-8")
    again = run("simulate", "--scenario", str(path), "--json")
    assert again.exit_code == 0, again.output
    assert '"max_down": 2' in again.stdout
