"""Commands that work on real scale sets: status, plan, upgrade, resume, history.

They need the optional Azure dependencies (``pip install 'vmss-rollout[azure]'``),
imported only when one of these commands runs.
"""

from __future__ import annotations

import dataclasses
import signal
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..backends.journal import (
    ActiveRolloutError,
    Journal,
    RolloutRecord,
    model_from_dict,
    refuse_live_driver,
)
from ..engine.errors import BackendError, InputError
from ..engine.events import Event, EventKind
from ..engine.model import (
    Health,
    Instance,
    ModelVersion,
    PowerState,
    ProvisioningState,
    UpgradeMode,
    instance_sort_key,
)
from ..engine.options import EngineOptions, Scope, format_duration, parse_duration
from ..engine.polling import PollInterval, parse_poll_interval
from ..engine.rollout import check_scope
from ..engine.rollout import runs as runs_model
from ..engine.target import target_model
from ..sim.parallel import Progress, run_study
from ..sim.runner import derive_seed, run_once, summarize
from ..sim.scenario import Scenario, load_scenario
from ..strategies import registry
from . import output, render
from .options import (
    ENGINE_FLAGS,
    Bake,
    Canary,
    Checkpoints,
    DaskAddress,
    Debug,
    HealthTimeout,
    Json,
    MaxUnhealthy,
    MaxUnhealthyUpgraded,
    OnFailure,
    OnlyFaultDomains,
    OnlyInstances,
    OnlyUpdateDomains,
    OnlyZones,
    Pause,
    Workers,
    merge_engine_options,
    parse_engine_flags,
)
from .output import OutputFormat, Query
from .sweep import study_progress

if TYPE_CHECKING:
    from ..backends.azure import AzureBackend
    from ..backends.resume import ResumePoint

AZURE_EXTRA = "this command needs the Azure SDK: pip install 'vmss-rollout[azure]'"
TARGET_PANEL = "Target model"
AZURE_PANEL = "Azure"

# --------------------------------------------------------------------------- options

ResourceGroup = Annotated[
    str,
    typer.Option(
        "--resource-group",
        "-g",
        help="Resource group of the scale set.",
        rich_help_panel=AZURE_PANEL,
    ),
]
Name = Annotated[
    str, typer.Option("--name", "-n", help="Name of the scale set.", rich_help_panel=AZURE_PANEL)
]
Subscription = Annotated[
    str | None,
    typer.Option(
        "--subscription",
        envvar="AZURE_SUBSCRIPTION_ID",
        show_envvar=True,
        help="Subscription id.",
        rich_help_panel=AZURE_PANEL,
    ),
]
ArmEndpoint = Annotated[
    str | None,
    typer.Option(
        "--arm-endpoint",
        envvar="VMSS_ROLLOUT_ARM_ENDPOINT",
        show_envvar=True,
        help="Azure Resource Manager endpoint: a sovereign cloud's, or the emulator's "
        "(vmss-rollout emulate). Default: https://management.azure.com.",
        rich_help_panel=AZURE_PANEL,
    ),
]
JournalPath = Annotated[
    str | None,
    typer.Option(
        "--journal",
        envvar="VMSS_ROLLOUT_JOURNAL",
        show_envvar=True,
        help="SQLite journal of rollouts. Default: the user's state directory "
        "(~/.local/state/vmss-rollout/journal.sqlite).",
        rich_help_panel=AZURE_PANEL,
    ),
]
PollEvery = Annotated[
    str,
    typer.Option(
        "--poll-interval",
        metavar="MIN[:MAX]",
        help="Seconds between list calls: MIN after a change, doubling to MAX while "
        "nothing changes.",
        rich_help_panel=AZURE_PANEL,
    ),
]
WaitTimeout = Annotated[
    str,
    typer.Option(
        "--timeout",
        metavar="DURATION",
        help="Give up waiting after this long (Azure goes on with the action; exit 3, "
        "journaled failed).",
        rich_help_panel=AZURE_PANEL,
    ),
]


def wait_for(
    backend: AzureBackend,
    interval: PollInterval,
    timeout_s: float,
    done: Callable[[], bool],
    pending: Callable[[], str],
) -> None:
    """Wait a poll interval, then ask ``done()`` (which polls), until it is
    true, on the backend's clock (the emulator's in a rehearsal), at most
    ``timeout_s``: then a one-line error naming what is still ``pending()``
    (exit 3: something was asked of Azure)."""
    deadline = backend.clock.monotonic() + timeout_s
    while True:
        left = deadline - backend.clock.monotonic()
        if left <= 0:
            raise BackendError(
                f"gave up waiting after {format_duration(timeout_s)}: {pending()}; "
                f"Azure goes on with it (vmss-rollout status -g {backend.resource_group} "
                f"-n {backend.name} shows it)"
            )
        backend.clock.sleep(min(interval.next(False), left))
        if done():
            return


Strategy = Annotated[
    str,
    typer.Option(
        "--strategy",
        "-s",
        metavar="SPEC",
        help="Strategy as NAME[:key=value,...] (see `vmss-rollout strategies`).",
    ),
]
ImageVersion = Annotated[
    str | None,
    typer.Option(
        "--image-version",
        metavar="X.Y.Z|latest",
        help="New platform image version (or a pinned gallery image's).",
        rich_help_panel=TARGET_PANEL,
    ),
]
ImageSku = Annotated[
    str | None,
    typer.Option(
        "--image-sku",
        metavar="SKU|PUB:OFFER:SKU[:VER]",
        help="New platform image SKU (same publisher and offer).",
        rich_help_panel=TARGET_PANEL,
    ),
]
ImageId = Annotated[
    str | None,
    typer.Option(
        "--image-id",
        metavar="ID",
        help="Managed image or Azure Compute Gallery image (version) id.",
        rich_help_panel=TARGET_PANEL,
    ),
]
ImageUri = Annotated[
    str | None,
    typer.Option(
        "--image-uri",
        metavar="URL",
        help="Legacy unmanaged image: the VHD's blob URL.",
        rich_help_panel=TARGET_PANEL,
    ),
]
VmSize = Annotated[
    str | None,
    typer.Option(
        "--vm-size",
        metavar="SIZE",
        help="New VM size, e.g. Standard_D4s_v5.",
        rich_help_panel=TARGET_PANEL,
    ),
]


# --------------------------------------------------------------------------- helpers


def _backend(
    resource_group: str, name: str, subscription: str | None, endpoint: str | None
) -> AzureBackend:
    try:
        from ..backends.azure import AzureBackend, connect
    except ImportError:
        raise InputError(AZURE_EXTRA) from None
    client, counter, clock = connect(subscription, endpoint)
    return AzureBackend(client, resource_group, name, counter, clock=clock)


def _poll_interval(text: str) -> PollInterval:
    return PollInterval(*parse_poll_interval(text))


#: timed lists of the instances after plan's read: the median of a few resists a
#: stall of the machine (x600 in a rehearsal's emulated time)
_TIMED_LISTS = 3


