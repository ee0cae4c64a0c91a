"""The Azure backend: the engine's backend interface on azure-mgmt-compute.

Reads the scale set and every instance with its instance view in one paged
list call per poll; changes the model with If-Match on the etag; starts
manual upgrades, reimages, surge adds and deletes without waiting on their
long-running operations (progress is followed through the list); retries and
Retry-After are azure-core's pipeline. Request counts are kept by a pipeline
policy, per operation, per attempt.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

from ..engine import armjson
from ..engine.backend import Observations
from ..engine.errors import BackendError, ConcurrencyError, InputError
from ..engine.model import Instance, ModelVersion, ScaleSetModel

ENDPOINT_ENV = "VMSS_ROLLOUT_ARM_ENDPOINT"
SUBSCRIPTION_ENV = "AZURE_SUBSCRIPTION_ID"
PUBLIC_ARM = "https://management.azure.com"
#: the built-in role that can read and upgrade scale sets (status and plan need Reader)
ROLE = "Virtual Machine Contributor"


class RequestCounter(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Counts every HTTP attempt (after retries) by operation, and throttling."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()

    def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]
        self.attempts[operation_name(request.http_request.method, request.http_request.url)] += 1

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:  # type: ignore[type-arg]
        self.statuses[response.http_response.status_code] += 1

    @property
    def total(self) -> int:
        return sum(self.attempts.values())


def operation_name(method: str, url: str) -> str:
    """``GET virtualMachineScaleSets/virtualMachines`` and the like: the path's
    resource types and action, without names and ids."""
    path = url.split("?", 1)[0]
    parts = path.split("/providers/Microsoft.Compute/", 1)
    tail = parts[1].split("/") if len(parts) == 2 else path.rsplit("/", 2)[-2:]
    kinds = [p for i, p in enumerate(tail) if i % 2 == 0]
    return f"{method} {'/'.join(kinds)}"


def resolve_endpoint(endpoint: str | None) -> str:
    return (endpoint or os.environ.get(ENDPOINT_ENV) or PUBLIC_ARM).rstrip("/")


def resolve_subscription(subscription: str | None) -> str:
    sub = subscription or os.environ.get(SUBSCRIPTION_ENV)
    if not sub:
        raise InputError(
            f"no subscription: pass --subscription or set {SUBSCRIPTION_ENV} "
            "(az account show --query id -o tsv)"
        )
    return sub


def connect(
    subscription: str | None, endpoint: str | None, credential: Any = None
) -> tuple[ComputeManagementClient, RequestCounter]:
    """A client for ``endpoint`` (public Azure by default) with request counting.
    ``credential`` defaults to azure-identity's DefaultAzureCredential (az login,
    a service principal in the environment, managed identity, ...)."""
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    base = resolve_endpoint(endpoint)
    counter = RequestCounter()
    client = ComputeManagementClient(
        credential,
        resolve_subscription(subscription),
        base_url=base,
        credential_scopes=[f"{PUBLIC_ARM}/.default"],
        per_retry_policies=[counter],
    )
    return client, counter


@contextmanager
def arm_errors(what: str, *, changed: bool) -> Iterator[None]:
    """Translate the SDK's exceptions into one-line errors. Before anything was
    changed, a missing resource, a refused credential or an unreachable
    endpoint is the user's input (exit 2); after, everything is a backend error."""
    try:
        yield
    except ResourceModifiedError as exc:
        raise ConcurrencyError(
            f"{what}: the scale set model was changed by someone else meanwhile "
            f"(etag mismatch); nothing was overwritten: {_message(exc)}"
        ) from None
    except ClientAuthenticationError as exc:
        error = InputError if not changed else BackendError
        raise error(f"{what}: not authenticated ({_message(exc)})") from None
    except ResourceNotFoundError as exc:
        error = InputError if not changed else BackendError
        raise error(f"{what}: not found ({_message(exc)})") from None
    except ServiceRequestError as exc:
        error = InputError if not changed else BackendError
        raise error(f"{what}: cannot reach the ARM endpoint ({_message(exc)})") from None
    except HttpResponseError as exc:
        if exc.status_code == 403:
            error = InputError if not changed else BackendError
            raise error(
                f"{what}: not authorized ({_message(exc)}); the identity needs the "
                f"'{ROLE}' role on the scale set (Reader for status and plan)"
            ) from None
        raise BackendError(f"{what}: {_message(exc)}") from None


def _message(exc: Exception) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or str(exc).splitlines()[0]
    text = f"{code}: {message}" if code else message
    return " ".join(text.split())[:400]


