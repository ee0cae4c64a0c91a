"""Engine options: scope, safety gates, pacing, canary and what to do on a halt.

Every option has the default Azure's rolling-upgrade policy documents where one
exists (maxUnhealthyInstancePercent and maxUnhealthyUpgradedInstancePercent:
20; pauseTimeBetweenBatches: 0 s; 5 minutes to become healthy after an upgrade).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from .errors import InputError
from .model import instance_sort_key

OnFailure = Literal["freeze", "rollback"]

_DURATION_RE = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$"
)


#: the longest duration any timing, pause, bake or timeout takes: a rollout step
#: of more than 30 days is a typo (10^20 hours would overflow simulated time)
MAX_DURATION_S = 30 * 86400.0


def parse_duration(value: object, key: str = "duration") -> float:
    """Seconds from ``90``, ``90.5``, ``"90s"``, ``"5m"``, ``"1h"`` or ``"1h30m"``.

    Raises :class:`InputError` naming ``key`` for anything else, including
    negative values.
    """
    if isinstance(value, bool):
        raise InputError(f"{key}: expected a duration such as 90s, 5m or 1h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            match = _DURATION_RE.match(text)
            if not text or match is None or not any(match.groups()):
                raise InputError(
                    f"{key}: expected a duration such as 90s, 5m or 1h, got {value!r}"
                ) from None
            h, m, s = (float(g) if g else 0.0 for g in match.groups())
            seconds = h * 3600 + m * 60 + s
    else:
        raise InputError(f"{key}: expected a duration such as 90s, 5m or 1h, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"{key}: duration must be a finite number >= 0, got {value!r}")
    if seconds > MAX_DURATION_S:
        raise InputError(f"{key}: duration must be at most 30 days, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration` for display: ``"4m"``, ``"90s"``, ``"1h30m"``."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec else "")
    return out or "0s"


@dataclass(frozen=True, slots=True)
class Amount:
    """A count of instances or a percentage of some total (``5`` or ``"20%"``)."""

    value: float
    percent: bool = False

    @classmethod
    def parse(cls, value: object, key: str, *, allow_zero: bool = False) -> Amount:
        if isinstance(value, Amount):
            return value
        text = str(value).strip() if not isinstance(value, bool) else ""
        percent = text.endswith("%")
        number = text[:-1].strip() if percent else text
        try:
            parsed = float(number)
        except ValueError:
            raise InputError(
                f"{key}: expected a count (5) or a percentage (20%), got {value!r}"
            ) from None
        low = 0 if allow_zero else (0 if percent else 1)
        if percent and not (low < parsed <= 100 or (allow_zero and parsed == 0)):
            raise InputError(f"{key}: percentage must be in (0, 100], got {value!r}")
        if not percent and (parsed != int(parsed) or parsed < low):
            raise InputError(f"{key}: count must be a whole number >= {low}, got {value!r}")
        return cls(parsed, percent)

    def of(self, total: int, *, minimum: int = 1) -> int:
        """The count this amount means out of ``total``: percentages round up."""
        if not self.percent:
            return int(self.value)
        return max(minimum, math.ceil(self.value * total / 100 - 1e-9))

    def __str__(self) -> str:
        number = f"{self.value:g}"
        return f"{number}%" if self.percent else number


def _percent(value: object, key: str, low: float = 0) -> float:
    text = str(value).strip().removesuffix("%")
    try:
        number = float(text)
    except ValueError:
        raise InputError(f"{key}: expected a percentage, got {value!r}") from None
    if not low <= number <= 100:
        raise InputError(f"{key}: percentage must be between {low:g} and 100, got {value!r}")
    return number


@dataclass(frozen=True)
class Scope:
    """Which instances a rollout covers. ``None`` everywhere: every instance not
    already on the target model. Several filters intersect."""

    instances: frozenset[str] | None = None
    update_domains: frozenset[int] | None = None
    fault_domains: frozenset[int] | None = None
    zones: frozenset[str] | None = None

    def covers(self, instance_id: str, update_domain: int, fault_domain: int, zone: str) -> bool:
        return (
            (self.instances is None or instance_id in self.instances)
            and (self.update_domains is None or update_domain in self.update_domains)
            and (self.fault_domains is None or fault_domain in self.fault_domains)
            and (self.zones is None or zone in self.zones)
        )

    @property
    def is_everything(self) -> bool:
        return all(
            v is None for v in (self.instances, self.update_domains, self.fault_domains, self.zones)
        )


@dataclass(frozen=True)
class EngineOptions:
    """Everything the engine needs besides the fleet and the strategy."""

    scope: Scope = field(default_factory=Scope)
    #: maxUnhealthyInstancePercent: halt before a wave when more than this
    #: percentage of *all* instances is unhealthy.
    max_unhealthy: float = 20.0
    #: maxUnhealthyUpgradedInstancePercent: halt after a wave when more than
    #: this percentage of the instances upgraded so far is unhealthy.
    max_unhealthy_upgraded: float = 20.0
    #: pauseTimeBetweenBatches, seconds after a wave completes.
    pause: float = 0.0
    #: an upgraded instance that is not healthy this long after its upgrade
    #: completed counts as unhealthy.
    health_timeout: float = 300.0
    #: the first wave(s) cover only this many instances, then bake.
    canary: Amount | None = None
    #: how long to watch after the canary and at each checkpoint.
    bake: float = 0.0
    #: further stops (bake) once these percentages of the scope are done.
    checkpoints: tuple[float, ...] = ()
    on_failure: OnFailure = "freeze"

    def with_overrides(self, values: Mapping[str, Any]) -> EngineOptions:
        """A copy with ``values`` (already typed) applied; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], prefix: str = "engine") -> EngineOptions:
        """Parse the ``[engine]`` table of a scenario (or CLI values as strings)."""
        return cls().with_overrides(parse_option_values(data, prefix))

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of :meth:`from_mapping`, for writing scenario files."""
        out: dict[str, Any] = {}
        sc = self.scope
        if sc.instances is not None:
            out["only_instances"] = sorted(sc.instances, key=instance_sort_key)
        if sc.update_domains is not None:
            out["only_update_domains"] = sorted(sc.update_domains)
        if sc.fault_domains is not None:
            out["only_fault_domains"] = sorted(sc.fault_domains)
        if sc.zones is not None:
            out["only_zones"] = sorted(sc.zones)
        out["max_unhealthy"] = self.max_unhealthy
        out["max_unhealthy_upgraded"] = self.max_unhealthy_upgraded
        out["pause"] = format_duration(self.pause)
        out["health_timeout"] = format_duration(self.health_timeout)
        if self.canary is not None:
            out["canary"] = str(self.canary)
        out["bake"] = format_duration(self.bake)
        if self.checkpoints:
            out["checkpoints"] = [f"{c:g}%" for c in self.checkpoints]
        out["on_failure"] = self.on_failure
        return out


def _list(value: object) -> list[object]:
    if isinstance(value, str):
        return [v for v in (p.strip() for p in value.split(",")) if v]
    if isinstance(value, Iterable):
        return list(value)
    return [value]


def _ints(value: object, key: str) -> frozenset[int]:
    out = set()
    for v in _list(value):
        try:
            number = int(str(v))
        except ValueError:
            raise InputError(f"{key}: expected whole numbers, got {v!r}") from None
        if number < 0:
            raise InputError(f"{key}: domain numbers are >= 0, got {number}")
        out.add(number)
    if not out:
        raise InputError(f"{key}: the list is empty")
    return frozenset(out)


def parse_option_values(data: Mapping[str, Any], prefix: str = "engine") -> dict[str, Any]:
    """Validate and type engine options given as a mapping of option names
    (``only_instances``, ``max_unhealthy``, ...) to TOML or CLI values."""
    scope: dict[str, Any] = {}
    out: dict[str, Any] = {}
    known = {f.name for f in fields(EngineOptions)} - {"scope"} | {
        "only_instances",
        "only_update_domains",
        "only_fault_domains",
        "only_zones",
    }
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in known:
            raise InputError(f"{key}: unknown option (valid: {', '.join(sorted(known))})")
        if value is None:
            continue
        if name == "only_instances":
            ids = frozenset(str(v) for v in _list(value))
            if not ids:
                raise InputError(f"{key}: the list is empty")
            scope["instances"] = ids
        elif name == "only_update_domains":
            scope["update_domains"] = _ints(value, key)
        elif name == "only_fault_domains":
            scope["fault_domains"] = _ints(value, key)
        elif name == "only_zones":
            zones = frozenset(str(v) for v in _list(value))
            if not zones:
                raise InputError(f"{key}: the list is empty")
            scope["zones"] = zones
        elif name in ("max_unhealthy", "max_unhealthy_upgraded"):
            out[name] = _percent(value, key)
        elif name in ("pause", "health_timeout", "bake"):
            out[name] = parse_duration(value, key)
        elif name == "canary":
            out[name] = Amount.parse(value, key)
        elif name == "checkpoints":
            points = sorted({_percent(v, key, low=0) for v in _list(value)})
            if any(p <= 0 or p >= 100 for p in points):
                raise InputError(f"{key}: checkpoints are percentages strictly between 0 and 100")
            out[name] = tuple(points)
        elif name == "on_failure":
            if value not in ("freeze", "rollback"):
                raise InputError(f"{key}: expected 'freeze' or 'rollback', got {value!r}")
            out[name] = value
    if scope:
        out["scope"] = Scope(**scope)
    return out
