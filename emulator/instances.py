"""Scale set instances (virtualMachines): list, get, instance view and actions."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

from ..backends import armjson
from ..engine.model import (
    Instance,
    instance_sort_key,
)
from .base import (
    _HEALTH_STATUS,
    _POWER_STATUS,
    _PROVISIONING_STATUS,
    _UPGRADING,
    POWER_SECONDS,
    VM_TYPE,
    VMSS_TYPE,
    ArmError,
    Request,
    Response,
    _base36,
    _boolean,
    _get,
    _instance_ids,
    _obj,
    _status,
    health_state,
)
from .rolling import RollingMixin


class InstancesMixin(RollingMixin):
    """The virtualMachines of the scale set and the actions on them."""

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
            # readOnly in VirtualMachineScaleSetVMProperties (REST spec 2024-11-01)
            "timeCreated": self.iso(self.created_at.get(iid, 0.0)),
            "hardwareProfile": {"vmSize": model.vm_size},
            "storageProfile": storage,
            "osProfile": {
                "computerName": self._computer_name(iid),
                "adminUsername": "azureuser",
            },
        }
        policy = self.protection.get(iid)
        if policy is not None:  # "By default, protection policy is not applied" (the doc)
            props["protectionPolicy"] = {
                "protectFromScaleIn": bool(policy.get("protectFromScaleIn")),
                "protectFromScaleSetActions": bool(policy.get("protectFromScaleSetActions")),
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

    def _refuse_protected(self, ids: Iterable[str]) -> None:
        """A scale-set action naming instances protected from scale-set actions is
        refused ("Protects instance from operations initiated on the scale set (such
        as upgrade, reimage, deallocate, etc.)"; "User-initiated instance operations
        (including instance delete) are not blocked": MicrosoftDocs azure-docs
        virtual-machine-scale-sets-instance-protection.md). The message is Azure's
        (quoted in Azure support troubleshooting notes); its HTTP status and code are
        not documented: 400 OperationNotAllowed is an assumption."""
        protected = [i for i in ids if i in self.ss.protected]
        if protected:
            raise ArmError(
                400,
                "OperationNotAllowed",
                "InstanceIds may not contain instances that are protected from scale set "
                "actions. The following instance ids are protected from scale set action: "
                f"{', '.join(protected)}.",
                target="instanceIds",
            )

    def protection_policy(self, iid: str) -> dict[str, bool] | None:
        return self.protection.get(iid)

    def set_protection(self, iid: str, policy: dict[str, bool]) -> None:
        self.protection[iid] = policy
        self.ss.protected = frozenset(
            i for i, p in self.protection.items() if p.get("protectFromScaleSetActions")
        )

    def _put_vm(self, iid: str, request: Request) -> Response:
        """``PUT .../virtualMachines/{id}``: the instance model. Only
        ``protectionPolicy`` is taken from it (the rest of the instance model
        follows the scale set's in this emulator); absent, it stays as it was."""
        inst = self._instance(iid)
        body = self._parse_body(request)
        if not isinstance(body, dict):
            raise ArmError(400, "InvalidRequestContent", "The request body must be a JSON object.")
        given = _get(body, "properties", "protectionPolicy")
        if given is not None:
            if not isinstance(given, dict):
                raise ArmError(
                    400,
                    "InvalidParameter",
                    "protectionPolicy must be an object.",
                    target="protectionPolicy",
                )
            policy = dict(self.protection.get(iid) or {})
            for key in ("protectFromScaleIn", "protectFromScaleSetActions"):
                if given.get(key) is not None:
                    policy[key] = _boolean(given[key], f"protectionPolicy.{key}")
            if (
                policy.get("protectFromScaleSetActions")
                and policy.get("protectFromScaleIn") is False
            ):
                # "You can't specify "protectFromScaleIn": false when setting
                # "protectFromScaleSetActions": true" (instance-protection doc)
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"Virtual Machine Scale Set {self.name} VM instance {iid} protectionPolicy "
                    "properties protectFromScaleIn and protectFromScaleSetActions conflict with "
                    "each other. protectFromScaleIn cannot be false when "
                    "protectFromScaleSetActions is true.",
                    target="protectionPolicy",
                )
            self.set_protection(iid, policy)
        return Response(200, self.vm_json(inst, expand=False))

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
                # all instances: those protected from scale-set actions are left out
                # (assumption: Azure documents the protection, not this case)
                targets = [
                    i
                    for i in sorted(self.ss.instances, key=instance_sort_key)
                    if i not in self.ss.protected
                ]
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
                self._refuse_protected(named)
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
            # deleting instances lowers the scale set's capacity by as many (Azure's
            # DeleteInstances: kubernetes/autoscaler azure_scale_set.go decrements its
            # cached size by the ids deleted, PR #3277; openshift-azure#1550 shows a
            # later PUT of the old sku.capacity re-creating a deleted VM)
            sku = _obj(self.doc, "sku")
            sku["capacity"] = max(0, self.capacity - len(targets))
            self.ss.delete_instances(targets)
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
