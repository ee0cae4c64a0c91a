"""A SimPy model of a scale set that implements the engine's backend interface.

Instances are spread the way Azure spreads them: round-robin over zones, and
within a zone (or a regional set's one placement group) round-robin over
update domains and fault domains. An upgrade takes a sampled time (not
serving), may fail, then the instance waits a health delay before its health
is known; a bad image or bad luck makes it unhealthy.

The scale set keeps running counts (serving, upgrading, unhealthy, on the new
model) and hands every change to a :class:`Monitor`, so metrics cost O(1) per
change.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, cast

from ..engine.backend import Observations
from ..engine.errors import ConcurrencyError, InputError
from ..engine.model import (
    Health,
    ImageReference,
    Instance,
    ModelVersion,
    PowerState,
    ProvisioningState,
    ScaleSetModel,
    UpgradeMode,
)
from .distributions import Distribution

if TYPE_CHECKING:  # simpy is imported when a scale set is built, not for ``--help``
    import simpy

CURRENT_MODEL = ModelVersion(ImageReference("Canonical", "ubuntu-24_04-lts", "server", "1.0.0"))
TARGET_MODEL = ModelVersion(ImageReference("Canonical", "ubuntu-24_04-lts", "server", "2.0.0"))

#: one timeline row: (time, serving, upgrading, unhealthy, on the new model)
TimelineRow = tuple[float, int, int, int, int]
#: an instance's category, one bit each: serving, upgrading, unhealthy, on the
#: new model (a small int: nothing allocated per change), and its counts
_SERVING, _UPGRADING, _BAD, _NEW = 1, 2, 4, 8
_COUNTS = tuple(tuple(int(bool(c & bit)) for bit in (1, 2, 4, 8)) for c in range(16))

_SUCCEEDED = ProvisioningState.SUCCEEDED
_FAILED = ProvisioningState.FAILED
_UPDATING = ProvisioningState.UPDATING
_CREATING = ProvisioningState.CREATING
_RUNNING = PowerState.RUNNING
_HEALTHY = Health.HEALTHY
_UNHEALTHY = Health.UNHEALTHY
_UNKNOWN = Health.UNKNOWN
_FIELDS = tuple(f.name for f in fields(Instance))
#: writes a field of a :class:`SimInstance` (frozen to everyone else)
_put = object.__setattr__


class SimInstance(Instance):
    """An instance the simulated scale set changes in place.

    The simulator owns it and is the only writer (through ``_put``); everyone
    else reads it as an :class:`Instance`, and always sees its current state.
    One object per instance for the whole run instead of a copy per change
    (issue 13). It compares equal to any :class:`Instance` with the same
    fields, and is not hashable (it changes).
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Instance):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _FIELDS)

    __hash__ = None  # type: ignore[assignment]


class _Job:
    """An upgrade (or, with ``updating=False``, a first provisioning) the scale
    set starts at the current instant: what :meth:`SimScaleSet._begin` queues."""

    __slots__ = ("iid", "model", "updating")

    def __init__(self, iid: str, model: ModelVersion, updating: bool) -> None:
        self.iid = iid
        self.model = model
        self.updating = updating


#: what :meth:`SimScaleSet._begin` starts: a job, or a SimPy process body (power)
Operation = _Job | Callable[[int], Generator[Any, Any, None]]


def flexible_vm_name(scale_set: str, index: int) -> str:
    """The name of the index-th VM of a Flexible scale set: ``<scale set>_<8 hex>``,
    the shape Azure gives VMs it creates in a Flexible set (e.g. ``myvmss_1a2b3c4d``;
    the suffix is random on Azure, derived from the index here so a seed reproduces
    a run)."""
    digest = hashlib.sha256(f"{scale_set}:{index}".encode()).hexdigest()
    return f"{scale_set}_{digest[:8]}"


def placement(
    index: int, update_domains: int, fault_domains: int, zones: Sequence[str]
) -> tuple[int, int, str]:
    """(update domain, fault domain, zone) of the index-th instance created."""
    if zones:
        zone = zones[index % len(zones)]
        index //= len(zones)
    else:
        zone = ""
    return index % update_domains, index % fault_domains, zone


