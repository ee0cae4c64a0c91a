"""One rollout per scale set (issue 8), end to end: the CLI, as its own
processes, drives the emulator through the real azure-mgmt-compute SDK as
operators would: two `upgrade`s with two journals (same and different
targets, staggered and at the same moment), a model changed under a running
rollout, `--no-wait` then a second `upgrade`, `abandon`, two `resume`s at once,
a stale `resume`, a re-created scale set, `--switch-to-manual` with a freeze,
and a second SIGTERM.

Each checks the exit code and the one-line message, and that no instance was
asked to upgrade twice.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import FAST, RG, SCENARIO, Emulated

from vmss_rollout.backends.journal import Journal
from vmss_rollout.backends.lease import TAG, LeaseInfo
from vmss_rollout.emulator.launch import emulator_process

N = 20
#: resume takes the journal's engine options: only the poll interval
POLL = ["--poll-interval", "0.05:0.3"]
#: slow enough for a second operator to act mid-rollout: the pause between waves is
#: on the emulator's clock, 20 simulated minutes are 2 s of wall time at x600
SLOW = ["--strategy", "batch:size=5", "--pause", "20m"]


def _start(tmp: Path, scenario_text: str) -> Iterator[Emulated]:
    scenario = tmp / "scenario.toml"
    scenario.write_text(scenario_text)
    with emulator_process(scenario, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        yield Emulated(info, tmp, scenario)


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulated]:
    yield from _start(tmp_path, SCENARIO.format(instances=N))


def upgrade_args(emu: Emulated, target: str, journal: Path, *args: str) -> list[str]:
    return emu.command(
        "upgrade",
        "-g",
        RG,
        "-n",
        emu.name,
        "--image-version",
        target,
        "--yes",
        "--journal",
        str(journal),
        *FAST,
        *args,
    )


def run(emu: Emulated, command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=emu.env, capture_output=True, text=True, timeout=180)


def lease_tags(emu: Emulated) -> dict[str, str]:
    with emu.sdk() as client:
        return dict(client.virtual_machine_scale_sets.get(RG, emu.name).tags or {})


def assert_once(emu: Emulated) -> None:
    twice = {i: n for i, n in emu.upgrade_requests().items() if n > 1}
    assert not twice, f"instances asked to upgrade more than once: {twice}"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --------------------------------------------------------------------------- case 1


@pytest.mark.parametrize("same_target", [True, False], ids=["same-target", "other-target"])
def test_a_second_operator_with_another_journal_is_refused_mid_rollout(
    emu: Emulated, tmp_path: Path, same_target: bool
) -> None:
    """A runs; after A's first wave B runs with its own journal: B exits 2 naming
    A's rollout, A completes, no instance is upgraded twice."""
    a_target = "3.0.0"
    b_target = a_target if same_target else "4.0.0"
    second: list[subprocess.CompletedProcess[str]] = []

    def on_line(line: str, proc: subprocess.Popen[str]) -> None:
        if "wave_completed" in line and not second:
            second.append(run(emu, upgrade_args(emu, b_target, tmp_path / "b.sqlite", *SLOW)))

    code, output = emu.watch_upgrade(
        *SLOW, "--journal", str(tmp_path / "a.sqlite"), on_line=on_line, target=a_target
    )
    assert code == 0, output
    [b] = second
    assert b.returncode == 2, b.stderr
    [line] = error_lines(b.stderr)
    with Journal(tmp_path / "a.sqlite") as journal:
        [a_record] = journal.history()
    a_id = a_record.id
    assert a_record.state == "completed"
    assert "is leased" in line and a_id in line and "3.0.0" in line and "heartbeat" in line
    assert "Traceback" not in b.stderr
    state = emu.state()
    assert ":3.0.0 (" in state["model"]
    assert all(":3.0.0 (" in s["model"] for s in state["instances"].values())
    assert_once(emu)
    with Journal(tmp_path / "b.sqlite") as journal:
        assert journal.history() == []  # refused before it started anything
    lease = LeaseInfo.parse(lease_tags(emu))
    assert lease is not None and lease.state == "released" and lease.rollout_id == a_id


