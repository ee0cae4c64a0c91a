"""Pacing resumes where it stopped, and surge resumes with the replacements it
asked for (issue 8, cases 8 and 5), at the engine level: pure and fast.

A small in-memory scale set drives the engine on a fake clock. A reference
rollout runs uninterrupted; then, for every event of it, the same rollout is
"killed" right after that event (with and without the step's actions sent),
its journal is the events so far (with wall times), and a new engine built
from :func:`point_from_events` finishes it. Whatever the kill point: no
checkpoint is reached twice, the bake in progress ends when it would have,
no instance is upgraded twice, and a surge ends at the original capacity.
"""

from __future__ import annotations

import math
import re
import signal
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from vmss_rollout.backends.resume import point_from_events
from vmss_rollout.engine import (
    AddInstances,
    DeleteInstances,
    EngineOptions,
    Event,
    EventKind,
    Health,
    ImageReference,
    Instance,
    ModelVersion,
    ProvisioningState,
    Rollout,
    StartUpgrade,
    UpdateModel,
)
from vmss_rollout.engine.options import Amount
from vmss_rollout.engine.rollout import Resumed
from vmss_rollout.strategies.registry import make

OLD = ModelVersion(ImageReference("Canonical", "ubuntu", "server", "1.0.0"))
NEW = ModelVersion(ImageReference("Canonical", "ubuntu", "server", "2.0.0"))
#: the wall time (seconds since the epoch) the first attempt starts at
WALL0 = 1_700_000_000.0
UPGRADE_S = 10.0
N = 10


@dataclass
class FakeSet:
    """Instances that take UPGRADE_S to upgrade or be created, healthy after."""

    instances: dict[str, Instance]
    model: ModelVersion = OLD
    next_id: int = N
    #: (time it completes, instance id)
    busy: list[tuple[float, str]] = field(default_factory=list)
    upgrades: Counter[str] = field(default_factory=Counter)
    created: list[str] = field(default_factory=list)
    deleted: Counter[str] = field(default_factory=Counter)

    def act(self, rollout: Rollout, now: float, actions: Sequence[object]) -> list[Instance]:
        changed = []
        for action in actions:
            if isinstance(action, UpdateModel):
                self.model = action.model
                rollout.model_updated(now)
            elif isinstance(action, StartUpgrade):
                for iid in action.instance_ids:
                    self.upgrades[iid] += 1
                    inst = self.instances[iid].evolve(provisioning=ProvisioningState.UPDATING)
                    self.instances[iid] = inst
                    self.busy.append((now + UPGRADE_S, iid))
                    changed.append(inst)
            elif isinstance(action, AddInstances):
                for _ in range(action.count):
                    iid = str(self.next_id)
                    self.next_id += 1
                    self.created.append(iid)
                    inst = Instance(
                        iid,
                        int(iid) % 5,
                        int(iid) % 3,
                        model=self.model,
                        provisioning=ProvisioningState.CREATING,
                        health=Health.UNKNOWN,
                    )
                    self.instances[iid] = inst
                    self.busy.append((now + UPGRADE_S, iid))
                    changed.append(inst)
            elif isinstance(action, DeleteInstances):
                for iid in action.instance_ids:
                    self.deleted[iid] += 1
                    self.instances.pop(iid, None)
        return changed

    def settle(self, now: float) -> list[Instance]:
        done = [iid for t, iid in self.busy if t <= now]
        self.busy = [(t, iid) for t, iid in self.busy if t > now]
        out = []
        for iid in done:
            if iid in self.instances:
                inst = self.instances[iid].evolve(
                    model=self.model,
                    latest_model_applied=True,
                    provisioning=ProvisioningState.SUCCEEDED,
                    health=Health.HEALTHY,
                )
                self.instances[iid] = inst
                out.append(inst)
        return out

    def next_change(self) -> float:
        return min((t for t, _ in self.busy), default=math.inf)


