"""The command line: every command's exit code and key output, and error handling."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from vmss_rollout import __version__
from vmss_rollout.cli.app import app
from vmss_rollout.sim.runner import METRICS

BUILTINS = {
    "one-at-a-time",
    "update-domain",
    "fault-domain",
    "zone",
    "batch",
    "window",
    "surge",
    "azure-rolling",
    "all-at-once",
}
COMPARE_DEFAULTS = ["one-at-a-time", "update-domain", "batch", "window", "all-at-once"]
SMALL = ["--instances", "10", "--runs", "3"]
STAT_KEYS = {"mean", "p50", "p95", "min", "max"}


@pytest.fixture(autouse=True)
def _no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMSS_ROLLOUT_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: no wrapping in assertions


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def run_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_input_error(result: Result, *needles: str) -> None:
    """Exit 2, one line `error: ...` on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


# --------------------------------------------------------------------------- app


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"vmss-rollout {__version__}"


def test_help_lists_commands_and_exit_codes() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("strategies", "simulate", "compare", "verify"):
        assert command in result.stdout
    assert "Exit codes" in result.stdout
    assert "130" in result.stdout


def test_every_command_has_help() -> None:
    for command in ("strategies", "simulate", "compare", "verify"):
        result = run(command, "--help")
        assert result.exit_code == 0, command
        assert "--debug" in result.stdout


def test_unknown_flag_is_a_usage_error() -> None:
    result = run("simulate", "--no-such-flag")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- strategies


def test_strategies_lists_builtins() -> None:
    result = run("strategies")
    assert result.exit_code == 0, result.output
    for name in BUILTINS:
        assert name in result.stdout
    assert "guarantee" in result.stdout
    assert "max-unavailable" in result.stdout  # a parameter of window


def test_strategies_json() -> None:
    data = run_json("strategies")
    assert {s["name"] for s in data} == BUILTINS
    window = next(s for s in data if s["name"] == "window")
    assert window["guarantee"]
    assert window["summary"]
    params = {p["name"]: p for p in window["parameters"]}
    assert set(params["max-unavailable"]) == {"name", "default", "help"}
    assert params["max-unavailable"]["default"] == "20%"


# --------------------------------------------------------------------------- simulate


def test_simulate_json_contract() -> None:
    data = run_json("simulate", "--strategy", "batch:size=2", *SMALL, "--seed", "5")
    assert data["strategy"] == "batch:size=2"
    assert data["runs"] == 3
    assert data["seed"] == 5
    assert data["halted_runs"] == 0
    for metric in METRICS:
        assert set(data[metric]) == STAT_KEYS, metric
    assert data["upgraded"]["min"] == 10
    assert data["min_serving"]["min"] == 8  # batches of 2 out of 10


def test_simulate_same_seed_same_json() -> None:
    args = ("simulate", "--strategy", "window", *SMALL, "--seed", "42")
    first = run(*args, "--json")
    second = run(*args, "--json")
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout
    other = run("simulate", "--strategy", "window", *SMALL, "--seed", "43", "--json")
    assert json.loads(other.stdout)["duration_s"] != json.loads(first.stdout)["duration_s"]


def test_simulate_defaults_to_one_at_a_time() -> None:
    data = run_json("simulate", *SMALL)
    assert data["strategy"] == "one-at-a-time"
    assert data["seed"] == 1  # the built-in scenario's seed
    assert data["min_serving"]["min"] == 9


def test_simulate_table() -> None:
    result = run("simulate", "--strategy", "all-at-once", *SMALL)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for word in ("duration", "min serving", "outage", "degraded", "capacity loss"):
        assert word in out
    for col in ("mean", "p50", "p95", "min", "max"):
        assert col in out
    assert "guarantee: none" in out
    assert "halted runs: 0 of 3" in out


def test_simulate_halted_runs_and_reasons() -> None:
    result = run("simulate", *SMALL, "--bad-image", "--health-timeout", "1m")
    assert result.exit_code == 0, result.output
    assert "halted runs: 3 of 3" in result.stdout
    data = run_json("simulate", *SMALL, "--bad-image", "--health-timeout", "1m")
    assert data["halted_runs"] == 3
    assert data["halt_reasons"]


