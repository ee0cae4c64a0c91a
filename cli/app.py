"""The ``vmss-rollout`` command line.

Commands stay thin: parse the flags, call the library, get plain data back,
render it (``output.py``). Errors are handled once, in :class:`_Group`.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ..engine.errors import BackendError, InputError
from ..engine.options import Amount, parse_duration
from ..sim.parallel import Study, run_studies, run_study
from ..sim.runner import RunResult, derive_seed, run_once, summarize
from ..sim.scenario import Scenario, load_scenario
from ..strategies import registry
from . import operate, output, plotting
from .calibrate import calibrate
from .emulate import emulate
from .options import (
    DEBUG_KEY,
    ENGINE_FLAGS,
    SCENARIO_PARAMS,
    BadImage,
    Bake,
    Canary,
    Checkpoints,
    DaskAddress,
    Debug,
    Demand,
    FailureRate,
    FaultDomains,
    HealthDelay,
    HealthTimeout,
    Instances,
    Json,
    MaxUnhealthy,
    MaxUnhealthyUpgraded,
    OnFailure,
    OnlyFaultDomains,
    OnlyInstances,
    OnlyUpdateDomains,
    OnlyZones,
    Pause,
    Runs,
    ScenarioPath,
    Seed,
    UnhealthyRate,
    UpdateDomains,
    UpgradeTime,
    Workers,
    Zones,
    apply_engine_flags,
    apply_scenario_overrides,
)
from .sweep import study_progress, sweep

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_INPUT = 2
EXIT_BACKEND = 3
EXIT_INTERRUPTED = 130

DEFAULT_STRATEGY = "one-at-a-time"
COMPARE_DEFAULTS = ("one-at-a-time", "update-domain", "batch", "window", "all-at-once")
VERIFY_EXTRA_MESSAGE = "verify needs hypothesis: pip install 'vmss-rollout[verify]'"

EPILOG = (
    "Exit codes: 0 success; 1 a rollout halted or left failed instances, or verify found a "
    "violation; 2 invalid input, nothing changed; 3 Azure error after retries (the journal "
    "says what changed); 130 interrupted."
)


class _Group(TyperGroup):
    """Turns the library's errors into one line on stderr and an exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # a click.Context subclass
        try:
            return super().invoke(ctx)
        except InputError as exc:
            _fail(ctx, exc, EXIT_INPUT)
        except BackendError as exc:
            _fail(ctx, exc, EXIT_BACKEND)
        except KeyboardInterrupt:
            output.stderr_console().print("interrupted", style="yellow")
            raise typer.Exit(EXIT_INTERRUPTED) from None


def _fail(ctx: typer.Context, exc: Exception, code: int) -> None:
    if ctx.meta.get(DEBUG_KEY):
        traceback.print_exception(exc, file=sys.stderr)
    output.print_error(output.stderr_console(), str(exc))
    raise typer.Exit(code) from None


app = typer.Typer(
    name="vmss-rollout",
    cls=_Group,
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)


def _version_callback(value: bool) -> None:
    if value:
        print(f"vmss-rollout {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            help="Show the version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = None,
    debug: Debug = False,
) -> None:
    """Simulate, compare and verify zero-downtime OS-image and VM-size rollout strategies
    for Azure Virtual Machine Scale Sets.

    Start with `vmss-rollout compare`: every common strategy on the built-in
    20-instance scale set, 200 Monte Carlo runs each.
    """


# --------------------------------------------------------------------------- helpers


def _scenario(path: str | None, flags: Mapping[str, Any]) -> Scenario:
    """The scenario file (or the built-in one) with a command's scenario-override
    and engine-option flags (its parameters, e.g. ``locals()``) applied."""
    scenario = load_scenario(path)
    overrides = {key: flags.get(param) for param, key in SCENARIO_PARAMS.items()}
    scenario = apply_scenario_overrides(scenario, overrides)
    scenario = apply_engine_flags(scenario, {name: flags.get(name) for name in ENGINE_FLAGS})
    note = POLICY_NOTES.get(scenario.upgrade_policy)
    if note:
        output.stderr_console().print(f"note: {note}", soft_wrap=True)
    return scenario