def drive(
    rollout: Rollout,
    fake: FakeSet,
    *,
    kill_after: int | None = None,
    send_last: bool = True,
    start: float = 0.0,
) -> float:
    """Run ``rollout`` on ``fake`` from ``start`` until it finishes, or until it
    has emitted ``kill_after`` events (then the process "dies": that step's
    actions are sent only with ``send_last``). Returns the time it stopped."""
    now = start
    known = {i: fake.instances[i] for i in fake.instances}
    for _ in range(10_000):
        changed = fake.settle(now)
        deleted = [i for i in known if i not in fake.instances]
        rollout.observe(now, changed, deleted)
        step = rollout.step(now)
        killed = kill_after is not None and len(rollout.events) >= kill_after
        if not killed or send_last:
            changed = fake.act(rollout, now, step.actions)
            rollout.observe(now, changed)
        known = dict(fake.instances)
        if killed or rollout.finished:
            return now
        # the next change, the engine's deadline, or (like a poll) at once
        wake = min(fake.next_change(), step.wake_at if step.wake_at is not None else math.inf)
        now = max(now, wake) if wake < math.inf else now
    raise AssertionError("the rollout did not finish")


def journal_rows(events: Sequence[Event], wall0: float) -> list[dict[str, Any]]:
    """``events`` as :meth:`Journal.events` rows, at wall time wall0 + engine time."""
    return [
        {
            "kind": e.kind.value,
            "phase": e.phase,
            "instances": list(e.instances),
            "wave": e.wave,
            "detail": e.detail,
            "time": e.time,
            "wall_time": wall0 + e.time,
        }
        for e in events
    ]


OPTIONS = EngineOptions(canary=Amount(1), bake=600.0, checkpoints=(50.0,))


def first_run(spec: str, options: EngineOptions) -> tuple[FakeSet, Rollout]:
    fake = FakeSet({str(i): Instance(str(i), i % 5, i % 3, model=OLD) for i in range(N)})
    rollout = Rollout(OLD, NEW, list(fake.instances.values()), make(spec), options)
    return fake, rollout


def checkpoints(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if e.kind is EventKind.CHECKPOINT]


@pytest.mark.parametrize("spec", ["batch:size=2", "window:max-unavailable=2", "surge:max-surge=2"])
@pytest.mark.parametrize("send_last", [True, False])
@pytest.mark.parametrize("gap", [0.0, 250.0, 5000.0])
def test_killed_after_any_event_resume_neither_repeats_nor_skips_pacing(
    spec: str, send_last: bool, gap: float
) -> None:
    """``gap``: seconds between the kill and the resume (inside a 600 s bake,
    or longer than it)."""
    fake, reference = first_run(spec, OPTIONS)
    drive(reference, fake)
    assert reference.outcome().completed
    ref_checkpoints = checkpoints(reference.events)
    assert [e.detail.split(";")[0] for e in ref_checkpoints] == ["1 of 10 done", "5 of 10 done"]
    for kill_after in range(1, len(reference.events)):
        fake, first = first_run(spec, OPTIONS)
        killed_at = drive(first, fake, kill_after=kill_after, send_last=send_last)
        if first.finished:
            continue
        journal = journal_rows(first.events, WALL0)
        point = point_from_events(journal, OPTIONS)
        resumed_wall = WALL0 + killed_at + gap
        state = point.at(resumed_wall) if point is not None else None
        second = Rollout(
            fake.model,
            NEW,
            list(fake.instances.values()),
            make(spec),
            OPTIONS,
            previous=OLD,
            resumed=state,
        )
        # the instances in flight when it died finish while nobody watches
        drive(second, fake, start=killed_at + gap)
        where = (kill_after, first.events[kill_after - 1].kind)
        assert second.outcome().completed, (where, second.outcome())
        # every instance on the target, the original count, nothing done twice
        assert len(fake.instances) == N, (where, sorted(fake.instances))
        assert all(i.model == NEW and i.serving for i in fake.instances.values()), where
        assert max(fake.upgrades.values(), default=0) <= 1, (where, fake.upgrades)
        if make(spec).replaces:
            assert len(fake.created) == N and set(fake.deleted.values()) == {1}, where
        # each checkpoint reached once over both attempts, at the same share
        both = checkpoints(first.events) + checkpoints(second.events)
        assert [e.detail for e in both] == [e.detail for e in ref_checkpoints], where
        # a bake in progress when it died ends when it would have (wall time)
        cps = checkpoints(first.events)
        waves = [e for e in first.events if e.kind is EventKind.WAVE_STARTED]
        baking = cps and (not waves or waves[-1].time <= cps[-1].time)
        if baking:
            bake_end = WALL0 + cps[-1].time + OPTIONS.bake
            first_wave = next(e for e in second.events if e.kind is EventKind.WAVE_STARTED)
            wave_wall = resumed_wall + first_wave.time - (killed_at + gap)
            assert wave_wall == pytest.approx(max(bake_end, resumed_wall)), where


