"""The rollout state machine: sans-I/O, clock-free, written once.

Theory of operation
-------------------
A driver owns the clock and the backend. It repeatedly

1. feeds what it observed (:meth:`Rollout.observe`: changed instances, deleted
   ids) and the current time,
2. asks :meth:`Rollout.step` for actions (update the model, start upgrading
   instances, add or delete instances) and the time it wants to be woken at the
   latest,
3. executes the actions and reports the model update with
   :meth:`Rollout.model_updated`,

until :attr:`Rollout.finished`. The SimPy driver turns the wake-up time into a
timeout event; the Azure driver into sleep-and-poll. Nothing here imports
simpy, azure, time or asyncio.

Phases (``Phase``)::

    INIT -> UPDATING_MODEL -> ROLLING -> FINISHED
                                |  halt (a gate fails, the strategy stalls)
                                v
                             DRAINING (in-flight instances finish) -> FINISHED   on_failure=freeze
                                |
                                v  on_failure=rollback
                      ROLLBACK_MODEL -> ROLLING_BACK -> FINISHED

Per instance in the phase's scope::

    PENDING -> IN_FLIGHT (upgrading, then waiting to be healthy) -> DONE | UNHEALTHY | FAILED | GONE

Gates, with Azure's rolling-policy semantics: before each wave, halt when more
than ``max_unhealthy`` % of all instances are unhealthy (not counting the ones
in flight); after each wave, halt when more than ``max_unhealthy_upgraded`` % of
the instances upgraded so far ended unhealthy or failed. An upgraded instance
that is not healthy ``health_timeout`` seconds after its upgrade completed is
unhealthy.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..strategies.base import DomainKind, InstanceInfo, Strategy
from .errors import InputError
from .events import (
    Action,
    AddInstances,
    DeleteInstances,
    Event,
    EventKind,
    StartUpgrade,
    UpdateModel,
)
from .model import (
    Health,
    Instance,
    ModelVersion,
    PowerState,
    ProvisioningState,
    instance_sort_key,
)
from .options import EngineOptions, Scope


class Phase(StrEnum):
    INIT = "init"
    UPDATING_MODEL = "updating_model"
    ROLLING = "rolling"
    DRAINING = "draining"
    ROLLBACK_MODEL = "rollback_model"
    ROLLING_BACK = "rolling_back"
    FINISHED = "finished"


class Resolution(StrEnum):
    DONE = "done"
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
    GONE = "gone"


_RESOLVED_EVENT = {
    Resolution.DONE: EventKind.INSTANCE_HEALTHY,
    Resolution.UNHEALTHY: EventKind.INSTANCE_UNHEALTHY,
    Resolution.FAILED: EventKind.INSTANCE_FAILED,
    Resolution.GONE: EventKind.INSTANCE_GONE,
}


@dataclass(frozen=True, slots=True)
class Step:
    actions: tuple[Action, ...]
    #: wake the engine by this time even if nothing is observed (None: only on change)
    wake_at: float | None


@dataclass(frozen=True, slots=True)
class Outcome:
    completed: bool
    halted: bool
    reason: str
    rolled_back: bool
    #: stopped on request (Ctrl-C, SIGTERM), not by a gate: resumable
    interrupted: bool
    scope: int
    upgraded: int
    unhealthy: int
    failed: int
    gone: int
    started_at: float
    finished_at: float


@dataclass(frozen=True, slots=True)
class Resumed:
    """Where a stopped rollout left off, for the :class:`Rollout` that continues
    it (``resume``, built from the journal): pacing goes on from there instead
    of starting over, and surge replacements the stopped run asked for are used,
    not asked for again."""

    #: the first attempt's scope size: what ``canary`` and ``checkpoints`` are shares of
    scope_size: int
    #: checkpoints (the canary's included) already reached: never repeated
    stops_passed: int = 0
    #: seconds still to wait before the next wave: the rest of a bake (or pause)
    #: that was in progress when the rollout stopped
    wait: float = 0.0
    #: False when finishing a rollback: no checkpoints at all
    paced: bool = True
    #: surge: (scope instance, the replacement created for it), in journal order
    replacements: tuple[tuple[str, str], ...] = ()
    #: surge: scope instances whose replacement was asked for but never seen
    requested: tuple[str, ...] = ()
    #: every instance id the journal names: an instance on the target that is
    #: not among them was created for ``requested`` (the newest ones are taken)
    known: frozenset[str] = field(default_factory=frozenset)


def check_scope(scope: Scope, fleet: Iterable[Instance]) -> None:
    """A scope value that matches no instance is a typo, not an empty rollout."""
    present: dict[str, set[Any]] = {
        "instances": set(),
        "update_domains": set(),
        "fault_domains": set(),
        "zones": set(),
    }
    for inst in fleet:
        present["instances"].add(inst.instance_id)
        present["update_domains"].add(inst.update_domain)
        present["fault_domains"].add(inst.fault_domain)
        present["zones"].add(inst.zone)
    for name, have in present.items():
        wanted = getattr(scope, name)
        if wanted is None:
            continue
        missing = sorted(wanted - have, key=str)
        if missing:
            shown = ", ".join(map(str, missing))
            raise InputError(
                f"only_{name}: {shown} not in the scale set (it has {_summarize(have)})"
            )


def check_strategy_scope(strategy: Strategy, scope_size: int) -> None:
    """A strategy's parameters against the scope, before a rollout changes
    anything (e.g. a fixed batch larger than the scope is a typo): strategies
    may define ``check_scope_size(scope_size)`` raising :class:`InputError`."""
    check = getattr(strategy, "check_scope_size", None)
    if scope_size > 0 and callable(check):
        check(scope_size)


def _summarize(values: set[Any]) -> str:
    ordered = sorted(values, key=lambda v: instance_sort_key(str(v)))
    if len(ordered) > 8:
        return f"{len(ordered)} values: {', '.join(map(str, ordered[:4]))}, ..., {ordered[-1]}"
    return ", ".join(map(str, ordered)) or "none"


def runs(inst: Instance, model: ModelVersion) -> bool:
    """``inst`` runs ``model``: its applied image and VM size are the model's,
    and it did not fail there (an instance whose upgrade failed is still to do).

    ``latestModelApplied`` is not asked: Azure turns it false on any change to
    the scale set model an instance has not picked up, an extension added by
    Azure Policy or Defender as much as an image (Microsoft docs,
    virtual-machine-scale-sets-upgrade-policy: "Add/remove extensions" is a model
    change), so it would send finished instances round again, or wait forever on
    instances that run the target."""
    return inst.model == model and inst.provisioning is not ProvisioningState.FAILED


def is_bad(inst: Instance) -> bool:
    return inst.health is Health.UNHEALTHY or inst.provisioning is ProvisioningState.FAILED


_IN_PROGRESS = (ProvisioningState.UPDATING, ProvisioningState.CREATING)


def _awaiting_health(inst: Instance, target: ModelVersion) -> bool:
    """On the target (upgraded by a run that was killed) but its health not
    reported yet: followed until healthy, or unhealthy at the health timeout,
    never asked again."""
    return inst.health is Health.UNKNOWN and inst.power is PowerState.RUNNING and runs(inst, target)


class _Index:
    """Ordered pending instances of a phase, indexed by domain kind on demand.

    OrderedDict, not dict: strategies take from the front while the engine
    deletes from it, and a plain dict keeps deleted slots that every
    ``next(iter(d))`` walks over again (O(n) each, so a rollout turned
    quadratic); OrderedDict's linked list finds the first live key in O(1).

    A kind's index is built the first time a strategy asks for it (most ask
    for none: one-at-a-time, batch, window and surge take from ``pending``),
    from ``pending`` in its order, which is the order keeping it up to date
    from the start would give; then it is kept up to date. Five indexes kept
    for every instance cost most of a large fleet's memory (issue 13).
    """

    def __init__(self, infos: Iterable[InstanceInfo]) -> None:
        ordered = sorted(infos, key=lambda i: instance_sort_key(i.instance_id))
        self.pending: OrderedDict[str, InstanceInfo] = OrderedDict(
            (info.instance_id, info) for info in ordered
        )
        self._by: dict[DomainKind, dict[Any, OrderedDict[str, InstanceInfo]]] = {}

    def by(self, kind: DomainKind) -> dict[Any, OrderedDict[str, InstanceInfo]]:
        """Pending instances by ``kind``'s value, each bucket in pending order."""
        index = self._by.get(kind)
        if index is None:
            index = self._by[kind] = {}
            for iid, info in self.pending.items():
                index.setdefault(info.domain(kind), OrderedDict())[iid] = info
        return index

    def add(self, info: InstanceInfo) -> None:
        """Back in line (at the end)."""
        self.pending[info.instance_id] = info
        for kind, index in self._by.items():
            index.setdefault(info.domain(kind), OrderedDict())[info.instance_id] = info

    def remove(self, instance_id: str) -> InstanceInfo:
        info = self.pending.pop(instance_id)
        for kind, index in self._by.items():
            value = info.domain(kind)
            bucket = index[value]
            del bucket[instance_id]
            if not bucket:
                del index[value]
        return info


