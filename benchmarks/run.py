"""The planning benchmarks, one command, every ratio measured in the same run.

    python benchmarks/run.py            # full sizes (a few minutes on 2 cores)
    python benchmarks/run.py --quick    # small sizes (CI)

1. simulator cost per upgraded instance against a bare SimPy loop scheduling
   the same number of events (goal: within 3x);
2. Monte Carlo speed-up with 2 workers against 1 (goal: 1.7x or better on two
   cores);
3. time and peak memory of one rollout of 10 000 and 100 000 instances, each in
   a fresh process (goal: linear in instances, under 1 GB at 100 000);
4. for the default scenario, each strategy's mean duration against the lower
   bound ceil(N / k) x mean time down per instance (upgrade + health delay) at
   the same capacity floor k (the strategy's guarantee: most instances down at
   once);
5. calibration recovery: `calibrate`'s fit from the journal of 120 instance
   upgrades (3 polled rollouts of 40 on the simulated scale set, default poll
   interval 5:30) with known timings and rates, over several seeds (goal: means
   within 10%, rates within 3 points).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from bench_core import bare, simulate

from vmss_rollout.sim.parallel import run_study
from vmss_rollout.sim.runner import summarize
from vmss_rollout.sim.scenario import default_scenario
from vmss_rollout.strategies.registry import make

_MEMORY_CHILD = """
import resource, sys
sys.path.insert(0, {here!r})
from bench_core import simulate
wall, events = simulate({n}, {spec!r})
print(wall, events, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def section(title: str) -> None:
    print(f"\n== {title}")


def cost_per_instance(sizes: list[int], repeat: int) -> None:
    section("1. simulator cost per upgraded instance vs a bare SimPy loop (goal: within 3x)")
    print(f"{'strategy':<16}{'instances':>10}{'events':>9}{'us/inst':>9}{'ratio':>8}")
    for spec in ("one-at-a-time", "window"):
        for n in sizes:
            runs = [simulate(n, spec) for _ in range(repeat)]
            wall = min(r[0] for r in runs)
            events = runs[0][1]
            base = min(bare(events) for _ in range(repeat))
            print(f"{spec:<16}{n:>10}{events:>9}{wall / n * 1e6:>9.1f}{wall / base:>8.1f}")


def speedup(runs: int, instances: int) -> None:
    section(f"2. Monte Carlo speed-up, 2 workers vs 1 ({runs} runs of {instances} instances)")
    scenario = dataclasses.replace(default_scenario(), instances=instances, runs=runs)
    timings = {}
    summaries = {}
    for workers in (1, 2):
        start = time.perf_counter()
        results = run_study(scenario, "window", runs=runs, seed=1, workers=workers)
        timings[workers] = time.perf_counter() - start
        summaries[workers] = json.dumps(summarize("window", 1, results), sort_keys=True)
    same = "identical" if summaries[1] == summaries[2] else "DIFFERENT"
    print(
        f"1 worker {timings[1]:.2f} s, 2 workers {timings[2]:.2f} s: "
        f"speed-up {timings[1] / timings[2]:.2f}x (goal 1.7x); results {same}"
    )


def memory(sizes: list[int]) -> None:
    section("3. one rollout: time and peak memory, each in a fresh process (goal < 1 GB)")
    here = str(Path(__file__).resolve().parent)
    print(f"{'strategy':<16}{'instances':>10}{'wall s':>9}{'us/inst':>9}{'peak MB':>9}")
    for spec in ("one-at-a-time", "window"):
        for n in sizes:
            code = _MEMORY_CHILD.format(here=here, n=n, spec=spec)
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout.split()
            wall, peak_kb = float(out[0]), int(out[2])
            print(f"{spec:<16}{n:>10}{wall:>9.2f}{wall / n * 1e6:>9.1f}{peak_kb / 1024:>9.0f}")


def lower_bounds(runs: int) -> None:
    scenario = dataclasses.replace(default_scenario(), runs=runs)
    n = scenario.instances
    down = scenario.upgrade.mean() + scenario.health_delay.mean()
    section(
        f"4. mean duration vs the lower bound ceil(N/k) x {down:.0f} s down per instance "
        f"(default scenario, N={n}, {runs} runs)"
    )
    print("(a bound on the expected duration: a sample mean over few runs can dip below it)")
    print(f"{'strategy':<16}{'k':>4}{'bound s':>9}{'mean s':>9}{'ratio':>8}")
    from vmss_rollout.sim.runner import run_once
    from vmss_rollout.strategies.base import InstanceInfo

    fleet = run_once(scenario, "one-at-a-time", 1, record=True).final
    infos = [
        InstanceInfo(i, int(i) % scenario.update_domains, int(i) % scenario.fault_domains)
        for i in fleet
    ]
    for spec in (
        "one-at-a-time",
        "update-domain",
        "batch",
        "window",
        "surge",
        "azure-rolling",
        "all-at-once",
    ):
        k = make(spec).max_down(infos, n) or 1  # surge: k = max-surge in flight
        if spec == "surge":
            k = 1
        bound = math.ceil(n / k) * down
        mean = summarize(spec, 1, run_study(scenario, spec, runs=runs, seed=1))["duration_s"][
            "mean"
        ]
        print(f"{spec:<16}{k:>4}{bound:>9.0f}{mean:>9.0f}{mean / bound:>8.2f}")


def calibration_recovery(seeds: int) -> None:
    import tempfile

    from vmss_rollout.backends.calibrate import fit, observations, simulated_history
    from vmss_rollout.engine.journal import Journal
    from vmss_rollout.engine.options import EngineOptions
    from vmss_rollout.sim.distributions import Exponential, Fixed, LogNormal, Uniform

    section(
        f"5. calibration recovery from 120 instance samples, {seeds} seeds each "
        "(goal: means within 10%, rates within 3 points)"
    )
    cases = [
        (LogNormal(240, 60), Fixed(30), 0.05, 0.10),
        (Exponential(180), LogNormal(60, 20), 0.02, 0.05),
        (Uniform(120, 360), Exponential(45), 0.10, 0.0),
    ]
    ssid = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/"
    ssid += "bench"
    print(
        f"{'upgrade':<28}{'health delay':<28}{'family ok':>10}{'mean err % (max)':>18}"
        f"{'rate err pts (max)':>20}{'in goal':>10}{'in goal':>10}"
    )
    for upgrade, health, failure, unhealthy in cases:
        scenario = dataclasses.replace(
            default_scenario(),
            instances=40,
            upgrade=upgrade,
            health_delay=health,
            upgrade_failure=failure,
            unhealthy_after_upgrade=unhealthy,
            engine=EngineOptions(max_unhealthy=100, max_unhealthy_upgraded=100),
        )
        right, mean_errors, rate_errors = 0, [], []
        for seed in range(seeds):
            with tempfile.TemporaryDirectory() as tmp:
                journal = Journal(Path(tmp) / "journal.sqlite")
                simulated_history(
                    journal, scenario, "batch:size=10", rollouts=3, seed=seed, scale_set_id=ssid
                )
                history = observations(journal, ssid)
                journal.close()
            fits = (fit(history.upgrade), fit(history.health_delay))
            truths = (upgrade, health)
            right += sum(type(f.chosen) is type(t) for f, t in zip(fits, truths, strict=True))
            mean_errors += [
                abs(f.chosen.mean() / t.mean() - 1) * 100 for f, t in zip(fits, truths, strict=True)
            ]
            bad = history.unhealthy + history.never_healthy
            rate_errors += [
                abs(history.failed / history.finished - failure) * 100,
                abs(bad / history.provisioned - unhealthy) * 100,
            ]
        mean_err = sum(mean_errors) / len(mean_errors)
        rate_err = sum(rate_errors) / len(rate_errors)
        means_ok = sum(e <= 10 for e in mean_errors)
        rates_ok = sum(e <= 3 for e in rate_errors)
        print(
            f"{upgrade!s:<28}{health!s:<28}{f'{right}/{2 * seeds}':>10}"
            f"{f'{mean_err:.1f} ({max(mean_errors):.1f})':>18}"
            f"{f'{rate_err:.1f} ({max(rate_errors):.1f})':>20}"
            f"{f'{means_ok}/{len(mean_errors)}':>10}{f'{rates_ok}/{len(rate_errors)}':>10}"
        )
    print(
        "(family ok: fits whose chosen form is the true one; err: mean (max) over the "
        "fits; in goal: fits within 10% and rates within 3 points. At 120 samples a "
        "10% rate's standard error is 2.7 points.)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    args = parser.parse_args()
    if args.quick:
        cost_per_instance([100, 1000], repeat=1)
        speedup(runs=40, instances=500)
        memory([1000, 10000])
        lower_bounds(runs=20)
        calibration_recovery(seeds=3)
    else:
        cost_per_instance([100, 1000, 10000], repeat=3)
        speedup(runs=200, instances=500)
        memory([10000, 100000])
        lower_bounds(runs=200)
        calibration_recovery(seeds=10)


if __name__ == "__main__":
    main()