def test_the_resume_point_read_from_events() -> None:
    # killed during the canary's bake: one checkpoint, the bake's end in wall time
    fake, first = first_run("batch:size=2", OPTIONS)
    ref_fake, ref = first_run("batch:size=2", OPTIONS)
    drive(ref, ref_fake)
    k = next(i for i, e in enumerate(ref.events) if e.kind is EventKind.CHECKPOINT) + 1
    drive(first, fake, kill_after=k)
    rows = journal_rows(first.events, WALL0)
    point = point_from_events(rows, OPTIONS)
    assert point is not None
    cp = rows[k - 1]
    assert point.state == Resumed(
        scope_size=N, stops_passed=1, known=frozenset({"0"}), requested=(), replacements=()
    )
    assert point.not_before == cp["wall_time"] + 600
    assert point.at(cp["wall_time"] + 100).wait == 500
    assert point.at(cp["wall_time"] + 900).wait == 0
    # nothing rolled yet: nothing to resume from
    assert point_from_events(rows[:0], OPTIONS) is None


def test_a_resumed_bake_wakes_the_driver_at_its_end() -> None:
    instances = [Instance(str(i), i % 5, i % 3, model=OLD) for i in range(N)]
    instances[0] = instances[0].evolve(model=NEW)  # the canary, done and baking
    rollout = Rollout(
        NEW,
        NEW,
        instances,
        make("batch:size=2"),
        OPTIONS,
        previous=OLD,
        resumed=Resumed(scope_size=N, stops_passed=1, wait=250.0),
    )
    step = rollout.step(1000.0)
    assert step.actions == () and step.wake_at == 1250.0
    assert "1 checkpoint(s) passed, not repeated, 250s of the bake or pause left" in (
        rollout.events[0].detail
    )
    assert rollout.step(1249.0).actions == ()
    assert rollout.step(1250.0).actions == (StartUpgrade(("1", "2")),)


def test_a_canary_done_but_its_checkpoint_not_journaled_bakes_now() -> None:
    instances = [Instance(str(i), i % 5, i % 3, model=OLD) for i in range(N)]
    instances[0] = instances[0].evolve(model=NEW)
    rollout = Rollout(
        NEW,
        NEW,
        instances,
        make("batch:size=2"),
        OPTIONS,
        previous=OLD,
        resumed=Resumed(scope_size=N, stops_passed=0),
    )
    step = rollout.step(0.0)
    assert step.actions == () and step.wake_at == 600.0
    assert [e.detail for e in checkpoints(rollout.events)] == ["1 of 10 done; baking 600s"]


def test_finishing_a_rollback_has_no_checkpoints() -> None:
    instances = [Instance(str(i), i % 5, i % 3, model=NEW) for i in range(N)]
    rollout = Rollout(
        OLD,
        OLD,
        instances,
        make("batch:size=2"),
        OPTIONS,
        previous=OLD,
        resumed=Resumed(scope_size=N, paced=False),
    )
    fake = FakeSet({i.instance_id: i for i in instances}, model=OLD)
    drive(rollout, fake)
    assert rollout.outcome().completed and checkpoints(rollout.events) == []