class PhaseView:
    """The :class:`~vmss_rollout.strategies.base.View` of one phase."""

    def __init__(
        self,
        infos: Sequence[InstanceInfo],
        fleet_size: Callable[[], int],
        unhealthy: Callable[[], int],
    ) -> None:
        self._index = _Index(infos)
        self._fleet_size = fleet_size
        self._unhealthy = unhealthy
        self.scope_size = len(infos)
        self.in_flight: dict[str, InstanceInfo] = {}
        self.resolved: dict[str, Resolution] = {}
        self.done_count = 0
        self.failed_count = 0

    @property
    def fleet_size(self) -> int:
        return self._fleet_size()

    @property
    def unhealthy_count(self) -> int:
        return self._unhealthy()

    @property
    def pending(self) -> Mapping[str, InstanceInfo]:
        return self._index.pending

    def pending_in(self, kind: DomainKind, value: Any) -> Mapping[str, InstanceInfo]:
        return self._index.by(kind).get(value, {})

    def pending_domains(self, kind: DomainKind) -> list[Any]:
        return sorted(self._index.by(kind))

    def in_flight_domains(self, kind: DomainKind) -> set[Any]:
        return {info.domain(kind) for info in self.in_flight.values()}

    # -- engine side --
    def start(self, instance_id: str) -> InstanceInfo:
        info = self._index.remove(instance_id)
        self.in_flight[instance_id] = info
        return info

    def unstart(self, instance_id: str) -> None:
        """An instance in flight goes back to pending."""
        self._index.add(self.in_flight.pop(instance_id))

    def drop_pending(self, instance_id: str) -> None:
        self._index.remove(instance_id)
        self.scope_size -= 1

    def resolve(self, instance_id: str, how: Resolution) -> None:
        del self.in_flight[instance_id]
        self.resolved[instance_id] = how
        if how is Resolution.DONE:
            self.done_count += 1
        elif how is Resolution.GONE:
            self.scope_size -= 1
        else:
            self.failed_count += 1

    @property
    def started(self) -> int:
        return len(self.in_flight) + len(self.resolved)


