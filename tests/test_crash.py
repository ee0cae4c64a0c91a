"""Crash and resume: the `upgrade` process is killed with SIGKILL at moments
chosen by a seeded random generator over the event-log lines it prints (so
during the model update, inside a wave, between waves, or right at the end),
then `resume` finishes the rollout.

After every kill: `resume` exits 0; every instance ends on the target; no
instance received an upgrade request after it had reached the target (proved
from the emulator's request log and per-instance state history, ordered by
sequence numbers); the journal passes `Journal.check()` and says "completed".

SIGTERM and a first Ctrl-C stop after the wave in flight and record it; a
second Ctrl-C stops at once and still records the interruption.

The thorough profile (CI=true) kills at 24 moments, the quick one at 4.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import FAST, SCENARIO, Emulated

from vmss_rollout.backends.journal import Journal
from vmss_rollout.emulator.launch import emulator_process

N = 20
CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
KILLS = 24 if CI else 4
STRATEGIES = ("batch:size=6", "window:max-unavailable=4", "update-domain")
#: an event-log line: "HH:MM:SS kind instances detail"
EVENT = re.compile(r"^\d\d:\d\d:\d\d [a-z_]+")
#: every strategy above prints more event lines than this for 20 instances
#: (3 model lines, 2 per wave, 20 instance_healthy, rollout_finished)
MIN_LINES = 30


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("crash")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=N))
    with emulator_process(scenario, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        yield Emulated(info, tmp, scenario)


def latest_rollout(emu: Emulated) -> str:
    with Journal(emu.journal) as journal:
        return journal.history(None, limit=1)[0].id


def resume_and_check(emu: Emulated, rollout: str, target: str) -> None:
    resumed = emu.cli("resume", rollout, "--yes", "--json", *FAST[:2])
    assert resumed.returncode == 0, resumed.stderr
    with Journal(emu.journal) as journal:
        assert journal.check()
        assert journal.get(rollout).state == "completed"
    state = emu.state()
    assert len(state["instances"]) == N
    marker = f":{target} ("
    assert marker in state["model"]
    for iid, inst in state["instances"].items():
        assert marker in inst["model"] and inst["latest_model_applied"], (iid, inst)
        assert inst["health"] == "healthy" and inst["provisioning"] == "Succeeded", (iid, inst)
    assert emu.upgrades_after_target(marker) == []
    # everything that was upgraded was asked at least once, after this cycle's reset
    assert set(emu.upgrade_requests()) == set(state["instances"])


def test_sigkill_at_random_moments_then_resume(emu: Emulated) -> None:
    rng = random.Random(5)
    moments = []
    for cycle in range(KILLS):
        emu.admin("reset-counts", {})
        target = emu.next_target()
        spec = STRATEGIES[cycle % len(STRATEGIES)]
        kill_at = rng.randrange(1, MIN_LINES)  # the k-th event line
        seen = [0]

        def on_line(
            line: str, proc: subprocess.Popen[str], seen: list[int] = seen, kill_at: int = kill_at
        ) -> None:
            if EVENT.match(line):
                seen[0] += 1
                if seen[0] == kill_at:
                    moments.append(line.split()[1])
                    proc.kill()

        code, output = emu.watch_upgrade("--strategy", spec, on_line=on_line, target=target)
        assert code == -signal.SIGKILL, output
        rollout = latest_rollout(emu)
        with Journal(emu.journal) as journal:
            assert journal.check()
            assert journal.get(rollout).state == "running"  # as the killed process left it
        resume_and_check(emu, rollout, target)
    # the kills landed in every part of a rollout
    assert {"model_update_requested", "wave_started", "instance_healthy"} <= set(moments) or (
        not CI and len(moments) == KILLS
    ), moments


def _interrupt(emu: Emulated, signals: list[int]) -> tuple[int, str, str]:
    """Send the first signal when the first wave starts, each next one once the
    process said it is stopping (signals sent together would merge into one)."""
    emu.admin("reset-counts", {})
    target = emu.next_target()
    left = list(signals)

    def on_line(line: str, proc: subprocess.Popen[str]) -> None:
        first = "wave_started" in line and len(left) == len(signals)
        if left and (first or ("stopping after" in line and len(left) < len(signals))):
            proc.send_signal(left.pop(0))

    code, output = emu.watch_upgrade("--strategy", "batch:size=6", on_line=on_line, target=target)
    return code, output, target


def test_sigterm_stops_after_the_wave_in_flight_and_resume_finishes(emu: Emulated) -> None:
    code, output, target = _interrupt(emu, [signal.SIGTERM])
    assert code == 130, output
    assert "stopping after the instances in flight" in output
    rollout = output.split("vmss-rollout resume ")[1].split()[0]
    with Journal(emu.journal) as journal:
        record = journal.get(rollout)
        assert record.state == "interrupted" and record.upgraded == 6
    assert sum(emu.upgrade_requests().values()) == 6  # nothing more started
    resume_and_check(emu, rollout, target)


def test_a_second_ctrl_c_stops_at_once_and_still_records_it(emu: Emulated) -> None:
    code, output, target = _interrupt(emu, [signal.SIGINT, signal.SIGINT])
    assert code == 130, output
    assert "Traceback" not in output
    rollout = latest_rollout(emu)
    with Journal(emu.journal) as journal:
        assert journal.check()
        record = journal.get(rollout)
        assert record.state == "interrupted", record
        assert record.reason == "stopped at once (second Ctrl-C)"
        assert record.upgraded < 6  # it did not wait for the wave in flight
    resume_and_check(emu, rollout, target)


def test_resume_after_a_kill_before_the_model_update(emu: Emulated, tmp_path: Path) -> None:
    """The journal's target vs the live model: killed right after the rollout
    was journaled, before the model update went out (the emulator holds the
    model update back until the process is dead)."""
    emu.admin("reset-counts", {})
    target = emu.next_target()
    emu.faults(auth_failure="403-writes")  # any write is refused while we kill
    try:

        def on_line(line: str, proc: subprocess.Popen[str]) -> None:
            if "rollout_started" in line:
                proc.kill()

        code, output = emu.watch_upgrade(
            "--strategy", "batch:size=6", on_line=on_line, target=target
        )
    finally:
        emu.faults(auth_failure="")
    rollout = latest_rollout(emu)
    with Journal(emu.journal) as journal:
        state = journal.get(rollout).state
    if code != -signal.SIGKILL:
        # the refused model update won the race: nothing changed, the rollout failed
        assert code == 2 and state == "failed", output
        return
    assert state == "running"
    assert f":{target} (" not in emu.state()["model"]  # the model was never updated
    resume_and_check(emu, rollout, target)
