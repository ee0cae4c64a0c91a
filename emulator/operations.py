"""Long-running operations (status and result documents) and the fault knobs."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..engine.errors import InputError
from ..engine.model import (
    Instance,
    ProvisioningState,
    instance_sort_key,
)
from ..sim.scenario import Scenario
from .base import (
    _POWER_TRANSIENT,
    _UPGRADING,
    _WRITES,
    API_VERSION_MAX,
    COMPUTE,
    DELETE_SECONDS,
    ArmError,
    Request,
    Response,
    _obj,
    retry_headers,
)
from .state import EmulatorState


def _rate(value: object, key: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise InputError(f"{key}: expected a probability from 0 to 1, got {value!r}")


def _seconds(value: object, key: str) -> float:
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    ):
        return float(value)
    raise InputError(f"{key}: expected seconds >= 0, got {value!r}")


def _optional_count(value: object, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise InputError(f"{key}: expected a whole number >= 1 (or null to disable), got {value!r}")


def _flag(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise InputError(f"{key}: expected true or false, got {value!r}")


def _count(value: object, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise InputError(f"{key}: expected a whole number >= 0, got {value!r}")


AUTH_FAILURES = ("", "401", "403", "403-writes")


#: what the concurrent-change fault changes
CHANGE_KINDS = ("tags", "extension")


def _change_kind(value: object, key: str) -> str:
    if isinstance(value, str) and value in CHANGE_KINDS:
        return value
    raise InputError(f"{key}: expected one of {', '.join(map(repr, CHANGE_KINDS))}, got {value!r}")


def _auth_failure(value: object, key: str) -> str:
    if isinstance(value, str) and value in AUTH_FAILURES:
        return value
    raise InputError(f"{key}: expected one of {', '.join(map(repr, AUTH_FAILURES))}, got {value!r}")


_FAULT_PARSERS: dict[str, Callable[[object, str], Any]] = {
    "throttle_rate": _rate,
    "throttle_retry_after": _seconds,
    "error_rate": _rate,
    "latency": _seconds,
    "lro_failure_rate": _rate,
    "lro_retry_after": _seconds,
    "concurrent_change_after": _optional_count,
    "upgrade_failure": _rate,
    "unhealthy_after_upgrade": _rate,
    "bad_image": _flag,
    "error_burst": _count,
    "drop_rate": _rate,
    "drop_burst": _count,
    "silent_health": _flag,
    "auth_failure": _auth_failure,
    "conflict_rate": _rate,
    "concurrent_change_kind": _change_kind,
}


@dataclass(frozen=True)
class Faults:
    """What goes wrong, and how fast clients are told to come back.

    Request faults are drawn from the emulator's own random generator (seeded
    from the scenario's seed, never from the simulation's), three draws per
    authenticated ARM request and one per long-running operation, so a run is
    deterministic given the scenario and the request sequence.
    """

    #: probability that an ARM request answers 429 TooManyRequests
    throttle_rate: float = 0.0
    #: the Retry-After of a 429, in seconds (simulated seconds to a client on the
    #: emulator's clock, backends/clock.py); fractions are sent as retry-after-ms
    throttle_retry_after: float = 1.0
    #: probability that an ARM request answers 500 or 503
    error_rate: float = 0.0
    #: real seconds added to every request
    latency: float = 0.0
    #: probability that a long-running operation ends Failed (its effect still happens)
    lro_failure_rate: float = 0.0
    #: the Retry-After of long-running operations, in seconds (as throttle_retry_after)
    lro_retry_after: float = 1.0
    #: after the N-th accepted manualupgrade (counted from when this is set), change
    #: the model's tags (and etag) as another client would
    concurrent_change_after: int | None = None
    #: the scenario's [faults]: probability that an instance upgrade fails
    upgrade_failure: float = 0.0
    #: probability that an upgraded instance ends unhealthy
    unhealthy_after_upgrade: float = 0.0
    #: every instance upgraded to a model other than the initial one is unhealthy
    bad_image: bool = False
    #: the next N ARM requests answer 500 and 503 alternately (counts down)
    error_burst: int = 0
    #: probability that an ARM request is handled but its connection is closed
    #: without a response (the client cannot know whether it took effect)
    drop_rate: float = 0.0
    #: the next N write requests (PUT, PATCH, POST, DELETE) are handled and their
    #: connections closed without a response (counts down)
    drop_burst: int = 0
    #: instances on a model other than the initial one never report health
    #: (the Application Health extension stays "initializing")
    silent_health: bool = False
    #: "401": every ARM request is unauthenticated; "403": not authorized;
    #: "403-writes": reads work, writes are not authorized (a Reader)
    auth_failure: str = ""
    #: probability that a write (PUT, PATCH, POST, DELETE) answers 409 Conflict, as
    #: concurrent requests from other clients would make it (on top of the conflicts
    #: the emulator always answers: overlapping model writes)
    conflict_rate: float = 0.0
    #: what the concurrent change changes: "tags", or "extension" (adds one to the
    #: profile: every instance's latestModelApplied turns false)
    concurrent_change_kind: str = "tags"

    def __post_init__(self) -> None:
        for f in fields(self):
            _FAULT_PARSERS[f.name](getattr(self, f.name), f.name)

    @classmethod
    def from_scenario(cls, scenario: Scenario, **overrides: Any) -> Faults:
        base = cls(
            upgrade_failure=scenario.upgrade_failure,
            unhealthy_after_upgrade=scenario.unhealthy_after_upgrade,
            bad_image=scenario.bad_image,
        )
        return base.with_changes({k: v for k, v in overrides.items() if v is not None})

    def with_changes(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with ``changes`` (the ``/_emulator/faults`` JSON); errors name the key."""
        unknown = sorted(set(changes) - set(_FAULT_PARSERS))
        if unknown:
            raise InputError(
                f"{unknown[0]}: unknown fault (valid: {', '.join(sorted(_FAULT_PARSERS))})"
            )
        return replace(self, **dict(changes))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Operation:
    """A long-running operation: its status document and what it waits for."""

    id: str
    kind: str
    api_version: str
    start: float
    #: "power" (waits for a settled power state), "provision" (settled provisioning),
    #: "delete", "scale" (new instances provisioned, ``extras`` deleted), "rolling"
    #: (the platform's rolling upgrade), "delay" (a timer), "done" (completes at once)
    wait: str = "done"
    waiting: set[str] = field(default_factory=set)
    #: overprovisioned instances a "scale" operation waits to see deleted
    extras: set[str] = field(default_factory=set)
    #: an overprovisioned scale-out: the instances it created, how many of them stay
    #: (the first provisioned), those provisioned so far, whether the extras are chosen
    group: list[str] = field(default_factory=list)
    keep: int | None = None
    provisioned: list[str] = field(default_factory=list)
    chosen: bool = False
    failed: list[str] = field(default_factory=list)
    status: str = "InProgress"
    end: float | None = None
    error: dict[str, Any] | None = None
    inject_failure: bool = False

    @property
    def done(self) -> bool:
        return self.status != "InProgress"