def test_surge_uses_the_replacements_it_finds() -> None:
    """'2' has a journaled replacement '10' (healthy: '2' is deleted at once);
    '3' asked for one never seen: '11', on the target and named nowhere in the
    journal, is it; '4' asked for one that never came: asked again."""
    instances = [Instance(str(i), i % 5, i % 3, model=OLD) for i in range(2, N)]
    instances += [
        Instance("10", 0, 0, model=NEW),
        Instance(
            "11", 1, 1, model=NEW, provisioning=ProvisioningState.CREATING, health=Health.UNKNOWN
        ),
    ]
    rollout = Rollout(
        NEW,
        NEW,
        instances,
        make("surge:max-surge=3"),
        EngineOptions(),
        previous=OLD,
        resumed=Resumed(
            scope_size=N,
            replacements=(("0", "12"), ("2", "10")),
            requested=("3", "4"),
            known=frozenset({"0", "1", "2", "3", "4", "10", "12"}),
        ),
    )
    # '2' goes at once; nothing new is asked while '3' waits for '11' (lock step)
    assert rollout.step(0.0).actions == (DeleteInstances(("2",)),)
    found = [e.instances for e in rollout.events if e.kind is EventKind.SURGE_CREATED]
    assert found == [("2", "10"), ("3", "11")]
    rollout.observe(
        5.0, [instances[-1].evolve(provisioning=ProvisioningState.SUCCEEDED, health=Health.HEALTHY)]
    )
    assert rollout.step(5.0).actions == (DeleteInstances(("3",)), AddInstances(3))
    wave = next(e for e in rollout.events if e.kind is EventKind.WAVE_STARTED)
    assert wave.instances == ("4", "5", "6")


def test_surge_takes_no_instance_that_was_on_the_target_before() -> None:
    """'1' ran the target before the rollout (never named by the journal) and
    '0' asked for a replacement that never came: '1' is not taken for it."""
    instances = [Instance(str(i), i % 5, i % 3, model=OLD) for i in range(N)]
    instances[1] = instances[1].evolve(model=NEW)
    rollout = Rollout(
        NEW,
        NEW,
        instances,
        make("surge"),
        EngineOptions(),
        previous=OLD,
        resumed=Resumed(scope_size=N - 1, requested=("0",), known=frozenset({"0"})),
    )
    assert rollout.step(0.0).actions == (AddInstances(1),)
    assert not [e for e in rollout.events if e.kind is EventKind.SURGE_CREATED]


def test_finishing_a_surge_rollback_rolls_back_the_forward_replacements() -> None:
    """Killed while rolling back: '10' was created for '0' on the bad model
    ('0' still serves on the old one); the rollback (target: the old model)
    must bring '10' back, not take the forward pair for one of its own."""
    instances = [Instance(str(i), i % 5, i % 3, model=OLD) for i in range(N)]
    instances.append(Instance("10", 0, 0, model=NEW))
    rollout = Rollout(
        OLD,
        OLD,
        instances,
        make("surge"),
        EngineOptions(),
        previous=OLD,
        resumed=Resumed(
            scope_size=1, paced=False, replacements=(("0", "10"),), known=frozenset({"0", "10"})
        ),
    )
    assert rollout.step(0.0).actions == (AddInstances(1),)
    wave = next(e for e in rollout.events if e.kind is EventKind.WAVE_STARTED)
    assert wave.instances == ("10",)


# --------------------------------------------------------------------------- end to end
# The CLI against the ARM emulator through the real SDK: `upgrade --canary 1
# --checkpoints 50 --bake 2h` is killed (SIGKILL) while its canary bakes; the
# journal's time of that bake's start is moved back, as if the operator came
# back an hour later; `resume` waits the last hour of the bake, not two,
# then is killed while the 50% checkpoint bakes; once that bake is over too, a
# second `resume` starts its waves at once and reaches no checkpoint again.
# Every time is the emulator's (x600: the CLI waits on its clock), so the hour
# left is 6 s of wall time, more than a CLI process takes to start.

