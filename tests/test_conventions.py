"""The planner commands' conventions (issue 12, items 4, 5 and 6): -o/--output
and --query as az has them, --runs/-r, --scenario FILE everywhere, one error
line with exit 2 for every usage error, a clean --help, shell completion; the
compare table's resolved parameters and identical rows; one validation path for
strategy specs, scenarios and flags."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from vmss_rollout.cli.app import app

SMALL = ["--instances", "10", "-r", "3"]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMSS_ROLLOUT_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("COLUMNS", "200")


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result: Result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output and "╭" not in result.output
    assert result.stdout == ""
    return lines[0]


# --------------------------------------------------------------------------- -o / --query


def test_output_json_is_the_json_alias() -> None:
    by_flag = run("simulate", *SMALL, "-o", "json")
    by_alias = run("simulate", *SMALL, "--json")
    assert by_flag.exit_code == 0, by_flag.output
    assert json.loads(by_flag.stdout) == json.loads(by_alias.stdout)


def test_query_filters_the_json_as_az_does() -> None:
    result = run("compare", *SMALL, "--query", "results[].strategy")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        "one-at-a-time", "update-domain", "batch", "window", "all-at-once",
    ]  # fmt: skip
    worst = run("compare", *SMALL, "--query", "results[?outage_s.mean > `0`].strategy", "-o", "tsv")
    assert worst.stdout == "all-at-once\n"


def test_tsv_has_no_header_and_csv_has_one() -> None:
    tsv = run("compare", *SMALL, "--query", "results[].[strategy, max_down]", "-o", "tsv")
    assert tsv.exit_code == 0, tsv.output
    rows = [line.split("\t") for line in tsv.stdout.splitlines()]
    assert rows[0] == ["one-at-a-time", "1"] and rows[-1] == ["all-at-once", "10"]
    table = run("simulate", *SMALL, "-o", "csv")
    assert table.exit_code == 0, table.output
    parsed = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [r["metric"] for r in parsed][:2] == ["duration_s", "min_serving"]
    assert set(parsed[0]) == {"metric", "mean", "p50", "p95", "min", "max"}


def test_strategies_takes_output_and_query() -> None:
    result = run("strategies", "-o", "tsv", "--query", "[].name")
    assert result.exit_code == 0, result.output
    assert "batch\n" in result.stdout and "window\n" in result.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["-o", "yaml"], ["--output: expected one of json, table, tsv, csv", "yaml"]),
        (["--query", "results[."], ["--query: invalid JMESPath expression"]),
        (["--json", "-o", "tsv"], ["--json and -o tsv disagree"]),
    ],
)
def test_bad_output_flags_fail_before_any_run(args: list[str], needles: list[str]) -> None:
    assert_one_line_error(run("compare", *SMALL, *args), *needles)


# --------------------------------------------------------------------------- flags


def test_runs_is_r_and_n_is_not_runs() -> None:
    data = json.loads(run("simulate", "--instances", "5", "-r", "2", "--json").stdout)
    assert data["runs"] == 2
    assert_one_line_error(run("simulate", "-n", "2"), "No such option: -n")


def test_scenario_is_an_option_everywhere(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("runs = 2\n[scale_set]\ninstances = 6\n", encoding="utf-8")
    for command in (["simulate"], ["compare", "-s", "batch"]):
        result = run(*command, "--scenario", str(path), "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        summary = data if "results" not in data else data["results"][0]
        assert summary["runs"] == 2
    sweep = run("sweep", "--scenario", str(path), "--vary", "batch:size=1,2", "--json")
    assert sweep.exit_code == 0, sweep.output
    assert json.loads(sweep.stdout)["runs"] == 2
    # emulate reads it the same way (a missing file: refused before any server starts)
    missing = tmp_path / "missing.toml"
    assert_one_line_error(run("emulate", "--scenario", str(missing)), "cannot read scenario")
    # the positional is an alias; two different files are an error
    other = tmp_path / "t.toml"
    other.write_text("runs = 3\n", encoding="utf-8")
    assert_one_line_error(
        run("simulate", str(other), "--scenario", str(path)), "two scenario files"
    )


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["simulate", "--seed", "abc"], ["--seed", "(see vmss-rollout simulate --help)"]),
        (["compare", "--bogus"], ["No such option: --bogus"]),
        (["verify"], ["Missing option '--strategy'"]),
        (["nope"], ["No such command 'nope'"]),
        (["--bogus"], ["No such option: --bogus"]),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], needles: list[str]) -> None:
    assert_one_line_error(run(*args), *needles)


def test_help_is_clean() -> None:
    commands = ["simulate", "compare", "sweep", "verify", "strategies", "plan", "status"]
    commands += ["upgrade", "resume", "history", "instances", "emulate"]
    for command in ([], *([c] for c in commands)):
        result = run(*command, "--help")
        assert result.exit_code == 0, result.output
        text = result.stdout
        assert not re.search(r"<(bool|int|float|str|path)>", text), command
    simulate = run("simulate", "--help").stdout
    assert "'vmss-rollout[plot]'" in simulate  # not eaten as rich markup
    assert "--output" in simulate and "--query" in simulate and "--scenario" in simulate
    root = run("--help").stdout
    assert "--install-completion" in root  # shell completion enabled
    # command summaries are whole sentences on one line (not cut at docstring breaks)
    row = next(line for line in root.splitlines() if " plan " in line)
    assert "predict duration, lowest serving capacity and outage risk" in row


# --------------------------------------------------------------------------- compare


def test_compare_rows_show_resolved_parameters_and_flag_identical_rows() -> None:
    result = run("compare", "-r", "5", "--json")
    rows = {r["strategy"]: r for r in json.loads(result.stdout)["results"]}
    assert rows["batch"]["resolved"] == "batch:size=4"  # 20% of 20
    assert rows["window"]["resolved"] == "window:max-unavailable=4"
    assert rows["update-domain"]["resolved"] == "update-domain (5 UDs, <=4 at once)"
    assert rows["batch"]["same_as"] == "update-domain"
    assert "same results as update-domain on all 5 seeds" in rows["batch"]["same_reason"]
    assert rows["window"]["same_as"] is None
    # outage and degraded are apart: degraded_not_out is degraded time less the outage
    aao = rows["all-at-once"]
    assert aao["outage_s"]["mean"] > 0
    assert aao["degraded_not_out_mean_s"] == pytest.approx(
        aao["degraded_s"]["mean"] - aao["outage_s"]["mean"]
    )
    table = run("compare", "-r", "5")
    assert "batch:size=4" in table.stdout
    assert "= batch: same results as update-domain" in table.stdout
    assert "scope: all 20 instances" in table.stdout
    assert "(outage not included)" in table.stdout


def test_compare_footer_names_the_scope() -> None:
    result = run("compare", "-r", "3", "--only-update-domains", "0,1", "--json")
    data = json.loads(result.stdout)
    assert data["scope"] == "8 of 20 instances (update domains 0,1)"
    rows = {r["strategy"]: r for r in data["results"]}
    assert rows["update-domain"]["resolved"] == "update-domain (2 UDs, <=4 at once)"
    table = run("compare", "-r", "3", "--only-update-domains", "0,1")
    assert "scope: 8 of 20 instances (update domains 0,1)" in table.stdout


def test_compare_at_80_columns_cuts_no_value_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten columns do not fit 80: one block per strategy instead, every
    column's value whole and next to its name, no line over 80, no ellipsis."""
    from vmss_rollout.cli.output import COMPARE_COLUMNS, compare_cells

    args = ["compare", "-r", "4", "-s", "update-domain", "-s", "window:max-unavailable=25%"]
    args += ["-s", "all-at-once", "-s", "batch"]
    data = json.loads(run(*args, "--json").stdout)["results"]
    wide = run(*args).stdout  # COLUMNS=200: the table
    assert "┃" in wide and "…" not in wide
    monkeypatch.setenv("COLUMNS", "80")
    text = run(*args).stdout
    assert "┃" not in text and "…" not in text
    blocks = text.split("\nscenario ")[0]
    assert all(len(line) <= 80 for line in blocks.splitlines()), blocks
    labels = [" ".join(c.split()) for c in COMPARE_COLUMNS[2:]]
    for row in data:
        cells = compare_cells(row)
        block = blocks.split(f"\n{row['strategy']}")[1].split("\n\n")[0]
        head, flat = block.splitlines()[0], " ".join(block.split())
        assert row["resolved"] == row["strategy"] or row["resolved"] in head
        for label, value in zip(labels, cells[2:], strict=True):
            if label.endswith("inst-min"):
                assert f"capacity loss {value} inst-min" in flat, flat
            else:
                assert f"{label} {value}" in flat, (label, value, flat)
    assert "= update-domain" in blocks.split("\nbatch")[1].splitlines()[0]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("batch:size=50", "batch:size: 50 is larger than the scope (20 instances)"),
        ("", "missing strategy name"),
        ("update-domain:order=x/y", "update-domain:order: x, y not among the update domains"),
        ("batch:size=99999999999999999999", "batch:size: expected a whole number up to"),
        ("window:max-unavailable=0", "window:max-unavailable"),
    ],
)
def test_simulate_refuses_what_upgrade_refuses(spec: str, needle: str) -> None:
    assert_one_line_error(run("simulate", "-s", spec, "-r", "1"), needle)
    assert_one_line_error(run("compare", "-s", spec, "-r", "1"), needle)


