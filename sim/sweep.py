"""Parameter sweeps: a grid over strategy parameters, scenario values and engine
options, one Monte Carlo study per point, and the Pareto front of duration
against the lowest serving capacity.

A grid axis is written ``KEY=VALUES`` (``--vary`` on the command line):

* ``NAME:param``: a parameter of the swept strategy (``batch:size``,
  ``window:max-unavailable``);
* a scenario key in its TOML dotted form (``scale_set.instances``,
  ``timing.upgrade``, ``faults.upgrade_failure``, ``demand.required``, ...);
* ``engine.<option>``: an engine option (``engine.max_unhealthy``,
  ``engine.pause``, ``engine.canary``, ...).

VALUES is a comma-separated list (commas inside parentheses belong to the
value, so ``timing.upgrade=fixed(4m),uniform(2m, 6m)`` has two values), where an
item ``A..B`` is the whole numbers from A to B inclusive. List-valued keys
(``scale_set.zones``, ``engine.checkpoints``, ``engine.only_*``) separate the
items of one value with ``/`` (``scale_set.zones=none,1/2/3``).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..engine.errors import InputError
from ..engine.options import EngineOptions, Scope, parse_option_values
from ..strategies import registry
from .parallel import Progress, Study, run_studies
from .runner import summarize
from .scenario import _LAYOUT, Scenario

__all__ = [
    "MAX_POINTS",
    "OBJECTIVES",
    "Axis",
    "build_point",
    "fronts",
    "grid",
    "pareto_front",
    "parse_values",
    "parse_vary",
    "sweep",
    "valid_keys",
]

#: the largest grid a sweep accepts
MAX_POINTS = 10_000
#: what the Pareto front trades off, as the output says it
OBJECTIVES = {
    "minimise": "duration_s.mean (mean duration over the runs)",
    "maximise": "min_serving.min (the fewest instances serving at any moment of any run)",
    "among": "points with no halted run, one front per condition (values of the scenario axes)",
}

AxisKind = Literal["strategy", "scenario", "engine"]

#: scenario keys a sweep may vary (dotted form) -> Scenario field
SCENARIO_KEYS: dict[str, str] = {
    f"{table}.{name}": name for table, names in _LAYOUT.items() if table for name in names
}
#: engine options a sweep may vary (``engine.<name>``)
ENGINE_KEYS: tuple[str, ...] = tuple(
    sorted(
        {f.name for f in dataclasses.fields(EngineOptions)} - {"scope"}
        | {"only_instances", "only_update_domains", "only_fault_domains", "only_zones"}
    )
)
#: keys whose one value is a list: its items are separated with "/"
LIST_KEYS = frozenset(
    {"scale_set.zones", "engine.checkpoints"}
    | {f"engine.{k}" for k in ENGINE_KEYS if k.startswith("only_")}
)

_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


@dataclass(frozen=True)
class Axis:
    """One dimension of the grid: ``key`` as written, what it sets, its values (text)."""

    key: str
    kind: AxisKind
    #: the strategy parameter (dashed), Scenario field or engine option it sets
    name: str
    values: tuple[str, ...]


def valid_keys(strategy: str) -> list[str]:
    """Every key a sweep of ``strategy`` can vary."""
    name, _ = registry.parse_spec(strategy)
    params = [p[0] for p in _parameters(name)]
    return (
        [f"{name}:{p}" for p in params]
        + sorted(SCENARIO_KEYS)
        + [f"engine.{k}" for k in ENGINE_KEYS]
    )


def _parameters(name: str) -> list[tuple[str, str, str]]:
    cls = registry.load(name)
    params: list[tuple[str, str, str]] = cls.parameters() if hasattr(cls, "parameters") else []
    return params


def _unknown(key: str, strategy: str, why: str = "unknown key") -> InputError:
    return InputError(f"--vary {key}: {why} (valid: {', '.join(valid_keys(strategy))})")


def parse_vary(text: str, strategy: str) -> Axis:
    """An axis from ``KEY=VALUES`` for a sweep of ``strategy`` (a spec such as ``batch``)."""
    key, eq, values = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise InputError(
            f"--vary {text!r}: expected KEY=VALUES, e.g. batch:size=1..10 or "
            "faults.upgrade_failure=0,0.01,0.05"
        )
    kind: AxisKind
    if ":" in key:
        name, _, param = key.partition(":")
        swept, _ = registry.parse_spec(strategy)
        param = param.strip().replace("_", "-")
        if name.strip() != swept:
            raise _unknown(key, strategy, f"not a parameter of the swept strategy {swept}")
        if param not in {p[0] for p in _parameters(swept)}:
            raise _unknown(key, strategy, f"{swept} has no parameter {param!r}")
        kind, target, key = "strategy", param, f"{swept}:{param}"
    elif key in SCENARIO_KEYS:
        kind, target = "scenario", SCENARIO_KEYS[key]
    elif key.startswith("engine.") and key[7:].replace("-", "_") in ENGINE_KEYS:
        target = key[7:].replace("-", "_")
        kind, key = "engine", f"engine.{target}"
    else:
        raise _unknown(key, strategy)
    return Axis(key, kind, target, parse_values(values, key))


def parse_values(text: str, key: str) -> tuple[str, ...]:
    """The values of ``KEY=VALUES``: a comma list (not splitting inside parentheses)
    whose ``A..B`` items are inclusive ranges of whole numbers."""
    items: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    items.append(current)
    out: list[str] = []
    for raw in items:
        item = raw.strip()
        if not item:
            raise InputError(f"--vary {key}: empty value in {text!r}")
        match = _RANGE.match(item)
        if match:
            low, high = int(match[1]), int(match[2])
            if low > high:
                raise InputError(f"--vary {key}: empty range {item!r} (write low..high)")
            if high - low >= MAX_POINTS:
                raise InputError(f"--vary {key}: range {item!r} is longer than {MAX_POINTS}")
            out.extend(str(v) for v in range(low, high + 1))
        elif ".." in item:
            raise InputError(f"--vary {key}: expected a range of whole numbers A..B, got {item!r}")
        else:
            out.append(item)
    if len(set(out)) != len(out):
        repeated = sorted({v for v in out if out.count(v) > 1})
        raise InputError(f"--vary {key}: value given twice: {', '.join(repeated)}")
    return tuple(out)


def grid(axes: Sequence[Axis]) -> list[dict[str, str]]:
    """The cartesian product of the axes' values (the first axis varies slowest)."""
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise InputError(f"--vary {repeated[0]}: given twice; list every value in one --vary")
    size = 1
    for axis in axes:
        size *= len(axis.values)
    if size > MAX_POINTS:
        raise InputError(f"--vary: the grid has {size} points, more than {MAX_POINTS}")
    return [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(a.values for a in axes))
    ]


