"""Running an upgrade against a real scale set: the upgrade-policy rules,
the journal, switching to Manual and back, and Azure's own rolling upgrade.

The CLI renders; this module decides and acts. It works on any object with
the :class:`~vmss_rollout.backends.azure.AzureBackend` interface.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..engine.backend import Backend
from ..engine.errors import BackendError, InputError
from ..engine.events import Event, EventKind, StartUpgrade
from ..engine.model import Instance, ModelVersion, ScaleSetModel, UpgradeMode
from ..engine.options import EngineOptions, Scope
from ..engine.polling import DEFAULT_POLL, PollInterval, poll_text
from ..engine.rollout import (
    Outcome,
    Rollout,
    Step,
    runs,
)
from ..engine.topology import check_domains, flag
from ..strategies.base import Strategy
from ..strategies.registry import make, parse_spec, validate
from .clock import Clock, clock_of
from .journal import Journal, JournalError, RolloutRecord, model_from_dict, model_to_dict
from .lease import Lease, LeasedBackend, LeaseLost, holder_alive, holder_id
from .realtime import run
from .resume import ResumePoint

PolicyAction = Literal["manual", "automatic", "switch-to-manual", "native-rolling"]


class ScaleSetBackend(Backend, Protocol):
    @property
    def scale_set_id(self) -> str: ...

    @property
    def health_source(self) -> str: ...

    @property
    def where(self) -> str: ...

    @property
    def unique_id(self) -> str: ...

    @property
    def tags(self) -> dict[str, str]: ...

    @property
    def provisioning_state(self) -> str: ...

    @property
    def clock(self) -> Clock: ...

    def read_scale_set(self) -> ScaleSetModel: ...

    def known_instances(self) -> list[Instance]: ...

    def list_instances(self) -> list[Instance]: ...

    def write_tags(self, tags: dict[str, str], etag: str | None) -> str | None: ...

    def set_upgrade_mode(
        self, mode: str, etag: str | None = None, tags: dict[str, str] | None = None
    ) -> str | None: ...

    def rolling_upgrade_status(self) -> dict[str, Any] | None: ...

    def cancel_rolling_upgrade(self) -> None: ...


@dataclass(frozen=True)
class UpgradeRequest:
    target: ModelVersion
    strategy: str
    options: EngineOptions = field(default_factory=EngineOptions)
    allow_automatic: bool = False
    switch_to_manual: bool = False
    no_wait: bool = False


def policy_action(scale_set: ScaleSetModel, request: UpgradeRequest) -> PolicyAction:
    """How the upgrade policy lets this rollout run, or an :class:`InputError`
    that says why not (before anything changes)."""
    mode = scale_set.upgrade_mode
    if mode is UpgradeMode.AUTOMATIC:
        if not request.allow_automatic:
            raise InputError(
                "upgrade policy is Automatic: changing the model upgrades every instance at once, "
                "whatever the strategy; pass --allow-automatic to accept that, or set the policy "
                "to Manual first"
            )
        return "automatic"
    if mode is UpgradeMode.ROLLING:
        if request.switch_to_manual:
            return "switch-to-manual"
        if request.strategy.split(":", 1)[0].strip() == "azure-rolling":
            return "native-rolling"
        raise InputError(
            "upgrade policy is Rolling: the platform rolls a model change out itself; use "
            "--strategy azure-rolling to follow it, or --switch-to-manual to run "
            f"{request.strategy} and restore Rolling afterwards"
        )
    return "manual"


def is_noop(scale_set: ScaleSetModel, instances: list[Instance], target: ModelVersion) -> bool:
    return scale_set.model == target and all(runs(i, target) for i in instances)


@dataclass
class UpgradeResult:
    record: RolloutRecord
    outcome: Outcome
    action: PolicyAction
    started_only: bool = False  # --no-wait returned after the first wave started
    #: what the operator must know besides the outcome (the policy left Manual, ...)
    notes: list[str] = field(default_factory=list)


def execute(
    backend: ScaleSetBackend,
    scale_set: ScaleSetModel,
    instances: list[Instance],
    request: UpgradeRequest,
    journal: Journal,
    *,
    listener: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    interval: PollInterval | None = None,
    wall: Callable[[], float] | None = None,
    resume: RolloutRecord | None = None,
    previous: ModelVersion | None = None,
    finishing_rollback: str | None = None,
    resumed: ResumePoint | None = None,
    take_over: bool = False,
    warn: Callable[[str], None] | None = None,
    restore_rolling: bool = False,
) -> UpgradeResult:
    """Run the rollout, journaling every event as it happens, under a lease on
    the scale set (:mod:`.lease`): taken before anything changes (``take_over``:
    replace a stopped or expired lease of another rollout), renewed while the
    rollout runs, released when it ends, left "stopped" while it is unfinished.
    A model change by someone else halts it at once.

    ``finishing_rollback`` (the original halt reason): a resumed rollout that was
    rolling back; ``request.target`` is then the previous model, and a run that
    gets there ends the record "halted" and "rolled back", never "completed".

    An error ends the journal's record before it propagates: an
    :class:`InputError` from the scale set (a refused write, nothing changed)
    marks a new rollout "failed" (a resumed one "interrupted"); a
    :class:`BackendError` (Azure failed after retries, something may have
    changed) marks it "interrupted", so that ``resume`` continues it, and the
    error names the rollout.

    Every wait and every journaled time is on ``backend.clock`` (the emulator's
    in a rehearsal; ``wall`` overrides the journal's); the lease's heartbeats
    are on the wall clock, since processes live in wall time."""
    wall = wall or clock_of(backend).time
    action = policy_action(scale_set, request)
    strategy = make(request.strategy)
    if resume is None:
        check_request(scale_set, instances, request)
    holder = holder_id()
    if resume is not None:
        record = journal.adopt(resume.id, wall(), driver=holder, is_alive=driver_alive)
    else:
        record = journal.start(
            scale_set_id=backend.scale_set_id,
            previous_model=model_to_dict(scale_set.model),
            target_model=model_to_dict(request.target),
            strategy=request.strategy,
            # the poll interval too: calibrate reconstructs the polls from it
            options={
                **request.options.to_mapping(),
                "poll_interval": poll_text(
                    (interval.minimum, interval.maximum) if interval else DEFAULT_POLL
                ),
            },
            now=wall(),
            unique_id=backend.unique_id,
            driver=holder,
        )
    allowed = [request.target, previous or scale_set.model, scale_set.model]
    if resume is not None:
        allowed.append(model_from_dict(resume.target_model))
    # wall time: whether a process is alive is not the emulator's business
    lease = Lease(backend, record.id, request.target, allowed=allowed, holder=holder)
    try:
        lease.acquire(
            scale_set,
            take_over=take_over,
            resuming=resume is not None,
            write=(
                (lambda tags, etag: backend.set_upgrade_mode(UpgradeMode.MANUAL.value, etag, tags))
                if action == "switch-to-manual"
                else None
            ),
        )
    except (InputError, BackendError) as exc:
        if resume is None:
            journal.finish(record.id, "failed", f"nothing changed: {exc}", wall())
        else:
            journal.mark_interrupted(record.id, f"not resumed: {exc}", wall())
        raise
    leased = LeasedBackend(backend, lease)

    def on_event(event: Event) -> None:
        journal.record_event(record.id, event, wall())
        if listener is not None:
            listener(event)

    end = "stopped"
    try:
        if action == "switch-to-manual":
            journal.note(record.id, POLICY_SWITCHED, "upgrade policy Rolling -> Manual", wall())
        result = _drive(
            leased,
            scale_set,
            instances,
            request,
            journal,
            record,
            action,
            on_event,
            should_stop=should_stop,
            interval=interval,
            wall=wall,
            previous=previous,
            strategy=strategy,
            finishing_rollback=finishing_rollback,
            resumed=resumed,
            restore_rolling=restore_rolling,
        )
        if not result.outcome.interrupted and not result.started_only:
            end = "released"
        return result
    except KeyboardInterrupt:
        end = ""  # a second Ctrl-C stops at once: no more requests
        raise
    except LeaseLost as exc:
        # following the platform's rolling upgrade (the engine's own driver
        # handles this in _drive): the model changed under it or the lease was taken
        end = "released"
        reason = f"halted at once: {exc}"
        record = journal.finish(record.id, "halted", reason, wall())
        now = clock_of(backend).monotonic()
        outcome = Outcome(
            completed=False,
            halted=True,
            reason=reason,
            rolled_back=False,
            interrupted=False,
            scope=0,
            upgraded=record.upgraded,
            unhealthy=0,
            failed=record.failed,
            gone=0,
            started_at=now,
            finished_at=now,
        )
        return UpgradeResult(record, outcome, action)
    except JournalError as exc:
        if not getattr(backend, "changed", True):
            end = "released"
            raise
        with contextlib.suppress(JournalError):
            journal.mark_interrupted(record.id, f"journal error: {exc}", wall())
        raise BackendError(
            f"{exc}; the scale set was already changed: rollout {record.id} stopped; continue "
            f"with `vmss-rollout resume {record.id}` once the journal can be written"
        ) from None
    except InputError as exc:
        if resume is None and not getattr(backend, "changed", True):
            end = "released"
            journal.finish(record.id, "failed", f"nothing changed: {exc}", wall())
        else:
            journal.mark_interrupted(record.id, f"stopped: {exc}", wall())
        raise
    except BackendError as exc:
        journal.mark_interrupted(record.id, f"Azure error: {exc}", wall())
        raise BackendError(
            f"{exc}; rollout {record.id} stopped (the journal has what changed); continue "
            f"with `vmss-rollout resume {record.id}`"
        ) from None
    finally:
        if end and not lease.end(end) and lease.note and warn is not None:
            warn(lease.note)


def driver_alive(driver: str) -> bool:
    """The journal's check of a recorded driver (``user@host:pid``): alive only
    when known to be (on this machine); another machine's is the lease's to say."""
    return holder_alive(driver) is True


def check_request(
    scale_set: ScaleSetModel, instances: list[Instance], request: UpgradeRequest
) -> None:
    """What can only be checked against the live scale set, before anything
    changes: the policy, the scope filters, and the strategy's parameters against
    the size of the scope (a fixed batch larger than the scope is a typo)."""
    policy_action(scale_set, request)
    scope = request.options.scope
    check_fault_domains(scale_set, parse_spec(request.strategy)[0], scope)
    validate(request.strategy, instances, scope, request.target)  # as simulate checks it


def check_fault_domains(scale_set: ScaleSetModel, strategy: str, scope: Scope) -> None:
    """Refuse waves the live scale set's topology cannot give
    (:func:`engine.topology.check_domains`)."""
    check_domains(
        f"scale set {scale_set.name}",
        flexible=scale_set.flexible,
        fault_domain_count=scale_set.fault_domain_count,
        strategy=strategy,
        scope=scope,
        option=flag,
    )


def _drive(
    backend: ScaleSetBackend,
    scale_set: ScaleSetModel,
    instances: list[Instance],
    request: UpgradeRequest,
    journal: Journal,
    record: RolloutRecord,
    action: PolicyAction,
    on_event: Callable[[Event], None],
    *,
    should_stop: Callable[[], bool],
    interval: PollInterval | None,
    wall: Callable[[], float],
    previous: ModelVersion | None,
    strategy: Strategy,
    finishing_rollback: str | None = None,
    resumed: ResumePoint | None = None,
    restore_rolling: bool = False,
) -> UpgradeResult:
    clock = clock_of(backend)
    if action == "native-rolling":
        outcome = follow_rolling(
            backend,
            scale_set,
            instances,
            request,
            on_event,
            should_stop=should_stop,
            interval=interval or PollInterval(),
            clock=clock.monotonic,
            sleep=clock.sleep,
        )
        return _finish(journal, record, outcome, action, wall, finishing_rollback)
    rollout = Rollout(
        scale_set.model,
        request.target,
        instances,
        strategy,
        request.options,
        listener=on_event,
        previous=previous,
        # pacing goes on where it stopped: the rest of a bake counts from now
        resumed=None if resumed is None else resumed.at(wall()),
    )
    started = [False]

    def first_wave(step: Step) -> bool:
        if any(isinstance(a, StartUpgrade) for a in step.actions):
            started[0] = True
        return request.no_wait and started[0]

    halt = ""
    try:
        run(
            rollout,
            backend,
            etag=scale_set.etag,
            interval=interval,
            clock=clock.monotonic,
            sleep=clock.sleep,
            should_stop=should_stop,
            until=first_wave,
        )
    except LeaseLost as exc:
        # the model changed under the rollout, or its lease was taken: going on
        # would upgrade instances to a model it does not own; stop at once
        halt = f"halted at once: {exc}"
        on_event(Event(clock.monotonic(), EventKind.HALTED, rollout.phase.value, detail=halt))
    outcome = rollout.outcome()
    if halt:
        outcome = dataclasses.replace(
            outcome, completed=False, halted=True, interrupted=False, reason=halt
        )
    unfinished = bool(halt) is False and request.no_wait and not rollout.finished
    notes: list[str] = []
    if action == "switch-to-manual" or restore_rolling:
        notes, restored = _after_switch(backend, outcome, unfinished, interval or PollInterval())
        if restored:
            journal.note(record.id, POLICY_RESTORED, notes[0], wall())
    if unfinished:
        record = journal.mark_interrupted(record.id, "--no-wait: started, not followed", wall())
        return UpgradeResult(record, outcome, action, started_only=True, notes=notes)
    result = _finish(journal, record, outcome, action, wall, finishing_rollback)
    result.notes.extend(notes)
    return result


#: journal events: the rollout switched the policy Rolling -> Manual, and restored it
POLICY_SWITCHED = "policy-switched"
POLICY_RESTORED = "policy-restored"
#: seconds to watch the restore of policy Rolling before leaving it to the operator
RESTORE_WATCH_S = 60.0


def _after_switch(
    backend: ScaleSetBackend,
    outcome: Outcome,
    unfinished: bool,
    interval: PollInterval,
) -> tuple[list[str], bool]:
    """``--switch-to-manual``, once the rollout stopped (also a resumed one that
    switched, per its journal): restore Rolling only
    when no instance would be left for the platform to roll (completed, or
    rolled back with every instance on the previous model): with instances off
    the latest model, Rolling starts the platform's own rolling upgrade, which
    would undo a freeze. The restore is a long-running operation on Azure
    (as long as any platform upgrade it starts): it is watched for a bounded
    time, never waited on. Returns the notes for the operator, and whether
    Rolling was restored."""
    manual = (
        f"`az vmss update -g {getattr(backend, 'resource_group', 'RG')} -n "
        f"{getattr(backend, 'name', 'NAME')} --set upgradePolicy.mode=Rolling`"
    )
    if unfinished or outcome.interrupted:
        return [
            "upgrade policy left Manual while the rollout is unfinished (Rolling would let the "
            "platform roll the remaining instances); `vmss-rollout resume` restores it when the "
            f"rollout completes, or restore it yourself with {manual}"
        ], False
    etag = backend.read_scale_set().etag
    fleet = backend.list_instances()
    settled = all(i.latest_model_applied for i in fleet)
    if not (outcome.completed or outcome.rolled_back) or not settled:
        return [
            "upgrade policy left Manual after the halt (it was Rolling): restoring it now would "
            "start the platform's own rolling upgrade of the instances off the model; when you "
            f"have decided, restore it with {manual}"
        ], False
    return restore_rolling(backend, etag, interval), True


def restore_rolling(
    backend: ScaleSetBackend,
    etag: str | None,
    interval: PollInterval,
) -> list[str]:
    """Set policy Rolling back (under If-Match on ``etag``) and watch the scale
    set for up to :data:`RESTORE_WATCH_S` seconds of the backend's clock: a
    long-running operation on Azure, never waited on."""
    clock = clock_of(backend)
    backend.set_upgrade_mode(UpgradeMode.ROLLING.value, etag)
    deadline = clock.monotonic() + RESTORE_WATCH_S
    while clock.monotonic() < deadline:
        backend.read_scale_set()
        if backend.provisioning_state.lower() != "updating":
            return ["upgrade policy restored to Rolling"]
        clock.sleep(interval.next(False))
    return [
        f"upgrade policy Rolling requested; the scale set is still updating after "
        f"{RESTORE_WATCH_S:g}s: follow it with `vmss-rollout status`"
    ]


def _finish(
    journal: Journal,
    record: RolloutRecord,
    outcome: Outcome,
    action: PolicyAction,
    wall: Callable[[], float],
    finishing_rollback: str | None = None,
) -> UpgradeResult:
    if outcome.interrupted:
        record = journal.mark_interrupted(record.id, outcome.reason, wall())
    elif finishing_rollback is not None and outcome.completed:
        outcome = dataclasses.replace(outcome, rolled_back=True)
        record = journal.finish(record.id, "halted", f"{finishing_rollback}; rolled back", wall())
    else:
        state = "completed" if outcome.completed else "halted"
        record = journal.finish(record.id, state, outcome.reason, wall())
    return UpgradeResult(record, outcome, action)


_TERMINAL = {"completed", "faulted", "cancelled"}


def _run_key(status: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What tells one platform rolling upgrade (rollingUpgrades/latest) from the next."""
    if not status:
        return None
    running = _path(status, "properties", "runningStatus") or {}
    return tuple(running.get(k) for k in ("startTime", "code", "lastAction", "lastActionTime"))


def follow_rolling(
    backend: ScaleSetBackend,
    scale_set: ScaleSetModel,
    instances: list[Instance],
    request: UpgradeRequest,
    emit: Callable[[Event], None],
    *,
    should_stop: Callable[[], bool],
    interval: PollInterval,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Outcome:
    """Policy Rolling with ``azure-rolling``: change the model, let the platform
    roll it out, and follow ``rollingUpgrades/latest`` (one GET and one list per
    poll). A stop request cancels the platform's rolling upgrade.

    The model PATCH is not waited on: on Azure its long-running operation lasts
    until the platform's rolling upgrade ends, then fails with its error
    (Azure/azure-powershell#11896), so waiting would block with no progress and
    no cancel. The rolling upgrade followed is the one that started after the
    PATCH (``latest`` may still show an earlier, finished one); should none start,
    the rollout is over once every instance runs the target. A Faulted upgrade is
    a halt carrying the platform's error code and progress."""
    started = clock()
    phase = "rolling"
    emit(
        Event(
            started,
            EventKind.ROLLOUT_STARTED,
            phase,
            detail=f"platform rolling upgrade: {scale_set.model} -> {request.target}",
        )
    )
    earlier = _run_key(backend.rolling_upgrade_status())
    backend.update_model(request.target, scale_set.etag)
    emit(Event(clock(), EventKind.MODEL_UPDATED, phase, detail=str(request.target)))
    done: set[str] = set()
    cancelled = False
    status: dict[str, Any] = {}
    code = ""
    while True:
        obs = backend.poll()
        now = clock()
        for inst in obs.changed:
            on_target = runs(inst, request.target)
            if on_target and inst.serving and inst.instance_id not in done:
                done.add(inst.instance_id)
                emit(
                    Event(
                        now,
                        EventKind.INSTANCE_HEALTHY,
                        phase,
                        (inst.instance_id,),
                        detail="upgraded by the platform",
                    )
                )
        latest = backend.rolling_upgrade_status() or {}
        if _run_key(latest) not in (None, earlier):
            status = latest  # the platform's run for this model change
            code = str(_path(status, "properties", "runningStatus", "code") or "").lower()
        if code in _TERMINAL:
            break
        if not status and all(
            runs(i, request.target) and i.serving for i in backend.known_instances()
        ):
            code = "completed"  # every instance on the target, no run needed
            break
        if should_stop() and not cancelled and status:
            # only once the platform's run for this change exists: before, there is
            # nothing to cancel (Azure: 409 "no rolling upgrade in progress")
            cancelled = True
            backend.cancel_rolling_upgrade()
            emit(
                Event(
                    now,
                    EventKind.HALTED,
                    phase,
                    detail="interrupted: cancelled the platform's rolling upgrade",
                )
            )
        sleep(interval.next(bool(obs.changed)))
    progress = _path(status, "properties", "progress") or {}
    error = _path(status, "properties", "error") or {}
    finished = clock()
    completed = code == "completed"
    counts = (
        f"{int(progress.get('successfulInstanceCount', len(done)))} succeeded, "
        f"{int(progress.get('failedInstanceCount', 0))} failed, "
        f"{int(progress.get('inProgressInstanceCount', 0))} in progress, "
        f"{int(progress.get('pendingInstanceCount', 0))} pending"
    )
    if completed:
        reason = ""
    elif cancelled:
        reason = "interrupted"
    else:
        what = ": ".join(str(error[k]) for k in ("code", "message") if error.get(k))
        reason = f"platform rolling upgrade {code}" + (f": {what}" if what else "")
        reason += f" (progress: {counts})"
    emit(
        Event(
            finished,
            EventKind.ROLLOUT_FINISHED,
            phase,
            detail="completed" if completed else f"halted: {reason}",
        )
    )
    return Outcome(
        completed=completed,
        halted=not completed and not cancelled,
        reason=reason,
        rolled_back=False,
        interrupted=cancelled,
        scope=sum(1 for i in instances if not runs(i, request.target)),
        upgraded=int(progress.get("successfulInstanceCount", len(done))),
        unhealthy=0,
        failed=int(progress.get("failedInstanceCount", 0)),
        gone=0,
        started_at=started,
        finished_at=finished,
    )


def _path(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def summary(result: UpgradeResult, counts: dict[str, Any]) -> dict[str, Any]:
    o = result.outcome
    return {
        "rollout": result.record.to_json(),
        "completed": result.record.state == "completed",
        "halted": o.halted or result.record.state == "halted",
        "interrupted": o.interrupted,
        "reason": o.reason,
        "rolled_back": o.rolled_back,
        "scope": o.scope,
        "upgraded": o.upgraded,
        "failed": o.failed + o.unhealthy,
        "policy": result.action,
        "notes": list(result.notes),
        "requests": counts,
    }
