"""``vmss-rollout sweep``: a grid over strategy parameters, scenario values and
engine options, with the Pareto front of duration against lowest serving
capacity marked. Also the progress bar every Monte Carlo command shows."""

from __future__ import annotations

import contextlib
import csv
import io
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..engine.errors import InputError
from ..sim import parallel
from ..sim.scenario import load_scenario
from ..sim.sweep import OBJECTIVES
from ..sim.sweep import sweep as run_sweep
from . import output, plotting
from .options import (
    DaskAddress,
    Debug,
    Json,
    Runs,
    ScenarioFile,
    ScenarioPath,
    Seed,
    Workers,
    apply_scenario_overrides,
    scenario_file,
)

DEFAULT_STRATEGY = "one-at-a-time"


@contextlib.contextmanager
def study_progress(description: str) -> Iterator[parallel.Progress | None]:
    """A progress bar of Monte Carlo runs on stderr, only when stderr is a terminal;
    yields the ``progress(done, total)`` callback for :mod:`vmss_rollout.sim.parallel`
    (None when there is no terminal to draw on)."""
    err = output.stderr_console()
    if not err.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


# --------------------------------------------------------------------------- sweep

Vary = Annotated[
    list[str],
    typer.Option(
        "--vary",
        "-v",
        metavar="KEY=VALUES",
        help="A grid axis; repeat for more (the grid is their product). KEY: a parameter of "
        "the swept strategy (batch:size), a scenario key (scale_set.instances, "
        "timing.upgrade, faults.upgrade_failure, demand.required, ...) or engine.OPTION "
        "(engine.max_unhealthy, engine.pause, ...). VALUES: a comma list; A..B is the whole "
        "numbers A to B; list values separate items with / (scale_set.zones=none,1/2/3).",
        show_default=False,
    ),
]


