"""The ``vmss-rollout`` command line.

Commands stay thin: parse the flags, call the library, get plain data back,
render it (``output.py``). Errors are handled once, in :class:`_Group`.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from ..engine.errors import BackendError, InputError
from ..engine.polling import poll_text
from . import fleet, operate, output
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
    ScenarioFile,
    ScenarioPath,
    Seed,
    UnhealthyRate,
    UpdateDomains,
    UpgradeTime,
    Workers,
    Zones,
    apply_engine_flags,
    apply_scenario_overrides,
    scenario_file,
)
from .sweep import study_progress, sweep

if TYPE_CHECKING:
    from ..engine.model import Instance
    from ..sim.runner import RunResult
    from ..sim.scenario import Scenario

# The simulator, the strategies' registry and the charts are imported inside the
# commands that use them, and a command's options are built only when it runs or
# shows its own help (:class:`_MainGroup`): ``vmss-rollout --help`` needs neither.

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
    """Turns the library's errors, and usage errors (a bad flag value, a missing
    option, an unknown command), into one line on stderr and an exit code; tidies
    every command's help (:func:`output.tidy_help`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        output.tidy_help(self)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        output.tidy_options(self)  # typer adds the completion options after __init__
        try:
            return super().make_context(*args, **kwargs)
        except typer.TyperException as exc:  # a usage error in the root's own options
            output.print_error(output.stderr_console(), output.usage_message(exc))
            raise typer.Exit(EXIT_INPUT) from None

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # a click.Context subclass
        try:
            return super().invoke(ctx)
        except InputError as exc:
            _fail(ctx, exc, EXIT_INPUT)
        except BackendError as exc:
            _fail(ctx, exc, EXIT_BACKEND)
        except typer.TyperException as exc:  # typer's usage errors (exit 2): one line too
            _fail(ctx, exc, EXIT_INPUT, output.usage_message(exc))
        except KeyboardInterrupt:
            output.stderr_console().print("interrupted", style="yellow")
            raise typer.Exit(EXIT_INTERRUPTED) from None


#: the commands of ``vmss-rollout``, by name, in the order ``--help`` lists them
#: (:func:`_command`)
_COMMANDS: dict[str, Callable[..., Any]] = {}


