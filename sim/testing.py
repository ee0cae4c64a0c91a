"""Hypothesis strategies and assertions for testing rollout strategies.

For plugin authors and the project's own tests::

    from hypothesis import given
    from vmss_rollout.sim.testing import check_rollout, fleets, strategy_specs

    @given(fleets(), strategy_specs(["my-strategy"]))
    def test_my_strategy_is_safe(scenario, spec):
        check_rollout(scenario, spec)

Hypothesis is an optional dependency (``pip install vmss-rollout[verify]``);
only tests and :mod:`vmss_rollout.sim.verify` import this module.

Conventions: a drawn scenario carries its own ``seed``, and a property runs it
with :func:`run_seed` (the seed ``vmss-rollout simulate --runs 1`` derives from
it), so ``scenario.with_overrides(strategy=spec, runs=1).to_toml()`` is a file
that reproduces a failure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TypeVar

from hypothesis import reject
from hypothesis import strategies as st

from ..engine.errors import InputError
from ..engine.model import Instance
from ..engine.options import Amount, EngineOptions, OnFailure, Scope
from ..strategies.base import InstanceInfo, Strategy
from ..strategies.registry import builtin_names, make
from .distributions import Distribution, Fixed, Uniform
from .runner import RunResult, build, check_topology, derive_seed, run_once
from .scaleset import TARGET_MODEL
from .scenario import Scenario

__all__ = [
    "GATE_PREFIXES",
    "ZONE_NAMES",
    "assert_rollout_safe",
    "check_rollout",
    "engine_pacing",
    "fault_scenarios",
    "fleets",
    "guarantee_for",
    "has_faults",
    "initial_instances",
    "run_seed",
    "scope_infos",
    "scoped",
    "scopes",
    "strategy_specs",
    "with_scope",
]

T = TypeVar("T")

ZONE_NAMES = ("1", "2", "3")
#: how the engine's halt reasons start when a safety gate (not a bug) stopped a rollout
GATE_PREFIXES = ("max-unhealthy:", "max-unhealthy-upgraded:")

# Fast timings keep a 500-instance rollout in the tens of milliseconds; the health
# delays stay well under the engine's default 300 s health timeout, so without
# faults every instance becomes healthy in time.
_UPGRADE_TIMES: tuple[Distribution, ...] = (Fixed(10), Uniform(5, 20), Fixed(60))
_HEALTH_DELAYS: tuple[Distribution, ...] = (Fixed(5), Uniform(1, 10), Fixed(0))


# --------------------------------------------------------------------------- scenarios


@st.composite
def engine_pacing(draw: st.DrawFn) -> EngineOptions:
    """Engine options that change pacing but not safety: canary, bake,
    checkpoints and a pause between waves (default options most of the time)."""
    if draw(st.booleans()):
        return EngineOptions()
    canary = draw(
        st.none()
        | st.integers(1, 5).map(lambda n: Amount(float(n)))
        | st.integers(1, 50).map(lambda p: Amount(float(p), percent=True))
    )
    checkpoints = draw(st.lists(st.integers(1, 99), max_size=2, unique=True))
    return EngineOptions(
        canary=canary,
        bake=float(draw(st.sampled_from([0, 30, 600]))),
        pause=float(draw(st.sampled_from([0, 5, 60]))),
        checkpoints=tuple(sorted(float(c) for c in checkpoints)),
    )


@st.composite
def fleets(
    draw: st.DrawFn, *, max_instances: int = 500, pacing: bool = True, min_instances: int = 1
) -> Scenario:
    """A fault-free scenario with a random fleet shape: ``min_instances``..``max_instances``
    instances (biased toward small fleets), 1-20 update domains, 1-5 fault
    domains, no zones or zones "1".."3", fast fixed or uniform timings, and
    (``pacing``) random canary/bake/pause/checkpoint options."""
    low = max(1, min(min_instances, max_instances))
    instances = draw(
        st.integers(low, max(low, min(low + 7, max_instances)))
        | st.integers(low, max(low, min(low + 39, max_instances)))
        | st.integers(low, max_instances)
    )
    zones = ZONE_NAMES[: draw(st.integers(0, len(ZONE_NAMES)))]
    return Scenario(
        name="hypothesis",
        seed=draw(st.integers(0, 2**32 - 1)),
        runs=1,
        instances=instances,
        update_domains=draw(st.integers(1, 20)),
        fault_domains=draw(st.integers(1, 5)),
        zones=zones,
        upgrade=draw(st.sampled_from(_UPGRADE_TIMES)),
        health_delay=draw(st.sampled_from(_HEALTH_DELAYS)),
        engine=draw(engine_pacing()) if pacing else EngineOptions(),
    )


@st.composite
def fault_scenarios(
    draw: st.DrawFn, *, max_instances: int = 500, pacing: bool = True, min_instances: int = 1
) -> Scenario:
    """Like :func:`fleets`, plus faults: upgrade failures and unhealthy-after-upgrade
    probabilities of 0-20 %, a bad image sometimes, and either on_failure mode."""
    base = draw(fleets(max_instances=max_instances, pacing=pacing, min_instances=min_instances))
    on_failure: OnFailure = draw(st.sampled_from(["freeze", "rollback"]))
    return dataclasses.replace(
        base,
        upgrade_failure=draw(st.integers(0, 20)) / 100,
        unhealthy_after_upgrade=draw(st.integers(0, 20)) / 100,
        bad_image=draw(st.booleans()),
        engine=dataclasses.replace(base.engine, on_failure=on_failure),
    )


def initial_instances(scenario: Scenario) -> list[Instance]:
    """The instances the simulated scale set of ``scenario`` starts with."""
    _, scale_set = build(scenario, 0)
    return scale_set.read()[1]


def scopes(scenario: Scenario) -> st.SearchStrategy[Scope]:
    """A random rollout scope over ``scenario``'s fleet: any combination of
    update-domain, fault-domain, zone and instance-id filters (shrinks to
    everything). Combined filters may select no instance at all."""
    fleet = initial_instances(scenario)
    ids = sorted((i.instance_id for i in fleet), key=int)
    uds = sorted({i.update_domain for i in fleet})
    fds = sorted({i.fault_domain for i in fleet})
    zones = sorted({i.zone for i in fleet})

    def subset(
        values: Sequence[T], max_size: int | None = None
    ) -> st.SearchStrategy[frozenset[T] | None]:
        return st.none() | st.frozensets(st.sampled_from(values), min_size=1, max_size=max_size)

    return st.builds(
        Scope,
        instances=subset(ids, max_size=60),
        update_domains=subset(uds),
        fault_domains=subset(fds),
        zones=subset(zones) if scenario.zones else st.none(),
    )


def with_scope(scenario: Scenario, scope: Scope) -> Scenario:
    """``scenario`` whose engine options cover only ``scope``."""
    return dataclasses.replace(scenario, engine=dataclasses.replace(scenario.engine, scope=scope))


def scoped(scenarios: st.SearchStrategy[Scenario]) -> st.SearchStrategy[Scenario]:
    """``scenarios`` with a random :func:`scopes` scope each."""
    return scenarios.flatmap(lambda s: scopes(s).map(lambda scope: with_scope(s, scope)))


# --------------------------------------------------------------------------- strategies


def _order(domains: Sequence[str]) -> st.SearchStrategy[str]:
    explicit = st.permutations(list(domains)).flatmap(
        lambda p: st.integers(1, len(p)).map(lambda n: "/".join(p[:n]))
    )
    return st.sampled_from(["asc", "desc"]) | explicit


def _count_or_percent(high: int) -> st.SearchStrategy[str]:
    return st.integers(1, high).map(str) | st.integers(1, 100).map(lambda p: f"{p}%")


_UD_ORDER = _order([str(d) for d in range(20)])
_PARAMETERS: dict[str, dict[str, st.SearchStrategy[str]]] = {
    "one-at-a-time": {},
    "update-domain": {"order": _UD_ORDER},
    "fault-domain": {"order": _order([str(d) for d in range(5)])},
    "zone": {"order": _order(ZONE_NAMES)},
    "window": {"max-unavailable": _count_or_percent(30)},
    "surge": {"max-surge": _count_or_percent(10)},
    "all-at-once": {},
    "azure-rolling": {
        "max-batch-instance-percent": st.integers(5, 100).map(str),
        "max-unhealthy-instance-percent": st.integers(5, 100).map(str),
        "max-unhealthy-upgraded-instance-percent": st.integers(0, 100).map(str),
        "pause-time-between-batches": st.sampled_from(["0s", "10s", "1m"]),
        "prioritize-unhealthy-instances": st.sampled_from(["false", "true"]),
        "enable-cross-zone-upgrade": st.sampled_from(["false", "true"]),
        "max-surge": st.sampled_from(["false", "true"]),
    },
}


def _spec(name: str) -> st.SearchStrategy[str]:
    if name == "batch":  # size and percent exclude each other
        params: st.SearchStrategy[dict[str, str]] = (
            st.just({})
            | st.fixed_dictionaries({"size": st.integers(1, 30).map(str)})
            | st.fixed_dictionaries(
                {"percent": st.integers(1, 100).map(str) | st.sampled_from(["12.5", "33.3"])}
            )
        )
    else:
        params = st.fixed_dictionaries({}, optional=_PARAMETERS.get(name, {}))
    return params.map(
        lambda p: name + (":" + ",".join(f"{k}={v}" for k, v in p.items()) if p else "")
    )


def strategy_specs(names: Iterable[str] | None = None) -> st.SearchStrategy[str]:
    """Spec strings (``batch:size=3``, ``window:max-unavailable=30%``, ...) with
    random valid parameters for each strategy in ``names`` (every built-in by
    default). A name without known parameters (a plugin) is drawn bare."""
    chosen = list(names) if names is not None else sorted(builtin_names())
    if not chosen:
        raise ValueError("strategy_specs: no strategy names")
    return st.sampled_from(chosen).flatmap(_spec)


# --------------------------------------------------------------------------- checks


def run_seed(scenario: Scenario) -> int:
    """The seed ``simulate --runs 1`` uses for ``scenario`` (its first run)."""
    return derive_seed(scenario.seed, 0)


def has_faults(scenario: Scenario) -> bool:
    return bool(scenario.upgrade_failure or scenario.unhealthy_after_upgrade or scenario.bad_image)


def scope_infos(scenario: Scenario, strategy: Strategy) -> list[InstanceInfo]:
    """What the engine plans over: the in-scope instances not on the target."""
    scope = strategy.engine_options(scenario.engine).scope
    return [
        InstanceInfo(i.instance_id, i.update_domain, i.fault_domain, i.zone, i.serving)
        for i in initial_instances(scenario)
        if scope.covers(i.instance_id, i.update_domain, i.fault_domain, i.zone)
        and not (i.model == TARGET_MODEL and i.latest_model_applied)
    ]


def guarantee_for(scenario: Scenario, strategy: Strategy) -> int:
    """The strategy's declared bound on in-scope instances down at once."""
    return strategy.max_down(scope_infos(scenario, strategy), scenario.instances)


