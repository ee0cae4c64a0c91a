"""The strategy contract: a pure decision over the rollout's current view.

A strategy never does I/O and never reads a clock. The engine calls
:meth:`Strategy.next_wave` whenever something changed and starts whatever
instances it returns (an empty answer means "nothing now"). Lock-step
strategies return a wave only when nothing is in flight; sliding-window ones
top the in-flight set up to their limit.

The :class:`View` is maintained incrementally by the engine: every accessor is
O(1) or O(number of domains), never O(instances), so a strategy that only picks
from the front of ``pending`` or ``pending_in(...)`` keeps a rollout linear in
the number of instances.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from ..engine.errors import InputError
from ..engine.options import Amount, EngineOptions, parse_duration

DomainKind = Literal["update_domain", "fault_domain", "zone", "zone_update_domain", "healthy"]
DOMAIN_KINDS: tuple[DomainKind, ...] = typing.get_args(DomainKind)


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """What a strategy may know about an instance."""

    instance_id: str
    update_domain: int
    fault_domain: int
    zone: str = ""
    #: the instance was healthy when the rollout planned it
    healthy: bool = True

    def domain(self, kind: DomainKind) -> Any:
        if kind == "zone_update_domain":
            return (self.zone, self.update_domain)
        return getattr(self, kind)


class View(Protocol):
    """Read-only view of one rollout phase (the engine implements it)."""

    @property
    def fleet_size(self) -> int:
        """Instances in the whole scale set (percentages of "all instances")."""

    @property
    def scope_size(self) -> int:
        """Instances this phase covers (pending + in flight + resolved)."""

    @property
    def pending(self) -> Mapping[str, InstanceInfo]:
        """Not started yet, in scope order (numeric instance id)."""

    @property
    def in_flight(self) -> Mapping[str, InstanceInfo]:
        """Started and not yet resolved (upgrading or waiting to be healthy)."""

    @property
    def done_count(self) -> int:
        """Resolved healthy on the target."""

    @property
    def failed_count(self) -> int:
        """Resolved failed or unhealthy."""

    @property
    def unhealthy_count(self) -> int:
        """Instances of the whole scale set unhealthy now (not counting in flight)."""

    def pending_in(self, kind: DomainKind, value: Any) -> Mapping[str, InstanceInfo]:
        """Pending instances of one domain, in scope order."""

    def pending_domains(self, kind: DomainKind) -> list[Any]:
        """Domains (sorted) that still have pending instances."""

    def in_flight_domains(self, kind: DomainKind) -> set[Any]:
        """Domains that have instances in flight."""


@runtime_checkable
class Strategy(Protocol):
    """What a strategy plugin provides. Subclass :class:`StrategyBase` for the
    parameter parsing, or implement this protocol directly."""

    #: the name users type (the entry point's name)
    name: ClassVar[str]
    #: one line for ``vmss-rollout strategies``
    summary: ClassVar[str]

    @property
    def replaces(self) -> bool:
        """True when waves are surge replacements (create new instances on the
        target, then delete the old ones) instead of in-place upgrades."""

    @property
    def domain_kind(self) -> DomainKind | None:
        """For per-domain strategies: never two of these domains in flight."""

    def next_wave(self, view: View) -> Sequence[str]:
        """Instance ids (from ``view.pending``) to start now; empty for none."""

    def max_down(self, scope: Sequence[InstanceInfo], fleet_size: int) -> int:
        """The guarantee: most in-scope instances down (upgrading) at once."""

    def guarantee(self) -> str:
        """The guarantee in words."""

    def engine_options(self, options: EngineOptions) -> EngineOptions:
        """Adjust engine options (``azure-rolling`` maps its policy onto them)."""

    def spec(self) -> str:
        """The canonical ``NAME:key=value,...`` that recreates this strategy."""


@dataclass(frozen=True)
class StrategyBase(ABC):
    """Convenience base: parameters are dataclass fields.

    Field names use underscores; users type dashes (``max_unavailable`` is
    ``max-unavailable=3``). Supported field types: ``int``, ``float``, ``bool``,
    ``str``, :class:`Amount` (``5`` or ``20%``), ``Duration`` (a float of seconds
    written ``90s``/``5m``), each optionally ``| None``. Put the help text in
    ``field(metadata={"help": ...})``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> StrategyBase:
        fields_by_key = {f.name.replace("_", "-"): f for f in _params(cls)}
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, raw in params.items():
            f = fields_by_key.get(key)
            if f is None:
                valid = ", ".join(fields_by_key) or "none"
                raise InputError(f"strategy {cls.name}: unknown parameter {key!r} (valid: {valid})")
            values[f.name] = _convert(hints[f.name], raw, f"{cls.name}:{key}")
        try:
            strategy = cls(**values)
        except InputError:
            raise
        except (TypeError, ValueError) as exc:
            raise InputError(f"strategy {cls.name}: {exc}") from None
        return strategy

    @classmethod
    def parameters(cls) -> list[tuple[str, str, str]]:
        """(name, default, help) for each parameter, for ``strategies``."""
        out = []
        for f in _params(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            shown = "-" if default is None else _show(default)
            out.append((f.name.replace("_", "-"), shown, str(f.metadata.get("help", ""))))
        return out

    @property
    def replaces(self) -> bool:
        return False

    @property
    def domain_kind(self) -> DomainKind | None:
        return None

    @abstractmethod
    def next_wave(self, view: View) -> Sequence[str]:
        """Instance ids (from ``view.pending``) to start now; empty for none."""

    def max_down(self, scope: Sequence[InstanceInfo], fleet_size: int) -> int:
        return len(scope)

    def guarantee(self) -> str:
        return "no bound"

    def engine_options(self, options: EngineOptions) -> EngineOptions:
        return options

    def resolved(self, scope_size: int) -> str:
        """The spec with defaults that depend on the scope worked out
        (``batch`` on 20 instances is ``batch:size=4``); optional for plugins."""
        return self.spec()

    def spec(self) -> str:
        parts = []
        for f in _params(type(self)):
            value = getattr(self, f.name)
            if value is not None and value != f.default:
                parts.append(f"{f.name.replace('_', '-')}={_show(value)}")
        return self.name + (":" + ",".join(parts) if parts else "")


def _params(cls: type) -> list[dataclasses.Field[Any]]:
    """The dataclass fields users set (``init=False`` fields are internal)."""
    return [f for f in dataclasses.fields(cls) if f.init]


class Duration(float):
    """Marker type for duration parameters (seconds)."""


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Duration):
        return f"{float(value):g}s"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


#: the largest number a strategy parameter takes: a scale set holds at most 1,000
#: instances (Microsoft docs, virtual-machine-scale-sets-placement-groups), so far
#: more is a typo, and a 20-digit number must not reach the engine
MAX_PARAMETER = 1_000_000


def _convert(hint: Any, raw: str, key: str) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = options[0]
    text = raw.strip()
    if hint is bool:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise InputError(f"{key}: expected true or false, got {raw!r}")
    if hint is int:
        try:
            number = int(text)
        except ValueError:
            raise InputError(f"{key}: expected a whole number, got {raw!r}") from None
        if abs(number) > MAX_PARAMETER:
            raise InputError(f"{key}: expected a whole number up to {MAX_PARAMETER:,}, got {raw!r}")
        return number
    if hint is float:
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{key}: expected a number, got {raw!r}") from None
        if not math.isfinite(value) or abs(value) > MAX_PARAMETER:
            raise InputError(
                f"{key}: expected a finite number up to {MAX_PARAMETER:,}, got {raw!r}"
            )
        return value
    if hint is Amount:
        return Amount.parse(text, key)
    if hint is Duration:
        return Duration(parse_duration(text, key))
    return text
