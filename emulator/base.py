"""The emulator's shared vocabulary: constants, the HTTP-free request and
response types, ARM errors, the emulated scale set and JSON helpers."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import simpy

from ..backends import armjson
from ..engine.errors import InputError
from ..engine.model import (
    Health,
    ImageReference,
    Instance,
    ModelVersion,
    PowerState,
    ProvisioningState,
    UpgradeMode,
)
from ..sim.runner import build
from ..sim.scaleset import SimScaleSet
from ..sim.scenario import Scenario

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
_WRITES = ("PUT", "PATCH", "POST", "DELETE")
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
_VM_ACTIONS = ("start", "restart", "poweroff", "deallocate", "reimage", "reimageall")


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


def retry_headers(seconds: float) -> dict[str, str]:
    """Retry-After for a delay: whole seconds as ``Retry-After`` (and the ms
    headers); a fraction of a second only as ``retry-after-ms`` /
    ``x-ms-retry-after-ms``, which azure-core honours (it reads Retry-After
    first, so sending both would round a short delay up)."""
    ms = str(round(seconds * 1000))
    if seconds == int(seconds):
        return {"Retry-After": str(int(seconds)), "retry-after-ms": ms, "x-ms-retry-after-ms": ms}
    return {"retry-after-ms": ms, "x-ms-retry-after-ms": ms}


class EmulatedScaleSet(SimScaleSet):
    """The simulator's scale set with a change hook, so operations end at the
    simulated instant their last instance settles (not when someone polls)."""

    #: called after every state change with (instance id, new state or None if deleted)
    hook: Callable[[str, Instance | None], None] | None = None
    #: instances protected from scale-set actions (``protectFromScaleSetActions``):
    #: policy Automatic leaves them alone
    protected: frozenset[str] = frozenset()

    def update_model(self, model: ModelVersion, etag: str | None) -> str | None:
        """As the simulator's, except that policy Automatic skips protected instances
        ("Protects instance from operations initiated on the scale set (such as
        upgrade...)", MicrosoftDocs azure-docs virtual-machine-scale-sets-instance-
        protection.md)."""
        if self.upgrade_mode is not UpgradeMode.AUTOMATIC or not self.protected:
            return super().update_model(model, etag)
        self.upgrade_mode = UpgradeMode.MANUAL
        try:
            tag = super().update_model(model, etag)
        finally:
            self.upgrade_mode = UpgradeMode.AUTOMATIC
        stale = tuple(
            iid
            for iid, inst in self.instances.items()
            if inst.model != model and iid not in self.protected
        )
        self.requests.append((self.env.now, "platform_upgrade", stale))
        for iid in stale:
            self._begin(iid, self._upgrade(iid, model))
        return tag

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


def _whole(value: object, key: str, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high``; a JSON string of digits counts too,
    as the compute RP's JSON deserializer (Newtonsoft.Json) converts "31" for an
    integer property (older REST tools send ``sku.capacity`` as "31", issue 9)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    if number is None or not low <= number <= high:
        raise ArmError(
            400,
            "InvalidParameter",
            f"{key} must be a whole number from {low} to {high}, got {value!r}.",
            target=key,
        )
    return number


def _boolean(value: object, key: str) -> bool:
    """true or false; the JSON strings "true"/"false" count too (as :func:`_whole`)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ArmError(400, "InvalidParameter", f"{key} must be true or false.", target=key)


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