def _where(scenario: Scenario, result: RunResult) -> str:
    zones = ",".join(scenario.zones) or "none"
    return (
        f"[{scenario.instances} instances, {scenario.update_domains} UDs, "
        f"{scenario.fault_domains} FDs, zones {zones}, run seed {result.seed}]"
    )


def _completion_problems(result: RunResult, scenario: Scenario, strategy: Strategy) -> list[str]:
    if not result.final:
        raise ValueError("assert_rollout_safe needs a recorded result: run_once(..., record=True)")
    in_scope = {i.instance_id for i in scope_infos(scenario, strategy)}
    originals = [i.instance_id for i in initial_instances(scenario)]
    problems = []
    changed = [i for i in originals if i not in in_scope and result.final.get(i) != (False, True)]
    if changed:
        problems.append(f"out-of-scope instances changed or not serving: {changed[:10]}")
    stale = [i for i in originals if i in in_scope and i in result.final]
    stale = [i for i in stale if result.final[i] != (True, True)]
    if stale:
        problems.append(f"in-scope instances not serving on the target: {stale[:10]}")
    replaced = [i for i in originals if i in in_scope and i not in result.final]
    new = [i for i in result.final if i not in set(originals)]
    bad_new = [i for i in new if result.final[i] != (True, True)]
    if bad_new:
        problems.append(f"new instances not serving on the target: {bad_new[:10]}")
    if len(new) != len(replaced):
        problems.append(f"{len(replaced)} in-scope instances deleted but {len(new)} created")
    return problems


