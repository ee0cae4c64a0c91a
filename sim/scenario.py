"""Scenarios: the scale set, timings, faults and demand a simulation runs against.

A scenario is a TOML file (every table and key optional; see ``default.toml``).
Validation lives in one place, :meth:`Scenario.__post_init__`, so a file, CLI
overrides and direct construction all get the same one-line
:class:`InputError` naming the dotted key (``scale_set.instances: ...``).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..engine.errors import InputError
from ..engine.options import Amount, EngineOptions, parse_duration
from ..engine.polling import DEFAULT_POLL, parse_poll_interval, poll_text
from .distributions import Distribution, Fixed, LogNormal, duration_text, parse_distribution

__all__ = ["Scenario", "default_scenario", "load_scenario", "load_scenario_text"]

_PACKAGE = __name__.rpartition(".")[0]
_POLICIES = ("Manual", "Automatic", "Rolling")
_MAX_COUNT = 1_000_000
# Immutable (frozen) default values, shared by every Scenario.
_DEFAULT_UPGRADE: Distribution = LogNormal(240, 60)
_DEFAULT_HEALTH_DELAY: Distribution = Fixed(30)
_DEFAULT_REQUIRED = Amount(80, percent=True)

# Where each field lives in the TOML file: table (None = top level) -> fields.
# ``engine`` is a whole table of its own, parsed by EngineOptions.
_LAYOUT: dict[str | None, tuple[str, ...]] = {
    None: ("name", "seed", "runs", "strategy"),
    "scale_set": (
        "instances",
        "orchestration",
        "update_domains",
        "fault_domains",
        "zones",
        "upgrade_policy",
        "protected_instances",
    ),
    "timing": ("upgrade", "health_delay"),
    "faults": ("upgrade_failure", "unhealthy_after_upgrade", "bad_image"),
    "demand": ("required",),
    "driver": ("poll_interval", "request_latency", "page_size"),
}
_KEYS: dict[str, str] = {
    name: f"{table}.{name}" if table else name for table, names in _LAYOUT.items() for name in names
}
_KEYS["engine"] = "engine"


# --- field parsers: (value, dotted key) -> canonical value, or InputError ---


def _whole(low: int, high: int | None = None) -> Callable[[object, str], int]:
    def parse(value: object, key: str) -> int:
        # bool is an int subclass, but `instances = true` is surely a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            bound = f">= {low}" if high is None else f"from {low} to {high}"
        elif value < low:
            bound = f">= {low}"
        elif high is not None and value > high:
            bound = f"<= {high}"
        else:
            return value
        raise InputError(f"{key}: expected a whole number {bound}, got {value!r}")

    return parse


def _probability(value: object, key: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)  # NaN fails the range check above
    raise InputError(f"{key}: expected a probability from 0 to 1 (e.g. 0.05), got {value!r}")


def _boolean(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise InputError(f"{key}: expected true or false, got {value!r}")


def _name(value: object, key: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise InputError(f"{key}: expected a non-empty string, got {value!r}")


def _strategy(value: object, key: str) -> str | None:
    return None if value is None else _name(value, key)


def _zones(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise InputError(f'{key}: expected a list of zone names such as ["1", "2"], got {value!r}')
    for zone in value:
        if not isinstance(zone, str) or not zone.strip():
            raise InputError(f'{key}: zone names are non-empty strings such as "1", got {zone!r}')
    if len(set(value)) != len(value):
        raise InputError(f"{key}: zone names must be distinct, got {list(value)!r}")
    return tuple(value)


def _instance_ids(value: object, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple) and all(
        isinstance(v, str) and v.strip().isdigit() for v in value
    ):
        return tuple(dict.fromkeys(v.strip() for v in value))
    raise InputError(f'{key}: expected a list of instance ids such as ["0", "7"], got {value!r}')


_ORCHESTRATIONS = ("Uniform", "Flexible")


def _orchestration(value: object, key: str) -> str:
    if isinstance(value, str):
        for mode in _ORCHESTRATIONS:
            if value.strip().lower() == mode.lower():
                return mode
    raise InputError(f"{key}: expected one of {', '.join(_ORCHESTRATIONS)}, got {value!r}")


def _policy(value: object, key: str) -> str:
    if isinstance(value, str):
        for policy in _POLICIES:
            if value.strip().lower() == policy.lower():
                return policy
    raise InputError(f"{key}: expected one of {', '.join(_POLICIES)}, got {value!r}")


def _amount_text(amount: Amount) -> str:
    """The exact text of ``amount`` (``str(Amount)`` rounds to 6 digits)."""
    number = f"{amount.value:g}"
    if float(number) != amount.value:
        number = repr(float(amount.value))
    return f"{number}%" if amount.percent else number


def _required(value: object, key: str) -> Amount:
    if isinstance(value, Amount):
        value = _amount_text(value)  # re-validate amounts built in code
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{key}: expected a count (16) or a percentage (80%), got {value!r}")
    try:
        return Amount.parse(value, key, allow_zero=True)
    except InputError:
        raise
    except (ValueError, OverflowError):  # int(nan) / int(inf) inside Amount.parse
        raise InputError(f"{key}: expected a count or a percentage, got {value!r}") from None


def _poll(value: object, key: str) -> tuple[float, float]:
    if isinstance(value, tuple) and len(value) == 2:
        value = poll_text(value)  # re-validate a pair built in code
    return parse_poll_interval(value, key, allow_zero=True)


#: a call slower than an hour is a failure, not a latency (a rehearsal at a high
#: time scale makes a wall-clock tenth of a second a minute)
_MAX_LATENCY_S = 3600.0


def _latency(value: object, key: str) -> float:
    seconds = parse_duration(value, key)
    if seconds > _MAX_LATENCY_S:
        raise InputError(f"{key}: at most {_MAX_LATENCY_S:g}s per call, got {value!r}")
    return seconds


def _engine(value: object, key: str) -> EngineOptions:
    if isinstance(value, EngineOptions):
        return value
    if not isinstance(value, Mapping):
        raise InputError(f"{key}: expected a table of engine options, got {value!r}")
    try:
        return EngineOptions.from_mapping(value, key)
    except InputError:
        raise
    except (ValueError, TypeError, OverflowError):  # e.g. canary = "nan" hits int(nan)
        # Find the offending option so the message can name it.
        for name, item in value.items():
            try:
                EngineOptions.from_mapping({name: item}, key)
            except (ValueError, TypeError, OverflowError):
                raise InputError(f"{key}.{name}: invalid value {item!r}") from None
        raise


_PARSERS: dict[str, Callable[[object, str], object]] = {
    "name": _name,
    "seed": _whole(0),
    "runs": _whole(1, _MAX_COUNT),
    "instances": _whole(1, _MAX_COUNT),
    "orchestration": _orchestration,
    "update_domains": _whole(1, 20),
    "fault_domains": _whole(1, 5),
    "zones": _zones,
    "upgrade_policy": _policy,
    "protected_instances": _instance_ids,
    "upgrade": parse_distribution,
    "health_delay": parse_distribution,
    "upgrade_failure": _probability,
    "unhealthy_after_upgrade": _probability,
    "bad_image": _boolean,
    "required": _required,
    "poll_interval": _poll,
    "request_latency": _latency,
    "page_size": _whole(1, 1000),
    "strategy": _strategy,
    "engine": _engine,
}


def _from_cli(name: str, value: object) -> object:
    """Best-effort conversion of a raw CLI string to the type the file would hold.

    Anything that does not convert is passed on unchanged so the one validator
    in ``__post_init__`` reports it with the usual message.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    parser = _PARSERS[name]
    try:
        if name in ("seed", "runs", "instances", "update_domains", "fault_domains", "page_size"):
            return int(text)
        if parser is _probability:
            return float(text)
    except ValueError:
        return value
    if parser is _boolean:
        words = {"true": True, "yes": True, "on": True, "1": True}
        words |= {"false": False, "no": False, "off": False, "0": False}
        return words.get(text.lower(), value)
    if name in ("zones", "protected_instances"):
        return [z.strip() for z in text.split(",") if z.strip()]
    return value