def _timed_read(backend: AzureBackend) -> tuple[Any, list[Instance], float | None]:
    """``backend.read()``, then the instance list a few more times, timed: the
    median of their seconds per ARM call (None: no call), what the prediction
    assumes each of the driver's calls costs. The first read also connects and
    signs in, which the driver's later calls do not. Against the emulator a
    call costs its wall time x the time scale in emulated seconds, against
    Azure Azure's latency."""
    scale_set, instances = backend.read()
    per_call = []
    for _ in range(_TIMED_LISTS):
        # the backend's clock: the emulator's time once its first answer announced it
        calls = backend.counter.total
        started = backend.clock.monotonic()
        backend.list_instances()
        took = backend.clock.monotonic() - started
        if backend.counter.total > calls:
            per_call.append(took / (backend.counter.total - calls))
    return scale_set, instances, statistics.median(per_call) if per_call else None


def _engine_options(flags: Mapping[str, Any]) -> EngineOptions:
    parsed = parse_engine_flags({k: flags.get(k) for k in ENGINE_FLAGS})
    return merge_engine_options(EngineOptions(), parsed)


def _target(current: ModelVersion, flags: Mapping[str, Any]) -> ModelVersion:
    return target_model(
        current,
        image_version=flags.get("image_version"),
        image_sku=flags.get("image_sku"),
        image_id=flags.get("image_id"),
        image_uri=flags.get("image_uri"),
        vm_size=flags.get("vm_size"),
    )


def _protected_ids(backend: AzureBackend) -> list[str]:
    return sorted(backend.protected, key=instance_sort_key)


def _protected_line(backend: AzureBackend) -> str:
    ids = _protected_ids(backend)
    return (
        f"protected: {len(ids)} instance{'s' if len(ids) != 1 else ''} protected from scale set "
        f"actions, left out of every rollout: {' '.join(ids)}"
    )


def state_of(inst: Instance) -> str:
    """One word per instance for the heat map."""
    if inst.protected:
        return "protected"  # left out of rollouts (protectFromScaleSetActions)
    if inst.provisioning is ProvisioningState.FAILED:
        return "failed"
    if inst.provisioning in (
        ProvisioningState.UPDATING,
        ProvisioningState.CREATING,
        ProvisioningState.DELETING,
    ):
        return "upgrading"
    if inst.power is not PowerState.RUNNING:
        return "stopped"
    if inst.health is Health.UNHEALTHY:
        return "unhealthy"
    if inst.health is Health.UNKNOWN:
        return "upgrading"
    return "latest" if inst.latest_model_applied else "outdated"


STYLES = {
    "latest": "green",
    "outdated": "blue",
    "upgrading": "yellow",
    "unhealthy": "red",
    "failed": "bold red reverse",
    "stopped": "bright_black",
    "protected": "magenta",
}


def heat_map(instances: list[Instance], *, flexible: bool = False) -> Table:
    """Instances by update domain (rows; per zone when zonal) x fault domain (columns);
    a Flexible set has no update domains: zone (rows) x fault domain."""
    fds = sorted({i.fault_domain for i in instances})
    rows = sorted({(i.zone, i.update_domain) for i in instances})
    if flexible:
        table = Table(title="instances by zone x fault domain", title_justify="left")
        table.add_column("zone", justify="right")
    else:
        table = Table(title="instances by update domain x fault domain", title_justify="left")
        table.add_column("zone / UD" if any(z for z, _ in rows) else "UD", justify="right")
    for fd in fds:
        table.add_column(f"FD {fd}")
    cells: dict[tuple[str, int, int], list[Instance]] = {}
    for inst in sorted(
        instances, key=lambda i: int(i.instance_id) if i.instance_id.isdigit() else 0
    ):
        cells.setdefault((inst.zone, inst.update_domain, inst.fault_domain), []).append(inst)
    for zone, ud in rows:
        label = f"{zone}/{ud}" if zone else str(ud)
        if flexible:
            label = zone or "-"
        row: list[Text | str] = [label]
        for fd in fds:
            text = Text()
            for inst in cells.get((zone, ud, fd), []):
                if text:
                    text.append(" ")
                text.append(inst.instance_id, style=STYLES[state_of(inst)])
            row.append(text)
        table.add_row(*row)
    legend = Text("  ".join(f"{k}" for k in STYLES))
    for k, style in STYLES.items():
        legend.highlight_words([k], style)
    table.caption = legend
    return table


def heat_maps(instances: list[Instance], *, flexible: bool = False) -> Group:
    """:func:`heat_map` once per zone (one for a regional set), each titled on a
    line of its own, and the legend under them: squeezed to a narrow table's
    width, title and legend wrap."""
    parts: list[Any] = []
    zones = sorted({i.zone for i in instances})
    for zone in zones if len(zones) > 1 else [None]:
        shown = [i for i in instances if zone is None or i.zone == zone]
        table = heat_map(shown, flexible=flexible)
        title, table.title, table.caption = str(table.title), None, None
        parts += [Text(f"zone {zone}: {title}" if zone is not None else title), table]
    return Group(*parts, render.legend(STYLES))


def _instance_json(inst: Instance, *, flexible: bool = False) -> dict[str, Any]:
    return {
        "instance_id": inst.instance_id,
        # a Flexible set's VMs have no update domain: null, not 0
        "update_domain": None if flexible else inst.update_domain,
        "fault_domain": inst.fault_domain,
        "zone": inst.zone,
        "state": state_of(inst),
        "latest_model_applied": inst.latest_model_applied,
        "provisioning": inst.provisioning.value,
        "power": inst.power.value,
        "health": inst.health.value,
        "protected": inst.protected,
        "model": str(inst.model) if inst.model else None,
    }


# --------------------------------------------------------------------------- status


