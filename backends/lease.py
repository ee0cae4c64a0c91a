"""The lease: one rollout per scale set, across operators, machines and journals.

A journal is one operator's file; two operators with two journals cannot see
each other's rollouts in it. The lease lives on the scale set itself, as a tag
(:data:`TAG`) that every operator reads:

``<rollout id>;<holder user@host:pid>;<since>;<heartbeat>;<ttl s>;<state>``

(times ISO 8601 UTC; ``state`` ``running``, ``stopped`` or ``released``) and a
second tag, :data:`TARGET_TAG`, with the rollout's target model (Azure allows
256 characters per tag value; a longer target is cut). Every write is a PATCH
of the whole ``tags`` map, the other tags sent back unchanged (right whether
the resource provider replaces the map or merges it as a JSON merge patch, as
ARM's guidelines ask of PATCH bodies: Azure/azure-openapi-validator
docs/consistent-patch-properties.md), under If-Match on the etag just read: of
two operators racing for the lease one gets 412, reads again and finds the
other's lease.

- ``running``: a process drives the rollout and renews the heartbeat every
  ``ttl / 5`` seconds. It blocks every other ``upgrade`` and ``resume`` while
  the heartbeat is younger than ``ttl`` and, when the holder is on this
  machine, its process is alive. An expired heartbeat (or a holder process
  known dead) is a crashed rollout: ``resume`` of the same rollout adopts it;
  a different rollout needs ``--take-over``.
- ``stopped``: the rollout is unfinished (Ctrl-C, SIGTERM, ``--no-wait``, an
  Azure error) and no process drives it. It blocks a new ``upgrade`` (which
  names it, with ``resume`` and ``abandon``) unless ``--take-over``.
- ``released``: the rollout ended (completed, halted, abandoned). A lease is
  released by rewriting its value, never by leaving the key out: the emulator
  merges PATCHed tags key by key and ignores ``null``, so only a rewrite works
  under every semantics.

Tags are not part of ``virtualMachineProfile``, so a tags-only change does not
mark instances as off the latest model (``latestModelApplied`` "Specifies
whether the latest model has been applied to the virtual machine": the model
is ``virtualMachineProfile``; the emulator's tests check it). But on a scale
set with upgrade policy Rolling, *any* update of the scale set is a "generic
model update", which Microsoft documents as the way to restart a rolling
upgrade that was cancelled or stopped on a policy breach ("Restart a rolling
upgrade", azure-compute-docs virtual-machine-scale-sets-configure-rolling-upgrades.md).
So the lease is never written while the policy is Rolling, some instance is off
the latest model and no platform rolling upgrade runs: renewals are skipped
then and a release is left to expire (:meth:`Lease.safe_to_write`).

The lease is on the wall clock, also in a rehearsal against the ARM emulator
(whose time the rollout's waits and journal follow, backends/clock.py): it is
about processes being alive, and processes live in wall time. A heartbeat
written on the emulator's clock would look hours old (or young) to another
process at x600.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from ..engine.backend import Observations
from ..engine.errors import ConcurrencyError, InputError, RolloutError
from ..engine.model import Instance, ModelVersion, ScaleSetModel, UpgradeMode
from .clock import Clock, clock_of

TAG = "vmss-rollout-lease"
TARGET_TAG = "vmss-rollout-lease-target"
#: seconds a heartbeat stays valid; ``VMSS_ROLLOUT_LEASE_TTL`` overrides (tests)
DEFAULT_TTL = 300.0
TTL_ENV = "VMSS_ROLLOUT_LEASE_TTL"
#: Azure's limit on a tag value
MAX_TAG_VALUE = 256
STATES = ("running", "stopped", "released")


class LeaseLost(RolloutError):
    """The rollout cannot go on: the model changed under it, or its lease was
    taken. The rollout halts at once with this reason (exit 1)."""


def ttl_seconds() -> float:
    text = os.environ.get(TTL_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_TTL
    except ValueError:
        raise InputError(f"{TTL_ENV}: expected seconds, got {text!r}") from None
    if not 0 < value <= 86400:
        raise InputError(f"{TTL_ENV}: expected seconds in (0, 86400], got {text!r}")
    return value


def holder_id() -> str:
    """``user@host:pid`` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


