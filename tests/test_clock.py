"""Rehearsals on the emulator's clock (issue 11, item 2).

The ARM emulator announces its simulated time on every response; the CLI then
runs every wait (poll interval, pause, bake, health timeout, retry backoff) and
every timestamp (journal, live view, ``-o json``) in the emulator's time, so a
rehearsal is the real rollout sped up. Through the real SDK, the CLI as its own
process against an emulator process; the clock's own rules on a fake wall
clock. No wall-clock sleeps: wall time is only measured.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
from emulated import RG, SCENARIO, Emulated

from vmss_rollout.backends.clock import (
    TIME_HEADER,
    TIME_SCALE_HEADER,
    Clock,
    is_azure_cloud,
)
from vmss_rollout.backends.journal import Journal
from vmss_rollout.emulator.launch import emulator_process

N = 4
#: emulated seconds a request's round trip may add at the slow emulator's scale (60):
#: 0.5 s of wall time on a loaded machine
SLACK_S = 30.0


def _emulator(tmp: Any, scale: str) -> Iterator[Emulated]:
    pytest.importorskip("azure.mgmt.compute")
    pytest.importorskip("uvicorn")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=N))
    with emulator_process(scenario, tmp, "--time-scale", scale) as info:
        yield Emulated(info, tmp, scenario)


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    """Simulated time x600: a 10-minute bake is a second of wall time."""
    yield from _emulator(tmp_path_factory.mktemp("clock600"), "600")


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    """Simulated time x60: a request's round trip is a few simulated seconds, so
    the spacing of requests can be measured to seconds."""
    yield from _emulator(tmp_path_factory.mktemp("clock60"), "60")


def emulated_now(emu: Emulated) -> tuple[float, float]:
    """(the emulator's announced time, its simulated time ``t_sim``) of one answer."""
    response = requests.get(
        f"{emu.info['endpoint']}/_emulator/state",
        verify=emu.info["env"]["REQUESTS_CA_BUNDLE"],
        timeout=10,
    )
    response.raise_for_status()
    return float(response.headers[TIME_HEADER]), float(response.json()["t_sim"])


def upgrade(emu: Emulated, *args: str) -> tuple[Any, float]:
    """``upgrade`` with the defaults (no FAST options: every duration is the real one);
    returns the process result and its wall time."""
    started = time.monotonic()
    result = emu.cli(
        "upgrade", "-g", RG, "-n", emu.name, "--image-version", emu.next_target(),
        "--yes", *args,
    )  # fmt: skip
    return result, time.monotonic() - started


def last_rollout(emu: Emulated) -> tuple[Any, list[dict[str, Any]]]:
    from vmss_rollout.backends.journal import Journal

    with Journal(emu.journal) as journal:
        record = journal.history(None, limit=1)[0]
        return record, journal.events(record.id)


# --------------------------------------------------------------------------- the emulator


def test_every_response_announces_the_emulators_clock_errors_included(slow: Emulated) -> None:
    before, t_sim = emulated_now(slow)
    epoch = before - t_sim
    verify = slow.info["env"]["REQUESTS_CA_BUNDLE"]
    # an ARM error (no token): the clock is announced on it too
    refused = requests.get(
        f"{slow.info['endpoint']}/subscriptions/{slow.info['subscription']}/resourceGroups/{RG}"
        f"/providers/Microsoft.Compute/virtualMachineScaleSets/{slow.name}?api-version=2024-11-01",
        verify=verify,
        timeout=10,
    )
    assert refused.status_code == 401
    announced = float(refused.headers[TIME_HEADER])
    assert float(refused.headers[TIME_SCALE_HEADER]) == 60.0
    after, t_after = emulated_now(slow)
    assert before <= announced <= after
    # the same clock as the emulator's simulated time (and its JSON timestamps)
    assert after - epoch == pytest.approx(t_after, abs=1e-3)


# --------------------------------------------------------------------------- rehearsals


def test_a_rehearsals_bake_follows_the_emulators_clock(fast: Emulated) -> None:
    before, _ = emulated_now(fast)
    result, wall = upgrade(
        fast, "--strategy", "batch:size=2", "--canary", "1", "--bake", "10m", "-o", "json"
    )
    after, _ = emulated_now(fast)
    assert result.returncode == 0, result.stderr
    # ten simulated minutes of bake (and the upgrades' minutes) in seconds of wall time
    assert wall < 60, f"took {wall:.1f}s of wall time"
    record, events = last_rollout(fast)
    assert record.state == "completed"
    checkpoint = next(e for e in events if e["kind"] == "checkpoint")
    healthy = next(e for e in events if e["kind"] == "instance_healthy")
    waves = [e for e in events if e["kind"] == "wave_started"]
    assert healthy["wall_time"] <= checkpoint["wall_time"]
    assert waves[1]["wall_time"] - healthy["wall_time"] >= 600
    # the journal's times are the emulator's: within the emulated span of the run
    assert before <= record.started_at <= record.finished_at <= after
    assert all(before <= e["wall_time"] <= after for e in events)
    # so are the -o json event lines' times
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    events_out = [e for e in lines if e.get("type") == "event"]
    stamps = [datetime.fromisoformat(e["at"]).timestamp() for e in events_out]
    assert stamps and all(int(before) <= t <= after for t in stamps)
    assert stamps[-1] - stamps[0] >= 600


def test_history_shows_the_rehearsals_emulated_duration(fast: Emulated) -> None:
    before, _ = emulated_now(fast)
    result, wall = upgrade(fast, "--strategy", "batch:size=2", "--pause", "15m", "--json")
    after, _ = emulated_now(fast)
    assert result.returncode == 0, result.stderr
    history = fast.cli("history", "-g", RG, "-n", fast.name, "-o", "json")
    assert history.returncode == 0, history.stderr
    row = json.loads(history.stdout)[0]
    # a 15-minute pause between the two waves: at least 15 minutes, as the
    # emulator counts them, within the emulated span of the command
    assert 900 <= row["duration_s"] <= after - before + 1
    assert wall < 60


def test_the_poll_interval_is_in_emulated_seconds(slow: Emulated) -> None:
    slow.admin("reset-counts", {})
    result, _ = upgrade(
        slow, "--strategy", "batch:size=2", "--canary", "1", "--bake", "5m",
        "--poll-interval", "5:20", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _, events = last_rollout(slow)
    now, t_sim = emulated_now(slow)
    epoch = now - t_sim
    checkpoint = next(e for e in events if e["kind"] == "checkpoint")["wall_time"] - epoch
    resumed = [e for e in events if e["kind"] == "wave_started"][1]["wall_time"] - epoch
    polls = [
        e["t_sim"]
        for e in slow.admin("requests")["log"]
        if e["operation"] == "vms.list" and checkpoint <= e["t_sim"] <= resumed + 1
    ]
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    # through a 5-minute bake, polls every 5 s doubling to 20 s, as the emulator
    # counts seconds (on the wall clock they would be 60 times further apart)
    assert len(polls) >= 300 / (20 + SLACK_S), polls
    assert max(gaps) <= 20 + SLACK_S, gaps
    assert sorted(gaps)[len(gaps) // 2] >= 10, gaps


def test_retry_after_of_a_429_is_waited_in_emulated_seconds(slow: Emulated) -> None:
    slow.admin("reset-counts", {})
    slow.faults(throttle_rate=0.5, throttle_retry_after=60)
    try:
        started = time.monotonic()
        status = slow.cli("status", "-g", RG, "-n", slow.name, "--json")
        wall = time.monotonic() - started
    finally:
        slow.faults(throttle_rate=0.0, throttle_retry_after=1.0)
    assert status.returncode == 0, status.stderr
    log = [e for e in slow.admin("requests")["log"] if not e["operation"].startswith("identity")]
    throttled = [(a, b) for a, b in itertools.pairwise(log) if a["status"] == 429]
    assert throttled, log
    for first, again in throttled:
        # the next attempt came 60 simulated seconds later (not 60 wall seconds)
        assert 60 <= again["t_sim"] - first["t_sim"] <= 60 + SLACK_S, (first, again)
    assert wall < 10 + len(throttled) * 2


def test_instances_and_scale_wait_in_emulated_seconds(slow: Emulated) -> None:
    endpoint = ["--arm-endpoint", slow.info["endpoint"]]
    poll = ["--poll-interval", "60:60", "--yes", "--json"]
    for command in (
        ["instances", "restart", "-g", RG, "-n", slow.name, "--only-instances", "1", *poll],
        ["scale", "-g", RG, "-n", slow.name, "--capacity", str(N + 1), *poll, *endpoint],
    ):
        slow.admin("reset-counts", {})
        started = time.monotonic()
        result = slow.cli(*command)
        wall = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        log = slow.admin("requests")["log"]
        write = next(i for i, e in enumerate(log) if e["method"] in ("POST", "PATCH"))
        lists = [e["t_sim"] for e in log[write:] if e["operation"] == "vms.list"]
        # instances waits before its first list; scale lists at once, then waits
        marks = lists if command[0] == "scale" else [log[write]["t_sim"], *lists]
        gaps = [b - a for a, b in itertools.pairwise(marks)]
        # every wait is 60 simulated seconds: a second of wall time at x60, not a minute
        assert gaps and all(60 <= g <= 60 + SLACK_S for g in gaps), (command[0], gaps)
        assert wall < 20 + 2 * len(gaps), (command[0], wall)
        # the journal times the operation on the same clock: its emulated duration
        with Journal(slow.journal) as book:
            record = book.operations(None, limit=1)[0]
        assert record.action == command[0].replace("instances", "restart")
        assert record.state == "completed" and record.finished_at is not None
        assert record.finished_at - record.started_at >= 60 * len(gaps), record


# --------------------------------------------------------------------------- the clock


class FakeWall:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.epoch = 1_800_000_000.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.epoch + self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self, honour: bool = True) -> Clock:
        return Clock(
            honour=honour, wall_time=self.time, wall_monotonic=self.monotonic, wall_sleep=self.sleep
        )


def test_without_an_announcement_the_clock_is_the_wall_clock() -> None:
    wall = FakeWall()
    clock = wall.clock()
    assert not clock.emulated
    assert clock.time() == wall.time() and clock.monotonic() == wall.monotonic()
    clock.sleep(30)
    assert wall.slept == [30] and clock.time() == wall.time()


def test_announced_time_runs_at_the_emulators_scale_and_never_goes_back() -> None:
    wall = FakeWall()
    clock = wall.clock()
    mono = clock.monotonic()
    clock.announce(2_000_000_000.0, 600.0)
    assert clock.emulated and clock.time() == 2_000_000_000.0
    assert clock.monotonic() == mono  # goes on from where the wall clock was
    clock.sleep(600)  # ten emulated minutes: one wall second
    assert wall.slept == [1.0]
    assert clock.time() == 2_000_000_600.0 and clock.monotonic() == mono + 600
    # a later answer that announces an earlier time (it was handled before we
    # extrapolated past it): the clock does not go back
    clock.announce(2_000_000_500.0, 600.0)
    assert clock.time() == 2_000_000_600.0
    wall.now += 1
    assert clock.time() == 2_000_001_100.0


def test_an_azure_clouds_endpoint_never_follows_announcements() -> None:
    for endpoint in (
        "https://management.azure.com",
        "https://management.usgovcloudapi.net/",
        "https://management.chinacloudapi.cn",
    ):
        assert is_azure_cloud(endpoint)
    assert not is_azure_cloud("https://127.0.0.1:8443")
    assert not is_azure_cloud("https://localhost:8443")
    assert not is_azure_cloud("https://azure.com.example.org")
    wall = FakeWall()
    clock = wall.clock(honour=False)
    clock.announce(2_000_000_000.0, 600.0)
    assert not clock.emulated and clock.time() == wall.time()


def test_connect_honours_the_emulator_but_not_public_azure(slow: Emulated) -> None:
    from vmss_rollout.backends.azure import AzureBackend, connect

    with slow.sdk():
        client, counter, clock = connect(slow.info["subscription"], slow.info["endpoint"])
        backend = AzureBackend(client, RG, slow.name, counter, clock=clock)
        assert backend.clock is clock and not clock.emulated
        backend.read_scale_set()
        assert clock.emulated and clock.scale == 60.0
        before, _ = emulated_now(slow)
        assert abs(clock.time() - before) < SLACK_S
        # the retries' waits default to the clock's
        assert backend.sleep == clock.sleep
        _, _, public = connect(slow.info["subscription"], "https://management.azure.com")
        assert not public.honour


def test_instances_and_scale_give_up_waiting_at_their_timeout(slow: Emulated) -> None:
    """A wait is bounded (--timeout, emulated seconds in a rehearsal): past it
    the command ends with one line naming what is not done, exit 3 (Azure was
    asked), and the journal ends the operation failed; the action goes on."""
    cases = (
        (["instances", "reimage", "--only-instances", "2"], "reimage not done on 2"),
        (["scale", "--capacity", str(N + 3), "--arm-endpoint", slow.info["endpoint"]],
         "not yet a settled"),
    )  # fmt: skip
    for command, pending in cases:
        started = time.monotonic()
        result = slow.cli(
            *command[:2] if command[0] == "instances" else command[:1],
            "-g", RG, "-n", slow.name,
            *(command[2:] if command[0] == "instances" else command[1:]),
            "--timeout", "20s", "--poll-interval", "5:5", "--yes",
        )  # fmt: skip
        assert result.returncode == 3, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("error: ") and "gave up waiting after 20s" in result.stderr
        assert pending in result.stderr
        assert time.monotonic() - started < 30  # 20 emulated seconds, not wall seconds
        with Journal(slow.journal) as book:
            record = book.operations(None, limit=1)[0]
        assert record.state == "failed" and "gave up waiting" in record.reason