def status(
    resource_group: ResourceGroup,
    name: Name,
    subscription: Subscription = None,
    arm_endpoint: ArmEndpoint = None,
    out: OutputFormat = None,
    query: Query = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Show a scale set: its model, upgrade policy, health source, and a heat map
    of instances by update domain x fault domain coloured by state, one per zone
    (failed, unhealthy and stopped instances are named; instances protected from
    scale set actions are listed: no rollout includes them)."""
    output.check_output(out, json, query)
    backend = _backend(resource_group, name, subscription, arm_endpoint)
    scale_set, in_scope = backend.read()
    instances = sorted(
        [*in_scope, *backend.protected.values()], key=lambda i: instance_sort_key(i.instance_id)
    )
    counts: dict[str, int] = {}
    for inst in instances:
        counts[state_of(inst)] = counts.get(state_of(inst), 0) + 1
    listed = [_instance_json(i, flexible=scale_set.flexible) for i in instances]
    data = {
        "scale_set": backend.scale_set_id,
        "model": {"image": str(scale_set.model.image), "vm_size": scale_set.model.vm_size},
        "upgrade_policy": scale_set.upgrade_mode.value,
        "rolling_policy": dataclasses.asdict(scale_set.rolling_policy),
        "health_source": backend.health_source,
        "capacity": scale_set.capacity,
        "counts": counts,
        "orchestration": "Flexible" if scale_set.flexible else "Uniform",
        "instances": listed,
        "requests": dict(backend.counter.attempts),
    }
    output.emit(
        data,
        output=out,
        query=query,
        json_alias=json,
        table=lambda: _status_text(backend, scale_set, instances, counts, listed),
        rows=listed,
    )


def _status_text(
    backend: AzureBackend,
    scale_set: Any,
    instances: list[Instance],
    counts: dict[str, int],
    listed: list[dict[str, Any]],
) -> None:
    console = output.stdout_console()
    console.print(f"[bold]{scale_set.name}[/]  {backend.scale_set_id}", soft_wrap=True)
    console.print(
        f"model: {scale_set.model}   policy: {scale_set.upgrade_mode.value}   "
        f"health: {backend.health_source}"
        + ("   orchestration: Flexible" if scale_set.flexible else ""),
        soft_wrap=True,
    )
    console.print(heat_maps(instances, flexible=scale_set.flexible))
    console.print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for line in render.named_states(listed, ("failed", "unhealthy", "stopped")):
        console.print(line, soft_wrap=True)
    if backend.protected:
        console.print(_protected_line(backend), soft_wrap=True)


# --------------------------------------------------------------------------- plan


ScenarioFile = Annotated[
    str | None,
    typer.Option(
        "--scenario",
        metavar="FILE.toml",
        help="Timings, faults and demand to predict with (the topology is the live one): "
        "plan's prediction, upgrade's prompt and ETA. Default: the built-in scenario's.",
    ),
]
Calibrated = Annotated[
    bool,
    typer.Option(
        "--calibrated",
        help="Simulate with a scenario fitted from this scale set's journaled rollouts "
        "(as `vmss-rollout calibrate` prints it) instead of --scenario.",
    ),
]


def _given_timings(
    scenario_path: str | None, calibrated: bool
) -> tuple[Scenario | None, str | None]:
    """--scenario FILE, loaded (a bad file or both flags refused before any ARM
    call), with its origin; (None, None) for the built-in or --calibrated."""
    if calibrated and scenario_path is not None:
        raise InputError("--calibrated and --scenario: give one of them")
    if scenario_path is None:
        return None, None
    return load_scenario(scenario_path), f"--scenario {scenario_path}"


def _timings(
    backend: AzureBackend,
    given: tuple[Scenario | None, str | None],
    calibrated: bool,
    journal: str | None,
) -> tuple[Scenario | None, str | None]:
    """The scenario a prediction simulates with (``plan``, ``upgrade``'s prompt
    and ETA) and where it came from: ``given`` (:func:`_given_timings`), or
    the calibration of this scale set's journal."""
    if not calibrated:
        return given
    from .calibrate import calibration

    _, scenario, fitted = calibration(backend, journal)
    return scenario, (
        f"calibrated from {fitted} journaled rollout(s) of this scale set"
        if fitted
        else "calibrate found no journaled rollouts: Azure's coarse figures or defaults"
    )


def plan(
    resource_group: ResourceGroup,
    name: Name,
    strategy: Strategy,
    image_version: ImageVersion = None,
    image_sku: ImageSku = None,
    image_id: ImageId = None,
    image_uri: ImageUri = None,
    vm_size: VmSize = None,
    scenario_path: ScenarioFile = None,
    calibrated: Calibrated = False,
    journal: JournalPath = None,
    poll_interval: Annotated[
        str | None,
        typer.Option(
            "--poll-interval",
            metavar="MIN[:MAX]",
            help="Simulate the driver polling as `upgrade --poll-interval` will: MIN seconds "
            "after a change, doubling to MAX. Default: the scenario's driver.poll_interval "
            "(5:30, upgrade's default).",
        ),
    ] = None,
    runs: Annotated[int, typer.Option("--runs", "-r", help="Simulated runs.")] = 100,
    workers: Workers = None,
    dask: DaskAddress = None,
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
    all_waves: Annotated[
        bool,
        typer.Option(
            "--all-waves",
            help=f"List every wave (beyond {render.WAVE_ROWS} the middle ones collapse "
            "into a range; -o json always has them all).",
        ),
    ] = False,
    subscription: Subscription = None,
    arm_endpoint: ArmEndpoint = None,
    out: OutputFormat = None,
    query: Query = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Read the live topology, print the waves in order and predict duration,
    lowest serving capacity and outage risk by simulating them: halts, lowest
    serving against demand, degraded time, failed instances, and the timings
    assumed with where they came from. Changes nothing."""
    flags = locals()
    output.check_output(out, json, query)
    spec = strategy.strip()
    chosen = registry.make(spec)
    options = _engine_options(flags)
    given = _given_timings(scenario_path, calibrated)
    poll = None if poll_interval is None else parse_poll_interval(poll_interval)
    backend = _backend(resource_group, name, subscription, arm_endpoint)
    scale_set, instances, latency = _timed_read(backend)
    target = _target(scale_set.model, flags)
    registry.validate(spec, instances, options.scope, target)  # as upgrade and simulate check
    from ..backends.upgrade import check_fault_domains

    check_fault_domains(scale_set, chosen.name, options.scope)
    scenario, origin = _timings(backend, given, calibrated, journal)
    with study_progress(f"simulating {spec}") as progress:
        result = predict(
            instances,
            target,
            spec,
            options,
            scenario,
            runs,
            workers=workers,
            dask=dask,
            progress=progress,
            origin=origin,
            poll=poll,
            latency=latency,
        )
    from ..backends.upgrade import UpgradeRequest, policy_action

    try:
        action: str = policy_action(scale_set, UpgradeRequest(target, spec))
    except InputError as exc:
        action = f"refused: {exc}"
    data = {
        "scale_set": backend.scale_set_id,
        "current": str(scale_set.model),
        "target": str(target),
        "policy": scale_set.upgrade_mode.value,
        "policy_action": action,
        **result,
        "protected": _protected_ids(backend),
        "requests": dict(backend.counter.attempts),
    }
    output.emit(
        data,
        output=out,
        query=query,
        json_alias=json,
        table=lambda: _plan_text(
            backend, scale_set, instances, target, action, spec, result, all_waves
        ),
        rows=[{"wave": n, "instances": w} for n, w in enumerate(result["waves"], 1)],
    )


def _plan_text(
    backend: AzureBackend,
    scale_set: Any,
    instances: list[Instance],
    target: ModelVersion,
    action: str,
    spec: str,
    result: dict[str, Any],
    all_waves: bool,
) -> None:
    console = output.stdout_console()
    console.print(f"{backend.scale_set_id}\n  {scale_set.model}\n  -> {target}", soft_wrap=True)
    console.print(f"policy {scale_set.upgrade_mode.value}: {action}", soft_wrap=True)
    if backend.protected:
        console.print(_protected_line(backend), soft_wrap=True)
    if not result["waves"]:
        console.print("nothing to do: every instance in scope runs the target model")
        return
    console.print(
        render.wave_table(
            f"{spec}: {len(result['waves'])} waves", result["waves"], all_waves=all_waves
        )
    )
    for line in render.plan_summary(result, len(instances)):
        console.print(line, soft_wrap=True, markup=False)


def predict(
    instances: list[Instance],
    target: ModelVersion,
    spec: str,
    options: EngineOptions,
    given: Scenario | None,
    runs: int,
    *,
    workers: int | None = None,
    dask: str | None = None,
    progress: Progress | None = None,
    origin: str | None = None,
    poll: tuple[float, float] | None = None,
    latency: float | None = None,
) -> dict[str, Any]:
    """Waves and a Monte Carlo prediction of ``spec`` on a live topology
    (``workers``, ``dask``, ``progress``: as :func:`~..sim.parallel.run_study`;
    ``given``: the scenario, None for the built-in; ``origin``: where it came
    from). ``poll``: the
    driver's poll interval as ``upgrade --poll-interval`` gets it (default: the
    scenario's); ``latency``: seconds per ARM call measured on the live scale
    set, used unless the scenario sets a request latency."""
    pending = frozenset(i.instance_id for i in instances if not runs_model(i, target))
    base = given if given is not None else load_scenario(None)
    scenario = dataclasses.replace(base, instances=len(instances) or 1)
    driver = {"poll_interval": "scenario", "request_latency": "scenario"}
    if poll is not None:
        scenario = dataclasses.replace(scenario, poll_interval=poll)
        driver["poll_interval"] = "--poll-interval"
    polled = scenario.poll_interval[1] > 0
    if latency is not None and polled and scenario.request_latency == 0:
        scenario = dataclasses.replace(scenario, request_latency=latency)
        driver["request_latency"] = "measured: median of this command's timed lists"
    in_scope = [
        i
        for i in instances
        if i.instance_id in pending
        and options.scope.covers(i.instance_id, i.update_domain, i.fault_domain, i.zone)
    ]
    assumed = render.assumed_timings(scenario, origin or "built-in default scenario", driver)
    if not in_scope:
        return {"waves": [], "simulation": None, "outage_runs": 0, "assumed": assumed}
    scope = Scope(instances=frozenset(i.instance_id for i in in_scope))
    scenario = dataclasses.replace(scenario, engine=dataclasses.replace(options, scope=scope))
    recorded = run_once(scenario, spec, derive_seed(scenario.seed, 0), record=True, fleet=instances)
    results = run_study(
        scenario,
        spec,
        runs=runs,
        seed=scenario.seed,
        fleet=instances,
        workers=workers,
        dask=dask,
        progress=progress,
    )
    return {
        "waves": [list(w) for w in recorded.waves()],
        "simulation": summarize(spec, scenario.seed, results),
        "outage_runs": sum(r.outage_s > 0 for r in results),
        "assumed": assumed,
    }


# --------------------------------------------------------------------------- upgrade


class _Stopper:
    """First Ctrl-C or SIGTERM: stop after the waves in flight. A second Ctrl-C
    or SIGTERM: now (so a supervisor's second SIGTERM always ends the process)."""

    def __init__(self) -> None:
        self.requested = False
        #: the signal that stopped at once, as the journal's reason names it
        self.second = "Ctrl-C"

    def __call__(self) -> bool:
        return self.requested

    @contextmanager
    def installed(self) -> Iterator[None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self.requested:
                self.second = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
                raise KeyboardInterrupt
            self.requested = True
            output.stderr_console().print(
                "stopping after the instances in flight (Ctrl-C or SIGTERM again to stop at once)",
                style="yellow",
            )

        old_int = signal.signal(signal.SIGINT, handler)
        old_term = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


class _LiveView:
    """Heat map, progress and the latest events; a plain event log when not a TTY."""

    def __init__(
        self,
        backend: AzureBackend,
        scope: int,
        enabled: bool,
        *,
        clock: render.Clock | None = None,
        options: EngineOptions | None = None,
        stream: bool = False,
    ) -> None:
        self.backend = backend
        self.scope = scope
        self.done = 0
        self.failed = 0
        self.log: deque[str] = deque(maxlen=12)
        self.console = output.stderr_console()
        self.enabled = enabled and self.console.is_terminal
        self.quiet = not enabled
        self.live: Live | None = None
        #: elapsed, ETA and pause/bake countdown (the live view re-renders it 4x a second)
        self.clock = clock or render.Clock(None)
        self.options = options or EngineOptions()
        #: -o json: every event is a JSON line on stdout as it happens
        self.stream = stream

    def __rich__(self) -> Group:
        return self.render()

    def event(self, event: Event) -> None:
        self.clock.event(event, self.options.pause, self.options.bake)
        if self.stream:
            render.json_line(render.event_json(event, self.clock.time()))
        if event.kind is EventKind.INSTANCE_HEALTHY:
            self.done += 1
        elif event.kind in (EventKind.INSTANCE_FAILED, EventKind.INSTANCE_UNHEALTHY):
            self.failed += 1
        if event.kind in (EventKind.INSTANCE_UPGRADED,):
            return
        ids = " ".join(event.instances[:12]) + (" ..." if len(event.instances) > 12 else "")
        at = time.strftime("%H:%M:%S", time.localtime(self.clock.time()))
        line = f"{at} {event.kind.value} {ids} {event.detail}".rstrip()
        if event.kind in (EventKind.WAVE_STARTED, EventKind.CHECKPOINT, EventKind.WAVE_COMPLETED):
            line += f"  ({self.clock.line(self.done, self.scope)})"
        self.log.append(line)
        if self.live is not None:
            self.live.refresh()
        elif not self.quiet:
            self.console.print(line, soft_wrap=True, markup=False, highlight=False)

    def render(self) -> Group:
        instances = self.backend.known_instances()
        progress = Text(
            f"{self.done} of {self.scope} done, {self.failed} failed or unhealthy; "
            f"{self.clock.line(self.done, self.scope)}"
        )
        from ..backends import armjson

        flexible = armjson.is_flexible(self.backend.vmss_json)
        return Group(heat_maps(instances, flexible=flexible), progress, Text("\n".join(self.log)))

    @contextmanager
    def shown(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with Live(self, console=self.console, refresh_per_second=4) as live:
            self.live = live
            try:
                yield
            finally:
                self.live = None


def upgrade(
    resource_group: ResourceGroup,
    name: Name,
    strategy: Strategy,
    image_version: ImageVersion = None,
    image_sku: ImageSku = None,
    image_id: ImageId = None,
    image_uri: ImageUri = None,
    vm_size: VmSize = None,
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
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait",
            help="Update the model, start the first wave and return; continue with "
            "`vmss-rollout resume`.",
        ),
    ] = False,
    allow_automatic: Annotated[
        bool,
        typer.Option(
            "--allow-automatic",
            help="Accept that policy Automatic upgrades every instance at once.",
            rich_help_panel=AZURE_PANEL,
        ),
    ] = False,
    switch_to_manual: Annotated[
        bool,
        typer.Option(
            "--switch-to-manual",
            help="Policy Rolling: switch to Manual for the rollout and restore Rolling afterwards.",
            rich_help_panel=AZURE_PANEL,
        ),
    ] = False,
    take_over: Annotated[
        bool,
        typer.Option(
            "--take-over",
            help="Replace the lease of another rollout that is stopped or whose heartbeat "
            "expired (never a live one).",
            rich_help_panel=AZURE_PANEL,
        ),
    ] = False,
    poll_interval: PollEvery = "5:30",
    scenario_path: ScenarioFile = None,
    calibrated: Calibrated = False,
    journal: JournalPath = None,
    subscription: Subscription = None,
    arm_endpoint: ArmEndpoint = None,
    out: OutputFormat = None,
    query: Query = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Upgrade a scale set with a strategy: show the plan, confirm, update the
    model, run the waves with a live view, and journal every step.

    Ctrl-C (or SIGTERM) stops after the instances in flight and prints how to
    resume; a second one stops at once. One rollout per scale set: a lease on
    the scale set (a tag) and the journal refuse a second one while another is
    running or unfinished.

    The prompt shows the plan (predicted duration, lowest serving against demand,
    canary, bake); the live view shows elapsed time, an ETA from the plan and
    pause or bake countdowns. -o json (or --json) streams every event as a JSON
    line as it happens and ends with the summary object on the last line
    (--query prints only the summary, as one document).
    """
    flags = locals()
    output.check_output(out, json, query)
    spec = strategy.strip()
    registry.make(spec)
    options = _engine_options(flags)
    interval = _poll_interval(poll_interval)
    given = _given_timings(scenario_path, calibrated)
    backend = _backend(resource_group, name, subscription, arm_endpoint)
    scale_set, instances = backend.read()
    target = _target(scale_set.model, flags)
    timings = _timings(backend, given, calibrated, journal)
    _run_upgrade(
        backend,
        scale_set,
        instances,
        target,
        spec,
        options,
        interval,
        Journal(journal),
        yes=yes,
        no_wait=no_wait,
        allow_automatic=allow_automatic,
        switch_to_manual=switch_to_manual,
        json=json,
        take_over=take_over,
        out=out,
        query=query,
        timings=timings,
    )


def _run_upgrade(
    backend: AzureBackend,
    scale_set: Any,
    instances: list[Instance],
    target: ModelVersion,
    spec: str,
    options: EngineOptions,
    interval: Any,
    journal: Journal,
    *,
    yes: bool,
    no_wait: bool,
    allow_automatic: bool,
    switch_to_manual: bool,
    json: bool,
    resume: RolloutRecord | None = None,
    previous: ModelVersion | None = None,
    finishing_rollback: str | None = None,
    resumed: ResumePoint | None = None,
    take_over: bool = False,
    restore_rolling: bool = False,
    out: str | None = None,
    query: str | None = None,
    timings: tuple[Scenario | None, str | None] = (None, None),
) -> None:
    # -o json or its alias --json (no --query): events as JSON lines, then the
    # summary on one line
    fmt = output.output_format(out, json, query)
    stream = fmt == "json" and query is None
    json = fmt != "table"
    from ..backends.lease import LeaseInfo, check_may_take, holder_id
    from ..backends.upgrade import (
        UpgradeRequest,
        check_request,
        execute,
        is_noop,
        policy_action,
        summary,
    )

    request = UpgradeRequest(target, spec, options, allow_automatic, switch_to_manual, no_wait)
    # retries of failed calls back off from the poll interval's minimum
    backend.backoff = interval.minimum
    err = output.stderr_console()
    journal.on_warning = lambda text: err.print(f"warning: {text}", soft_wrap=True, markup=False)
    if resume is None:
        unfinished = journal.unfinished(backend.scale_set_id)
        if unfinished is not None:
            raise ActiveRolloutError(backend.scale_set_id, unfinished)
    # the lease first, read-only: a live or unfinished rollout of another operator
    # blocks even a target the model already has
    check_may_take(
        LeaseInfo.parse(backend.tags),
        resume.id if resume is not None else None,
        holder_id(),
        time.time(),
        where=backend.where,
        take_over=take_over,
        resuming=resume is not None,
    )
    if is_noop(scale_set, instances, target):
        if resume is not None:
            from ..backends.lease import release_abandoned

            if resume.unfinished:
                journal.finish(resume.id, "completed", "", backend.clock.time())
            release_abandoned(backend, resume.id, time.time())  # the lease: wall time
            if restore_rolling and scale_set.upgrade_mode is UpgradeMode.MANUAL:
                from ..backends.upgrade import restore_rolling as restore

                for note in restore(backend, backend.read_scale_set().etag, interval):
                    err.print(note, soft_wrap=True, markup=False)
        if json:
            _final(
                {
                    "scale_set": backend.scale_set_id,
                    "completed": True,
                    "noop": True,
                    "target": str(target),
                },
                out,
                query,
                stream,
            )
        else:
            err.print(f"nothing to do: {backend.where} already runs {target}", soft_wrap=True)
        return
    action = policy_action(scale_set, request)
    if resume is None:
        check_request(scale_set, instances, request)
    shown = not json or not yes
    # a person reads the prediction (prompt, live view's ETA): simulate a few runs
    # ... with the driver polling as this upgrade's will (the scenario's request
    # latency: timing calls, as plan does, would cost this upgrade a list call)
    preview = predict(
        instances,
        target,
        spec,
        options,
        timings[0],
        PROMPT_RUNS if shown else 1,
        origin=timings[1],
        poll=(interval.minimum, interval.maximum),
    )
    waves = preview["waves"]
    if shown:
        err.print(f"{backend.where}: {scale_set.model} -> {target}", soft_wrap=True)
        err.print(
            f"policy {scale_set.upgrade_mode.value} ({action}); health from "
            f"{backend.health_source}; {spec}: {len(waves)} waves "
            f"(first: {' '.join(waves[0]) if waves else '-'})",
            soft_wrap=True,
        )
        if preview["simulation"] is not None:
            for line in render.prompt_summary(preview, len(instances), options):
                err.print(line, soft_wrap=True, markup=False)
    if not yes:
        if not sys.stdin.isatty():
            raise InputError("confirmation needed: pass --yes to upgrade without a prompt")
        if not typer.confirm("Proceed?", default=False):
            err.print("nothing changed")
            raise typer.Exit(0)
    scope = len({i for w in waves for i in w})
    predicted = preview["simulation"]["duration_s"]["p50"] if preview["simulation"] else None
    view = _LiveView(
        backend,
        scope,
        enabled=not json,
        clock=render.Clock(predicted, backend.clock),
        options=options,
        stream=stream,
    )
    stopper = _Stopper()
    try:
        with stopper.installed(), view.shown():
            result = execute(
                backend,
                scale_set,
                instances,
                request,
                journal,
                listener=view.event,
                should_stop=stopper,
                interval=interval,
                resume=resume,
                previous=previous,
                finishing_rollback=finishing_rollback,
                resumed=resumed,
                take_over=take_over,
                warn=lambda text: err.print(f"warning: {text}", soft_wrap=True, markup=False),
                restore_rolling=restore_rolling,
            )
    except KeyboardInterrupt:
        record = journal.active(backend.scale_set_id)
        if record is not None:
            journal.mark_interrupted(
                record.id, f"stopped at once (second {stopper.second})", backend.clock.time()
            )
            err.print(f"stopped; continue with: vmss-rollout resume {record.id}")
        raise
    data = summary(result, dict(backend.counter.attempts))
    data["requests_total"] = backend.counter.total
    if json:
        _final(data, out, query, stream)
    else:
        o = result.outcome
        if result.started_only:
            err.print(
                f"started rollout {result.record.id}; follow with `vmss-rollout status "
                f"-g {backend.resource_group} -n {backend.name}`, continue with "
                f"`vmss-rollout resume {result.record.id}`",
                soft_wrap=True,
            )
        elif o.interrupted:
            err.print(
                f"stopped: {o.reason}; continue with: vmss-rollout resume {result.record.id}",
                soft_wrap=True,
            )
        else:
            record = result.record
            verdict = "completed" if record.state == "completed" else f"halted: {record.reason}"
            err.print(
                f"rollout {result.record.id} {verdict}: {o.upgraded} upgraded, "
                f"{o.failed + o.unhealthy} failed or unhealthy"
                + ("; rolled back" if o.rolled_back and "rolled back" not in verdict else ""),
                soft_wrap=True,
            )
        for note in result.notes:
            err.print(note, soft_wrap=True, markup=False)
        err.print(f"{backend.counter.total} ARM requests", soft_wrap=True)
    o = result.outcome
    if o.interrupted and not result.started_only:
        raise typer.Exit(130)
    if o.halted or o.failed or o.unhealthy or result.record.state == "halted":
        raise typer.Exit(1)


#: simulated runs behind the prompt's and the live view's prediction
PROMPT_RUNS = 20


def _final(data: dict[str, Any], out: str | None, query: str | None, stream: bool) -> None:
    """upgrade/resume's summary: the last JSON line of a stream, else as -o/--query say."""
    if stream:
        render.json_line(data)
    else:
        output.emit(data, output=out, query=query, json_alias=out is None)


# --------------------------------------------------------------------------- resume, history


#: resume and abandon: -g/-n pick the newest unfinished rollout of that scale set
RolloutGroup = Annotated[
    str | None,
    typer.Option(
        "--resource-group",
        "-g",
        help="With --name: the newest unfinished rollout of this scale set.",
        rich_help_panel=AZURE_PANEL,
    ),
]
RolloutName = Annotated[
    str | None,
    typer.Option("--name", "-n", help="Name of the scale set.", rich_help_panel=AZURE_PANEL),
]


def resume(
    rollout_id: Annotated[
        str | None, typer.Argument(metavar="[ROLLOUT-ID]", help="The rollout to continue.")
    ] = None,
    resource_group: RolloutGroup = None,
    name: RolloutName = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    poll_interval: PollEvery = "5:30",
    journal: JournalPath = None,
    subscription: Subscription = None,
    arm_endpoint: ArmEndpoint = None,
    out: OutputFormat = None,
    query: Query = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Continue a rollout from the journal and the live state: instances already
    on the target are not upgraded again (Azure is the source of truth).

    With -g/-n: the newest unfinished (running or interrupted) rollout of that
    scale set. Refuses (exit 2) a rollout another live process drives, a scale
    set deleted and re-created since (another uniqueId), and a live model that is
    neither the rollout's target nor its previous model: resuming never moves
    the model back to an older target. -o json (or --json) streams events as
    JSON lines, as upgrade does."""
    from ..backends.upgrade import driver_alive

    output.check_output(out, json, query)

    book = Journal(journal)
    record = _pick(book, rollout_id, resource_group, name, "resume")
    _check_resumable(book, record)
    refuse_live_driver(record, driver_alive, "wait for it")
    rg, vmss = _names_from_id(record.scale_set_id)
    backend = _backend(rg, vmss, subscription, arm_endpoint)
    scale_set, instances = backend.read()
    target = model_from_dict(record.target_model)
    previous = model_from_dict(record.previous_model)
    if record.unique_id and backend.unique_id and record.unique_id != backend.unique_id:
        raise InputError(
            f"{backend.where} is not the scale set rollout {record.id} changed: it was deleted "
            f"and re-created since (uniqueId {backend.unique_id}, journaled "
            f"{record.unique_id}); not resuming; end the record with "
            f"`vmss-rollout abandon {record.id}`"
        )
    if scale_set.model not in (target, previous):
        raise InputError(
            f"the model of {backend.where} is now {scale_set.model}, neither rollout "
            f"{record.id}'s target ({target}) nor its previous model: someone changed it since; "
            f"not resuming (that would move it back to an older target); end the record with "
            f"`vmss-rollout abandon {record.id}`"
        )
    options = EngineOptions.from_mapping(record.engine_options, "journal options")
    rollback = _rollback_reason(book, record)
    if rollback is not None:
        # it was rolling back: finish that, never re-apply the model that failed
        # (and, like the engine's own rollback phase, without the health gates:
        # the instances it must fix are the unhealthy ones)
        target = previous
        options = dataclasses.replace(
            options, on_failure="freeze", max_unhealthy=100.0, max_unhealthy_upgraded=100.0
        )
    from ..backends.resume import resume_point

    _run_upgrade(
        backend,
        scale_set,
        instances,
        target,
        record.strategy,
        options,
        _poll_interval(poll_interval),
        book,
        yes=yes,
        no_wait=False,
        allow_automatic=True,
        switch_to_manual=True,
        json=json,
        resume=record,
        previous=previous,
        finishing_rollback=rollback,
        # pacing and surge go on where the journal says they stopped
        resumed=resume_point(book, record),
        restore_rolling=_switched_to_manual(book, record),
        out=out,
        query=query,
    )


def _switched_to_manual(book: Journal, record: RolloutRecord) -> bool:
    """The rollout set policy Manual (--switch-to-manual) and has not restored Rolling."""
    from ..backends.upgrade import POLICY_RESTORED, POLICY_SWITCHED

    kinds = [e["kind"] for e in book.events(record.id)]
    return POLICY_SWITCHED in kinds and POLICY_RESTORED not in kinds


def _pick(
    book: Journal,
    rollout_id: str | None,
    resource_group: str | None,
    name: str | None,
    verb: str,
) -> RolloutRecord:
    """The rollout named, or the newest unfinished one of the scale set (else its
    newest rollout, for the message)."""
    if rollout_id:
        return book.get(rollout_id)
    if not (resource_group and name):
        raise InputError("give a ROLLOUT-ID, or -g RESOURCE-GROUP -n NAME")
    candidates = [
        r for r in book.history(None, limit=200) if _matches(r.scale_set_id, resource_group, name)
    ]
    if not candidates:
        raise InputError(f"no rollout of scale set {name} in {resource_group} in the journal")
    unfinished = [r for r in candidates if r.unfinished]
    if unfinished:
        return unfinished[0]
    latest = candidates[0]
    if verb == "abandon" or latest.state != "halted" or _rolled_back(book, latest):
        raise InputError(
            f"nothing to {verb}: scale set {name} in {resource_group} has no unfinished rollout "
            f"(the newest, {latest.id}, {_ended(book, latest)})"
        )
    return latest  # a frozen halt: resume retries what failed


def _rolled_back(book: Journal, record: RolloutRecord) -> bool:
    """A halted rollout whose rollback ran to its end."""
    return record.state == "halted" and (
        "rolled back" in record.reason or _rollback_reason(book, record) is not None
    )


def _ended(book: Journal, record: RolloutRecord) -> str:
    if _rolled_back(book, record):
        return f"was rolled back ({record.reason})"
    return {
        "completed": "completed",
        "abandoned": f"was abandoned{': ' + record.reason if record.reason else ''}",
        "failed": f"failed before changing anything: {record.reason}",
        "halted": f"halted: {record.reason}",
    }.get(record.state, record.state)


def _check_resumable(book: Journal, record: RolloutRecord) -> None:
    if record.unfinished:
        return
    if record.state == "halted" and not _rolled_back(book, record):
        return  # frozen: resume retries the instances that failed
    raise InputError(f"nothing to resume: rollout {record.id} {_ended(book, record)}")


def abandon(
    rollout_id: Annotated[
        str | None, typer.Argument(metavar="[ROLLOUT-ID]", help="The rollout to abandon.")
    ] = None,
    resource_group: RolloutGroup = None,
    name: RolloutName = None,
    journal: JournalPath = None,
    subscription: Subscription = None,
    arm_endpoint: ArmEndpoint = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """End an unfinished rollout without finishing it: mark it abandoned in the
    journal and release its lease on the scale set. Changes nothing else: the
    model and the instances stay as they are. With -g/-n: the newest unfinished
    rollout of that scale set. Refuses while a live process drives it."""
    from ..backends.lease import release_abandoned
    from ..backends.upgrade import driver_alive

    book = Journal(journal)
    record = _pick(book, rollout_id, resource_group, name, "abandon")
    if not record.unfinished and record.state != "halted":
        raise InputError(f"nothing to abandon: rollout {record.id} {_ended(book, record)}")
    refuse_live_driver(record, driver_alive, "stop it first (Ctrl-C), then abandon")
    rg, vmss = _names_from_id(record.scale_set_id)
    backend = _backend(rg, vmss, subscription, arm_endpoint)
    try:
        backend.read_scale_set()
    except InputError as exc:
        lease = f"no lease released ({exc})"
    else:
        if record.unique_id and backend.unique_id and record.unique_id != backend.unique_id:
            lease = "the scale set was re-created since: no lease of it to release"
        else:
            lease = release_abandoned(backend, record.id, time.time())  # the lease: wall time
    # the journal's time: the emulator's in a rehearsal, as the rollout's other times
    done = book.abandon(
        record.id, "abandoned by the operator", backend.clock.time(), is_alive=driver_alive
    )
    if json:
        output.print_json({"rollout": done.to_json(), "lease": lease})
        return
    output.stderr_console().print(
        f"rollout {record.id} abandoned ({lease}); the model and the instances were not changed",
        soft_wrap=True,
        markup=False,
    )


def _rollback_reason(book: Journal, record: RolloutRecord) -> str | None:
    """The halt that started a rollback this rollout did not finish, if any."""
    events = book.events(record.id)
    if not any(e["kind"] == EventKind.ROLLBACK_STARTED.value for e in events):
        return None
    halts = [e["detail"] for e in events if e["kind"] == EventKind.HALTED.value]
    return halts[0] if halts else record.reason or "halted"


def _names_from_id(scale_set_id: str) -> tuple[str, str]:
    parts = scale_set_id.split("/")
    lower = [p.lower() for p in parts]
    try:
        rg = parts[lower.index("resourcegroups") + 1]
        name = parts[lower.index("virtualmachinescalesets") + 1]
    except (ValueError, IndexError):
        raise InputError(f"journal: cannot read a scale set id from {scale_set_id!r}") from None
    return rg, name


def history(
    resource_group: Annotated[str | None, typer.Option("--resource-group", "-g")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n")] = None,
    journal: JournalPath = None,
    out: OutputFormat = None,
    query: Query = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Past and running rollouts from the journal, and the instance actions and
    scalings (`instances`, `scale`), newest first: target, state, ISO 8601
    start and end times (UTC) and duration."""
    output.check_output(out, json, query)
    book = Journal(journal)
    records = book.history(None, limit=200)
    operations = book.operations(None, limit=200)
    if resource_group or name:
        records = [r for r in records if _matches(r.scale_set_id, resource_group, name)]
        operations = [o for o in operations if _matches(o.scale_set_id, resource_group, name)]
    now = time.time()
    rows = [render.history_row(r.to_json(), now) for r in records]
    rows += [render.operation_row(o.to_json(), now) for o in operations]
    rows.sort(key=lambda row: row["started_at"], reverse=True)

    def scale_set(scale_set_id: str) -> str:
        return "/".join(_names_from_id(scale_set_id))

    output.emit(
        rows,
        output=out,
        query=query,
        json_alias=json,
        table=lambda: _print(lambda width: render.history_view(rows, scale_set, width)),
        rows=[{k: v for k, v in r.items() if k not in ("options",)} for r in rows],
    )


def _print(make: Callable[[int], Any]) -> None:
    """Print what ``make(console width)`` renders on stdout."""
    console = output.stdout_console()
    console.print(make(console.width), soft_wrap=True)


def _matches(scale_set_id: str, resource_group: str | None, name: str | None) -> bool:
    try:
        rg, vmss = _names_from_id(scale_set_id)
    except InputError:
        return False
    return (resource_group is None or rg.lower() == resource_group.lower()) and (
        name is None or vmss.lower() == name.lower()
    )


# --------------------------------------------------------------------------- instance actions

#: action -> (backend method, what the instance looks like when it is done)
ACTIONS: dict[str, tuple[str, Callable[[Instance], bool]]] = {
    "start": ("start", lambda i: i.power is PowerState.RUNNING),
    "restart": ("restart", lambda i: i.power is PowerState.RUNNING),
    "power-off": ("power_off", lambda i: i.power is PowerState.STOPPED),
    "deallocate": ("deallocate", lambda i: i.power is PowerState.DEALLOCATED),
    "reimage": ("reimage", lambda i: i.provisioning is ProvisioningState.SUCCEEDED),
    # done when the instance is gone from the list (still listed: Deleting)
    "delete": ("delete_instances", lambda i: False),
}


Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Return once requested.")]


@contextmanager
def journaled(
    book: Journal,
    backend: AzureBackend,
    action: str,
    request: Mapping[str, Any],
    instances: list[str],
) -> Iterator[dict[str, Any]]:
    """Journal an operator command that is not a rollout (``instances ACTION``,
    ``scale``): recorded as running before the request, ended when the block
    ends: ``completed``, or what the caller sets in the yielded dict
    (``state``, ``result``, ``instances``); an exception ends it ``failed``
    with its message, Ctrl-C or SIGTERM ``interrupted``. ``history`` shows it.
    Times are the backend's clock (the emulator's in a rehearsal), as a
    rollout's are."""
    from ..backends.lease import holder_id

    record = book.start_operation(
        scale_set_id=backend.scale_set_id,
        action=action,
        request=request,
        instances=instances,
        now=backend.clock.time(),
        driver=holder_id(),
    )
    outcome: dict[str, Any] = {"id": record.id}

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        yield outcome
    except KeyboardInterrupt:
        book.finish_operation(
            record.id, "interrupted", backend.clock.time(), reason="stopped before it was done"
        )
        raise
    except Exception as exc:
        book.finish_operation(
            record.id, "failed", backend.clock.time(), reason=" ".join(str(exc).split())
        )
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
    book.finish_operation(
        record.id,
        outcome.get("state", "completed"),
        backend.clock.time(),
        result=outcome.get("result"),
        instances=outcome.get("instances"),
    )


def confirm(what: str, prompt: str) -> None:
    """Ask ``prompt`` on a terminal (no: exit 0, nothing changed); without one,
    refuse with exit 2 naming --yes."""
    if not sys.stdin.isatty():
        raise InputError(f"confirmation needed: pass --yes to {what}")
    if not typer.confirm(prompt, default=False):
        output.stderr_console().print("nothing changed")
        raise typer.Exit(0)


def instances(
    action: Annotated[str, typer.Argument(metavar="ACTION", help=f"One of: {', '.join(ACTIONS)}.")],
    resource_group: ResourceGroup,
    name: Name,
    only_instances: OnlyInstances = None,
    only_update_domains: OnlyUpdateDomains = None,
    only_fault_domains: OnlyFaultDomains = None,
    only_zones: OnlyZones = None,
    every: Annotated[bool, typer.Option("--all", help="Every instance of the scale set.")] = False,
    yes: Yes = False,
    no_wait: NoWait = False,
    poll_interval: PollEvery = "5:30",
    timeout: WaitTimeout = "1h",
    journal: JournalPath = None,
    subscription: Subscription = None,
    arm_endpoint: ArmEndpoint = None,
    out: OutputFormat = None,
    query: Query = None,
    json: Json = False,
    debug: Debug = False,
) -> None:
    """Start, restart, power off, deallocate, reimage or delete selected
    instances, or a whole update domain, fault domain or zone (what the old
    scale-set editor did per domain and per VM), then wait until they are done.
    Deleting lowers the scale set's capacity by the instances deleted. The
    journal records each action (`vmss-rollout history` shows it)."""
    output.check_output(out, json, query)
    if action not in ACTIONS:
        raise InputError(f"unknown action {action!r} (valid: {', '.join(ACTIONS)})")
    flags = locals()
    scope = _engine_options(flags).scope
    if scope.is_everything and not every:
        raise InputError(
            "choose instances with --only-instances/--only-update-domains/"
            "--only-fault-domains/--only-zones, or --all"
        )
    interval = _poll_interval(poll_interval)
    wait_s = parse_duration(timeout, "--timeout")
    backend = _backend(resource_group, name, subscription, arm_endpoint)
    scale_set, fleet = backend.read()
    from ..backends.upgrade import check_fault_domains

    check_fault_domains(scale_set, "", scope)
    check_scope(scope, fleet)
    ids = [
        i.instance_id
        for i in fleet
        if scope.covers(i.instance_id, i.update_domain, i.fault_domain, i.zone)
    ]
    err = output.stderr_console()
    if not ids:
        raise InputError("the filters select no instance")
    book = Journal(journal)  # a journal that cannot be written refuses before any change
    if not yes:
        confirm(
            f"{action} {len(ids)} instances",
            f"{action} {len(ids)} instances ({' '.join(ids[:20])}"
            f"{' ...' if len(ids) > 20 else ''})?",
        )
    with journaled(book, backend, action, {"instances": ids}, ids) as journaled_as:
        result = _act(backend, action, ids, no_wait, interval, wait_s)
        journaled_as["state"] = "requested" if no_wait else "completed"
        journaled_as["result"] = {k: result[k] for k in ("capacity",) if k in result}
    result["operation"] = journaled_as["id"]

    def text() -> None:
        err.print(
            f"{action}: {len(ids)} instances {'requested' if no_wait else 'done'} "
            f"({backend.counter.total} ARM requests)"
            + (f"; capacity now {result['capacity']}" if "capacity" in result else "")
            + f"; journaled as {journaled_as['id']}",
            soft_wrap=True,
        )

    output.emit(
        result,
        output=out,
        query=query,
        json_alias=json,
        table=text,
        rows=[{"action": action, "instance_id": i} for i in ids],
    )


def _act(
    backend: AzureBackend,
    action: str,
    ids: list[str],
    no_wait: bool,
    interval: Any,
    timeout_s: float,
) -> dict[str, Any]:
    """Ask Azure for ``action`` on ``ids``, then (unless ``no_wait``) wait
    until they are done; ``instances``' JSON result."""
    method, finished = ACTIONS[action]
    getattr(backend, method)(ids)
    waiting = set(ids)

    def done() -> bool:
        nonlocal waiting
        current = {i.instance_id: i for i in backend.list_instances()}
        waiting = {
            i
            for i in waiting
            if i in current
            and (current[i].provisioning is ProvisioningState.UPDATING or not finished(current[i]))
        }
        return not waiting

    if not no_wait:
        wait_for(
            backend,
            interval,
            timeout_s,
            done,
            lambda: f"{action} not done on {' '.join(sorted(waiting, key=instance_sort_key))}",
        )
    result = {
        "action": action,
        "instances": ids,
        "waited": not no_wait,
        "requests": dict(backend.counter.attempts),
    }
    if action == "delete" and not no_wait:
        result["capacity"] = backend.read_scale_set().capacity
    return result


COMMANDS: tuple[Callable[..., None], ...] = (
    status,
    plan,
    upgrade,
    resume,
    abandon,
    history,
    instances,
)