def sweep(
    vary: Vary,
    scenario_arg: ScenarioPath = None,
    scenario_path: ScenarioFile = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            "-s",
            metavar="SPEC",
            help="The strategy to sweep, as NAME[:key=value,...]; --vary NAME:param "
            "overrides its parameters. Default: the scenario's `strategy`, else the "
            "strategy the --vary keys name, else one-at-a-time.",
            show_default=False,
        ),
    ] = None,
    runs: Runs = None,
    seed: Seed = None,
    workers: Workers = None,
    dask: DaskAddress = None,
    output_: output.OutputFormat = None,
    query: output.Query = None,
    json: Json = False,
    csv_path: Annotated[
        str | None,
        typer.Option(
            "--csv",
            metavar="FILE|-",
            help="Also write one CSV row per grid point to FILE (- for stdout, instead of "
            "the table).",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE.png|FILE.svg",
            help="Also draw the Pareto-front points: instances serving over time (median and "
            "p5-p95 band) against demand, and the first front point's waves. Needs pip install "
            "'vmss-rollout[plot]'.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="FILE.html",
            help="Also write a self-contained HTML page of the Pareto-front points.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    debug: Debug = False,
) -> None:
    """Run a grid of strategy parameters and scenario values; mark the Pareto front.

    Every grid point is a Monte Carlo study on the same seeds. Strategy parameters
    and engine options are choices; scenario keys (the scale set, timings, faults,
    demand) are conditions, and each condition gets its own front. The front
    (marked *) holds the points with no halted run that no other such point of
    the same condition beats on both mean duration (shorter is better) and lowest
    serving capacity (the fewest instances serving at any moment of any run; more
    is better). Points with halted runs are listed apart with their halt rate.
    Example:

    vmss-rollout sweep -s batch --vary batch:size=1..10 --vary faults.upgrade_failure=0,0.01,0.05
    """
    fmt = output.check_output(output_, json, query)
    if fmt != "table" and csv_path == "-":
        raise InputError(f"-o {fmt} and --csv - both write to stdout: choose one")
    scenario = apply_scenario_overrides(
        load_scenario(scenario_file(scenario_path, scenario_arg)), {"runs": runs, "seed": seed}
    )
    spec = (strategy or scenario.strategy or _named_strategy(vary) or DEFAULT_STRATEGY).strip()
    plotting.check_chart_paths(plot, report)
    charts = plot is not None or report is not None
    with study_progress(f"sweeping {spec}") as progress:
        points = run_sweep(
            scenario,
            spec,
            vary,
            runs=scenario.runs,
            seed=scenario.seed,
            workers=workers,
            dask=dask,
            progress=progress,
            record=charts,
        )
    keys = list(points[0]["values"]) if points else []
    if charts:
        front = [p for p in points if p["pareto"]]
        shown = front or points[:MAX_CHARTED]  # every point halted: chart some anyway
        # a label names the axes that vary (an axis of one value says nothing)
        varying = [k for k in keys if len({str(q["values"][k]) for q in points}) > 1] or keys
        label = {id(p): ", ".join(f"{k}={p['values'][k]}" for k in varying) for p in shown}
        what = (
            f"the {len(front)} Pareto-front points of {len(points)}"
            if front
            else f"{len(shown)} of {len(points)} points (none ran without halting)"
        )
        written = plotting.write_charts(
            shown[0]["scenario"],
            {label[id(p)]: p["results"] for p in shown},
            [{**p["summary"], "strategy": label[id(p)], "resolved": p["strategy"]} for p in shown],
            plot_path=plot,
            report_path=report,
            title=f"sweep of {spec}: {what}",
            grid=sweep_grid(points, keys),
        )
        for path in written:
            output.stderr_console().print(f"wrote {path}", soft_wrap=True, markup=False)
        for p in points:
            del p["scenario"], p["results"]
    if csv_path is not None:
        text = sweep_csv(points, keys)
        if csv_path == "-":
            sys.stdout.write(text)
            return
        try:
            with open(csv_path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        except OSError as exc:
            raise InputError(f"--csv: cannot write {csv_path} ({exc.strerror or exc})") from None
        output.stderr_console().print(
            f"wrote {len(points)} rows to {csv_path}", soft_wrap=True, markup=False
        )
    conditions = list(points[0]["condition"]) if points else []
    data = {
        "strategy": spec,
        "runs": scenario.runs,
        "seed": scenario.seed,
        "keys": keys,
        "conditions": conditions,
        "pareto_objectives": OBJECTIVES,
        "points": points,
    }

    def table() -> None:
        console = output.stdout_console()
        clean = [p for p in points if p["summary"]["halted_runs"] == 0]
        halting = [p for p in points if p["summary"]["halted_runs"] > 0]
        title = (
            f"sweep of {spec}: {len(points)} points x {scenario.runs} runs, seed {scenario.seed}"
        )
        if clean:
            console.print(sweep_table(clean, keys, f"{title}: points that never halted"))
        if halting:
            console.print(
                sweep_table(halting, keys, "points with halted runs (on no front)", front=False)
            )
        for line in sweep_notes(points, conditions):
            console.print(line, soft_wrap=True, markup=False)

    if fmt == "csv" and query is None:  # the grid's own columns, as --csv writes them
        sys.stdout.write(sweep_csv(points, keys))
        return
    output.emit(data, output=output_, query=query, json_alias=json, table=table, rows=points)


#: how many points the charts show when no point ran without halting
MAX_CHARTED = 5


def sweep_notes(points: Sequence[Mapping[str, Any]], conditions: Sequence[str]) -> list[str]:
    """The lines under the sweep tables: what the front is, per condition."""
    front = sum(bool(p["pareto"]) for p in points)
    halting = sum(p["summary"]["halted_runs"] > 0 for p in points)
    per = (
        f"one front per condition ({', '.join(conditions)}: scenario values are not choices)"
        if conditions
        else "one front"
    )
    lines = [
        f"*: the Pareto front, {per}: {front} of {len(points)} points. Only points with no "
        "halted run compete (a halted run ends early, which shortens the mean); among them, "
        "no other point of the same condition has both a shorter or equal mean duration and "
        "a higher or equal lowest serving (the fewest instances serving at any moment of any "
        "run), one of them strictly."
    ]
    if halting:
        lines.append(f"{halting} points had halted runs: listed apart, with their halt rate.")
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for p in points:
        groups.setdefault(tuple(p["condition"].values()), []).append(p)
    for values, members in groups.items():
        if not any(p["pareto"] for p in members):
            where = ", ".join(f"{k}={v}" for k, v in zip(conditions, values, strict=True))
            lines.append(f"no front for {where or 'the scenario'}: every point had halted runs.")
    return lines


def _named_strategy(vary: Sequence[str]) -> str | None:
    """The strategy a ``NAME:param=...`` axis names, if any."""
    for item in vary:
        key = item.partition("=")[0]
        if ":" in key:
            return key.partition(":")[0].strip() or None
    return None


CSV_STATS = (
    ("duration_mean_s", "duration_s", "mean"),
    ("duration_p95_s", "duration_s", "p95"),
    ("min_serving_min", "min_serving", "min"),
    ("min_serving_mean", "min_serving", "mean"),
    ("outage_mean_s", "outage_s", "mean"),
    ("degraded_mean_s", "degraded_s", "mean"),
    ("capacity_loss_mean_instance_s", "capacity_loss_instance_s", "mean"),
    ("failed_mean", "failed", "mean"),
)


def sweep_csv(points: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    """Header plus one row per point: the grid values, the spec, the metrics, pareto."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            *keys,
            "strategy",
            "runs",
            *(c[0] for c in CSV_STATS),
            "halted_runs",
            "halt_rate",
            "pareto",
        ]
    )
    for p in points:
        s = p["summary"]
        writer.writerow(
            [
                *(p["values"][k] for k in keys),
                p["strategy"],
                s["runs"],
                *(repr(float(s[metric][stat])) for _, metric, stat in CSV_STATS),
                s["halted_runs"],
                repr(float(p["halt_rate"])),
                "true" if p["pareto"] else "false",
            ]
        )
    return buffer.getvalue()


def sweep_grid(points: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per point for the HTML report: the grid values, the metrics the
    table shows, the halt rate and the front marker."""
    return [
        {
            **{k: p["values"][k] for k in keys},
            "duration mean": output.fmt_duration(p["summary"]["duration_s"]["mean"]),
            "lowest serving": output.fmt_number(p["summary"]["min_serving"]["min"]),
            "outage mean": output.fmt_duration(p["summary"]["outage_s"]["mean"]),
            "halt rate": f"{p['halt_rate']:.0%}",
            "front": "*" if p["pareto"] else "",
        }
        for p in points
    ]


def sweep_table(
    points: Sequence[Mapping[str, Any]], keys: Sequence[str], title: str, *, front: bool = True
) -> Table:
    table = Table(title=title, title_justify="left")
    for key in keys:
        table.add_column(key, justify="right", overflow="fold")  # long keys wrap, not cut
    for col in (
        "duration\nmean",
        "duration\np95",
        "lowest\nserving",
        "outage\nmean",
        "degraded\nmean",
        "halted\nruns",
        "halt\nrate",
        *(("front",) if front else ()),
    ):
        table.add_column(col, justify="right")
    for p in points:
        s = p["summary"]
        outage = s["outage_s"]["mean"]
        style = "bold green" if p["pareto"] else ""
        table.add_row(
            *(str(p["values"][k]) for k in keys),
            Text(output.fmt_duration(s["duration_s"]["mean"]), style=style),
            output.fmt_duration(s["duration_s"]["p95"]),
            Text(output.fmt_number(s["min_serving"]["min"]), style=style),
            Text(output.fmt_duration(outage), style="bold red" if outage > 0 else ""),
            output.fmt_duration(s["degraded_s"]["mean"]),
            f"{s['halted_runs']}/{s['runs']}",
            f"{p['halt_rate']:.0%}",
            *((Text("*", style="bold green") if p["pareto"] else "",) if front else ()),
        )
    return table
