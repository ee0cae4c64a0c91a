"""The Azure Resource Manager (ARM) face of a simulated scale set: the part of
the Compute REST API that upgrade tools use, over the SimPy :class:`SimScaleSet`.

Framework-free (no HTTP server here): :meth:`ArmEmulator.handle` takes a
:class:`Request` and returns a :class:`Response`; ``server.py`` serves it
over HTTPS. Everything the real azure-mgmt-compute SDK needs is here: JSON
documents shaped like Azure's, ARM errors (``{"error": {"code", "message"}}``),
long-running operations (actions: 202 with ``Azure-AsyncOperation``,
``Location`` and ``Retry-After``; scale-set PUT/PATCH: 200 with
``provisioningState: Updating`` and ``Azure-AsyncOperation``), ETag /
If-Match, paging with ``nextLink``, bearer tokens, injected faults and a
request log. Where Azure is awkward the emulator is too (README, "Azure
behaviours the emulator reproduces"): overlapping writes get 409, later
operations supersede earlier ones, deleted instances linger as Deleting,
protected instances refuse scale-set actions, scale-outs overprovision, any
per-instance model change turns latestModelApplied false.

Time: simulated time is wall time since start times ``time_scale``. Before a
request is handled the SimPy environment is run up to that time (lazily: it
only moves when someone looks), so a run is deterministic given the times of
the requests.

Upgrade policy: ``Manual`` leaves instances alone; ``Automatic`` is the
simulator's (every unprotected instance at once on a model change);
``Rolling`` runs the platform's rolling upgrade with vmss-rollout's own engine
and the ``azure-rolling`` strategy built from the stored
``rollingUpgradePolicy``, on the same SimPy environment, so the platform and
the simulator agree by construction.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..engine.errors import InputError
from ..engine.model import (
    instance_sort_key,
)
from ..sim.runner import derive_seed
from ..sim.scenario import Scenario
from .base import (
    _API_VERSION_RE,
    _VM_ACTIONS,
    _VMSS_ACTIONS,
    API_VERSION_MAX,
    API_VERSION_MIN,
    DEFAULT_LOCATION,
    DEFAULT_PAGE_SIZE,
    DEFAULT_RESOURCE_GROUP,
    DEFAULT_SUBSCRIPTION,
    LOG_LIMIT,
    VMSS_TYPE,
    ArmError,
    Request,
    Response,
    build_scale_set,
    health_state,
)
from .identity import IdentityMixin
from .operations import Faults
from .scalesets import ScaleSetsMixin

__all__ = [
    "API_VERSION_MAX",
    "API_VERSION_MIN",
    "ArmEmulator",
    "ArmError",
    "Faults",
    "Request",
    "Response",
]


@dataclass(frozen=True)
class _Route:
    operation: str
    handler: Callable[[], Response] | None
    #: instance ids the request names (for the log), best effort
    instance_ids: tuple[str, ...] = ()


class ArmEmulator(ScaleSetsMixin, IdentityMixin):
    """One simulated scale set behind the ARM REST API.

    ``clock`` returns real seconds since the emulator started; simulated time
    is that times ``time_scale``.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        clock: Callable[[], float],
        time_scale: float = 60.0,
        subscription: str = DEFAULT_SUBSCRIPTION,
        resource_group: str = DEFAULT_RESOURCE_GROUP,
        name: str | None = None,
        location: str = DEFAULT_LOCATION,
        page_size: int = DEFAULT_PAGE_SIZE,
        health_extension: bool = True,
        overprovision: bool = True,
        faults: Faults | None = None,
        epoch: datetime | None = None,
        identity_secret: str | None = None,
    ) -> None:
        if not math.isfinite(time_scale) or time_scale <= 0:
            raise InputError(f"--time-scale: expected a number > 0, got {time_scale!r}")
        if page_size < 1:
            raise InputError(f"--page-size: expected a whole number >= 1, got {page_size!r}")
        self.scenario = scenario
        self.clock = clock
        self.time_scale = float(time_scale)
        self.subscription = subscription
        self.resource_group = resource_group
        self.name = name or scenario.name
        self.location = location
        self.page_size = page_size
        self.health_extension = health_extension
        #: the scale set's initial ``overprovision`` (PUT/PATCH can change it); a
        #: Uniform-only feature (orchestration-modes doc, "Overprovisioning")
        self.overprovision_default = overprovision and scenario.orchestration != "Flexible"
        #: the real time simulated time 0 stands for (timestamps in documents)
        self.epoch = epoch or datetime.now(UTC)
        #: the App Service managed-identity secret (``IDENTITY_HEADER``)
        self.identity_secret = identity_secret or secrets.token_urlsafe(24)
        self.seed = derive_seed(scenario.seed, 0)  # the study's first run, as `simulate --timeline`
        self.env, self.ss = build_scale_set(scenario, self.seed)
        #: simulated time each instance was created (the initial ones at 0)
        self.created_at = dict.fromkeys(self.ss.instances, 0.0)
        self.flexible = scenario.orchestration == "Flexible"  # the scenario checks its FDs
        if scenario.zones and not self.flexible and self.ss.fault_domains not in (1, 5):
            raise InputError(
                f"scale_set.fault_domains: a zonal scale set has 1 or 5 fault domains on Azure "
                f"(Uniform orchestration), got {self.ss.fault_domains}"
            )
        self.protection = {}
        protected = list(scenario.protected_instances)
        if self.flexible:
            # a Flexible VM's name is not known before the set exists: a number is the
            # index of a VM in creation order (a name works too)
            order = list(self.ss.instances)
            protected = [
                order[int(i)] if i.isdigit() and int(i) < len(order) else i for i in protected
            ]
        unknown = [i for i in protected if i not in self.ss.instances]
        if unknown:
            raise InputError(
                f"scale_set.protected_instances: no instance {unknown[0]} in the scale set "
                f"(ids 0 to {len(self.ss.instances) - 1})"
            )
        for iid in protected:
            self.set_protection(
                iid, {"protectFromScaleIn": True, "protectFromScaleSetActions": True}
            )
        #: the per-instance model's generation: every change to it (extensions, OS
        #: profile, image, size...) is a new one; an instance applies the generation
        #: current when it is updated or created
        self.profile_gen = 0
        self.applied_gen: dict[str, int] = {}
        self._bumping = False
        self.ss.hook = self._instance_changed
        self.initial_model = self.ss.model
        self._models_seen = [self.initial_model]
        self.fault_rng = random.Random()
        self._fault_changes = 0
        self.faults = Faults()
        self.set_faults(faults or Faults.from_scenario(scenario))
        self.etag = 1
        #: re-creations under the same name (POST /_emulator/restore-scale-set
        #: {"recreate": true}); each gives the scale set another uniqueId
        self.generation = 0
        self.unique_id = self._unique_id()
        self.doc = self._initial_doc()
        self._apply_policy(self.doc)
        self.tokens = {}
        self.operations = {}
        self._waiting = {}  # instance id -> waiting operation ids
        self.rolling = None
        self.model_write = None
        self.rolling_history = []
        self._rolling_again = False
        self.manual_upgrades = 0
        self.log = deque(maxlen=LOG_LIMIT)
        self.log_dropped = 0
        #: every instance state change, in order with the requests (``seq``)
        self.history = deque(maxlen=LOG_LIMIT)
        self._seq = 0
        #: POST /_emulator/delete-scale-set: the scale set answers 404 until restored
        self.deleted = False
        self.counts = {}
        self.status_counts = {}

    def _unique_id(self) -> str:
        # deterministic per (name, re-creation): a seed reproduces an emulator run
        key = f"vmss-rollout:{self.name}" + (f":{self.generation}" if self.generation else "")
        return str(uuid.uuid5(uuid.NAMESPACE_URL, key))

    def recreate(self) -> None:
        """The scale set deleted and created again under the same name: Azure gives
        the new resource another ``uniqueId`` ("Specifies the ID which uniquely
        identifies a Virtual Machine Scale Set", VirtualMachineScaleSetProperties in
        the 2024-11-01 REST spec; the name and resource id are reused). The emulator
        keeps the instances and the model: only the resource's identity changes."""
        self.generation += 1
        self.unique_id = self._unique_id()

    @staticmethod
    def _check_api_version(request: Request) -> str:
        version = request.query.get("api-version")
        supported = f"Supported api-versions are {API_VERSION_MIN} to {API_VERSION_MAX}."
        if not version:
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version query parameter (?api-version=) is required for all requests. "
                f"{supported}",
            )
        match = _API_VERSION_RE.match(version)
        if match is None or not API_VERSION_MIN <= match.group(1) <= API_VERSION_MAX:
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. {supported}",
            )
        return version

    def handle(self, request: Request) -> Response:
        """Answer one ARM request (advancing simulated time first)."""
        self.advance()
        seq = self._next_seq()
        route = self._route(request)
        try:
            self._check_auth(request)
            self._check_api_version(request)
            self._inject_faults(request)
            if route.handler is None:
                raise ArmError(
                    404,
                    "NotFound",
                    f"No route for {request.method} {request.path} in this emulator.",
                )
            response = route.handler()
        except ArmError as exc:
            response = exc.response()
        self._settle()
        response.headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
        response.headers.update(self.rate_limit_headers(request))
        response.drop = self._drop(request)
        self._record(
            request, route.operation, response.status, route.instance_ids, seq, response.drop
        )
        return response

    def state(self) -> dict[str, Any]:
        """A compact summary of the simulation (``GET /_emulator/state``)."""
        run = self.rolling
        return {
            "t_sim": round(self.env.now, 6),
            "etag": self.etag,
            "model": str(self.ss.model),
            "upgrade_mode": self.upgrade_mode.value,
            "rolling_upgrade": None if run is None else run.code(),
            "instances": {
                iid: {
                    "provisioning": inst.provisioning.value,
                    "power": inst.power.value,
                    "health": health_state(inst),
                    "reported_health": self.reported_health(inst),
                    "latest_model_applied": inst.latest_model_applied,
                    "model": str(inst.model),
                }
                for iid, inst in sorted(
                    self.ss.instances.items(), key=lambda kv: instance_sort_key(kv[0])
                )
            },
        }

    def _route(self, request: Request) -> _Route:
        parts = [p for p in request.path.split("/") if p]
        lower = [p.lower() for p in parts]
        method = request.method.upper()
        plumbing = self.route_plumbing(method, parts, lower)
        if plumbing is not None:
            return _Route(*plumbing)
        if len(parts) < 2 or lower[0] != "subscriptions":
            return _Route("unknown", None)
        sub = parts[1]
        rest, lrest = parts[2:], lower[2:]
        # subscription-level: operation status, list all scale sets
        if (
            lrest[:3] == ["providers", "microsoft.compute", "locations"]
            and len(rest) == 6
            and lrest[4] in ("operations", "operationresults")
            and method == "GET"
        ):
            op_id = rest[5]
            monitor = request.query.get("monitor", "").lower() == "true"
            monitor = monitor or lrest[4] == "operationresults"
            name = "operations.result" if monitor else "operations.status"
            return _Route(name, lambda: self._operation(sub, op_id, monitor, request))
        if (
            lrest == ["providers", "microsoft.compute", "virtualmachinescalesets"]
            and method == "GET"
        ):
            return _Route("vmss.list_all", lambda: self._list_scale_sets(sub, None))
        if lrest == ["providers", "microsoft.compute", "virtualmachines"] and method == "GET":
            return _Route("vm.list_all", lambda: self._plain_vms(sub, None, request))
        if len(rest) < 2 or lrest[0] != "resourcegroups":
            return _Route("unknown", None)
        rg = rest[1]
        tail, ltail = rest[2:], lrest[2:]
        if ltail[:3] == ["providers", "microsoft.compute", "virtualmachines"] and method == "GET":
            # a Flexible set's members: plain VMs (list, get, instance view)
            if len(tail) == 3:
                return _Route("vm.list", lambda: self._plain_vms(sub, rg, request))
            if len(tail) == 4 or (len(tail) == 5 and ltail[4] == "instanceview"):
                vm = tail[3]
                return _Route(
                    "vm.instanceview" if len(tail) == 5 else "vm.get",
                    lambda: self._plain_vm(sub, rg, vm, request),
                    (vm,),
                )
        if ltail[:3] != ["providers", "microsoft.compute", "virtualmachinescalesets"]:
            return _Route("unknown", None)
        if len(tail) == 3:
            if method == "GET":
                return _Route("vmss.list", lambda: self._list_scale_sets(sub, rg))
            return _Route("unknown", None)
        name = tail[3]
        sub_path, lsub = tail[4:], ltail[4:]
        return self._route_scale_set(request, method, sub, rg, name, sub_path, lsub)

    def _route_scale_set(
        self,
        request: Request,
        method: str,
        sub: str,
        rg: str,
        name: str,
        path: list[str],
        lpath: list[str],
    ) -> _Route:
        def scoped(operation: str, fn: Callable[[], Response], ids: Iterable[str] = ()) -> _Route:
            def run() -> Response:
                self._check_resource(sub, rg, name)
                return fn()

            return _Route(operation, run, tuple(ids))

        body_ids = self._peek_ids(request)
        if not path:
            handlers: dict[str, tuple[str, Callable[[], Response]]] = {
                "GET": ("vmss.get", lambda: self._get_scale_set()),
                "PUT": ("vmss.put", lambda: self._write_scale_set(request, replace_all=True)),
                "PATCH": ("vmss.patch", lambda: self._write_scale_set(request, replace_all=False)),
            }
            if method in handlers:
                operation, fn = handlers[method]
                if method == "PUT":
                    return _Route(operation, lambda: self._put_guard(sub, rg, name, fn))
                return scoped(operation, fn)
            return scoped(f"vmss.{method.lower()}", self._not_supported(method, "a scale set"))
        head = lpath[0]
        if head == "virtualmachines" and self.flexible:
            return scoped(f"vms.{method.lower()}", lambda: self.refuse_uniform_only(method))
        if head == "virtualmachines":
            if len(path) == 1 and method == "GET":
                return scoped("vms.list", lambda: self._list_vms(request))
            if len(path) >= 2:
                iid = path[1]
                if len(path) == 2 and method == "GET":
                    return scoped("vms.get", lambda: self._get_vm(iid, request), (iid,))
                if len(path) == 2 and method == "PUT":
                    return scoped("vms.put", lambda: self._put_vm(iid, request), (iid,))
                if len(path) == 2 and method == "DELETE":
                    return scoped(
                        "vms.delete",
                        lambda: self._action("delete", [iid], request, per_vm=True),
                        (iid,),
                    )
                if len(path) == 3 and lpath[2] == "instanceview" and method == "GET":
                    return scoped("vms.instanceview", lambda: self._vm_instance_view(iid), (iid,))
                if len(path) == 3 and method == "POST" and lpath[2] in _VM_ACTIONS:
                    action = lpath[2]
                    return scoped(
                        f"vms.{action}",
                        lambda: self._action(action, [iid], request, per_vm=True),
                        (iid,),
                    )
            return _Route("vms.unknown", None)
        if len(path) == 1:
            if head == "instanceview" and method == "GET":
                return scoped("vmss.instanceview", self._scale_set_instance_view)
            if head == "osrollingupgrade" and method == "POST":
                return scoped("vmss.osrollingupgrade", lambda: self._start_rolling(request))
            if head in _VMSS_ACTIONS and method == "POST":
                return scoped(f"vmss.{head}", lambda: self._action(head, None, request), body_ids)
            if head == "osupgradehistory" and method == "GET":
                return scoped("vmss.osupgradehistory", self._os_upgrade_history)
            if head == "skus" and method == "GET":
                return scoped("vmss.skus", self._list_skus)
        if len(path) == 2 and head == "rollingupgrades":
            if lpath[1] == "latest" and method == "GET":
                return scoped("vmss.rollingupgrades.latest", self._rolling_latest)
            if lpath[1] == "cancel" and method == "POST":
                return scoped("vmss.rollingupgrades.cancel", lambda: self._cancel_rolling(request))
        return _Route("vmss.unknown", None)

    @staticmethod
    def _peek_ids(request: Request) -> tuple[str, ...]:
        if not request.body:
            return ()
        try:
            body = json.loads(request.body)
        except ValueError:
            return ()
        ids = body.get("instanceIds") if isinstance(body, dict) else None
        if isinstance(ids, list):
            return tuple(str(i) for i in ids)
        return ()

    def _not_supported(self, method: str, what: str) -> Callable[[], Response]:
        def fail() -> Response:
            raise ArmError(
                405,
                "MethodNotAllowed",
                f"The emulator does not support {method} on {what}.",
            )

        return fail

    def _check_resource(self, sub: str, rg: str, name: str) -> None:
        if sub.lower() != self.subscription.lower():
            raise ArmError(
                404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found."
            )
        if rg.lower() != self.resource_group.lower():
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found."
            )
        if self.deleted or name.lower() != self.name.lower():
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{VMSS_TYPE}/{name}' under resource group '{rg}' was not found. "
                "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )

    def _plain_vms(self, sub: str, rg: str | None, request: Request) -> Response:
        self._check_subscription(sub)
        return self._list_plain_vms(request, rg)

    def _plain_vm(self, sub: str, rg: str, vm: str, request: Request) -> Response:
        self._check_subscription(sub)
        if rg.lower() != self.resource_group.lower():
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found."
            )
        return self._get_plain_vm(vm, request)

    def _check_subscription(self, sub: str) -> None:
        if sub.lower() != self.subscription.lower():
            raise ArmError(
                404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found."
            )

    def _put_guard(self, sub: str, rg: str, name: str, fn: Callable[[], Response]) -> Response:
        try:
            self._check_resource(sub, rg, name)
        except ArmError as exc:
            if exc.code == "ResourceNotFound":
                raise ArmError(
                    400,
                    "OperationNotAllowed",
                    f"The emulator serves one scale set ('{self.name}'); creating '{name}' is not "
                    "supported.",
                ) from None
            raise
        return fn()