def test_simulate_timeline_csv(tmp_path: Path) -> None:
    path = tmp_path / "timeline.csv"
    result = run("simulate", "--strategy", "batch:size=3", *SMALL, "--timeline", str(path))
    assert result.exit_code == 0, result.output
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["time_s", "serving", "upgrading", "unhealthy", "on_new_model"]
    body = [[float(c) for c in row] for row in rows[1:]]
    assert len(body) > 2
    times = [row[0] for row in body]
    assert times == sorted(times)
    assert body[0][1] == 10  # everything serving at the start
    assert body[-1][4] == 10  # every instance on the new model at the end
    assert max(row[2] for row in body) <= 3  # never more than a batch upgrading


def test_simulate_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "web.toml"
    path.write_text(
        'name = "web"\nseed = 9\nruns = 2\nstrategy = "batch:size=4"\n'
        "[scale_set]\ninstances = 12\n[demand]\nrequired = 6\n",
        encoding="utf-8",
    )
    data = run_json("simulate", str(path))
    assert data["strategy"] == "batch:size=4"
    assert data["runs"] == 2
    assert data["seed"] == 9
    assert data["upgraded"]["max"] == 12
    # flags override the file
    data = run_json("simulate", str(path), "--strategy", "one-at-a-time", "--runs", "1")
    assert data["strategy"] == "one-at-a-time"
    assert data["runs"] == 1
    table = run("simulate", str(path))
    assert table.exit_code == 0, table.output
    assert "scenario web: 12 instances" in table.stdout


def test_simulate_scenario_overrides() -> None:
    data = run_json(
        "simulate",
        "--strategy",
        "zone",
        "--instances",
        "9",
        "--runs",
        "2",
        "--zones",
        "1,2,3",
        "--update-domains",
        "1",
        "--fault-domains",
        "3",
        "--upgrade-time",
        "fixed(2m)",
        "--health-delay",
        "10s",
        "--demand",
        "50%",
    )
    # one update domain of one zone down at a time: with 1 UD, a whole zone (3 instances)
    assert data["min_serving"]["min"] == 6
    assert data["duration_s"]["min"] == data["duration_s"]["max"]  # fixed timings


def test_simulate_engine_options() -> None:
    data = run_json(
        "simulate",
        *SMALL,
        "--only-instances",
        "0,1,2,3",
        "--canary",
        "1",
        "--bake",
        "5m",
        "--checkpoints",
        "50",
        "--pause",
        "30s",
        "--max-unhealthy",
        "30%",
        "--max-unhealthy-upgraded",
        "40",
        "--on-failure",
        "rollback",
    )
    assert data["upgraded"]["max"] == 4
    plain = run_json("simulate", *SMALL, "--only-instances", "0,1,2,3")
    assert data["duration_s"]["min"] > plain["duration_s"]["min"]  # bake and pauses


# --------------------------------------------------------------------------- compare


def test_compare_default_strategies() -> None:
    result = run("compare", *SMALL)
    assert result.exit_code == 0, result.output
    for name in COMPARE_DEFAULTS:
        assert name in result.stdout
    for col in ("duration", "p95", "min", "most", "outage", "degraded", "capacity", "halted"):
        assert col in result.stdout


def test_compare_json() -> None:
    data = run_json("compare", *SMALL)
    assert set(data) == {"results", "scope"}
    assert data["scope"] == "all 10 instances"
    assert [r["strategy"] for r in data["results"]] == COMPARE_DEFAULTS
    for summary in data["results"]:
        assert summary["runs"] == 3
        for metric in METRICS:
            assert set(summary[metric]) == STAT_KEYS


