"""The built-in strategies. Each is a frozen dataclass whose fields are its
parameters; each states its guarantee (most in-scope instances down at once).

All of them pick from the front of the engine's ordered pending sets, so one
decision costs O(wave size + number of domains), never O(instances).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ..engine.errors import InputError
from ..engine.options import Amount, EngineOptions
from .base import DomainKind, Duration, InstanceInfo, StrategyBase, View


def _take(pending: Mapping[str, InstanceInfo], n: int) -> list[str]:
    return list(islice(pending, max(0, n)))


def _parse_order(text: str, key: str) -> tuple[str, tuple[str, ...]]:
    """``asc``, ``desc`` or an explicit list ``3/1/0`` (unlisted domains follow, ascending)."""
    t = text.strip().lower()
    if t in ("asc", "desc"):
        return t, ()
    items = tuple(p.strip() for p in text.replace(";", "/").split("/") if p.strip())
    if not items:
        raise InputError(f"{key}: expected asc, desc or a list like 2/0/1, got {text!r}")
    return "list", items


def _ordered(domains: Iterable[Any], order: str, key: str) -> list[Any]:
    present = sorted(domains)
    mode, items = _parse_order(order, key)
    if mode == "asc":
        return present
    if mode == "desc":
        return present[::-1]
    by_text = {str(d): d for d in present}
    first = [by_text[i] for i in items if i in by_text]
    return first + [d for d in present if d not in first]


@dataclass(frozen=True)
class _OneDomainAtATime(StrategyBase):
    """Lock-step over domains of one kind: start every pending instance of the
    first domain (in ``order``) and nothing else until it is resolved."""

    order: str = field(default="asc", metadata={"help": "asc, desc, or a list such as 2/0/1"})
    kind: DomainKind = field(default="update_domain", init=False, repr=False)

    def __post_init__(self) -> None:
        _parse_order(self.order, f"{self.name}:order")

    @property
    def domain_kind(self) -> DomainKind:
        return self.kind

    def next_wave(self, view: View) -> Sequence[str]:
        if view.in_flight:
            return []
        domains = _ordered(view.pending_domains(self.kind), self.order, f"{self.name}:order")
        if not domains:
            return []
        return list(view.pending_in(self.kind, domains[0]))

    def max_down(self, scope: Sequence[InstanceInfo], fleet_size: int) -> int:
        sizes = Counter(i.domain(self.kind) for i in scope)
        return max(sizes.values(), default=0)

    def guarantee(self) -> str:
        label = self.kind.replace("_", " ")
        return f"at most one {label} down at once (its instances in scope)"


@dataclass(frozen=True)
class OneAtATime(StrategyBase):
    name = "one-at-a-time"
    summary = "Upgrade a single instance at a time, in instance-id order."

    def next_wave(self, view: View) -> Sequence[str]:
        return [] if view.in_flight else _take(view.pending, 1)

    def max_down(self, scope: Sequence[InstanceInfo], fleet_size: int) -> int:
        return min(1, len(scope))

    def guarantee(self) -> str:
        return "at most 1 instance down at once"


@dataclass(frozen=True)
class UpdateDomain(_OneDomainAtATime):
    name = "update-domain"
    summary = "One update domain at a time (all its instances at once), in a configurable order."
    kind: DomainKind = field(default="update_domain", init=False, repr=False)


@dataclass(frozen=True)
class FaultDomain(_OneDomainAtATime):
    name = "fault-domain"
    summary = "One fault domain at a time (all its instances at once), in a configurable order."
    kind: DomainKind = field(default="fault_domain", init=False, repr=False)


@dataclass(frozen=True)
class Zone(StrategyBase):
    name = "zone"
    summary = (
        "One availability zone at a time; within a zone one update domain at a time. "
        "A regional scale set (no zones) behaves like update-domain."
    )
    order: str = field(default="asc", metadata={"help": "zone order: asc, desc or a list 2/1/3"})

    def __post_init__(self) -> None:
        _parse_order(self.order, "zone:order")

    @property
    def domain_kind(self) -> DomainKind:
        return "zone"

    def next_wave(self, view: View) -> Sequence[str]:
        if view.in_flight:
            return []
        zones = _ordered(view.pending_domains("zone"), self.order, "zone:order")
        if not zones:
            return []
        zone = zones[0]
        uds = sorted(ud for z, ud in view.pending_domains("zone_update_domain") if z == zone)
        return list(view.pending_in("zone_update_domain", (zone, uds[0])))

    def max_down(self, scope: Sequence[InstanceInfo], fleet_size: int) -> int:
        sizes = Counter(i.domain("zone_update_domain") for i in scope)
        return max(sizes.values(), default=0)

    def guarantee(self) -> str:
        return "at most one update domain of one zone down at once"


def _amount_size(amount: Amount, total: int) -> int:
    """Batch sizes: percentages round down (at least 1), like Azure's batches."""
    if amount.percent:
        return max(1, math.floor(amount.value * total / 100 + 1e-9))
    return int(amount.value)