@dataclass(frozen=True)
class Scenario:
    """One simulated scale set and how its instances behave during a rollout.

    Construction validates and canonicalises every field (e.g. a zone list
    becomes a tuple, ``"rolling"`` becomes ``"Rolling"``, a distribution spec
    string is parsed), raising :class:`InputError` naming the dotted TOML key.
    """

    name: str = "default"
    seed: int = 1
    runs: int = 200
    # [scale_set]
    instances: int = 20
    #: ``orchestrationMode``: Uniform, or Flexible (VMs named ``<name>_<8 hex>``, no
    #: update domains, fault-domain count 1 zonal or 1 to 3 regional, default 1)
    orchestration: str = "Uniform"
    update_domains: int = 5  # per zone / placement group (Uniform only)
    #: the platform fault-domain count; None (left out): Azure's default for the
    #: topology, 1 for a zonal set and 5 for a regional one (MicrosoftDocs
    #: azure-compute-docs, virtual-machine-scale-sets-manage-fault-domains.md)
    fault_domains: int = None  # type: ignore[assignment]  # resolved in __post_init__
    zones: tuple[str, ...] = ()
    upgrade_policy: str = "Manual"
    #: instances protected from scale-set actions (the emulator's protectionPolicy)
    protected_instances: tuple[str, ...] = ()
    # [timing]
    upgrade: Distribution = _DEFAULT_UPGRADE  # lognormal(mean=4m, sd=1m)
    health_delay: Distribution = _DEFAULT_HEALTH_DELAY  # fixed(30s)
    # [faults]
    upgrade_failure: float = 0.0
    unhealthy_after_upgrade: float = 0.0
    bad_image: bool = False
    # [demand]
    required: Amount = _DEFAULT_REQUIRED  # 80%
    # [driver]: how ``upgrade``'s driver (backends/realtime.py) sees the scale set
    #: (MIN, MAX) seconds between polls, as ``--poll-interval``; (0, 0): the
    #: idealised driver that sees every change at once, without calls
    poll_interval: tuple[float, float] = DEFAULT_POLL
    #: seconds one ARM call takes; a poll is ceil(instances / page_size) list
    #: calls plus one per upgrade operation still followed, each action one call
    request_latency: float = 0.0
    #: instances per page of the VM list (the emulator's DEFAULT_PAGE_SIZE)
    page_size: int = 50
    # optional
    strategy: str | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    #: whether ``fault_domains`` was given (else it follows the zones)
    fault_domains_given: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        given = self.fault_domains is not None
        if not given:
            zonal = bool(_zones(self.zones, _KEYS["zones"]))
            flexible = _orchestration(self.orchestration, _KEYS["orchestration"]) == "Flexible"
            # Azure's defaults: 1 for zonal sets and every Flexible set, else 5
            # (MicrosoftDocs azure-compute-docs, virtual-machine-scale-sets-manage-fault-domains.md)
            object.__setattr__(self, "fault_domains", 1 if zonal or flexible else 5)
        object.__setattr__(self, "fault_domains_given", given)
        for f in fields(self):
            if not f.init:
                continue
            parsed = _PARSERS[f.name](getattr(self, f.name), _KEYS[f.name])
            object.__setattr__(self, f.name, parsed)  # frozen: canonicalise in place
        if self.orchestration == "Flexible":
            allowed = (1,) if self.zones else (1, 2, 3)
            if self.fault_domains not in allowed:
                # MicrosoftDocs azure-compute-docs, virtual-machine-scale-sets-manage-fault-
                # domains.md: Flexible, zonal: 1; regional: 1, 2 or 3
                raise InputError(
                    f"{_KEYS['fault_domains']}: a {'zonal' if self.zones else 'regional'} "
                    f"Flexible scale set has {'1' if self.zones else '1, 2 or 3'} fault domains on "
                    f"Azure, got {self.fault_domains}"
                )
        if self.poll_interval == (0.0, 0.0) and self.request_latency > 0:
            raise InputError(
                f'{_KEYS["request_latency"]}: the idealised driver (driver.poll_interval = "0") '
                f"makes no calls; set a poll interval such as 5:30 to model their latency"
            )
        if not self.required.percent and self.required.value > self.instances:
            raise InputError(
                f"demand.required: {_amount_text(self.required)} instances required but "
                f"scale_set.instances is {self.instances}"
            )

    def required_serving(self) -> int:
        """How many instances must keep serving, as a count (percentages round up)."""
        return self.required.of(self.instances, minimum=0)

    def with_overrides(self, **values: object) -> Scenario:
        """A copy with CLI-style overrides applied; ``None`` values are ignored.

        Values may be raw strings (``instances="50"``, ``zones="1,2,3"``,
        ``upgrade="fixed(5m)"``, ``required="75%"``) or typed values; they are
        validated exactly as a scenario file is. ``demand`` is an alias of
        ``required``.
        """
        changes: dict[str, Any] = {}
        valid = sorted(set(_KEYS) - {"engine"})
        for name, value in values.items():
            target = "required" if name == "demand" else name
            if target not in valid:
                raise InputError(f"{name}: unknown scenario setting (valid: {', '.join(valid)})")
            if value is not None:
                changes[target] = _from_cli(target, value)
        topology = "zones" in changes or "orchestration" in changes
        if topology and "fault_domains" not in changes and not self.fault_domains_given:
            changes["fault_domains"] = None  # Azure's default for the new topology
        return replace(self, **changes)

    def to_toml(self) -> str:
        """A TOML document that :func:`load_scenario_text` reads back to an equal scenario."""
        values: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        if not self.fault_domains_given:
            values["fault_domains"] = None  # left out: it follows the zones
        values["poll_interval"] = poll_text(self.poll_interval)
        values["request_latency"] = duration_text(self.request_latency)
        values["upgrade"] = str(self.upgrade)
        values["health_delay"] = str(self.health_delay)
        values["required"] = (
            _amount_text(self.required) if self.required.percent else int(self.required.value)
        )
        lines: list[str] = []
        for table, names in _LAYOUT.items():
            if table:
                lines += ["", f"[{table}]"]
            for name in names:
                if values[name] is not None:  # `strategy`, `fault_domains` can be None
                    lines.append(f"{name} = {_toml_value(values[name])}")
        engine = _engine_items(self.engine)
        default = _engine_items(EngineOptions())
        changed = {k: v for k, v in engine.items() if default.get(k) != v}
        if changed:
            lines += ["", "[engine]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in changed.items()]
        return "\n".join(lines) + "\n"


def _engine_items(options: EngineOptions) -> dict[str, object]:
    """``options.to_mapping()`` with numbers written exactly, so it round-trips."""
    items = options.to_mapping()
    for key in ("pause", "health_timeout", "bake"):
        items[key] = duration_text(getattr(options, key))
    if options.canary is not None:
        items["canary"] = _amount_text(options.canary)
    if options.checkpoints:
        items["checkpoints"] = [_amount_text(Amount(c, percent=True)) for c in options.checkpoints]
    return items


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)  # TOML spells inf, nan
    if isinstance(value, str):
        # JSON string escapes are valid TOML ones; TOML also wants DEL escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