@pytest.mark.parametrize("targets", [("5.0.0", "6.0.0"), ("5.0.0", "5.0.0")], ids=["other", "same"])
def test_two_operators_at_the_same_moment_only_one_rolls(
    emu: Emulated, tmp_path: Path, targets: tuple[str, str]
) -> None:
    """Both start together with their own journals: the lease, written under
    If-Match, lets exactly one through; the other exits 2."""
    procs = [
        subprocess.Popen(
            upgrade_args(emu, target, tmp_path / f"{who}.sqlite", "--strategy", "batch:size=5"),
            env=emu.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who, target in zip("ab", targets, strict=True)
    ]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [err for _, _, err in results]
    winner = targets[0] if results[0][0] == 0 else targets[1]
    loser_err = next(err for code, _, err in results if code == 2)
    assert len(error_lines(loser_err)) == 1 and "Traceback" not in loser_err
    state = emu.state()
    assert all(f":{winner} (" in s["model"] for s in state["instances"].values())
    assert_once(emu)


def _change_model_behind(emu: Emulated, version: str) -> None:
    """Another tool (no lease, no vmss-rollout) sets the image version."""
    from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

    with emu.sdk() as client:
        vmss = client.virtual_machine_scale_sets.get(RG, emu.name).as_dict()
        ref = vmss["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
        ref["version"] = version
        body = {
            "properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": ref}}}
        }
        client.virtual_machine_scale_sets.begin_update(
            RG, emu.name, VirtualMachineScaleSetUpdate(body)
        ).result()


def test_a_model_changed_under_a_running_rollout_halts_it_at_once(
    emu: Emulated, tmp_path: Path
) -> None:
    """Someone else (another tool, no lease) changes the model mid-rollout: the
    rollout halts at once with the reason, exit 1; it starts no more upgrades."""
    changed: list[int] = []

    def on_line(line: str, proc: subprocess.Popen[str]) -> None:
        if "wave_completed" in line and not changed:
            changed.append(sum(emu.upgrade_requests().values()))
            _change_model_behind(emu, "9.0.0")

    code, output = emu.watch_upgrade(
        *SLOW, "--journal", str(tmp_path / "a.sqlite"), on_line=on_line, target="7.0.0"
    )
    assert code == 1, output
    assert "halted at once: the scale set model was changed to" in output and "9.0.0" in output
    assert sum(emu.upgrade_requests().values()) == changed[0]  # no wave after the change
    with Journal(tmp_path / "a.sqlite") as journal:
        [record] = journal.history()
        assert record.state == "halted" and "changed to" in record.reason


# --------------------------------------------------------------------------- case 2, abandon


def test_no_wait_blocks_a_second_upgrade_until_resumed_or_abandoned(emu: Emulated) -> None:
    started, data = emu.upgrade("--strategy", "batch:size=5", "--no-wait")
    assert started.returncode == 0, started.stderr
    first = data["rollout"]["id"]
    assert LeaseInfo.parse(lease_tags(emu)).state == "stopped"  # type: ignore[union-attr]
    second, _ = emu.upgrade("--strategy", "batch:size=5")
    assert second.returncode == 2
    [line] = error_lines(second.stderr)
    assert first in line and f"vmss-rollout resume {first}" in line
    assert f"vmss-rollout abandon {first}" in line
    # another operator, another journal: the lease on the scale set refuses too
    third = run(
        emu, upgrade_args(emu, "8.0.0", emu.tmp / "other.sqlite", "--strategy", "batch:size=5")
    )
    assert third.returncode == 2
    assert "unfinished rollout" in third.stderr and f"abandon {first}" in third.stderr
    assert ":2.0.0 (" in emu.state()["model"]  # nobody moved the model

    abandoned = emu.cli("abandon", "-g", RG, "-n", emu.name)
    assert abandoned.returncode == 0, abandoned.stderr
    assert f"rollout {first} abandoned" in abandoned.stderr
    with Journal(emu.journal) as journal:
        assert journal.get(first).state == "abandoned"
    lease = LeaseInfo.parse(lease_tags(emu))
    assert lease is not None and lease.state == "released"
    again = emu.cli("abandon", first)
    assert again.returncode == 2 and "nothing to abandon" in again.stderr
    # resuming an abandoned rollout is refused; a new upgrade now runs
    resumed = emu.cli("resume", first, "--yes", *POLL)
    assert resumed.returncode == 2 and "was abandoned" in resumed.stderr
    emu.version -= 1
    fresh, data = emu.upgrade("--strategy", "batch:size=5")
    assert fresh.returncode == 0 and data["completed"], fresh.stderr