def holder_alive(holder: str) -> bool | None:
    """Whether the process named by ``user@host:pid`` is alive: True or False
    when it is on this machine, None (unknown) elsewhere."""
    rest, _, pid_text = holder.rpartition(":")
    host = rest.partition("@")[2]
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class LeaseInfo:
    """One lease as written in the tags."""

    rollout_id: str
    holder: str
    since: float
    beat: float
    ttl: float
    state: str
    target: str = ""

    @classmethod
    def parse(cls, tags: dict[str, str]) -> LeaseInfo | None:
        """The lease in ``tags``, None if there is none (or it is unreadable:
        a tag someone else wrote by hand is not a lease)."""
        value = tags.get(TAG)
        if not value:
            return None
        parts = value.split(";")
        if len(parts) != 6 or parts[5] not in STATES:
            return None
        try:
            since, beat, ttl = _parse_iso(parts[2]), _parse_iso(parts[3]), float(parts[4])
        except ValueError:
            return None
        return cls(parts[0], parts[1], since, beat, ttl, parts[5], tags.get(TARGET_TAG, ""))

    def tags(self, others: dict[str, str]) -> dict[str, str]:
        """``others`` with this lease in them."""
        value = ";".join(
            (
                self.rollout_id,
                self.holder,
                _iso(self.since),
                _iso(self.beat),
                f"{self.ttl:g}",
                self.state,
            )
        )
        target = self.target
        if len(target) > MAX_TAG_VALUE:
            target = target[: MAX_TAG_VALUE - 1] + "…"
        return {**others, TAG: value[:MAX_TAG_VALUE], TARGET_TAG: target}

    def live(self, now: float) -> bool:
        """A process drives it: running, heartbeat fresh, holder not known dead."""
        return (
            self.state == "running"
            and now <= self.beat + self.ttl
            and holder_alive(self.holder) is not False
        )

    def describe(self, now: float) -> str:
        age = max(0, round(now - self.beat))
        what = {
            "running": f"held by {self.holder}, heartbeat {age}s ago",
            "stopped": f"stopped, last driven by {self.holder}",
            "released": f"released by {self.holder}",
        }[self.state]
        if self.state == "running" and not self.live(now):
            gone = holder_alive(self.holder) is False
            what += "; its process is gone" if gone else "; expired"
        return (
            f"rollout {self.rollout_id} to {self.target or '?'} ({what}, since "
            f"{_iso(self.since)} UTC)"
        )


class LeaseBackend(Protocol):
    """What the lease needs of the Azure backend."""

    def read_scale_set(self) -> ScaleSetModel: ...

    def write_tags(self, tags: dict[str, str], etag: str | None) -> str | None: ...

    def rolling_upgrade_status(self) -> dict[str, Any] | None: ...

    def list_instances(self) -> list[Instance]: ...

    @property
    def tags(self) -> dict[str, str]: ...

    @property
    def where(self) -> str: ...


