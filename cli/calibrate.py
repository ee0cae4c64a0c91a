"""``vmss-rollout calibrate``: a scenario fitted from a scale set's journaled rollouts
(``backends/calibrate.py`` does the fitting)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..backends.journal import Journal
from ..engine.errors import BackendError, InputError
from . import output
from .operate import (
    ArmEndpoint,
    JournalPath,
    Name,
    ResourceGroup,
    Subscription,
    _backend,
    _poll_interval,
)
from .options import Debug

if TYPE_CHECKING:
    from ..backends.azure import AzureBackend
    from ..backends.calibrate import History
    from ..sim.scenario import Scenario

Since = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="DATE",
        help="Only rollouts started at or after this ISO date or date-time (UTC).",
    ),
]
JournaledPoll = Annotated[
    str | None,
    typer.Option(
        "--poll-interval",
        metavar="MIN[:MAX]",
        help="The poll interval the journaled rollouts used, where the journal does not "
        "record it. Default: 5:30, upgrade's default.",
    ),
]


def calibration(
    backend: AzureBackend,
    journal: str | None,
    since: str | None = None,
    poll_interval: str | None = None,
) -> tuple[str, Scenario, int]:
    """The calibrated scenario's TOML, the scenario, and how many rollouts it
    was fitted from (0: Azure's own figures or the defaults)."""
    text, scenario, fitted, _ = calibration_with_history(backend, journal, since, poll_interval)
    return text, scenario, fitted


def calibration_with_history(
    backend: AzureBackend,
    journal: str | None,
    since: str | None = None,
    poll_interval: str | None = None,
) -> tuple[str, Scenario, int, History]:
    """:func:`calibration` and the journal's observations it fitted."""
    from ..backends.calibrate import (
        azure_figures,
        calibrated_scenario,
        observations,
        parse_since,
    )

    after = parse_since(since)
    poll = None
    if poll_interval is not None:
        parsed = _poll_interval(poll_interval)
        poll = (parsed.minimum, parsed.maximum)
    scale_set, instances = backend.read()
    history = observations(Journal(journal), backend.scale_set_id, since=after, poll_interval=poll)
    figures = None
    if not history.upgrade:
        # no journaled history: Azure's own records, coarse (duration per batch)
        notes, runs, latest = [], [], None
        try:
            runs = backend.os_upgrade_history()
        except (InputError, BackendError) as exc:
            notes.append(f"# Azure: osUpgradeHistory unavailable ({exc})")
        try:
            latest = backend.rolling_upgrade_status()
        except (InputError, BackendError) as exc:
            notes.append(f"# Azure: rollingUpgrades/latest unavailable ({exc})")
        policy = scale_set.rolling_policy
        figures = azure_figures(
            latest,
            runs,
            policy.max_batch_instance_percent,
            max(1, len(instances)),
            policy.pause_time_between_batches,
        )
        figures.notes[:0] = notes
    text, scenario = calibrated_scenario(
        history,
        name=scale_set.name,
        instances=instances,
        upgrade_policy=scale_set.upgrade_mode.value,
        scale_set_id=backend.scale_set_id,
        azure=figures,
    )
    return text, scenario, len(history.rollouts) if history.upgrade else 0, history


def calibrate(
    resource_group: ResourceGroup,
    name: Name,
    journal: JournalPath = None,
    since: Since = None,
    out_file: Annotated[
        str | None,
        typer.Option("--out-file", metavar="FILE", help="Write the scenario here, not stdout."),
    ] = None,
    poll_interval: JournaledPoll = None,
    report: Annotated[
        str | None,
        typer.Option(
            "--report",
            metavar="FILE.html",
            help="Also write an HTML page showing each fit: the empirical CDF band of the "
            "interval-censored observations against the fitted CDFs, with every candidate's "
            "log L and AIC (needs pip install 'vmss-rollout[plot]').",
        ),
    ] = None,
    subscription: Subscription = None,
    arm_endpoint: ArmEndpoint = None,
    debug: Debug = False,
) -> None:
    """Print a scenario TOML fitted from the journaled rollouts of a scale set:
    upgrade-time and health-delay distributions (interval-censored maximum
    likelihood, chosen by AIC), failure and unhealthy rates, the live topology.
    Changes nothing. Use it with `simulate FILE` or `plan --calibrated`;
    --report FILE.html draws each fit."""
    if report is not None:  # a bad suffix or no matplotlib: refused before any work
        from .plotting import check_chart_paths

        check_chart_paths(None, Path(report))
    backend = _backend(resource_group, name, subscription, arm_endpoint)
    text, _, _, history = calibration_with_history(backend, journal, since, poll_interval)
    if report is not None:
        from .calibration_report import write_calibration_report

        write_calibration_report(
            Path(report),
            history=history,
            toml=text,
            title=f"calibration of {backend.where}",
        )
        output.stderr_console().print(f"wrote {report}", soft_wrap=True, markup=False)
    if out_file is None:
        sys.stdout.write(text)
        return
    try:
        Path(out_file).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--out-file {out_file}: {exc.strerror or exc}") from None
