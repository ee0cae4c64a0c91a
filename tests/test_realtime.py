"""The wall-clock driver, run on a simulated clock: it must reach the same
waves as the SimPy driver, poll adaptively, and stop cleanly on request."""

from __future__ import annotations

import random

import simpy

from vmss_rollout.backends.realtime import run
from vmss_rollout.engine.events import EventKind
from vmss_rollout.engine.polling import PollInterval
from vmss_rollout.engine.rollout import Rollout
from vmss_rollout.sim import CURRENT_MODEL, TARGET_MODEL, Scenario, run_once
from vmss_rollout.sim.distributions import Fixed
from vmss_rollout.sim.scaleset import SimScaleSet
from vmss_rollout.strategies.registry import make


def sim(n: int = 10) -> tuple[simpy.Environment, SimScaleSet]:
    env = simpy.Environment()
    ss = SimScaleSet(
        env,
        random.Random(1),
        instances=n,
        upgrade_time=Fixed(60),
        health_delay=Fixed(30),
        model=CURRENT_MODEL,
        new_model=TARGET_MODEL,
    )
    return env, ss


def drive(spec: str, n: int = 10, **kw: object) -> tuple[Rollout, SimScaleSet, list[float]]:
    env, ss = sim(n)
    _, fleet = ss.read()
    rollout = Rollout(CURRENT_MODEL, TARGET_MODEL, fleet, make(spec))
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        env.run(until=env.now + seconds)

    run(
        rollout,
        ss,
        etag=ss.read()[0].etag,
        clock=lambda: env.now,
        sleep=sleep,
        interval=PollInterval(5, 40),
        **kw,
    )  # type: ignore[arg-type]
    return rollout, ss, sleeps


def waves(rollout: Rollout) -> list[tuple[str, ...]]:
    return [e.instances for e in rollout.events if e.kind is EventKind.WAVE_STARTED]


def test_same_waves_as_the_simpy_driver() -> None:
    scenario = Scenario(instances=10, upgrade="fixed(60s)", health_delay="30s")  # type: ignore[arg-type]
    for spec in ("one-at-a-time", "update-domain", "batch:size=3"):
        rollout, ss, _ = drive(spec)
        assert rollout.outcome().completed and rollout.outcome().upgraded == 10
        assert waves(rollout) == run_once(scenario, spec, seed=1, record=True).waves()
        assert all(inst.model == TARGET_MODEL for inst in ss.instances.values())


def test_polling_backs_off_while_nothing_changes() -> None:
    _, _, sleeps = drive("all-at-once")
    assert sleeps[0] == 5
    assert max(sleeps) <= 40
    assert 10 in sleeps or 20 in sleeps  # doubled while the upgrade ran unobserved


def test_stop_request_finishes_the_wave_in_flight() -> None:
    asked = [0]

    def should_stop() -> bool:
        asked[0] += 1
        return asked[0] > 3

    rollout, ss, _ = drive("batch:size=3", should_stop=should_stop)
    o = rollout.outcome()
    assert o.interrupted and not o.completed and o.reason == "interrupted"
    assert o.upgraded == 3  # the first wave finished, nothing else started
    assert not o.rolled_back
    on_target = [i for i, inst in ss.instances.items() if inst.model == TARGET_MODEL]
    assert sorted(on_target, key=int) == ["0", "1", "2"]


def test_until_returns_right_after_the_first_wave_starts() -> None:
    from vmss_rollout.engine.events import StartUpgrade

    rollout, ss, _ = drive(
        "batch:size=3", until=lambda step: any(isinstance(a, StartUpgrade) for a in step.actions)
    )
    assert not rollout.finished
    assert [ids for _, op, ids in ss.requests if op == "upgrade"] == [("0", "1", "2")]