def test_a_valid_order_and_a_scope_sized_batch_run() -> None:
    result = run("simulate", "-s", "update-domain:order=4/0", "-r", "1", "--json")
    assert result.exit_code == 0, result.output
    fits = run("simulate", "-s", "batch:size=8", "--only-update-domains", "0,1", "-r", "1")
    assert fits.exit_code == 0, fits.output
    too_big = run("simulate", "-s", "batch:size=9", "--only-update-domains", "0,1", "-r", "1")
    assert_one_line_error(too_big, "larger than the scope (8 instances)")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--upgrade-time", "100000000000000000000h"], "--upgrade-time: duration must be at most"),
        (["--upgrade-time", "uniform(1m, 1000h)"], "--upgrade-time"),
        (["--bake", "1000h"], "--bake: duration must be at most 30 days"),
        (["--instances", "99999999999999999999"], "--instances"),
    ],
)
def test_numbers_and_durations_are_bounded(flags: list[str], needle: str) -> None:
    assert_one_line_error(run("simulate", *flags, "-r", "1"), needle)


def test_deep_or_huge_scenario_files_are_one_line_errors(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    assert_one_line_error(run("simulate", "--scenario", str(deep)), "nested more than 3 deep")
    nested = tmp_path / "nested.toml"
    nested.write_text('[engine]\nonly_instances = [[["1"]]]\n', encoding="utf-8")
    assert_one_line_error(run("simulate", "--scenario", str(nested)), "nested 5 deep")
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * 1_100_000 + "\n", encoding="utf-8")
    assert_one_line_error(run("compare", "--scenario", str(huge)), "scenario file too large")