def test_compare_outage_all_at_once_vs_one_at_a_time() -> None:
    data = run_json("compare", *SMALL, "-s", "all-at-once", "-s", "one-at-a-time")
    by_name = {r["strategy"]: r for r in data["results"]}
    assert list(by_name) == ["all-at-once", "one-at-a-time"]
    assert by_name["all-at-once"]["outage_s"]["mean"] > 0
    assert by_name["all-at-once"]["min_serving"]["min"] == 0
    assert by_name["one-at-a-time"]["outage_s"]["max"] == 0
    table = run("compare", *SMALL, "-s", "all-at-once", "-s", "one-at-a-time")
    assert table.exit_code == 0
    row = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if "-at-" in line}
    assert " 0s " in row["one-at-a-time"]
    assert " 0s " not in row["all-at-once"].split("│")[6]  # the mean outage column


def test_compare_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("runs = 2\n[scale_set]\ninstances = 6\n", encoding="utf-8")
    data = run_json("compare", str(path), "-s", "batch:size=3")
    assert [r["strategy"] for r in data["results"]] == ["batch:size=3"]
    assert data["results"][0]["runs"] == 2
    assert data["results"][0]["min_serving"]["min"] == 3


def test_compare_no_arguments_works() -> None:
    """`vmss-rollout compare` with nothing else is the README's main example."""
    result = run("compare")
    assert result.exit_code == 0, result.output
    assert "200 runs per strategy" in result.stdout
    for name in COMPARE_DEFAULTS:
        assert name in result.stdout


# --------------------------------------------------------------------------- bad input


def test_unknown_strategy() -> None:
    result = run("simulate", *SMALL, "--strategy", "nope")
    assert_input_error(result, "unknown strategy 'nope'", "installed:", "one-at-a-time", "batch")


def test_unknown_strategy_in_compare_fails_before_simulating() -> None:
    result = run("compare", *SMALL, "-s", "batch", "-s", "nope")
    assert_input_error(result, "nope")


def test_unknown_strategy_parameter() -> None:
    result = run("simulate", *SMALL, "--strategy", "batch:bogus=1")
    assert_input_error(result, "batch", "bogus", "size")


def test_invalid_strategy_parameter() -> None:
    result = run("simulate", *SMALL, "--strategy", "batch:size=0")
    assert_input_error(result, "batch:size", "0")


def test_engine_option_error_names_the_flag() -> None:
    result = run("simulate", *SMALL, "--max-unhealthy", "150")
    assert_input_error(result, "--max-unhealthy:", "150")
    result = run("compare", *SMALL, "--on-failure", "explode")
    assert_input_error(result, "--on-failure:", "explode")
    result = run("simulate", *SMALL, "--pause", "soon")
    assert_input_error(result, "--pause:", "soon")


def test_scenario_override_error_names_the_flag() -> None:
    result = run("simulate", "--instances", "0")
    assert_input_error(result, "--instances:", "0")
    result = run("simulate", "--failure-rate", "2")
    assert_input_error(result, "--failure-rate:")
    result = run("simulate", "--upgrade-time", "sometimes")
    assert_input_error(result, "--upgrade-time:", "sometimes")
    result = run("compare", "--runs", "0")
    assert_input_error(result, "--runs:")


def test_malformed_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("runs = 2\n[scale_set]\ninstance = 5\n", encoding="utf-8")
    assert_input_error(run("simulate", str(path)), "scale_set.instance", "unknown key")
    path.write_text("runs = [\n", encoding="utf-8")
    assert_input_error(run("compare", str(path)), "invalid TOML")


def test_missing_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    assert_input_error(run("simulate", str(path)), "missing.toml", "cannot read")