#: the instance operations a later operation on the same instance supersedes
_SUPERSEDABLE = ("provision", "power")


def conflict() -> ArmError:
    """ARM's answer to a write that overlaps another on the same resource: 409
    Conflict, no Retry-After (microsoft/onefuzz VmssOperations.cs matches the message;
    kubernetes-sigs/cloud-provider-azure consts ConcurrentRequestConflictMessage and
    PR #2386, which retries it after 5 s because ARM sends no Retry-After)."""
    return ArmError(
        409,
        "Conflict",
        "The request failed due to conflict with a concurrent request. To resolve it, please "
        "refer to https://aka.ms/activitylog to get more details on the conflicting requests.",
    )


def _server_error(internal: bool) -> ArmError:
    """An injected 500 InternalServerError (``internal``) or 503 ServiceUnavailable."""
    if internal:
        return ArmError(
            500,
            "InternalServerError",
            "An internal server error occurred (injected by the emulator).",
        )
    return ArmError(
        503,
        "ServiceUnavailable",
        "The service is temporarily unavailable (injected by the emulator).",
    )


class OperationsMixin(EmulatorState):
    """Faults, long-running operations and their completion."""

    def set_faults(self, faults: Faults) -> None:
        """Switch faults (also at run time); the scenario's [faults] go to the scale set.

        The fault generator is reseeded from (scenario seed, number of switches),
        so what follows a switch depends only on the requests after it; manual
        upgrades count towards ``concurrent_change_after`` from when it is set."""
        if getattr(self, "faults", None) is not None and (
            faults.concurrent_change_after != self.faults.concurrent_change_after
        ):
            self.manual_upgrades = 0
        self.faults = faults
        key = f"vmss-rollout-emulator-faults:{self.scenario.seed}:{self._fault_changes}"
        self.fault_rng.seed(
            int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        )
        self._fault_changes += 1
        self.ss.upgrade_failure = faults.upgrade_failure
        self.ss.unhealthy_after_upgrade = faults.unhealthy_after_upgrade
        self._update_bad_models()

    def _update_bad_models(self) -> None:
        self.ss.bad_models = (
            {m for m in self._models_seen if m != self.initial_model}
            if self.faults.bad_image
            else set()
        )

    def _drop(self, request: Request) -> bool:
        """Whether to close this request's connection instead of answering."""
        if self.faults.drop_burst and request.method.upper() in _WRITES:
            self.faults = replace(self.faults, drop_burst=self.faults.drop_burst - 1)
            return True
        return self.faults.drop_rate > 0 and self.fault_rng.random() < self.faults.drop_rate

    def _inject_faults(self, request: Request) -> None:
        auth = self.faults.auth_failure
        if auth == "401":
            raise ArmError(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid (injected by the emulator).",
                headers={
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                    'common", error="invalid_token", error_description="The access token is '
                    'invalid."'
                },
            )
        if auth == "403" or (auth == "403-writes" and request.method.upper() in _WRITES):
            verb = "write" if request.method.upper() in _WRITES else "read"
            raise ArmError(
                403,
                "AuthorizationFailed",
                "The client 'vmss-rollout-emulator' with object id "
                "'00000000-0000-0000-0000-0000000000aa' does not have authorization to perform "
                f"action 'Microsoft.Compute/virtualMachineScaleSets/{verb}' "
                f"over scope '{self.vmss_id}' or the scope is invalid (injected by the emulator).",
            )
        if self.faults.error_burst:
            left = self.faults.error_burst
            self.faults = replace(self.faults, error_burst=left - 1)
            raise _server_error(left % 2 == 1)
        throttle, error, kind = (self.fault_rng.random() for _ in range(3))
        if throttle < self.faults.throttle_rate:
            raise ArmError(
                429,
                "TooManyRequests",
                "The request is being throttled as the limit has been reached for operation "
                "group (injected by the emulator).",
                headers=retry_headers(self.faults.throttle_retry_after),
            )
        if error < self.faults.error_rate:
            raise _server_error(kind < 0.5)
        if (
            self.faults.conflict_rate > 0
            and request.method.upper() in _WRITES
            and self.fault_rng.random() < self.faults.conflict_rate
        ):
            raise conflict()

    def _concurrent_change(self) -> None:
        """Another client changes the model: its tags, or (``concurrent_change_kind``
        "extension") an extension, as Azure Policy or Defender for Servers deploying
        theirs would, which also turns every instance's latestModelApplied false
        (issue 9). The etag moves on either way."""
        tags = self.doc.setdefault("tags", {})
        tags["changedBy"] = "another-client"
        tags["changeNumber"] = str(int(tags.get("changeNumber", "0")) + 1)
        if self.faults.concurrent_change_kind == "extension":
            profile = _obj(self.doc, "properties", "virtualMachineProfile", "extensionProfile")
            extensions = profile.setdefault("extensions", [])
            extensions.append(
                {
                    "name": f"MDE.Linux-{tags['changeNumber']}",
                    "properties": {
                        "publisher": "Microsoft.Azure.AzureDefenderForServers",
                        "type": "MDE.Linux",
                        "typeHandlerVersion": "1.0",
                        "autoUpgradeMinorVersion": True,
                        "settings": {"azureResourceId": self.vmss_id},
                    },
                }
            )
            self._new_profile()
        self.etag += 1

    def _new_profile(self) -> None:
        """The per-instance model changed (not only the image or size, which the
        simulator follows): every instance's latestModelApplied turns false until it
        is updated ("Add/remove extensions" is a model change instances pick up on
        upgrade: MicrosoftDocs azure-compute-docs virtual-machine-scale-sets-upgrade-
        policy.md; latestModelApplied: "whether the latest model has been applied",
        SDK VirtualMachineScaleSetVMProperties)."""
        self.profile_gen += 1
        self._bumping = True
        try:
            for iid in list(self.ss.instances):
                self.ss.set_latest(iid, False)
        finally:
            self._bumping = False

    def _new_operation(
        self, kind: str, request: Request, wait: str, instance_ids: Iterable[str] = ()
    ) -> Operation:
        op_id = str(uuid.UUID(int=self.fault_rng.getrandbits(128), version=4))
        inject = self.fault_rng.random() < self.faults.lro_failure_rate
        op = Operation(
            op_id,
            kind,
            request.query.get("api-version") or API_VERSION_MAX,
            self.env.now,
            wait=wait,
            waiting=set(instance_ids)
            if wait in ("power", "provision", "delete", "scale")
            else set(),
            inject_failure=inject,
        )
        self.operations[op_id] = op
        for iid in op.waiting:
            self._waiting.setdefault(iid, set()).add(op_id)
        return op

    def _operation_urls(self, op: Operation, base_url: str) -> tuple[str, str]:
        path = (
            f"{base_url.rstrip('/')}/subscriptions/{self.subscription}/providers/{COMPUTE}"
            f"/locations/{self.location}/operations/{op.id}"
        )
        return (
            f"{path}?api-version={op.api_version}",
            f"{path}?monitor=true&api-version={op.api_version}",
        )

    def _accepted(self, op: Operation, request: Request) -> Response:
        status_url, result_url = self._operation_urls(op, request.base_url)
        headers = {"Azure-AsyncOperation": status_url, "Location": result_url}
        headers.update(retry_headers(self.faults.lro_retry_after))
        return Response(202, None, headers)

    def _finish_after(self, op: Operation, seconds: float) -> None:
        """End ``op`` (Succeeded) ``seconds`` of simulated time from now."""

        def run() -> Generator[Any, Any, None]:
            yield self.env.timeout(seconds)
            self._finish_operation(op, "Succeeded", None)

        self.env.process(run())

    def _supersede(self, instance_ids: Iterable[str], by: Operation) -> None:
        """A later operation on an instance supersedes an earlier one still in
        progress on it: the earlier ends Canceled, code
        CanceledAndSupersededDueToAnotherOperation (kubernetes-sigs/cloud-provider-azure
        retries on that code; the message is ARM's, as terraform-provider-azurerm
        users quote it)."""
        for iid in instance_ids:
            for op_id in list(self._waiting.get(iid, ())):
                earlier = self.operations[op_id]
                if earlier is by or earlier.wait not in _SUPERSEDABLE or earlier.done:
                    continue
                self._finish_operation(
                    earlier,
                    "Canceled",
                    {
                        "code": "CanceledAndSupersededDueToAnotherOperation",
                        "message": f"Operation was canceled.\nOperation {earlier.kind} "
                        f"({earlier.id}) was canceled and superseded by operation {by.kind} "
                        f"({by.id}).",
                    },
                )
                for other in earlier.waiting:
                    self._waiting.get(other, set()).discard(op_id)
                earlier.waiting.clear()

    def _instance_changed(self, iid: str, inst: Instance | None) -> None:
        if inst is None:
            self.created_at.pop(iid, None)
        else:
            self.created_at.setdefault(iid, self.env.now)
            if inst.provisioning in _UPGRADING and not self._bumping:
                self.applied_gen[iid] = self.profile_gen  # it applies the current model
            elif inst.latest_model_applied and self.applied_gen.get(iid, 0) < self.profile_gen:
                self.ss.set_latest(iid, False)  # this hook runs again for the new state
                return
        if hasattr(self, "history"):  # not while the scale set is being built
            self.history.append(
                {
                    "seq": self._next_seq(),
                    "t_sim": round(self.env.now, 6),
                    "instance_id": iid,
                    "model": None if inst is None or inst.model is None else str(inst.model),
                    "latest_model_applied": None if inst is None else inst.latest_model_applied,
                    "provisioning": None if inst is None else inst.provisioning.value,
                }
            )
        waiting = self._waiting.get(iid)
        if not waiting:
            return
        for op_id in list(waiting):
            op = self.operations[op_id]
            if op.keep is not None and not op.chosen and inst is not None:
                self._overprovisioned(op, iid, inst)
                continue  # nothing of the group settles before the extras are chosen
            settled = (
                inst is None
                or (op.wait == "provision" and inst.provisioning not in _UPGRADING)
                or (op.wait == "power" and inst.power not in _POWER_TRANSIENT)
                or (
                    op.wait == "scale"
                    and iid not in op.extras
                    and inst.provisioning not in _UPGRADING
                )
            )
            if op.wait == "delete":
                settled = inst is None
            if not settled:
                continue
            failed = inst is not None and inst.provisioning is ProvisioningState.FAILED
            if failed and op.wait == "provision":
                op.failed.append(iid)
            waiting.discard(op_id)
            op.waiting.discard(iid)
            self._maybe_finish(op)
        if not waiting:
            self._waiting.pop(iid, None)

    def _overprovisioned(self, op: Operation, iid: str, inst: Instance) -> None:
        """Follow an overprovisioned scale-out: once as many instances as were asked
        for are provisioned (or every one of the group has settled), the others are
        deleted, and the operation ends when they are gone."""
        if inst.provisioning is ProvisioningState.SUCCEEDED and iid not in op.provisioned:
            op.provisioned.append(iid)
        settled = all(
            i not in self.ss.instances or self.ss.instances[i].provisioning not in _UPGRADING
            for i in op.group
        )
        if len(op.provisioned) < (op.keep or 0) and not settled:
            return
        op.chosen = True
        keep = op.provisioned[: op.keep]
        keep += [i for i in op.group if i not in keep and i in self.ss.instances][
            : (op.keep or 0) - len(keep)
        ]
        op.extras = {i for i in op.group if i not in keep}

        def choose() -> Generator[Any, Any, None]:
            yield self.env.timeout(0)  # not inside the scale set's change hook
            for kept in keep:
                if kept in op.waiting:
                    op.waiting.discard(kept)
                    self._waiting.get(kept, set()).discard(op.id)
            self.ss.begin_delete(sorted(op.extras, key=instance_sort_key), DELETE_SECONDS)
            for extra in op.extras - set(self.ss.instances):
                op.waiting.discard(extra)  # already gone
            self._maybe_finish(op)

        self.env.process(choose())

    def _maybe_finish(self, op: Operation) -> None:
        if op.done or op.waiting or op.wait in ("rolling", "delay"):
            return
        if op.failed:
            failed = sorted(op.failed, key=instance_sort_key)
            self._finish_operation(
                op,
                "Failed",
                {
                    "code": "OSProvisioningTimedOut",
                    "message": f"Provisioning failed on instance(s) {', '.join(failed)} of "
                    f"scale set '{self.name}'.",
                    "details": [
                        {"code": "OSProvisioningTimedOut", "target": iid, "message": "failed"}
                        for iid in failed
                    ],
                },
            )
        else:
            self._finish_operation(op, "Succeeded", None)

    def _finish_operation(self, op: Operation, status: str, error: dict[str, Any] | None) -> None:
        if op.done:
            return
        if status == "Succeeded" and op.inject_failure:
            status = "Failed"
            error = {
                "code": "InternalExecutionError",
                "message": "An internal execution error occurred (injected by the emulator).",
            }
        op.status = status
        op.error = error
        op.end = self.env.now

    def operation_json(self, op: Operation) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": op.id, "status": op.status, "startTime": self.iso(op.start)}
        if op.end is not None:
            doc["endTime"] = self.iso(op.end)
        if op.error is not None:
            doc["error"] = op.error
        return doc

    def _operation(self, sub: str, op_id: str, monitor: bool, request: Request) -> Response:
        if sub.lower() != self.subscription.lower():
            raise ArmError(
                404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found."
            )
        op = self.operations.get(op_id)
        if op is None:
            raise ArmError(404, "NotFound", f"Operation '{op_id}' was not found.")
        if not monitor:
            headers = retry_headers(self.faults.lro_retry_after) if not op.done else {}
            return Response(200, self.operation_json(op), headers)
        if not op.done:
            _, result_url = self._operation_urls(op, request.base_url)
            headers = {"Location": result_url, **retry_headers(self.faults.lro_retry_after)}
            return Response(202, None, headers)
        if op.status == "Succeeded":
            return Response(200, None)
        error = op.error or {"code": "OperationCanceled", "message": "The operation was canceled."}
        raise ArmError(400, str(error.get("code")), str(error.get("message")))
