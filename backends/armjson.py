"""Azure Resource Manager JSON <-> the domain model, in one place.

The Azure backend reads the SDK's models as the REST JSON they wrap; the
emulator writes the same JSON. Both go through these functions, so the two
cannot drift apart. Pure data: no azure import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..engine.errors import InputError
from ..engine.model import (
    ID_FIELDS,
    Health,
    ImageReference,
    Instance,
    ModelVersion,
    PowerState,
    ProvisioningState,
    RollingPolicy,
    ScaleSetModel,
    UpgradeMode,
)

Json = Mapping[str, Any]

HEALTH_EXTENSION_TYPES = ("applicationhealthlinux", "applicationhealthwindows")
HEALTH_EXTENSION = "Application Health extension (vmHealth)"
HEALTH_PROBE = "load balancer health probe (vmHealth)"
HEALTH_FALLBACK = "provisioning succeeded + running (no health source configured)"

_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def _get(data: Json | None, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def iso_duration(text: str | None) -> float:
    """Seconds of an ISO 8601 duration such as ``PT2S`` or ``PT1M30S``."""
    if not text:
        return 0.0
    match = _ISO_DURATION.match(text.strip().upper())
    if match is None:
        raise InputError(f"pauseTimeBetweenBatches: not an ISO 8601 duration: {text!r}")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


# ----------------------------------------------------------------------------- images


def image_from_storage_profile(storage: Json | None) -> ImageReference:
    ref = _get(storage, "imageReference") or {}
    uri = _get(storage, "osDisk", "image", "uri")
    return ImageReference(
        publisher=ref.get("publisher"),
        offer=ref.get("offer"),
        sku=ref.get("sku"),
        version=ref.get("version"),
        id=next((ref[f] for f in ID_FIELDS if ref.get(f)), None),
        uri=uri,
    )


def storage_profile_patch(image: ImageReference) -> dict[str, Any]:
    """The ``storageProfile`` fragment that sets ``image``."""
    if image.uri:
        return {"osDisk": {"image": {"uri": image.uri}}}
    if image.id:
        # the id in the field of its kind, the other kinds nulled (a PATCH merges:
        # an id of another kind left in place would contradict it)
        return {"imageReference": {f: image.id if f == image.id_field else None for f in ID_FIELDS}}
    ref = {k: getattr(image, k) for k in ("publisher", "offer", "sku", "version")}
    return {"imageReference": {k: v for k, v in ref.items() if v is not None}}


def image_json(image: ImageReference) -> dict[str, Any]:
    """``imageReference`` as Azure reports it on a VM (with ``exactVersion``)."""
    if image.id:
        return {image.id_field: image.id}
    ref: dict[str, Any] = {
        k: getattr(image, k) for k in ("publisher", "offer", "sku", "version") if getattr(image, k)
    }
    if image.version:
        ref["exactVersion"] = image.version
    return ref


# ----------------------------------------------------------------------------- scale set


def scale_set_model(vmss: Json) -> ModelVersion:
    profile = _get(vmss, "properties", "virtualMachineProfile") or {}
    return ModelVersion(
        image_from_storage_profile(profile.get("storageProfile")),
        str(_get(vmss, "sku", "name") or ""),
    )


def rolling_policy(vmss: Json) -> RollingPolicy:
    p = _get(vmss, "properties", "upgradePolicy", "rollingUpgradePolicy") or {}
    d = RollingPolicy()
    return RollingPolicy(
        max_batch_instance_percent=int(
            p.get("maxBatchInstancePercent", d.max_batch_instance_percent)
        ),
        max_unhealthy_instance_percent=int(
            p.get("maxUnhealthyInstancePercent", d.max_unhealthy_instance_percent)
        ),
        max_unhealthy_upgraded_instance_percent=int(
            p.get("maxUnhealthyUpgradedInstancePercent", d.max_unhealthy_upgraded_instance_percent)
        ),
        pause_time_between_batches=iso_duration(p.get("pauseTimeBetweenBatches")),
        prioritize_unhealthy_instances=bool(p.get("prioritizeUnhealthyInstances", False)),
        enable_cross_zone_upgrade=bool(p.get("enableCrossZoneUpgrade", False)),
        max_surge=bool(p.get("maxSurge", False)),
        rollback_failed_instances_on_policy_breach=bool(
            p.get("rollbackFailedInstancesOnPolicyBreach", False)
        ),
    )


def scale_set(vmss: Json) -> ScaleSetModel:
    mode = _get(vmss, "properties", "upgradePolicy", "mode") or "Manual"
    try:
        upgrade_mode = UpgradeMode(str(mode).capitalize())
    except ValueError:
        upgrade_mode = UpgradeMode.MANUAL
    fd_count = _get(vmss, "properties", "platformFaultDomainCount")
    return ScaleSetModel(
        name=str(vmss.get("name") or ""),
        model=scale_set_model(vmss),
        upgrade_mode=upgrade_mode,
        rolling_policy=rolling_policy(vmss),
        etag=vmss.get("etag"),
        capacity=int(_get(vmss, "sku", "capacity") or 0),
        zones=tuple(vmss.get("zones") or ()),
        fault_domain_count=int(fd_count) if fd_count is not None else None,
        overprovision=bool(_get(vmss, "properties", "overprovision")),
    )


def health_source(vmss: Json) -> str:
    """Which health signal the platform reports for this scale set."""
    profile = _get(vmss, "properties", "virtualMachineProfile") or {}
    for ext in _get(profile, "extensionProfile", "extensions") or []:
        kind = str(_get(ext, "properties", "type") or "").lower()
        if kind in HEALTH_EXTENSION_TYPES:
            return HEALTH_EXTENSION
    if _get(profile, "networkProfile", "healthProbe", "id"):
        return HEALTH_PROBE
    return HEALTH_FALLBACK


def model_patch(target: ModelVersion, current: ModelVersion) -> dict[str, Any]:
    """The body of a PATCH that moves the scale set model from ``current`` to ``target``."""
    body: dict[str, Any] = {}
    if target.vm_size != current.vm_size:
        body["sku"] = {"name": target.vm_size}
    if target.image != current.image:
        body["properties"] = {
            "virtualMachineProfile": {"storageProfile": storage_profile_patch(target.image)}
        }
    return body


# ----------------------------------------------------------------------------- instances

_PROVISIONING = {s.value.lower(): s for s in ProvisioningState}
_POWER = {s.value: s for s in PowerState}
_HEALTH = {"healthstate/healthy": Health.HEALTHY, "healthstate/unhealthy": Health.UNHEALTHY}


def instance(vm: Json, *, use_vm_health: bool) -> Instance:
    """One VM (listed with ``$expand=instanceView``) as the engine sees it."""
    props = vm.get("properties") or {}
    view = props.get("instanceView") or {}
    provisioning = _PROVISIONING.get(
        str(props.get("provisioningState") or "").lower(), ProvisioningState.UPDATING
    )
    power = PowerState.RUNNING
    for status in view.get("statuses") or []:
        code = str(status.get("code") or "")
        if code.startswith("PowerState/"):
            power = _POWER.get(code.split("/", 1)[1], PowerState.STOPPED)
    health_code = str(_get(view, "vmHealth", "status", "code") or "").lower()
    if use_vm_health and health_code:
        health = _HEALTH.get(health_code, Health.UNKNOWN)
    elif provisioning is ProvisioningState.SUCCEEDED and power is PowerState.RUNNING:
        health = Health.HEALTHY
    elif provisioning is ProvisioningState.FAILED:
        health = Health.UNHEALTHY
    else:
        health = Health.UNKNOWN
    zones = vm.get("zones") or []
    size = _get(vm, "sku", "name") or _get(props, "hardwareProfile", "vmSize") or ""
    return Instance(
        instance_id=str(vm.get("instanceId")),
        update_domain=int(view.get("platformUpdateDomain") or 0),
        fault_domain=int(view.get("platformFaultDomain") or 0),
        zone=str(zones[0]) if zones else "",
        model=ModelVersion(image_from_storage_profile(props.get("storageProfile")), str(size)),
        latest_model_applied=bool(props.get("latestModelApplied", False)),
        provisioning=provisioning,
        power=power,
        health=health,
        protected=bool(_get(props, "protectionPolicy", "protectFromScaleSetActions")),
    )