POLICY_NOTES = {
    "Automatic": "upgrade_policy is Automatic: the platform upgrades every instance as soon "
    "as the model changes, whatever the strategy; use Manual to let the strategy pace it.",
    "Rolling": "upgrade_policy is Rolling: simulated as if switched to Manual for the "
    "rollout; the azure-rolling strategy shows what the platform itself would do.",
}


def _scenario_info(scenario: Scenario) -> dict[str, Any]:
    return {
        "name": scenario.name,
        "instances": scenario.instances,
        "zones": list(scenario.zones),
        "update_domains": scenario.update_domains,
        "fault_domains": scenario.fault_domains,
        "upgrade": str(scenario.upgrade),
        "required": str(scenario.required),
        "required_count": scenario.required_serving(),
    }


@contextlib.contextmanager
def _progress(message: str) -> Iterator[None]:
    """A spinner on stderr, only when stderr is a terminal."""
    err = output.stderr_console()
    if not err.is_terminal:
        yield
        return
    with err.status(message):
        yield


# --------------------------------------------------------------------------- strategies


@app.command()
def strategies(json: Json = False, debug: Debug = False) -> None:
    """List the installed rollout strategies, their parameters and guarantees.

    A strategy is chosen with `--strategy NAME[:key=value,...]`, e.g.
    `--strategy batch:size=5` or `--strategy window:max-unavailable=10%`.
    Third-party strategies installed as plugins are listed too.
    """
    described = registry.describe()
    if json:
        output.print_json(described)
    else:
        output.stdout_console().print(output.strategies_table(described))


# --------------------------------------------------------------------------- charts

PlotPath = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        metavar="FILE.png|FILE.svg",
        help="Also draw the runs: instances serving over time per strategy (median and "
        "p5-p95 band) against demand, degraded and outage shaded, and a heat map of update "
        "domain x time showing the first run's waves. Needs pip install 'vmss-rollout[plot]'.",
        show_default=False,
        dir_okay=False,
    ),
]
ReportPath = Annotated[
    Path | None,
    typer.Option(
        "--report",
        metavar="FILE.html",
        help="Also write one self-contained HTML page (no network): the scenario, the "
        "table, the charts and the wave schedule. Needs pip install 'vmss-rollout[plot]'.",
        show_default=False,
        dir_okay=False,
    ),
]


def _write_charts(
    scenario: Scenario,
    studies: Mapping[str, Sequence[RunResult]],
    summaries: Sequence[Mapping[str, Any]],
    plot: Path | None,
    report: Path | None,
    title: str,
) -> None:
    """--plot and --report: write them and say so on stderr."""
    with _progress("drawing"):
        written = plotting.write_charts(
            scenario, studies, summaries, plot_path=plot, report_path=report, title=title
        )
    for path in written:
        output.stderr_console().print(f"wrote {path}", soft_wrap=True, markup=False)


# --------------------------------------------------------------------------- simulate