@dataclass(frozen=True)
class Batch(StrategyBase):
    name = "batch"
    summary = "Fixed-size batches in lock step: the next batch starts when the last is resolved."
    size: int | None = field(default=None, metadata={"help": "instances per batch"})
    percent: float | None = field(
        default=None,
        metadata={"help": "batch size as % of the scope (rounded down, >= 1); default 20"},
    )

    def __post_init__(self) -> None:
        if self.size is not None and self.percent is not None:
            raise InputError("strategy batch: give size or percent, not both")
        if self.size is not None and self.size < 1:
            raise InputError(f"batch:size: must be >= 1, got {self.size}")
        if self.percent is not None and not 0 < self.percent <= 100:
            raise InputError(f"batch:percent: must be in (0, 100], got {self.percent:g}")

    def _size(self, scope_size: int) -> int:
        if self.size is not None:
            return self.size
        return _amount_size(
            Amount(20.0 if self.percent is None else self.percent, True), scope_size
        )

    def next_wave(self, view: View) -> Sequence[str]:
        return [] if view.in_flight else _take(view.pending, self._size(view.scope_size))

    def resolved(self, scope_size: int) -> str:
        return f"{self.name}:size={min(scope_size, self._size(scope_size))}"

    def check_scope_size(self, scope_size: int) -> None:
        """A fixed size larger than the scope is a typo (checked before a real rollout)."""
        if self.size is not None and self.size > scope_size:
            raise InputError(
                f"batch:size: {self.size} is larger than the scope ({scope_size} instances)"
            )

    def max_down(self, scope: Sequence[InstanceInfo], fleet_size: int) -> int:
        return min(len(scope), self._size(len(scope)))

    def guarantee(self) -> str:
        what = (
            f"{self.size}"
            if self.size is not None
            else f"{self.percent or 20:g}% of the scope (rounded down, >= 1)"
        )
        return f"at most {what} instances down at once"


@dataclass(frozen=True)
class Window(StrategyBase):
    name = "window"
    summary = (
        "Sliding window: keep up to max-unavailable instances upgrading; "
        "the next starts as soon as one is resolved."
    )
    max_unavailable: Amount = field(
        default=Amount(20.0, True),
        metadata={"help": "count or % of the scope (rounded down, >= 1)"},
    )

    def _limit(self, scope_size: int) -> int:
        return _amount_size(self.max_unavailable, scope_size)

    def resolved(self, scope_size: int) -> str:
        return f"{self.name}:max-unavailable={min(scope_size, self._limit(scope_size))}"

    def next_wave(self, view: View) -> Sequence[str]:
        return _take(view.pending, self._limit(view.scope_size) - len(view.in_flight))

    def max_down(self, scope: Sequence[InstanceInfo], fleet_size: int) -> int:
        return min(len(scope), self._limit(len(scope)))

    def guarantee(self) -> str:
        limit = self.max_unavailable
        what = f"{limit} of the scope (rounded down, >= 1)" if limit.percent else f"{limit}"
        return f"at most {what} instances down at once"


@dataclass(frozen=True)
class Surge(StrategyBase):
    name = "surge"
    summary = (
        "Create max-surge new instances on the target before deleting as many old ones; "
        "serving capacity never drops below the original."
    )
    max_surge: Amount = field(
        default=Amount(1.0), metadata={"help": "new instances at once: count or % of the scope"}
    )

    @property
    def replaces(self) -> bool:
        return True

    def next_wave(self, view: View) -> Sequence[str]:
        return (
            []
            if view.in_flight
            else _take(view.pending, _amount_size(self.max_surge, view.scope_size))
        )

    def resolved(self, scope_size: int) -> str:
        return f"{self.name}:max-surge={_amount_size(self.max_surge, scope_size)}"

    def max_down(self, scope: Sequence[InstanceInfo], fleet_size: int) -> int:
        return 0

    def guarantee(self) -> str:
        return "0 instances down: serving never below the original count"


