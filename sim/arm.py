"""The Azure Resource Manager (ARM) face of a simulated scale set: the part of
the Compute REST API that upgrade tools use, over the SimPy :class:`SimScaleSet`.

Framework-free (no HTTP server here): :meth:`ArmEmulator.handle` takes a
:class:`Request` and returns a :class:`Response`; ``sim/emulator.py`` serves it
over HTTPS. Everything the real azure-mgmt-compute SDK needs is here: JSON
documents shaped like Azure's, ARM errors (``{"error": {"code", "message"}}``),
long-running operations (202 + ``Azure-AsyncOperation`` + ``Location`` +
``Retry-After``), ETag / If-Match, paging with ``nextLink``, bearer tokens,
injected faults and a request log.

Time: simulated time is wall time since start times ``time_scale``. Before a
request is handled the SimPy environment is run up to that time (lazily: it
only moves when someone looks), so a run is deterministic given the times of
the requests.

Upgrade policy: ``Manual`` leaves instances alone; ``Automatic`` is the
simulator's (every instance at once on a model change); ``Rolling`` runs the
platform's rolling upgrade with vmss-rollout's own engine and the
``azure-rolling`` strategy built from the stored ``rollingUpgradePolicy``, on
the same SimPy environment, so the platform and the simulator agree by
construction.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import simpy

from ..engine import armjson
from ..engine.errors import InputError
from ..engine.model import (
    Health,
    ImageReference,
    Instance,
    ModelVersion,
    PowerState,
    ProvisioningState,
    UpgradeMode,
    instance_sort_key,
)
from ..engine.options import EngineOptions
from ..engine.rollout import Resolution, Rollout
from ..strategies.base import Duration
from ..strategies.builtin import AzureRolling
from .runner import build, derive_seed, drive
from .scaleset import SimScaleSet
from .scenario import Scenario

__all__ = [
    "API_VERSION_MAX",
    "API_VERSION_MIN",
    "ArmEmulator",
    "ArmError",
    "Faults",
    "Request",
    "Response",
]

API_VERSION_MIN = "2016-03-30"
API_VERSION_MAX = "2026-04-01"
DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_RESOURCE_GROUP = "vmss-rollout-rg"
DEFAULT_LOCATION = "westeurope"
DEFAULT_PAGE_SIZE = 50
#: the audiences a token may be asked for (public cloud ARM)
ARM_RESOURCES = (
    "https://management.azure.com",
    "https://management.azure.com/",
    "https://management.core.windows.net",
    "https://management.core.windows.net/",
)
TOKEN_LIFETIME_S = 24 * 3600
#: every access token the emulator issues starts with it, so that tests can look
#: for tokens in output and files
TOKEN_PREFIX = "vmss-emu-token."
#: request-log entries kept (the oldest are dropped beyond it; counts stay exact)
LOG_LIMIT = 100_000
COMPUTE = "Microsoft.Compute"
VMSS_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
VM_TYPE = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"

#: simulated seconds a power operation spends in its transient state
POWER_SECONDS = {"start": 30.0, "restart": 45.0, "poweroff": 15.0, "deallocate": 60.0}
_API_VERSION_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(-preview)?$")
_UPGRADING = (ProvisioningState.UPDATING, ProvisioningState.CREATING)
_POWER_TRANSIENT = (PowerState.STARTING, PowerState.STOPPING)
#: fields of the scale set document the service computes (dropped from PUT/PATCH bodies)
_READ_ONLY = ("id", "name", "type", "etag")
_READ_ONLY_PROPERTIES = ("provisioningState", "uniqueId", "timeCreated")


# --------------------------------------------------------------------------- HTTP-free I/O


@dataclass(frozen=True)
class Request:
    """One HTTP request, as the server saw it."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    #: header names in lower case
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: scheme://host:port the client used, for absolute links (nextLink, LRO URLs)
    base_url: str = "https://127.0.0.1"

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int
    #: a JSON-serialisable document, or None for an empty body
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: injected fault: the server closes the connection instead of answering
    drop: bool = False


