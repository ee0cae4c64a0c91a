"""The journal file itself failing (issue 8, case 9), and the journal's side
of one rollout per scale set: schema migration, unfinished rollouts blocking
a new one, `abandon`, a live driver refusing a second `resume`.

End to end (the CLI as its own process, the emulator through the real SDK):
a full disk mid-rollout (RLIMIT_FSIZE, SIGXFSZ ignored, as a full file
system answers), a journal path that is a directory, an unwritable file, the
file deleted mid-rollout. Each: one line, the documented exit code (2 before
any change, 3 after, with the resume command), no traceback.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmss_rollout.backends.journal import (
    SCHEMA_VERSION,
    ActiveRolloutError,
    Journal,
    JournalError,
)
from vmss_rollout.engine.errors import InputError

SS = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web"
T0 = 1_795_000_000.0
MODEL = {"image": {"publisher": "P", "offer": "O", "sku": "S", "version": "1.0.0"}}
TARGET = {"image": {"publisher": "P", "offer": "O", "sku": "S", "version": "2.0.0"}}


def start(journal: Journal, now: float = T0, **kwargs: str) -> str:
    return journal.start(
        scale_set_id=SS,
        previous_model=MODEL,
        target_model=TARGET,
        strategy="batch:size=5",
        options={},
        now=now,
        **kwargs,
    ).id


# --------------------------------------------------------------------------- the journal alone

#: the version-1 schema (as released), to prove the migration
V1 = """
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY, scale_set_id TEXT NOT NULL, scale_set_key TEXT NOT NULL,
    previous_model TEXT NOT NULL, target_model TEXT NOT NULL, strategy TEXT NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'completed', 'halted', 'interrupted',
        'failed')),
    reason TEXT NOT NULL DEFAULT '', started_at REAL NOT NULL, finished_at REAL,
    attempt INTEGER NOT NULL DEFAULT 1, updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX rollouts_one_running ON rollouts (scale_set_key) WHERE state = 'running';
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, rollout_id TEXT NOT NULL REFERENCES rollouts (id),
    attempt INTEGER NOT NULL, kind TEXT NOT NULL, phase TEXT NOT NULL,
    instances TEXT NOT NULL, wave INTEGER, detail TEXT NOT NULL, time REAL,
    wall_time REAL NOT NULL
);
CREATE TABLE waves (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id), attempt INTEGER NOT NULL,
    wave INTEGER NOT NULL, phase TEXT NOT NULL, action TEXT NOT NULL,
    instances TEXT NOT NULL, started_at REAL NOT NULL, completed_at REAL,
    PRIMARY KEY (rollout_id, attempt, wave)
) WITHOUT ROWID;
CREATE TABLE instance_outcomes (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id), instance_id TEXT NOT NULL,
    outcome TEXT NOT NULL, phase TEXT NOT NULL, attempt INTEGER NOT NULL, wave INTEGER,
    replacement TEXT, detail TEXT NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (rollout_id, instance_id)
) WITHOUT ROWID;
PRAGMA application_id = 1986884434;
PRAGMA user_version = 1;
"""


def test_a_version_1_journal_is_migrated_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1)
    row = "INSERT INTO rollouts VALUES (?, ?, ?, '{}', '{}', 'window', '{}', ?, '', ?, NULL, 1, ?)"
    db.execute(row, ("r-old", SS, SS.lower(), "interrupted", T0, T0))
    db.execute(row, ("r-new", SS, SS.lower(), "completed", T0 + 10, T0 + 10))
    db.execute(
        "INSERT INTO instance_outcomes VALUES ('r-old', '3', 'done', 'rolling', 1, 1, NULL, '', ?)",
        (T0,),
    )
    db.commit()
    db.close()
    with Journal(path) as journal:
        assert journal.check()
        assert [r.id for r in journal.history()] == ["r-new", "r-old"]
        assert journal.instance_outcomes("r-old") == {"3": "done"}
        assert journal.unfinished(SS).id == "r-old"  # type: ignore[union-attr]
        assert journal.get("r-old").unique_id == ""
        # the new state passes the rebuilt CHECK constraint
        assert journal.abandon("r-old", "by hand", T0 + 20).state == "abandoned"
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    db.close()
    with Journal(path) as journal:  # through 2 to 3: the operations table is there
        assert journal.operations() == []


def test_an_unfinished_rollout_blocks_a_new_one_until_abandoned(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        first = start(journal, unique_id="u-1", driver="me@here:1")
        journal.mark_interrupted(first, "--no-wait: started, not followed", T0 + 1)
        with pytest.raises(ActiveRolloutError) as info:
            start(journal, now=T0 + 2)
        message = str(info.value)
        assert f"vmss-rollout resume {first}" in message
        assert f"vmss-rollout abandon {first}" in message and "2.0.0" in message
        record = journal.abandon(first, "by the operator", T0 + 3)
        assert (record.state, record.unique_id) == ("abandoned", "u-1")
        assert [e["kind"] for e in journal.events(first)][-1] == "abandoned"
        with pytest.raises(InputError, match="abandoned"):
            journal.adopt(first, T0 + 4)
        assert journal.get(start(journal, now=T0 + 5)).state == "running"


def test_adopt_refuses_while_the_recorded_driver_is_alive(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        rid = start(journal, driver="me@here:41")
        with pytest.raises(InputError, match="me@here:41, which is still alive"):
            journal.adopt(rid, T0 + 1, driver="me@here:42", is_alive=lambda d: True)
        with pytest.raises(InputError, match="still alive"):
            journal.abandon(rid, "x", T0 + 1, is_alive=lambda d: True)
        adopted = journal.adopt(rid, T0 + 1, driver="me@here:42", is_alive=lambda d: False)
        assert adopted.driver == "me@here:42" and adopted.state == "running"


@pytest.mark.parametrize("what", ["file", "directory"])
def test_a_deleted_journal_is_re_created_with_the_record_and_a_warning(
    tmp_path: Path, what: str
) -> None:
    path = tmp_path / "state" / "j.sqlite"
    warnings: list[str] = []
    with Journal(path, on_warning=warnings.append) as journal:
        rid = start(journal)
        journal.mark_interrupted(rid, "x", T0 + 1)
        if what == "file":
            path.unlink()
        else:
            shutil.rmtree(path.parent)
        journal.adopt(rid, T0 + 2)  # the next write notices and re-creates the file
        assert path.exists() and len(warnings) == 1
        assert "deleted while in use" in warnings[0] and rid in warnings[0]
        journal.finish(rid, "completed", "", T0 + 3)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    with Journal(path) as again:
        assert again.check()
        record = again.get(rid)
        assert record.state == "completed"
        assert [e["kind"] for e in again.events(rid)] == ["interrupted", "resumed"]


def test_a_directory_is_not_a_journal(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="is a directory"):
        Journal(tmp_path)


# --------------------------------------------------------------------------- end to end

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import FAST, RG, SCENARIO, Emulated  # noqa: E402

from vmss_rollout.emulator.launch import emulator_process  # noqa: E402

N = 20
SLOW = ["--strategy", "batch:size=5", "--pause", "1s"]


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulated]:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=N))
    with emulator_process(
        scenario, tmp_path, "--time-scale", "600", "--retry-after", "0.05"
    ) as info:
        yield Emulated(info, tmp_path, scenario)


def _one_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_journal_path_that_is_a_directory_exits_2_changing_nothing(
    emu: Emulated, tmp_path: Path
) -> None:
    emu.admin("reset-counts", {})
    result, _ = emu.upgrade("--strategy", "batch:size=5", "--journal", str(tmp_path))
    assert result.returncode == 2
    assert "is a directory" in _one_error(result.stderr)
    assert emu.accepted_writes() == []


def test_an_unwritable_journal_exits_2_changing_nothing(emu: Emulated, tmp_path: Path) -> None:
    path = tmp_path / "ro.sqlite"
    Journal(path).close()
    os.chmod(path, 0o400)
    locked = os.access(path, os.W_OK) is False
    if not locked and shutil.which("chattr"):  # root ignores modes: make it immutable
        locked = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    if not locked:
        pytest.skip("cannot make a file unwritable for this user")
    try:
        emu.admin("reset-counts", {})
        result, _ = emu.upgrade("--strategy", "batch:size=5", "--journal", str(path))
        assert result.returncode == 2
        assert "not writable" in _one_error(result.stderr)
        assert emu.accepted_writes() == []
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def _full_disk(limit: int) -> None:
    """In the child: files cannot grow past ``limit`` bytes; the write fails with
    EFBIG instead of killing the process (SIGXFSZ ignored), as a full disk fails."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_mid_rollout_exits_3_with_the_resume_command(
    emu: Emulated, tmp_path: Path
) -> None:
    path = tmp_path / "full.sqlite"
    Journal(path).close()
    target = emu.next_target()
    command = emu.command(
        "upgrade", "-g", RG, "-n", emu.name, "--image-version", target, "--yes",
        "--journal", str(path), *FAST, "--strategy", "batch:size=2",
    )  # fmt: skip
    result = subprocess.run(
        command,
        env=emu.env,
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=lambda: _full_disk(160 * 1024),
    )
    assert result.returncode == 3, result.stderr
    line = _one_error(result.stderr)
    assert f"journal {path}: cannot write" in line and "already changed" in line
    rollout = line.split("vmss-rollout resume ")[1].split("`")[0]
    assert f":{target} (" in emu.state()["model"]  # it was mid-rollout
    # room again: resume finishes it, upgrading no instance twice
    resumed = emu.cli("resume", rollout, "--yes", "--journal", str(path), *FAST[:2])
    assert resumed.returncode == 0, resumed.stderr
    assert all(f":{target} (" in s["model"] for s in emu.state()["instances"].values())
    assert not {i: n for i, n in emu.upgrade_requests().items() if n > 1}
    assert emu.upgrades_after_target(f":{target} (") == []


def test_a_journal_deleted_mid_rollout_is_re_created_with_a_warning(
    emu: Emulated, tmp_path: Path
) -> None:
    path = tmp_path / "gone.sqlite"
    deleted: list[bool] = []

    def on_line(line: str, proc: subprocess.Popen[str]) -> None:
        if "wave_completed" in line and not deleted:
            path.unlink()
            deleted.append(True)

    code, output = emu.watch_upgrade(*SLOW, "--journal", str(path), on_line=on_line)
    assert code == 0 and deleted, output
    assert f"warning: journal {path} was deleted while in use; re-created it" in output
    with Journal(path) as journal:
        assert journal.check()
        [record] = journal.history()
        assert record.state == "completed" and record.upgraded == N
        assert set(journal.instance_outcomes(record.id).values()) == {"done"}
