"""Parameter sweeps: --vary parsing, the grid, the Pareto front, and the command."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from vmss_rollout.cli.app import _Group
from vmss_rollout.cli.sweep import sweep as sweep_command
from vmss_rollout.engine.errors import InputError
from vmss_rollout.sim.scenario import Scenario
from vmss_rollout.sim.sweep import (
    Axis,
    build_point,
    fronts,
    grid,
    pareto_front,
    parse_values,
    parse_vary,
    sweep,
    valid_keys,
)

SMALL = Scenario(instances=10)
END_TO_END = ["--vary", "batch:size=1..4", "--vary", "faults.upgrade_failure=0,0.1"]


@pytest.fixture(autouse=True)
def _no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMSS_ROLLOUT_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("COLUMNS", "200")


# --------------------------------------------------------------------------- parsing


def test_values_lists_and_ranges() -> None:
    assert parse_values("1..4", "k") == ("1", "2", "3", "4")
    assert parse_values("0, 0.01,0.05", "k") == ("0", "0.01", "0.05")
    assert parse_values("1..3,7,9..10", "k") == ("1", "2", "3", "7", "9", "10")
    assert parse_values("5..5", "k") == ("5",)
    # commas inside parentheses belong to the value
    assert parse_values("fixed(4m),uniform(2m, 6m)", "k") == ("fixed(4m)", "uniform(2m, 6m)")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("4..1", "empty range"),
        ("1,,2", "empty value"),
        ("", "empty value"),
        ("1..x", "range of whole numbers"),
        ("1,2,1", "value given twice: 1"),
        ("0..100000", "longer than"),
    ],
)
def test_bad_values(text: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle) as info:
        parse_values(text, "batch:size")
    assert str(info.value).startswith("--vary batch:size: ")


def test_keys() -> None:
    assert parse_vary("batch:size=1..3", "batch") == Axis(
        "batch:size", "strategy", "size", ("1", "2", "3")
    )
    assert parse_vary("faults.upgrade_failure=0,0.1", "batch") == Axis(
        "faults.upgrade_failure", "scenario", "upgrade_failure", ("0", "0.1")
    )
    assert parse_vary("engine.max-unhealthy=10,20", "window") == Axis(
        "engine.max_unhealthy", "engine", "max_unhealthy", ("10", "20")
    )
    assert parse_vary("window:max_unavailable=1,2", "window").key == "window:max-unavailable"
    keys = valid_keys("batch:size=3")
    assert {"batch:size", "batch:percent", "scale_set.instances", "timing.upgrade"} <= set(keys)
    assert {"demand.required", "engine.pause", "engine.canary"} <= set(keys)
    assert "runs" not in keys and "seed" not in keys


@pytest.mark.parametrize(
    ("text", "strategy", "needle"),
    [
        ("nope=1", "batch", "--vary nope: unknown key (valid: batch:size, batch:percent, "),
        ("scale_set.nope=1", "batch", "--vary scale_set.nope: unknown key"),
        ("engine.nope=1", "batch", "--vary engine.nope: unknown key"),
        ("runs=1,2", "batch", "--vary runs: unknown key"),
        ("batch:nope=1", "batch", "--vary batch:nope: batch has no parameter 'nope'"),
        ("window:max-unavailable=1", "batch", "not a parameter of the swept strategy batch"),
        ("batch:size", "batch", "expected KEY=VALUES"),
    ],
)
def test_bad_keys(text: str, strategy: str, needle: str) -> None:
    with pytest.raises(InputError) as info:
        parse_vary(text, strategy)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_grid_is_the_product_first_axis_slowest() -> None:
    axes = [parse_vary("batch:size=1..2", "batch"), parse_vary("timing.upgrade=1m,2m,3m", "batch")]
    points = grid(axes)
    assert len(points) == 6
    assert points[0] == {"batch:size": "1", "timing.upgrade": "1m"}
    assert points[2] == {"batch:size": "1", "timing.upgrade": "3m"}
    assert points[3] == {"batch:size": "2", "timing.upgrade": "1m"}
    with pytest.raises(InputError, match="given twice"):
        grid([axes[0], axes[0]])


def test_points_apply_every_kind_of_key() -> None:
    axes = [
        parse_vary("batch:size=3", "batch:percent=50"),
        parse_vary("scale_set.zones=none,1/2/3", "batch"),
        parse_vary("engine.pause=90s", "batch"),
        parse_vary("engine.only_update_domains=0/1", "batch"),
        parse_vary("demand.required=50%", "batch"),
    ]
    points = grid(axes)
    base = Scenario(instances=10, engine={"only_fault_domains": [0, 1, 2]})
    scenario, spec = build_point(base, "batch", axes, points[1])
    assert spec == "batch:size=3"
    assert scenario.zones == ("1", "2", "3")
    assert scenario.engine.pause == 90
    assert scenario.engine.scope.update_domains == frozenset({0, 1})
    assert scenario.engine.scope.fault_domains == frozenset({0, 1, 2})  # kept
    assert str(scenario.required) == "50%"
    regional, _ = build_point(base, "batch", axes, points[0])
    assert regional.zones == ()
    # a varied parameter replaces the spec's own
    _, spec = build_point(
        SMALL,
        "window:max-unavailable=5",
        [parse_vary("window:max-unavailable=2", "window")],
        {"window:max-unavailable": "2"},
    )
    assert spec == "window:max-unavailable=2"


@pytest.mark.parametrize(
    ("vary", "needle"),
    [
        ("faults.upgrade_failure=0,2", "faults.upgrade_failure: expected a probability"),
        ("scale_set.instances=0..2", "scale_set.instances: expected a whole number"),
        ("batch:size=0..2", "batch"),
        ("engine.max_unhealthy=10,200", "engine.max_unhealthy: percentage"),
    ],
)
def test_bad_values_fail_before_anything_runs(vary: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        sweep(SMALL, "batch", [vary], runs=2, workers=1)


# --------------------------------------------------------------------------- Pareto front


def test_pareto_front_on_a_hand_made_set() -> None:
    points = [
        (100.0, 8.0),  # 0: front (slowest but serves the most)
        (50.0, 6.0),  # 1: front
        (60.0, 6.0),  # 2: dominated by 1 (slower, same serving)
        (50.0, 5.0),  # 3: dominated by 1 (same time, less serving)
        (20.0, 2.0),  # 4: front (fastest)
        (30.0, 2.0),  # 5: dominated by 4
        (100.0, 8.0),  # 6: equal to 0: on the front too
        (120.0, 7.0),  # 7: dominated by 0
        (40.0, 4.0),  # 8: front
    ]
    assert pareto_front(points) == [True, True, False, False, True, False, True, False, True]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [True]


def _dominated(p: tuple[float, float], q: tuple[float, float]) -> bool:
    """p is dominated by q."""
    return q[0] <= p[0] and q[1] >= p[1] and (q[0] < p[0] or q[1] > p[1])


def test_pareto_front_matches_brute_force() -> None:
    import random

    rng = random.Random(5)
    for _ in range(200):
        points = [
            (float(rng.randint(0, 6)), float(rng.randint(0, 6))) for _ in range(rng.randint(1, 12))
        ]
        want = [not any(_dominated(p, q) for q in points) for p in points]
        assert pareto_front(points) == want


# --------------------------------------------------------------------------- end to end


def test_small_sweep_end_to_end() -> None:
    vary = ["batch:size=1..4", "faults.upgrade_failure=0,0.1"]
    points = sweep(SMALL, "batch", vary, runs=5, seed=3, workers=1)
    assert len(points) == 8
    assert [p["values"] for p in points[:3]] == [
        {"batch:size": 1, "faults.upgrade_failure": 0},
        {"batch:size": 1, "faults.upgrade_failure": 0.1},
        {"batch:size": 2, "faults.upgrade_failure": 0},
    ]
    assert points[2]["strategy"] == "batch:size=2"
    assert all(p["summary"]["runs"] == 5 and p["summary"]["seed"] == 3 for p in points)
    objectives = [
        (p["summary"]["duration_s"]["mean"], p["summary"]["min_serving"]["min"]) for p in points
    ]
    # faults.upgrade_failure is a condition: one front per value, among points that never halted
    assert all(
        p["condition"] == {"faults.upgrade_failure": p["values"]["faults.upgrade_failure"]}
        for p in points
    )
    for rate in (0, 0.1):
        members = [
            i for i, p in enumerate(points) if p["condition"]["faults.upgrade_failure"] == rate
        ]
        clean = [i for i in members if points[i]["summary"]["halted_runs"] == 0]
        front = [i for i in members if points[i]["pareto"]]
        assert set(front) <= set(clean)  # a point with halted runs is on no front
        assert bool(front) == bool(clean)
        rivals = [objectives[j] for j in clean]
        for i in front:  # no front point is dominated by a clean point of its condition
            assert not any(_dominated(objectives[i], q) for q in rivals)
        for i in set(clean) - set(front):  # every other clean point is
            assert any(_dominated(objectives[i], q) for q in rivals)
        for i in members:
            summary = points[i]["summary"]
            assert points[i]["halt_rate"] == summary["halted_runs"] / summary["runs"]
    # one-at-a-time keeps the most serving: batch:size=1 without faults is on the front
    assert points[0]["pareto"]
    # the same grid on a pool gives the same numbers
    assert sweep(SMALL, "batch", vary, runs=5, seed=3, workers=2) == points


def _cli(*args: str) -> Result:
    app = typer.Typer(cls=_Group)
    app.command()(sweep_command)

    @app.callback()
    def _root() -> None:
        """Keep `sweep` a subcommand."""

    return CliRunner().invoke(app, ["sweep", *args])


def test_cli_table() -> None:
    result = _cli("-s", "batch", *END_TO_END, "--runs", "5")
    assert result.exit_code == 0, result.output
    assert "sweep of batch: 8 points x 5 runs" in result.stdout
    assert "Pareto front" in result.stdout
    assert "lowest serving" in result.stdout


def _scenario_file(tmp_path: Path) -> str:
    path = tmp_path / "small.toml"
    path.write_text("[scale_set]\ninstances = 10\n")
    return str(path)


def test_cli_csv(tmp_path: Path) -> None:
    out = tmp_path / "sweep.csv"
    scenario = _scenario_file(tmp_path)
    result = _cli(scenario, *END_TO_END, "--runs", "5", "--csv", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote 8 rows" in result.stderr
    rows = list(csv.reader(out.open()))
    assert len(rows) == 9
    header = rows[0]
    assert header[:3] == ["batch:size", "faults.upgrade_failure", "strategy"]
    assert "duration_mean_s" in header and "min_serving_min" in header
    assert header[-1] == "pareto"
    assert {r[-1] for r in rows[1:]} <= {"true", "false"} and "true" in {r[-1] for r in rows[1:]}
    # --csv - writes the same rows to stdout instead of the table
    piped = _cli(scenario, *END_TO_END, "--runs", "5", "--csv", "-")
    assert piped.exit_code == 0
    assert list(csv.reader(io.StringIO(piped.stdout))) == rows


def test_cli_json(tmp_path: Path) -> None:
    result = _cli(_scenario_file(tmp_path), *END_TO_END, "--runs", "5", "--json", "--seed", "4")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["strategy"] == "batch"  # named by the --vary key
    assert data["runs"] == 5 and data["seed"] == 4
    assert data["keys"] == ["batch:size", "faults.upgrade_failure"]
    assert set(data["pareto_objectives"]) == {"minimise", "maximise", "among"}
    assert data["conditions"] == ["faults.upgrade_failure"]
    assert len(data["points"]) == 8
    for point in data["points"]:
        assert set(point) == {"values", "condition", "strategy", "summary", "halt_rate", "pareto"}
        assert set(point["values"]) == set(data["keys"])
        assert point["summary"]["runs"] == 5
    assert any(p["pareto"] for p in data["points"])
    # any worker count, same bytes
    again = _cli(
        _scenario_file(tmp_path), *END_TO_END, "--runs", "5", "--json", "--seed", "4", "-j", "2"
    )
    assert again.stdout == result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--vary", "nope=1,2"], "--vary nope: unknown key (valid: "),
        (["-s", "window", "--vary", "batch:size=1"], "not a parameter of the swept strategy"),
        (["--vary", "batch:size=3..1"], "empty range"),
        (["--vary", "batch:size=1", "--json", "--csv", "-"], "choose one"),
        (["--vary", "batch:size=1", "-o", "tsv", "--csv", "-"], "choose one"),
        (["--vary", "batch:size=1", "--workers", "0"], "--workers"),
        (["--vary", "batch:size=1", "--runs", "0"], "--runs"),
    ],
)
def test_cli_input_errors(args: list[str], needle: str) -> None:
    result = _cli(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert result.stdout == ""


def test_fronts_are_per_condition_among_points_that_never_halted() -> None:
    """Pure: a fast point that halted does not push a clean one off the front, and
    each condition (a scenario value) has a front of its own."""
    points = [
        {"batch:size": "1", "faults.upgrade_failure": "0"},
        {"batch:size": "8", "faults.upgrade_failure": "0"},
        {"batch:size": "1", "faults.upgrade_failure": "0.1"},
        {"batch:size": "8", "faults.upgrade_failure": "0.1"},
    ]

    def summary(duration: float, serving: int, halted: int) -> dict[str, Any]:
        return {
            "duration_s": {"mean": duration},
            "min_serving": {"min": serving},
            "halted_runs": halted,
            "runs": 10,
        }

    summaries = [
        summary(100, 9, 0),  # slow, keeps the most serving: front of condition 0
        summary(10, 9, 3),  # faster and as good, but halted: on no front
        summary(500, 5, 0),  # condition 0.1 competes only with its own points
        summary(50, 2, 0),
    ]
    assert fronts(points, summaries, ["faults.upgrade_failure"]) == [True, False, True, True]
    # one global front (no condition axes) would rank 0.1's points against 0's
    assert fronts(points, summaries, []) == [True, False, False, True]


def test_cli_lists_halting_points_apart_with_their_halt_rate(tmp_path: Path) -> None:
    args = ["--vary", "batch:size=1,4", "--vary", "faults.upgrade_failure=0,0.3", "--runs", "8"]
    result = _cli(_scenario_file(tmp_path), *args)
    assert result.exit_code == 0, result.output
    out = result.stdout
    clean, _, halting = out.partition("points with halted runs (on no front)")
    assert "points that never halted" in clean and halting
    assert "halt" in clean and "rate" in clean
    assert re.search(r"\b0\.3\b.*\d+/8 .*\d+%", halting)  # the faulty condition's rows
    assert "0.3" not in clean.split("\n", 3)[-1].split("*:")[0]  # no halting row up top
    assert "one front per condition (faults.upgrade_failure" in out
    assert "no front for faults.upgrade_failure=0.3" in out
    data = json.loads(_cli(_scenario_file(tmp_path), *args, "-o", "json").stdout)
    for point in data["points"]:
        halted = point["summary"]["halted_runs"]
        assert point["halt_rate"] == halted / 8
        assert not (point["pareto"] and halted)
    tsv = _cli(_scenario_file(tmp_path), *args, "--query", "points[?pareto].values", "-o", "tsv")
    lines = tsv.stdout.splitlines()
    assert "1\t0" in lines  # size 1 without faults: never halts, serves the most
    assert all(line.endswith("\t0") for line in lines)  # 0.3 has no front