def _list_value(value: str) -> str:
    """One value of a list-valued key, as the scenario / engine parsers read lists."""
    text = value.strip()
    if text.lower() in ("none", "[]", '""'):
        return ""
    return ",".join(p.strip() for p in text.split("/"))


def build_point(
    scenario: Scenario, strategy: str, axes: Sequence[Axis], point: Mapping[str, str]
) -> tuple[Scenario, str]:
    """The scenario and strategy spec of one grid point (validated)."""
    name, params = registry.parse_spec(strategy)
    scenario_values: dict[str, object] = {}
    engine_values: dict[str, object] = {}
    for axis in axes:
        value = point[axis.key]
        if axis.key in LIST_KEYS:
            value = _list_value(value)
        if axis.kind == "strategy":
            params[axis.name] = value
        elif axis.kind == "scenario":
            scenario_values[axis.name] = value
        else:
            engine_values[axis.name] = value
    spec = name + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")
    registry.make(spec)  # a bad value is an input error before anything runs
    if scenario_values:
        scenario = scenario.with_overrides(**scenario_values)
    if engine_values:
        parsed = parse_option_values(engine_values, prefix="engine")
        scope = parsed.get("scope")
        if isinstance(scope, Scope):  # a filter replaces only its own filter
            given = {
                f.name: getattr(scope, f.name)
                for f in dataclasses.fields(scope)
                if getattr(scope, f.name) is not None
            }
            parsed["scope"] = dataclasses.replace(scenario.engine.scope, **given)
        scenario = dataclasses.replace(scenario, engine=scenario.engine.with_overrides(parsed))
    return scenario, spec


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (duration to minimise, serving to maximise) pairs: which are not
    dominated (another point at least as good on both and better on one).
    Equal points are all on the front."""
    order = sorted(range(len(points)), key=lambda i: points[i][0])
    front = [False] * len(points)
    best = float("-inf")  # the most serving among strictly shorter durations
    for _, group in itertools.groupby(order, key=lambda i: points[i][0]):
        members = list(group)
        top = max(points[i][1] for i in members)
        if top > best:
            for i in members:
                front[i] = points[i][1] == top
        best = max(best, top)
    return front


def fronts(
    points: Sequence[Mapping[str, str]],
    summaries: Sequence[Mapping[str, Any]],
    conditions: Sequence[str],
) -> list[bool]:
    """Which points are on the Pareto front of their condition.

    Scenario axes (the scale set, timings, faults, demand) are conditions the
    planner does not choose: each combination of their values gets a front of
    its own, among the choices (strategy parameters, engine options) tried
    under it. Only points that never halted compete: a halted run ends early,
    which shortens the mean duration, so a configuration that halts would
    otherwise look fast. Points with halted runs are never on a front."""
    on_front = [False] * len(points)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, point in enumerate(points):
        groups.setdefault(tuple(point[k] for k in conditions), []).append(i)
    for members in groups.values():
        clean = [i for i in members if summaries[i]["halted_runs"] == 0]
        marks = pareto_front(
            [
                (
                    float(summaries[i]["duration_s"]["mean"]),
                    float(summaries[i]["min_serving"]["min"]),
                )
                for i in clean
            ]
        )
        for i, mark in zip(clean, marks, strict=True):
            on_front[i] = mark
    return on_front


def _plain(value: str) -> int | float | str:
    """A grid value for JSON: a number when it reads as one."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return number if number == number and abs(number) != float("inf") else value


