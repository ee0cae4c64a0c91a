"""Run rollouts on the simulated scale set: one run, many runs, and the
aggregate numbers the CLI prints.

Two drivers run the engine on the simulated scale set. The polled one
(:class:`_PolledDriver`, the default: ``[driver] poll_interval = "5:30"``)
is ``backends/realtime.py``'s loop in simulated time: poll, observe, step,
execute, sleep MIN after a change or an action doubling to MAX, shortened to
the engine's next deadline; completion and health are seen only at polls, and
each ARM call costs ``request_latency``. So a simulated duration is what
``upgrade`` takes. The idealised one (:class:`_Driver`, ``poll_interval =
"0"``) wakes on every change at once and makes no calls: the fastest to run,
and the lower bound of any driver's duration.

``run_once`` is a pure function of (scenario, strategy spec, seed): the same
arguments give the same result bit for bit, in any process, so Monte Carlo
runs can be farmed out to process pools or clusters unchanged.
"""

from __future__ import annotations

import gc
import hashlib
import math
import random
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.backend import execute
from ..engine.events import Action, Event, EventKind, StartUpgrade
from ..engine.model import Instance, ProvisioningState, UpgradeMode
from ..engine.polling import PollInterval
from ..engine.rollout import Rollout
from ..engine.topology import check_domains
from ..strategies.base import Strategy
from ..strategies.registry import make
from .scaleset import CURRENT_MODEL, TARGET_MODEL, Monitor, SimScaleSet, TimelineRow
from .scenario import Scenario

if TYPE_CHECKING:
    import simpy