@dataclass
class Monitor:
    """Integrates serving capacity over time; optionally keeps the timeline."""

    required: int
    record: bool = False
    baseline: int = 0
    last_time: float = 0.0
    serving: int = 0
    min_serving: int = 0
    outage_s: float = 0.0
    degraded_s: float = 0.0
    capacity_loss: float = 0.0
    closed: bool = False
    timeline: list[TimelineRow] = field(default_factory=list)

    def start(self, now: float, row: TimelineRow) -> None:
        self.last_time = now
        self.serving = self.baseline = self.min_serving = row[1]
        if self.record:
            self.timeline.append(row)

    def change(self, row: TimelineRow) -> None:
        if self.closed:
            return
        now, serving = row[0], row[1]
        self._advance(now)
        self.serving = serving
        if serving < self.min_serving:
            self.min_serving = serving
        if self.record:
            if len(self.timeline) > 1 and self.timeline[-1][0] == now:
                # several changes at one instant: keep the last (but always the start row)
                self.timeline[-1] = row
            else:
                self.timeline.append(row)

    def _advance(self, now: float) -> None:
        dt = now - self.last_time
        if dt > 0:
            serving = self.serving
            if serving == 0:
                self.outage_s += dt
            if serving < self.required:
                self.degraded_s += dt
            if serving < self.baseline:
                self.capacity_loss += (self.baseline - serving) * dt
            self.last_time = now

    def close(self, now: float) -> None:
        self._advance(now)
        self.closed = True


