"""The emulator's state: what every resource module reads and writes
(declared here, set by :class:`~vmss_rollout.emulator.core.ArmEmulator`), simulated
time, the request log."""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import simpy

from ..engine.model import (
    ModelVersion,
)
from ..sim.scenario import Scenario
from .base import (
    COMPUTE,
    LOG_LIMIT,
    ArmError,
    EmulatedScaleSet,
    Request,
    _get,
)

#: the emulator's simulated now, seconds since the epoch (vmss-rollout's own
#: header, never sent by Azure); backends/clock.py reads it
TIME_HEADER = "x-vmss-rollout-emulator-time"
#: simulated seconds per wall second (``--time-scale``)
TIME_SCALE_HEADER = "x-vmss-rollout-emulator-time-scale"

if TYPE_CHECKING:
    from .operations import Faults, Operation
    from .rolling import RollingRun


class EmulatorState:
    """Attributes shared by the resource mixins; :class:`ArmEmulator` sets them."""

    scenario: Scenario
    clock: Callable[[], float]
    time_scale: float
    subscription: str
    resource_group: str
    name: str
    location: str
    page_size: int
    health_extension: bool
    overprovision_default: bool
    epoch: datetime
    identity_secret: str
    seed: int
    env: simpy.Environment
    ss: EmulatedScaleSet
    created_at: dict[str, float]
    profile_gen: int
    applied_gen: dict[str, int]
    _bumping: bool
    #: instance id -> protectionPolicy (instances never given one are absent)
    protection: dict[str, dict[str, bool]]
    initial_model: ModelVersion
    _models_seen: list[ModelVersion]
    fault_rng: random.Random
    _fault_changes: int
    faults: Faults
    etag: int
    unique_id: str
    doc: dict[str, Any]
    tokens: dict[str, float]
    operations: dict[str, Operation]
    _waiting: dict[str, set[str]]
    rolling: RollingRun | None
    #: the latest PUT/PATCH of the scale set (overlapping writes are refused)
    model_write: Operation | None
    rolling_history: list[RollingRun]
    _rolling_again: bool
    manual_upgrades: int
    log: deque[dict[str, Any]]
    log_dropped: int
    history: deque[dict[str, Any]]
    _seq: int
    deleted: bool
    #: ``orchestrationMode`` Flexible (fixed at creation)
    flexible: bool
    counts: dict[str, int]
    status_counts: dict[str, int]

    @property
    def capacity(self) -> int:
        """The requested instance count (``sku.capacity``), which the instance count
        follows (overprovisioned extras aside)."""
        return int(_get(self.doc, "sku", "capacity") or 0)

    @property
    def vmss_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{COMPUTE}/virtualMachineScaleSets/{self.name}"
        )

    def now_wall(self) -> float:
        return self.clock()

    def advance(self, until: float | None = None) -> None:
        """Run the simulation up to ``until`` (default: now), then settle the
        events due at that instant."""
        target = self.clock() * self.time_scale if until is None else until
        if target > self.env.now:
            self.env.run(until=target)
        self._settle()

    def _settle(self) -> None:
        while self.env.peek() <= self.env.now:
            self.env.step()

    def emulated_now(self) -> float:
        """Simulated now as seconds since the epoch: the epoch plus simulated time,
        the clock of every timestamp the emulator serves (:meth:`iso`)."""
        return self.epoch.timestamp() + self.env.now

    def clock_headers(self) -> dict[str, str]:
        """The emulator's clock, announced on every response (:data:`TIME_HEADER`,
        :data:`TIME_SCALE_HEADER`) so that a client can wait in simulated time.
        Our own plumbing, not Azure's: ARM never sends these headers."""
        return {
            TIME_HEADER: f"{self.emulated_now():.6f}",
            TIME_SCALE_HEADER: repr(self.time_scale),
        }

    def iso(self, sim_time: float) -> str:
        return (self.epoch + timedelta(seconds=sim_time)).isoformat()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _record(
        self,
        request: Request,
        operation: str,
        status: int,
        instance_ids: Sequence[str],
        seq: int | None = None,
        dropped: bool = False,
    ) -> None:
        self.counts[operation] = self.counts.get(operation, 0) + 1
        key = str(status)
        self.status_counts[key] = self.status_counts.get(key, 0) + 1
        if len(self.log) == LOG_LIMIT:
            self.log_dropped += 1
        self.log.append(
            {
                "t_wall": round(self.clock(), 6),
                "t_sim": round(self.env.now, 6),
                "method": request.method,
                "path": request.path,
                "operation": operation,
                "status": status,
                "instance_ids": list(instance_ids),
                "seq": self._next_seq() if seq is None else seq,
                "dropped": dropped,
            }
        )

    def request_counts(self) -> dict[str, Any]:
        return {
            "total": sum(self.counts.values()),
            "by_operation": dict(sorted(self.counts.items())),
            "by_status": dict(sorted(self.status_counts.items())),
            "log": list(self.log),
            "log_dropped": self.log_dropped,
            "platform": [
                {"t_sim": round(t, 6), "operation": op, "instance_ids": list(ids)}
                for t, op, ids in self.ss.requests
            ],
        }

    def history_json(self) -> dict[str, Any]:
        """Every instance state change (``GET /_emulator/history``), ordered with
        the request log by ``seq``: what each instance ran when a request came."""
        return {"history": list(self.history)}

    def reset_counts(self) -> None:
        self.counts.clear()
        self.status_counts.clear()
        self.log.clear()
        self.history.clear()
        self.log_dropped = 0
        self.ss.requests.clear()

    def _parse_body(self, request: Request) -> Any:
        if not request.body or not request.body.strip():
            return None
        try:
            return json.loads(request.body)
        except ValueError:
            raise ArmError(
                400,
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized.",
            ) from None