BAKE = 7200.0
#: seconds of the canary's bake left when the first resume starts
LEFT = 3600.0
#: simulated seconds a CLI's few polls may take after a wait ends (a second of
#: wall time at x600)
SLACK = 600.0
#: an event-log line: "HH:MM:SS kind instances detail"
EVENT_LINE = re.compile(r"^\d\d:\d\d:\d\d ([a-z_]+)")


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("azure.mgmt.compute")
    pytest.importorskip("uvicorn")
    from emulated import SCENARIO, Emulated

    from vmss_rollout.emulator.launch import emulator_process

    tmp = tmp_path_factory.mktemp("pacing")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=N))
    with emulator_process(scenario, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        yield Emulated(info, tmp, scenario)


def kill_at_checkpoint(emu: Any, command: list[str]) -> str:
    """Run ``command``; SIGKILL it when it prints its first checkpoint line."""
    proc = subprocess.Popen(command, env=emu.env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        match = EVENT_LINE.match(line)
        if match and match.group(1) == "checkpoint":
            proc.kill()
    proc.wait(timeout=180)
    output = "".join(lines)
    assert proc.returncode == -signal.SIGKILL, output
    return output


def journal_events(emu: Any, rollout: str) -> list[dict[str, Any]]:
    from vmss_rollout.backends.journal import Journal

    with Journal(emu.journal) as journal:
        assert journal.check()
        return journal.events(rollout)


def move_back(emu: Any, seq: int, seconds: float) -> None:
    """The operator comes back later: event ``seq`` (and every later one)
    happened ``seconds`` earlier in wall time."""
    with sqlite3.connect(emu.journal) as db:
        db.execute("UPDATE events SET wall_time = wall_time - ? WHERE seq >= ?", (seconds, seq))


def test_resume_continues_the_bake_and_never_repeats_a_checkpoint(emu: Any) -> None:
    from emulated import FAST, RG

    emu.admin("reset-counts", {})
    target = emu.next_target()
    pacing = ["--canary", "1", "--checkpoints", "50", "--bake", "2h"]
    upgrade = emu.command(
        "upgrade", "-g", RG, "-n", emu.name, "--image-version", target, "--yes",
        "--strategy", "batch:size=2", *pacing, *FAST,
    )  # fmt: skip
    kill_at_checkpoint(emu, upgrade)
    from vmss_rollout.backends.journal import Journal

    with Journal(emu.journal) as journal:
        rollout = journal.history(None, limit=1)[0].id
    events = journal_events(emu, rollout)
    canary = [e for e in events if e["kind"] == "checkpoint"]
    assert [e["detail"] for e in canary] == ["1 of 10 done; baking 7200s"]
    move_back(emu, canary[0]["seq"], BAKE - LEFT)

    # 1. the bake in progress continues for what is left of it
    resume = emu.command("resume", rollout, "--yes", *FAST[:2])
    kill_at_checkpoint(emu, resume)
    events = journal_events(emu, rollout)
    second = [e for e in events if e["attempt"] == 2]
    resumed_at = next(e["wall_time"] for e in second if e["kind"] == "resumed")
    first_wave = next(e for e in second if e["kind"] == "wave_started")
    bake_started = next(e for e in events if e["kind"] == "checkpoint")["wall_time"]
    # not before the bake's end, and not a whole bake after the resume either
    assert first_wave["wall_time"] >= bake_started + BAKE
    assert first_wave["wall_time"] < resumed_at + LEFT + SLACK
    started = next(e for e in second if e["kind"] == "rollout_started")
    assert "1 checkpoint(s) passed, not repeated" in started["detail"]
    assert "s of the bake or pause left" in started["detail"]
    assert [e["detail"] for e in events if e["kind"] == "checkpoint"] == [
        "1 of 10 done; baking 7200s",
        "5 of 10 done; baking 7200s",
    ]

    # 2. both checkpoints passed and the second bake over: no checkpoint again
    half = [e for e in events if e["kind"] == "checkpoint"][-1]
    move_back(emu, half["seq"], BAKE + 1)
    result = emu.cli("resume", rollout, "--yes", "--json", *FAST[:2])
    assert result.returncode == 0, result.stderr
    events = journal_events(emu, rollout)
    third = [e for e in events if e["attempt"] == 3]
    assert not [e for e in third if e["kind"] == "checkpoint"]
    resumed_at = next(e["wall_time"] for e in third if e["kind"] == "resumed")
    first_wave = next(e for e in third if e["kind"] == "wave_started")
    assert first_wave["wall_time"] < resumed_at + SLACK  # no two hours' bake
    assert len([e for e in events if e["kind"] == "checkpoint"]) == 2
    with Journal(emu.journal) as journal:
        assert journal.get(rollout).state == "completed"
    # every instance on the target, each asked once over the three processes
    state = emu.state()
    assert all(f":{target} (" in i["model"] for i in state["instances"].values())
    assert emu.upgrade_requests() == Counter({str(i): 1 for i in range(N)})
