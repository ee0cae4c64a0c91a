"""The Azure backend: the engine's backend interface on azure-mgmt-compute.

Reads the scale set and every instance with its instance view in one paged
list call per poll; changes the model with If-Match on the etag; starts
manual upgrades, reimages, surge adds and deletes without waiting on their
long-running operations (progress is followed through the list); retries and
Retry-After are azure-core's pipeline. Request counts are kept by a pipeline
policy, per operation, per attempt.

On top of azure-core's retries, every call is retried a bounded number of
times (:attr:`AzureBackend.attempts`) when it failed in a way that may pass: a
connection closed without an answer (azure-core does not retry a POST or PATCH
then, since it cannot know whether the server acted), or 408/429/5xx once
azure-core gave up. Waits honour Retry-After, else back off exponentially from
:attr:`AzureBackend.backoff`, and go through an injected ``sleep``. Before an
instance action is sent again, the instances are listed once more and those
the lost request already started (updating, already on the latest model,
deleted) are left out, so no instance is asked twice; before a model update is
sent again, the model is read, and a change that did go through is taken as
done. Instance ids that no longer exist (deleted meanwhile) are dropped from an
action in the same way.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

from ..engine import armjson
from ..engine.backend import Observations
from ..engine.errors import BackendError, ConcurrencyError, InputError
from ..engine.model import Instance, ModelVersion, ProvisioningState, ScaleSetModel

T = TypeVar("T")

ENDPOINT_ENV = "VMSS_ROLLOUT_ARM_ENDPOINT"
SUBSCRIPTION_ENV = "AZURE_SUBSCRIPTION_ID"
PUBLIC_ARM = "https://management.azure.com"
#: the built-in role that can read and upgrade scale sets (status and plan need Reader)
ROLE = "Virtual Machine Contributor"
#: statuses worth another try once azure-core's own retries gave up
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


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
def arm_errors(what: str, *, changed: bool, attempts: int = 1) -> Iterator[None]:
    """Translate the SDK's exceptions into one-line errors. Before anything was
    changed, a missing resource, a refused credential or an unreachable
    endpoint is the user's input (exit 2); after, everything is a backend error."""
    tried = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
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
        raise error(f"{what}: cannot reach the ARM endpoint ({_message(exc)}){tried}") from None
    except ServiceResponseError as exc:
        raise BackendError(
            f"{what}: the connection closed without an answer ({_message(exc)}){tried}"
        ) from None
    except HttpResponseError as exc:
        if exc.status_code == 403:
            error = InputError if not changed else BackendError
            raise error(
                f"{what}: not authorized ({_message(exc)}); the identity needs the "
                f"'{ROLE}' role on the scale set (Reader for status and plan)"
            ) from None
        raise BackendError(f"{what}: {_message(exc)}{tried}") from None
    except AzureError as exc:
        raise BackendError(f"{what}: {_message(exc)}{tried}") from None