def assert_rollout_safe(
    result: RunResult,
    scenario: Scenario,
    strategy_spec: str,
    *,
    min_serving: int | None = None,
    max_outage: float | None = None,
) -> None:
    """Raise :class:`AssertionError` with a one-line message when ``result``
    (a ``run_once(scenario, strategy_spec, seed, record=True)``) breaks:

    * the strategy's guarantee: ``result.max_down`` above
      ``strategy.max_down(in-scope instances, fleet size)``;
    * completion: without faults, the rollout must complete with every in-scope
      instance serving on the target (surge: replaced by exactly one new
      instance), every out-of-scope one untouched; with faults it may also
      halt, but only at a safety gate (``max-unhealthy...``);
    * the SLO: serving never below ``min_serving`` instances, and no more than
      ``max_outage`` seconds with nothing serving.
    """
    strategy = make(strategy_spec)
    where = _where(scenario, result)
    bound = guarantee_for(scenario, strategy)
    if result.max_down > bound:
        raise AssertionError(
            f"{strategy_spec}: {result.max_down} in-scope instances down at once, but the "
            f"strategy guarantees at most {bound} ({strategy.guarantee()}) {where}"
        )
    if not has_faults(scenario):
        if result.halted:
            raise AssertionError(
                f"{strategy_spec}: halted without any fault: {result.reason} {where}"
            )
        problems = _completion_problems(result, scenario, strategy)
        if problems:
            raise AssertionError(f"{strategy_spec}: {'; '.join(problems)} {where}")
    elif result.halted and not result.reason.startswith(GATE_PREFIXES):
        raise AssertionError(
            f"{strategy_spec}: halted other than at a safety gate: {result.reason} {where}"
        )
    if min_serving is not None and result.min_serving < min_serving:
        raise AssertionError(
            f"{strategy_spec}: serving dropped to {result.min_serving} instances "
            f"(SLO: at least {min_serving}) {where}"
        )
    if max_outage is not None and result.outage_s > max_outage:
        raise AssertionError(
            f"{strategy_spec}: nothing served for {result.outage_s:g}s "
            f"(SLO: at most {max_outage:g}s) {where}"
        )


def check_rollout(
    scenario: Scenario,
    strategy_spec: str,
    *,
    seed: int | None = None,
    min_serving: int | None = None,
    max_outage: float | None = None,
) -> RunResult:
    """Run ``scenario`` once (recorded; :func:`run_seed` by default), apply
    :func:`assert_rollout_safe` and return the result. A fleet whose topology
    cannot give the strategy's waves (fault-domain waves on one fault domain,
    update-domain waves on Flexible: refused by ``simulate`` and ``upgrade``
    alike) is not an example: hypothesis is told to draw another."""
    try:
        check_topology(scenario, strategy_spec)
    except InputError:
        reject()
    result = run_once(
        scenario, strategy_spec, run_seed(scenario) if seed is None else seed, record=True
    )
    assert_rollout_safe(
        result, scenario, strategy_spec, min_serving=min_serving, max_outage=max_outage
    )
    return result
