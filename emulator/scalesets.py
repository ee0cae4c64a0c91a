"""The scale set resource: GET, PUT, PATCH, list, instance view."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from ..backends import armjson
from ..engine.model import (
    ModelVersion,
    ProvisioningState,
    UpgradeMode,
    instance_sort_key,
)
from .base import (
    _ID_KEYS,
    _PLATFORM_KEYS,
    _POWER_STATUS,
    _PROVISIONING_STATUS,
    _READ_ONLY,
    _READ_ONLY_PROPERTIES,
    _UPGRADING,
    DELETE_SECONDS,
    MODEL_UPDATE_SECONDS,
    OVERPROVISION_FRACTION,
    VMSS_TYPE,
    ArmError,
    Request,
    Response,
    _boolean,
    _get,
    _iso_duration,
    _merge,
    _obj,
    _status,
    _whole,
    image_json,
    retry_headers,
)
from .instances import InstancesMixin
from .operations import Operation, conflict
from .rolling import _DEFAULT_ROLLING


def _instance_profile(doc: Mapping[str, Any]) -> Any:
    """The per-instance model but its image (which the simulator follows itself)."""
    profile = copy.deepcopy(_get(doc, "properties", "virtualMachineProfile"))
    storage = _get(profile, "storageProfile")
    if isinstance(storage, dict):
        storage.pop("imageReference", None)
        if isinstance(storage.get("osDisk"), dict):
            storage["osDisk"].pop("image", None)
    return profile


class ScaleSetsMixin(InstancesMixin):
    """The scale set document and writes to it."""

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
                # on by default for Uniform sets (az vmss create --disable-overprovision;
                # MicrosoftDocs azure-compute-docs virtual-machine-scale-sets-design-overview)
                "overprovision": self.overprovision_default,
                "doNotRunExtensionsOnOverprovisionedVMs": False,
                "platformFaultDomainCount": self.ss.fault_domains,
                "upgradePolicy": {
                    "mode": self.scenario.upgrade_policy,
                    "rollingUpgradePolicy": dict(_DEFAULT_ROLLING),
                    "automaticOSUpgradePolicy": {
                        "enableAutomaticOSUpgrade": False,
                        "disableAutomaticRollback": False,
                    },
                },
                "virtualMachineProfile": profile,
            },
        }
        if self.flexible:
            # Flexible: no placement groups or overprovisioning (Uniform-only features,
            # orchestration-modes doc); the mode is fixed at creation
            props = doc["properties"]
            props["orchestrationMode"] = "Flexible"
            props["singlePlacementGroup"] = False
            for key in ("overprovision", "doNotRunExtensionsOnOverprovisionedVMs"):
                props.pop(key)
        if self.ss.zones:
            doc["zones"] = list(self.ss.zones)
        return doc

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
        sku["capacity"] = self.capacity
        props = _obj(doc, "properties")
        storage = _obj(props, "virtualMachineProfile", "storageProfile")
        os_disk = _obj(storage, "osDisk")
        storage.pop("imageReference", None)
        os_disk.pop("image", None)
        storage.update(_merge(storage, armjson.storage_profile_patch(model.image)))
        ref = storage.get("imageReference")
        if isinstance(ref, dict):  # Azure leaves the image-id fields of other kinds out
            storage["imageReference"] = {k: v for k, v in ref.items() if v is not None}
        policy = _obj(props, "upgradePolicy")
        policy["rollingUpgradePolicy"] = self._rolling_policy()
        props["provisioningState"] = "Updating" if self._updating() else "Succeeded"
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
        """PUT or PATCH of the scale set: a long-running operation (REST spec:
        x-ms-long-running-operation; the SDK polls Azure-AsyncOperation), answered
        200 with provisioningState Updating. Under policy Rolling, a write that starts
        the platform's rolling upgrade lasts until it ends and fails with its error
        (Azure/azure-powershell#11896: Update-AzVmss ran 12:57 then failed with
        MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade); other writes end
        after MODEL_UPDATE_SECONDS, or when a scale-out's instances are provisioned.
        A write while an earlier one is in progress is refused, 409 Conflict (ARM's
        answer to concurrent writes on a resource): a client that waits for each write's
        operation to end never sees it."""
        if self.model_write is not None and not self.model_write.done:
            raise conflict()
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
        if replace_all and not isinstance(body.get("location"), str):
            raise ArmError(
                400, "InvalidParameter", "Parameter 'location' is required.", target="location"
            )
        # PUT and PATCH alike: what the body leaves out stays as it is. The compute RP
        # accepts partial PUT bodies: `az vmss scale --new-capacity N` PUTs only location
        # and sku, and `az vmss update --set ...imageReference.version=X` PUTs an
        # imageReference holding only the version (azure-cli vm/custom.py scale_vmss /
        # update_vmss; both succeed on Azure, issue 9).
        new_doc = _merge(old_doc, body)
        new_ref = _get(body, "properties", "virtualMachineProfile", "storageProfile")
        if isinstance(new_ref, dict) and isinstance(new_ref.get("imageReference"), dict):
            patch_ref = new_ref["imageReference"]
            storage = _obj(new_doc, "properties", "virtualMachineProfile", "storageProfile")
            old_ref = _get(old_image, "imageReference") if isinstance(old_image, dict) else None
            old_by_id = isinstance(old_ref, dict) and any(old_ref.get(k) for k in _ID_KEYS)
            if any(patch_ref.get(k) for k in _ID_KEYS) or old_by_id:
                # an image given by id (any of the three kinds: id, sharedGalleryImageId,
                # communityGalleryImageId, SDK ImageReference) replaces the reference as a
                # whole, and a platform image replaces an id; nulls are dropped
                storage["imageReference"] = {
                    k: copy.deepcopy(v) for k, v in patch_ref.items() if v is not None
                }
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
        mode_now = _get(old_doc, "properties", "orchestrationMode")
        mode_asked = _get(new_doc, "properties", "orchestrationMode")
        if str(mode_asked).lower() != str(mode_now).lower():
            # "the orchestration mode is defined when you create the scale set and cannot
            # be changed or updated later" (orchestration-modes doc); Azure's error text
            # is not documented: code and message are an assumption
            raise ArmError(
                400,
                "PropertyChangeNotAllowed",
                "Changing property 'orchestrationMode' is not allowed.",
                target="orchestrationMode",
            )
        automatic_os = _get(
            new_doc,
            "properties",
            "upgradePolicy",
            "automaticOSUpgradePolicy",
            "enableAutomaticOSUpgrade",
        )
        if self.flexible and automatic_os is True:
            # "Image-based Automatic OS Upgrades" are not supported with Flexible
            # orchestration (orchestration-modes doc, "Unsupported parameters");
            # assumption: the code and text
            raise ArmError(
                400,
                "InvalidParameter",
                "Automatic OS image upgrades are not supported for Virtual Machine Scale Sets "
                "with Flexible orchestration mode.",
                target="upgradePolicy.automaticOSUpgradePolicy.enableAutomaticOSUpgrade",
            )
        if self.flexible and _get(body, "properties", "overprovision") is True:
            # assumption: the text; overprovisioning is Uniform-only (orchestration-modes doc)
            raise ArmError(
                400,
                "InvalidParameter",
                "Overprovision is not supported for Virtual Machine Scale Sets with "
                "Flexible orchestration mode.",
                target="overprovision",
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
        old_capacity = self.capacity
        capacity = self._capacity_of(new_doc)
        mode = self._apply_policy(new_doc, check_only=True)
        before = self.scale_set_json()
        op = self._new_operation("vmss.put" if replace_all else "vmss.patch", request, "delay")
        self.model_write = op
        # everything is valid: apply
        new_doc.setdefault("tags", {})
        self.doc = new_doc
        self._apply_policy(new_doc)
        self.ss.upgrade_mode = (
            UpgradeMode.AUTOMATIC if mode is UpgradeMode.AUTOMATIC else UpgradeMode.MANUAL
        )
        model_changed = model != self.ss.model
        if _instance_profile(old_doc) != _instance_profile(new_doc):
            self._new_profile()
        if model_changed:
            if model not in self._models_seen:
                self._models_seen.append(model)
            self._update_bad_models()
            self.ss.update_model(model, None)
        if capacity != old_capacity:
            self._scale(old_capacity, capacity, op)
        after = self.scale_set_json()
        for doc in (before, after):  # what the write changed, not its own progress
            doc.pop("etag")
            doc["properties"].pop("provisioningState")
        if before != after:
            self.etag += 1
        running = self.rolling is not None and self.rolling.end is None
        if mode is UpgradeMode.ROLLING and (
            model_changed or (self._stale_instances() and not running)
        ):
            # a model change (or a "generic" update, to restart a stopped one) starts
            # the platform's rolling upgrade; the write lasts as long
            op.wait = "rolling"
            self._begin_rolling(op)
        elif op.wait == "delay":
            self._finish_after(op, MODEL_UPDATE_SECONDS)
        else:
            self._maybe_finish(op)
        self._settle()
        status_url, _ = self._operation_urls(op, request.base_url)
        headers = {"ETag": f'"{self.etag}"', "Azure-AsyncOperation": status_url}
        headers.update(retry_headers(self.faults.lro_retry_after))
        return Response(200, self.scale_set_json(), headers)

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
        # parsed exactly as the Azure backend parses it (backends.armjson)
        return ModelVersion(armjson.image_from_storage_profile(storage), vm_size.strip())

    @staticmethod
    def _capacity_of(doc: dict[str, Any]) -> int:
        """``sku.capacity`` of a merged document (stored back as a number)."""
        sku = _obj(doc, "sku")
        capacity = _whole(sku.get("capacity"), "sku.capacity", 0, 1000)
        sku["capacity"] = capacity
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
        if (
            self.flexible
            and mode is UpgradeMode.ROLLING
            and armjson.health_source(doc) != armjson.HEALTH_EXTENSION
        ):
            # "Flexible Orchestration: Application Health Extension is required" for a
            # Rolling policy (configure-rolling-upgrades doc, "Requirements"); assumption:
            # the code and text
            raise ArmError(
                400,
                "InvalidParameter",
                "Rolling upgrade policy on a scale set with Flexible orchestration mode "
                "requires the Application Health extension.",
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
            merged[key] = _whole(merged[key], f"rollingUpgradePolicy.{key}", low, 100)
        _iso_duration(
            merged["pauseTimeBetweenBatches"], "rollingUpgradePolicy.pauseTimeBetweenBatches"
        )
        for key in (
            "enableCrossZoneUpgrade",
            "prioritizeUnhealthyInstances",
            "rollbackFailedInstancesOnPolicyBreach",
            "maxSurge",
        ):
            merged[key] = _boolean(merged[key], f"rollingUpgradePolicy.{key}")
        if self.flexible and merged["rollbackFailedInstancesOnPolicyBreach"]:
            # "Rollback Failed Instances On Policy Breach (Uniform Orchestration only)"
            # (configure-rolling-upgrades doc); assumption: refused, code and text
            raise ArmError(
                400,
                "InvalidParameter",
                "rollbackFailedInstancesOnPolicyBreach is only supported for Virtual Machine "
                "Scale Sets with Uniform orchestration mode.",
                target="rollingUpgradePolicy.rollbackFailedInstancesOnPolicyBreach",
            )
        if not check_only:
            policy = _obj(doc, "properties", "upgradePolicy")
            policy["mode"] = mode.value
            policy["rollingUpgradePolicy"] = merged
        return mode

    @property
    def upgrade_mode(self) -> UpgradeMode:
        return UpgradeMode(_get(self.doc, "properties", "upgradePolicy", "mode") or "Manual")

    def _scale(self, old: int, new: int, op: Operation) -> None:
        """Scale out (``op`` then waits for the new instances to be provisioned) or in
        (for the removed ones to be deleted)."""
        before = set(self.ss.instances)
        extra = 0
        if new > old:
            if _boolean(_get(self.doc, "properties", "overprovision") or False, "overprovision"):
                extra = math.ceil((new - old) * OVERPROVISION_FRACTION)
            self.ss.add_instances(new - old + extra)
        else:
            # scale-in takes the highest ids, never protected instances (either kind
            # protects from scale-in: instance-protection doc)
            ordered = [
                iid
                for iid in sorted(self.ss.instances, key=instance_sort_key)
                if iid not in self.protection or not any(self.protection[iid].values())
            ]
            self.ss.begin_delete(ordered[new - old :], DELETE_SECONDS)
        changed = (set(self.ss.instances) - before) if new > old else set(ordered[new - old :])
        op.wait = "scale"
        op.waiting = changed
        for iid in changed:
            self._waiting.setdefault(iid, set()).add(op.id)
        if new < old:
            op.extras = changed  # "scale" waits for extras to be gone
        elif extra:
            # overprovisioned: the first (new - old) to be provisioned stay, the others
            # are deleted then (operations.py _overprovisioned)
            op.keep = new - old
            op.group = sorted(changed, key=instance_sort_key)

    def _updating(self) -> bool:
        """The scale set reports provisioningState Updating while a write to it is in
        progress or its instances are being updated, created or deleted (issue 9:
        Azure's scale set reads Updating during such operations; gbowerman/vmsstools
        vmssupgrade waits for it to finish)."""
        return (
            (self.model_write is not None and not self.model_write.done)
            or (self.rolling is not None and self.rolling.end is None)
            or any(
                inst.provisioning in (*_UPGRADING, ProvisioningState.DELETING)
                for inst in self.ss.instances.values()
            )
        )

    def _stale_instances(self) -> list[str]:
        return [
            iid
            for iid, inst in self.ss.instances.items()
            if not (inst.model == self.ss.model and inst.latest_model_applied)
            and iid not in self.ss.protected
        ]

    def _scale_set_instance_view(self) -> Response:
        if self.flexible:
            # "VMSS Get Instance View: No" for Flexible (orchestration-modes doc,
            # "Autoscaling and instance orchestration"); assumption: the code and text
            raise ArmError(
                400,
                "OperationNotAllowed",
                "Operation 'VirtualMachineScaleSets.instanceView.GET' is not allowed on "
                f"Virtual Machine Scale Set '{self.name}'.",
            )
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
                    *(
                        ("ProvisioningState/updating", "Info", "Updating")
                        if self._updating()
                        else ("ProvisioningState/succeeded", "Info", "Provisioning succeeded")
                    ),
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