def retry_after(exc: Exception) -> float | None:
    """The server's Retry-After of a failed request, in seconds (None if absent)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1000.0), ("x-ms-retry-after-ms", 1000.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None  # an HTTP date: fall back to the backoff
    return None


def is_transient(exc: Exception, *, changed: bool) -> bool:
    """Worth another try: a lost answer, a throttle or a server error. A
    connection that could not be opened is transient only once the rollout
    changed something (before, it is the user's endpoint that is wrong)."""
    if isinstance(exc, ServiceResponseError):
        return True
    if isinstance(exc, ServiceRequestError):
        return changed
    if isinstance(exc, ClientAuthenticationError | ResourceModifiedError | ResourceNotFoundError):
        return False
    return isinstance(exc, HttpResponseError) and exc.status_code in TRANSIENT_STATUSES


def is_unknown_instance(exc: Exception) -> bool:
    """An action named an instance id the scale set no longer has (deleted meanwhile)."""
    if not isinstance(exc, HttpResponseError) or exc.status_code not in (400, 404):
        return False
    error = getattr(exc, "error", None)
    target = str(getattr(error, "target", "") or "").lower()
    return target == "instanceids" or "instanceid" in str(getattr(error, "message", "")).lower()


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
        *,
        attempts: int = 5,
        backoff: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.resource_group = resource_group
        self.name = name
        self.counter = counter or RequestCounter()
        self.health_source = armjson.HEALTH_FALLBACK
        self.vmss_json: dict[str, Any] = {}
        self._known: dict[str, Instance] = {}
        #: set once the backend changed anything (or sent a write whose answer was
        #: lost): errors are then exit 3
        self.changed = False
        #: tries per call, including the first (transient failures only)
        self.attempts = max(1, attempts)
        #: seconds before the first retry when the server gives no Retry-After; doubles
        self.backoff = backoff
        self.sleep = sleep
        #: retries made on top of azure-core's, by what was retried
        self.retries: Counter[str] = Counter()

    # ------------------------------------------------------------------ retries
    def _call(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        write: bool = False,
        again: Callable[[Exception], bool] | None = None,
    ) -> T | None:
        """``fn()``, retried on transient failures. ``again(exc)`` runs before
        each retry (of a write) and returns False when nothing is left to do (the
        lost request did it): then the result is None."""
        attempt = 0
        while True:
            attempt += 1
            try:
                result = fn()
            except AzureError as exc:
                unknown = write and is_unknown_instance(exc)
                transient = unknown or is_transient(exc, changed=self.changed)
                if write and transient and not unknown:
                    self.changed = True  # the server may have acted
                if not transient or attempt >= self.attempts:
                    with arm_errors(what, changed=self.changed, attempts=attempt):
                        raise
                    raise  # pragma: no cover  (arm_errors always raises)
                self.retries[what.split(" of ", 1)[0]] += 1
                if not unknown:
                    hint = retry_after(exc)
                    self.sleep(hint if hint is not None else self.backoff * 2 ** (attempt - 1))
                if again is not None and not again(exc):
                    return None
                continue
            if write:
                self.changed = True
            return result

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
        vmss = self._call(
            self.where,
            lambda: self.client.virtual_machine_scale_sets.get(self.resource_group, self.name),
        )
        assert vmss is not None
        self.vmss_json = vmss.as_dict()
        self.health_source = armjson.health_source(self.vmss_json)
        return armjson.scale_set(self.vmss_json)

    def list_instances(self) -> list[Instance]:
        use_vm_health = self.health_source != armjson.HEALTH_FALLBACK

        def read_all() -> list[Instance]:
            pages = self.client.virtual_machine_scale_set_vms.list(
                self.resource_group, self.name, expand="instanceView"
            )
            return [armjson.instance(vm.as_dict(), use_vm_health=use_vm_health) for vm in pages]

        return self._call(self.where, read_all) or []

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

        def applied(exc: Exception) -> bool:
            # the answer was lost: if the change went through, it is done
            live = self.read_scale_set()
            return live.model != model

        result = self._call(
            f"updating the model of {self.where}",
            lambda: self.client.virtual_machine_scale_sets.begin_update(
                self.resource_group, self.name, VirtualMachineScaleSetUpdate(body), **extra
            ).result(),
            write=True,
            again=applied,
        )
        if result is not None:
            self.vmss_json = result.as_dict()
        return self.vmss_json.get("etag") or etag

    def set_upgrade_mode(
        self,
        mode: str,
        etag: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str | None:
        """Switch ``upgradePolicy.mode`` (for ``--switch-to-manual`` and back),
        under If-Match when ``etag`` is given, with ``tags`` in the same PATCH
        when given (the lease). Does not wait: on Azure a PATCH of a scale set is
        a long-running operation, and restoring Rolling can last as long as the
        platform's rolling upgrade it starts; the caller watches the scale set.
        Returns the etag of the first answer."""
        patch: dict[str, Any] = {"properties": {"upgradePolicy": {"mode": mode}}}
        if tags is not None:
            patch["tags"] = tags
        return self._patch(
            f"setting the upgrade policy of {self.where} to {mode}", patch, etag, write=True
        )

    def write_tags(self, tags: dict[str, str], etag: str | None) -> str | None:
        """PATCH the scale set's ``tags`` (the whole map, so that it is right whether
        the map is replaced or merged)
        under If-Match on ``etag``; a 412 is a :class:`ConcurrencyError`. Tags are
        not part of ``virtualMachineProfile``, so instances stay on the latest
        model. Not counted as a change of the scale set (:attr:`changed`).
        Returns the etag of the first answer (no waiting on the operation)."""
        return self._patch(f"writing the tags of {self.where}", {"tags": tags}, etag, write=False)

    def _patch(
        self, what: str, patch: dict[str, Any], etag: str | None, *, write: bool
    ) -> str | None:
        extra: dict[str, Any] = {"polling": False}
        if etag:
            extra.update(etag=etag, match_condition=MatchConditions.IfNotModified)
        result = self._call(
            what,
            lambda: self.client.virtual_machine_scale_sets.begin_update(
                self.resource_group, self.name, VirtualMachineScaleSetUpdate(patch), **extra
            ).result(),
            write=write,
        )
        if result is not None:
            self.vmss_json = result.as_dict()
        return self.vmss_json.get("etag")

    @property
    def unique_id(self) -> str:
        """The scale set's ``uniqueId`` as of the last read ("" before one)."""
        return str((self.vmss_json.get("properties") or {}).get("uniqueId") or "")

    @property
    def tags(self) -> dict[str, str]:
        """The scale set's tags as of the last read."""
        return dict(self.vmss_json.get("tags") or {})

    @property
    def provisioning_state(self) -> str:
        """The scale set's ``provisioningState`` as of the last read."""
        return str((self.vmss_json.get("properties") or {}).get("provisioningState") or "")

    def _instance_action(self, verb: str, ids: Sequence[str], **kwargs: Any) -> None:
        ops = self.client.virtual_machine_scale_sets
        method = getattr(ops, f"begin_{verb}")
        remaining = list(ids)

        def send() -> None:
            # no polling: the list call follows progress for every instance at once
            method(
                self.resource_group, self.name, {"instanceIds": remaining}, polling=False, **kwargs
            )

        def still_needed(exc: Exception) -> bool:
            current = {i.instance_id: i for i in self.list_instances()}
            remaining[:] = [
                iid
                for iid in remaining
                if iid in current and not _started(verb, current[iid], is_unknown_instance(exc))
            ]
            return bool(remaining)

        self._call(
            f"{verb.replace('_', ' ')} of {len(ids)} instances of {self.where}",
            send,
            write=True,
            again=still_needed,
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

    def os_upgrade_history(self) -> list[dict[str, Any]]:
        """``osUpgradeHistory`` (GET .../virtualMachineScaleSets/{name}/osUpgradeHistory,
        the SDK's ``get_os_upgrade_history``): past OS image upgrades as JSON."""
        with arm_errors(f"the OS upgrade history of {self.where}", changed=False):
            pages = self.client.virtual_machine_scale_sets.get_os_upgrade_history(
                self.resource_group, self.name
            )
            return [dict(item.as_dict()) for item in pages]

    def cancel_rolling_upgrade(self) -> None:
        with arm_errors(f"cancelling the rolling upgrade of {self.where}", changed=True):
            self.client.virtual_machine_scale_set_rolling_upgrades.begin_cancel(
                self.resource_group, self.name, polling=False
            )

    def add_instances(self, count: int) -> None:
        """Surge: raise the capacity; new instances come up on the current model."""
        capacity = int(self.read_scale_set().capacity) + count

        def not_yet(exc: Exception) -> bool:
            return int(self.read_scale_set().capacity) < capacity

        self._call(
            f"scaling {self.where} to {capacity}",
            lambda: self.client.virtual_machine_scale_sets.begin_update(
                self.resource_group,
                self.name,
                VirtualMachineScaleSetUpdate({"sku": {"capacity": capacity}}),
                polling=False,
            ),
            write=True,
            again=not_yet,
        )


_UPGRADE_VERBS = ("update_instances", "reimage", "reimage_all")


def _started(verb: str, inst: Instance, unknown_ids: bool) -> bool:
    """Whether a lost ``verb`` request already took effect on ``inst`` (so it
    must not be sent again): for an upgrade or reimage, the instance is
    updating or already on the latest model. After a refusal naming unknown
    instance ids, nothing took effect."""
    if unknown_ids:
        return False
    if verb in _UPGRADE_VERBS:
        return inst.provisioning in (
            ProvisioningState.UPDATING,
            ProvisioningState.CREATING,
        ) or (verb == "update_instances" and inst.latest_model_applied)
    return verb == "delete_instances" and inst.provisioning is ProvisioningState.DELETING
