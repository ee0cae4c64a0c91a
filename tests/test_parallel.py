"""Parallel Monte Carlo: the same results, bit for bit, in this process, on a
local process pool and on a real Dask cluster (a ``dask scheduler`` and a
``dask worker`` started as processes on loopback)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from vmss_rollout.cli.app import app
from vmss_rollout.engine.errors import InputError
from vmss_rollout.sim import parallel
from vmss_rollout.sim.parallel import Study, plan_chunks, run_studies, run_study
from vmss_rollout.sim.runner import RunResult, run_many, summarize
from vmss_rollout.sim.scenario import Scenario

#: faults, zones and a canary: every random draw and engine path shows up in the events
SCENARIO = Scenario(
    instances=12,
    zones=("1", "2"),
    upgrade_failure=0.05,
    unhealthy_after_upgrade=0.05,
    upgrade="uniform(2m, 6m)",
    engine={"canary": "2", "bake": "5m", "max_unhealthy_upgraded": 50},
)
SPECS = ("window:max-unavailable=3", "batch:size=2")
RUNS = 24
SEED = 7


@pytest.fixture(autouse=True)
def _no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMSS_ROLLOUT_DISABLE_PLUGIN_AUTOLOAD", "1")


def _serial(record: bool) -> list[list[RunResult]]:
    return [
        run_study(SCENARIO, spec, runs=RUNS, seed=SEED, record=record, workers=1) for spec in SPECS
    ]


def _studies(record: bool) -> list[Study]:
    return [Study(SCENARIO, spec, RUNS, SEED, record=record) for spec in SPECS]


def _summaries(results: list[list[RunResult]]) -> str:
    return json.dumps(
        [summarize(spec, SEED, r) for spec, r in zip(SPECS, results, strict=True)], sort_keys=True
    )


def _assert_identical(got: list[list[RunResult]], want: list[list[RunResult]]) -> None:
    assert len(got) == len(want)
    for got_runs, want_runs in zip(got, want, strict=True):
        assert [r.seed for r in got_runs] == [r.seed for r in want_runs]
        # dataclass equality: every field, events, timeline, final state and requests included
        assert got_runs == want_runs
    assert _summaries(got) == _summaries(want)


# --------------------------------------------------------------------------- library


def test_serial_study_is_run_many() -> None:
    got = run_study(SCENARIO, SPECS[0], runs=RUNS, seed=SEED, workers=1)
    assert got == run_many(SCENARIO, SPECS[0], RUNS, SEED)
    # defaults: the scenario's runs and seed
    small = Scenario(instances=5, runs=3, seed=11)
    assert run_study(small, "one-at-a-time") == run_many(small, "one-at-a-time")


def test_recorded_runs_have_events() -> None:
    recorded = _serial(record=True)
    assert all(r.events and r.timeline and r.final for runs in recorded for r in runs)
    assert any(r.halted or r.failed for runs in recorded for r in runs)  # faults were drawn


@pytest.mark.parametrize("record", [False, True])
def test_process_pool_matches_serial(record: bool) -> None:
    _assert_identical(run_studies(_studies(record), workers=2), _serial(record))


def test_pool_with_fleet_matches_serial() -> None:
    from vmss_rollout.sim.runner import build

    _, scale_set = build(SCENARIO, 0)
    fleet = scale_set.read()[1]
    serial = run_study(SCENARIO, "zone", runs=10, seed=3, fleet=fleet, workers=1)
    pooled = run_study(SCENARIO, "zone", runs=10, seed=3, fleet=fleet, workers=2)
    assert pooled == serial


def test_chunks_cover_every_run_once() -> None:
    studies = [
        Study(SCENARIO, "window", 1, 1),
        Study(SCENARIO, "window", 0, 1),
        Study(Scenario(instances=500), "window", 37, 1),
        Study(SCENARIO, "batch", 1000, 1),
    ]
    for slots in (1, 2, 3, 8, 64):
        chunks = plan_chunks(studies, slots)
        for index, study in enumerate(studies):
            covered = sorted(i for c in chunks if c.index == index for i in range(c.start, c.stop))
            assert covered == list(range(study.runs))
        assert all(c.stop > c.start for c in chunks)
    # enough chunks to keep every slot busy on a big study
    assert len(plan_chunks([Study(SCENARIO, "window", 1000, 1)], 4)) >= 4


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_counts_every_run(workers: int) -> None:
    calls: list[tuple[int, int]] = []
    run_studies(_studies(False), workers=workers, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 2 * RUNS)
    assert calls[-1] == (2 * RUNS, 2 * RUNS)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_small_studies_run_serially_unless_workers_given(monkeypatch: pytest.MonkeyPatch) -> None:
    pools: list[int] = []
    original = parallel._run_on_pool

    def spy(workers: int, studies: Any, collect: Any) -> None:
        pools.append(workers)
        original(workers, studies, collect)

    monkeypatch.setattr(parallel, "_run_on_pool", spy)
    monkeypatch.setattr(parallel, "default_workers", lambda: 2)
    tiny = Scenario(instances=10)
    run_study(tiny, "window", runs=5)  # 50 instance-runs: below the threshold
    assert pools == []
    run_study(tiny, "window", runs=5, workers=2)  # explicit: a pool, however small
    assert pools == [2]
    runs = parallel.SERIAL_THRESHOLD // 10 + 1
    run_study(tiny, "window", runs=runs)  # above the threshold: every CPU
    assert pools == [2, 2]


def test_bad_worker_counts() -> None:
    for workers in (0, -1):
        with pytest.raises(InputError, match="--workers"):
            run_study(SCENARIO, "window", runs=2, workers=workers)
    with pytest.raises(InputError, match="--workers and --dask"):
        run_study(SCENARIO, "window", runs=2, workers=2, dask="tcp://127.0.0.1:1")


def test_missing_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails
    with pytest.raises(InputError) as info:
        run_study(SCENARIO, "window", runs=2, dask="tcp://127.0.0.1:1")
    assert str(info.value) == parallel.DASK_EXTRA_MESSAGE


def test_unreachable_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 0.5)
    with pytest.raises(InputError, match=r"^--dask tcp://127\.0\.0\.1:1: cannot reach"):
        run_study(SCENARIO, "window", runs=2, dask="tcp://127.0.0.1:1")


# --------------------------------------------------------------------------- a real Dask cluster


def _dask_command(kind: str) -> list[str]:
    script = Path(sys.executable).parent / "dask"
    if script.exists():
        return [str(script), kind]
    found = shutil.which("dask")
    if found:
        return [found, kind]
    return [sys.executable, "-m", f"distributed.cli.dask_{kind}"]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def dask_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    distributed = pytest.importorskip("distributed")
    work = tmp_path_factory.mktemp("dask")
    scheduler_file = work / "scheduler.json"
    env = {**os.environ, "VMSS_ROLLOUT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    processes: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (work / f"{name}.log").open("wb")
        logs.append(log)
        process = subprocess.Popen(args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    try:
        scheduler = start(
            "scheduler",
            [
                *_dask_command("scheduler"),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--scheduler-file",
                str(scheduler_file),
                "--no-dashboard",
            ],
        )
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            if scheduler.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "dask scheduler did not start:\n" + (work / "scheduler.log").read_text()
                )
            time.sleep(0.05)
        start(
            "worker",
            [
                *_dask_command("worker"),
                "--scheduler-file",
                str(scheduler_file),
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--local-directory",
                str(work / "scratch"),
            ],
        )
        # the scheduler file may be half written: retry reading it until it parses
        while True:
            try:
                address = json.loads(scheduler_file.read_text())["address"]
                break
            except (ValueError, KeyError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with distributed.Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.scheduler_info()["workers"]
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)
        for log in logs:
            log.close()


@pytest.mark.parametrize("record", [False, True])
def test_dask_cluster_matches_serial(dask_address: str, record: bool) -> None:
    _assert_identical(run_studies(_studies(record), dask=dask_address), _serial(record))


def test_dask_progress(dask_address: str) -> None:
    calls: list[tuple[int, int]] = []
    run_study(
        SCENARIO, "window", runs=5, seed=1, dask=dask_address, progress=lambda *a: calls.append(a)
    )
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)


def test_cli_on_dask(dask_address: str) -> None:
    args = ("compare", "--instances", "10", "--runs", "6", "--json")
    local = _run(*args, "--workers", "1")
    remote = _run(*args, "--dask", dask_address)
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    assert remote.stdout == local.stdout


# --------------------------------------------------------------------------- the CLI


def _run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_cli_json_is_identical_for_any_worker_count(command: str) -> None:
    args = (command, "--instances", "12", "--runs", "30", "--failure-rate", "0.05", "--json")
    one = _run(*args, "--workers", "1")
    two = _run(*args, "--workers", "2")
    default = _run(*args)
    assert one.exit_code == 0 and two.exit_code == 0 and default.exit_code == 0, two.output
    assert two.stdout == one.stdout
    assert default.stdout == one.stdout
    json.loads(one.stdout)


def test_cli_unreachable_dask_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 0.5)
    result = _run("simulate", "--runs", "3", "--dask", "tcp://127.0.0.1:1")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --dask tcp://127.0.0.1:1:")
    assert result.stdout == ""


def test_cli_bad_workers() -> None:
    result = _run("compare", "--runs", "3", "--workers", "0")
    assert result.exit_code == 2
    assert "--workers" in result.stderr