class AzureBackend:
    """One scale set in one resource group, through the Compute REST API."""

    def __init__(
        self,
        client: ComputeManagementClient,
        resource_group: str,
        name: str,
        counter: RequestCounter | None = None,
    ) -> None:
        self.client = client
        self.resource_group = resource_group
        self.name = name
        self.counter = counter or RequestCounter()
        self.health_source = armjson.HEALTH_FALLBACK
        self.vmss_json: dict[str, Any] = {}
        self._known: dict[str, Instance] = {}
        #: set once the backend changed anything: errors are then exit 3
        self.changed = False

    @property
    def where(self) -> str:
        return f"scale set {self.name} in resource group {self.resource_group}"

    @property
    def scale_set_id(self) -> str:
        return str(self.vmss_json.get("id") or f"{self.resource_group}/{self.name}")

    def known_instances(self) -> list[Instance]:
        """The instances as of the last read or poll (no request)."""
        return list(self._known.values())

    # ------------------------------------------------------------------ reads
    def read_scale_set(self) -> ScaleSetModel:
        with arm_errors(self.where, changed=self.changed):
            vmss = self.client.virtual_machine_scale_sets.get(self.resource_group, self.name)
        self.vmss_json = vmss.as_dict()
        self.health_source = armjson.health_source(self.vmss_json)
        return armjson.scale_set(self.vmss_json)

    def list_instances(self) -> list[Instance]:
        use_vm_health = self.health_source != armjson.HEALTH_FALLBACK
        with arm_errors(self.where, changed=self.changed):
            pages = self.client.virtual_machine_scale_set_vms.list(
                self.resource_group, self.name, expand="instanceView"
            )
            return [armjson.instance(vm.as_dict(), use_vm_health=use_vm_health) for vm in pages]

    def read(self) -> tuple[ScaleSetModel, list[Instance]]:
        model = self.read_scale_set()
        instances = self.list_instances()
        self._known = {i.instance_id: i for i in instances}
        return model, instances

    def poll(self) -> Observations:
        """One paged list: the instances that changed since the last poll."""
        current = {i.instance_id: i for i in self.list_instances()}
        changed = [inst for iid, inst in current.items() if self._known.get(iid) != inst]
        deleted = [iid for iid in self._known if iid not in current]
        self._known = current
        return Observations(changed, deleted)

    # ------------------------------------------------------------------ changes
    def update_model(self, model: ModelVersion, etag: str | None) -> str | None:
        current = armjson.scale_set_model(self.vmss_json) if self.vmss_json else None
        body = armjson.model_patch(model, current) if current else {}
        if not body:
            return etag
        extra: dict[str, Any] = {}
        if etag:
            extra = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        self.changed = True
        with arm_errors(f"updating the model of {self.where}", changed=True):
            result = self.client.virtual_machine_scale_sets.begin_update(
                self.resource_group, self.name, VirtualMachineScaleSetUpdate(body), **extra
            ).result()
        self.vmss_json = result.as_dict()
        return self.vmss_json.get("etag") or etag

    def set_upgrade_mode(self, mode: str) -> str | None:
        """Switch ``upgradePolicy.mode`` (for ``--switch-to-manual`` and back)."""
        self.changed = True
        body = VirtualMachineScaleSetUpdate({"properties": {"upgradePolicy": {"mode": mode}}})
        with arm_errors(f"setting the upgrade policy of {self.where} to {mode}", changed=True):
            result = self.client.virtual_machine_scale_sets.begin_update(
                self.resource_group, self.name, body
            ).result()
        self.vmss_json = result.as_dict()
        return self.vmss_json.get("etag")

    def _instance_action(self, verb: str, ids: Sequence[str], **kwargs: Any) -> None:
        self.changed = True
        ops = self.client.virtual_machine_scale_sets
        method = getattr(ops, f"begin_{verb}")
        with arm_errors(
            f"{verb.replace('_', ' ')} of {len(ids)} instances of {self.where}", changed=True
        ):
            # no polling: the list call follows progress for every instance at once
            method(
                self.resource_group, self.name, {"instanceIds": list(ids)}, polling=False, **kwargs
            )

    def start_upgrade(self, instance_ids: Sequence[str]) -> None:
        self._instance_action("update_instances", instance_ids)

    def reimage(self, instance_ids: Sequence[str]) -> None:
        self._instance_action("reimage", instance_ids)

    def delete_instances(self, instance_ids: Sequence[str]) -> None:
        self._instance_action("delete_instances", instance_ids)

    def start(self, instance_ids: Sequence[str]) -> None:
        self._instance_action("start", instance_ids)

    def restart(self, instance_ids: Sequence[str]) -> None:
        self._instance_action("restart", instance_ids)

    def power_off(self, instance_ids: Sequence[str]) -> None:
        self._instance_action("power_off", instance_ids)

    def deallocate(self, instance_ids: Sequence[str]) -> None:
        self._instance_action("deallocate", instance_ids)

    def rolling_upgrade_status(self) -> dict[str, Any] | None:
        """``rollingUpgrades/latest`` as JSON, or None when none ever ran."""
        try:
            with arm_errors(f"the rolling upgrade of {self.where}", changed=True):
                status = self.client.virtual_machine_scale_set_rolling_upgrades.get_latest(
                    self.resource_group, self.name
                )
        except BackendError as exc:
            if "not found" in str(exc):
                return None
            raise
        return dict(status.as_dict())

    def cancel_rolling_upgrade(self) -> None:
        with arm_errors(f"cancelling the rolling upgrade of {self.where}", changed=True):
            self.client.virtual_machine_scale_set_rolling_upgrades.begin_cancel(
                self.resource_group, self.name, polling=False
            )

    def add_instances(self, count: int) -> None:
        """Surge: raise the capacity; new instances come up on the current model."""
        self.changed = True
        capacity = int(self.read_scale_set().capacity) + count
        with arm_errors(f"scaling {self.where} to {capacity}", changed=True):
            self.client.virtual_machine_scale_sets.begin_update(
                self.resource_group,
                self.name,
                VirtualMachineScaleSetUpdate({"sku": {"capacity": capacity}}),
                polling=False,
            )
