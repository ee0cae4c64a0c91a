"""Faults, end to end: the CLI drives the emulator through the real SDK while
the emulator throttles, fails, drops connections, fails operations, fails or
silences instances, serves a bad image, changes the model behind the
rollout's back, loses the scale set or some instances, or grows.

Each test checks the documented outcome (docs/faults.md: exit code and
message), that the journal and the emulator's state agree afterwards, and that
no instance was lost or asked twice.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import FAST, RG, SCENARIO, Emulated, last_json

from vmss_rollout.backends.journal import Journal
from vmss_rollout.emulator.launch import emulator_process

N = 30


def _start(
    tmp: Path, instances: int, *args: str, upgrade: str = "fixed(60s)"
) -> Iterator[Emulated]:
    scenario = tmp / "scenario.toml"
    text = SCENARIO.format(instances=instances)
    scenario.write_text(text.replace('upgrade = "fixed(60s)"', f'upgrade = "{upgrade}"'))
    with emulator_process(
        scenario, tmp, "--time-scale", "600", "--retry-after", "0.05", *args
    ) as info:
        yield Emulated(info, tmp, scenario)


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    yield from _start(tmp_path_factory.mktemp("faults"), N)


@pytest.fixture
def clean(emu: Emulated) -> Iterator[Emulated]:
    """The shared emulator with no faults and fresh request counts."""
    emu.admin("reset-counts", {})
    yield emu
    emu.faults(
        throttle_rate=0.0,
        error_rate=0.0,
        error_burst=0,
        drop_rate=0.0,
        drop_burst=0,
        lro_failure_rate=0.0,
        upgrade_failure=0.0,
        silent_health=False,
        concurrent_change_after=None,
    )


def outcomes(emu: Emulated, rollout_id: str) -> dict[str, str]:
    with Journal(emu.journal) as journal:
        assert journal.check()
        return journal.instance_outcomes(rollout_id)


def record(emu: Emulated, rollout_id: str) -> Any:
    with Journal(emu.journal) as journal:
        return journal.get(rollout_id)


def rollout_id_in(text: str) -> str:
    return "r-" + text.split("r-", 1)[1].split()[0].rstrip("`;:,.")


def assert_agree(emu: Emulated, rollout_id: str, instances: int) -> None:
    """The journal's outcome of every instance matches the emulator's state, and
    the scale set has the expected number of instances (none lost)."""
    state = emu.state()["instances"]
    assert len(state) == instances, sorted(state)
    target = f":{emu.version}.0.0 ("
    for iid, outcome in outcomes(emu, rollout_id).items():
        if outcome == "gone":
            assert iid not in state
            continue
        inst = state[iid]
        if outcome == "done":
            assert target in inst["model"] and inst["latest_model_applied"], (iid, inst)
            assert inst["health"] == "healthy" and inst["provisioning"] == "Succeeded"
        elif outcome == "failed":
            assert inst["provisioning"] == "Failed", (iid, inst)
        elif outcome == "unhealthy":
            assert inst["reported_health"] != "healthy" or target not in inst["model"], inst


def on_target(emu: Emulated) -> dict[str, bool]:
    target = f":{emu.version}.0.0 ("
    return {
        iid: target in i["model"] and i["latest_model_applied"] and i["health"] == "healthy"
        for iid, i in emu.state()["instances"].items()
    }


def once_each(emu: Emulated, ids: Any = None) -> None:
    ids = [str(i) for i in (range(N) if ids is None else ids)]
    assert emu.upgrade_requests() == Counter(dict.fromkeys(ids, 1))


# --------------------------------------------------------------------------- API faults


def test_throttling_on_30_percent_of_requests_is_retried(clean: Emulated) -> None:
    emu = clean
    emu.faults(throttle_rate=0.3, throttle_retry_after=0.05)
    result, data = emu.upgrade("--strategy", "batch:size=10")
    assert result.returncode == 0, result.stderr
    assert data["completed"] and data["upgraded"] == N
    assert emu.admin("requests")["by_status"].get("429", 0) > 3
    once_each(emu)
    assert all(on_target(emu).values())
    assert_agree(emu, data["rollout"]["id"], N)


def test_bursts_of_500_and_503_are_retried(clean: Emulated) -> None:
    emu = clean
    bursts = [0]

    def burst(line: str, proc: subprocess.Popen[str]) -> None:
        if "wave_started" in line and bursts[0] < 2:
            bursts[0] += 1
            emu.faults(error_burst=2)

    code, output = emu.watch_upgrade("--strategy", "batch:size=10", on_line=burst)
    assert code == 0, output
    statuses = emu.admin("requests")["by_status"]
    assert statuses.get("500", 0) >= 1 and statuses.get("503", 0) >= 1, statuses
    once_each(emu)
    assert_agree(emu, rollout_id_in(output), N)


def test_dropped_connections_are_retried_without_asking_an_instance_twice(
    clean: Emulated,
) -> None:
    emu = clean
    # the first write is the model update; after it, a wave's upgrade request
    emu.faults(drop_rate=0.1, drop_burst=1)

    def drop(line: str, proc: subprocess.Popen[str]) -> None:
        if "model_updated" in line:
            emu.faults(drop_burst=1)

    code, output = emu.watch_upgrade("--strategy", "batch:size=10", on_line=drop)
    assert code == 0, output
    log = emu.admin("requests")["log"]
    dropped = [e["operation"] for e in log if e["dropped"]]
    assert "vmss.patch" in dropped and "vmss.manualupgrade" in dropped, dropped
    once_each(emu)  # the lost upgrade request did start its instances: not sent again
    assert all(on_target(emu).values())
    assert_agree(emu, rollout_id_in(output), N)


def test_long_running_operations_that_end_failed_do_not_matter(clean: Emulated) -> None:
    emu = clean
    emu.faults(lro_failure_rate=1.0)
    result, data = emu.upgrade("--strategy", "batch:size=15")
    assert result.returncode == 0, result.stderr
    assert data["completed"] and data["upgraded"] == N
    once_each(emu)
    assert_agree(emu, data["rollout"]["id"], N)


# --------------------------------------------------------------------------- instance faults


def test_an_instance_whose_upgrade_fails_halts_then_resume_retries_it(clean: Emulated) -> None:
    emu = clean
    emu.faults(upgrade_failure=1.0)
    result, data = emu.upgrade("--strategy", "one-at-a-time", "--only-instances", "3,4")
    assert result.returncode == 1, result.stderr
    assert data["halted"] and data["reason"].startswith("max-unhealthy-upgraded: 1 of 1")
    rollout = data["rollout"]["id"]
    assert outcomes(emu, rollout) == {"3": "failed"}  # frozen: 4 never started
    assert record(emu, rollout).state == "halted"
    assert_agree(emu, rollout, N)
    emu.faults(upgrade_failure=0.0)
    resumed = emu.cli("resume", rollout, "--yes", "--json", *FAST[:2])
    assert resumed.returncode == 0, resumed.stderr
    assert outcomes(emu, rollout) == {"3": "done", "4": "done"}
    assert emu.upgrade_requests() == Counter({"3": 2, "4": 1})
    assert_agree(emu, rollout, N)


def test_an_instance_that_never_reports_health_times_out(clean: Emulated) -> None:
    emu = clean
    emu.faults(silent_health=True)
    result, data = emu.upgrade(
        "--strategy", "one-at-a-time", "--only-instances", "5", "--health-timeout", "1s"
    )
    assert result.returncode == 1, result.stderr
    assert data["halted"] and data["failed"] == 1
    rollout = data["rollout"]["id"]
    assert outcomes(emu, rollout) == {"5": "unhealthy"}
    with Journal(emu.journal) as journal:
        details = [
            e["detail"] for e in journal.events(rollout) if e["kind"] == "instance_unhealthy"
        ]
    assert details == ["not healthy 1s after its upgrade"]
    assert_agree(emu, rollout, N)


def test_a_concurrent_model_change_mid_rollout_does_not_stop_it(clean: Emulated) -> None:
    emu = clean
    etag = emu.state()["etag"]
    emu.faults(concurrent_change_after=1)
    result, data = emu.upgrade("--strategy", "batch:size=10")
    assert result.returncode == 0, result.stderr
    assert data["completed"]
    assert emu.state()["etag"] >= etag + 2  # our model update, then the other client's
    once_each(emu)
    assert_agree(emu, data["rollout"]["id"], N)


# --------------------------------------------------------------------------- bad image


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Emulated]:
    yield from _start(tmp_path, 10)


@pytest.mark.parametrize("on_failure", ["freeze", "rollback"])
def test_a_bad_image_halts_after_the_first_wave(small: Emulated, on_failure: str) -> None:
    emu = small
    before = emu.state()["model"]
    emu.faults(bad_image=True)
    result, data = emu.upgrade(
        "--strategy", "batch:size=2", "--on-failure", on_failure, "--health-timeout", "2m"
    )
    assert result.returncode == 1, result.stderr
    assert data["halted"] and data["reason"].startswith("max-unhealthy-upgraded: 2 of 2")
    rollout = data["rollout"]["id"]
    state = emu.state()
    healthy = [i for i, s in state["instances"].items() if s["health"] == "healthy"]
    if on_failure == "freeze":
        assert f":{emu.version}.0.0 (" in state["model"]
        assert outcomes(emu, rollout) == {"0": "unhealthy", "1": "unhealthy"}
        assert sorted(healthy, key=int) == [str(i) for i in range(2, 10)]
        assert_agree(emu, rollout, 10)
    else:
        assert data["rolled_back"]
        assert state["model"] == before  # the previous model, on every instance
        assert len(healthy) == 10
        assert all(s["latest_model_applied"] for s in state["instances"].values())
        assert outcomes(emu, rollout) == {"0": "done", "1": "done"}  # (rolled back)


# --------------------------------------------------------------------------- topology changes


@pytest.fixture
def topo(tmp_path: Path) -> Iterator[Emulated]:
    yield from _start(tmp_path, N)


def test_the_scale_set_deleted_mid_rollout_stops_with_exit_3(topo: Emulated) -> None:
    emu = topo
    deleted = [False]

    def delete(line: str, proc: subprocess.Popen[str]) -> None:
        if "wave_started" in line and not deleted[0]:
            deleted[0] = True
            emu.admin("delete-scale-set", {})

    code, output = emu.watch_upgrade("--strategy", "batch:size=10", on_line=delete)
    assert code == 3, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: ") and "not found" in last and "vmss-rollout resume r-" in last
    rollout = rollout_id_in(last.split("resume", 1)[1])
    rec = record(emu, rollout)
    assert rec.state == "interrupted" and rec.reason.startswith("Azure error:")
    # the scale set comes back (it was a test): resume finishes, nothing asked twice
    emu.admin("restore-scale-set", {})
    resumed = emu.cli("resume", rollout, "--yes", "--json", *FAST[:2])
    assert resumed.returncode == 0, resumed.stderr
    once_each(emu)
    assert all(on_target(emu).values())
    assert_agree(emu, rollout, N)


@pytest.fixture
def slow_topo(tmp_path: Path) -> Iterator[Emulated]:
    """Upgrades of 20 simulated minutes (2 s of wall time at x600): a change made
    through the SDK (a new client, a token, a request) lands while a wave is in
    flight, whose every wait the CLI makes on the emulator's clock."""
    yield from _start(tmp_path, N, upgrade="fixed(20m)")