METRICS = (
    "duration_s",
    "min_serving",
    "outage_s",
    "degraded_s",
    "capacity_loss_instance_s",
    "upgraded",
    "failed",
)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for one simulated rollout, as ``timeit``
    does: a rollout allocates many short-lived objects and few cycles, and the
    collector's passes over a large fleet cost 10-25% of a 100 000-instance run
    (benchmarks/run.py) for no memory saved. Restored afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def derive_seed(seed: int, run: int) -> int:
    """The seed of run ``run`` of a Monte Carlo study seeded with ``seed``:
    stable across processes and Python versions (no ``hash()``)."""
    digest = hashlib.blake2b(f"vmss-rollout:{seed}:{run}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass
class RunResult:
    strategy: str
    seed: int
    duration_s: float
    min_serving: int
    outage_s: float
    degraded_s: float
    capacity_loss_instance_s: float
    upgraded: int
    failed: int
    unhealthy: int
    halted: bool
    reason: str
    rolled_back: bool
    scope: int
    #: the most in-scope instances upgrading at once
    max_down: int
    timeline: list[TimelineRow] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    #: final state: instance id -> (model is the target, serving)
    final: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    requests: list[tuple[float, str, tuple[str, ...]]] = field(default_factory=list)

    def waves(self) -> list[tuple[str, ...]]:
        return [e.instances for e in self.events if e.kind is EventKind.WAVE_STARTED]


def build(
    scenario: Scenario, seed: int, record: bool = False, fleet: Sequence[Instance] | None = None
) -> tuple[simpy.Environment, SimScaleSet]:
    """A fresh environment and scale set for ``scenario``."""
    import simpy  # here, not at the top: ``vmss-rollout --help`` does not need it

    env = simpy.Environment()
    monitor = Monitor(required=scenario.required_serving(), record=record)
    scale_set = SimScaleSet(
        env,
        random.Random(seed),
        instances=scenario.instances,
        update_domains=scenario.update_domains,
        fault_domains=scenario.fault_domains,
        zones=scenario.zones,
        upgrade_time=scenario.upgrade,
        health_delay=scenario.health_delay,
        upgrade_failure=scenario.upgrade_failure,
        unhealthy_after_upgrade=scenario.unhealthy_after_upgrade,
        bad_models=(TARGET_MODEL,) if scenario.bad_image else (),
        model=CURRENT_MODEL,
        new_model=TARGET_MODEL,
        upgrade_mode=UpgradeMode(scenario.upgrade_policy),
        monitor=monitor,
        name=scenario.name,
        fleet=fleet,
        flexible=scenario.orchestration == "Flexible",
    )
    return env, scale_set


class _Driver:
    """Wakes a rollout on a simulated scale set: observe what changed, step,
    execute, and arm a timer for the engine's deadline. One wake-up per set of
    simultaneous changes (the scale set's one ``changed`` event) or deadline."""

    def __init__(self, env: simpy.Environment, rollout: Rollout, backend: SimScaleSet) -> None:
        self.env = env
        self.rollout = rollout
        self.backend = backend
        self.etag = backend.read()[0].etag
        #: the earliest deadline a pending timer will wake us for
        self.next_timer = math.inf
        #: when the engine asked to be woken at its last step (None: only on change)
        self.wake_at: float | None = None

    def _timer_fired(self, event: simpy.Event) -> None:
        if event.value == self.next_timer:
            self.next_timer = math.inf
        wake_at = self.wake_at
        if wake_at is not None and wake_at > self.env.now:
            # a stale deadline (the instance it was for is healthy by now): the
            # engine would wake for nothing, so wait for its current one instead
            self._arm(wake_at)
        elif wake_at is not None:
            self.backend.notify()

    def _arm(self, wake_at: float) -> None:
        if wake_at < self.next_timer:
            # an earlier pending timer would wake us too soon, which is harmless;
            # a later one would wake us too late, so add this one
            self.next_timer = wake_at
            timer = self.env.timeout(max(0.0, wake_at - self.env.now), value=wake_at)
            timer.callbacks.append(self._timer_fired)

    def wake(self) -> bool:
        """One observe/step/execute round; True once the rollout is finished."""
        env, rollout, backend = self.env, self.rollout, self.backend
        now = env.now
        obs = backend.poll()
        rollout.observe(now, obs.changed, obs.deleted)
        step = rollout.step(now)
        if step.actions:
            self.etag = execute(rollout, backend, step.actions, lambda: env.now, self.etag)
        if rollout.finished:
            return True
        self.wake_at = step.wake_at
        if step.wake_at is not None:
            self._arm(step.wake_at)
        return False


#: an instance still being upgraded or created: its operation still runs
_PROVISIONING = (ProvisioningState.UPDATING, ProvisioningState.CREATING)


class _PolledDriver:
    """``backends/realtime.py``'s ``run`` in simulated time (keep them in step).

    A poll is the calls ``AzureBackend.poll`` makes: one GET per upgrade
    operation it follows (an upgrade action's instances: the operation runs
    until none of them is still updating, as the emulator's does; the GET that
    finds it ended is the last), then ceil(instances / page_size) list pages.
    The instances' state is read when the calls are done, and the engine sees
    it at that time. Each action is one call, in order. Every call moves the
    clock by ``latency`` (``realtime.run`` sleeps after its calls), then the
    driver sleeps MIN after a change or an action, doubling to MAX while
    nothing changes, shortened to the engine's next deadline."""

    def __init__(
        self,
        env: simpy.Environment,
        rollout: Rollout,
        backend: SimScaleSet,
        poll: tuple[float, float],
        latency: float = 0.0,
        page_size: int = 50,
    ) -> None:
        self.env = env
        self.rollout = rollout
        self.backend = backend
        self.interval = PollInterval(*poll)
        self.latency = latency
        self.page_size = page_size
        #: the instance ids of each upgrade operation followed (with latency only)
        self.operations: list[tuple[str, ...]] = []

    def poll_calls(self) -> int:
        """The calls of one poll now; forgets the operations found ended."""
        instances = self.backend.instances
        followed = len(self.operations)
        self.operations = [
            op
            for op in self.operations
            if any(
                (inst := instances.get(iid)) is not None and inst.provisioning in _PROVISIONING
                for iid in op
            )
        ]
        return followed + max(1, -(-len(instances) // self.page_size))

    def _send(self, actions: Sequence[Action], etag: str | None) -> str | None:
        """Send ``actions`` now; with latency, one action whose call returns (and
        the engine hears of it) ``latency`` seconds later, as on Azure."""
        env, latency = self.env, self.latency
        etag = execute(self.rollout, self.backend, actions, lambda: env.now + latency, etag)
        if self.latency:
            self.operations += [a.instance_ids for a in actions if isinstance(a, StartUpgrade)]
        return etag

    def run(self) -> Generator[Any, Any, None]:
        env, rollout, backend, latency = self.env, self.rollout, self.backend, self.latency
        etag = backend.read()[0].etag
        while True:
            if latency:
                yield env.timeout(self.poll_calls() * latency)
            obs = backend.poll()
            now = env.now
            rollout.observe(now, obs.changed, obs.deleted)
            step = rollout.step(now)
            actions = step.actions
            if latency:
                for action in actions:  # one call each, in order
                    etag = self._send((action,), etag)
                    yield env.timeout(latency)
            elif actions:
                etag = self._send(actions, etag)
            if rollout.finished:
                return
            changed = bool(obs.changed or obs.deleted or actions)
            wait = self.interval.next(changed)
            if step.wake_at is not None:
                wait = min(wait, max(0.0, step.wake_at - env.now))
            elif not changed and env.peek() == math.inf:
                # nothing can change any more and the engine set no deadline: the
                # real driver would poll forever (the idealised one's run ends)
                raise RuntimeError("the simulated rollout waits for a change that cannot come")
            yield env.timeout(wait)


def drive(
    env: simpy.Environment, rollout: Rollout, backend: SimScaleSet
) -> Generator[Any, Any, None]:
    """The driver as a SimPy process: wake, then sleep until the scale set
    changes or the engine's deadline passes (both trigger the one ``changed`` event)."""
    driver = _Driver(env, rollout, backend)
    while not driver.wake():
        yield backend.changed


def simulate_rollout(
    env: simpy.Environment,
    rollout: Rollout,
    scale_set: SimScaleSet,
    *,
    poll: tuple[float, float] = (0.0, 0.0),
    latency: float = 0.0,
    page_size: int = 50,
) -> None:
    """Run ``rollout`` on ``scale_set`` until it finishes (simulated time stops
    there), driven by :class:`_PolledDriver` with ``poll`` (MIN, MAX) seconds,
    ``latency`` seconds per call and ``page_size`` instances per list page, or,
    with ``poll`` (0, 0), by the idealised driver: a callback on the
    ``changed`` event rather than a process, the same wake-ups without
    resuming a generator for each."""
    if poll[1] > 0:
        polled = _PolledDriver(env, rollout, scale_set, poll, latency, page_size)
        process = env.process(polled.run())
        with _gc_paused():
            env.run(until=process)
        return
    driver = _Driver(env, rollout, scale_set)
    done = env.event()

    def woken(_: simpy.Event | None) -> None:
        if driver.wake():
            done.succeed()
        else:
            scale_set.changed.callbacks.append(woken)

    woken(None)
    with _gc_paused():
        if not done.triggered:
            env.run(until=done)


#: strategies that cannot change, by spec: built once per process
_SHARED_STRATEGIES: dict[str, Strategy] = {}


def _strategy(spec: str) -> Strategy:
    """``make(spec)``, built once per process when the strategy cannot change
    (a frozen dataclass, as every built-in one): making one reads the installed
    packages' entry points and metadata, about a millisecond, more than a
    20-instance run costs. Other strategies are built afresh for each run."""
    strategy = _SHARED_STRATEGIES.get(spec)
    if strategy is None:
        strategy = make(spec)
        params = getattr(type(strategy), "__dataclass_params__", None)
        if params is not None and params.frozen:
            _SHARED_STRATEGIES[spec] = strategy
    return strategy


def simulate(
    scenario: Scenario,
    strategy: str,
    seed: int,
    *,
    record: bool = False,
    fleet: Sequence[Instance] | None = None,
) -> tuple[simpy.Environment, SimScaleSet, Rollout]:
    """Build the scale set and the rollout and run it to the end (the
    collector paused throughout: building a large fleet is most of what it
    would scan)."""
    with _gc_paused():
        env, scale_set = build(scenario, seed, record, fleet)
        _, instances = scale_set.read()
        rollout = Rollout(
            CURRENT_MODEL,
            TARGET_MODEL,
            instances,
            _strategy(strategy),
            scenario.engine,
            keep_events=record,
        )
        simulate_rollout(
            env,
            rollout,
            scale_set,
            poll=scenario.poll_interval,
            latency=scenario.request_latency,
            page_size=scenario.page_size,
        )
    return env, scale_set, rollout


def check_topology(scenario: Scenario, strategy: str) -> None:
    """Refuse what the scenario's scale set could not give, as ``upgrade`` refuses
    it on a live one (:func:`engine.topology.check_domains`)."""
    check_domains(
        f"scenario {scenario.name}",
        flexible=scenario.orchestration == "Flexible",
        fault_domain_count=scenario.fault_domains,
        strategy=_strategy(strategy).name,
        scope=scenario.engine.scope,
        option=lambda field: f"engine.only_{field}",
    )


def run_once(
    scenario: Scenario,
    strategy: str,
    seed: int,
    *,
    record: bool = False,
    fleet: Sequence[Instance] | None = None,
) -> RunResult:
    """One simulated rollout. ``record`` keeps the timeline, events and request
    log; ``fleet`` replaces the scenario's round-robin topology with given
    instances' ids and domains (a live scale set's, for ``plan``)."""
    check_topology(scenario, strategy)
    env, scale_set, rollout = simulate(scenario, strategy, seed, record=record, fleet=fleet)
    assert scale_set.monitor is not None
    monitor = scale_set.monitor
    monitor.close(env.now)
    outcome = rollout.outcome()
    return RunResult(
        strategy=strategy,
        seed=seed,
        duration_s=outcome.finished_at - outcome.started_at,
        min_serving=monitor.min_serving,
        outage_s=monitor.outage_s,
        degraded_s=monitor.degraded_s,
        capacity_loss_instance_s=monitor.capacity_loss,
        upgraded=outcome.upgraded,
        failed=outcome.failed + outcome.unhealthy,
        unhealthy=outcome.unhealthy,
        halted=outcome.halted,
        reason=outcome.reason,
        rolled_back=outcome.rolled_back,
        scope=outcome.scope,
        max_down=rollout.max_in_flight,
        timeline=monitor.timeline,
        events=rollout.events,
        final={
            i: (inst.model == TARGET_MODEL, inst.serving) for i, inst in scale_set.instances.items()
        }
        if record
        else {},
        requests=scale_set.requests if record else [],
    )


def run_many(
    scenario: Scenario,
    strategy: str,
    runs: int | None = None,
    seed: int | None = None,
    fleet: Sequence[Instance] | None = None,
) -> list[RunResult]:
    """``runs`` independent runs from seeds derived from ``seed`` (scenario's by default)."""
    n = scenario.runs if runs is None else runs
    base = scenario.seed if seed is None else seed
    return [run_once(scenario, strategy, derive_seed(base, i), fleet=fleet) for i in range(n)]


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return 0.0
    rank = p / 100 * (len(sorted_values) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def stats(values: Iterable[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "min": 0.0, "max": 0.0}
    return {
        "mean": sum(ordered) / len(ordered),
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "min": float(ordered[0]),
        "max": float(ordered[-1]),
    }


def summarize(strategy: str, seed: int, results: Sequence[RunResult]) -> dict[str, Any]:
    """The JSON contract: strategy, runs, seed, halted_runs and a stats object per metric."""
    out: dict[str, Any] = {
        "strategy": strategy,
        "runs": len(results),
        "seed": seed,
        "halted_runs": sum(r.halted for r in results),
        "rolled_back_runs": sum(r.rolled_back for r in results),
    }
    for metric in METRICS:
        out[metric] = stats(getattr(r, metric) for r in results)
    reasons = sorted({r.reason.split(":")[0] for r in results if r.halted})
    out["halt_reasons"] = reasons
    out["max_down"] = max((r.max_down for r in results), default=0)
    return out