def test_a_resume_never_moves_the_model_back(emu: Emulated, tmp_path: Path) -> None:
    """Rollout X to 2.0.0 is left unfinished; another operator takes over with
    another journal and rolls 3.0.0: resuming X is refused, exit 2."""
    started, data = emu.upgrade("--strategy", "batch:size=5", "--no-wait")
    assert started.returncode == 0, started.stderr
    stale = data["rollout"]["id"]
    taken = run(
        emu,
        upgrade_args(
            emu, "3.0.0", tmp_path / "other.sqlite", "--strategy", "batch:size=5", "--take-over"
        ),
    )
    assert taken.returncode == 0, taken.stderr
    resumed = emu.cli("resume", stale, "--yes", *POLL)
    assert resumed.returncode == 2
    [line] = error_lines(resumed.stderr)
    assert "3.0.0" in line and "older target" in line and f"abandon {stale}" in line
    assert all(":3.0.0 (" in s["model"] for s in emu.state()["instances"].values())


# --------------------------------------------------------------------------- case 3


def test_resume_by_name_after_a_finished_rollback_says_nothing_to_resume(
    emu: Emulated,
) -> None:
    emu.faults(bad_image=True)
    halted, data = emu.upgrade(
        "--strategy", "batch:size=2", "--on-failure", "rollback", "--health-timeout", "2m"
    )
    assert halted.returncode == 1 and data["rolled_back"], halted.stderr
    emu.faults(bad_image=False)
    resumed = emu.cli("resume", "-g", RG, "-n", emu.name, "--yes", *POLL)
    assert resumed.returncode == 2
    [line] = error_lines(resumed.stderr)
    assert line.startswith("error: nothing to ") and "was rolled back" in line


# --------------------------------------------------------------------------- case 4


@pytest.mark.parametrize("attempt", [1, 2, 3])  # the issue saw the race in 2 of 3 runs
def test_two_resumes_at_once_only_one_drives(emu: Emulated, attempt: int) -> None:
    target = emu.next_target()

    def kill_after_first_wave(line: str, proc: subprocess.Popen[str]) -> None:
        if "wave_completed" in line:
            proc.kill()

    code, output = emu.watch_upgrade(*SLOW, on_line=kill_after_first_wave, target=target)
    assert code == -signal.SIGKILL, output
    procs = [
        subprocess.Popen(
            emu.command("resume", "-g", RG, "-n", emu.name, "--yes", *POLL),
            env=emu.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=180), p.communicate()[1]) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "Traceback" not in loser and len(error_lines(loser)) == 1
    assert_once(emu)
    assert emu.upgrades_after_target(f":{target} (") == []
    assert all(f":{target} (" in s["model"] for s in emu.state()["instances"].values())


# --------------------------------------------------------------------------- case 6


def test_resume_refuses_a_scale_set_re_created_under_the_same_name(emu: Emulated) -> None:
    started, data = emu.upgrade("--strategy", "batch:size=5", "--no-wait")
    assert started.returncode == 0, started.stderr
    rollout = data["rollout"]["id"]
    with Journal(emu.journal) as journal:
        journaled = journal.get(rollout).unique_id
    with emu.sdk() as client:
        live = client.virtual_machine_scale_sets.get(RG, emu.name).as_dict()["properties"][
            "uniqueId"
        ]
    assert journaled and journaled == live
    # deleted and created again under the same name: another uniqueId
    emu.admin("delete-scale-set", {})
    recreated = emu.admin("restore-scale-set", {"recreate": True})["uniqueId"]
    assert recreated != journaled
    before = emu.writes()
    resumed = emu.cli("resume", rollout, "--yes", *POLL)
    assert resumed.returncode == 2
    [line] = error_lines(resumed.stderr)
    assert "deleted and re-created" in line and f"abandon {rollout}" in line
    assert emu.writes() == before  # nothing changed


# --------------------------------------------------------------------------- case 7


def _rolling(tmp_path: Path) -> Iterator[Emulated]:
    text = SCENARIO.format(instances=10).replace(
        "[scale_set]\n", '[scale_set]\nupgrade_policy = "Rolling"\n'
    )
    yield from _start(tmp_path, text)


@pytest.fixture
def rolling(tmp_path: Path) -> Iterator[Emulated]:
    yield from _rolling(tmp_path)


def _on_target(state: dict[str, Any], target: str) -> int:
    return sum(f":{target} (" in s["model"] for s in state["instances"].values())