def test_unwritable_timeline(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir.csv"
    assert_input_error(run("simulate", *SMALL, "--timeline", str(path)), "--timeline")


def test_debug_shows_traceback() -> None:
    for args in (
        ["simulate", "--strategy", "nope", "--debug"],
        ["--debug", "simulate", "--strategy", "nope"],
    ):
        result = run(*args)
        assert result.exit_code == 2
        assert "Traceback" in result.stderr
        assert "StrategyLoadError" in result.stderr
        assert "error: unknown strategy 'nope'" in result.stderr


# --------------------------------------------------------------------------- verify


def test_verify_bad_strategy_is_input_error() -> None:
    result = run("verify", "--strategy", "nope")
    assert_input_error(result, "unknown strategy")


def test_verify_bad_property_is_input_error() -> None:
    result = run("verify", "--strategy", "batch", "--min-serving", "150%")
    assert_input_error(result, "--min-serving")
    result = run("verify", "--strategy", "batch", "--max-outage", "never")
    assert_input_error(result, "--max-outage")


def test_verify_without_hypothesis(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("vmss_rollout.sim.verify")
    for name in list(sys.modules):
        if name.split(".")[0] == "hypothesis" or name.startswith("vmss_rollout.sim.verify"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, "vmss_rollout.sim.testing", raising=False)
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # makes `import hypothesis` fail
    result = run("verify", "--strategy", "one-at-a-time", "--examples", "2")
    assert_input_error(result, "verify needs hypothesis", "pip install 'vmss-rollout[verify]'")


def test_verify_ok() -> None:
    pytest.importorskip("vmss_rollout.sim.verify")
    result = run("verify", "--strategy", "one-at-a-time", "--examples", "5", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "OK: 5 examples"


def test_verify_outage_bound_all_at_once_is_infeasible_by_construction() -> None:
    """all-at-once takes every instance down: an outage bound cannot hold on any
    fleet, which verify says instead of printing a counterexample (a reproducing
    scenario of a real violation: tests/test_verify.py)."""
    pytest.importorskip("vmss_rollout.sim.verify")
    result = run(
        "verify", "--strategy", "all-at-once", "--max-outage", "0", "--examples", "20",
        "--seed", "1",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert "infeasible by construction on 2 instances" in " ".join(result.stderr.split())


def test_backend_error_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    from vmss_rollout.engine.errors import BackendError
    from vmss_rollout.sim import parallel  # the commands import it when they run

    def broken(*args: object, **kwargs: object) -> None:
        raise BackendError("scale set vanished")

    monkeypatch.setattr(parallel, "run_study", broken)
    result = run("simulate", *SMALL)
    assert result.exit_code == 3
    assert result.stderr.strip() == "error: scale set vanished"
    assert "Traceback" not in result.output


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    from vmss_rollout.sim import parallel  # the commands import it when they run

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(parallel, "run_studies", interrupted)
    result = run("compare", *SMALL)
    assert result.exit_code == 130
    assert "Traceback" not in result.output


def test_policy_automatic_is_called_out(tmp_path: Path) -> None:
    path = tmp_path / "auto.toml"
    path.write_text('[scale_set]\ninstances = 5\nupgrade_policy = "Automatic"\n')
    result = run("simulate", str(path), "--runs", "2", "--json")
    assert result.exit_code == 0
    assert "upgrade_policy is Automatic" in result.stderr
    assert json.loads(result.stdout)["min_serving"]["max"] == 0


def test_a_scope_that_matches_nothing_is_an_input_error() -> None:
    assert_input_error(
        run("simulate", *SMALL, "--only-update-domains", "7"),
        "only_update_domains: 7 not in the scale set",
    )


def test_compare_and_sweep_draw_charts_without_changing_the_numbers(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png, html = tmp_path / "c.png", tmp_path / "c.html"
    plain = run("compare", *SMALL, "--json")
    charted = run("compare", *SMALL, "--json", "--plot", str(png), "--report", str(html))
    assert charted.exit_code == 0, charted.output
    assert charted.stdout == plain.stdout  # recording the runs changes no number
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "dataset.rendered" in html.read_text()
    svg = tmp_path / "s.svg"
    swept = run(
        "sweep",
        "-s",
        "batch",
        "--vary",
        "batch:size=1..3",
        "--runs",
        "3",
        "--seed",
        "1",
        "--plot",
        str(svg),
        "--json",
    )
    assert swept.exit_code == 0, swept.output
    points = json.loads(swept.stdout)["points"]
    assert len(points) == 3 and all("results" not in p for p in points)
    assert svg.read_text().lstrip().startswith("<?xml")


def test_a_bad_chart_suffix_is_an_input_error() -> None:
    assert_input_error(run("simulate", *SMALL, "--plot", "x.pdf"), "--plot")
