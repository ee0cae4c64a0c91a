"""``vmss-rollout scale``: set a scale set's capacity (what the old scale-set
editor's scale in/out did), with the confirmation and wait of ``instances``."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from ..backends.journal import Journal
from ..engine.errors import InputError
from ..engine.model import ProvisioningState, instance_sort_key
from ..engine.options import parse_duration
from . import output
from .operate import (
    ArmEndpoint,
    JournalPath,
    Name,
    NoWait,
    PollEvery,
    ResourceGroup,
    Subscription,
    WaitTimeout,
    Yes,
    _backend,
    _poll_interval,
    confirm,
    journaled,
    wait_for,
)
from .options import Debug, Json
from .output import OutputFormat, Query

#: instances a Uniform scale set holds: 100 in a single placement group (the
#: default, singlePlacementGroup true), 1000 otherwise; a Flexible set 1000
#: (MicrosoftDocs azure-compute-docs, virtual-machine-scale-sets-placement-groups.md
#: and the ListSkus capacity.maximum the emulator answers with)
SINGLE_PLACEMENT_GROUP_MAX = 100
MAX_CAPACITY = 1000


def capacity_limit(vmss: dict[str, Any], flexible: bool) -> tuple[int, str]:
    """The most instances the scale set may hold, and why."""
    props = vmss.get("properties") or {}
    single = props.get("singlePlacementGroup", props.get("single_placement_group"))
    if not flexible and (single is None or single is True or str(single).lower() == "true"):
        return SINGLE_PLACEMENT_GROUP_MAX, "a single placement group (singlePlacementGroup true)"
    return MAX_CAPACITY, "Azure's limit per scale set"


def scale_in_policy(vmss: dict[str, Any]) -> str:
    """What Azure does on a scale-in, by the set's scaleInPolicy (Microsoft docs,
    virtual-machine-scale-sets-scale-in-policy)."""
    props = vmss.get("properties") or {}
    policy = props.get("scaleInPolicy") or props.get("scale_in_policy") or {}
    rules = policy.get("rules") or ["Default"]
    rule = str(rules[0])
    if rule == "NewestVM":
        return "Azure deletes the newest instances (scaleInPolicy NewestVM), balanced across zones"
    if rule == "OldestVM":
        return "Azure deletes the oldest instances (scaleInPolicy OldestVM), balanced across zones"
    return (
        "Azure picks the instances to delete (scaleInPolicy Default: balance zones, then "
        "fault domains, then the highest instance ids); protected instances are never picked"
    )


def scale(
    resource_group: ResourceGroup,
    name: Name,
    capacity: Annotated[
        int,
        typer.Option(
            "--capacity",
            "-c",
            metavar="N",
            help="New instance count (sku.capacity); Azure picks the instances a scale-in deletes.",
        ),
    ],
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
    """Scale a scale set out or in to --capacity instances, then wait until the
    new ones are provisioned or the removed ones are gone. On a scale-in Azure
    chooses which instances go (its scaleInPolicy); to choose them yourself, use
    `vmss-rollout instances delete`. The journal records it (`vmss-rollout
    history` shows it)."""
    output.check_output(out, json, query)
    if capacity < 0:
        raise InputError(f"--capacity: must be 0 or more, got {capacity}")
    if capacity > MAX_CAPACITY:
        raise InputError(
            f"--capacity: {capacity} is above Azure's limit of {MAX_CAPACITY} instances "
            "per scale set"
        )
    interval = _poll_interval(poll_interval)
    wait_s = parse_duration(timeout, "--timeout")
    backend = _backend(resource_group, name, subscription, arm_endpoint)
    scale_set = backend.read_scale_set()
    limit, why = capacity_limit(backend.vmss_json, scale_set.flexible)
    if capacity > limit:
        raise InputError(f"--capacity: {capacity} is above {limit}, the most in {why}")
    before = sorted((i.instance_id for i in backend.list_instances()), key=instance_sort_key)
    current = len(before)
    err = output.stderr_console()
    if capacity == scale_set.capacity and capacity == current:
        raise InputError(f"{backend.where} already has capacity {capacity}: nothing to do")
    what = f"scale {backend.where} from {current} to {capacity} instances"
    note = scale_in_policy(backend.vmss_json) if capacity < current else ""
    book = Journal(journal)  # a journal that cannot be written refuses before any change
    if not yes:
        if note and sys.stdin.isatty():
            err.print(note, soft_wrap=True, markup=False)
        confirm(what, f"{what}?")
    request = {"capacity": capacity, "previous": current}
    with journaled(book, backend, "scale", request, []) as journaled_as:
        result = _resize(backend, capacity, before, no_wait, interval, note, wait_s)
        added, removed = result["added"], result["removed"]
        journaled_as["state"] = "requested" if no_wait else "completed"
        journaled_as["result"] = {"added": added, "removed": removed}
        journaled_as["instances"] = added + removed
    result["operation"] = journaled_as["id"]

    def text() -> None:
        changed = (
            f"added {' '.join(added) or '-'}"
            if capacity >= current
            else f"removed {' '.join(removed) or '-'}"
        )
        err.print(
            f"scale: {current} -> {capacity} instances "
            f"{'requested' if no_wait else 'done'}; {changed} "
            f"({backend.counter.total} ARM requests); journaled as {journaled_as['id']}",
            soft_wrap=True,
        )

    output.emit(result, output=out, query=query, json_alias=json, table=text)


def _resize(
    backend: Any,
    capacity: int,
    before: list[str],
    no_wait: bool,
    interval: Any,
    note: str,
    timeout_s: float,
) -> dict[str, Any]:
    """Set the capacity, then (unless ``no_wait``) wait until it settles, at
    most ``timeout_s``; ``scale``'s JSON result (``note``: what Azure does on a
    scale-in)."""
    current = len(before)
    backend.set_capacity(capacity)
    instances = backend.list_instances()

    def settled() -> bool:
        nonlocal instances
        instances = backend.list_instances()
        return _settled(instances, capacity)

    if not no_wait and not _settled(instances, capacity):
        wait_for(
            backend,
            interval,
            timeout_s,
            settled,
            lambda: f"{len(instances)} instances, not yet a settled {capacity}",
        )
    after = sorted((i.instance_id for i in instances), key=instance_sort_key)
    added = [i for i in after if i not in before]
    removed = [i for i in before if i not in after]
    result = {
        "scale_set": backend.scale_set_id,
        "capacity": capacity,
        "previous": current,
        "added": added,
        "removed": removed,
        "waited": not no_wait,
        "scale_in_policy": note or None,
        "requests": dict(backend.counter.attempts),
    }
    return result


def _settled(instances: list[Any], capacity: int) -> bool:
    """``capacity`` instances, none being created or deleted (overprovisioned
    extras are created and deleted by the platform before it ends)."""
    busy = (ProvisioningState.CREATING, ProvisioningState.DELETING)
    return len(instances) == capacity and not any(i.provisioning in busy for i in instances)