class SimScaleSet:
    """The simulated scale set; every method is called from SimPy processes."""

    def __init__(
        self,
        env: simpy.Environment,
        rng: random.Random,
        *,
        instances: int,
        update_domains: int = 5,
        fault_domains: int = 5,
        zones: Sequence[str] = (),
        upgrade_time: Distribution,
        health_delay: Distribution,
        upgrade_failure: float = 0.0,
        unhealthy_after_upgrade: float = 0.0,
        bad_models: Sequence[ModelVersion] = (),
        model: ModelVersion = CURRENT_MODEL,
        new_model: ModelVersion = TARGET_MODEL,
        upgrade_mode: UpgradeMode = UpgradeMode.MANUAL,
        monitor: Monitor | None = None,
        name: str = "sim",
        fleet: Sequence[Instance] | None = None,
        flexible: bool = False,
    ) -> None:
        from simpy.events import PENDING, URGENT, Timeout

        self.env = env
        self._pending = PENDING  # an event's value until it is triggered
        self._urgent = URGENT
        self._timeout = Timeout
        self.rng = rng
        self.name = name
        #: Flexible orchestration: instances are named like Azure's Flexible VMs
        #: (:func:`flexible_vm_name`) and have no update domains (all report 0)
        self.flexible = flexible
        self.update_domains = 1 if flexible else update_domains
        self.fault_domains = fault_domains
        self.zones = tuple(zones)
        self.upgrade_time = upgrade_time
        self.health_delay = health_delay
        self.upgrade_failure = upgrade_failure
        self.unhealthy_after_upgrade = unhealthy_after_upgrade
        self.bad_models = set(bad_models)
        self.model = model
        self.new_model = new_model
        self.upgrade_mode = upgrade_mode
        self.etag = 1
        self.monitor: Monitor | None = None  # attached once the initial fleet exists
        self.instances: dict[str, SimInstance] = {}
        self._cats: dict[str, int] = {}  # instance id -> category bits
        self._op: dict[str, int] = {}  # operation generation: a newer operation supersedes
        self._created = 0
        self._changed: dict[str, SimInstance] = {}
        self._deleted: list[str] = []
        self._on_new_memo: dict[int, tuple[ModelVersion | None, bool]] = {}
        #: jobs started at the current instant, run by one SimPy event (None: none open)
        self._jobs: list[tuple[int, _Job]] | None = None
        self.changed: simpy.Event = env.event()
        self.counts = [0, 0, 0, 0]  # serving, upgrading, unhealthy, on new model
        #: every request the backend received, in order: (time, operation, ids)
        self.requests: list[tuple[float, str, tuple[str, ...]]] = []
        if fleet is None:
            for _ in range(instances):
                self._add(_SUCCEEDED, _HEALTHY)
        else:
            # a live scale set's topology (plan): its ids and domains, on ``model``
            for inst in fleet:
                iid = inst.instance_id
                self._op[iid] = 0
                ud, fd = inst.update_domain, inst.fault_domain
                self._set(iid, self._new_instance(iid, ud, fd, inst.zone, model))
            numeric = [int(i.instance_id) for i in fleet if i.instance_id.isdigit()]
            self._created = max(numeric, default=-1) + 1
        if monitor is not None:
            self.monitor = monitor
            monitor.start(env.now, self.row())

    # ----------------------------------------------------------- bookkeeping
    def row(self) -> TimelineRow:
        s, u, h, n = self.counts
        return (self.env.now, s, u, h, n)

    def _on_new(self, model: ModelVersion | None) -> bool:
        """``model == self.new_model``, remembered per model object (comparing
        two different image references folds their case every time)."""
        if model is self.new_model:
            return True
        seen = self._on_new_memo.get(id(model))
        if seen is None or seen[0] is not model:
            seen = self._on_new_memo[id(model)] = (model, model == self.new_model)
        return seen[1]

    def _set(self, iid: str, inst: Instance | None, wake: bool = True) -> None:
        """Record a state change (the instance was changed in place, or is new,
        or ``None``: deleted); ``wake=False`` queues it for the next poll
        without waking the driver (nothing the engine acts on)."""
        cats = self._cats
        before = cats.get(iid, 0)
        if inst is None:
            after = 0
            del self.instances[iid]
            del cats[iid]
            self._changed.pop(iid, None)
            self._deleted.append(iid)
        else:
            prov, health, model = inst.provisioning, inst.health, inst.model
            after = 0
            if prov is _SUCCEEDED:
                if health is _HEALTHY:
                    if inst.power is _RUNNING:
                        after = _SERVING
                elif health is _UNKNOWN:
                    after = _UPGRADING
            elif prov is _UPDATING or prov is _CREATING:
                after = _UPGRADING
            if prov is _FAILED or health is _UNHEALTHY:
                after |= _BAD
            if model is self.new_model or self._on_new(model):
                after |= _NEW
            cats[iid] = after
            # always a SimInstance here; the annotation is the emulator's override's
            self.instances[iid] = self._changed[iid] = cast(SimInstance, inst)
        if before != after:
            old, new, counts = _COUNTS[before], _COUNTS[after], self.counts
            counts[0] += new[0] - old[0]
            counts[1] += new[1] - old[1]
            counts[2] += new[2] - old[2]
            counts[3] += new[3] - old[3]
            if self.monitor is not None:
                self.monitor.change((self.env.now, counts[0], counts[1], counts[2], counts[3]))
        if wake:
            self.notify()

    def notify(self) -> None:
        """Wake whoever waits on :attr:`changed` (the driver)."""
        changed = self.changed
        if changed._value is self._pending:  # not triggered yet
            changed.succeed()

    def _new_instance(
        self,
        iid: str,
        ud: int,
        fd: int,
        zone: str,
        model: ModelVersion,
        provisioning: ProvisioningState = _SUCCEEDED,
        health: Health = _HEALTHY,
    ) -> SimInstance:
        return SimInstance(iid, ud, fd, zone, model=model, provisioning=provisioning, health=health)

    def _add(self, provisioning: ProvisioningState, health: Health) -> str:
        iid = str(self._created)
        if self.flexible:
            iid = flexible_vm_name(self.name, self._created)
            while iid in self.instances:  # a live fleet's names (plan) are not indexed
                self._created += 1
                iid = flexible_vm_name(self.name, self._created)
        ud, fd, zone = placement(self._created, self.update_domains, self.fault_domains, self.zones)
        self._created += 1
        self._op[iid] = 0
        self._set(iid, self._new_instance(iid, ud, fd, zone, self.model, provisioning, health))
        return iid

    # ----------------------------------------------------------- backend API
    def read(self) -> tuple[ScaleSetModel, list[Instance]]:
        model = ScaleSetModel(
            self.name,
            self.model,
            self.upgrade_mode,
            etag=str(self.etag),
            capacity=len(self.instances),
            zones=self.zones,
            fault_domain_count=self.fault_domains,
            flexible=self.flexible,
        )
        return model, list(self.instances.values())

    def update_model(self, model: ModelVersion, etag: str | None) -> str | None:
        self.requests.append((self.env.now, "update_model", ()))
        if etag is not None and etag != str(self.etag):
            raise ConcurrencyError(
                f"the scale set model changed (etag {self.etag}, expected {etag})"
            )
        self.model = model
        self.etag += 1
        same: dict[int, bool] = {}  # id(an instance's model) -> it is ``model``
        # only latestModelApplied changes, which no count depends on: record the
        # change directly, unless a subclass (the emulator) hooks every change
        hooked = type(self)._set is not SimScaleSet._set
        for iid, inst in list(self.instances.items()):
            applied = same.get(id(inst.model))
            if applied is None:
                applied = same[id(inst.model)] = inst.model == model
            _put(inst, "latest_model_applied", applied)
            if hooked:
                self._set(iid, inst)
            else:
                self._changed[iid] = inst
        if not hooked and self.instances:
            self.notify()
        if self.upgrade_mode is UpgradeMode.AUTOMATIC:
            # policy Automatic: the platform applies a model change to every
            # instance at once, whatever the rollout strategy would have done
            stale = tuple(i for i, inst in self.instances.items() if inst.model != model)
            self.requests.append((self.env.now, "platform_upgrade", stale))
            for iid in stale:
                self._begin(iid, self._upgrade(iid, model))
        return str(self.etag)

    def start_upgrade(self, instance_ids: Sequence[str]) -> None:
        self.requests.append((self.env.now, "upgrade", tuple(instance_ids)))
        for iid in instance_ids:
            if iid not in self.instances:
                raise InputError(f"instance {iid} does not exist")
            self._begin(iid, self._upgrade(iid, self.model))

    reimage = start_upgrade  # the simulated OS disk is the model's image either way

    def add_instances(self, count: int) -> None:
        self.requests.append((self.env.now, "add", ()))
        for _ in range(count):
            iid = self._add(_CREATING, _UNKNOWN)
            self._begin(iid, self._provision(iid, self.model))

    def delete_instances(self, instance_ids: Sequence[str]) -> None:
        self.requests.append((self.env.now, "delete", tuple(instance_ids)))
        for iid in instance_ids:
            if iid in self.instances:
                self._op[iid] += 1  # cancels anything in progress on it
                self._set(iid, None)

    # ----------------------------------------------------------- power
    # Power operations (the emulator's start/restart/poweroff/deallocate). Each
    # takes ``duration`` simulated seconds in a transient power state (not
    # serving) and supersedes anything in progress on the instance. They draw
    # nothing from the random generator, so they do not change what upgrades do.

    def start(self, instance_ids: Sequence[str], duration: float = 30.0) -> None:
        """Start stopped or deallocated instances (running ones are left alone)."""
        self._power("start", instance_ids, PowerState.STARTING, PowerState.RUNNING, duration)

    def restart(self, instance_ids: Sequence[str], duration: float = 30.0) -> None:
        """Restart instances: starting (not serving) for ``duration``, then running."""
        self._power("restart", instance_ids, PowerState.STARTING, PowerState.RUNNING, duration)

    def power_off(self, instance_ids: Sequence[str], duration: float = 15.0) -> None:
        """Stop instances (they keep their compute allocation)."""
        self._power("power_off", instance_ids, PowerState.STOPPING, PowerState.STOPPED, duration)

    def deallocate(self, instance_ids: Sequence[str], duration: float = 30.0) -> None:
        """Stop instances and release their compute."""
        self._power(
            "deallocate", instance_ids, PowerState.STOPPING, PowerState.DEALLOCATED, duration
        )

    def _power(
        self,
        operation: str,
        instance_ids: Sequence[str],
        transient: PowerState,
        final: PowerState,
        duration: float,
    ) -> None:
        self.requests.append((self.env.now, operation, tuple(instance_ids)))
        for iid in instance_ids:
            if iid not in self.instances:
                raise InputError(f"instance {iid} does not exist")
        restart = operation == "restart"
        for iid in instance_ids:
            self._begin(iid, self._power_change(iid, transient, final, duration, restart))

    def _power_change(
        self, iid: str, transient: PowerState, final: PowerState, duration: float, restart: bool
    ) -> Callable[[int], Generator[Any, Any, None]]:
        def run(op: int) -> Generator[Any, Any, None]:
            if self._op.get(iid) != op:
                return
            inst = self.instances[iid]
            if inst.power is final and not restart:
                return  # already there: nothing to do
            _put(inst, "power", transient)
            self._set(iid, inst)
            yield self.env.timeout(duration)
            if self._op.get(iid) != op:
                return
            inst = self.instances[iid]
            _put(inst, "power", final)
            self._set(iid, inst)

        return run

    def poll(self) -> Observations:
        obs = Observations(list(self._changed.values()), self._deleted)
        self._changed = {}
        self._deleted = []
        if self.changed.triggered:
            self.changed = self.env.event()
        return obs

    # ----------------------------------------------------------- operations
    # An upgrade is two timeouts with callbacks, not a SimPy process: the
    # instance is Updating when SimPy next runs (at this instant), Succeeded (or
    # Failed) after a sampled upgrade time, and healthy or not after a sampled
    # health delay. Jobs started at one instant share one urgent event, which
    # runs where the first of their processes' start events used to, so every
    # random draw happens in the same order as with one process per instance
    # (the numbers for a seed did not change). Power operations stay processes.

    def _begin(self, iid: str, operation: Operation) -> None:
        op = self._op[iid] = self._op[iid] + 1
        if not isinstance(operation, _Job):
            self._jobs = None  # jobs begun after this process start after it
            self.env.process(operation(op))
            return
        if self._jobs is None:
            self._jobs = []
            start = self.env.event()
            start._ok = True
            start._value = None
            start.callbacks.append(self._start_jobs)
            self.env.schedule(start, self._urgent)
        self._jobs.append((op, operation))

    def _upgrade(self, iid: str, model: ModelVersion) -> _Job:
        return _Job(iid, model, True)

    def _provision(self, iid: str, model: ModelVersion) -> _Job:
        return _Job(iid, model, False)

    def _start_jobs(self, _: simpy.Event) -> None:
        jobs, self._jobs = self._jobs or [], None
        env, rng, sample, ops = self.env, self.rng, self.upgrade_time.sample, self._op
        for op, job in jobs:
            iid = job.iid
            if job.updating:
                if ops.get(iid) != op:
                    continue  # deleted (or superseded) before the upgrade began
                inst = self.instances[iid]
                # the engine does not act on "Updating": queue it without a wake-up
                _put(inst, "provisioning", _UPDATING)
                _put(inst, "health", _UNKNOWN)
                self._set(iid, inst, wake=False)
            done = self._timeout(env, sample(rng), (op, job))
            done.callbacks.append(self._provisioned)

    def _provisioned(self, event: simpy.Event) -> None:
        op, job = event._value
        iid = job.iid
        if self._op.get(iid) != op:
            return
        inst = self.instances[iid]
        model = job.model
        if self.rng.random() < self.upgrade_failure:
            _put(inst, "provisioning", _FAILED)
            _put(inst, "health", _UNKNOWN)
            _put(inst, "model", model)
            _put(inst, "latest_model_applied", model == self.model)
            self._set(iid, inst)
            return
        _put(inst, "provisioning", _SUCCEEDED)
        _put(inst, "health", _UNKNOWN)
        _put(inst, "power", _RUNNING)
        _put(inst, "model", model)
        _put(inst, "latest_model_applied", model is self.model or model == self.model)
        self._set(iid, inst)
        healthy = self._timeout(self.env, self.health_delay.sample(self.rng), event._value)
        healthy.callbacks.append(self._health_known)

    def _health_known(self, event: simpy.Event) -> None:
        op, job = event._value
        iid = job.iid
        if self._op.get(iid) != op:
            return
        model = job.model
        bad = self.bad_models
        unhealthy = (bad and model in bad) or self.rng.random() < self.unhealthy_after_upgrade
        inst = self.instances[iid]
        _put(inst, "health", _UNHEALTHY if unhealthy else _HEALTHY)
        self._set(iid, inst)