def test_switch_to_manual_freeze_leaves_manual_and_the_bad_image_where_it_stopped(
    rolling: Emulated,
) -> None:
    emu = rolling
    emu.faults(bad_image=True)
    result, data = emu.upgrade(
        "--strategy",
        "one-at-a-time",
        "--switch-to-manual",
        "--on-failure",
        "freeze",
        "--health-timeout",
        "2m",
    )
    target = f"{emu.version}.0.0"
    assert result.returncode == 1, result.stderr
    assert data["halted"]
    text = emu.cli("status", "-g", RG, "-n", emu.name, "--json").stdout
    assert '"upgrade_policy": "Manual"' in text
    touched = _on_target(emu.state(), target)
    assert touched == 1
    # the platform starts nothing: watch the emulator's clock move on
    t0 = emu.state()["t_sim"]
    for _ in range(200):
        state = emu.state()
        assert state["rolling_upgrade"] is None and _on_target(state, target) == touched
        if state["t_sim"] - t0 > 900:  # 15 simulated minutes
            break
    else:
        pytest.fail("the emulator's clock did not move")


def test_switch_to_manual_rollback_restores_rolling_once_all_are_back(rolling: Emulated) -> None:
    emu = rolling
    emu.faults(bad_image=True)
    result = run(
        emu,
        upgrade_args(
            emu, emu.next_target(), emu.journal, "--strategy", "one-at-a-time",
            "--switch-to-manual", "--on-failure", "rollback", "--health-timeout", "2m",
        ),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "upgrade policy restored to Rolling" in result.stderr
    state = emu.state()
    assert state["upgrade_mode"] == "Rolling" and _on_target(state, f"{emu.version}.0.0") == 0


# --------------------------------------------------------------------------- signals, tags


def test_a_second_sigterm_ends_the_process_at_once(emu: Emulated) -> None:
    sent: list[int] = []

    def on_line(line: str, proc: subprocess.Popen[str]) -> None:
        if "wave_started" in line and not sent:
            sent.append(1)
            proc.send_signal(signal.SIGTERM)
        elif "stopping after" in line and len(sent) == 1:
            sent.append(2)
            proc.send_signal(signal.SIGTERM)

    code, output = emu.watch_upgrade(*SLOW, on_line=on_line)
    assert code == 130 and len(sent) == 2, output
    assert "Traceback" not in output
    with Journal(emu.journal) as journal:
        [record] = journal.history()
        assert record.state == "interrupted"
        assert record.reason == "stopped at once (second SIGTERM)"
        assert record.upgraded < 5  # it did not wait for the wave in flight


def test_a_tags_only_patch_leaves_instances_on_the_latest_model(emu: Emulated) -> None:
    """The lease is a tag: writing it must not put instances off the latest model
    (tags are not part of virtualMachineProfile)."""
    from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

    before = emu.state()
    assert all(s["latest_model_applied"] for s in before["instances"].values())
    with emu.sdk() as client:
        client.virtual_machine_scale_sets.begin_update(
            RG, emu.name, VirtualMachineScaleSetUpdate({"tags": {TAG: "x", "team": "web"}})
        ).result()
    after = emu.state()
    assert after["etag"] != before["etag"]  # the write moved the etag
    assert after["instances"] == before["instances"]


# --------------------------------------------------------------------------- heartbeat, take-over


def _write_lease(emu: Emulated, value: str) -> None:
    from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

    with emu.sdk() as client:
        client.virtual_machine_scale_sets.begin_update(
            RG,
            emu.name,
            VirtualMachineScaleSetUpdate({"tags": {TAG: value, "team": "web"}}),
        ).result()


def test_the_heartbeat_renews_the_lease_while_the_rollout_runs(emu: Emulated) -> None:
    beats: list[float] = []

    def on_line(line: str, proc: subprocess.Popen[str]) -> None:
        if "wave_completed" in line:
            lease = LeaseInfo.parse(lease_tags(emu))
            assert lease is not None
            if lease.state == "running":  # (the last line may come after the release)
                beats.append(lease.beat)

    saved = emu.env.get("VMSS_ROLLOUT_LEASE_TTL")
    emu.env["VMSS_ROLLOUT_LEASE_TTL"] = "2"  # renewed every 0.4 s
    try:
        code, output = emu.watch_upgrade(*SLOW, on_line=on_line)
    finally:
        emu.env.pop("VMSS_ROLLOUT_LEASE_TTL")
        if saved is not None:
            emu.env["VMSS_ROLLOUT_LEASE_TTL"] = saved
    assert code == 0, output
    assert len(beats) >= 2 and beats[-1] > beats[0]  # renewed between waves (2 s pauses)
    tags = lease_tags(emu)
    assert LeaseInfo.parse(tags).state == "released"  # type: ignore[union-attr]


def test_an_expired_lease_of_another_machine_needs_take_over(emu: Emulated) -> None:
    old = "2026-01-01T00:00:00Z"
    _write_lease(emu, f"r-elsewhere;ops@elsewhere:7;{old};{old};300;running")
    refused, _ = emu.upgrade("--strategy", "batch:size=5")
    assert refused.returncode == 2
    [line] = error_lines(refused.stderr)
    assert "r-elsewhere" in line and "expired" in line and "--take-over" in line
    assert ":1.0.0 (" in emu.state()["model"]
    taken, data = emu.upgrade("--strategy", "batch:size=5", "--take-over")
    assert taken.returncode == 0 and data["completed"], taken.stderr
    tags = lease_tags(emu)
    assert tags["team"] == "web"  # the other tags were sent back
    assert LeaseInfo.parse(tags).rollout_id == data["rollout"]["id"]  # type: ignore[union-attr]


def test_a_live_lease_of_another_machine_is_never_taken_over(emu: Emulated) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _write_lease(emu, f"r-elsewhere;ops@elsewhere:7;{now};{now};300;running")
    emu.admin("reset-counts", {})
    refused, _ = emu.upgrade("--strategy", "batch:size=5", "--take-over")
    assert refused.returncode == 2
    [line] = error_lines(refused.stderr)
    assert "is leased" in line and "ops@elsewhere:7" in line
    assert emu.writes() == 0


def test_on_policy_rolling_a_failed_platform_upgrade_is_not_restarted_by_the_lease(
    rolling: Emulated,
) -> None:
    """azure-rolling with a bad image: the platform's rolling upgrade stops on
    its gate with instances off the model; releasing the lease then would be a
    generic model update that restarts it, so the lease is left to expire."""
    emu = rolling
    emu.faults(bad_image=True)
    result, _ = emu.upgrade("--strategy", "azure-rolling", "--health-timeout", "2m")
    assert result.returncode == 1, result.stderr
    state = emu.state()
    assert state["rolling_upgrade"] not in (None, "RollingForward")
    assert "stays until it expires" in result.stderr and "--take-over" in result.stderr
    touched = _on_target(state, f"{emu.version}.0.0")
    for _ in range(50):
        again = emu.state()
        assert again["rolling_upgrade"] == state["rolling_upgrade"]
        assert _on_target(again, f"{emu.version}.0.0") == touched


def test_a_resumed_switch_to_manual_rollout_restores_rolling_when_it_completes(
    rolling: Emulated,
) -> None:
    emu = rolling
    started, data = emu.upgrade("--strategy", "batch:size=2", "--switch-to-manual", "--no-wait")
    assert started.returncode == 0, started.stderr
    assert any("left Manual while the rollout is unfinished" in n for n in data["notes"])
    assert emu.state()["upgrade_mode"] == "Manual"  # the platform rolls nothing meanwhile
    resumed = emu.cli("resume", data["rollout"]["id"], "--yes", *POLL)
    assert resumed.returncode == 0, resumed.stderr
    assert "upgrade policy restored to Rolling" in resumed.stderr
    state = emu.state()
    assert state["upgrade_mode"] == "Rolling"
    assert _on_target(state, f"{emu.version}.0.0") == 10
    assert_once(emu)


def test_the_lease_never_launders_a_model_change_it_did_not_plan(emu: Emulated) -> None:
    """The plan read the model; another tool changes it before the lease is
    written: the lease's 412 re-read must not hand the rollout a fresh etag for
    a model it never saw (its model PATCH would overwrite the change)."""
    from vmss_rollout.backends.azure import AzureBackend, connect
    from vmss_rollout.backends.lease import Lease
    from vmss_rollout.engine.errors import InputError

    with emu.sdk():  # the emulator's environment (CA bundle, identity endpoint)
        client, counter, clock = connect(emu.info["subscription"], emu.info["endpoint"])
        backend = AzureBackend(client, RG, emu.name, counter, clock=clock)
        scale_set, _ = backend.read()
        _change_model_behind(emu, "9.0.0")
        lease = Lease(backend, "r-plan", scale_set.model, allowed=[scale_set.model])
        with pytest.raises(InputError, match=r"changed since it was read .*9\.0\.0"):
            lease.acquire(scale_set)
    assert LeaseInfo.parse(lease_tags(emu)) is None  # nothing written
