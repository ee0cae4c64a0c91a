"""The rollout journal: round trips, bookkeeping, history, concurrency,
permissions and surviving SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from vmss_rollout.backends.journal import (
    SCHEMA_VERSION,
    ActiveRolloutError,
    Journal,
    RolloutRecord,
    default_path,
    model_from_dict,
    model_to_dict,
)
from vmss_rollout.engine import EngineOptions, Event, EventKind, ImageReference, InputError
from vmss_rollout.engine.model import ModelVersion
from vmss_rollout.engine.options import Amount, Scope

SS = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web"
OTHER = SS.replace("/web", "/api")
T0 = 1_795_653_154.0  # 2026-11-26T00:32:34Z

PREVIOUS = ModelVersion(ImageReference("Canonical", "ubuntu-24_04-lts", "server", "1.0.0"))
TARGET = ModelVersion(ImageReference("Canonical", "ubuntu-24_04-lts", "server", "1.0.1"))


def start(journal: Journal, scale_set: str = SS, now: float = T0, strategy: str = "batch:size=2"):
    return journal.start(
        scale_set_id=scale_set,
        previous_model=model_to_dict(PREVIOUS),
        target_model=model_to_dict(TARGET),
        strategy=strategy,
        options=EngineOptions().to_mapping(),
        now=now,
    )


def ev(t: float, kind: EventKind, phase: str = "rolling", instances=(), wave=None, detail=""):
    return Event(t, kind, phase, tuple(instances), wave, detail)


# A realistic batch:size=2 rollout of 5 instances that halts on the third wave
# and rolls back (in sim time from 0; the journal gets wall time T0 + t).
SEQUENCE = [
    ev(0, EventKind.ROLLOUT_STARTED, "init", detail="batch:size=2 over 5 instances"),
    ev(0, EventKind.MODEL_UPDATE_REQUESTED, "updating_model", detail=str(TARGET)),
    ev(20, EventKind.MODEL_UPDATED, "rolling"),
    ev(20, EventKind.WAVE_STARTED, instances=("0", "1"), wave=1, detail="upgrade"),
    ev(90, EventKind.INSTANCE_UPGRADED, instances=("0",), wave=1),
    ev(100, EventKind.INSTANCE_HEALTHY, instances=("0",), wave=1),
    ev(110, EventKind.INSTANCE_HEALTHY, instances=("1",), wave=1),
    ev(110, EventKind.WAVE_COMPLETED, wave=1),
    ev(110, EventKind.WAVE_STARTED, instances=("2", "3"), wave=2, detail="upgrade"),
    ev(200, EventKind.INSTANCE_HEALTHY, instances=("2",), wave=2),
    ev(300, EventKind.INSTANCE_FAILED, instances=("3",), wave=2, detail="provisioning failed"),
    ev(300, EventKind.WAVE_COMPLETED, wave=2),
    ev(300, EventKind.WAVE_STARTED, instances=("4",), wave=3, detail="upgrade"),
    ev(400, EventKind.INSTANCE_UNHEALTHY, instances=("4",), wave=3, detail="health timeout"),
    ev(400, EventKind.WAVE_COMPLETED, wave=3),
    ev(400, EventKind.HALTED, "draining", detail="max-unhealthy-upgraded: 2 of 5 (40% > 20%)"),
]


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "state" / "journal.sqlite")
    yield j
    j.close()


# --- records ---------------------------------------------------------------------


def test_start_get_round_trip(journal: Journal) -> None:
    options = EngineOptions(
        scope=Scope(instances=frozenset({"1", "10", "2"})),
        max_unhealthy=10,
        pause=30,
        canary=Amount.parse("10%", "canary"),
        checkpoints=(25.0, 50.0),
        on_failure="rollback",
    )
    rec = journal.start(
        scale_set_id=SS,
        previous_model=model_to_dict(PREVIOUS),
        target_model=model_to_dict(TARGET),
        strategy="window:max-unavailable=3",
        options=options.to_mapping(),
        now=T0,
    )
    assert rec.id.startswith("r-20261126-003234-") and len(rec.id) == len("r-20261126-003234-3f9a")
    assert (rec.state, rec.reason, rec.started_at, rec.finished_at) == ("running", "", T0, None)
    assert (rec.waves, rec.upgraded, rec.failed) == (0, 0, 0)
    got = journal.get(rec.id)
    assert got == rec
    assert model_from_dict(got.previous_model) == PREVIOUS
    assert model_from_dict(got.target_model) == TARGET
    assert EngineOptions.from_mapping(got.options) == options
    assert json.loads(json.dumps(got.to_json())) == got.to_json()
    assert RolloutRecord(**got.to_json()) == got


def test_model_dicts() -> None:
    gallery = ModelVersion(
        ImageReference(id="/subscriptions/0/galleries/g/images/i"), "Standard_F4"
    )
    assert model_to_dict(gallery) == {
        "image": {"id": "/subscriptions/0/galleries/g/images/i"},
        "vm_size": "Standard_F4",
    }
    for model in (gallery, PREVIOUS, ModelVersion(ImageReference(uri="https://x/y.vhd"))):
        assert model_from_dict(json.loads(json.dumps(model_to_dict(model)))) == model
    with pytest.raises(InputError, match=r"model\.colour"):
        model_from_dict({"image": {}, "colour": "blue"})
    with pytest.raises(InputError, match=r"image\.version"):
        model_from_dict({"image": {"version": 3}})


def test_event_sequence_bookkeeping(journal: Journal) -> None:
    rec = start(journal)
    for event in SEQUENCE:
        journal.record_event(rec.id, event, T0 + event.time)
    assert journal.instance_outcomes(rec.id) == {
        "0": "done",
        "1": "done",
        "2": "done",
        "3": "failed",
        "4": "unhealthy",
    }
    waves = journal.waves(rec.id)
    assert [(w["wave"], w["instances"], w["started_at"], w["completed_at"]) for w in waves] == [
        (1, ["0", "1"], T0 + 20, T0 + 110),
        (2, ["2", "3"], T0 + 110, T0 + 300),
        (3, ["4"], T0 + 300, T0 + 400),
    ]
    assert {w["attempt"] for w in waves} == {1}
    now = journal.get(rec.id)
    assert (now.state, now.waves, now.upgraded, now.failed) == ("running", 3, 3, 2)
    assert now.reason.startswith("max-unhealthy-upgraded")  # HALTED stores the reason
    events = journal.events(rec.id)
    assert [e["kind"] for e in events] == [str(e.kind) for e in SEQUENCE]
    third = events[3]
    assert third["instances"] == ["0", "1"] and third["wave"] == 1 and third["phase"] == "rolling"
    assert (third["time"], third["wall_time"], third["detail"]) == (20, T0 + 20, "upgrade")

    # rollback re-upgrades the touched instances: outcomes follow, "upgraded" drops
    journal.record_event(rec.id, ev(410, EventKind.ROLLBACK_STARTED, "rollback_model"), T0 + 410)
    back = ("0", "1", "2", "3", "4")
    journal.record_event(
        rec.id, ev(420, EventKind.WAVE_STARTED, "rolling_back", back[:2], 4, "upgrade"), T0 + 420
    )
    assert journal.instance_outcomes(rec.id)["0"] == "started"
    for iid in back[:2]:
        journal.record_event(
            rec.id, ev(500, EventKind.INSTANCE_HEALTHY, "rolling_back", (iid,), 4), T0 + 500
        )
    journal.record_event(
        rec.id, ev(500, EventKind.WAVE_COMPLETED, "rolling_back", wave=4), T0 + 500
    )
    mid = journal.get(rec.id)
    assert (mid.waves, mid.upgraded, mid.failed) == (4, 1, 2)
    journal.record_event(rec.id, ev(900, EventKind.ROLLOUT_FINISHED, "finished"), T0 + 900)
    done = journal.finish(rec.id, "halted", "max-unhealthy-upgraded; rolled back", T0 + 901)
    assert (done.state, done.finished_at, done.reason) == (
        "halted",
        T0 + 901,
        "max-unhealthy-upgraded; rolled back",
    )
    assert journal.active(SS) is None
    with pytest.raises(InputError, match="is halted: not recording"):
        journal.record_event(rec.id, SEQUENCE[0], T0 + 1000)


def test_surge_outcome_belongs_to_the_old_instance(journal: Journal) -> None:
    rec = start(journal, strategy="surge:max-surge=1")
    journal.record_event(rec.id, ev(0, EventKind.WAVE_STARTED, instances=("3",), wave=1), T0)
    journal.record_event(rec.id, ev(5, EventKind.SURGE_CREATED, instances=("3", "7"), wave=1), T0)
    journal.record_event(
        rec.id, ev(9, EventKind.INSTANCE_HEALTHY, instances=("3", "7"), wave=1), T0
    )
    assert journal.instance_outcomes(rec.id) == {"3": "done"}
    assert journal.get(rec.id).upgraded == 1


def test_finish_states(journal: Journal) -> None:
    rec = start(journal)
    with pytest.raises(InputError, match="state must be one of"):
        journal.finish(rec.id, "running", "", T0)
    done = journal.finish(rec.id, "completed", "completed: 0 upgraded", T0 + 5)
    assert (done.state, done.finished_at) == ("completed", T0 + 5)
    with pytest.raises(InputError, match="is completed"):
        journal.finish(rec.id, "failed", "", T0 + 6)
    with pytest.raises(InputError, match="is completed"):
        journal.adopt(rec.id, T0 + 7)
    # the scale set is free again
    assert start(journal, now=T0 + 10).state == "running"


def test_unknown_id_names_it_and_recent_ids(journal: Journal) -> None:
    with pytest.raises(InputError, match=r"'r-nope'.*the journal is empty"):
        journal.get("r-nope")
    ids = []
    for k in range(7):
        rec = start(journal, scale_set=f"{SS}{k}", now=T0 + k)
        ids.append(rec.id)
    with pytest.raises(InputError) as info:
        journal.get("r-nope")
    message = str(info.value)
    assert "r-nope" in message and str(journal.path) in message
    assert all(i in message for i in ids[-5:]) and not any(i in message for i in ids[:2])
    for call in (journal.waves, journal.events, journal.instance_outcomes):
        with pytest.raises(InputError, match="r-nope"):
            call("r-nope")
    with pytest.raises(InputError, match="r-nope"):
        journal.record_event("r-nope", SEQUENCE[0], T0)


# --- one active rollout per scale set --------------------------------------------


def test_second_start_refuses_naming_the_running_one(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as first, Journal(path) as second:
        rec = start(first, strategy="batch:size=5")
        upper = SS.upper()  # ARM ids compare case-insensitively
        with pytest.raises(ActiveRolloutError) as info:
            start(second, scale_set=upper, now=T0 + 60)
        message = str(info.value)
        assert rec.id in message and "2026-11-26T00:32:34Z" in message
        assert "batch:size=5" in message
        assert info.value.rollout_id == rec.id and isinstance(info.value, InputError)
        assert second.active(upper) == rec
        assert start(second, scale_set=OTHER, now=T0 + 60).state == "running"
        assert len(second.history()) == 2


def test_racing_starts_only_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    barrier = threading.Barrier(6)
    results: list[object] = []

    def racer(k: int) -> None:
        with Journal(path) as journal:
            barrier.wait()
            try:
                results.append(start(journal, now=T0 + k).id)
            except ActiveRolloutError as exc:
                results.append(exc)

    threads = [threading.Thread(target=racer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1 and len(results) == 6
    assert all(e.rollout_id == winners[0] for e in results if isinstance(e, ActiveRolloutError))


def test_interrupt_and_adopt(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        rec = start(journal)
        journal.record_event(rec.id, SEQUENCE[3], T0 + 20)  # wave 1 starts: 0, 1
        stopped = journal.mark_interrupted(rec.id, "SIGTERM", T0 + 30)
        assert (stopped.state, stopped.reason, stopped.finished_at) == (
            "interrupted",
            "SIGTERM",
            T0 + 30,
        )
        assert journal.active(SS) is None and journal.latest(SS) == stopped
        assert journal.mark_interrupted(rec.id, "again", T0 + 31).reason == "SIGTERM"
        # an interrupted process may still flush what it observed
        journal.record_event(rec.id, SEQUENCE[5], T0 + 31)

    with Journal(path) as resumer:
        again = resumer.adopt(rec.id, T0 + 100)
        assert (again.state, again.reason, again.finished_at) == ("running", "", None)
        assert resumer.active(SS.lower()) == again
        # the new engine numbers waves from 1 again: a new attempt keeps both
        resumer.record_event(
            rec.id, ev(0, EventKind.WAVE_STARTED, instances=("1",), wave=1), T0 + 101
        )
        assert [(w["attempt"], w["wave"], w["instances"]) for w in resumer.waves(rec.id)] == [
            (1, 1, ["0", "1"]),
            (2, 1, ["1"]),
        ]
        kinds = [(e["kind"], e["attempt"]) for e in resumer.events(rec.id)]
        assert ("interrupted", 1) in kinds and ("resumed", 2) in kinds
        assert resumer.instance_outcomes(rec.id) == {"0": "done", "1": "started"}
        # another scale set's rollout cannot be adopted over a running one
        other = start(resumer, scale_set=OTHER, now=T0 + 200)
        resumer.finish(other.id, "halted", "gate", T0 + 201)
        blocker = start(resumer, scale_set=OTHER, now=T0 + 202)
        with pytest.raises(ActiveRolloutError, match=blocker.id):
            resumer.adopt(other.id, T0 + 203)


def test_stale_process_cannot_write_after_adoption(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as stale, Journal(path) as resumer:
        rec = start(stale)
        resumer.adopt(rec.id, T0 + 50)  # e.g. the first process looked dead
        with pytest.raises(InputError, match="resumed by another process"):
            stale.record_event(rec.id, SEQUENCE[0], T0 + 51)
        with pytest.raises(InputError, match="resumed by another process"):
            stale.finish(rec.id, "completed", "", T0 + 52)
        resumer.record_event(rec.id, SEQUENCE[0], T0 + 53)
        assert [e["kind"] for e in resumer.events(rec.id)] == ["resumed", "rollout_started"]


# --- history ---------------------------------------------------------------------


def test_history_order_filter_limit(journal: Journal) -> None:
    made = []
    for k in range(6):
        scale_set = SS if k % 2 == 0 else OTHER
        rec = start(journal, scale_set=scale_set, now=T0 + 100 * k)
        journal.finish(rec.id, "completed", "", T0 + 100 * k + 50)
        made.append(rec)
    assert [r.id for r in journal.history()] == [r.id for r in reversed(made)]
    assert [r.id for r in journal.history(SS.upper())] == [made[4].id, made[2].id, made[0].id]
    assert [r.id for r in journal.history(limit=2)] == [made[5].id, made[4].id]
    assert journal.history("/subscriptions/none") == []
    assert journal.latest(OTHER).id == made[5].id and journal.latest("nothing") is None
    with pytest.raises(InputError, match="limit"):
        journal.history(limit=0)


# --- files -----------------------------------------------------------------------


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VMSS_ROLLOUT_JOURNAL", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert default_path() == tmp_path / "home/.local/state/vmss-rollout/journal.sqlite"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the XDG spec says so
    assert default_path() == tmp_path / "home/.local/state/vmss-rollout/journal.sqlite"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg/vmss-rollout/journal.sqlite"
    monkeypatch.setenv("VMSS_ROLLOUT_JOURNAL", str(tmp_path / "explicit.db"))
    assert default_path() == tmp_path / "explicit.db"
    monkeypatch.setenv("VMSS_ROLLOUT_JOURNAL", "")
    assert default_path() == tmp_path / "xdg/vmss-rollout/journal.sqlite"
    with Journal() as journal:
        assert journal.path == tmp_path / "xdg/vmss-rollout/journal.sqlite"
        assert journal.path.exists()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "new" / "journal.sqlite"
        with Journal(path) as journal:
            start(journal)
            for p in (
                path,
                path.with_name("journal.sqlite-wal"),
                path.with_name("journal.sqlite-shm"),
            ):
                assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        # an existing journal with loose permissions is tightened; an existing
        # directory the user chose is left alone
        before = stat.S_IMODE(os.stat(tmp_path).st_mode)
        loose = tmp_path / "loose.sqlite"
        Journal(loose).close()
        os.chmod(loose, 0o644)
        Journal(loose).close()
        assert stat.S_IMODE(os.stat(loose).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path).st_mode) == before
    finally:
        os.umask(old)


def test_schema_versioned_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        rec = start(journal)
        assert journal.check()
    with Journal(path) as again:  # reopening does not recreate or lose anything
        assert again.get(rec.id) == rec
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(InputError, match="newer"):
        Journal(path)


def test_not_a_journal(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not SQLite " * 100)
    with pytest.raises(InputError, match=r"notes\.txt"):
        Journal(text)
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(InputError, match="not a vmss-rollout journal"):
        Journal(other)


def test_closed_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.close()
    journal.close()
    with pytest.raises(ValueError, match="closed"):
        journal.history()


# --- crash safety: SIGKILL at random moments -------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from vmss_rollout.engine import Event, EventKind
    from vmss_rollout.backends.journal import Journal

    path, scale_set = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    journal = Journal(path)
    active = journal.active(scale_set)
    if active is None:
        rid = journal.start(scale_set_id=scale_set, previous_model={"image": {}},
                            target_model={"image": {}}, strategy="window",
                            options={}, now=1e9).id
    else:
        rid = journal.adopt(active.id, now=1e9).id
    print("rollout", rid, flush=True)
    wave = 0
    for n in range(1_000_000):
        if n % 4 == 0:
            wave += 1
            ids = tuple(f"{wave}-{k}" for k in range(50))
            event = Event(n, EventKind.WAVE_STARTED, "rolling", ids, wave, "upgrade")
        elif n % 4 == 1:
            event = Event(n, EventKind.INSTANCE_HEALTHY, "rolling", (f"{wave}-0",), wave)
        elif n % 4 == 2:
            event = Event(n, EventKind.WAVE_COMPLETED, "rolling", (), wave, "x" * 3000)
        else:
            event = Event(n, EventKind.CHECKPOINT, "rolling", (), None, f"n={n}")
        journal.record_event(rid, event, 1e9 + n)
        print("committed", n, flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_sigkill_never_corrupts(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(20261126)
    path = tmp_path / "crash.sqlite"

    def run_child(journal_path: Path, kill_after: int | None) -> tuple[str | None, list[int]]:
        """Run the child until it reported ``kill_after`` commits (None: until it
        is ready), then SIGKILL it."""
        child = subprocess.Popen(
            [sys.executable, str(script), str(journal_path), SS],
            stdout=subprocess.PIPE,
            text=True,
        )
        rid, committed = None, []
        try:
            assert child.stdout is not None
            for line in child.stdout:
                word, _, rest = line.strip().partition(" ")
                if word == "rollout":
                    rid = rest
                elif word == "committed":
                    committed.append(int(rest))
                if (kill_after is None and word == "ready") or len(committed) == kill_after:
                    break
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            assert child.stdout is not None
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        return rid, committed

    # killed while it may be creating the journal: the file still opens fine
    early = tmp_path / "early.sqlite"
    run_child(early, None)
    with Journal(early) as journal:
        assert journal.check()
        assert start(journal).state == "running"

    rollout_id = None
    for _round in range(5):
        rid, committed = run_child(path, rng.randint(1, 40))
        assert rid is not None and committed
        rollout_id = rollout_id or rid
        assert rid == rollout_id  # each child adopted the same rollout
        with Journal(path) as journal:
            assert journal.check()
            rec = journal.active(SS)
            assert rec is not None and rec.id == rid and rec.state == "running"
            attempt = max(e["attempt"] for e in journal.events(rid))
            seen = [e["time"] for e in journal.events(rid) if e["attempt"] == attempt]
            seen = [int(t) for t in seen if t is not None]
            # everything the child reported is there, in order, and nothing torn:
            # the events it committed after the last line we read are whole too
            assert committed == list(range(len(committed)))
            assert seen == list(range(len(seen))) and len(seen) >= len(committed)
            waves = [w for w in journal.waves(rid) if w["attempt"] == attempt]
            assert len(waves) == (seen[-1] // 4 + 1 if seen else 0)
            assert all(len(w["instances"]) == 50 for w in waves)
            adopted = journal.adopt(rid, now=2e9)
            assert adopted.state == "running" and adopted.id == rid


# --------------------------------------------------------------------------- operations


def test_operations_are_journaled_apart_from_rollouts(tmp_path: Path) -> None:
    """``instances ACTION`` and ``scale`` rows: running until finished, newest
    first, per scale set; they neither block nor count as rollouts."""
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        delete = journal.start_operation(
            scale_set_id=SS,
            action="delete",
            request={"instances": ["3", "7"]},
            instances=["3", "7"],
            now=T0,
            driver="me@host:1",
        )
        assert delete.id.startswith("o-20261126-003234-") and delete.state == "running"
        assert delete.finished_at is None and delete.result == {}
        done = journal.finish_operation(delete.id, "completed", T0 + 42, result={"capacity": 8})
        assert (done.state, done.finished_at, done.result) == (
            "completed",
            T0 + 42,
            {"capacity": 8},
        )
        with pytest.raises(InputError, match="is completed: not recording"):
            journal.finish_operation(delete.id, "failed", T0 + 43)
        other = SS.replace("/web", "/api")
        scale = journal.start_operation(
            scale_set_id=other.upper(),
            action="scale",
            request={"capacity": 12, "previous": 10},
            instances=[],
            now=T0 + 60,
        )
        with pytest.raises(InputError, match="state must be one of"):
            journal.finish_operation(scale.id, "running", T0 + 61)
        journal.finish_operation(
            scale.id, "failed", T0 + 61, reason="Azure error: quota", instances=["10", "11"]
        )
        start(journal)  # a rollout of the same scale set starts regardless
        assert [o.action for o in journal.operations()] == ["scale", "delete"]
        assert [o.id for o in journal.operations(SS)] == [delete.id]
        failed = journal.operations(other)[0]  # ARM ids match case-insensitively
        assert (failed.state, failed.reason, failed.instances) == (
            "failed",
            "Azure error: quota",
            ["10", "11"],
        )
        assert json.loads(json.dumps(failed.to_json()))["request"] == {
            "capacity": 12,
            "previous": 10,
        }
        assert len(journal.history()) == 1
    with Journal(path) as again:
        assert again.operations(SS) == [done]


def test_a_version_2_journal_gains_the_operations_table(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        rec = start(journal)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE operations")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with Journal(path) as journal:
        assert journal.get(rec.id) == rec
        assert journal.operations() == []
        journal.start_operation(
            scale_set_id=SS, action="restart", request={}, instances=["1"], now=T0
        )
        assert journal.check()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    db.close()
