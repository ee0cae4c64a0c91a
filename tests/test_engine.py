"""The engine's state machine driven by hand: no SimPy, no clock, no backend.

Each test builds a :class:`Rollout` over hand-made instances, feeds it
observations and times, and checks the actions and events it answers with.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import vmss_rollout.engine
import vmss_rollout.strategies
from vmss_rollout.engine import (
    AddInstances,
    Amount,
    DeleteInstances,
    EngineOptions,
    EventKind,
    Health,
    ImageReference,
    Instance,
    ModelVersion,
    Phase,
    ProvisioningState,
    Rollout,
    Scope,
    StartUpgrade,
    UpdateModel,
)
from vmss_rollout.engine.errors import InputError
from vmss_rollout.strategies.base import StrategyBase, View
from vmss_rollout.strategies.registry import make

OLD = ModelVersion(ImageReference("Canonical", "ubuntu", "server", "1.0.0"))
NEW = ModelVersion(ImageReference("Canonical", "ubuntu", "server", "2.0.0"))


def fleet(n: int, update_domains: int = 5, fault_domains: int = 3) -> list[Instance]:
    return [Instance(str(i), i % update_domains, i % fault_domains, model=OLD) for i in range(n)]


def upgraded(
    inst: Instance, health: Health = Health.HEALTHY, model: ModelVersion = NEW
) -> Instance:
    """``inst`` after an upgrade to ``model`` completed, reporting ``health``."""
    return inst.evolve(
        model=model,
        latest_model_applied=True,
        provisioning=ProvisioningState.SUCCEEDED,
        health=health,
    )


def rolling(
    instances: Sequence[Instance], spec: str, options: EngineOptions | None = None
) -> Rollout:
    """A rollout past its model update (at time 0), before its first wave."""
    rollout = Rollout(OLD, NEW, instances, make(spec), options)
    assert rollout.step(0).actions == (UpdateModel(NEW),)
    rollout.model_updated(0)
    return rollout


def kinds(rollout: Rollout) -> list[EventKind]:
    return [e.kind for e in rollout.events]


def started(step_actions: Sequence[object]) -> list[tuple[str, ...]]:
    return [a.instance_ids for a in step_actions if isinstance(a, StartUpgrade)]


# --------------------------------------------------------------------------- ordering


def test_the_model_is_updated_before_any_instance() -> None:
    rollout = Rollout(OLD, NEW, fleet(4), make("batch:size=2"))
    step = rollout.step(0)
    assert step.actions == (UpdateModel(NEW),)
    assert rollout.phase is Phase.UPDATING_MODEL
    assert rollout.step(1).actions == ()  # still waiting for the model update
    rollout.model_updated(2)
    assert rollout.phase is Phase.ROLLING
    assert rollout.step(2).actions == (StartUpgrade(("0", "1")),)
    assert kinds(rollout) == [
        EventKind.ROLLOUT_STARTED,
        EventKind.MODEL_UPDATE_REQUESTED,
        EventKind.MODEL_UPDATED,
        EventKind.WAVE_STARTED,
    ]


def test_a_failed_model_update_halts_before_touching_instances() -> None:
    rollout = Rollout(OLD, NEW, fleet(3), make("one-at-a-time"))
    rollout.step(0)
    rollout.model_updated(1, error="etag mismatch")
    assert rollout.finished
    assert rollout.outcome().reason == "model update failed: etag mismatch"
    assert not any(e.kind is EventKind.WAVE_STARTED for e in rollout.events)


def test_nothing_to_do_finishes_at_once() -> None:
    instances = [i.evolve(model=NEW) for i in fleet(3)]
    rollout = Rollout(NEW, NEW, instances, make("batch"))
    assert rollout.step(0).actions == ()
    assert rollout.finished and rollout.outcome().completed


# --------------------------------------------------------------------------- waves


def test_lock_step_waves_wait_for_the_whole_previous_wave() -> None:
    instances = fleet(5)
    rollout = rolling(instances, "batch:size=2")
    assert started(rollout.step(0).actions) == [("0", "1")]
    rollout.observe(10, [instances[0].evolve(provisioning=ProvisioningState.UPDATING)])
    assert rollout.step(10).actions == ()
    rollout.observe(12, [upgraded(instances[0])])
    assert rollout.step(12).actions == ()  # "1" is still in flight
    rollout.observe(15, [upgraded(instances[1])])
    assert started(rollout.step(15).actions) == [("2", "3")]
    rollout.observe(30, [upgraded(instances[2]), upgraded(instances[3])])
    assert started(rollout.step(30).actions) == [("4",)]
    rollout.observe(45, [upgraded(instances[4])])
    assert rollout.step(45).actions == ()
    assert rollout.finished
    outcome = rollout.outcome()
    assert outcome.completed and not outcome.halted
    assert (outcome.upgraded, outcome.scope) == (5, 5)
    assert kinds(rollout).count(EventKind.WAVE_COMPLETED) == 3
    assert rollout.max_in_flight == 2


def test_window_tops_up_as_instances_resolve() -> None:
    instances = fleet(5)
    rollout = rolling(instances, "window:max-unavailable=2")
    assert started(rollout.step(0).actions) == [("0", "1")]
    rollout.observe(10, [upgraded(instances[0])])
    assert started(rollout.step(10).actions) == [("2",)]


def test_surge_creates_before_it_deletes() -> None:
    instances = fleet(2)
    rollout = rolling(instances, "surge")
    assert rollout.step(0).actions == (AddInstances(1),)
    new = Instance("2", 0, 0, model=NEW, provisioning=ProvisioningState.CREATING)
    rollout.observe(1, [new.evolve(health=Health.UNKNOWN)])
    assert rollout.step(1).actions == ()
    assert [e.instances for e in rollout.events if e.kind is EventKind.SURGE_CREATED] == [
        ("0", "2")
    ]
    rollout.observe(20, [upgraded(new)])
    step = rollout.step(20)
    assert step.actions[0] == DeleteInstances(("0",))  # the old one goes once the new serves
    assert step.actions[1:] == (AddInstances(1),)


# --------------------------------------------------------------------------- health and gates


def test_an_instance_not_healthy_within_the_timeout_counts_as_unhealthy() -> None:
    instances = fleet(3)
    rollout = rolling(instances, "one-at-a-time", EngineOptions(health_timeout=300))
    rollout.step(0)
    rollout.observe(10, [upgraded(instances[0], Health.UNKNOWN)])
    step = rollout.step(10)
    assert step.wake_at == 310
    assert kinds(rollout)[-1] is EventKind.INSTANCE_UPGRADED
    assert rollout.step(309.9).actions == ()
    assert not any(e.kind is EventKind.INSTANCE_UNHEALTHY for e in rollout.events)
    rollout.step(310)
    (unhealthy,) = [e for e in rollout.events if e.kind is EventKind.INSTANCE_UNHEALTHY]
    assert unhealthy.instances == ("0",)
    assert unhealthy.time == 310
    assert "not healthy 300s after its upgrade" in unhealthy.detail
    assert rollout.outcome().unhealthy == 1


def test_too_many_unhealthy_instances_halt_before_a_wave() -> None:
    instances = fleet(10)
    for i in (3, 5, 7):  # 30% of the fleet, not in flight
        instances[i] = instances[i].evolve(health=Health.UNHEALTHY)
    rollout = rolling(instances, "batch:size=2")
    assert rollout.step(0).actions == ()
    assert rollout.finished
    outcome = rollout.outcome()
    assert outcome.halted and not outcome.completed
    assert outcome.reason.startswith("max-unhealthy:")
    assert "3 of 10" in outcome.reason
    assert not any(e.kind is EventKind.WAVE_STARTED for e in rollout.events)


def test_exactly_max_unhealthy_percent_does_not_halt() -> None:
    instances = fleet(10)
    for i in (3, 5):  # 20%: the gate halts only above it
        instances[i] = instances[i].evolve(health=Health.UNHEALTHY)
    rollout = rolling(instances, "batch:size=2")
    assert started(rollout.step(0).actions) == [("0", "1")]


def test_too_many_unhealthy_upgraded_instances_halt_after_a_wave() -> None:
    instances = fleet(6)
    rollout = rolling(instances, "batch:size=2")
    rollout.step(0)
    rollout.observe(20, [upgraded(instances[0]), upgraded(instances[1], Health.UNHEALTHY)])
    assert rollout.step(20).actions == ()
    assert rollout.finished
    outcome = rollout.outcome()
    assert outcome.reason.startswith("max-unhealthy-upgraded:")
    assert "1 of 2" in outcome.reason
    assert (outcome.upgraded, outcome.unhealthy) == (1, 1)
    halted = [e for e in rollout.events if e.kind is EventKind.HALTED]
    assert len(halted) == 1 and halted[0].time == 20


def test_a_halt_drains_the_instances_in_flight() -> None:
    instances = fleet(6)
    rollout = rolling(instances, "window:max-unavailable=3")
    rollout.step(0)  # "0", "1", "2" in flight, all in wave 1
    rollout.observe(10, [upgraded(instances[0], Health.UNHEALTHY)])
    assert started(rollout.step(10).actions) == [("3",)]  # wave 1 not complete: no gate yet
    rollout.observe(12, [upgraded(instances[3], Health.UNHEALTHY)])  # wave 2 completes: 2 of 2
    assert rollout.step(12).actions == ()
    assert rollout.phase is Phase.DRAINING
    rollout.observe(20, [upgraded(instances[1]), upgraded(instances[2])])
    rollout.step(20)
    assert rollout.finished
    assert rollout.outcome().upgraded == 2


# --------------------------------------------------------------------------- pacing


def test_pause_delays_the_next_wave() -> None:
    instances = fleet(2)
    rollout = rolling(instances, "batch:size=1", EngineOptions(pause=60))
    rollout.step(0)
    rollout.observe(15, [upgraded(instances[0])])
    step = rollout.step(15)
    assert step.actions == ()
    assert step.wake_at == 75
    assert rollout.step(74).actions == ()
    assert started(rollout.step(75).actions) == [("1",)]


def test_canary_wave_then_bake_then_the_rest() -> None:
    instances = fleet(7)
    options = EngineOptions(canary=Amount(1), bake=600)
    rollout = rolling(instances, "batch:size=3", options)
    assert started(rollout.step(0).actions) == [("0",)]  # the batch, cut to the canary
    rollout.observe(20, [upgraded(instances[0])])
    step = rollout.step(20)
    assert step.actions == ()
    assert step.wake_at == 620
    assert kinds(rollout)[-1] is EventKind.CHECKPOINT
    assert rollout.step(619).actions == ()
    assert started(rollout.step(620).actions) == [("1", "2", "3")]


def test_checkpoints_stop_the_rollout_at_their_share_of_the_scope() -> None:
    instances = fleet(10)
    rollout = rolling(instances, "batch:size=4", EngineOptions(checkpoints=(50.0,), bake=60))
    assert started(rollout.step(0).actions) == [("0", "1", "2", "3")]
    rollout.observe(10, [upgraded(i) for i in instances[:4]])
    assert started(rollout.step(10).actions) == [("4",)]  # cut at 5 of 10
    rollout.observe(20, [upgraded(instances[4])])
    assert rollout.step(20).wake_at == 80
    assert started(rollout.step(80).actions) == [("5", "6", "7", "8")]


# --------------------------------------------------------------------------- rollback


def test_rollback_restores_the_model_and_re_upgrades_what_was_touched() -> None:
    instances = fleet(4)
    rollout = rolling(instances, "batch:size=2", EngineOptions(on_failure="rollback"))
    rollout.step(0)
    rollout.observe(15, [upgraded(instances[0]), upgraded(instances[1], Health.UNHEALTHY)])
    step = rollout.step(15)
    assert step.actions == (UpdateModel(OLD),)
    assert rollout.phase is Phase.ROLLBACK_MODEL
    (event,) = [e for e in rollout.events if e.kind is EventKind.ROLLBACK_STARTED]
    assert sorted(event.instances) == ["0", "1"]
    rollout.model_updated(15)
    assert rollout.phase is Phase.ROLLING_BACK
    assert started(rollout.step(15).actions) == [("0", "1")]
    rollout.observe(30, [upgraded(instances[0], model=OLD), upgraded(instances[1], model=OLD)])
    rollout.step(30)
    assert rollout.finished
    outcome = rollout.outcome()
    assert outcome.rolled_back and outcome.halted
    assert outcome.reason.startswith("max-unhealthy-upgraded:")
    # "2" and "3" were never touched, before or during the rollback
    waves = [e.instances for e in rollout.events if e.kind is EventKind.WAVE_STARTED]
    assert waves == [("0", "1"), ("0", "1")]


def test_freeze_leaves_touched_instances_alone() -> None:
    instances = fleet(4)
    rollout = rolling(instances, "batch:size=2", EngineOptions(on_failure="freeze"))
    rollout.step(0)
    rollout.observe(15, [upgraded(instances[0]), upgraded(instances[1], Health.UNHEALTHY)])
    assert rollout.step(15).actions == ()
    assert rollout.finished and not rollout.outcome().rolled_back


# --------------------------------------------------------------------------- strategy and scope


@dataclass(frozen=True)
class Lazy(StrategyBase):
    name = "lazy"
    summary = "chooses nothing (or only instances that are not pending)"

    def next_wave(self, view: View) -> Sequence[str]:
        return ["no-such-instance"]


def test_a_strategy_that_chooses_nothing_halts_with_a_reason() -> None:
    rollout = Rollout(OLD, NEW, fleet(3), Lazy())
    rollout.step(0)
    rollout.model_updated(0)
    assert rollout.step(0).actions == ()
    assert rollout.finished
    reason = rollout.outcome().reason
    assert reason == ("strategy lazy chose no instance while 3 were pending and none in flight")


def test_a_pending_instance_deleted_leaves_the_scope() -> None:
    instances = fleet(3)
    rollout = rolling(instances, "batch:size=1")
    assert started(rollout.step(0).actions) == [("0",)]
    rollout.observe(5, deleted=["2"])
    gone = [e for e in rollout.events if e.kind is EventKind.INSTANCE_GONE]
    assert [(e.instances, e.detail) for e in gone] == [(("2",), "deleted before its turn")]
    rollout.observe(10, [upgraded(instances[0])])
    assert started(rollout.step(10).actions) == [("1",)]
    rollout.observe(20, [upgraded(instances[1])])
    rollout.step(20)
    assert rollout.finished
    outcome = rollout.outcome()
    assert outcome.completed
    assert (outcome.scope, outcome.upgraded, outcome.gone) == (2, 2, 0)


def test_an_in_flight_instance_deleted_resolves_as_gone() -> None:
    instances = fleet(2)
    rollout = rolling(instances, "batch:size=1")
    rollout.step(0)
    rollout.observe(5, deleted=["0"])
    assert started(rollout.step(5).actions) == [("1",)]
    rollout.observe(10, [upgraded(instances[1])])
    rollout.step(10)
    outcome = rollout.outcome()
    assert outcome.completed
    assert (outcome.scope, outcome.upgraded, outcome.gone) == (2, 1, 1)


def test_scope_filters_intersect_and_skip_instances_already_on_the_target() -> None:
    instances = fleet(12, update_domains=3, fault_domains=2)
    instances[7] = upgraded(instances[7])  # UD 1, FD 1, already on the target
    scope = Scope(update_domains=frozenset({1}), fault_domains=frozenset({1}))
    rollout = rolling(instances, "all-at-once", EngineOptions(scope=scope))
    # UD 1: 1, 4, 7, 10; FD 1: odd ids -> 1, 7; 7 is done already
    assert started(rollout.step(0).actions) == [("1",)]
    assert rollout.outcome().scope == 1


def test_scope_by_instance_ids() -> None:
    scope = Scope(instances=frozenset({"2", "0"}))
    rollout = rolling(fleet(5), "all-at-once", EngineOptions(scope=scope))
    assert started(rollout.step(0).actions) == [("0", "2")]


@pytest.mark.parametrize(
    ("scope", "needle"),
    [
        (Scope(instances=frozenset({"2", "9"})), "only_instances: 9 not in the scale set"),
        (Scope(update_domains=frozenset({7})), "only_update_domains: 7 not in the scale set"),
        (Scope(fault_domains=frozenset({0, 4})), "only_fault_domains: 4 not in the scale set"),
        (Scope(zones=frozenset({"1"})), "only_zones: 1 not in the scale set"),
    ],
)
def test_a_scope_value_that_matches_nothing_is_an_input_error(scope: Scope, needle: str) -> None:
    with pytest.raises(InputError) as err:
        rolling(fleet(5), "all-at-once", EngineOptions(scope=scope))
    assert needle in str(err.value)


# --------------------------------------------------------------------------- purity

#: no I/O in the engine: the SQLite journal and the ARM JSON mapping live in backends/
FORBIDDEN = {"simpy", "azure", "time", "asyncio", "sqlite3"}


def test_importing_the_engine_loads_neither_simpy_azure_sqlite_nor_asyncio() -> None:
    code = (
        "import sys, vmss_rollout.engine\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'simpy', 'azure', 'asyncio', 'sqlite3', '_sqlite3'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("package", [vmss_rollout.engine, vmss_rollout.strategies])
def test_engine_source_imports_no_io_module(package: object) -> None:
    # `time` is in sys.modules of every interpreter, so check the source itself
    # (strategies too: the engine imports them)
    folder = Path(package.__file__).parent  # type: ignore[attr-defined]
    files = sorted(folder.glob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            bad = {n.split(".")[0] for n in names} & FORBIDDEN
            assert not bad, f"{path.name} imports {sorted(bad)}"


def test_resume_follows_instances_on_the_target_still_waiting_for_health() -> None:
    """After a kill, an instance already upgraded but not yet reporting health is
    followed (and times out if it stays silent), never asked to upgrade again."""
    instances = fleet(3)
    instances[0] = upgraded(instances[0], Health.UNKNOWN)  # the killed run's last wave
    instances[1] = upgraded(instances[1], Health.HEALTHY)
    rollout = Rollout(NEW, NEW, instances, make("one-at-a-time"), EngineOptions(health_timeout=60))
    step = rollout.step(100)
    assert started(step.actions) == []  # "0" is in flight already; nothing else starts
    assert step.wake_at == 160
    rollout.observe(130, [instances[0].evolve(health=Health.HEALTHY)])
    assert started(rollout.step(130).actions) == [("2",)]
    assert rollout.outcome().upgraded == 1  # "0" resolved done; "1" was never in scope

    silent = fleet(2)
    silent[0] = upgraded(silent[0], Health.UNKNOWN)
    quiet = Rollout(NEW, NEW, silent, make("one-at-a-time"), EngineOptions(health_timeout=60))
    quiet.step(0)
    quiet.step(60)
    assert [e.detail for e in quiet.events if e.kind is EventKind.INSTANCE_UNHEALTHY] == [
        "not healthy 60s after its upgrade"
    ]
