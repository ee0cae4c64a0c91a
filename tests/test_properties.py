"""Properties of every built-in strategy over random fleets, and a stateful
test of the simulated scale set against a trivially correct model.

Fleets: 1-500 instances (mostly small), 1-20 update domains, 1-5 fault
domains, 0-3 zones, random scopes and pacing (canary, bake, pause,
checkpoints); strategies: every built-in with random valid parameters. See
``vmss_rollout.sim.testing`` for the generators.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
import simpy
from hypothesis import given, note, reject
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from vmss_rollout.engine.errors import ConcurrencyError, InputError
from vmss_rollout.engine.events import EventKind
from vmss_rollout.engine.model import (
    Health,
    Instance,
    ModelVersion,
    PowerState,
    ProvisioningState,
)
from vmss_rollout.engine.options import Amount
from vmss_rollout.sim.distributions import Fixed
from vmss_rollout.sim.runner import RunResult, check_topology, run_once
from vmss_rollout.sim.scaleset import (
    CURRENT_MODEL,
    TARGET_MODEL,
    Monitor,
    SimScaleSet,
    placement,
)
from vmss_rollout.sim.scenario import Scenario
from vmss_rollout.sim.testing import (
    ZONE_NAMES,
    assert_rollout_safe,
    check_rollout,
    fault_scenarios,
    fleets,
    guarantee_for,
    has_faults,
    initial_instances,
    run_seed,
    scope_infos,
    scoped,
    strategy_specs,
)
from vmss_rollout.sim.verify import verify
from vmss_rollout.strategies.base import InstanceInfo
from vmss_rollout.strategies.registry import make

RESOLVED = (
    EventKind.INSTANCE_HEALTHY,
    EventKind.INSTANCE_UNHEALTHY,
    EventKind.INSTANCE_FAILED,
    EventKind.INSTANCE_GONE,
)
PER_DOMAIN = ["update-domain", "fault-domain", "zone", "azure-rolling"]
ANY_SCENARIO = fleets() | fault_scenarios()


def run(scenario: Scenario, spec: str) -> RunResult:
    note(f"spec={spec!r} scenario={scenario!r}")
    try:
        check_topology(scenario, spec)  # refused by simulate and upgrade alike
    except InputError:
        reject()
    return run_once(scenario, spec, run_seed(scenario), record=True)


def info_of(scenario: Scenario, instance_id: str) -> InstanceInfo:
    """Where an instance lives: the sim places the n-th created instance (id "n")."""
    ud, fd, zone = placement(
        int(instance_id), scenario.update_domains, scenario.fault_domains, scenario.zones
    )
    return InstanceInfo(instance_id, ud, fd, zone)


def rolling_waves(result: RunResult) -> list[tuple[str, ...]]:
    return [
        e.instances
        for e in result.events
        if e.kind is EventKind.WAVE_STARTED and e.phase == "rolling"
    ]


# --------------------------------------------------------------------------- 1. completion


@given(scoped(fleets()), strategy_specs())
def test_without_faults_each_in_scope_instance_is_upgraded_exactly_once(
    scenario: Scenario, spec: str
) -> None:
    result = run(scenario, spec)
    strategy = make(spec)
    assert not result.halted, result.reason
    if not strategy.replaces:  # surge: see test_surge_max_down_stays_within_its_guarantee
        assert_rollout_safe(result, scenario, spec)

    originals = {i.instance_id for i in initial_instances(scenario)}
    in_scope = {i.instance_id for i in scope_infos(scenario, strategy)}
    ops: dict[str, Counter[str]] = {}
    for _, op, ids in result.requests:
        ops.setdefault(op, Counter()).update(ids)
    assert [op for _, op, _ in result.requests].count("update_model") == 1
    assert result.requests[0][1] == "update_model"  # the model changes before any instance

    touched = set().union(*ops.values())
    assert not touched & (originals - in_scope), "an out-of-scope instance was touched"
    for iid in originals - in_scope:
        assert result.final[iid] == (False, True)

    if strategy.replaces:
        # surge: never upgraded in place; each old instance deleted once, replaced once
        assert "upgrade" not in ops
        assert ops.get("delete", Counter()) == Counter(in_scope)
        new = set(result.final) - originals
        assert len(new) == len(in_scope)
        assert all(result.final[i] == (True, True) for i in new)
        pairs = [e.instances for e in result.events if e.kind is EventKind.SURGE_CREATED]
        assert sorted(old for old, _ in pairs) == sorted(in_scope)
        assert {n for _, n in pairs} == new
    else:
        assert ops.get("upgrade", Counter()) == Counter(in_scope)
        assert "add" not in ops and "delete" not in ops
        assert set(result.final) == originals
        for iid in in_scope:
            assert result.final[iid] == (True, True)
    assert result.upgraded == len(in_scope)


# --------------------------------------------------------------------------- 2. guarantee


@given(scoped(ANY_SCENARIO), strategy_specs())
def test_in_scope_instances_down_at_once_stay_within_the_guarantee(
    scenario: Scenario, spec: str
) -> None:
    strategy = make(spec)
    result = run(scenario, spec)
    assert result.max_down <= guarantee_for(scenario, strategy)
    if strategy.replaces and not has_faults(scenario):
        # what surge promises is capacity: the old instances serve until their
        # replacements do (and a rollback surges back the same way)
        assert result.min_serving >= scenario.instances


@given(fleets(), strategy_specs(["surge"]), st.sampled_from(["freeze", "rollback"]))
def test_surge_keeps_capacity_even_when_the_image_is_bad(
    scenario: Scenario, spec: str, on_failure: str
) -> None:
    scenario = dataclasses.replace(
        scenario,
        bad_image=True,
        engine=dataclasses.replace(scenario.engine, on_failure=on_failure),  # type: ignore[arg-type]
    )
    result = run(scenario, spec)
    assert result.max_down == 0
    assert result.min_serving >= scenario.instances
    if on_failure == "rollback":
        assert not any(on_new for on_new, _ in result.final.values())
        assert len(result.final) == scenario.instances


# --------------------------------------------------------------------------- 3. one domain


@given(scoped(ANY_SCENARIO), strategy_specs(PER_DOMAIN))
def test_per_domain_strategies_never_have_two_domains_in_flight(
    scenario: Scenario, spec: str
) -> None:
    strategy = make(spec)
    kind = strategy.domain_kind
    assert kind is not None
    kinds = [kind, "zone_update_domain"] if spec.startswith("zone") else [kind]
    result = run(scenario, spec)
    in_flight: set[str] = set()
    for event in result.events:
        if event.kind is EventKind.WAVE_STARTED:
            in_flight.update(event.instances)
        elif event.kind in RESOLVED:
            in_flight.discard(event.instances[0])
        for k in kinds:
            domains = {info_of(scenario, i).domain(k) for i in in_flight}
            assert len(domains) <= 1, f"{k}s {sorted(domains)} in flight at {event}"


# --------------------------------------------------------------------------- 4. bad image


@given(scoped(fleets()), strategy_specs(), st.sampled_from(["freeze", "rollback"]))
def test_a_bad_image_halts_within_the_thresholds(
    scenario: Scenario, spec: str, on_failure: str
) -> None:
    scenario = dataclasses.replace(
        scenario,
        bad_image=True,
        engine=dataclasses.replace(scenario.engine, on_failure=on_failure),
    )
    strategy = make(spec)
    options = strategy.engine_options(scenario.engine)
    scope = scope_infos(scenario, strategy)
    result = run(scenario, spec)
    waves = rolling_waves(result)
    touched = [i for wave in waves for i in wave]
    assert len(touched) == len(set(touched))
    if not scope:
        assert not result.halted and not touched
        return
    if result.halted:
        assert result.reason.startswith(("max-unhealthy:", "max-unhealthy-upgraded:"))

    # Every upgraded instance ends unhealthy. When the first wave completes,
    # 100% of the instances upgraded so far are unhealthy, which trips any
    # max-unhealthy-upgraded below 100 -- even for one instance (1 of 1).
    # Only max-unhealthy-upgraded = 100 (azure-rolling can set it) lets the
    # rollout go on, and then only while the pre-wave max-unhealthy gate allows.
    halt_required = options.max_unhealthy_upgraded < 100
    if halt_required:
        assert result.halted
    lock_step = spec.split(":")[0] not in ("window", "all-at-once")
    if lock_step:
        if halt_required:
            assert len(waves) == 1, "a lock-step rollout went past its first bad wave"
        # each later wave started only while the earlier (all resolved, all
        # unhealthy) instances were at most max-unhealthy % of the fleet
        before = 0
        for k, wave in enumerate(waves):
            if k:
                assert before * 100 <= options.max_unhealthy * scenario.instances
            before += len(wave)
    elif spec.startswith("window"):
        # Window keeps L = its limit in flight and starts one more whenever one
        # resolves, so the halt comes when the first *wave* completes (a gate
        # runs after each wave). Resolutions happen either all at once for a
        # wave (fixed timings: halt with L touched) or at distinct times
        # (uniform timings): then each of the first L-1 resolutions of wave 1
        # starts a one-instance wave, and the first of those to resolve, or the
        # last of wave 1, completes a wave and halts. So at most L + (L-1).
        limit = guarantee_for(scenario, strategy)
        assert halt_required
        assert len(touched) <= min(len(scope), 2 * limit - 1), (limit, len(touched))

    touched_now = [i for i in touched if i in result.final]
    if on_failure == "rollback" and result.halted:
        assert result.rolled_back
        # in place: the touched instances themselves; surge: the originals
        # stayed, and the unhealthy replacements were rolled back too
        for iid in touched_now:
            assert result.final[iid] == (False, True), iid
        assert all(state == (False, True) for state in result.final.values())
    elif on_failure == "freeze" and not strategy.replaces:
        for iid in touched_now:
            assert result.final[iid] == (True, False), iid


# --------------------------------------------------------------------------- 5. determinism


@given(scoped(ANY_SCENARIO), strategy_specs())
def test_the_same_seed_gives_the_same_timeline(scenario: Scenario, spec: str) -> None:
    first = run(scenario, spec)
    second = run_once(scenario, spec, run_seed(scenario), record=True)
    assert first.timeline == second.timeline
    assert first.events == second.events
    assert first == second


# --------------------------------------------------------------------------- the sim scale set

UPGRADE_S = 10
HEALTH_S = 5


class ScaleSetMachine(RuleBasedStateMachine):
    """``SimScaleSet`` against a model that replays fixed timings by hand.

    Model of an operation started at ``t0`` (SimPy runs an event at time T in
    ``env.run(until=now)`` only when T < now):

    * upgrade: at t0 Updating/Unknown; at t0+10 Succeeded/Unknown on the model
      at the start; at t0+15 Healthy (Unhealthy on a bad model);
    * add: at once Creating/Unknown, then the same from t0+10.
    """

    def __init__(self) -> None:
        super().__init__()
        self.env = simpy.Environment()
        self.monitor = Monitor(required=0)
        self.ss: SimScaleSet | None = None
        self.expected: dict[str, Instance] = {}
        self.model: ModelVersion = CURRENT_MODEL
        self.bad: set[ModelVersion] = set()
        self.created = 0
        self.layout: tuple[int, int, tuple[str, ...]] = (1, 1, ())
        # (time, sequence, instance id, step, model the operation started with)
        self.scheduled: list[tuple[float, int, str, str, ModelVersion]] = []
        self.seq = 0
        self.dirty: set[str] = set()
        self.deleted: list[str] = []
        #: a change since the last poll that should wake the driver (all but
        #: "Updating", which the engine does not act on)
        self.wake = False

    @property
    def sim(self) -> SimScaleSet:
        assert self.ss is not None
        return self.ss

    def _schedule(self, at: float, iid: str, step: str, model: ModelVersion) -> None:
        self.seq += 1
        self.scheduled.append((at, self.seq, iid, step, model))

    def _busy(self) -> set[str]:
        return {iid for _, _, iid, _, _ in self.scheduled}

    def _idle(self) -> list[str]:
        busy = self._busy()
        return [i for i in self.expected if i not in busy]

    def _new(self, provisioning: ProvisioningState, health: Health) -> str:
        iid = str(self.created)
        ud, fd, zone = placement(self.created, *self.layout)
        self.created += 1
        self.expected[iid] = Instance(
            iid, ud, fd, zone, model=self.model, provisioning=provisioning, health=health
        )
        self.dirty.add(iid)
        self.wake = True
        return iid

    @initialize(
        instances=st.integers(0, 6),
        update_domains=st.integers(1, 5),
        fault_domains=st.integers(1, 3),
        zones=st.integers(0, 3),
        bad_target=st.booleans(),
    )
    def create(
        self,
        instances: int,
        update_domains: int,
        fault_domains: int,
        zones: int,
        bad_target: bool,
    ) -> None:
        self.layout = (update_domains, fault_domains, ZONE_NAMES[:zones])
        self.bad = {TARGET_MODEL} if bad_target else set()
        self.ss = SimScaleSet(
            self.env,
            random.Random(0),
            instances=instances,
            update_domains=update_domains,
            fault_domains=fault_domains,
            zones=ZONE_NAMES[:zones],
            upgrade_time=Fixed(UPGRADE_S),
            health_delay=Fixed(HEALTH_S),
            bad_models=tuple(self.bad),
            monitor=self.monitor,
        )
        for _ in range(instances):
            self._new(ProvisioningState.SUCCEEDED, Health.HEALTHY)

    @precondition(lambda self: self.ss is not None and self._idle())
    @rule(data=st.data())
    def start_upgrade(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(self._idle()), min_size=1, unique=True), "ids")
        self.sim.start_upgrade(ids)
        now = self.env.now
        for iid in ids:
            self._schedule(now, iid, "updating", self.model)
            self._schedule(now + UPGRADE_S, iid, "provisioned", self.model)
            self._schedule(now + UPGRADE_S + HEALTH_S, iid, "health", self.model)
        assert self.sim.requests[-1] == (now, "upgrade", tuple(ids))

    @precondition(lambda self: self.ss is not None)
    @rule(count=st.integers(0, 3))
    def add_instances(self, count: int) -> None:
        self.sim.add_instances(count)
        now = self.env.now
        for _ in range(count):
            iid = self._new(ProvisioningState.CREATING, Health.UNKNOWN)
            self._schedule(now + UPGRADE_S, iid, "provisioned", self.model)
            self._schedule(now + UPGRADE_S + HEALTH_S, iid, "health", self.model)

    def _deletable(self) -> list[str]:
        """Any id ever created (deleting a deleted one is a no-op), including
        one whose upgrade was requested at this very instant."""
        return [str(i) for i in range(self.created)]

    @precondition(lambda self: self.ss is not None and self._deletable())
    @rule(data=st.data())
    def delete_instances(self, data: st.DataObject) -> None:
        every = self._deletable()
        ids = data.draw(st.lists(st.sampled_from(every), min_size=1, unique=True), "ids")
        self.sim.delete_instances(ids)
        for iid in ids:
            if iid in self.expected:
                del self.expected[iid]
                self.dirty.discard(iid)
                self.deleted.append(iid)
                self.wake = True
                self.scheduled = [s for s in self.scheduled if s[2] != iid]

    @precondition(lambda self: self.ss is not None)
    @rule(to_target=st.booleans())
    def update_model(self, to_target: bool) -> None:
        model = TARGET_MODEL if to_target else CURRENT_MODEL
        etag = self.sim.update_model(model, str(self.sim.etag))
        assert etag == str(self.sim.etag)
        self.model = model
        for iid, inst in self.expected.items():
            self.expected[iid] = inst.evolve(latest_model_applied=inst.model == model)
            self.dirty.add(iid)
            self.wake = True

    @precondition(lambda self: self.ss is not None)
    @rule()
    def update_model_with_a_stale_etag(self) -> None:
        with pytest.raises(ConcurrencyError):
            self.sim.update_model(TARGET_MODEL, str(self.sim.etag - 1))

    @precondition(lambda self: self.ss is not None)
    @rule(seconds=st.integers(1, 20))
    def advance(self, seconds: int) -> None:
        until = self.env.now + seconds
        self.env.run(until=until)
        due = sorted(s for s in self.scheduled if s[0] < until)
        self.scheduled = [s for s in self.scheduled if s[0] >= until]
        for _, _, iid, step, model in due:
            inst = self.expected[iid]
            if step == "updating":
                inst = inst.evolve(provisioning=ProvisioningState.UPDATING, health=Health.UNKNOWN)
            elif step == "provisioned":
                inst = inst.evolve(
                    provisioning=ProvisioningState.SUCCEEDED,
                    health=Health.UNKNOWN,
                    power=PowerState.RUNNING,
                    model=model,
                    latest_model_applied=model == self.model,
                )
            else:
                bad = model in self.bad
                inst = inst.evolve(health=Health.UNHEALTHY if bad else Health.HEALTHY)
            self.expected[iid] = inst
            self.dirty.add(iid)
            self.wake = self.wake or step != "updating"

    @precondition(lambda self: self.ss is not None)
    @rule()
    def poll(self) -> None:
        obs = self.sim.poll()
        assert {i.instance_id for i in obs.changed} == self.dirty
        assert len(obs.changed) == len(self.dirty)
        for inst in obs.changed:
            assert inst == self.expected[inst.instance_id]
        assert obs.deleted == self.deleted
        self.dirty = set()
        self.deleted = []
        self.wake = False
        assert not self.sim.changed.triggered

    @invariant()
    def instances_match_the_model(self) -> None:
        if self.ss is None:
            return
        assert set(self.ss.instances) == set(self.expected)
        for iid, inst in self.ss.instances.items():
            assert inst == self.expected[iid], iid

    @invariant()
    def counts_match_the_instances(self) -> None:
        if self.ss is None:
            return
        insts = list(self.ss.instances.values())
        serving = sum(i.serving for i in insts)
        upgrading = sum(
            i.provisioning in (ProvisioningState.UPDATING, ProvisioningState.CREATING)
            or (i.provisioning is ProvisioningState.SUCCEEDED and i.health is Health.UNKNOWN)
            for i in insts
        )
        unhealthy = sum(
            i.provisioning is ProvisioningState.FAILED or i.health is Health.UNHEALTHY
            for i in insts
        )
        on_new = sum(i.model == TARGET_MODEL for i in insts)
        assert self.ss.counts == [serving, upgrading, unhealthy, on_new]
        assert self.monitor.serving == serving
        assert self.ss.row() == (self.env.now, serving, upgrading, unhealthy, on_new)

    @invariant()
    def changed_event_fires_exactly_when_there_is_news(self) -> None:
        if self.ss is None:
            return
        assert self.ss.changed.triggered == self.wake

    def __repr__(self) -> str:
        return f"ScaleSetMachine(now={self.env.now}, instances={sorted(self.expected, key=int)})"


TestSimScaleSet = ScaleSetMachine.TestCase


def test_deleting_an_instance_right_after_its_upgrade_request() -> None:
    env = simpy.Environment()
    sim = SimScaleSet(
        env, random.Random(0), instances=2, upgrade_time=Fixed(10), health_delay=Fixed(5)
    )
    sim.start_upgrade(["0"])
    sim.delete_instances(["0"])
    env.run(until=20)
    assert set(sim.instances) == {"1"}


# --------------------------------------------------------------------------- verify and helpers


def test_verify_passes_a_safe_strategy() -> None:
    report = verify("batch:size=2", examples=15)
    assert report.ok, report.message
    assert report.examples == 15
    assert report.counterexample_toml is None


def test_verify_says_an_slo_the_guarantee_breaks_is_infeasible_by_construction() -> None:
    report = verify("all-at-once", min_serving=Amount(50, percent=True), examples=30, seed=3)
    assert not report.ok and report.infeasible
    assert report.counterexample_toml is None  # nothing to reproduce
    # shrunk to the smallest fleet tried: 2 instances (1 cannot keep 50% during any rollout)
    assert report.min_instances == 2
    assert "infeasible by construction on 2 instances" in report.message
    assert "\n" not in report.message


def test_verify_rejects_an_invalid_spec_up_front() -> None:
    with pytest.raises(InputError):
        verify("batch:size=0")
    with pytest.raises(InputError):
        verify("no-such-strategy")


def test_assert_rollout_safe_names_the_broken_guarantee() -> None:
    scenario = Scenario(instances=6, upgrade="fixed(10s)", health_delay="fixed(5s)", runs=1)
    result = check_rollout(scenario, "batch:size=2")
    with pytest.raises(AssertionError, match=r"3 in-scope instances down at once.*at most 2"):
        assert_rollout_safe(dataclasses.replace(result, max_down=3), scenario, "batch:size=2")
    with pytest.raises(AssertionError, match="halted without any fault"):
        assert_rollout_safe(
            dataclasses.replace(result, halted=True, reason="boom"), scenario, "batch:size=2"
        )
    with pytest.raises(AssertionError, match=r"serving dropped to 4 .*at least 5"):
        assert_rollout_safe(result, scenario, "batch:size=2", min_serving=5)
    with pytest.raises(AssertionError, match="not serving on the target"):
        final = {**result.final, "0": (False, True)}
        assert_rollout_safe(dataclasses.replace(result, final=final), scenario, "batch:size=2")


@given(strategy_specs())
def test_strategy_specs_are_valid_and_canonical(spec: str) -> None:
    strategy = make(spec)
    assert make(strategy.spec()).spec() == strategy.spec()