class ArmError(Exception):
    """An ARM error response: ``{"error": {"code", "message"[, "target"]}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.headers = dict(headers or {})

    def document(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        return {"error": error}

    def response(self) -> Response:
        return Response(self.status, self.document(), dict(self.headers))


# --------------------------------------------------------------------------- faults


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


#: what ``auth_failure`` makes every ARM request (or every write) answer
AUTH_FAILURES = ("", "401", "403", "403-writes")


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
    #: the Retry-After of a 429, in (real) seconds; fractions are sent as retry-after-ms
    throttle_retry_after: float = 1.0
    #: probability that an ARM request answers 500 or 503
    error_rate: float = 0.0
    #: real seconds added to every request
    latency: float = 0.0
    #: probability that a long-running operation ends Failed (its effect still happens)
    lro_failure_rate: float = 0.0
    #: the Retry-After of long-running operations, in (real) seconds
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


def retry_headers(seconds: float) -> dict[str, str]:
    """Retry-After for a delay: whole seconds as ``Retry-After`` (and the ms
    headers); a fraction of a second only as ``retry-after-ms`` /
    ``x-ms-retry-after-ms``, which azure-core honours (it reads Retry-After
    first, so sending both would round a short delay up)."""
    ms = str(round(seconds * 1000))
    if seconds == int(seconds):
        return {"Retry-After": str(int(seconds)), "retry-after-ms": ms, "x-ms-retry-after-ms": ms}
    return {"retry-after-ms": ms, "x-ms-retry-after-ms": ms}


# --------------------------------------------------------------------------- the scale set


class EmulatedScaleSet(SimScaleSet):
    """The simulator's scale set with a change hook, so operations end at the
    simulated instant their last instance settles (not when someone polls)."""

    #: called after every state change with (instance id, new state or None if deleted)
    hook: Callable[[str, Instance | None], None] | None = None

    def _set(self, iid: str, inst: Instance | None, wake: bool = True) -> None:
        super()._set(iid, inst, wake)
        if self.hook is not None:
            self.hook(iid, inst)


def build_scale_set(scenario: Scenario, seed: int) -> tuple[simpy.Environment, EmulatedScaleSet]:
    """The environment and scale set :func:`sim.runner.build` makes for
    ``scenario`` (same construction, same random draws), with the change hook."""
    env, scale_set = build(scenario, seed)
    scale_set.__class__ = EmulatedScaleSet  # adds behaviour only; no new instance layout
    assert isinstance(scale_set, EmulatedScaleSet)
    return env, scale_set


# --------------------------------------------------------------------------- operations


@dataclass
class Operation:
    """A long-running operation: its status document and what it waits for."""

    id: str
    kind: str
    api_version: str
    start: float
    #: "power" (waits for a settled power state), "provision" (settled provisioning),
    #: "delete", "rolling" (the platform's rolling upgrade), "done" (completes at once)
    wait: str = "done"
    waiting: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    status: str = "InProgress"
    end: float | None = None
    error: dict[str, Any] | None = None
    inject_failure: bool = False

    @property
    def done(self) -> bool:
        return self.status != "InProgress"


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


# --------------------------------------------------------------------------- JSON helpers


def _iso_duration(text: object, key: str) -> float:
    if isinstance(text, str) and text.strip().upper() not in ("", "P", "PT"):
        try:
            return armjson.iso_duration(text)
        except InputError:
            pass
    raise ArmError(
        400,
        "InvalidParameter",
        f"The value {text!r} of parameter '{key}' is not a valid ISO 8601 duration (e.g. PT0S).",
        target=key,
    )


def _merge(base: Any, patch: Any) -> Any:
    """JSON merge for PATCH: objects merge key by key, anything else replaces;
    ``null`` leaves a value unchanged (as ARM's PATCH does)."""
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            continue
        out[key] = _merge(base.get(key), value) if isinstance(value, dict) else copy.deepcopy(value)
    return out


def _get(doc: Mapping[str, Any], *path: str) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _obj(doc: dict[str, Any], *path: str) -> dict[str, Any]:
    """The object at ``path``, created as needed."""
    node = doc
    for key in path:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    return node


_PLATFORM_KEYS = ("publisher", "offer", "sku", "version")
_ID_KEYS = ("id", "sharedGalleryImageId", "communityGalleryImageId")


def image_json(image: ImageReference) -> dict[str, Any]:
    """A scale set model's ``imageReference`` (no ``exactVersion``; empty for a
    legacy unmanaged image, which lives in ``osDisk.image.uri``)."""
    return dict(armjson.storage_profile_patch(image).get("imageReference") or {})


def _status(code: str, level: str, display: str, time: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"code": code, "level": level, "displayStatus": display}
    if time is not None:
        out["time"] = time
    return out


_PROVISIONING_STATUS = {
    ProvisioningState.SUCCEEDED: ("ProvisioningState/succeeded", "Info", "Provisioning succeeded"),
    ProvisioningState.UPDATING: ("ProvisioningState/updating", "Info", "Updating"),
    ProvisioningState.CREATING: ("ProvisioningState/creating", "Info", "Creating"),
    ProvisioningState.DELETING: ("ProvisioningState/deleting", "Info", "Deleting"),
    ProvisioningState.FAILED: (
        "ProvisioningState/failed/OSProvisioningTimedOut",
        "Error",
        "Provisioning failed",
    ),
}
_POWER_STATUS = {
    PowerState.RUNNING: ("PowerState/running", "VM running"),
    PowerState.STOPPED: ("PowerState/stopped", "VM stopped"),
    PowerState.DEALLOCATED: ("PowerState/deallocated", "VM deallocated"),
    PowerState.STARTING: ("PowerState/starting", "VM starting"),
    PowerState.STOPPING: ("PowerState/stopping", "VM stopping"),
}
_HEALTH_STATUS = {
    "healthy": ("Info", "The VM is healthy"),
    "unhealthy": ("Warning", "The VM is unhealthy"),
    "initializing": ("Info", "The VM health is initializing"),
    "unknown": ("Warning", "The VM health is unknown"),
}


def health_state(inst: Instance) -> str:
    """The Application Health extension's state: ``initializing`` during the
    health delay after an upgrade, ``unknown`` while not running or provisioning."""
    if inst.provisioning in _UPGRADING or inst.power is not PowerState.RUNNING:
        return "unknown"
    if inst.provisioning is ProvisioningState.FAILED:
        return "unknown"
    if inst.health is Health.HEALTHY:
        return "healthy"
    if inst.health is Health.UNHEALTHY:
        return "unhealthy"
    return "initializing"


def _base36(number: int, width: int = 6) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
    return out.rjust(width, "0")


def _instance_ids(body: Any, *, required: bool) -> list[str] | None:
    """``instanceIds`` of an action body; None means "all instances"."""
    if body is None or (isinstance(body, dict) and body.get("instanceIds") is None):
        if required:
            raise ArmError(
                400,
                "InvalidParameter",
                "Required parameter 'instanceIds' is missing (null).",
                target="instanceIds",
            )
        return None
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content is not a JSON object.")
    ids = body.get("instanceIds")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ArmError(
            400,
            "InvalidParameter",
            "Parameter 'instanceIds' must be a list of instance id strings.",
            target="instanceIds",
        )
    if "*" in ids:
        return None
    return list(dict.fromkeys(ids))


# --------------------------------------------------------------------------- the emulator


@dataclass(frozen=True)
class _Route:
    operation: str
    handler: Callable[[], Response] | None
    #: instance ids the request names (for the log), best effort
    instance_ids: tuple[str, ...] = ()


class ArmEmulator:
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
        #: the real time simulated time 0 stands for (timestamps in documents)
        self.epoch = epoch or datetime.now(UTC)
        #: the App Service managed-identity secret (``IDENTITY_HEADER``)
        self.identity_secret = identity_secret or secrets.token_urlsafe(24)
        self.seed = derive_seed(scenario.seed, 0)  # the study's first run, as `simulate --timeline`
        self.env, self.ss = build_scale_set(scenario, self.seed)
        self.ss.hook = self._instance_changed
        self.initial_model = self.ss.model
        self._models_seen: list[ModelVersion] = [self.initial_model]
        self.fault_rng = random.Random()
        self._fault_changes = 0
        self.faults = Faults()
        self.set_faults(faults or Faults.from_scenario(scenario))
        self.etag = 1
        self.unique_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"vmss-rollout:{self.name}"))
        self.doc = self._initial_doc()
        self._apply_policy(self.doc)
        self.tokens: dict[str, float] = {}
        self.operations: dict[str, Operation] = {}
        self._waiting: dict[str, set[str]] = {}  # instance id -> waiting operation ids
        self.rolling: RollingRun | None = None
        self.rolling_history: list[RollingRun] = []
        self._rolling_again = False
        self.manual_upgrades = 0
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self.log_dropped = 0
        #: every instance state change, in order with the requests (``seq``)
        self.history: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._seq = 0
        #: POST /_emulator/delete-scale-set: the scale set answers 404 until restored
        self.deleted = False
        self.counts: dict[str, int] = {}
        self.status_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ setup
    @property
    def vmss_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{COMPUTE}/virtualMachineScaleSets/{self.name}"
        )

    def _initial_doc(self) -> dict[str, Any]:
        model = self.ss.model
        prefix = re.sub(r"[^a-z0-9-]", "", self.name.lower())[:9] or "vm"
        vnet = (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Network/virtualNetworks/{self.name}-vnet/subnets/default"
        )
        profile: dict[str, Any] = {
            "osProfile": {
                "computerNamePrefix": prefix,
                "adminUsername": "azureuser",
                "linuxConfiguration": {"disablePasswordAuthentication": True},
            },
            "storageProfile": {
                "imageReference": image_json(model.image),
                "osDisk": {
                    "createOption": "FromImage",
                    "caching": "ReadWrite",
                    "managedDisk": {"storageAccountType": "Premium_LRS"},
                },
            },
            "networkProfile": {
                "networkInterfaceConfigurations": [
                    {
                        "name": f"{prefix}-nic",
                        "properties": {
                            "primary": True,
                            "ipConfigurations": [
                                {"name": "ipconfig1", "properties": {"subnet": {"id": vnet}}}
                            ],
                        },
                    }
                ]
            },
        }
        if self.health_extension:
            profile["extensionProfile"] = {
                "extensions": [
                    {
                        "name": "HealthExtension",
                        "properties": {
                            "publisher": "Microsoft.ManagedServices",
                            "type": "ApplicationHealthLinux",
                            "typeHandlerVersion": "2.0",
                            "autoUpgradeMinorVersion": True,
                            "settings": {"protocol": "http", "port": 80, "requestPath": "/health"},
                        },
                    }
                ]
            }
        doc: dict[str, Any] = {
            "location": self.location,
            "tags": {},
            "sku": {"name": model.vm_size, "tier": "Standard", "capacity": len(self.ss.instances)},
            "properties": {
                "singlePlacementGroup": True,
                "orchestrationMode": "Uniform",
                "overprovision": False,
                "doNotRunExtensionsOnOverprovisionedVMs": False,
                "platformFaultDomainCount": self.ss.fault_domains,
                "upgradePolicy": {
                    "mode": self.scenario.upgrade_policy,
                    "rollingUpgradePolicy": {
                        "maxBatchInstancePercent": 20,
                        "maxUnhealthyInstancePercent": 20,
                        "maxUnhealthyUpgradedInstancePercent": 20,
                        "pauseTimeBetweenBatches": "PT0S",
                        "enableCrossZoneUpgrade": False,
                        "prioritizeUnhealthyInstances": False,
                        "rollbackFailedInstancesOnPolicyBreach": False,
                        "maxSurge": False,
                    },
                    "automaticOSUpgradePolicy": {
                        "enableAutomaticOSUpgrade": False,
                        "disableAutomaticRollback": False,
                    },
                },
                "virtualMachineProfile": profile,
            },
        }
        if self.ss.zones:
            doc["zones"] = list(self.ss.zones)
        return doc

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

    # ------------------------------------------------------------------ time
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

    def iso(self, sim_time: float) -> str:
        return (self.epoch + timedelta(seconds=sim_time)).isoformat()

    # ------------------------------------------------------------------ auth
    def issue_token(self, resource: str) -> dict[str, Any]:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = int(self.epoch.timestamp() + self.clock()) + TOKEN_LIFETIME_S
        self.tokens[token] = self.clock() + TOKEN_LIFETIME_S
        return {
            "access_token": token,
            "expires_on": str(expires),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"vmss-rollout:{self.name}:mi")),
        }

    def handle_identity(self, request: Request) -> Response:
        """The App Service managed-identity endpoint azure-identity / MSAL call
        (``GET IDENTITY_ENDPOINT?api-version=2019-08-01&resource=...`` with the
        ``X-IDENTITY-HEADER`` secret)."""
        self.advance()
        status = 200
        body: dict[str, Any]
        secret = request.header("x-identity-header") or ""
        resource = request.query.get("resource", "")
        if request.method != "GET":
            status, body = 405, {"statusCode": 405, "message": "Use GET."}
        elif not hmac.compare_digest(secret.encode(), self.identity_secret.encode()):
            status, body = 401, {"statusCode": 401, "message": "Invalid X-IDENTITY-HEADER."}
        elif request.query.get("api-version") != "2019-08-01":
            status, body = 400, {"statusCode": 400, "message": "api-version must be 2019-08-01."}
        elif resource not in ARM_RESOURCES:
            status = 400
            body = {
                "statusCode": 400,
                "message": f"This emulator issues tokens for {ARM_RESOURCES[0]} only, "
                f"not {resource!r}.",
            }
        else:
            body = self.issue_token(resource)
        response = Response(status, body)
        self._record(request, "identity.token", status, ())
        return response

    def _check_auth(self, request: Request) -> None:
        header = request.header("authorization")
        if not header:
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                headers={
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                    'common", error="invalid_token", error_description="The authentication failed '
                    "because of missing 'Authorization' header.\""
                },
            )
        scheme, _, token = header.partition(" ")
        expiry = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry < self.clock():
            raise ArmError(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid."
                if expiry is None
                else "The access token expiry has passed.",
                headers={
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                    'common", error="invalid_token", error_description="The access token is '
                    'invalid."'
                },
            )

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

    # ------------------------------------------------------------------ dispatch
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
        response.drop = self._drop(request)
        self._record(
            request, route.operation, response.status, route.instance_ids, seq, response.drop
        )
        return response

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
            if left % 2:
                raise ArmError(
                    500,
                    "InternalServerError",
                    "An internal server error occurred (injected by the emulator).",
                )
            raise ArmError(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable (injected by the emulator).",
            )
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
            if kind < 0.5:
                raise ArmError(
                    500,
                    "InternalServerError",
                    "An internal server error occurred (injected by the emulator).",
                )
            raise ArmError(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable (injected by the emulator).",
            )

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

    def _route(self, request: Request) -> _Route:
        parts = [p for p in request.path.split("/") if p]
        lower = [p.lower() for p in parts]
        method = request.method.upper()
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
        if len(rest) < 2 or lrest[0] != "resourcegroups":
            return _Route("unknown", None)
        rg = rest[1]
        tail, ltail = rest[2:], lrest[2:]
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
        if head == "virtualmachines":
            if len(path) == 1 and method == "GET":
                return scoped("vms.list", lambda: self._list_vms(request))
            if len(path) >= 2:
                iid = path[1]
                if len(path) == 2 and method == "GET":
                    return scoped("vms.get", lambda: self._get_vm(iid, request), (iid,))
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

    # ------------------------------------------------------------------ scale set
    def _list_scale_sets(self, sub: str, rg: str | None) -> Response:
        if sub.lower() != self.subscription.lower():
            raise ArmError(
                404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found."
            )
        if rg is not None and rg.lower() != self.resource_group.lower():
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found."
            )
        return Response(200, {"value": [] if self.deleted else [self.scale_set_json()]})

    def scale_set_json(self) -> dict[str, Any]:
        doc = copy.deepcopy(self.doc)
        model = self.ss.model
        doc["id"] = self.vmss_id
        doc["name"] = self.name
        doc["type"] = VMSS_TYPE
        doc["etag"] = f'"{self.etag}"'
        sku = _obj(doc, "sku")
        sku["name"] = model.vm_size
        sku.setdefault("tier", "Standard")
        sku["capacity"] = len(self.ss.instances)
        props = _obj(doc, "properties")
        storage = _obj(props, "virtualMachineProfile", "storageProfile")
        os_disk = _obj(storage, "osDisk")
        storage.pop("imageReference", None)
        os_disk.pop("image", None)
        storage.update(_merge(storage, armjson.storage_profile_patch(model.image)))
        policy = _obj(props, "upgradePolicy")
        policy["rollingUpgradePolicy"] = self._rolling_policy()
        props["provisioningState"] = "Succeeded"
        props["uniqueId"] = self.unique_id
        props["timeCreated"] = self.iso(0.0)
        if self.ss.zones:
            doc["zones"] = list(self.ss.zones)
        return doc

    def _get_scale_set(self) -> Response:
        return Response(200, self.scale_set_json(), {"ETag": f'"{self.etag}"'})

    def _check_preconditions(self, request: Request) -> None:
        if_match = request.header("if-match")
        if if_match is not None:
            wanted = [t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")]
            if "*" not in wanted and str(self.etag) not in wanted:
                raise ArmError(
                    412,
                    "PreconditionFailed",
                    f"The specified precondition 'If-Match = {if_match}' failed: the scale set's "
                    f"etag is '\"{self.etag}\"'.",
                )
        if_none = request.header("if-none-match")
        if if_none is not None and if_none.strip() == "*":
            raise ArmError(
                412,
                "PreconditionFailed",
                "The specified precondition 'If-None-Match = *' failed: the scale set exists.",
            )

    def _write_scale_set(self, request: Request, *, replace_all: bool) -> Response:
        self._check_preconditions(request)
        body = self._parse_body(request)
        if not isinstance(body, dict):
            raise ArmError(400, "InvalidRequestContent", "The request body must be a JSON object.")
        body = copy.deepcopy(body)
        for key in _READ_ONLY:
            body.pop(key, None)
        props = body.get("properties")
        if isinstance(props, dict):
            for key in _READ_ONLY_PROPERTIES:
                props.pop(key, None)
        old_doc = self.doc
        old_image = _get(old_doc, "properties", "virtualMachineProfile", "storageProfile")
        if replace_all:
            new_doc = body
            if not isinstance(new_doc.get("location"), str):
                raise ArmError(
                    400, "InvalidParameter", "Parameter 'location' is required.", target="location"
                )
            if not isinstance(new_doc.get("properties"), dict):
                raise ArmError(
                    400,
                    "InvalidParameter",
                    "Parameter 'properties' is required.",
                    target="properties",
                )
        else:
            new_doc = _merge(old_doc, body)
            new_ref = _get(body, "properties", "virtualMachineProfile", "storageProfile")
            # an image given by id replaces a platform image, and back
            if isinstance(new_ref, dict) and isinstance(new_ref.get("imageReference"), dict):
                patch_ref = new_ref["imageReference"]
                storage = _obj(new_doc, "properties", "virtualMachineProfile", "storageProfile")
                if patch_ref.get("id") or not (
                    isinstance(old_image, dict)
                    and isinstance(old_image.get("imageReference"), dict)
                    and "id" not in old_image["imageReference"]
                ):
                    storage["imageReference"] = copy.deepcopy(patch_ref)
            elif isinstance(new_ref, dict) and _get(new_ref, "osDisk", "image", "uri"):
                # a legacy unmanaged image replaces an image reference
                _obj(new_doc, "properties", "virtualMachineProfile", "storageProfile").pop(
                    "imageReference", None
                )
        location = new_doc.get("location")
        if isinstance(location, str) and location.replace(" ", "").lower() != self.location.lower():
            raise ArmError(
                400,
                "OperationNotAllowed",
                f"The location of the scale set cannot be changed from '{self.location}' to "
                f"'{location}'.",
                target="location",
            )
        zones = new_doc.get("zones")
        if zones is not None and list(zones) != list(self.ss.zones):
            raise ArmError(
                400,
                "OperationNotAllowed",
                "Changing the zones of the scale set is not supported by the emulator.",
                target="zones",
            )
        model = self._model_of(new_doc)
        capacity = self._capacity_of(new_doc)
        mode = self._apply_policy(new_doc, check_only=True)
        before = self.scale_set_json()
        # everything is valid: apply
        new_doc.setdefault("tags", {})
        self.doc = new_doc
        self._apply_policy(new_doc)
        self.ss.upgrade_mode = (
            UpgradeMode.AUTOMATIC if mode is UpgradeMode.AUTOMATIC else UpgradeMode.MANUAL
        )
        model_changed = model != self.ss.model
        if model_changed:
            if model not in self._models_seen:
                self._models_seen.append(model)
            self._update_bad_models()
            self.ss.update_model(model, None)
        if capacity is not None and capacity != len(self.ss.instances):
            self._scale(capacity)
        self._settle()
        after = self.scale_set_json()
        before.pop("etag")
        after.pop("etag")
        if before != after:
            self.etag += 1
        running = self.rolling is not None and self.rolling.end is None
        if mode is UpgradeMode.ROLLING and (
            model_changed or (self._stale_instances() and not running)
        ):
            # a model change (or a "generic" update, to restart a stopped one) starts
            # the platform's rolling upgrade
            self._begin_rolling(None)
            self._settle()
        doc = self.scale_set_json()
        return Response(200, doc, {"ETag": f'"{self.etag}"'})

    def _model_of(self, doc: dict[str, Any]) -> ModelVersion:
        sku = doc.get("sku")
        vm_size = sku.get("name") if isinstance(sku, dict) else None
        if vm_size is None:
            vm_size = self.ss.model.vm_size
        if not isinstance(vm_size, str) or not vm_size.strip():
            raise ArmError(
                400, "InvalidParameter", "sku.name must be a VM size.", target="sku.name"
            )
        storage = _get(doc, "properties", "virtualMachineProfile", "storageProfile")
        if not isinstance(storage, dict):
            storage = {}
        ref = storage.get("imageReference")
        os_disk = storage.get("osDisk")
        uri = _get(storage, "osDisk", "image", "uri")
        old = self.ss.model.image
        if isinstance(ref, dict) and any(ref.get(k) for k in _ID_KEYS):
            pass  # a managed or gallery image
        elif isinstance(ref, dict) and any(ref.get(k) for k in _PLATFORM_KEYS):
            values = {k: ref.get(k) for k in _PLATFORM_KEYS}
            for key, value in values.items():
                if value is not None and not isinstance(value, str):
                    raise ArmError(
                        400,
                        "InvalidParameter",
                        f"imageReference.{key} must be a string.",
                        target=f"imageReference.{key}",
                    )
            if old.publisher is not None and (
                (values["publisher"] or "").lower() != old.publisher.lower()
                or (values["offer"] or "").lower() != (old.offer or "").lower()
            ):
                raise ArmError(
                    400,
                    "OperationNotAllowed",
                    "Changing property 'imageReference.publisher' or 'imageReference.offer' is "
                    "not allowed: publisher and offer can only be set when you create the scale "
                    "set.",
                    target="imageReference",
                )
            if not values["sku"] or not values["version"]:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    "A platform imageReference needs publisher, offer, sku and version.",
                    target="imageReference",
                )
        elif isinstance(uri, str) and uri:
            storage.pop("imageReference", None)
        else:
            return ModelVersion(old, vm_size.strip())
        if isinstance(ref, dict) and isinstance(os_disk, dict):
            os_disk.pop("image", None)  # an image reference and a legacy image are exclusive
            ref.pop("exactVersion", None)
        # parsed exactly as the Azure backend parses it (engine.armjson)
        return ModelVersion(armjson.image_from_storage_profile(storage), vm_size.strip())

    @staticmethod
    def _capacity_of(doc: Mapping[str, Any]) -> int | None:
        sku = doc.get("sku")
        capacity = sku.get("capacity") if isinstance(sku, dict) else None
        if capacity is None:
            return None
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 0 <= capacity <= 1000:
            raise ArmError(
                400,
                "InvalidParameter",
                f"sku.capacity must be a whole number from 0 to 1000, got {capacity!r}.",
                target="sku.capacity",
            )
        return capacity

    def _apply_policy(self, doc: dict[str, Any], *, check_only: bool = False) -> UpgradeMode:
        policy = _get(doc, "properties", "upgradePolicy")
        if policy is None:
            policy = {}
        if not isinstance(policy, dict):
            raise ArmError(400, "InvalidParameter", "upgradePolicy must be an object.")
        raw_mode = policy.get("mode", "Manual")
        mode = next(
            (
                m
                for m in UpgradeMode
                if isinstance(raw_mode, str) and m.value.lower() == raw_mode.lower()
            ),
            None,
        )
        if mode is None:
            raise ArmError(
                400,
                "InvalidParameter",
                f"upgradePolicy.mode must be one of Automatic, Manual, Rolling; got {raw_mode!r}.",
                target="upgradePolicy.mode",
            )
        rolling = policy.get("rollingUpgradePolicy") or {}
        if not isinstance(rolling, dict):
            raise ArmError(400, "InvalidParameter", "rollingUpgradePolicy must be an object.")
        merged = {**_DEFAULT_ROLLING, **rolling}
        for key, low in (
            ("maxBatchInstancePercent", 5),
            ("maxUnhealthyInstancePercent", 5),
            ("maxUnhealthyUpgradedInstancePercent", 0),
        ):
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 100:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"rollingUpgradePolicy.{key} must be a whole number from {low} to 100, "
                    f"got {value!r}.",
                    target=f"rollingUpgradePolicy.{key}",
                )
        _iso_duration(
            merged["pauseTimeBetweenBatches"], "rollingUpgradePolicy.pauseTimeBetweenBatches"
        )
        for key in (
            "enableCrossZoneUpgrade",
            "prioritizeUnhealthyInstances",
            "rollbackFailedInstancesOnPolicyBreach",
            "maxSurge",
        ):
            if not isinstance(merged[key], bool):
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"rollingUpgradePolicy.{key} must be true or false.",
                    target=f"rollingUpgradePolicy.{key}",
                )
        if not check_only:
            policy = _obj(doc, "properties", "upgradePolicy")
            policy["mode"] = mode.value
            policy["rollingUpgradePolicy"] = merged
        return mode

    def _rolling_policy(self) -> dict[str, Any]:
        stored = _get(self.doc, "properties", "upgradePolicy", "rollingUpgradePolicy") or {}
        return {**_DEFAULT_ROLLING, **stored}

    @property
    def upgrade_mode(self) -> UpgradeMode:
        return UpgradeMode(_get(self.doc, "properties", "upgradePolicy", "mode") or "Manual")

    def _scale(self, capacity: int) -> None:
        have = len(self.ss.instances)
        if capacity > have:
            self.ss.add_instances(capacity - have)
        else:
            ordered = sorted(self.ss.instances, key=instance_sort_key)
            self.ss.delete_instances(ordered[capacity:])

    def _stale_instances(self) -> list[str]:
        return [
            iid
            for iid, inst in self.ss.instances.items()
            if not (inst.model == self.ss.model and inst.latest_model_applied)
        ]

    # ------------------------------------------------------------------ instances
    def _instance(self, iid: str) -> Instance:
        inst = self.ss.instances.get(iid)
        if inst is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{VMSS_TYPE}/{self.name}/virtualMachines/{iid}' under resource "
                f"group '{self.resource_group}' was not found.",
            )
        return inst

    def vm_json(self, inst: Instance, *, expand: bool) -> dict[str, Any]:
        iid = inst.instance_id
        model = inst.model or self.ss.model
        disk_suffix = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.name}:{iid}").hex
        os_disk: dict[str, Any] = {
            "osType": "Linux",
            "name": f"{self.name}_{iid}_OsDisk_1_{disk_suffix}",
            "createOption": "FromImage",
            "caching": "ReadWrite",
            "managedDisk": {"storageAccountType": "Premium_LRS"},
            "diskSizeGB": 30,
        }
        storage: dict[str, Any] = {"osDisk": os_disk}
        if model.image.uri:
            os_disk["image"] = {"uri": model.image.uri}
        else:
            storage["imageReference"] = armjson.image_json(model.image)
        props: dict[str, Any] = {
            "latestModelApplied": inst.latest_model_applied,
            "modelDefinitionApplied": "VirtualMachineScaleSet",
            "vmId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"vmss-rollout:{self.name}:{iid}")),
            "provisioningState": inst.provisioning.value,
            "hardwareProfile": {"vmSize": model.vm_size},
            "storageProfile": storage,
            "osProfile": {
                "computerName": self._computer_name(iid),
                "adminUsername": "azureuser",
            },
        }
        if expand:
            props["instanceView"] = self.instance_view_json(inst)
        doc: dict[str, Any] = {
            "id": f"{self.vmss_id}/virtualMachines/{iid}",
            "name": f"{self.name}_{iid}",
            "instanceId": iid,
            "type": VM_TYPE,
            "location": self.location,
            "sku": {"name": model.vm_size, "tier": "Standard"},
            "etag": f'"{self.etag}"',
            "properties": props,
        }
        if inst.zone:
            doc["zones"] = [inst.zone]
        return doc

    def _computer_name(self, iid: str) -> str:
        prefix = _get(
            self.doc, "properties", "virtualMachineProfile", "osProfile", "computerNamePrefix"
        )
        number = int(iid) if iid.isdigit() else 0
        return f"{prefix or 'vm'}{_base36(number)}"

    def instance_view_json(self, inst: Instance) -> dict[str, Any]:
        now = self.iso(self.env.now)
        code, level, display = _PROVISIONING_STATUS[inst.provisioning]
        power_code, power_display = _POWER_STATUS[inst.power]
        statuses = [_status(code, level, display, now), _status(power_code, "Info", power_display)]
        view: dict[str, Any] = {
            "platformUpdateDomain": inst.update_domain,
            "platformFaultDomain": inst.fault_domain,
            "computerName": self._computer_name(inst.instance_id),
            "osName": "ubuntu",
            "statuses": statuses,
        }
        if self.health_extension:
            state = self.reported_health(inst)
            h_level, h_display = _HEALTH_STATUS[state]
            view["vmHealth"] = {"status": _status(f"HealthState/{state}", h_level, h_display)}
            view["extensions"] = [
                {
                    "name": "HealthExtension",
                    "type": "Microsoft.ManagedServices.ApplicationHealthLinux",
                    "typeHandlerVersion": "2.0",
                    "statuses": [
                        _status("ProvisioningState/succeeded", "Info", "Provisioning succeeded")
                    ],
                }
            ]
        return view

    def reported_health(self, inst: Instance) -> str:
        """What the health extension reports: :func:`health_state`, unless
        ``silent_health`` keeps instances on a new model "initializing"."""
        state = health_state(inst)
        if (
            self.faults.silent_health
            and inst.model != self.initial_model
            and state in ("healthy", "unhealthy")
        ):
            return "initializing"
        return state

    def _list_vms(self, request: Request) -> Response:
        expand = (request.query.get("$expand") or "").lower() == "instanceview"
        after = request.query.get("$skiptoken")
        ordered = sorted(self.ss.instances.values(), key=lambda i: instance_sort_key(i.instance_id))
        latest = self._latest_filter(request.query.get("$filter"))
        if latest is not None:
            ordered = [i for i in ordered if i.latest_model_applied is latest]
        if after is not None:
            start = instance_sort_key(after)
            ordered = [i for i in ordered if instance_sort_key(i.instance_id) > start]
        page = ordered[: self.page_size]
        body: dict[str, Any] = {"value": [self.vm_json(i, expand=expand) for i in page]}
        if len(ordered) > self.page_size:
            query = {k: v for k, v in request.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = page[-1].instance_id
            body["nextLink"] = (
                f"{request.base_url.rstrip('/')}{self.vmss_id}/virtualMachines?"
                + urlencode(query, quote_via=quote, safe="$'")
            )
        return Response(200, body)

    @staticmethod
    def _latest_filter(text: str | None) -> bool | None:
        """``properties/latestModelApplied eq true|false`` (other filters are ignored)."""
        if not text:
            return None
        match = re.fullmatch(
            r"\s*properties/latestModelApplied\s+eq\s+(true|false)\s*", text, re.IGNORECASE
        )
        return None if match is None else match.group(1).lower() == "true"

    def _get_vm(self, iid: str, request: Request) -> Response:
        inst = self._instance(iid)
        expand = (request.query.get("$expand") or "").lower() == "instanceview"
        return Response(200, self.vm_json(inst, expand=expand))

    def _vm_instance_view(self, iid: str) -> Response:
        return Response(200, self.instance_view_json(self._instance(iid)))

    def _scale_set_instance_view(self) -> Response:
        summary: dict[str, int] = {}
        for inst in self.ss.instances.values():
            for code in (
                _PROVISIONING_STATUS[inst.provisioning][0],
                _POWER_STATUS[inst.power][0],
            ):
                summary[code] = summary.get(code, 0) + 1
        body: dict[str, Any] = {
            "virtualMachine": {
                "statusesSummary": [{"code": c, "count": n} for c, n in sorted(summary.items())]
            },
            "statuses": [
                _status(
                    "ProvisioningState/succeeded",
                    "Info",
                    "Provisioning succeeded",
                    self.iso(self.env.now),
                )
            ],
            "orchestrationServices": [],
        }
        if self.health_extension:
            health: dict[str, int] = {}
            for inst in self.ss.instances.values():
                code = f"HealthState/{self.reported_health(inst)}"
                health[code] = health.get(code, 0) + 1
            body["extensions"] = [
                {
                    "name": "HealthExtension",
                    "statusesSummary": [
                        {"code": "ProvisioningState/succeeded", "count": len(self.ss.instances)}
                    ],
                }
            ]
            body["virtualMachine"]["healthSummary"] = [
                {"code": c, "count": n} for c, n in sorted(health.items())
            ]
        return Response(200, body)

    # ------------------------------------------------------------------ actions (LROs)
    def _action(
        self, action: str, ids: list[str] | None, request: Request, *, per_vm: bool = False
    ) -> Response:
        if per_vm:
            assert ids is not None
            self._instance(ids[0])
            targets = ids
        else:
            body = self._parse_body(request)
            named = _instance_ids(body, required=action in ("manualupgrade", "delete"))
            if named is None:
                targets = sorted(self.ss.instances, key=instance_sort_key)
            else:
                unknown = [i for i in named if i not in self.ss.instances]
                if unknown:
                    raise ArmError(
                        400,
                        "InvalidParameter",
                        f"The provided instanceId(s) {', '.join(unknown)} are not valid VM "
                        f"instance Ids for the virtual machine scale set '{self.name}'.",
                        target="instanceIds",
                    )
                targets = named
        kind = f"{'vms' if per_vm else 'vmss'}.{action}"
        if action in POWER_SECONDS:
            busy = [i for i in targets if self.ss.instances[i].provisioning in _UPGRADING]
            if busy:
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Operation '{action}' is not allowed on instance(s) {', '.join(busy)}: "
                    "another operation is in progress on them.",
                )
        wait = {
            "delete": "delete",
            "manualupgrade": "provision",
            "reimage": "provision",
            "reimageall": "provision",
        }.get(action, "power")
        op = self._new_operation(kind, request, wait, targets)
        if action == "delete":
            self.ss.delete_instances(targets)
            # Deleting instances (VirtualMachineScaleSets_DeleteInstances, or one
            # VM's DELETE) lowers the scale set's sku.capacity by as many: the
            # Azure cluster-autoscaler decrements its cached capacity by
            # len(instanceIDs) right after DeleteInstances for that reason
            # (kubernetes/autoscaler cluster-autoscaler/cloudprovider/azure/
            # azure_scale_set.go, PR #3277; PR #3510: "VMSS new goal capacity"
            # after delete calls). Without this the stored capacity stays high
            # and the next PATCH (merged over it) scales the set out again.
            _obj(self.doc, "sku")["capacity"] = len(self.ss.instances)
        elif action in ("manualupgrade", "reimage", "reimageall"):
            (self.ss.start_upgrade if action == "manualupgrade" else self.ss.reimage)(targets)
        elif action == "start":
            self.ss.start(targets, POWER_SECONDS["start"])
        elif action == "restart":
            self.ss.restart(targets, POWER_SECONDS["restart"])
        elif action == "poweroff":
            self.ss.power_off(targets, POWER_SECONDS["poweroff"])
        elif action == "deallocate":
            self.ss.deallocate(targets, POWER_SECONDS["deallocate"])
        self._settle()
        for iid in targets:
            self._instance_changed(iid, self.ss.instances.get(iid))
        self._maybe_finish(op)
        if action == "manualupgrade":
            self.manual_upgrades += 1
            after = self.faults.concurrent_change_after
            if after is not None and self.manual_upgrades == after:
                self._concurrent_change()
        return self._accepted(op, request)

    def _concurrent_change(self) -> None:
        """Another client changes the model (tags): the etag moves on."""
        tags = self.doc.setdefault("tags", {})
        tags["changedBy"] = "another-client"
        tags["changeNumber"] = str(int(tags.get("changeNumber", "0")) + 1)
        self.etag += 1

    # ------------------------------------------------------------------ LRO plumbing
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
            waiting=set(instance_ids) if wait in ("power", "provision", "delete") else set(),
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

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _instance_changed(self, iid: str, inst: Instance | None) -> None:
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
            settled = (
                inst is None
                or (op.wait == "provision" and inst.provisioning not in _UPGRADING)
                or (op.wait == "power" and inst.power not in _POWER_TRANSIENT)
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

    def _maybe_finish(self, op: Operation) -> None:
        if op.done or op.waiting or op.wait == "rolling":
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

    # ------------------------------------------------------------------ rolling upgrades
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
        _, instances = self.ss.read()
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
                        "runningStatus": status["runningStatus"],
                        "progress": status["progress"],
                        "error": status.get("error"),
                        "startedBy": "User",
                        "targetImageReference": image_json(self.ss.model.image),
                    },
                }
            )
        return Response(200, {"value": value})


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
_VMSS_ACTIONS = (
    "manualupgrade",
    "reimage",
    "reimageall",
    "start",
    "restart",
    "poweroff",
    "deallocate",
    "delete",
)
_WRITES = ("PUT", "PATCH", "POST", "DELETE")
_VM_ACTIONS = ("start", "restart", "poweroff", "deallocate", "reimage", "reimageall")
