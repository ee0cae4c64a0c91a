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
    DELETE_SECONDS,
    POWER_SECONDS,
    VM_TYPE,
    VM_TYPE_FLEXIBLE,
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
            "name": f"{iid if self.flexible else f'{self.name}_{iid}'}_OsDisk_1_{disk_suffix}",
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
        if self.flexible:  # <prefix><6 characters> (assumption: the VM name's hex suffix)
            return f"{prefix or 'vm'}{iid.rsplit('_', 1)[-1][:6]}"
        number = int(iid) if iid.isdigit() else 0
        return f"{prefix or 'vm'}{_base36(number)}"

    # ------------------------------------------------------------------ Flexible
    def flexible_vm_json(self, inst: Instance, *, expand: bool) -> dict[str, Any]:
        """A Flexible member as Azure serves it: a plain virtual machine
        (``Microsoft.Compute/virtualMachines``, REST spec virtualMachine.json) named
        ``<scale set>_<8 hex>``, whose ``properties.virtualMachineScaleSet.id`` names the
        scale set. A plain VM has no ``latestModelApplied``, no ``instanceId`` and no
        ``sku``; ``platformFaultDomain`` only when the scale set has more than one fault
        domain (the spec: "The Virtual Machine Scale Set that is referenced, must have
        'platformFaultDomainCount' greater than 1"; under max spreading "The API
        responses don't include fault domain or update domain information",
        manage-fault-domains doc)."""
        uniform = self.vm_json(inst, expand=False)
        props = uniform["properties"]
        for key in ("latestModelApplied", "modelDefinitionApplied"):
            props.pop(key, None)
        props["virtualMachineScaleSet"] = {"id": self.vmss_id}
        if self.ss.fault_domains > 1:
            props["platformFaultDomain"] = inst.fault_domain
        if expand:
            view = self.instance_view_json(inst)
            props["instanceView"] = view
        doc: dict[str, Any] = {
            "id": self.flexible_vm_id(inst.instance_id),
            "name": inst.instance_id,
            "type": VM_TYPE_FLEXIBLE,
            "location": self.location,
            "etag": uniform["etag"],
            "properties": props,
        }
        if inst.zone:
            doc["zones"] = [inst.zone]
        return doc

    def flexible_vm_id(self, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{name}"
        )

    def _list_plain_vms(self, request: Request, rg: str | None) -> Response:
        """``GET .../providers/Microsoft.Compute/virtualMachines`` (VirtualMachines_List
        and _ListAll): the members of a Flexible set, paged; a Uniform set's instances
        are not plain VMs and are not listed. ``$filter`` takes
        ``'virtualMachineScaleSet/id' eq '<id>'``; "$expand ... can only be specified
        if a valid $filter option is specified" (the spec's VirtualMachines_List)."""
        if rg is not None and rg.lower() != self.resource_group.lower():
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found."
            )
        text = request.query.get("$filter")
        wanted: str | None = None
        if text:
            match = re.fullmatch(
                r"\s*'?virtualMachineScaleSet/id'?\s+eq\s+'([^']*)'\s*", text, re.IGNORECASE
            )
            if match is None:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"The $filter '{text}' is not supported; use "
                    "'virtualMachineScaleSet/id' eq '<scale set id>'.",
                    target="$filter",
                )
            wanted = match.group(1)
        expand_text = request.query.get("$expand")
        if expand_text and wanted is None:
            # assumption: the status and code; the rule is the spec's
            raise ArmError(
                400,
                "InvalidParameter",
                "$expand can only be specified if a valid $filter option is specified.",
                target="$expand",
            )
        expand = (expand_text or "").lower() == "instanceview"
        members = self.flexible and not self.deleted
        if wanted is not None and wanted.lower() != self.vmss_id.lower():
            members = False
        ordered = (
            sorted(self.ss.instances.values(), key=lambda i: instance_sort_key(i.instance_id))
            if members
            else []
        )
        after = request.query.get("$skiptoken")
        if after is not None:
            start = instance_sort_key(after)
            ordered = [i for i in ordered if instance_sort_key(i.instance_id) > start]
        page = ordered[: self.page_size]
        body: dict[str, Any] = {"value": [self.flexible_vm_json(i, expand=expand) for i in page]}
        if len(ordered) > self.page_size:
            query = {k: v for k, v in request.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = page[-1].instance_id
            body["nextLink"] = f"{request.base_url.rstrip('/')}{request.path}?" + urlencode(
                query, quote_via=quote, safe="$'"
            )
        return Response(200, body)

    def _get_plain_vm(self, name: str, request: Request) -> Response:
        inst = self.ss.instances.get(name) if self.flexible and not self.deleted else None
        if inst is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group "
                f"'{self.resource_group}' was not found.",
            )
        if request.path.rstrip("/").lower().endswith("/instanceview"):
            return Response(200, self.instance_view_json(inst))
        expand = (request.query.get("$expand") or "").lower() == "instanceview"
        return Response(200, self.flexible_vm_json(inst, expand=expand))

    def refuse_uniform_only(self, method: str) -> Response:
        """The scale set's own VM list and per-instance routes are Uniform-only: Azure
        answers 400 on a Flexible set (microsoft/OMS-Agent-for-Linux PR #1475,
        Get-AzVmssVM -InstanceView; azure/aaz list-instances: "For VMSS in Flexible
        Orchestration mode, please use 'az vm list'"). The code is an assumption."""
        raise ArmError(
            400,
            "OperationNotAllowed",
            f"Operation 'VirtualMachineScaleSets.virtualMachines.{method.upper()}' is not "
            f"allowed on Virtual Machine Scale Set '{self.name}'.",
        )

    def instance_view_json(self, inst: Instance) -> dict[str, Any]:
        now = self.iso(self.env.now)
        code, level, display = _PROVISIONING_STATUS[inst.provisioning]
        power_code, power_display = _POWER_STATUS[inst.power]
        statuses = [_status(code, level, display, now), _status(power_code, "Info", power_display)]
        view: dict[str, Any] = {
            "platformUpdateDomain": inst.update_domain,
            "platformFaultDomain": inst.fault_domain,
        }
        if self.flexible:
            # a Flexible member has no update domain, and no fault domain under max
            # spreading (manage-fault-domains doc, "Instance View API")
            del view["platformUpdateDomain"]
            if self.ss.fault_domains == 1:
                del view["platformFaultDomain"]
        view |= {
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

    def _refuse_deleting(self, action: str, ids: Iterable[str]) -> None:
        """Operations on an instance being deleted are refused (MicrosoftDocs azure-docs
        virtual-machines/troubleshooting/error-messages.md; kubernetes-sigs/
        cloud-provider-azure CannotUpdateVMBeingDeletedMessageSuffix)."""
        deleting = [i for i in ids if self.ss.deleting(i)]
        if deleting:
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Operation '{action}' is not allowed on VM '{self.name}_{deleting[0]}' since "
                "the VM is marked for deletion. You can only retry the Delete operation (or "
                "wait for an ongoing one to complete).",
            )

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
        self._refuse_deleting("PUT", [iid])
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
                    if i not in self.ss.protected and not self.ss.deleting(i)
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
        if action != "delete":
            self._refuse_deleting(action, targets)
        if action in POWER_SECONDS:
            busy = [i for i in targets if self.ss.instances[i].provisioning in _UPGRADING]
            if busy:
                # MicrosoftDocs azure-docs virtual-machines/troubleshooting/error-messages.md
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Operation '{action}' is not allowed on VM '{self.name}_{busy[0]}' since "
                    "another operation is in progress.",
                )
        wait = {
            "delete": "delete",
            "manualupgrade": "provision",
            "reimage": "provision",
            "reimageall": "provision",
        }.get(action, "power")
        op = self._new_operation(kind, request, wait, targets)
        self._supersede(targets, op)
        if action == "delete":
            # deleting instances lowers the scale set's capacity by as many (Azure's
            # DeleteInstances: kubernetes/autoscaler azure_scale_set.go decrements its
            # cached size by the ids deleted, PR #3277; openshift-azure#1550 shows a
            # later PUT of the old sku.capacity re-creating a deleted VM); deleting an
            # instance being deleted again changes nothing ("You can only retry the
            # Delete operation", error-messages.md)
            fresh = [i for i in targets if not self.ss.deleting(i)]
            sku = _obj(self.doc, "sku")
            sku["capacity"] = max(0, self.capacity - len(fresh))
            self.ss.begin_delete(fresh, DELETE_SECONDS)
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