def test_instances_deleted_mid_rollout_are_gone_not_failed(slow_topo: Emulated) -> None:
    emu = slow_topo
    deleted = [False]

    def delete(line: str, proc: subprocess.Popen[str]) -> None:
        if "wave_started" in line and not deleted[0]:
            deleted[0] = True
            # autoscale removes one instance in flight and one not yet started
            with emu.sdk() as client:
                client.virtual_machine_scale_sets.begin_delete_instances(
                    RG, emu.name, {"instanceIds": ["0", "29"]}
                ).result()

    code, output = emu.watch_upgrade("--strategy", "batch:size=10", on_line=delete)
    assert code == 0, output
    rollout = rollout_id_in(output)
    journal = outcomes(emu, rollout)
    assert journal["0"] == journal["29"] == "gone"
    assert Counter(journal.values()) == {"done": 28, "gone": 2}
    assert all(on_target(emu).values())
    assert emu.upgrade_requests()["29"] == 0
    assert max(emu.upgrade_requests().values()) == 1
    assert_agree(emu, rollout, N - 2)


def test_a_scale_out_mid_rollout_is_not_upgraded_again(topo: Emulated) -> None:
    from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

    emu = topo
    emu.admin("reset-counts", {})
    before = set(emu.state()["instances"])
    grown = [False]

    def grow(line: str, proc: subprocess.Popen[str]) -> None:
        if "model_updated" in line and not grown[0]:
            grown[0] = True
            with emu.sdk() as client:
                client.virtual_machine_scale_sets.begin_update(
                    RG,
                    emu.name,
                    VirtualMachineScaleSetUpdate({"sku": {"capacity": len(before) + 3}}),
                ).result()

    code, output = emu.watch_upgrade("--strategy", "batch:size=10", on_line=grow)
    assert code == 0, output
    state = emu.state()["instances"]
    new = set(state) - before
    assert len(new) == 3
    requests = emu.upgrade_requests()
    assert not any(requests[i] for i in new)  # created on the target: never upgraded
    assert requests == Counter(dict.fromkeys(before, 1))
    assert all(on_target(emu).values())
    assert_agree(emu, rollout_id_in(output), len(before) + 3)


