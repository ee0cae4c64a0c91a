"""The platform's rolling upgrades: osRollingUpgrade, rollingUpgrades/latest and
cancel, osUpgradeHistory."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engine.options import EngineOptions
from ..engine.rollout import Resolution, Rollout
from ..sim.runner import drive
from ..strategies.base import Duration
from ..strategies.builtin import AzureRolling
from .base import (
    VMSS_TYPE,
    ArmError,
    Request,
    Response,
    _get,
    _iso_duration,
    image_json,
)
from .operations import Operation, OperationsMixin

_DEFAULT_ROLLING: dict[str, Any] = {
    "maxBatchInstancePercent": 20,
    "maxUnhealthyInstancePercent": 20,
    "maxUnhealthyUpgradedInstancePercent": 20,
    "pauseTimeBetweenBatches": "PT0S",
    "enableCrossZoneUpgrade": False,
    "prioritizeUnhealthyInstances": False,
    "rollbackFailedInstancesOnPolicyBreach": False,
    "maxSurge": False,
}


@dataclass
class RollingRun:
    """One platform rolling upgrade (what ``rollingUpgrades/latest`` reports)."""

    rollout: Rollout
    policy: dict[str, Any]
    start: float
    last_action: str = "Start"
    last_action_time: float = 0.0
    end: float | None = None
    cancelled: bool = False
    superseded: bool = False
    operations: list[Operation] = field(default_factory=list)

    def code(self) -> str:
        if self.end is None:
            return "RollingForward"
        if self.cancelled or self.superseded:
            return "Cancelled"
        return "Faulted" if self.rollout.outcome().halted else "Completed"

    def error(self) -> dict[str, Any] | None:
        outcome = self.rollout.outcome()
        if self.end is None or self.cancelled or self.superseded or not outcome.halted:
            return None
        reason = outcome.reason
        if reason.startswith("max-unhealthy-upgraded"):
            code = "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade"
        elif reason.startswith("max-unhealthy"):
            code = "MaxUnhealthyInstancePercentExceededInRollingUpgrade"
        else:
            code = "RollingUpgradeFailed"
        return {"code": code, "message": f"Rolling Upgrade failed: {reason}."}


class RollingMixin(OperationsMixin):
    """The platform's rolling upgrade, run by vmss-rollout's own engine."""

    def _rolling_policy(self) -> dict[str, Any]:
        stored = _get(self.doc, "properties", "upgradePolicy", "rollingUpgradePolicy") or {}
        return {**_DEFAULT_ROLLING, **stored}

    def _platform_strategy(self, policy: Mapping[str, Any]) -> AzureRolling:
        return AzureRolling(
            max_batch_instance_percent=int(policy["maxBatchInstancePercent"]),
            max_unhealthy_instance_percent=int(policy["maxUnhealthyInstancePercent"]),
            max_unhealthy_upgraded_instance_percent=int(
                policy["maxUnhealthyUpgradedInstancePercent"]
            ),
            pause_time_between_batches=Duration(
                _iso_duration(policy["pauseTimeBetweenBatches"], "pauseTimeBetweenBatches")
            ),
            prioritize_unhealthy_instances=bool(policy["prioritizeUnhealthyInstances"]),
            enable_cross_zone_upgrade=bool(policy["enableCrossZoneUpgrade"]),
            max_surge=bool(policy["maxSurge"]),
        )

    def _begin_rolling(self, op: Operation | None) -> RollingRun:
        """Start the platform's rolling upgrade (or queue it behind the running one)."""
        running = self.rolling
        if running is not None and running.end is None:
            # a new model while one runs: the running upgrade stops, a new one follows
            running.superseded = True
            running.rollout.request_stop(self.env.now, "superseded by a model change")
            self._rolling_again = True
            if op is not None:
                running.operations.append(op)
            self.ss.notify()
            return running
        policy = self._rolling_policy()
        _, every = self.ss.read()
        # the platform's rolling upgrade leaves protected instances alone ("...unless
        # the Virtual Machine Scale Set has some unprotected instances...", the
        # osRollingUpgrade refusal quoted in terraform-provider-azurerm PR #12590)
        # Instances that run the image and size but not the whole current model (an
        # extension came since) are still to do: the engine compares image and size
        # only, so they go in with no model. The changes queued so far are dropped:
        # this run starts from the list it is given.
        self.ss.poll()
        instances = [
            i
            if self.applied_gen.get(i.instance_id, 0) >= self.profile_gen
            else i.evolve(model=None)
            for i in every
            if i.instance_id not in self.ss.protected
        ]
        rollout = Rollout(
            self.ss.model,
            self.ss.model,
            instances,
            self._platform_strategy(policy),
            EngineOptions(),
            keep_events=True,
        )
        run = RollingRun(rollout, dict(policy), self.env.now, last_action_time=self.env.now)
        if op is not None:
            run.operations.append(op)
        self.rolling = run
        self.rolling_history.append(run)
        self.env.process(self._rolling_process(run))
        return run

    def _rolling_process(self, run: RollingRun) -> Generator[Any, Any, None]:
        yield from drive(self.env, run.rollout, self.ss)
        run.end = self.env.now
        code = run.code()
        error = run.error()
        carried: list[Operation] = []
        if code == "Completed":
            # the run brought every (unprotected) instance to the whole current model,
            # extensions and all, not only the image and size the engine compares
            for iid, inst in list(self.ss.instances.items()):
                if iid not in self.ss.protected and inst.model == self.ss.model:
                    self.applied_gen[iid] = self.profile_gen
                    self.ss.set_latest(iid, True)
        for op in run.operations:
            if code == "Completed":
                self._finish_operation(op, "Succeeded", None)
            elif code == "Faulted":
                self._finish_operation(op, "Failed", error)
            elif run.superseded and op.kind != "vmss.rollingupgrades.cancel":
                carried.append(op)  # the follow-up upgrade finishes it
            elif op.kind == "vmss.rollingupgrades.cancel":
                self._finish_operation(op, "Succeeded", None)
            else:
                self._finish_operation(
                    op,
                    "Canceled",
                    {"code": "OperationCanceled", "message": "The rolling upgrade was cancelled."},
                )
        if self._rolling_again:
            self._rolling_again = False
            follow = self._begin_rolling(None)
            follow.operations.extend(carried)

    def _start_rolling(self, request: Request) -> Response:
        running = self.rolling
        if running is not None and running.end is None:
            raise ArmError(
                409,
                "OperationNotAllowed",
                "A rolling upgrade is already in progress on this scale set.",
            )
        op = self._new_operation("vmss.osrollingupgrade", request, "rolling")
        self._begin_rolling(op)
        self._settle()
        return self._accepted(op, request)

    def _cancel_rolling(self, request: Request) -> Response:
        run = self.rolling
        if run is None or run.end is not None:
            raise ArmError(
                409,
                "OperationNotAllowed",
                "There is no rolling upgrade in progress to cancel.",
            )
        op = self._new_operation("vmss.rollingupgrades.cancel", request, "rolling")
        run.operations.append(op)
        run.cancelled = True
        run.last_action = "Cancel"
        run.last_action_time = self.env.now
        self._rolling_again = False
        run.rollout.request_stop(self.env.now, "cancelled by request")
        self.ss.notify()
        self._settle()
        return self._accepted(op, request)

    def rolling_json(self, run: RollingRun) -> dict[str, Any]:
        view = run.rollout.rollout_view
        resolved = list(view.resolved.values())
        props: dict[str, Any] = {
            "policy": run.policy,
            "runningStatus": {
                "code": run.code(),
                "startTime": self.iso(run.start),
                "lastAction": run.last_action,
                "lastActionTime": self.iso(run.last_action_time),
            },
            "progress": {
                "successfulInstanceCount": sum(r is Resolution.DONE for r in resolved),
                "failedInstanceCount": sum(
                    r in (Resolution.FAILED, Resolution.UNHEALTHY) for r in resolved
                ),
                "inProgressInstanceCount": len(view.in_flight),
                "pendingInstanceCount": len(view.pending),
            },
        }
        error = run.error()
        if error is not None:
            props["error"] = error
        return {
            "id": f"{self.vmss_id}/rollingUpgrades/latest",
            "name": "latest",
            "type": f"{VMSS_TYPE}/rollingUpgrades",
            "location": self.location,
            "tags": {},
            "properties": props,
        }

    def _rolling_latest(self) -> Response:
        if self.rolling is None:
            raise ArmError(
                404,
                "NotFound",
                f"No rolling upgrade has run on the scale set '{self.name}'.",
            )
        return Response(200, self.rolling_json(self.rolling))

    def _os_upgrade_history(self) -> Response:
        value = []
        for run in reversed(self.rolling_history[-5:]):
            status = self.rolling_json(run)["properties"]
            value.append(
                {
                    "type": f"{VMSS_TYPE}/rollingUpgrades",
                    "location": self.location,
                    "properties": {
                        # UpgradeOperationHistoryStatus: code, startTime, endTime (REST
                        # spec 2024-11-01, UpgradeOperationHistoricalStatusInfoProperties)
                        "runningStatus": {
                            "code": status["runningStatus"]["code"],
                            "startTime": self.iso(run.start),
                            **({"endTime": self.iso(run.end)} if run.end is not None else {}),
                        },
                        "progress": status["progress"],
                        "error": status.get("error"),
                        "startedBy": "User",
                        "targetImageReference": image_json(self.ss.model.image),
                    },
                }
            )
        return Response(200, {"value": value})
