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
from dataclasses import dataclass, field
from typing import Any

import simpy

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

CURRENT_MODEL = ModelVersion(ImageReference("Canonical", "ubuntu-24_04-lts", "server", "1.0.0"))
TARGET_MODEL = ModelVersion(ImageReference("Canonical", "ubuntu-24_04-lts", "server", "2.0.0"))

#: one timeline row: (time, serving, upgrading, unhealthy, on the new model)
TimelineRow = tuple[float, int, int, int, int]
_NONE = (0, 0, 0, 0)


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
        self.min_serving = min(self.min_serving, serving)
        if self.record:
            if len(self.timeline) > 1 and self.timeline[-1][0] == now:
                # several changes at one instant: keep the last (but always the start row)
                self.timeline[-1] = row
            else:
                self.timeline.append(row)

    def _advance(self, now: float) -> None:
        dt = now - self.last_time
        if dt > 0:
            if self.serving == 0:
                self.outage_s += dt
            if self.serving < self.required:
                self.degraded_s += dt
            self.capacity_loss += max(0, self.baseline - self.serving) * dt
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
        self.env = env
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
        self.instances: dict[str, Instance] = {}
        self._cats: dict[str, tuple[int, int, int, int]] = {}
        self._op: dict[str, int] = {}  # operation generation: a newer operation supersedes
        self._created = 0
        self._changed: dict[str, Instance] = {}
        self._deleted: list[str] = []
        self.changed: simpy.Event = env.event()
        self.counts = [0, 0, 0, 0]  # serving, upgrading, unhealthy, on new model
        #: every request the backend received, in order: (time, operation, ids)
        self.requests: list[tuple[float, str, tuple[str, ...]]] = []
        if fleet is None:
            for _ in range(instances):
                self._add(Instance("", 0, 0, model=model))
        else:
            # a live scale set's topology (plan): its ids and domains, on ``model``
            for inst in fleet:
                self._op[inst.instance_id] = 0
                self._set(
                    inst.instance_id,
                    Instance(
                        inst.instance_id,
                        inst.update_domain,
                        inst.fault_domain,
                        inst.zone,
                        model=model,
                    ),
                )
            numeric = [int(i.instance_id) for i in fleet if i.instance_id.isdigit()]
            self._created = max(numeric, default=-1) + 1
        if monitor is not None:
            self.monitor = monitor
            monitor.start(env.now, self.row())

    # ----------------------------------------------------------- bookkeeping
    def row(self) -> TimelineRow:
        s, u, h, n = self.counts
        return (self.env.now, s, u, h, n)

    def _category(self, inst: Instance) -> tuple[int, int, int, int]:
        upgrading = inst.provisioning in (
            ProvisioningState.UPDATING,
            ProvisioningState.CREATING,
        ) or (inst.provisioning is ProvisioningState.SUCCEEDED and inst.health is Health.UNKNOWN)
        unhealthy = inst.provisioning is ProvisioningState.FAILED or inst.health is Health.UNHEALTHY
        return (
            int(inst.serving),
            int(upgrading),
            int(unhealthy),
            int(inst.model == self.new_model),
        )

    def _set(self, iid: str, inst: Instance | None, wake: bool = True) -> None:
        """Record a state change; ``wake=False`` queues it for the next poll
        without waking the driver (nothing the engine acts on)."""
        before = self._cats.get(iid, _NONE)
        if inst is None:
            after = _NONE
            del self.instances[iid]
            del self._cats[iid]
            self._changed.pop(iid, None)
            self._deleted.append(iid)
        else:
            after = self._cats[iid] = self._category(inst)
            self.instances[iid] = inst
            self._changed[iid] = inst
        if before != after:
            for k in range(4):
                self.counts[k] += after[k] - before[k]
            if self.monitor is not None:
                self.monitor.change(self.row())
        if wake:
            self.notify()

    def notify(self) -> None:
        """Wake whoever waits on :attr:`changed` (the driver)."""
        if not self.changed.triggered:
            self.changed.succeed()

    def _add(self, template: Instance) -> str:
        iid = str(self._created)
        if self.flexible:
            iid = flexible_vm_name(self.name, self._created)
            while iid in self.instances:  # a live fleet's names (plan) are not indexed
                self._created += 1
                iid = flexible_vm_name(self.name, self._created)
        ud, fd, zone = placement(self._created, self.update_domains, self.fault_domains, self.zones)
        self._created += 1
        self._op[iid] = 0
        self._set(
            iid, template.evolve(instance_id=iid, update_domain=ud, fault_domain=fd, zone=zone)
        )
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
        for iid, inst in list(self.instances.items()):
            self._set(iid, inst.evolve(latest_model_applied=inst.model == model))
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
            iid = self._add(
                Instance(
                    "",
                    0,
                    0,
                    model=self.model,
                    provisioning=ProvisioningState.CREATING,
                    health=Health.UNKNOWN,
                )
            )
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
            self._set(iid, inst.evolve(power=transient))
            yield self.env.timeout(duration)
            if self._op.get(iid) != op:
                return
            self._set(iid, self.instances[iid].evolve(power=final))

        return run

    def poll(self) -> Observations:
        obs = Observations(list(self._changed.values()), self._deleted)
        self._changed = {}
        self._deleted = []
        if self.changed.triggered:
            self.changed = self.env.event()
        return obs

    # ----------------------------------------------------------- processes
    def _begin(self, iid: str, process: Callable[[int], Generator[Any, Any, None]]) -> None:
        self._op[iid] += 1
        self.env.process(process(self._op[iid]))

    def _upgrade(self, iid: str, model: ModelVersion) -> Callable[[int], Generator[Any, Any, None]]:
        def run(op: int) -> Generator[Any, Any, None]:
            if self._op.get(iid) != op:
                return  # deleted (or superseded) before the process first ran
            inst = self.instances[iid]
            # the engine does not act on "Updating": queue it without a wake-up
            self._set(
                iid,
                inst.evolve(provisioning=ProvisioningState.UPDATING, health=Health.UNKNOWN),
                wake=False,
            )
            yield from self._provision(iid, model)(op)

        return run

    def _provision(
        self, iid: str, model: ModelVersion
    ) -> Callable[[int], Generator[Any, Any, None]]:
        def run(op: int) -> Generator[Any, Any, None]:
            yield self.env.timeout(self.upgrade_time.sample(self.rng))
            if self._op.get(iid) != op:
                return
            inst = self.instances[iid]
            if self.rng.random() < self.upgrade_failure:
                self._set(
                    iid,
                    inst.evolve(
                        provisioning=ProvisioningState.FAILED,
                        health=Health.UNKNOWN,
                        model=model,
                        latest_model_applied=model == self.model,
                    ),
                )
                return
            self._set(
                iid,
                inst.evolve(
                    provisioning=ProvisioningState.SUCCEEDED,
                    health=Health.UNKNOWN,
                    power=PowerState.RUNNING,
                    model=model,
                    latest_model_applied=model == self.model,
                ),
            )
            yield self.env.timeout(self.health_delay.sample(self.rng))
            if self._op.get(iid) != op:
                return
            unhealthy = model in self.bad_models or self.rng.random() < self.unhealthy_after_upgrade
            self._set(
                iid,
                self.instances[iid].evolve(
                    health=Health.UNHEALTHY if unhealthy else Health.HEALTHY
                ),
            )

        return run