def test_fault_knobs_are_validated(clean: Emulated) -> None:
    import requests

    url = f"{clean.info['endpoint']}/_emulator/faults"
    verify = clean.info["env"]["REQUESTS_CA_BUNDLE"]
    for body, needle in (
        ({"drop_rate": 2}, "drop_rate: expected a probability"),
        ({"error_burst": -1}, "error_burst: expected a whole number >= 0"),
        ({"auth_failure": "500"}, "auth_failure: expected one of"),
    ):
        response = requests.post(url, json=body, verify=verify, timeout=10)
        assert response.status_code == 400 and needle in json.dumps(response.json())


# --------------------------------------------------------------------------- the fixes, unit tests


def _fleet(n: int) -> list[Any]:
    from vmss_rollout.engine import ImageReference, Instance, ModelVersion

    old = ModelVersion(ImageReference("Canonical", "ubuntu", "server", "1.0.0"))
    # after the model update: not on the latest model
    return [Instance(str(i), i % 5, i % 3, model=old, latest_model_applied=False) for i in range(n)]


def test_resume_follows_instances_already_updating_instead_of_asking_again() -> None:
    from vmss_rollout.engine import (
        ImageReference,
        ModelVersion,
        ProvisioningState,
        Rollout,
        StartUpgrade,
    )
    from vmss_rollout.strategies.registry import make

    new = ModelVersion(ImageReference("Canonical", "ubuntu", "server", "2.0.0"))
    fleet = _fleet(6)
    fleet[0] = fleet[0].evolve(provisioning=ProvisioningState.UPDATING)  # the killed wave
    fleet[1] = fleet[1].evolve(provisioning=ProvisioningState.UPDATING)  # someone else's
    rollout = Rollout(new, new, fleet, make("batch:size=2"))  # the model is already updated
    step = rollout.step(0)
    assert not [a for a in step.actions if isinstance(a, StartUpgrade)]  # lock step: wait
    assert "2 already updating" in rollout.events[0].detail
    done = fleet[0].evolve(
        model=new, latest_model_applied=True, provisioning=ProvisioningState.SUCCEEDED
    )
    elsewhere = fleet[1].evolve(provisioning=ProvisioningState.SUCCEEDED)  # not our upgrade
    rollout.observe(1, [done, elsewhere])
    starts = [a.instance_ids for a in rollout.step(1).actions if isinstance(a, StartUpgrade)]
    assert starts == [("2", "3")]
    assert "0" not in rollout.view.pending and "1" in rollout.view.pending


