"""``vmss-rollout emulate``: serve a simulated scale set over the Azure Compute
REST API (HTTPS on loopback), for the real Azure SDK and CLI tools.

The command is registered by ``cli/app.py``; ``main`` runs it on its own (it is
what ``python -m vmss_rollout.emulator`` calls). The server and its
dependencies (starlette, uvicorn, trustme) are imported only when it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..engine.errors import InputError
from ..sim.scenario import load_scenario
from .options import (
    BadImage,
    Debug,
    FailureRate,
    FaultDomains,
    HealthDelay,
    Instances,
    ScenarioFile,
    ScenarioPath,
    Seed,
    UnhealthyRate,
    UpdateDomains,
    UpgradeTime,
    Zones,
    apply_scenario_overrides,
    flag_errors,
    scenario_file,
)

EMULATOR_EXTRA_MESSAGE = "emulate needs the emulator extra: pip install 'vmss-rollout[emulator]'"
SERVER_PANEL = "Server"
FAULTS_PANEL = "Injected faults"
RESOURCE_PANEL = "Resource names"

#: fault knob -> the flag that sets it (error messages name the flag)
FAULT_FLAGS = {
    "throttle_rate": "--throttle-rate",
    "throttle_retry_after": "--throttle-retry-after",
    "error_rate": "--error-rate",
    "latency": "--latency",
    "lro_failure_rate": "--lro-failure-rate",
    "lro_retry_after": "--retry-after",
    "concurrent_change_after": "--concurrent-change-after",
    "conflict_rate": "--conflict-rate",
    "concurrent_change_kind": "--concurrent-change-kind",
}


def emulate(
    scenario_arg: ScenarioPath = None,
    scenario_path: ScenarioFile = None,
    port: Annotated[
        int,
        typer.Option(
            "--port",
            help="TCP port to listen on; 0 picks a free one (printed once listening).",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = 8443,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to bind. Anything but loopback lets other machines use the "
            "emulator's API (with a token from its identity endpoint, whose secret is printed "
            "here): keep the default unless you need it.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = "127.0.0.1",
    time_scale: Annotated[
        float,
        typer.Option(
            "--time-scale",
            metavar="X",
            help="Simulated seconds per real second (60: a 4-minute upgrade takes 4 s).",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = 60.0,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            metavar="PATH",
            help="Also write the environment (and port, names) as JSON to PATH once "
            "listening (mode 0600: it holds the identity secret).",
            show_default=False,
            dir_okay=False,
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            metavar="DIR",
            help="Where to write the generated CA and server certificate. "
            "Default: a new private temporary directory.",
            show_default=False,
            file_okay=False,
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    page_size: Annotated[
        int,
        typer.Option(
            "--page-size",
            help="Instances per page of the virtualMachines list (nextLink paging).",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = 50,
    health_extension: Annotated[
        bool,
        typer.Option(
            "--health-extension/--no-health-extension",
            help="Configure the Application Health extension (instances report vmHealth).",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = True,
    overprovision: Annotated[
        bool,
        typer.Option(
            "--overprovision/--no-overprovision",
            help="The scale set's overprovision property (on by default for Uniform sets, "
            "as in Azure): a scale-out creates 20% more instances than asked for and "
            "deletes the extras once the asked-for ones are provisioned.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = True,
    upgrade_policy: Annotated[
        str | None,
        typer.Option(
            "--upgrade-policy",
            metavar="MODE",
            help="upgradePolicy.mode: Manual, Automatic or Rolling. Default: the scenario's.",
            show_default=False,
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    orchestration: Annotated[
        str | None,
        typer.Option(
            "--orchestration",
            metavar="MODE",
            help="orchestrationMode: Uniform or Flexible (members are plain VMs named "
            "<scale set>_<8 hex>, listed through Microsoft.Compute/virtualMachines with a "
            "virtualMachineScaleSet/id filter; no update domains; fault domains 1, or 1 to 3 "
            "regional; fixed at creation). Default: the scenario's \\[scale_set] "
            "orchestration (Uniform).",
            show_default=False,
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    protected_instances: Annotated[
        str | None,
        typer.Option(
            "--protected-instances",
            metavar="IDS",
            help="Instances protected from scale-set actions (comma-separated ids): their "
            "protectionPolicy says so, scale-set actions naming them are refused and the "
            "platform's upgrades skip them. Default: the scenario's "
            "\\[scale_set] protected_instances.",
            show_default=False,
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    throttle_rate: Annotated[
        float | None,
        typer.Option(
            "--throttle-rate",
            metavar="P",
            help="Probability that an ARM request answers 429 with Retry-After.",
            show_default=False,
            rich_help_panel=FAULTS_PANEL,
        ),
    ] = None,
    throttle_retry_after: Annotated[
        float | None,
        typer.Option(
            "--throttle-retry-after",
            metavar="S",
            help="Retry-After of a 429 in seconds (fractions are sent as retry-after-ms). "
            "Default: 1.",
            show_default=False,
            rich_help_panel=FAULTS_PANEL,
        ),
    ] = None,
    error_rate: Annotated[
        float | None,
        typer.Option(
            "--error-rate",
            metavar="P",
            help="Probability that an ARM request answers 500 or 503.",
            show_default=False,
            rich_help_panel=FAULTS_PANEL,
        ),
    ] = None,
    latency: Annotated[
        float | None,
        typer.Option(
            "--latency",
            metavar="S",
            help="Real seconds added to every ARM request.",
            show_default=False,
            rich_help_panel=FAULTS_PANEL,
        ),
    ] = None,
    lro_failure_rate: Annotated[
        float | None,
        typer.Option(
            "--lro-failure-rate",
            metavar="P",
            help="Probability that a long-running operation ends Failed.",
            show_default=False,
            rich_help_panel=FAULTS_PANEL,
        ),
    ] = None,
    retry_after: Annotated[
        float | None,
        typer.Option(
            "--retry-after",
            metavar="S",
            help="Retry-After of long-running operations, in seconds. Default: 1.",
            show_default=False,
            rich_help_panel=FAULTS_PANEL,
        ),
    ] = None,
    concurrent_change_after: Annotated[
        int | None,
        typer.Option(
            "--concurrent-change-after",
            metavar="N",
            help="After the N-th manualupgrade request, change the model's tags (and etag) "
            "as another client would.",
            show_default=False,
            rich_help_panel=FAULTS_PANEL,
        ),
    ] = None,
    concurrent_change_kind: Annotated[
        str | None,
        typer.Option(
            "--concurrent-change-kind",
            metavar="KIND",
            help="What --concurrent-change-after changes: tags (default), or extension (adds "
            "one, as Azure Policy or Defender would: every instance's latestModelApplied "
            "turns false).",
            show_default=False,
            rich_help_panel=FAULTS_PANEL,
        ),
    ] = None,
    conflict_rate: Annotated[
        float | None,
        typer.Option(
            "--conflict-rate",
            metavar="P",
            help='Probability that a write answers 409 Conflict ("conflict with a concurrent '
            "request\"), as other clients' requests would make it. Overlapping writes to the "
            "scale set model get 409 whatever this says.",
            show_default=False,
            rich_help_panel=FAULTS_PANEL,
        ),
    ] = None,
    subscription: Annotated[
        str,
        typer.Option("--subscription", help="Subscription id.", rich_help_panel=RESOURCE_PANEL),
    ] = "00000000-0000-0000-0000-000000000000",
    resource_group: Annotated[
        str,
        typer.Option(
            "--resource-group", "-g", help="Resource group name.", rich_help_panel=RESOURCE_PANEL
        ),
    ] = "vmss-rollout-rg",
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            "-n",
            help="Scale set name. Default: the scenario's name.",
            show_default=False,
            rich_help_panel=RESOURCE_PANEL,
        ),
    ] = None,
    location: Annotated[
        str,
        typer.Option("--location", help="Azure region.", rich_help_panel=RESOURCE_PANEL),
    ] = "westeurope",
    seed: Seed = None,
    instances: Instances = None,
    update_domains: UpdateDomains = None,
    fault_domains: FaultDomains = None,
    zones: Zones = None,
    upgrade_time: UpgradeTime = None,
    health_delay: HealthDelay = None,
    failure_rate: FailureRate = None,
    unhealthy_rate: UnhealthyRate = None,
    bad_image: BadImage = None,
    debug: Debug = False,
) -> None:
    """Serve a simulated scale set over the Azure Compute REST API (HTTPS, loopback).

    The real azure-mgmt-compute SDK and azure-identity's DefaultAzureCredential work
    against it unchanged: export the printed environment, then build
    `ComputeManagementClient(DefaultAzureCredential(), $AZURE_SUBSCRIPTION_ID,
    base_url=$VMSS_ROLLOUT_ARM_ENDPOINT)`. Simulated time runs --time-scale times
    faster than real time. The scenario's \\[faults] apply (a bad image makes every
    model but the initial one unhealthy); the flags below add API faults, also
    switchable at run time with POST /_emulator/faults. Request counts:
    GET /_emulator/requests.
    """
    if not 0 <= port <= 65535:
        raise InputError(f"--port: expected 0 to 65535, got {port}")
    if not time_scale > 0 or time_scale == float("inf"):
        raise InputError(f"--time-scale: expected a number > 0, got {time_scale:g}")
    if not 1 <= page_size <= 1000:
        raise InputError(f"--page-size: expected a whole number from 1 to 1000, got {page_size}")
    scenario = load_scenario(scenario_file(scenario_path, scenario_arg))
    scenario = apply_scenario_overrides(
        scenario,
        {
            "seed": seed,
            "instances": instances,
            "update_domains": update_domains,
            "fault_domains": fault_domains,
            "zones": zones,
            "upgrade": upgrade_time,
            "health_delay": health_delay,
            "upgrade_failure": failure_rate,
            "unhealthy_after_upgrade": unhealthy_rate,
            "bad_image": bad_image,
        },
    )
    if upgrade_policy is not None:
        with flag_errors({"scale_set.upgrade_policy": "--upgrade-policy"}, anywhere=True):
            scenario = scenario.with_overrides(upgrade_policy=upgrade_policy)
    if orchestration is not None:
        renames = {"scale_set.orchestration": "--orchestration"}
        if fault_domains is not None:
            renames["scale_set.fault_domains"] = "--fault-domains"
        with flag_errors(renames, anywhere=True):
            scenario = scenario.with_overrides(orchestration=orchestration)
    if protected_instances is not None:
        with flag_errors({"scale_set.protected_instances": "--protected-instances"}, anywhere=True):
            scenario = scenario.with_overrides(protected_instances=protected_instances)
    try:
        from ..emulator.operations import Faults
        from ..emulator.server import EmulatorConfig, serve
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("starlette", "uvicorn", "trustme"):
            raise InputError(EMULATOR_EXTRA_MESSAGE) from None
        raise
    with flag_errors(FAULT_FLAGS):
        faults = Faults.from_scenario(
            scenario,
            throttle_rate=throttle_rate,
            throttle_retry_after=throttle_retry_after,
            error_rate=error_rate,
            latency=latency,
            lro_failure_rate=lro_failure_rate,
            lro_retry_after=retry_after,
            concurrent_change_after=concurrent_change_after,
            conflict_rate=conflict_rate,
            concurrent_change_kind=concurrent_change_kind,
        )
    # the scale set's own checks (a zonal fault-domain count Azure does not allow,
    # protected ids it does not have) name the flags when the flags set them
    given = {"scale_set.fault_domains": "--fault-domains"} if fault_domains is not None else {}
    if protected_instances is not None:
        given["scale_set.protected_instances"] = "--protected-instances"
    with flag_errors(given, anywhere=True):
        serve(
            EmulatorConfig(
                scenario,
                host=host,
                port=port,
                time_scale=time_scale,
                page_size=page_size,
                health_extension=health_extension,
                overprovision=overprovision,
                faults=faults,
                subscription=subscription,
                resource_group=resource_group,
                name=name,
                location=location,
                env_file=env_file,
                state_dir=state_dir,
            )
        )


def main(argv: list[str] | None = None) -> None:
    """Run ``emulate`` as a program of its own (``python -m vmss_rollout.emulator``):
    invalid input is one line on stderr and exit code 2, as in ``vmss-rollout``."""
    from . import output

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(emulate)
    try:
        app(args=argv, prog_name="python -m vmss_rollout.emulator")
    except InputError as exc:
        output.print_error(output.stderr_console(), str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