@app.command()
def simulate(
    scenario_path: ScenarioPath = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            "-s",
            metavar="SPEC",
            help="Strategy as NAME[:key=value,...] (see `vmss-rollout strategies`). "
            "Default: the scenario's `strategy`, else one-at-a-time.",
            show_default=False,
        ),
    ] = None,
    runs: Runs = None,
    seed: Seed = None,
    workers: Workers = None,
    dask: DaskAddress = None,
    json: Json = False,
    timeline: Annotated[
        Path | None,
        typer.Option(
            "--timeline",
            metavar="FILE.csv",
            help="Also write the timeline of one recorded run (the study's first seed) as CSV: "
            "time_s,serving,upgrading,unhealthy,on_new_model.",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    plot: PlotPath = None,
    report: ReportPath = None,
    instances: Instances = None,
    update_domains: UpdateDomains = None,
    fault_domains: FaultDomains = None,
    zones: Zones = None,
    upgrade_time: UpgradeTime = None,
    health_delay: HealthDelay = None,
    failure_rate: FailureRate = None,
    unhealthy_rate: UnhealthyRate = None,
    bad_image: BadImage = None,
    demand: Demand = None,
    only_instances: OnlyInstances = None,
    only_update_domains: OnlyUpdateDomains = None,
    only_fault_domains: OnlyFaultDomains = None,
    only_zones: OnlyZones = None,
    max_unhealthy: MaxUnhealthy = None,
    max_unhealthy_upgraded: MaxUnhealthyUpgraded = None,
    pause: Pause = None,
    health_timeout: HealthTimeout = None,
    canary: Canary = None,
    bake: Bake = None,
    checkpoints: Checkpoints = None,
    on_failure: OnFailure = None,
    debug: Debug = False,
) -> None:
    """Simulate one strategy many times on a scenario and summarise the outcome.

    Prints duration, minimum serving instances, outage (nothing serving),
    degraded time (below demand) and capacity loss as mean, p50, p95, min and
    max over the runs, plus halted runs and the strategy's guarantee.
    """
    scenario = _scenario(scenario_path, locals())
    spec = (strategy or scenario.strategy or DEFAULT_STRATEGY).strip()
    guarantee = registry.make(spec).guarantee()  # fail fast on a bad spec
    plotting.check_chart_paths(plot, report)  # fail fast: suffix, matplotlib
    charts = plot is not None or report is not None
    with study_progress(f"simulating {spec}") as progress:
        results = run_study(
            scenario, spec, record=charts, workers=workers, dask=dask, progress=progress
        )
    summary = summarize(spec, scenario.seed, results)
    if charts:
        title = f"{scenario.name}: {spec}, {scenario.runs} runs, seed {scenario.seed}"
        _write_charts(scenario, {spec: results}, [summary], plot, report, title)
    if timeline is not None:
        recorded = run_once(scenario, spec, derive_seed(scenario.seed, 0), record=True)
        rows = output.write_timeline(timeline, recorded.timeline)
        output.stderr_console().print(f"wrote {rows} timeline rows to {timeline}", soft_wrap=True)
    if json:
        output.print_json(summary)
    else:
        output.print_simulation(
            output.stdout_console(),
            summary,
            guarantee=guarantee,
            scenario=_scenario_info(scenario),
        )


# --------------------------------------------------------------------------- compare


@app.command()
def compare(
    scenario_path: ScenarioPath = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            "--strategy",
            "-s",
            metavar="SPEC",
            help="A strategy to compare, as NAME[:key=value,...]; repeat the flag for each. "
            f"Default: {', '.join(COMPARE_DEFAULTS)}.",
            show_default=False,
        ),
    ] = None,
    runs: Runs = None,
    seed: Seed = None,
    workers: Workers = None,
    dask: DaskAddress = None,
    json: Json = False,
    plot: PlotPath = None,
    report: ReportPath = None,
    instances: Instances = None,
    update_domains: UpdateDomains = None,
    fault_domains: FaultDomains = None,
    zones: Zones = None,
    upgrade_time: UpgradeTime = None,
    health_delay: HealthDelay = None,
    failure_rate: FailureRate = None,
    unhealthy_rate: UnhealthyRate = None,
    bad_image: BadImage = None,
    demand: Demand = None,
    only_instances: OnlyInstances = None,
    only_update_domains: OnlyUpdateDomains = None,
    only_fault_domains: OnlyFaultDomains = None,
    only_zones: OnlyZones = None,
    max_unhealthy: MaxUnhealthy = None,
    max_unhealthy_upgraded: MaxUnhealthyUpgraded = None,
    pause: Pause = None,
    health_timeout: HealthTimeout = None,
    canary: Canary = None,
    bake: Bake = None,
    checkpoints: Checkpoints = None,
    on_failure: OnFailure = None,
    debug: Debug = False,
) -> None:
    """Compare strategies on the same scenario and seeds, one row per strategy.

    With no arguments, compares one-at-a-time, update-domain, batch, window and
    all-at-once on the built-in scenario. Every strategy sees the same random
    draws (same seeds), so differences come from the strategy alone.
    """
    scenario = _scenario(scenario_path, locals())
    specs = [s.strip() for s in strategy] if strategy else list(COMPARE_DEFAULTS)
    for spec in specs:
        registry.make(spec)  # fail fast, before any simulation
    plotting.check_chart_paths(plot, report)
    charts = plot is not None or report is not None
    studies = [Study(scenario, spec, scenario.runs, scenario.seed, record=charts) for spec in specs]
    with study_progress(f"simulating {len(specs)} strategies") as progress:
        all_results = run_studies(studies, workers=workers, dask=dask, progress=progress)
    summaries = [
        summarize(spec, scenario.seed, results)
        for spec, results in zip(specs, all_results, strict=True)
    ]
    if charts:
        title = f"{scenario.name}: {scenario.runs} runs per strategy, seed {scenario.seed}"
        _write_charts(
            scenario, dict(zip(specs, all_results, strict=True)), summaries, plot, report, title
        )
    if json:
        output.print_json({"results": summaries})
        return
    info = _scenario_info(scenario)
    console = output.stdout_console()
    title = f"{scenario.runs} runs per strategy, seed {scenario.seed}"
    console.print(output.compare_table(summaries, title))
    console.print(output.scenario_line(info), soft_wrap=True)
    console.print(
        "durations: mean and p95 over runs; min serving: the fewest instances serving in "
        f"any run; degraded: time below {info['required_count']} serving.",
        soft_wrap=True,
    )