@dataclass(frozen=True)
class AllAtOnce(StrategyBase):
    name = "all-at-once"
    summary = "Everything at once, as upgrade policy Automatic may do: the downtime baseline."

    def next_wave(self, view: View) -> Sequence[str]:
        return list(view.pending)

    def guarantee(self) -> str:
        return "none: every instance in scope may be down at once"


@dataclass(frozen=True)
class AzureRolling(StrategyBase):
    """Azure's rolling upgrade as documented: batches of at most
    maxBatchInstancePercent of *all* instances (rounded down, at least 1), never
    across update domains, never across zones unless enableCrossZoneUpgrade; a
    batch shrinks so that unhealthy instances plus the batch stay within
    maxUnhealthyInstancePercent. The exact platform algorithm is not published;
    this is the documented model (see README)."""

    name = "azure-rolling"
    summary = "Azure's built-in rolling upgrade (rollingUpgradePolicy), for comparison."
    max_batch_instance_percent: int = field(default=20, metadata={"help": "5-100"})
    max_unhealthy_instance_percent: int | None = field(
        default=None, metadata={"help": "5-100; default: engine --max-unhealthy (20)"}
    )
    max_unhealthy_upgraded_instance_percent: int | None = field(
        default=None, metadata={"help": "0-100; default: engine --max-unhealthy-upgraded (20)"}
    )
    pause_time_between_batches: Duration | None = field(
        default=None, metadata={"help": "default: engine --pause (0s)"}
    )
    prioritize_unhealthy_instances: bool = field(
        default=False, metadata={"help": "upgrade unhealthy instances first"}
    )
    enable_cross_zone_upgrade: bool = field(
        default=False, metadata={"help": "batches may span zones"}
    )
    max_surge: bool = field(
        default=False, metadata={"help": "new instances per batch, then delete old"}
    )

    def __post_init__(self) -> None:
        checks = [
            ("max-batch-instance-percent", self.max_batch_instance_percent, 5),
            ("max-unhealthy-instance-percent", self.max_unhealthy_instance_percent, 5),
            (
                "max-unhealthy-upgraded-instance-percent",
                self.max_unhealthy_upgraded_instance_percent,
                0,
            ),
        ]
        for key, value, low in checks:
            if value is not None and not low <= value <= 100:
                raise InputError(f"azure-rolling:{key}: must be between {low} and 100, got {value}")

    @property
    def replaces(self) -> bool:
        return self.max_surge

    @property
    def domain_kind(self) -> DomainKind:
        return "update_domain" if self.enable_cross_zone_upgrade else "zone_update_domain"

    def _batch(self, fleet_size: int) -> int:
        return max(1, fleet_size * self.max_batch_instance_percent // 100)

    def next_wave(self, view: View) -> Sequence[str]:
        if view.in_flight:
            return []
        size = self._batch(view.fleet_size)
        # "unhealthy instances in previous or future batches can cause the
        # percentage of instances in a batch to decrease" (rollingUpgradePolicy docs)
        pct = self.max_unhealthy_instance_percent
        allowed = view.fleet_size * (20 if pct is None else pct) // 100
        size = max(1, min(size, allowed - view.unhealthy_count))
        kind = self.domain_kind
        if self.prioritize_unhealthy_instances and view.pending_in("healthy", False):
            for instance_id, info in view.pending_in("healthy", False).items():
                # the first unhealthy one picks the domain; fill from that domain's unhealthy
                domain = info.domain(kind)
                ids = [instance_id] + [
                    i
                    for i, inf in view.pending_in("healthy", False).items()
                    if i != instance_id and inf.domain(kind) == domain
                ]
                return ids[:size]
        domains = view.pending_domains(kind)
        if not domains:
            return []
        return _take(view.pending_in(kind, domains[0]), size)

    def max_down(self, scope: Sequence[InstanceInfo], fleet_size: int) -> int:
        if self.max_surge:
            return 0
        sizes = Counter(i.domain(self.domain_kind) for i in scope)
        return min(self._batch(fleet_size), max(sizes.values(), default=0))

    def guarantee(self) -> str:
        if self.max_surge:
            return "0 instances down (surge): serving never below the original count"
        return (
            f"at most {self.max_batch_instance_percent}% of all instances (>= 1) down at once, "
            "within one update domain"
        )

    def engine_options(self, options: EngineOptions) -> EngineOptions:
        return options.with_overrides(
            {
                "max_unhealthy": self.max_unhealthy_instance_percent,
                "max_unhealthy_upgraded": self.max_unhealthy_upgraded_instance_percent,
                "pause": None
                if self.pause_time_between_batches is None
                else float(self.pause_time_between_batches),
            }
        )
