"""The simulator's driver models ``upgrade``'s (backends/realtime.py): it sees
completion and health only at polls, polls MIN after a change doubling to MAX,
pays each ARM call's latency, and with ``poll_interval = "0"`` is the idealised
driver that sees every change at once (the simulator's numbers before issue 11)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import simpy

from vmss_rollout.backends.realtime import run
from vmss_rollout.engine.backend import Observations
from vmss_rollout.engine.errors import InputError
from vmss_rollout.engine.events import EventKind
from vmss_rollout.engine.model import ModelVersion, ProvisioningState
from vmss_rollout.engine.polling import PollInterval, parse_poll_interval
from vmss_rollout.engine.rollout import Rollout
from vmss_rollout.sim import CURRENT_MODEL, TARGET_MODEL, Scenario, derive_seed, run_once
from vmss_rollout.sim.parallel import run_study
from vmss_rollout.sim.runner import build, drive
from vmss_rollout.sim.scaleset import SimScaleSet
from vmss_rollout.sim.scenario import load_scenario_text
from vmss_rollout.sim.sweep import build_point, parse_vary
from vmss_rollout.strategies.registry import make


def fixed(n: int, **kw: object) -> Scenario:
    """``n`` instances, 61 s upgrades, 3 s health delay (off every poll schedule
    below, so no change coincides with a poll), no demand."""
    return Scenario(
        instances=n,
        upgrade="fixed(61s)",  # type: ignore[arg-type]
        health_delay="3s",  # type: ignore[arg-type]
        required="0",  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def times(events: Sequence[object], kind: EventKind) -> list[float]:
    return [e.time for e in events if e.kind is kind]  # type: ignore[attr-defined]


def test_changes_are_seen_at_the_next_poll() -> None:
    # polls every 10 s: the model update at 0 is seen at the poll at 10, which
    # starts instance 0; it is healthy at 10 + 61 + 3 = 74, seen at 80, and so on
    r = run_once(fixed(3, poll_interval="10:10"), "one-at-a-time", 1, record=True)
    assert times(r.events, EventKind.WAVE_STARTED) == [10, 80, 150]
    assert times(r.events, EventKind.INSTANCE_HEALTHY) == [80, 150, 220]
    assert r.duration_s == 220
    # the idealised driver starts each wave the moment the last one is healthy
    r0 = run_once(fixed(3, poll_interval="0"), "one-at-a-time", 1, record=True)
    assert times(r0.events, EventKind.WAVE_STARTED) == [0, 64, 128]
    assert r0.duration_s == 3 * 64


def test_the_interval_doubles_to_max_while_nothing_changes() -> None:
    # one instance, a 100 s upgrade, poll 5:40: polls at 0 (model update), 5
    # (wave starts), 10 (sees it updating), then nothing changes: 15, 25, 45, 85,
    # 125 (5, 10, 20, 40, 40 s apart); it is healthy at 5 + 100 + 1, seen at 125
    sc = dataclasses.replace(
        fixed(1, poll_interval="5:40"),
        upgrade="fixed(100s)",  # type: ignore[arg-type]
        health_delay="1s",  # type: ignore[arg-type]
    )
    r = run_once(sc, "one-at-a-time", 1, record=True)
    assert times(r.events, EventKind.WAVE_STARTED) == [5]
    assert times(r.events, EventKind.INSTANCE_HEALTHY) == [125]
    assert r.duration_s == 125
    # at a fixed 5 s the same rollout is seen at the first poll after 106
    r5 = run_once(dataclasses.replace(sc, poll_interval=(5.0, 5.0)), "one-at-a-time", 1)
    assert r5.duration_s == 110


def test_request_latency_moves_the_driver_clock_by_its_calls() -> None:
    # all-at-once on 3 instances, poll 10:10, 1 s per call, one list page: t=0 poll
    # (1 call) -> 1 observe, model update (1 call) -> 2, sleep 10 -> 12 poll -> 13
    # starts the wave (1 call) -> 14; the operation is followed: every poll is 2
    # calls (24-26, ..., 72-74); the upgrade ends at 13 + 61 = 74, healthy at 77;
    # the poll at 84 asks the operation (ended) and lists -> 86 sees them healthy
    r = run_once(fixed(3, poll_interval="10:10", request_latency=1), "all-at-once", 1, record=True)
    assert times(r.events, EventKind.WAVE_STARTED) == [13]
    assert times(r.events, EventKind.INSTANCE_HEALTHY) == [86, 86, 86]
    assert r.duration_s == 86 - 1  # the rollout starts at its first observation, t=1
    # without latency: wave at 10, ends 71, healthy 74, seen at 80
    assert run_once(fixed(3, poll_interval="10:10"), "all-at-once", 1).duration_s == 80
    # more pages cost more: 3 instances at 1 per page are 3 list calls per poll
    paged = run_once(
        fixed(3, poll_interval="10:10", request_latency=1, page_size=1),
        "all-at-once",
        1,
        record=True,
    )
    assert times(paged.events, EventKind.WAVE_STARTED)[0] == 3 + 1 + 10 + 3


class CallsCost:
    """A simulated scale set behind ``AzureBackend``'s calls, each costing
    ``latency`` seconds of simulated time: a poll asks every upgrade operation
    it follows for its status (forgetting the ended ones), then lists the
    instances page by page; an action is one call."""

    def __init__(self, env: simpy.Environment, ss: SimScaleSet, latency: float, page: int):
        self.env, self.ss, self.latency, self.page = env, ss, latency, page
        self.operations: list[tuple[str, ...]] = []
        self.calls = 0

    def _spend(self, calls: int) -> None:
        self.calls += calls
        if calls * self.latency:
            self.env.run(until=self.env.now + calls * self.latency)

    def poll(self) -> Observations:
        followed = len(self.operations)
        updating = (ProvisioningState.UPDATING, ProvisioningState.CREATING)
        self.operations = [
            op
            for op in self.operations
            if any(
                i in self.ss.instances and self.ss.instances[i].provisioning in updating for i in op
            )
        ]
        self._spend(followed + -(-len(self.ss.instances) // self.page))
        return self.ss.poll()

    def read(self):  # type: ignore[no-untyped-def]
        return self.ss.read()

    def update_model(self, model: ModelVersion, etag: str | None) -> str | None:
        etag = self.ss.update_model(model, etag)
        self._spend(1)
        return etag

    def start_upgrade(self, ids: Sequence[str]) -> None:
        self.ss.start_upgrade(ids)
        self.operations.append(tuple(ids))
        self._spend(1)


@pytest.mark.parametrize(
    ("spec", "poll", "latency"),
    [
        ("update-domain", "5:30", 0.0),
        ("batch:size=4", "5:30", 0.7),
        ("one-at-a-time", "2:16", 2.5),
        ("window:max-unavailable=3", "5:30", 1.3),
    ],
)
def test_the_simulated_driver_is_the_real_drivers_loop(
    spec: str, poll: str, latency: float
) -> None:
    """``realtime.run`` itself, on simulated time with calls that cost ``latency``,
    reaches exactly the events and duration the simulator predicts."""
    sc = Scenario(
        instances=12,
        upgrade="lognormal(mean=4m, sd=1m)",  # type: ignore[arg-type]
        health_delay="uniform(10s, 40s)",  # type: ignore[arg-type]
        poll_interval=poll,  # type: ignore[arg-type]
        request_latency=latency,
        page_size=5,
    )
    seed = derive_seed(3, 0)
    predicted = run_once(sc, spec, seed, record=True)

    env, ss = build(sc, seed)
    _, fleet = ss.read()
    rollout = Rollout(CURRENT_MODEL, TARGET_MODEL, fleet, make(spec), sc.engine, keep_events=True)
    backend = CallsCost(env, ss, latency, sc.page_size)
    run(
        rollout,
        backend,  # type: ignore[arg-type]
        etag=ss.read()[0].etag,
        interval=PollInterval(*sc.poll_interval),
        clock=lambda: env.now,
        sleep=lambda seconds: env.run(until=env.now + seconds) if seconds else None,
    )
    outcome = rollout.outcome()
    assert outcome.completed and outcome.upgraded == 12
    assert [(e.time, e.kind, e.instances) for e in rollout.events] == [
        (e.time, e.kind, e.instances) for e in predicted.events
    ]
    assert outcome.finished_at - outcome.started_at == predicted.duration_s
    if latency:
        assert backend.calls > 12 // sc.page_size  # every poll paid for its pages


def test_the_idealised_driver_is_the_event_driven_one() -> None:
    """``poll_interval = "0"`` gives exactly what ``drive`` (the SimPy process that
    wakes on every change; the emulator's Rolling policy uses it) gives."""
    sc = Scenario(
        instances=15,
        upgrade_failure=0.05,
        health_delay="uniform(10s, 40s)",  # type: ignore[arg-type]
        poll_interval="0",  # type: ignore[arg-type]
        engine={"canary": "2", "bake": "5m"},  # type: ignore[arg-type]
    )
    for spec in ("update-domain", "window:max-unavailable=3"):
        seed = derive_seed(5, 1)
        ideal = run_once(sc, spec, seed, record=True)
        env, ss = build(sc, seed)
        _, fleet = ss.read()
        rollout = Rollout(
            CURRENT_MODEL, TARGET_MODEL, fleet, make(spec), sc.engine, keep_events=True
        )
        env.process(drive(env, rollout, ss))
        env.run(until=env.timeout(10**6))
        assert rollout.finished
        assert [(e.time, e.kind, e.instances) for e in rollout.events] == [
            (e.time, e.kind, e.instances) for e in ideal.events
        ]
        # and the polled driver is never faster than the idealised one
        polled = run_once(dataclasses.replace(sc, poll_interval=(5.0, 30.0)), spec, seed)
        assert polled.duration_s > ideal.duration_s


def test_a_seed_reproduces_a_polled_run_bit_for_bit_in_a_pool() -> None:
    sc = Scenario(
        instances=16,
        zones=("1", "2"),
        upgrade_failure=0.05,
        unhealthy_after_upgrade=0.05,
        upgrade="uniform(2m, 6m)",  # type: ignore[arg-type]
        poll_interval="3:20",  # type: ignore[arg-type]
        request_latency=0.4,
        page_size=7,
    )
    once = run_once(sc, "batch:size=3", 11, record=True)
    assert once == run_once(sc, "batch:size=3", 11, record=True)
    serial = run_study(sc, "batch:size=3", runs=12, seed=4, record=True, workers=1)
    pooled = run_study(sc, "batch:size=3", runs=12, seed=4, record=True, workers=2)
    assert serial == pooled
    assert len({r.duration_s for r in serial}) > 1  # the runs differ from one another


def test_driver_table_round_trips_and_validates() -> None:
    sc = load_scenario_text(
        '[driver]\npoll_interval = "2:16"\nrequest_latency = "1.5s"\npage_size = 10\n'
    )
    assert (sc.poll_interval, sc.request_latency, sc.page_size) == ((2.0, 16.0), 1.5, 10)
    assert load_scenario_text(sc.to_toml()) == sc
    ideal = load_scenario_text('[driver]\npoll_interval = "0"\n')
    assert ideal.poll_interval == (0.0, 0.0)
    assert load_scenario_text(ideal.to_toml()) == ideal
    assert load_scenario_text('[driver]\npoll_interval = "7"\n').poll_interval == (7.0, 30.0)
    bad = {
        'poll_interval = "0:5"': "driver.poll_interval: need 0 < MIN <= MAX",
        'poll_interval = "9:3"': "driver.poll_interval: need 0 < MIN <= MAX",
        'poll_interval = "fast"': "driver.poll_interval: expected MIN or MIN:MAX",
        "poll_interval = true": "driver.poll_interval: expected MIN or MIN:MAX",
        'request_latency = "-1s"': "driver.request_latency: expected a duration",
        'request_latency = "2h"': "driver.request_latency: at most 3600s per call",
        "page_size = 0": "driver.page_size: expected a whole number >= 1",
        "pages = 3": "driver.pages: unknown key",
        'poll_interval = "0"\nrequest_latency = "1s"': "driver.request_latency: the idealised",
    }
    for text, message in bad.items():
        with pytest.raises(InputError, match=message.replace("(", r"\(")) as info:
            load_scenario_text(f"[driver]\n{text}\n")
        assert "\n" not in str(info.value)


def test_upgrades_poll_interval_parser_is_the_scenarios() -> None:
    assert parse_poll_interval("5:30") == (5.0, 30.0)
    assert parse_poll_interval("0.05:0.3") == (0.05, 0.3)
    with pytest.raises(InputError, match="--poll-interval: need 0 < MIN <= MAX, got '0'"):
        parse_poll_interval("0")  # upgrade cannot poll without waiting
    assert parse_poll_interval("0", "driver.poll_interval", allow_zero=True) == (0.0, 0.0)


def test_a_sweep_varies_the_poll_interval() -> None:
    sc = fixed(6)
    axes = [parse_vary("driver.poll_interval=0,5:30,30:30", "one-at-a-time")]
    assert axes[0].values == ("0", "5:30", "30:30")
    durations = []
    for value in ("0", "5:30", "30:30"):
        point, spec = build_point(sc, "one-at-a-time", axes, {"driver.poll_interval": value})
        durations.append(run_once(point, spec, 1).duration_s)
    assert durations[0] == 6 * 64
    assert durations[0] < durations[1] < durations[2]


def test_a_rollout_that_can_never_finish_is_an_error_not_a_hang() -> None:
    env, ss = build(fixed(2, poll_interval="5:30"), 1)
    _, fleet = ss.read()
    rollout = Rollout(CURRENT_MODEL, TARGET_MODEL, fleet, make("one-at-a-time"))
    ss.start_upgrade = lambda ids: None  # type: ignore[method-assign]  # a platform that never acts
    from vmss_rollout.sim.runner import simulate_rollout

    with pytest.raises(RuntimeError, match="waits for a change that cannot come"):
        simulate_rollout(env, rollout, ss, poll=(5.0, 30.0))


def test_simulate_and_compare_say_how_the_simulated_driver_polls(tmp_path: Path) -> None:
    """A planner reading simulate's or compare's output sees the driver it
    modelled: upgrade's polling by default, or the idealised driver."""
    env = {**os.environ, "COLUMNS": "200"}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "vmss_rollout.cli.app", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    polled = cli("simulate", "-s", "batch", "-r", "2")
    assert "; driver polls every 5:30 s (as upgrade --poll-interval)" in polled
    ideal = tmp_path / "ideal.toml"
    ideal.write_text('[driver]\npoll_interval = "0"\n')
    assert "driver sees every change at once" in cli("compare", str(ideal), "-r", "2")
    slow = tmp_path / "slow.toml"
    slow.write_text('[driver]\npoll_interval = "10:60"\nrequest_latency = "1.5s"\n')
    out = cli("simulate", str(slow), "-s", "batch", "-r", "2")
    assert "driver polls every 10:60 s, 1.5 s per ARM call" in out