# --------------------------------------------------------------------------- verify


@app.command()
def verify(
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy",
            "-s",
            metavar="SPEC",
            help="Strategy to check, as NAME[:key=value,...].",
            show_default=False,
        ),
    ],
    min_serving: Annotated[
        str | None,
        typer.Option(
            "--min-serving",
            metavar="N|P%",
            help="Property: at least this many instances (or % of the scale set) serve at "
            "every moment of a rollout.",
            show_default=False,
        ),
    ] = None,
    max_outage: Annotated[
        str | None,
        typer.Option(
            "--max-outage",
            metavar="DURATION",
            help="Property: nothing serving for at most this long in total (0 for never).",
            show_default=False,
        ),
    ] = None,
    examples: Annotated[
        int,
        typer.Option("--examples", "-k", help="Random scenarios to try (hypothesis examples)."),
    ] = 100,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Seed that picks the examples. Default: a fixed (derandomized) search that "
            "gives the same answer every time.",
            show_default=False,
        ),
    ] = None,
    debug: Debug = False,
) -> None:
    """Search random scenarios (property-based testing) for one that breaks a property.

    Every example is one simulated rollout on a random scale set, with and without
    faults. Always checked: the strategy's guarantee (instances down at once) and
    that the rollout completes (or, with faults, halts at a safety gate). Add a
    serving SLO with --min-serving and/or --max-outage.

    Prints "OK: N examples" and exits 0 when nothing breaks. Otherwise exits 1 and
    prints on stdout the smallest scenario TOML that reproduces the violation (its
    header comment names it): save it and run `vmss-rollout simulate FILE`.
    Needs the optional dependency: pip install "vmss-rollout\\[verify]".
    """
    spec = strategy.strip()
    registry.make(spec)  # a bad spec is an input error, not a violation
    min_amount = (
        None if min_serving is None else Amount.parse(min_serving, "--min-serving", allow_zero=True)
    )
    outage = None if max_outage is None else parse_duration(max_outage, "--max-outage")
    if examples < 1:
        raise InputError(f"--examples: expected a whole number >= 1, got {examples}")
    try:
        from ..sim.verify import verify as run_verify
    except ImportError as exc:
        if _is_hypothesis(exc):
            raise InputError(VERIFY_EXTRA_MESSAGE) from None
        raise InputError(f"verify is not available in this installation: {exc}") from None
    try:
        with _progress(f"verifying {spec}: up to {examples} examples"):
            report = run_verify(
                spec, min_serving=min_amount, max_outage=outage, examples=examples, seed=seed
            )
    except ImportError as exc:  # in case hypothesis is imported lazily
        if _is_hypothesis(exc):
            raise InputError(VERIFY_EXTRA_MESSAGE) from None
        raise
    message = " ".join(report.message.split())
    if report.ok:
        print(f"OK: {report.examples} examples")
        output.stderr_console().print(message, soft_wrap=True, markup=False)
        return
    toml = report.counterexample_toml or ""
    if message not in toml:  # the scenario's header comment usually names it already
        print(f"# violation: {message}")
    if toml:
        print(toml.rstrip("\n"))
    output.stderr_console().print(
        f"verify: {spec} violates the property (after {report.examples} examples); "
        "stdout is a scenario reproducing it: save it and run `vmss-rollout simulate FILE`.",
        soft_wrap=True,
        markup=False,
    )
    raise typer.Exit(EXIT_VIOLATION)


def _is_hypothesis(exc: ImportError) -> bool:
    return (exc.name or "").split(".")[0] == "hypothesis"


# --------------------------------------------------------------------------- real scale sets

for _command in operate.COMMANDS:
    app.command()(_command)
app.command()(calibrate)
app.command()(emulate)
app.command()(sweep)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