def _command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``function`` as a command of ``vmss-rollout`` (as ``app.command()``
    does, named as typer names it), built by :class:`_MainGroup` when first needed."""
    _COMMANDS[typer.main.get_command_name(function.__name__)] = function
    return function


class _MainGroup(_Group):
    """``vmss-rollout`` itself. Typer builds every command's options from its
    signature up front (about 40 ms for these commands); here a command is built
    when it runs or shows its help, and the root's ``--help`` lists each one from
    its docstring alone. Commands registered with ``app.command()`` work as usual."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listing = False

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        built = super().list_commands(ctx)
        return [*(name for name in _COMMANDS if name not in built), *built]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:  # type: ignore[override]
        command = self.commands.get(cmd_name)
        function = _COMMANDS.get(cmd_name)
        if command is not None or function is None:
            return command
        if self._listing:  # the root's help: a name and a summary
            summary = TyperCommand(
                cmd_name, help=inspect.getdoc(function), rich_markup_mode=self.rich_markup_mode
            )
            output.tidy_help(summary)
            return summary
        command = typer.main.get_command_from_info(
            typer.models.CommandInfo(callback=function),
            pretty_exceptions_short=app.pretty_exceptions_short,
            rich_markup_mode=self.rich_markup_mode,
        )
        output.tidy_help(command)
        self.commands[cmd_name] = command
        return command

    def resolve_command(  # type: ignore[override]
        self, ctx: typer.Context, args: list[str]
    ) -> tuple[str | None, Any, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as exc:
            message = getattr(exc, "message", "")
            if args and "Did you mean" not in message:
                import difflib

                matches = difflib.get_close_matches(args[0], self.list_commands(ctx))
                if matches:
                    exc.message = (
                        f"{message.rstrip('.')}. Did you mean "
                        f"{', '.join(repr(m) for m in matches)}?"
                    )
            raise

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:  # type: ignore[override]
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def _fail(ctx: typer.Context, exc: Exception, code: int, message: str | None = None) -> None:
    if ctx.meta.get(DEBUG_KEY):
        traceback.print_exception(exc, file=sys.stderr)
    output.print_error(output.stderr_console(), str(exc) if message is None else message)
    raise typer.Exit(code) from None


app = typer.Typer(
    name="vmss-rollout",
    cls=_MainGroup,
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=True,
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
    from ..sim.scenario import load_scenario

    scenario = load_scenario(scenario_file(path, flags.get("scenario_arg")))
    overrides = {key: flags.get(param) for param, key in SCENARIO_PARAMS.items()}
    scenario = apply_scenario_overrides(scenario, overrides)
    scenario = apply_engine_flags(scenario, {name: flags.get(name) for name in ENGINE_FLAGS})
    note = POLICY_NOTES.get(scenario.upgrade_policy)
    if note:
        output.stderr_console().print(f"note: {note}", soft_wrap=True)
    return scenario


def _fleet(scenario: Scenario) -> list[Instance]:
    """The instances the scenario's simulated scale set starts with."""
    from ..sim.runner import build

    _, scale_set = build(scenario, 0)
    return scale_set.read()[1]


def _check_plan(
    scenario: Scenario, spec: str, instances: Sequence[Instance] | None = None
) -> tuple[str, str]:
    """The spec checked against the scenario's fleet exactly as ``upgrade``
    checks it against a live one (:func:`registry.validate`): its guarantee and
    what it resolves to on the scope (:func:`registry.resolved_spec`)."""
    from ..strategies import registry

    instances = _fleet(scenario) if instances is None else instances
    strategy = registry.validate(spec, instances, scenario.engine.scope)
    scope = registry.in_scope(instances, scenario.engine.scope)
    return strategy.guarantee(), registry.resolved_spec(strategy, scope, len(instances))


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
        "orchestration": scenario.orchestration,
        "update_domains": scenario.update_domains,
        "fault_domains": scenario.fault_domains,
        "upgrade": str(scenario.upgrade),
        "required": str(scenario.required),
        "required_count": scenario.required_serving(),
        "poll_interval": poll_text(scenario.poll_interval),
        "request_latency_s": scenario.request_latency,
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


@_command
def strategies(
    output_: output.OutputFormat = None,
    query: output.Query = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """List the installed rollout strategies, their parameters and guarantees.

    A strategy is chosen with `--strategy NAME[:key=value,...]`, e.g.
    `--strategy batch:size=5` or `--strategy window:max-unavailable=10%`.
    Third-party strategies installed as plugins are listed too.
    """
    from ..strategies import registry

    output.check_output(output_, json, query)
    described = registry.describe()
    output.emit(
        described,
        output=output_,
        query=query,
        json_alias=json,
        table=lambda: output.stdout_console().print(output.strategies_table(described)),
    )


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
    from . import plotting

    with _progress("drawing"):
        written = plotting.write_charts(
            scenario, studies, summaries, plot_path=plot, report_path=report, title=title
        )
    for path in written:
        output.stderr_console().print(f"wrote {path}", soft_wrap=True, markup=False)


# --------------------------------------------------------------------------- simulate


@_command
def simulate(
    scenario_arg: ScenarioPath = None,
    scenario_path: ScenarioFile = None,
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
    output_: output.OutputFormat = None,
    query: output.Query = None,
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
    from ..sim.parallel import run_study
    from ..sim.runner import derive_seed, run_once, summarize
    from . import plotting

    output.check_output(output_, json, query)
    scenario = _scenario(scenario_path, locals())
    chosen = strategy if strategy is not None else scenario.strategy
    spec = (DEFAULT_STRATEGY if chosen is None else chosen).strip()
    guarantee, resolved = _check_plan(scenario, spec)  # fail fast: what upgrade would refuse
    plotting.check_chart_paths(plot, report)  # fail fast: suffix, matplotlib
    charts = plot is not None or report is not None
    with study_progress(f"simulating {spec}") as progress:
        results = run_study(
            scenario, spec, record=charts, workers=workers, dask=dask, progress=progress
        )
    summary = summarize(spec, scenario.seed, results)
    if charts:
        title = f"{scenario.name}: {spec}, {scenario.runs} runs, seed {scenario.seed}"
        row = {**summary, "resolved": resolved}
        _write_charts(scenario, {spec: results}, [row], plot, report, title)
    if timeline is not None:
        recorded = run_once(scenario, spec, derive_seed(scenario.seed, 0), record=True)
        rows = output.write_timeline(timeline, recorded.timeline)
        output.stderr_console().print(f"wrote {rows} timeline rows to {timeline}", soft_wrap=True)
    output.emit(
        summary,
        output=output_,
        query=query,
        json_alias=json,
        table=lambda: output.print_simulation(
            output.stdout_console(), summary, guarantee=guarantee, scenario=_scenario_info(scenario)
        ),
        rows=[{"metric": key, **summary[key]} for key in output.METRIC_KEYS],
    )


# --------------------------------------------------------------------------- compare


@_command
def compare(
    scenario_arg: ScenarioPath = None,
    scenario_path: ScenarioFile = None,
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
    output_: output.OutputFormat = None,
    query: output.Query = None,
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
    from ..sim.parallel import Study, run_studies
    from ..sim.runner import summarize
    from . import plotting

    output.check_output(output_, json, query)
    scenario = _scenario(scenario_path, locals())
    specs = [s.strip() for s in strategy] if strategy else list(COMPARE_DEFAULTS)
    fleet = _fleet(scenario)
    resolved = {spec: _check_plan(scenario, spec, fleet)[1] for spec in specs}  # before any run
    plotting.check_chart_paths(plot, report)
    charts = plot is not None or report is not None
    studies = [Study(scenario, spec, scenario.runs, scenario.seed, record=charts) for spec in specs]
    with study_progress(f"simulating {len(specs)} strategies") as progress:
        all_results = run_studies(studies, workers=workers, dask=dask, progress=progress)
    summaries = [
        summarize(spec, scenario.seed, results)
        for spec, results in zip(specs, all_results, strict=True)
    ]
    rows = output.compare_results(summaries, resolved)
    if charts:
        title = f"{scenario.name}: {scenario.runs} runs per strategy, seed {scenario.seed}"
        _write_charts(
            scenario, dict(zip(specs, all_results, strict=True)), rows, plot, report, title
        )
    info = _scenario_info(scenario)
    scope = _scope_text(scenario, fleet)

    def table() -> None:
        console = output.stdout_console()
        title = f"{scenario.runs} runs per strategy, seed {scenario.seed}"
        console.print(output.compare_view(rows, title, console.width))
        console.print(output.scenario_line(info), soft_wrap=True)
        for line in output.compare_footer(rows, scope, info["required_count"]):
            console.print(line, soft_wrap=True, markup=False)

    output.emit(
        {"scope": scope, "results": rows},
        output=output_,
        query=query,
        json_alias=json,
        table=table,
        rows=rows,
    )


def _scope_text(scenario: Scenario, instances: Sequence[Instance]) -> str:
    """The rollout's scope in words: ``all 20 instances`` or ``8 of 20 instances
    (update domains 0,1)``."""
    from ..strategies import registry

    scope = scenario.engine.scope
    if scope.is_everything:
        return f"all {len(instances)} instances"
    count = len(registry.in_scope(instances, scope))
    filters = [
        f"{label} {','.join(sorted(map(str, values), key=lambda v: (len(v), v)))}"
        for label, values in (
            ("instances", scope.instances),
            ("update domains", scope.update_domains),
            ("fault domains", scope.fault_domains),
            ("zones", scope.zones),
        )
        if values is not None
    ]
    return f"{count} of {len(instances)} instances ({'; '.join(filters)})"


# --------------------------------------------------------------------------- verify


@_command
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
            metavar="N",
            help="Seed that picks the examples. Default: a fixed (derandomized) search that "
            "gives the same answer every time.",
            show_default=False,
        ),
    ] = None,
    min_instances: Annotated[
        int | None,
        typer.Option(
            "--min-instances",
            metavar="N",
            help="Smallest scale set to try (examples have N to 500 instances). Default: the "
            "smallest where an in-place rollout can meet the SLO at all (5 for --min-serving "
            "80%: 4 of 5 serve while one upgrades; 2 with --max-outage), else 1.",
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

    The --min-serving SLO is checked on fault-free examples (a failed upgrade takes
    an instance down whatever the strategy). An example where the strategy's own
    guarantee lets more instances down than the SLO allows is infeasible by
    construction: verify says so and exits 1 without a scenario (there is nothing
    to reproduce). Fleets too small for any rollout to meet the SLO are skipped.

    Prints "OK: N examples" and exits 0 when nothing breaks. Otherwise exits 1 and
    prints on stdout the smallest scenario TOML that reproduces the violation (its
    header comment names it): save it and run `vmss-rollout simulate --scenario FILE`.
    Needs the optional dependency: pip install "vmss-rollout\\[verify]".
    """
    from ..engine.options import Amount, parse_duration
    from ..strategies import registry

    spec = strategy.strip()
    registry.make(spec)  # a bad spec is an input error, not a violation
    min_amount = (
        None if min_serving is None else Amount.parse(min_serving, "--min-serving", allow_zero=True)
    )
    outage = None if max_outage is None else parse_duration(max_outage, "--max-outage")
    if not 1 <= examples <= 100_000:  # sim.verify.MAX_EXAMPLES (hypothesis is optional)
        raise InputError(f"--examples: expected a whole number from 1 to 100,000, got {examples}")
    try:
        from ..sim.verify import verify as run_verify
    except ImportError as exc:
        if _is_hypothesis(exc):
            raise InputError(VERIFY_EXTRA_MESSAGE) from None
        raise InputError(f"verify is not available in this installation: {exc}") from None
    try:
        with _progress(f"verifying {spec}: up to {examples} examples"):
            report = run_verify(
                spec,
                min_serving=min_amount,
                max_outage=outage,
                examples=examples,
                seed=seed,
                min_instances=min_instances,
            )
    except ImportError as exc:  # in case hypothesis is imported lazily
        if _is_hypothesis(exc):
            raise InputError(VERIFY_EXTRA_MESSAGE) from None
        raise
    message = " ".join(report.message.split())
    if report.infeasible:  # nothing to reproduce: the guarantee and the SLO disagree
        output.stderr_console().print(f"verify: {message}", soft_wrap=True, markup=False)
        raise typer.Exit(EXIT_VIOLATION)
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
        "stdout is a scenario reproducing it: save it and run "
        "`vmss-rollout simulate --scenario FILE`.",
        soft_wrap=True,
        markup=False,
    )
    raise typer.Exit(EXIT_VIOLATION)


def _is_hypothesis(exc: ImportError) -> bool:
    return (exc.name or "").split(".")[0] == "hypothesis"


# --------------------------------------------------------------------------- real scale sets

for _operator_command in operate.COMMANDS:
    _command(_operator_command)
_command(calibrate)
_command(fleet.scale)
_command(emulate)
_command(sweep)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
