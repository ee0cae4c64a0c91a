"""Option definitions shared by several commands, and the code that turns the
values given on the command line into library objects.

Each option is an ``Annotated`` alias, so a command lists it as
``instances: Instances = None``. Errors from the library name the scenario key
or engine option (``scale_set.instances``, ``max_unhealthy``); the helpers here
rewrite them to name the flag the user typed (``--instances``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from ..engine.errors import InputError
from ..engine.options import EngineOptions, Scope, parse_option_values
from ..sim.parallel import SERIAL_THRESHOLD
from ..sim.scenario import Scenario

SCENARIO_PANEL = "Scenario overrides"
ENGINE_PANEL = "Engine options"
RUN_PANEL = "Monte Carlo"

# --------------------------------------------------------------------------- common

ScenarioPath = Annotated[
    str | None,
    typer.Argument(
        metavar="SCENARIO",
        help="Same as --scenario (kept for older scripts).",
        show_default=False,
        hidden=True,
    ),
]

ScenarioFile = Annotated[
    str | None,
    typer.Option(
        "--scenario",
        metavar="FILE",
        help="Scenario TOML file describing the scale set, timings, faults and demand. "
        "Default: the built-in scenario (20 instances, 5 update domains, 80% must keep serving).",
        show_default=False,
    ),
]


def scenario_file(option: str | None, positional: str | None) -> str | None:
    """The scenario file given as ``--scenario FILE`` or (the older way) as the
    positional argument; both at once must agree."""
    if option is not None and positional is not None and option != positional:
        raise InputError(
            f"two scenario files: --scenario {option} and {positional}; give one with --scenario"
        )
    return option if option is not None else positional


Runs = Annotated[
    int | None,
    typer.Option(
        "--runs",
        "-r",
        metavar="N",
        help="Monte Carlo runs per strategy. Default: the scenario's `runs` (200 built in).",
        show_default=False,
        rich_help_panel=RUN_PANEL,
    ),
]

Seed = Annotated[
    int | None,
    typer.Option(
        "--seed",
        metavar="N",
        help="Seed of the study; the same seed gives the same numbers. "
        "Default: the scenario's `seed` (1 built in).",
        show_default=False,
        rich_help_panel=RUN_PANEL,
    ),
]

Json = Annotated[
    bool,
    typer.Option("--json", help="Print machine-readable JSON instead of a table (as -o json)."),
]

DEBUG_KEY = "vmss_rollout.debug"


def _debug_callback(ctx: typer.Context, value: bool) -> bool:
    if value:
        ctx.meta[DEBUG_KEY] = True
    return value


Debug = Annotated[
    bool,
    typer.Option(
        "--debug",
        help="Show the full traceback when something goes wrong.",
        callback=_debug_callback,
        is_eager=True,
    ),
]

# --------------------------------------------------------------------------- scenario overrides

# option name (as Scenario.with_overrides takes it) -> (key in scenario errors, flag)
SCENARIO_FLAGS: dict[str, tuple[str, str]] = {
    "runs": ("runs", "--runs"),
    "seed": ("seed", "--seed"),
    "instances": ("scale_set.instances", "--instances"),
    "update_domains": ("scale_set.update_domains", "--update-domains"),
    "fault_domains": ("scale_set.fault_domains", "--fault-domains"),
    "zones": ("scale_set.zones", "--zones"),
    "upgrade": ("timing.upgrade", "--upgrade-time"),
    "health_delay": ("timing.health_delay", "--health-delay"),
    "upgrade_failure": ("faults.upgrade_failure", "--failure-rate"),
    "unhealthy_after_upgrade": ("faults.unhealthy_after_upgrade", "--unhealthy-rate"),
    "bad_image": ("faults.bad_image", "--bad-image"),
    "required": ("demand.required", "--demand"),
}

Instances = Annotated[
    int | None,
    typer.Option(
        "--instances",
        help="Instances in the scale set.",
        show_default=False,
        rich_help_panel=SCENARIO_PANEL,
    ),
]
UpdateDomains = Annotated[
    int | None,
    typer.Option(
        "--update-domains",
        help="Update domains per zone (1-20; Azure uses 5).",
        show_default=False,
        rich_help_panel=SCENARIO_PANEL,
    ),
]
FaultDomains = Annotated[
    int | None,
    typer.Option(
        "--fault-domains",
        help="Fault domains per zone (1-5).",
        show_default=False,
        rich_help_panel=SCENARIO_PANEL,
    ),
]
Zones = Annotated[
    str | None,
    typer.Option(
        "--zones",
        help='Availability zones, comma-separated (e.g. "1,2,3"); "" for a regional scale set.',
        show_default=False,
        rich_help_panel=SCENARIO_PANEL,
    ),
]
UpgradeTime = Annotated[
    str | None,
    typer.Option(
        "--upgrade-time",
        metavar="DIST",
        help="How long one instance takes to upgrade: a duration (4m) or a distribution "
        "such as lognormal(mean=4m, sd=1m), uniform(2m, 6m), exponential(mean=4m).",
        show_default=False,
        rich_help_panel=SCENARIO_PANEL,
    ),
]
HealthDelay = Annotated[
    str | None,
    typer.Option(
        "--health-delay",
        metavar="DIST",
        help="How long an upgraded instance takes to report healthy (duration or distribution).",
        show_default=False,
        rich_help_panel=SCENARIO_PANEL,
    ),
]
FailureRate = Annotated[
    float | None,
    typer.Option(
        "--failure-rate",
        metavar="P",
        help="Probability (0-1) that an instance's upgrade fails.",
        show_default=False,
        rich_help_panel=SCENARIO_PANEL,
    ),
]
UnhealthyRate = Annotated[
    float | None,
    typer.Option(
        "--unhealthy-rate",
        metavar="P",
        help="Probability (0-1) that an upgraded instance never becomes healthy.",
        show_default=False,
        rich_help_panel=SCENARIO_PANEL,
    ),
]
BadImage = Annotated[
    bool | None,
    typer.Option(
        "--bad-image/--good-image",
        help="The target image is bad: no upgraded instance ever becomes healthy.",
        show_default=False,
        rich_help_panel=SCENARIO_PANEL,
    ),
]
Demand = Annotated[
    str | None,
    typer.Option(
        "--demand",
        metavar="N|P%",
        help="Instances that must keep serving to meet demand, as a count (16) or a "
        "percentage (80%). Time below it counts as degraded.",
        show_default=False,
        rich_help_panel=SCENARIO_PANEL,
    ),
]


def _rename(message: str, renames: Mapping[str, str], *, anywhere: bool) -> str:
    for key, flag in renames.items():
        if anywhere and "." in key:  # dotted keys cannot be mistaken for words
            message = re.sub(rf"(?<![\w.]){re.escape(key)}(?![\w])", flag, message)
        elif message.startswith(f"{key}:"):
            message = flag + message[len(key) :]
    return message


@contextmanager
def flag_errors(renames: Mapping[str, str], *, anywhere: bool = False) -> Iterator[None]:
    """Re-raise :class:`InputError` with option keys replaced by flag names."""
    try:
        yield
    except InputError as exc:
        renamed = _rename(str(exc), renames, anywhere=anywhere)
        if renamed == str(exc):
            raise
        raise type(exc)(renamed) from None


#: a command's parameter name (its flag, ``--upgrade-time`` -> ``upgrade_time``) ->
#: the scenario setting it overrides
SCENARIO_PARAMS: dict[str, str] = {
    flag[2:].replace("-", "_"): setting for setting, (_, flag) in SCENARIO_FLAGS.items()
}


def apply_scenario_overrides(scenario: Scenario, values: Mapping[str, object]) -> Scenario:
    """``scenario`` with the given (non-None) CLI overrides applied and validated.

    ``values`` maps :meth:`Scenario.with_overrides` names (``instances``,
    ``upgrade``, ``required``, ...) to raw CLI values.
    """
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return scenario
    renames = {SCENARIO_FLAGS[k][0]: SCENARIO_FLAGS[k][1] for k in given if k in SCENARIO_FLAGS}
    with flag_errors(renames, anywhere=True):
        return scenario.with_overrides(**given)


# --------------------------------------------------------------------------- engine options

OnlyInstances = Annotated[
    str | None,
    typer.Option(
        "--only-instances",
        metavar="IDS",
        help="Roll out only these instance ids (comma-separated).",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
OnlyUpdateDomains = Annotated[
    str | None,
    typer.Option(
        "--only-update-domains",
        metavar="UDS",
        help="Roll out only instances in these update domains (comma-separated numbers).",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
OnlyFaultDomains = Annotated[
    str | None,
    typer.Option(
        "--only-fault-domains",
        metavar="FDS",
        help="Roll out only instances in these fault domains (comma-separated numbers).",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
OnlyZones = Annotated[
    str | None,
    typer.Option(
        "--only-zones",
        metavar="ZONES",
        help="Roll out only instances in these zones (comma-separated).",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
MaxUnhealthy = Annotated[
    str | None,
    typer.Option(
        "--max-unhealthy",
        metavar="PERCENT",
        help="Halt before a wave when more than this % of all instances is unhealthy "
        "(Azure's maxUnhealthyInstancePercent). Default: 20.",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
MaxUnhealthyUpgraded = Annotated[
    str | None,
    typer.Option(
        "--max-unhealthy-upgraded",
        metavar="PERCENT",
        help="Halt after a wave when more than this % of the instances upgraded so far is "
        "unhealthy (Azure's maxUnhealthyUpgradedInstancePercent). Default: 20.",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
Pause = Annotated[
    str | None,
    typer.Option(
        "--pause",
        metavar="DURATION",
        help="Wait this long after each wave (90s, 5m, 1h30m). Default: 0s.",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
HealthTimeout = Annotated[
    str | None,
    typer.Option(
        "--health-timeout",
        metavar="DURATION",
        help="An upgraded instance not healthy this long after its upgrade counts as "
        "unhealthy. Default: 5m.",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
Canary = Annotated[
    str | None,
    typer.Option(
        "--canary",
        metavar="N|P%",
        help="Upgrade this many instances (or % of the scope) first, then bake.",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
Bake = Annotated[
    str | None,
    typer.Option(
        "--bake",
        metavar="DURATION",
        help="How long to watch after the canary and at each checkpoint. Default: 0s.",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
Checkpoints = Annotated[
    str | None,
    typer.Option(
        "--checkpoints",
        metavar="PERCENTS",
        help='Also bake once these percentages of the scope are done (e.g. "25,50,75").',
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]
OnFailure = Annotated[
    str | None,
    typer.Option(
        "--on-failure",
        metavar="freeze|rollback",
        help="On a halt: freeze (let in-flight instances finish, then stop) or rollback "
        "(return every upgraded instance to the previous model). Default: freeze.",
        show_default=False,
        rich_help_panel=ENGINE_PANEL,
    ),
]


#: the engine-option flags every command that rolls out shares; a command's
#: parameter is named like the option (``--max-unhealthy`` -> ``max_unhealthy``)
ENGINE_FLAGS = (
    "only_instances",
    "only_update_domains",
    "only_fault_domains",
    "only_zones",
    "max_unhealthy",
    "max_unhealthy_upgraded",
    "pause",
    "health_timeout",
    "canary",
    "bake",
    "checkpoints",
    "on_failure",
)


def engine_flag(name: str) -> str:
    """The CLI flag of an engine option: ``max_unhealthy`` -> ``--max-unhealthy``."""
    return "--" + name.replace("_", "-")


def parse_engine_flags(values: Mapping[str, str | None]) -> dict[str, Any]:
    """Typed engine options (for :meth:`EngineOptions.with_overrides`) from the
    given CLI values, keyed by option name (``only_instances``, ``max_unhealthy``,
    ...). Values that are None (flag not given) are left out; errors name the flag."""
    given = {k: v for k, v in values.items() if v is not None}
    with flag_errors({name: engine_flag(name) for name in given}):
        return parse_option_values(given, prefix="")


def merge_engine_options(options: EngineOptions, parsed: Mapping[str, Any]) -> EngineOptions:
    """``options`` with ``parsed`` applied; scope filters given on the command line
    replace only the same filter of ``options`` (the others are kept)."""
    changes = dict(parsed)
    scope = changes.get("scope")
    if isinstance(scope, Scope):
        given = {
            f.name: getattr(scope, f.name)
            for f in dataclasses.fields(scope)
            if getattr(scope, f.name) is not None
        }
        changes["scope"] = dataclasses.replace(options.scope, **given)
    return options.with_overrides(changes)


def apply_engine_flags(scenario: Scenario, values: Mapping[str, str | None]) -> Scenario:
    """``scenario`` with engine options given on the command line merged in."""
    parsed = parse_engine_flags(values)
    if not parsed:
        return scenario
    return dataclasses.replace(scenario, engine=merge_engine_options(scenario.engine, parsed))


# --------------------------------------------------------------------------- parallel runs

Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-j",
        metavar="N",
        help="Processes to run the Monte Carlo runs on (1: in this process). Default: every "
        f"CPU, or in this process for small studies (under {SERIAL_THRESHOLD} instance-runs: "
        "runs x instances). Results are identical whatever the count.",
        show_default=False,
        rich_help_panel=RUN_PANEL,
    ),
]

DaskAddress = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="tcp://HOST:PORT",
        help="Run the Monte Carlo runs on this Dask cluster (its scheduler's address) instead "
        "of local processes; its workers need vmss-rollout installed. Results are identical. "
        "Needs pip install 'vmss-rollout[dask]'.",
        show_default=False,
        rich_help_panel=RUN_PANEL,
    ),
]
