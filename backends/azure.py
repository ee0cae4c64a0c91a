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

Real ARM refuses overlapping writes on one scale set with 409 Conflict ("The
request failed due to conflict with a concurrent request", no Retry-After), or
answers ``RetryableError``: both are retried with the same backoff and a fresh
list before resending. A refusal because an instance is being deleted (409
OperationNotAllowed, "marked for deletion") drops that instance like a deleted
one, and one naming instances protected from scale set actions
(``protectionPolicy.protectFromScaleSetActions``) drops the protected ones: they
are left out of every action, and out of what the engine sees (see
:meth:`AzureBackend.read`). No model PATCH is waited on: under Rolling, the
PATCH's long-running operation lasts the platform's whole rolling upgrade.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

from ..engine.backend import Observations
from ..engine.errors import BackendError, ConcurrencyError, InputError
from ..engine.model import Instance, ModelVersion, ProvisioningState, ScaleSetModel
from . import armjson
from .clock import WALL, Clock, announced, is_azure_cloud

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


class ClockPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Tells :attr:`clock` the time every response announces (the ARM emulator's
    headers, :mod:`.clock`); a per-retry policy: every attempt's response, errors
    included."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:  # type: ignore[type-arg]
        told = announced(response.http_response.headers)
        if told is not None:
            self.clock.announce(*told)


class ClockTransport(RequestsTransport):  # type: ignore[misc]
    """azure-core's requests transport, sleeping on :attr:`clock`: azure-core's
    RetryPolicy waits (Retry-After, backoff) through ``transport.sleep``
    (azure/core/pipeline/policies/_retry.py), the supported extension point."""

    def __init__(self, clock: Clock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock = clock

    def sleep(self, duration: float) -> None:
        self.clock.sleep(duration)


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
) -> tuple[ComputeManagementClient, RequestCounter, Clock]:
    """A client for ``endpoint`` (public Azure by default) with request counting,
    and its clock: the wall clock, or the ARM emulator's once a response
    announces it (never an Azure cloud's: see :mod:`.clock`); azure-core's
    retries wait on it. ``credential`` defaults to azure-identity's
    DefaultAzureCredential (az login, a service principal in the environment,
    managed identity, ...)."""
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    base = resolve_endpoint(endpoint)
    counter = RequestCounter()
    clock = Clock(honour=not is_azure_cloud(base))
    client = ComputeManagementClient(
        credential,
        resolve_subscription(subscription),
        base_url=base,
        credential_scopes=[f"{PUBLIC_ARM}/.default"],
        per_retry_policies=[counter, ClockPolicy(clock)],
        transport=ClockTransport(clock),
    )
    return client, counter, clock


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
    if is_conflict(exc):
        return True
    return isinstance(exc, HttpResponseError) and exc.status_code in TRANSIENT_STATUSES


def _code_and_text(exc: Exception) -> tuple[str, str]:
    error = getattr(exc, "error", None)
    code = str(getattr(error, "code", "") or "")
    text = str(getattr(error, "message", "") or "") or str(exc)
    return code.lower(), text.lower()


def is_conflict(exc: Exception) -> bool:
    """ARM refused a write that overlapped another on the same scale set (409
    Conflict, "The request failed due to conflict with a concurrent request":
    kubernetes-sigs/cloud-provider-azure ``ConcurrentRequestConflictMessage``,
    Azure/azure-powershell#23105), or asked for a retry (``RetryableError``).
    Nothing was done; no Retry-After comes with it, so azure-core does not retry."""
    if not isinstance(exc, HttpResponseError):
        return False
    code, text = _code_and_text(exc)
    if code == "retryableerror":
        return True
    return exc.status_code == 409 and (
        code == "conflict" or "conflict with a concurrent request" in text
    )


def is_marked_for_deletion(exc: Exception) -> bool:
    """409 OperationNotAllowed "... is not allowed on VM ... since it is marked for
    deletion" (cloud-provider-azure ``CannotUpdateVMBeingDeletedMessagePrefix``,
    microsoft/onefuzz#511): the instance is as good as gone."""
    return (
        isinstance(exc, HttpResponseError)
        and exc.status_code == 409
        and "marked for deletion" in _code_and_text(exc)[1]
    )


_PROTECTED = "protected from scale set action"


def protected_ids(exc: Exception) -> list[str] | None:
    """The instance ids a refusal names as protected from scale set actions
    ("InstanceIds may not contain instances that are protected from scale set
    actions. The following instance ids are protected from scale set action: 3,
    7."), or None when ``exc`` is not that refusal."""
    if not isinstance(exc, HttpResponseError) or exc.status_code not in (400, 409):
        return None
    text = str(getattr(getattr(exc, "error", None), "message", "") or "") or str(exc)
    if _PROTECTED not in text.lower():
        return None
    tail = text.rsplit(":", 1)[-1]
    return [part.strip(" .") for part in tail.split(",") if part.strip(" .").isdigit()]


def is_unknown_instance(exc: Exception) -> bool:
    """An action named an instance id the scale set no longer has (deleted
    meanwhile), or one being deleted; never a refusal naming protected instances."""
    if is_marked_for_deletion(exc):
        return True
    if not isinstance(exc, HttpResponseError) or exc.status_code not in (400, 404):
        return False
    if protected_ids(exc) is not None:
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
        sleep: Callable[[float], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.resource_group = resource_group
        self.name = name
        self.counter = counter or RequestCounter()
        self.health_source = armjson.HEALTH_FALLBACK
        self.vmss_json: dict[str, Any] = {}
        self._known: dict[str, Instance] = {}
        #: instances protected from scale set actions (their protectionPolicy, or
        #: named so by a refusal): left out of every action and of the engine's view
        self.protected: dict[str, Instance] = {}
        self._refused_protected: set[str] = set()
        #: long-running operations followed by :meth:`poll` (upgrades, scale-outs)
        self._operations: list[_Operation] = []
        #: set once the backend changed anything (or sent a write whose answer was
        #: lost): errors are then exit 3
        self.changed = False
        #: tries per call, including the first (transient failures only)
        self.attempts = max(1, attempts)
        #: seconds before the first retry when the server gives no Retry-After; doubles
        self.backoff = backoff
        #: the clock of every wait and timestamp of a command on this scale set:
        #: the emulator's when the client's responses announce it (:func:`connect`)
        self.clock = clock or WALL
        #: the retries' waits (default: the clock's)
        self.sleep = sleep or self.clock.sleep
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
                # named an instance that is gone or protected: re-list and resend
                # the rest at once (the server did nothing)
                unknown = write and (is_unknown_instance(exc) or protected_ids(exc) is not None)
                transient = unknown or is_transient(exc, changed=self.changed)
                if write and transient and not unknown and not is_conflict(exc):
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
            if armjson.is_flexible(self.vmss_json):
                # a Flexible set refuses its own VM list (400 OperationNotAllowed); its
                # members are the resource group's VMs naming it (fidelity review #3)
                members = self.client.virtual_machines.list(
                    self.resource_group,
                    filter=armjson.flexible_member_filter(str(self.vmss_json.get("id"))),
                    expand="instanceView",
                )
                return [
                    armjson.flexible_instance(
                        vm.as_dict(), self.vmss_json, use_vm_health=use_vm_health
                    )
                    for vm in members
                ]
            pages = self.client.virtual_machine_scale_set_vms.list(
                self.resource_group, self.name, expand="instanceView"
            )
            return [armjson.instance(vm.as_dict(), use_vm_health=use_vm_health) for vm in pages]

        return self._call(self.where, read_all) or []

    def _in_scope(self, instances: list[Instance]) -> list[Instance]:
        """``instances`` without the protected ones (kept in :attr:`protected`):
        Azure refuses scale set actions naming them, and its own rolling upgrade
        skips them (Microsoft docs, virtual-machine-scale-sets-instance-protection)."""
        shielded = {
            i.instance_id: i
            for i in instances
            if i.protected or i.instance_id in self._refused_protected
        }
        self.protected = shielded
        return [i for i in instances if i.instance_id not in shielded]

    def read(self) -> tuple[ScaleSetModel, list[Instance]]:
        """The scale set and its instances, protected instances left out (see
        :attr:`protected`)."""
        model = self.read_scale_set()
        instances = self._in_scope(self.list_instances())
        self._known = {i.instance_id: i for i in instances}
        return model, instances

    def poll(self) -> Observations:
        """One paged list: the instances that changed since the last poll (an
        instance protected meanwhile leaves the engine's view like a deleted one).

        Before the list, the operations started here that still run are asked
        for their status (one GET each): an upgrade superseded by a later
        operation (Canceled) is sent again for the instances it did not start;
        while a scale-out of an overprovisioned set runs, instances that appeared
        during it are not reported (the platform deletes the extras before the
        operation ends), nor are new instances already being deleted."""
        # the operations first: one seen ended before the list is reflected in it
        scaling, canceled = self._operations_ended()
        current = {
            i.instance_id: i
            for i in self._in_scope(self.list_instances())
            # an instance first seen while being deleted (an overprovisioned extra
            # the platform is removing) never was one of ours
            if i.instance_id in self._known or i.provisioning is not ProvisioningState.DELETING
        }
        if scaling:
            current = {iid: inst for iid, inst in current.items() if iid in self._known}
        for op in canceled:
            self._resend_superseded(op, current)
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

        # not waited on: the PATCH is a long-running operation, which under Rolling
        # lasts the platform's whole rolling upgrade and then fails with its error
        # (Azure/azure-powershell#11896); progress is followed through the list and
        # rollingUpgrades/latest. polling=False: .result() is the first answer (200,
        # the scale set with its new etag, provisioningState Updating)
        result = self._call(
            f"updating the model of {self.where}",
            lambda: self.client.virtual_machine_scale_sets.begin_update(
                self.resource_group,
                self.name,
                VirtualMachineScaleSetUpdate(body),
                polling=False,
                **extra,
            ).result(),
            write=True,
            again=applied,
        )
        if result is not None and result.as_dict().get("etag"):
            self.vmss_json = result.as_dict()
        else:  # an answer without the scale set (202): read it for the etag
            self.read_scale_set()
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

    def _operations_ended(self) -> tuple[bool, list[_Operation]]:
        """Ask each operation still followed for its status: whether a scale-out
        is still running, and the upgrades that ended Canceled."""
        scaling = False
        canceled = []
        for op in list(self._operations):
            status = self._operation_status(op.url)
            if status in ("", "inprogress", "accepted", "running", "updating"):
                scaling = scaling or op.verb == "scale_out"
                continue
            self._operations.remove(op)
            if status == "canceled" and op.verb in _UPGRADE_VERBS:
                canceled.append(op)
        return scaling, canceled

    def _resend_superseded(self, op: _Operation, current: dict[str, Instance]) -> None:
        """An upgrade superseded by a later operation ("CanceledAndSupersededDue
        ToAnotherOperation": cloud-provider-azure OperationCanceledErrorMessage) is
        sent again to the instances it did not get to (still there, not updating,
        not on the model)."""
        model = armjson.scale_set_model(self.vmss_json) if self.vmss_json else None
        again = [
            iid
            for iid in op.ids
            if iid in current and not _started(op.verb, current[iid], False, model)
        ]
        if again:
            self.retries["superseded"] += 1
            self._instance_action(op.verb, again)

    def _operation_status(self, url: str) -> str:
        """The status of a long-running operation (Azure-AsyncOperation), lower
        case; "" when it could not be read (asked again next poll)."""
        try:
            response = self.client.send_request(HttpRequest("GET", url))
            if response.status_code >= 400:
                return ""
            return str(response.json().get("status") or "").lower()
        except (AzureError, ValueError):
            return ""

    def _track(self, verb: str, response: Any, ids: Sequence[str]) -> None:
        headers = getattr(getattr(response, "http_response", None), "headers", None) or {}
        url = headers.get("Azure-AsyncOperation") or headers.get("Location")
        if url:
            self._operations.append(_Operation(url, verb, list(ids)))

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
            # no polling: the list call follows progress for every instance at once;
            # the operation's status is asked in poll() (cls: the first response)
            poller = method(
                self.resource_group,
                self.name,
                {"instanceIds": remaining},
                polling=False,
                cls=lambda response, _body, _headers: response,
                **kwargs,
            )
            if verb in _UPGRADE_VERBS:
                self._track(verb, poller.result(), remaining)

        def still_needed(exc: Exception) -> bool:
            self._refused_protected.update(protected_ids(exc) or ())
            current = {i.instance_id: i for i in self.list_instances()}
            model = armjson.scale_set_model(self.vmss_json) if self.vmss_json else None
            unknown = is_unknown_instance(exc)
            remaining[:] = [
                iid
                for iid in remaining
                if iid in current
                and not current[iid].protected
                and iid not in self._refused_protected
                and not (unknown and current[iid].provisioning is ProvisioningState.DELETING)
                and not _started(verb, current[iid], unknown, model)
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
        """Cancel the platform's rolling upgrade; one that ended meanwhile (409
        OperationNotAllowed "There is no rolling upgrade in progress to cancel.",
        as the Azure CLI shows it) is not an error."""
        with arm_errors(f"cancelling the rolling upgrade of {self.where}", changed=True):
            try:
                self.client.virtual_machine_scale_set_rolling_upgrades.begin_cancel(
                    self.resource_group, self.name, polling=False
                )
            except HttpResponseError as exc:
                if exc.status_code == 409 and "no rolling upgrade" in _code_and_text(exc)[1]:
                    return
                raise

    def add_instances(self, count: int) -> None:
        """Surge: raise the capacity; new instances come up on the current model."""
        capacity = int(self.read_scale_set().capacity) + count

        def not_yet(exc: Exception) -> bool:
            return int(self.read_scale_set().capacity) < capacity

        def send() -> None:
            poller = self.client.virtual_machine_scale_sets.begin_update(
                self.resource_group,
                self.name,
                VirtualMachineScaleSetUpdate({"sku": {"capacity": capacity}}),
                polling=False,
                cls=lambda response, _body, _headers: response,
            )
            # with overprovisioning (on by default for Uniform sets) the platform
            # creates extra VMs and deletes them before the operation ends
            # (Microsoft docs, virtual-machine-scale-sets-design-overview,
            # "Overprovisioning"): poll() reports new instances only after it
            response = poller.result()
            if (self.vmss_json.get("properties") or {}).get("overprovision"):
                self._track("scale_out", response, ())

        self._call(f"scaling {self.where} to {capacity}", send, write=True, again=not_yet)

    def set_capacity(self, capacity: int) -> None:
        """``vmss-rollout scale``: PATCH ``sku.capacity`` (scale out or in). On a
        scale-in Azure picks the instances it deletes by the set's scaleInPolicy
        (Microsoft docs, virtual-machine-scale-sets-scale-in-policy: Default
        balances zones then fault domains and deletes the highest instance ids;
        NewestVM/OldestVM by creation time; protected instances are skipped)."""

        def not_yet(exc: Exception) -> bool:
            return int(self.read_scale_set().capacity) != capacity

        def send() -> None:
            self.client.virtual_machine_scale_sets.begin_update(
                self.resource_group,
                self.name,
                VirtualMachineScaleSetUpdate({"sku": {"capacity": capacity}}),
                polling=False,
                cls=lambda response, _body, _headers: response,
            )

        self._call(f"scaling {self.where} to {capacity}", send, write=True, again=not_yet)


_UPGRADE_VERBS = ("update_instances", "reimage", "reimage_all")


@dataclass(frozen=True)
class _Operation:
    """A long-running operation started here: its status URL, what it was, and
    the instances it named."""

    url: str
    verb: str
    ids: list[str]


def _started(
    verb: str, inst: Instance, unknown_ids: bool, model: ModelVersion | None = None
) -> bool:
    """Whether a lost ``verb`` request already took effect on ``inst`` (so it
    must not be sent again): for an upgrade or reimage, the instance is
    updating or already runs the scale set's ``model`` (its image and size:
    ``latestModelApplied`` also turns false on unrelated model changes). After a
    refusal naming unknown instance ids, nothing took effect."""
    if unknown_ids:
        return False
    if verb in _UPGRADE_VERBS:
        on_model = inst.model == model if model is not None else inst.latest_model_applied
        return inst.provisioning in (
            ProvisioningState.UPDATING,
            ProvisioningState.CREATING,
        ) or (verb == "update_instances" and on_model)
    return verb == "delete_instances" and inst.provisioning is ProvisioningState.DELETING