class Lease:
    """This process's lease on one scale set (see the module's docstring)."""

    def __init__(
        self,
        backend: LeaseBackend,
        rollout_id: str,
        target: ModelVersion,
        *,
        allowed: Sequence[ModelVersion],
        holder: str | None = None,
        ttl: float | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.rollout_id = rollout_id
        self.target = target
        #: models the scale set may have while this rollout runs (its target and
        #: the previous model); any other is someone else's change
        self.allowed = tuple(allowed)
        self.holder = holder or holder_id()
        self.ttl = ttl if ttl is not None else ttl_seconds()
        self.wall = wall
        self.etag: str | None = None
        self.since = wall()
        self.last_beat = 0.0
        self.held = False
        #: a warning for the operator (a renewal or release skipped), or ""
        self.note = ""

    # ------------------------------------------------------------------ acquire
    def acquire(
        self,
        scale_set: ScaleSetModel,
        *,
        take_over: bool = False,
        resuming: bool = False,
        write: Callable[[dict[str, str], str | None], str | None] | None = None,
    ) -> str | None:
        """Take the lease for this rollout, or :class:`InputError` (exit 2) naming
        who holds it. ``scale_set`` is the read this decision is based on (its
        etag guards the write). ``write(tags, etag)`` sends the PATCH (default:
        tags only; the switch to Manual sends the policy in the same PATCH).
        Returns the new etag."""
        write = write or self.backend.write_tags
        etag = scale_set.etag
        for _ in range(5):
            now = self.wall()
            current = LeaseInfo.parse(self.backend.tags)
            check_may_take(
                current,
                self.rollout_id,
                self.holder,
                now,
                where=self.backend.where,
                take_over=take_over,
                resuming=resuming,
            )
            if current is not None and current.rollout_id == self.rollout_id:
                self.since = current.since  # the same rollout, resumed: keep its since
            info = LeaseInfo(
                self.rollout_id, self.holder, self.since, now, self.ttl, "running", str(self.target)
            )
            try:
                self.etag = write(info.tags(self._others()), etag)
            except ConcurrencyError:
                # someone wrote meanwhile (or our own lost answer went through)
                fresh = self.backend.read_scale_set()
                if fresh.model not in self.allowed:
                    # the new etag must not launder a model change the plan did not see
                    raise InputError(
                        f"the model of {self.backend.where} changed since it was read (now "
                        f"{fresh.model}); nothing changed: run the command again"
                    ) from None
                etag = fresh.etag
                mine = LeaseInfo.parse(self.backend.tags)
                if mine is not None and (mine.rollout_id, mine.holder, mine.state) == (
                    self.rollout_id,
                    self.holder,
                    "running",
                ):
                    self.etag = etag
                    break
                continue
            break
        else:
            raise InputError(f"{self.backend.where}: could not take the lease (changed 5 times)")
        self.held = True
        self.last_beat = self.wall()
        return self.etag

    def _others(self) -> dict[str, str]:
        return {k: v for k, v in self.backend.tags.items() if k not in (TAG, TARGET_TAG)}

    # ------------------------------------------------------------------ renew
    def due(self) -> bool:
        return self.held and self.wall() - self.last_beat >= self.ttl / 5

    def check(self, *, renew: bool) -> None:
        """Read the scale set: :class:`LeaseLost` if its model is not one this
        rollout may see or the lease is no longer ours; then renew the
        heartbeat under If-Match (a 412 reads again)."""
        for _ in range(5):
            scale_set = self.backend.read_scale_set()
            if scale_set.model not in self.allowed:
                raise LeaseLost(
                    f"the scale set model was changed to {scale_set.model} by someone else "
                    f"(this rollout's target is {self.target})"
                )
            current = LeaseInfo.parse(self.backend.tags)
            if current is None or (current.rollout_id, current.holder) != (
                self.rollout_id,
                self.holder,
            ):
                now = self.wall()
                raise LeaseLost(
                    "the lease on the scale set was taken: "
                    + (current.describe(now) if current else "it was removed")
                )
            self.etag = scale_set.etag
            if not renew:
                return
            if not self.safe_to_write(scale_set):
                self.note = "lease renewal skipped: a write would restart the platform's upgrade"
                return
            beat = self.wall()
            info = replace(current, beat=beat, ttl=self.ttl, state="running")
            try:
                self.etag = self.backend.write_tags(info.tags(self._others()), scale_set.etag)
            except ConcurrencyError:
                continue
            self.last_beat = beat
            return
        raise LeaseLost("the scale set kept changing under the lease (5 times in a row)")

    def safe_to_write(self, scale_set: ScaleSetModel) -> bool:
        """False when a PATCH would be a "generic model update" that restarts
        the platform's rolling upgrade (see the module's docstring)."""
        if scale_set.upgrade_mode is not UpgradeMode.ROLLING:
            return True
        if all(i.latest_model_applied for i in self.backend.list_instances()):
            return True
        status = self.backend.rolling_upgrade_status() or {}
        code = str((status.get("properties") or {}).get("runningStatus", {}).get("code") or "")
        return code.lower() == "rollingforward"

    # ------------------------------------------------------------------ end
    def end(self, state: str) -> bool:
        """``released`` (the rollout ended) or ``stopped`` (unfinished, no process
        drives it). Never raises: the rollout's result stands; returns False (and
        sets :attr:`note`) when the lease could not be written."""
        if not self.held:
            return True
        try:
            for _ in range(3):
                scale_set = self.backend.read_scale_set()
                current = LeaseInfo.parse(self.backend.tags)
                if current is None or (current.rollout_id, current.holder) != (
                    self.rollout_id,
                    self.holder,
                ):
                    self.held = False
                    return True  # not ours any more: leave it
                if not self.safe_to_write(scale_set):
                    self.note = (
                        f"the lease of rollout {self.rollout_id} stays until it expires "
                        f"({self.ttl:g}s): writing it now would restart the platform's rolling "
                        "upgrade; the next rollout needs --take-over"
                    )
                    return False
                info = replace(current, beat=self.wall(), state=state)
                try:
                    self.etag = self.backend.write_tags(info.tags(self._others()), scale_set.etag)
                except ConcurrencyError:
                    continue
                self.held = False
                return True
        except RolloutError as exc:
            self.note = f"the lease could not be {state}: {exc}"
            return False
        self.note = f"the lease could not be {state}: the scale set kept changing"
        return False


def check_may_take(
    current: LeaseInfo | None,
    rollout_id: str | None,
    holder: str,
    now: float,
    *,
    where: str,
    take_over: bool = False,
    resuming: bool = False,
) -> None:
    """:class:`InputError` (exit 2) unless rollout ``rollout_id`` (None: a new
    one) may take the lease ``current``. A live lease of another process never
    yields. A new rollout also yields to a stopped or expired one unless
    ``take_over``. A resumed rollout refuses when the lease names another
    rollout at all, even released: that rollout ran after it, and resuming would
    move the model back to an older target."""
    if current is None:
        return
    ours = rollout_id is not None and current.rollout_id == rollout_id
    if ours and current.holder == holder:
        return
    if resuming and not ours:
        raise InputError(
            f"{where}: another rollout ran since: {current.describe(now)}; resuming "
            f"{rollout_id} would move the model back to an older target: end it with "
            f"`vmss-rollout abandon {rollout_id}`"
        )
    if current.state == "released":
        return
    if current.live(now):
        hint = (
            ""
            if ours
            else f" (its operator can stop it, then `vmss-rollout abandon {current.rollout_id}`)"
        )
        raise InputError(
            f"{where} is leased: {current.describe(now)}; only one process drives a rollout of "
            f"a scale set: wait for it to end{hint}"
        )
    if ours or take_over:
        return  # resuming the same rollout, or an explicit take-over
    raise InputError(
        f"{where} has an unfinished rollout: {current.describe(now)}; continue it with "
        f"`vmss-rollout resume {current.rollout_id}` where its journal is, end it with "
        f"`vmss-rollout abandon {current.rollout_id}`, or pass --take-over to replace it"
    )


def release_abandoned(backend: LeaseBackend, rollout_id: str, wall: float) -> str:
    """``abandon``: release the lease of ``rollout_id`` if the scale set holds
    it (whoever wrote it); returns what was done, for the message."""
    for _ in range(3):
        scale_set = backend.read_scale_set()
        current = LeaseInfo.parse(backend.tags)
        if current is None or current.rollout_id != rollout_id or current.state == "released":
            return "no lease of it on the scale set"
        if current.live(wall):
            raise InputError(
                f"{backend.where}: {current.describe(wall)}: a live process drives it; stop it "
                "first (Ctrl-C), then abandon"
            )
        others = {k: v for k, v in backend.tags.items() if k not in (TAG, TARGET_TAG)}
        info = replace(current, beat=wall, state="released")
        try:
            backend.write_tags(info.tags(others), scale_set.etag)
        except ConcurrencyError:
            continue
        return "released its lease on the scale set"
    raise InputError(f"{backend.where}: the lease kept changing; try again")


class LeasedBackend:
    """The backend, seen through the lease: every poll also watches the model
    (an instance on the latest model whose model is not the target nor the
    previous one, or an upgraded instance falling off the latest model, is
    checked at once with a GET) and renews the heartbeat when it is due; a model
    update uses the etag of our own latest write."""

    def __init__(self, inner: Any, lease: Lease) -> None:
        self.inner = inner
        self.lease = lease
        self._latest: set[str] = set()

    # the engine's Backend and ScaleSetBackend protocols
    @property
    def scale_set_id(self) -> str:
        return str(self.inner.scale_set_id)

    @property
    def health_source(self) -> str:
        return str(self.inner.health_source)

    @property
    def clock(self) -> Clock:
        """The inner backend's clock: the rollout's waits and journal times (the
        lease itself stays on the wall clock)."""
        return clock_of(self.inner)

    def read(self) -> tuple[ScaleSetModel, list[Instance]]:
        result: tuple[ScaleSetModel, list[Instance]] = self.inner.read()
        return result

    def poll(self) -> Observations:
        obs: Observations = self.inner.poll()
        suspicious = False
        for inst in obs.changed:
            if inst.latest_model_applied:
                if inst.model is not None and inst.model not in self.lease.allowed:
                    suspicious = True
                self._latest.add(inst.instance_id)
            elif inst.instance_id in self._latest:
                suspicious = True  # fell off the latest model: did the model change?
                self._latest.discard(inst.instance_id)
        if suspicious or self.lease.due():
            self.lease.check(renew=self.lease.due())
        return obs

    def update_model(self, model: ModelVersion, etag: str | None) -> str | None:
        new: str | None = self.inner.update_model(model, self.lease.etag or etag)
        self.lease.etag = new
        self._latest.clear()  # every instance falls off the latest model now
        return new

    def start_upgrade(self, instance_ids: Sequence[str]) -> None:
        self.inner.start_upgrade(instance_ids)

    def reimage(self, instance_ids: Sequence[str]) -> None:
        self.inner.reimage(instance_ids)

    def add_instances(self, count: int) -> None:
        self.inner.add_instances(count)

    def delete_instances(self, instance_ids: Sequence[str]) -> None:
        self.inner.delete_instances(instance_ids)

    def set_upgrade_mode(
        self, mode: str, etag: str | None = None, tags: dict[str, str] | None = None
    ) -> str | None:
        new: str | None = self.inner.set_upgrade_mode(mode, etag or self.lease.etag, tags)
        self.lease.etag = new
        return new

    @property
    def where(self) -> str:
        return str(self.inner.where)

    @property
    def unique_id(self) -> str:
        return str(self.inner.unique_id)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.inner.tags)

    @property
    def provisioning_state(self) -> str:
        return str(self.inner.provisioning_state)

    @property
    def resource_group(self) -> str:
        return str(self.inner.resource_group)

    @property
    def name(self) -> str:
        return str(self.inner.name)

    def read_scale_set(self) -> ScaleSetModel:
        model: ScaleSetModel = self.inner.read_scale_set()
        return model

    def known_instances(self) -> list[Instance]:
        return list(self.inner.known_instances())

    def list_instances(self) -> list[Instance]:
        return list(self.inner.list_instances())

    def write_tags(self, tags: dict[str, str], etag: str | None) -> str | None:
        new: str | None = self.inner.write_tags(tags, etag)
        return new

    def rolling_upgrade_status(self) -> dict[str, Any] | None:
        status: dict[str, Any] | None = self.inner.rolling_upgrade_status()
        return status

    def cancel_rolling_upgrade(self) -> None:
        self.inner.cancel_rolling_upgrade()