def test_an_instance_failed_on_the_target_is_still_to_do() -> None:
    from vmss_rollout.engine import ImageReference, ModelVersion, ProvisioningState, Rollout
    from vmss_rollout.strategies.registry import make

    new = ModelVersion(ImageReference("Canonical", "ubuntu", "server", "2.0.0"))
    fleet = _fleet(3)
    fleet[2] = fleet[2].evolve(model=new, provisioning=ProvisioningState.FAILED)
    rollout = Rollout(new, new, fleet, make("one-at-a-time"))
    assert set(rollout.view.pending) == {"0", "1", "2"}


def test_a_batch_larger_than_the_scope_is_refused_before_a_real_rollout() -> None:
    from vmss_rollout.engine.errors import InputError
    from vmss_rollout.engine.rollout import check_strategy_scope
    from vmss_rollout.strategies.registry import make

    with pytest.raises(InputError, match=r"batch:size: 50 is larger than the scope \(30"):
        check_strategy_scope(make("batch:size=50"), 30)
    check_strategy_scope(make("batch:size=30"), 30)
    check_strategy_scope(make("batch:size=50"), 0)  # nothing to do: not an error
    check_strategy_scope(make("window:max-unavailable=50"), 30)  # a window just caps


class _Client:
    """Just enough of ComputeManagementClient for instance actions."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.sent: list[list[str]] = []
        self.virtual_machine_scale_sets = self

    def begin_update_instances(self, rg: str, name: str, body: Any, **kwargs: Any) -> Any:
        self.sent.append(list(body["instanceIds"]))
        if self.failures:
            raise self.failures.pop(0)
        # an LROPoller without polling: result() is the first response (none here)
        return type("NoPolling", (), {"result": lambda self: None})()


def test_a_lost_upgrade_request_is_resent_only_for_instances_it_did_not_start() -> None:
    from azure.core.exceptions import ServiceResponseError

    from vmss_rollout.backends.azure import AzureBackend
    from vmss_rollout.engine import ProvisioningState

    client = _Client([ServiceResponseError("Connection aborted.")])
    sleeps: list[float] = []
    backend = AzureBackend(client, RG, "web", backoff=0.5, sleep=sleeps.append)  # type: ignore[arg-type]
    fleet = _fleet(4)
    fleet[0] = fleet[0].evolve(provisioning=ProvisioningState.UPDATING)  # the lost request did
    fleet = fleet[:3]  # instance 3 was deleted meanwhile
    backend.list_instances = lambda: fleet  # type: ignore[method-assign]
    backend.start_upgrade(["0", "1", "3"])
    assert client.sent == [["0", "1", "3"], ["1"]]
    assert sleeps == [0.5] and backend.changed


def test_retries_are_bounded_and_back_off_then_exit_3() -> None:
    from azure.core.exceptions import ServiceResponseError

    from vmss_rollout.backends.azure import AzureBackend
    from vmss_rollout.engine.errors import BackendError

    client = _Client([ServiceResponseError("Connection aborted.") for _ in range(9)])
    sleeps: list[float] = []
    backend = AzureBackend(client, RG, "web", attempts=4, backoff=1.0, sleep=sleeps.append)  # type: ignore[arg-type]
    backend.list_instances = lambda: _fleet(2)  # type: ignore[method-assign]
    with pytest.raises(
        BackendError, match=r"connection closed without an answer.*after 4 attempts"
    ):
        backend.start_upgrade(["0", "1"])
    assert sleeps == [1.0, 2.0, 4.0] and len(client.sent) == 4


def test_retry_after_is_honoured() -> None:
    from vmss_rollout.backends.azure import retry_after

    class Failed(Exception):
        def __init__(self, headers: dict[str, str]) -> None:
            self.response = type("R", (), {"headers": headers})()

    assert retry_after(Failed({"retry-after-ms": "250"})) == 0.25
    assert retry_after(Failed({"retry-after": "3"})) == 3.0
    assert retry_after(Failed({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) is None
    assert retry_after(Failed({})) is None


def test_a_rollout_killed_while_rolling_back_resumes_the_rollback(small: Emulated) -> None:
    """After a SIGKILL during a rollback, `resume` finishes the rollback: it must
    never re-apply the image that failed."""
    import signal

    emu = small
    before = emu.state()["model"]
    emu.faults(bad_image=True)

    def kill_in_rollback(line: str, proc: subprocess.Popen[str]) -> None:
        if "rollback_started" in line:
            proc.send_signal(signal.SIGKILL)

    code, output = emu.watch_upgrade(
        "--strategy",
        "batch:size=4",
        "--on-failure",
        "rollback",
        "--health-timeout",
        "2m",
        on_line=kill_in_rollback,
    )
    assert code == -signal.SIGKILL, output
    with Journal(emu.journal) as journal:
        rollout = journal.history()[0].id  # killed before it could print its id
    assert record(emu, rollout).state == "running"
    # the image is still bad: a resume that rolled forward would fail the checks below
    resumed = emu.cli("resume", rollout, "--yes", "--json", *FAST[:2])
    assert resumed.returncode == 1, resumed.stderr  # a rolled-back rollout did not complete
    data = last_json(resumed.stdout)
    assert data["rolled_back"] and not data["completed"]
    rec = record(emu, rollout)
    assert rec.state == "halted" and rec.reason.endswith("; rolled back")
    assert rec.reason.startswith("max-unhealthy-upgraded")
    state = emu.state()
    assert state["model"] == before
    assert all(s["latest_model_applied"] for s in state["instances"].values())