class Rollout:
    """One rollout of ``target`` over a scale set's instances."""

    def __init__(
        self,
        current: ModelVersion,
        target: ModelVersion,
        instances: Iterable[Instance],
        strategy: Strategy,
        options: EngineOptions | None = None,
        *,
        listener: Callable[[Event], None] | None = None,
        keep_events: bool = True,
        previous: ModelVersion | None = None,
        resumed: Resumed | None = None,
    ) -> None:
        #: the model the scale set has now; the engine updates it first unless it is the target
        self.current = current
        #: what a rollback returns to: ``current``, or the journal's record when resuming
        self.previous = current if previous is None else previous
        self.target = target
        self.strategy = strategy
        self.options = strategy.engine_options(options or EngineOptions())
        self.events: list[Event] = []
        self._listener = listener
        self._keep = keep_events
        self.fleet: dict[str, Instance] = {i.instance_id: i for i in instances}
        #: (id(model), id(other)) -> (model, other, equal): see _same_model
        self._model_memo: dict[tuple[int, int], tuple[ModelVersion | None, ModelVersion, bool]] = {}
        self._bad: set[str] = {i for i, inst in self.fleet.items() if is_bad(inst)}
        self._declared_bad: set[str] = set()
        self.phase = Phase.INIT
        self.reason = ""
        self.rolled_back = False
        #: stopped on request (not by a gate): no rollback, resumable
        self.interrupted = False
        self.started_at: float | None = None
        self.finished_at: float | None = None
        scope = self.options.scope
        check_scope(scope, self.fleet.values())
        self._resumed = resumed
        #: surge replacements a stopped run asked for, found again (scope id -> new id)
        surge_found = self._surge_found(resumed, target)
        leaving = {  # a stopped run already deleted them: not in scope
            iid for iid in surge_found if self.fleet[iid].provisioning is ProvisioningState.DELETING
        }
        infos = [
            InstanceInfo(i.instance_id, i.update_domain, i.fault_domain, i.zone, i.serving)
            for i in self.fleet.values()
            if scope.covers(i.instance_id, i.update_domain, i.fault_domain, i.zone)
            and (not self._on_target(i) or _awaiting_health(i, target))
            and i.instance_id not in leaving
            and i.instance_id not in surge_found.values()
        ]
        self.view = self._new_view(infos)
        self.rollout_view = self.view
        self._replace = strategy.replaces
        self._watch: dict[str, str] = {}  # observed instance id -> scope id in flight
        self._surge_waiting: deque[str] = deque()  # scope ids waiting for their new instance
        self._surge_new: dict[str, str] = {}  # scope id in flight -> its new instance id
        self._created: dict[str, str] = {}  # scope id -> the instance surge created for it
        #: scope id -> its health deadline, for instances upgraded and not healthy
        #: yet. Deadlines are ``now + health_timeout`` and ``now`` never goes back,
        #: so insertion order is deadline order: the first entry is the earliest
        #: (OrderedDict: O(1) to find it after deletions at the front, see _Index)
        self._awaiting: OrderedDict[str, float] = OrderedDict()
        self._wave_of: dict[str, int] = {}
        self._wave_left: dict[int, int] = {}
        self._wave_no = 0
        self._not_before = -math.inf
        #: instances of the first attempt's scope resolved before this one started
        self._offset = 0
        if resumed is None:
            self._stops = self._checkpoint_counts(self.view.scope_size)
        else:
            self._offset = max(0, resumed.scope_size - self.view.scope_size)
            self._stops = self._resumed_stops(resumed)
        self._pending_actions: list[Action] = []
        #: in-place upgrades in flight: down until resolved (surge waves keep serving)
        self._in_place: set[str] = set()
        #: the most in-scope instances down at once (in-place upgrades in flight)
        self.max_in_flight = 0
        #: in-scope instances already being updated when the rollout starts (the
        #: wave in flight when a killed rollout's process died, found by ``resume``):
        #: followed as in flight and never asked again; back in line if they
        #: settle on another model
        self._adopted: set[str] = set()
        #: surge replacements found again: followed as in flight, never asked again
        self._adopted_surge: dict[str, str] = {}
        for owner, new in surge_found.items():
            if owner in self.view.pending:
                self.view.start(owner)
                self._watch[new] = owner
                self._surge_new[owner] = new
                self._created[owner] = new
                self._adopted_surge[owner] = new
        for info in infos:
            inst = self.fleet[info.instance_id]
            if info.instance_id in self._adopted_surge:
                continue
            if inst.provisioning in _IN_PROGRESS or _awaiting_health(inst, target):
                iid = info.instance_id
                self.view.start(iid)
                self._watch[iid] = iid
                self._in_place.add(iid)
                self._adopted.add(iid)
        self.max_in_flight = len(self._in_place)

    # ------------------------------------------------------------------ setup
    def _new_view(self, infos: Sequence[InstanceInfo]) -> PhaseView:
        return PhaseView(infos, lambda: len(self.fleet), lambda: len(self._bad))

    def _surge_found(self, resumed: Resumed | None, target: ModelVersion) -> dict[str, str]:
        """Surge replacements a stopped run asked for that exist: the journaled
        pairs whose two instances are both still there (the old one not on the
        target, the new one on it), then, for the scope instances whose
        replacement was asked for but never seen, the newest instances on the
        target that the journal does not name and whose ids are above every
        instance not on the target (Azure numbers new instances upwards, and the
        engine pairs them in that order; an instance on the target before the
        rollout has a lower id than the ones it replaces)."""
        if resumed is None:
            return {}
        fleet = self.fleet

        def usable(owner: str, new: str) -> bool:
            return (
                owner in fleet
                and new in fleet
                and not runs(fleet[owner], target)
                and fleet[new].model == target
            )

        found: dict[str, str] = {}
        for owner, new in resumed.replacements:
            found.pop(owner, None)
            if usable(owner, new):
                found[owner] = new
        waiting = [i for i in resumed.requested if i in fleet and i not in found]
        if waiting:
            taken = set(found.values())
            floor = max(
                (instance_sort_key(i) for i, inst in fleet.items() if inst.model != target),
                default=(0, -1),
            )
            unknown = sorted(
                (
                    iid
                    for iid, inst in fleet.items()
                    if iid not in resumed.known
                    and iid not in taken
                    and inst.model == target
                    and instance_sort_key(iid) > floor
                ),
                key=instance_sort_key,
            )[-len(waiting) :]
            found.update(
                (owner, new)
                for owner, new in zip(waiting, unknown, strict=False)
                if usable(owner, new)
            )
        return found

    def _resumed_stops(self, resumed: Resumed) -> deque[int]:
        """The checkpoints not passed yet, in this attempt's counts: the first
        attempt's, less the instances resolved before this attempt (a stop
        already due is taken at once)."""
        if not resumed.paced:
            return deque()
        first = list(self._checkpoint_counts(resumed.scope_size))[resumed.stops_passed :]
        left = (max(0, c - self._offset) for c in first)
        return deque(c for c in left if c < self.view.scope_size)

    def _checkpoint_counts(self, scope_size: int) -> deque[int]:
        counts = set()
        if self.options.canary is not None:
            counts.add(self.options.canary.of(scope_size))
        for pct in self.options.checkpoints:
            counts.add(math.ceil(pct * scope_size / 100 - 1e-9))
        return deque(sorted(c for c in counts if 0 < c < scope_size))

    # ------------------------------------------------------------------ queries
    @property
    def finished(self) -> bool:
        return self.phase is Phase.FINISHED

    @property
    def target_now(self) -> ModelVersion:
        """The model instances are being moved to in the current phase."""
        rolling_back = self.phase in (Phase.ROLLBACK_MODEL, Phase.ROLLING_BACK)
        return self.previous if rolling_back else self.target

    def outcome(self) -> Outcome:
        view = self.rollout_view
        counts = {r: 0 for r in Resolution}
        for how in view.resolved.values():
            counts[how] += 1
        return Outcome(
            completed=self.finished and not self.reason,  # failures under the gates still complete
            halted=bool(self.reason),
            reason=self.reason,
            rolled_back=self.rolled_back,
            interrupted=self.interrupted,
            scope=view.scope_size + counts[Resolution.GONE],
            upgraded=counts[Resolution.DONE],
            unhealthy=counts[Resolution.UNHEALTHY],
            failed=counts[Resolution.FAILED],
            gone=counts[Resolution.GONE],
            started_at=self.started_at if self.started_at is not None else 0.0,
            finished_at=self.finished_at if self.finished_at is not None else 0.0,
        )

    def _resumed_detail(self) -> str:
        resumed = self._resumed
        if resumed is None:
            return ""
        parts = [f"resumed: {self._offset} of {resumed.scope_size} resolved before"]
        if resumed.paced and resumed.stops_passed:
            parts.append(f"{resumed.stops_passed} checkpoint(s) passed, not repeated")
        if resumed.wait > 0:
            parts.append(f"{resumed.wait:g}s of the bake or pause left")
        if self._adopted_surge:
            parts.append(f"{len(self._adopted_surge)} surge replacement(s) found")
        return "; " + ", ".join(parts)

    # ------------------------------------------------------------------ events
    def _emit(
        self,
        now: float,
        kind: EventKind,
        instances: Iterable[str] = (),
        wave: int | None = None,
        detail: str = "",
    ) -> None:
        if not self._keep and self._listener is None:
            return  # nobody listens: a large Monte Carlo run skips building events
        event = Event(now, kind, self.phase.value, tuple(instances), wave, detail)
        if self._keep:
            self.events.append(event)
        if self._listener is not None:
            self._listener(event)

    # ------------------------------------------------------------------ input
    def model_updated(self, now: float, error: str | None = None) -> None:
        """The driver finished the :class:`UpdateModel` action (``error``: it failed)."""
        if error is not None:
            rolling_back = self.phase is Phase.ROLLBACK_MODEL
            self._emit(now, EventKind.HALTED, detail=f"model update failed: {error}")
            self.reason = self.reason or f"model update failed: {error}"
            if rolling_back:
                self.reason += "; rollback could not restore the previous model"
            self._finish(now)
            return
        self._emit(now, EventKind.MODEL_UPDATED, detail=str(self.target_now))
        if self.phase is Phase.UPDATING_MODEL:
            self.phase = Phase.ROLLING
        elif self.phase is Phase.ROLLBACK_MODEL:
            self.phase = Phase.ROLLING_BACK

    def observe(
        self, now: float, changed: Iterable[Instance] = (), deleted: Iterable[str] = ()
    ) -> None:
        """Feed instances whose state changed (or all of them: unchanged ones
        are cheap) and ids that no longer exist."""
        for inst in changed:
            iid = inst.instance_id
            is_new = iid not in self.fleet
            self.fleet[iid] = inst
            if is_new and self._surge_waiting:
                first = self._surge_waiting.popleft()
                self._watch[iid] = first
                self._surge_new[first] = iid
                self._created[first] = iid
                self._emit(now, EventKind.SURGE_CREATED, (first, iid), self._wave_of.get(first))
            watcher = self._watch.get(iid)
            if watcher is not None:
                self._evaluate(now, watcher, inst)
            elif iid in self.view.pending and self._on_target(inst) and inst.serving:
                # someone else (policy Automatic, another tool, a scale-out) already
                # brought it to the target: done, and never upgraded again
                self.view.start(iid)
                self.view.resolve(iid, Resolution.DONE)
                self._emit(
                    now,
                    EventKind.INSTANCE_HEALTHY,
                    (iid,),
                    detail="reached the target outside this rollout",
                )
            elif inst.serving:
                self._bad.discard(iid)
                self._declared_bad.discard(iid)
            elif is_bad(inst) or iid in self._declared_bad:
                self._bad.add(iid)
            else:
                self._bad.discard(iid)
        for iid in deleted:
            self.fleet.pop(iid, None)
            self._bad.discard(iid)
            self._declared_bad.discard(iid)
            gone = self._watch.pop(iid, None)
            if gone is not None and gone in self.view.in_flight:
                self._resolve(now, gone, Resolution.GONE, "deleted while in flight")
            elif iid in self.view.pending:
                self.view.drop_pending(iid)
                self._emit(now, EventKind.INSTANCE_GONE, (iid,), detail="deleted before its turn")

    def _evaluate(self, now: float, owner: str, inst: Instance) -> None:
        if (
            owner in self._adopted
            and inst.provisioning is ProvisioningState.SUCCEEDED
            and not self._on_target(inst)
        ):
            # what was in progress was not our upgrade: back in line
            self._adopted.discard(owner)
            self._watch.pop(owner, None)
            self._in_place.discard(owner)
            self.view.unstart(owner)
            return
        if inst.provisioning is ProvisioningState.FAILED:
            self._resolve(now, owner, Resolution.FAILED, "provisioning failed")
        elif inst.provisioning is ProvisioningState.SUCCEEDED and self._on_target(inst):
            if inst.health is Health.HEALTHY:
                self._resolve(now, owner, Resolution.DONE)
            elif inst.health is Health.UNHEALTHY:
                self._resolve(now, owner, Resolution.UNHEALTHY, "reported unhealthy")
            elif owner not in self._awaiting:
                deadline = now + self.options.health_timeout
                self._awaiting[owner] = deadline
                self._emit(now, EventKind.INSTANCE_UPGRADED, (owner,), self._wave_of.get(owner))

    def _on_target(self, inst: Instance) -> bool:
        """:func:`runs` on the current phase's target, with the model comparison
        remembered per pair of model objects (two different image references
        compare by folding the case of every name, each time)."""
        if inst.provisioning is ProvisioningState.FAILED:
            return False
        return self._same_model(inst.model, self.target_now)

    def _same_model(self, model: ModelVersion | None, other: ModelVersion) -> bool:
        if model is other:
            return True
        key = (id(model), id(other))
        seen = self._model_memo.get(key)
        if seen is None or seen[0] is not model or seen[1] is not other:
            seen = self._model_memo[key] = (model, other, model == other)
        return seen[2]

    def _resolve(self, now: float, owner: str, how: Resolution, detail: str = "") -> None:
        if owner not in self.view.in_flight:
            return
        self.view.resolve(owner, how)
        self._in_place.discard(owner)
        self._adopted.discard(owner)
        self._awaiting.pop(owner, None)
        watched = self._surge_new.pop(owner, owner)
        self._watch.pop(watched, None)
        if how in (Resolution.UNHEALTHY, Resolution.FAILED):
            self._bad.add(watched)
            self._declared_bad.add(watched)
        wave = self._wave_of.pop(owner, None)
        instances = (owner,) if watched == owner else (owner, watched)
        self._emit(now, _RESOLVED_EVENT[how], instances, wave, detail)
        if watched != owner and how is Resolution.DONE:
            # surge: the replacement serves, so the old instance goes
            self._pending_actions.append(DeleteInstances((owner,)))
            self._emit(now, EventKind.INSTANCE_DELETE_REQUESTED, (owner,), wave)
        if wave is not None:
            self._wave_left[wave] -= 1
            if self._wave_left[wave] == 0:
                del self._wave_left[wave]
                self._wave_completed(now, wave)

    def _wave_completed(self, now: float, wave: int) -> None:
        self._emit(now, EventKind.WAVE_COMPLETED, wave=wave)
        self._not_before = now + self.options.pause
        if self.phase is not Phase.ROLLING:
            return
        view = self.view
        upgraded = view.done_count + view.failed_count
        if upgraded and view.failed_count * 100 > self.options.max_unhealthy_upgraded * upgraded:
            self._halt(
                now,
                f"max-unhealthy-upgraded: {view.failed_count} of {upgraded} upgraded instances "
                f"unhealthy or failed ({100 * view.failed_count / upgraded:.0f}% > "
                f"{self.options.max_unhealthy_upgraded:g}%)",
            )

    # ------------------------------------------------------------------ output
    def step(self, now: float) -> Step:
        """Decide what to do at ``now``."""
        actions = self._pending_actions
        self._pending_actions = []
        self._expire_health(now)
        if self.phase is Phase.INIT:
            self.started_at = now
            for iid in sorted(self._adopted):
                # on the target, health not known yet: its health timeout starts now
                self._evaluate(now, iid, self.fleet[iid])
            self._emit(
                now,
                EventKind.ROLLOUT_STARTED,
                detail=(
                    f"{self.strategy.spec()} over {self.view.scope_size} instances: "
                    f"{self.previous} -> {self.target}"
                    + (
                        f"; {len(self._adopted)} already updating (followed, not asked again)"
                        if self._adopted
                        else ""
                    )
                    + self._resumed_detail()
                ),
            )
            for owner, new in sorted(self._adopted_surge.items()):
                # the replacement a stopped run asked for: followed like a new one
                self._emit(now, EventKind.SURGE_CREATED, (owner, new), detail="found on resume")
                self._evaluate(now, owner, self.fleet[new])
            if self._resumed is not None and self._resumed.wait > 0:
                self._not_before = now + self._resumed.wait
            # what those evaluations decided (a found replacement already healthy:
            # delete the instance it replaces) goes out now, not a poll later
            actions.extend(self._pending_actions)
            self._pending_actions = []
            if self.view.scope_size == 0 and self.current == self.target:
                self._finish(now)
            elif self.current != self.target:
                self.phase = Phase.UPDATING_MODEL
                self._emit(now, EventKind.MODEL_UPDATE_REQUESTED, detail=str(self.target))
                actions.append(UpdateModel(self.target))
            else:
                self.phase = Phase.ROLLING
        if self.phase in (Phase.ROLLING, Phase.ROLLING_BACK):
            started = self._advance(now)
            if started is not None:
                actions.append(started)
        if self.phase is Phase.DRAINING and not self.view.in_flight:
            back, delete = self._rollback_plan()
            wanted = self.options.on_failure == "rollback" and not self.interrupted
            if wanted and (back or delete):
                self.phase = Phase.ROLLBACK_MODEL
                self._emit(
                    now,
                    EventKind.ROLLBACK_STARTED,
                    back + delete,
                    detail=f"model back to {self.previous}",
                )
                self.rolled_back = True
                # the same strategy undoes the change: in place, or by surge for
                # surge strategies (so a rollback does not cost capacity either)
                self.view = self._new_view([self._info(i) for i in back])
                self._not_before = -math.inf
                actions.append(UpdateModel(self.previous))
                if delete:
                    self._emit(now, EventKind.INSTANCE_DELETE_REQUESTED, delete)
                    actions.append(DeleteInstances(tuple(delete)))
            else:
                self._finish(now)
        wake_at = next(iter(self._awaiting.values())) if self._awaiting else None
        paced = self._not_before > now and self.phase in (Phase.ROLLING, Phase.ROLLING_BACK)
        if paced and (wake_at is None or self._not_before < wake_at):
            wake_at = self._not_before
        return Step(tuple(actions), wake_at)

    def _rollback_plan(self) -> tuple[list[str], list[str]]:
        """What a rollback must undo: (instances to bring back to the previous
        model, surge replacements to delete outright because the instance they
        were to replace still serves on the previous model)."""
        back: list[str] = []
        delete: list[str] = []
        for owner, how in self.rollout_view.resolved.items():
            created = self._created.get(owner)
            if how is Resolution.GONE:
                continue
            if created is None:
                back.append(owner)
            elif how is Resolution.DONE:
                back.append(created)  # the old one is gone: surge back to the previous model
            else:
                delete.append(created)
        return [i for i in back if i in self.fleet], [i for i in delete if i in self.fleet]

    def _info(self, iid: str) -> InstanceInfo:
        inst = self.fleet[iid]
        return InstanceInfo(iid, inst.update_domain, inst.fault_domain, inst.zone, inst.serving)

    def _expire_health(self, now: float) -> None:
        awaiting = self._awaiting
        if not awaiting or next(iter(awaiting.values())) > now:
            return
        due = []
        for owner, deadline in awaiting.items():
            if deadline > now:
                break
            due.append((deadline, owner))
        for _, owner in sorted(due):  # ties in id order, as ever
            if owner in awaiting:
                self._resolve(
                    now,
                    owner,
                    Resolution.UNHEALTHY,
                    f"not healthy {self.options.health_timeout:g}s after its upgrade",
                )

    def _advance(self, now: float) -> Action | None:
        """Start the next wave if one is due; the action that starts it."""
        view = self.view
        if not view.pending and not view.in_flight:
            self._finish(now)
            return None
        if now < self._not_before:
            return None
        rolling = self.phase is Phase.ROLLING
        stop = self._stops[0] if rolling and self._stops else None
        if stop is not None and view.started >= stop:
            if view.in_flight:
                return None
            self._stops.popleft()
            self._emit(
                now,
                EventKind.CHECKPOINT,
                detail=f"{view.done_count + self._offset} of {view.scope_size + self._offset} "
                f"done; baking {self.options.bake:g}s",
            )
            self._not_before = now + self.options.bake
            if self.options.bake > 0:
                return None
            stop = self._stops[0] if self._stops else None
        pending = view.pending
        if not pending:
            return None
        chosen = self.strategy.next_wave(view)
        wave = list(dict.fromkeys(i for i in chosen if i in pending)) if chosen else []
        if stop is not None:
            wave = wave[: max(0, stop - view.started)]
        if not wave:
            if not view.in_flight:
                self._halt(
                    now,
                    f"strategy {self.strategy.spec()} chose no instance while "
                    f"{len(view.pending)} were pending and none in flight",
                )
            return None
        if rolling:
            bad = len(self._bad)
            fleet = len(self.fleet)
            if bad * 100 > self.options.max_unhealthy * fleet:
                self._halt(
                    now,
                    f"max-unhealthy: {bad} of {fleet} instances unhealthy "
                    f"({100 * bad / fleet:.0f}% > {self.options.max_unhealthy:g}%)",
                )
                return None
        self._wave_no += 1
        self._wave_left[self._wave_no] = len(wave)
        for iid in wave:
            view.start(iid)
            self._wave_of[iid] = self._wave_no
            self._bad.discard(iid)
            self._declared_bad.discard(iid)
        if not self._replace:
            self._in_place.update(wave)
            self.max_in_flight = max(self.max_in_flight, len(self._in_place))
        self._emit(
            now,
            EventKind.WAVE_STARTED,
            wave,
            self._wave_no,
            "replace" if self._replace else "upgrade",
        )
        if self._replace:
            self._surge_waiting.extend(wave)
            return AddInstances(len(wave))
        else:
            for iid in wave:
                self._watch[iid] = iid
            return StartUpgrade(tuple(wave))

    def request_stop(self, now: float, reason: str = "interrupted") -> None:
        """Stop starting waves (Ctrl-C, SIGTERM): the instances in flight finish,
        then the rollout ends with ``reason``, without a rollback (it can be
        resumed)."""
        if self.phase in (Phase.FINISHED, Phase.DRAINING):
            return
        self.interrupted = True
        if self.phase is Phase.ROLLING_BACK:
            self.reason += f"; rollback {reason}"
        else:
            self.reason = reason
        self.phase = Phase.DRAINING
        self._emit(now, EventKind.HALTED, detail=reason)

    def _halt(self, now: float, reason: str) -> None:
        if self.phase is Phase.ROLLING_BACK:
            self.reason += f"; rollback stalled: {reason}"
            self._finish(now)
            return
        self.reason = reason
        self.phase = Phase.DRAINING
        self._emit(now, EventKind.HALTED, detail=reason)

    def _finish(self, now: float) -> None:
        if self.phase is Phase.FINISHED:
            return
        self.phase = Phase.FINISHED
        self.finished_at = now
        o = self.outcome()
        if o.completed:
            detail = f"completed: {o.upgraded} upgraded"
        else:
            detail = f"halted: {self.reason}" + ("; rolled back" if self.rolled_back else "")
        self._emit(now, EventKind.ROLLOUT_FINISHED, detail=detail)