#: a scenario file is a few hundred bytes; its longest list (only_instances) one
#: id per instance: 1 MB is far beyond any real one
MAX_FILE_CHARS = 1_000_000
#: tables and lists inside one another: [engine] holds lists, nothing deeper
MAX_NESTING = 3


def _depth(value: object) -> int:
    """How deeply tables and lists nest in ``value`` (a scalar is 0). Iterative,
    so a hostile document cannot exhaust the stack here."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def load_scenario_text(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate a scenario from TOML text; ``source`` names it in errors."""
    if len(text) > MAX_FILE_CHARS:
        raise InputError(
            f"{source}: scenario file too large ({len(text):,} characters; at most "
            f"{MAX_FILE_CHARS:,})"
        )
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: invalid TOML: {' '.join(str(exc).split())}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise InputError(
            f"{source}: invalid scenario: values nested more than {MAX_NESTING} deep"
        ) from None
    depth = _depth(document)
    if depth > MAX_NESTING:
        raise InputError(
            f"{source}: invalid scenario: values nested {depth} deep (at most {MAX_NESTING})"
        )
    values: dict[str, Any] = {}
    top = sorted([*_LAYOUT[None], *(t for t in _LAYOUT if t), "engine"])
    for key, value in document.items():
        if key == "engine" or key in _LAYOUT[None]:
            values[key] = value
        elif key in _LAYOUT:
            names = _LAYOUT[key]
            if not isinstance(value, dict):
                raise InputError(f"{key}: expected a table, got {value!r}")
            for name, item in value.items():
                if name not in names:
                    raise InputError(
                        f"{key}.{name}: unknown key (valid: {', '.join(sorted(names))})"
                    )
                values[name] = item
        else:
            raise InputError(f"{key}: unknown key (valid: {', '.join(top)})")
    return Scenario(**values)


def load_scenario(path: str | Path | None) -> Scenario:
    """Load a scenario file, or the built-in ``default.toml`` when ``path`` is None."""
    if path is None:
        return default_scenario()
    try:
        if Path(path).stat().st_size > 4 * MAX_FILE_CHARS:  # do not read a huge file at all
            raise InputError(
                f"{path}: scenario file too large (at most {MAX_FILE_CHARS:,} characters)"
            )
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"{path}: cannot read scenario file ({reason})") from None
    return load_scenario_text(text, str(path))


@cache
def default_scenario() -> Scenario:
    """The built-in scenario (``default.toml`` shipped with the package)."""
    text = resources.files(_PACKAGE).joinpath("default.toml").read_text(encoding="utf-8")
    return load_scenario_text(text, "default.toml")