def sweep(
    scenario: Scenario,
    strategy: str,
    vary: Sequence[str],
    *,
    runs: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    dask: str | None = None,
    progress: Progress | None = None,
    record: bool = False,
) -> list[dict[str, Any]]:
    """Run the grid: one study of ``runs`` runs (default: the scenario's) per point,
    every point on the same seeds. One dict per point, in grid order:
    ``values`` (key -> value), ``condition`` (the values of its scenario axes),
    ``strategy`` (the point's spec), ``summary`` (:func:`~.runner.summarize`),
    ``halt_rate`` (halted runs / runs) and ``pareto`` (on its condition's front of
    :data:`OBJECTIVES`, see :func:`fronts`).
    With ``record``, also ``scenario`` and ``results`` (recorded runs, for charts;
    not JSON)."""
    spec = strategy.strip()
    registry.make(spec)
    if not vary:
        raise InputError("--vary: give at least one KEY=VALUES, e.g. batch:size=1..10")
    axes = [parse_vary(v, spec) for v in vary]
    points = grid(axes)
    n = scenario.runs if runs is None else runs
    base = scenario.seed if seed is None else seed
    if n < 1:
        raise InputError(f"--runs: expected a whole number >= 1, got {n}")
    studies = []
    for point in points:
        point_scenario, point_spec = build_point(scenario, spec, axes, point)
        studies.append(Study(point_scenario, point_spec, n, base, record=record))
    results = run_studies(studies, workers=workers, dask=dask, progress=progress)
    summaries = [summarize(s.strategy, base, r) for s, r in zip(studies, results, strict=True)]
    conditions = [a.key for a in axes if a.kind == "scenario"]
    front = fronts(points, summaries, conditions)
    out: list[dict[str, Any]] = []
    for point, study, summary, on_front, runs_ in zip(
        points, studies, summaries, front, results, strict=True
    ):
        item: dict[str, Any] = {
            "values": {k: _plain(v) for k, v in point.items()},
            "condition": {k: _plain(point[k]) for k in conditions},
            "strategy": study.strategy,
            "summary": summary,
            "halt_rate": summary["halted_runs"] / summary["runs"],
            "pareto": on_front,
        }
        if record:
            item["scenario"] = study.scenario
            item["results"] = runs_
        out.append(item)
    return out
