"""What makes the simulator fast (issue 13), checked as behaviour, never timed:
instances changed in place, one wake-up per set of simultaneous changes, no
wake-ups for stale deadlines, simulated time stopping at the rollout's end, and
a start-up that does not import simpy."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from vmss_rollout.engine.model import Health, Instance, ProvisioningState
from vmss_rollout.engine.options import EngineOptions
from vmss_rollout.sim.runner import run_once, simulate
from vmss_rollout.sim.scaleset import SimInstance
from vmss_rollout.sim.scenario import Scenario


def test_instances_are_changed_in_place_and_compare_as_instances() -> None:
    scenario = Scenario(instances=30, upgrade="fixed(10s)", health_delay="fixed(5s)", runs=1)
    _, scale_set, rollout = simulate(scenario, "window", 1)
    assert rollout.outcome().upgraded == 30
    for iid, inst in scale_set.instances.items():
        assert isinstance(inst, SimInstance)
        # the engine holds the scale set's own objects: nothing was copied per change
        assert rollout.fleet[iid] is inst
        plain = Instance(
            iid,
            inst.update_domain,
            inst.fault_domain,
            inst.zone,
            model=inst.model,
            latest_model_applied=inst.latest_model_applied,
        )
        assert inst == plain and plain == inst
        assert inst != dataclasses.replace(plain, health=Health.UNHEALTHY)
    with pytest.raises(TypeError):
        hash(next(iter(scale_set.instances.values())))


def test_few_events_per_instance() -> None:
    """An upgrade is two timeouts; the driver wakes once per change the engine
    acts on (upgraded, healthy), not for stale health deadlines, and the
    instances' start events are shared per instant. Before issue 13 a
    one-at-a-time rollout scheduled 8 SimPy events per instance. This is the
    idealised driver's economy (``poll_interval = "0"``, every change seen at
    once); the polled driver adds one timeout per poll, no more."""
    scenario = Scenario(instances=200, runs=1, poll_interval="0")  # type: ignore[arg-type]
    env, _, rollout = simulate(scenario, "one-at-a-time", 1)
    assert rollout.outcome().upgraded == 200
    assert next(env._eid) <= 6 * 200
    polled = dataclasses.replace(scenario, poll_interval=(5.0, 30.0))
    env, _, rollout = simulate(polled, "one-at-a-time", 1)
    assert rollout.outcome().upgraded == 200
    # at most a poll every MIN = 5 s over the whole rollout, on top of the above
    assert next(env._eid) <= 6 * 200 + env.now / 5


def test_simulated_time_stops_when_the_rollout_finishes() -> None:
    """Instances that time out unhealthy still have a health verdict pending
    when the rollout ends: the simulation does not run on to it, and the
    integrated metrics cover the rollout only (before issue 13 they ran on to
    t=580 and counted 5 100 instance-seconds lost, 440 s of outage)."""
    scenario = Scenario(
        instances=10,
        upgrade="fixed(10s)",
        health_delay="fixed(500s)",
        runs=1,
        engine=EngineOptions(health_timeout=60, max_unhealthy=100, max_unhealthy_upgraded=100),
    )
    env, scale_set, rollout = simulate(scenario, "batch:size=5", 1)
    outcome = rollout.outcome()
    assert outcome.unhealthy == 10 and not outcome.halted
    # the model update at 0 is seen at the 5 s poll, which starts the first wave;
    # two waves of 5, each declared unhealthy 10 + 60 s after it started (the
    # driver's sleep ends at the engine's deadline)
    assert outcome.finished_at == 5 + 140.0 == env.now
    assert all(i.health is Health.UNKNOWN for i in scale_set.instances.values())
    # what the simulation no longer runs: the verdicts still pending, past the end
    env.run()
    assert env.now == 5 + 10 + 70 + 500
    assert all(i.provisioning is ProvisioningState.SUCCEEDED for i in scale_set.instances.values())

    result = run_once(scenario, "batch:size=5", 1)
    assert result.duration_s == 145.0
    # from 5 s: 5 down for 70 s, then all 10 for 70 s; nothing serving from 75 to
    # 145; below the 8 required from 5 s on
    assert result.capacity_loss_instance_s == 5 * 70 + 10 * 70
    assert result.outage_s == 70.0
    assert result.degraded_s == 140.0


def test_start_up_imports_no_simpy() -> None:
    code = (
        "import sys\n"
        "import vmss_rollout.cli.app\n"
        "heavy = {'simpy', 'azure', 'starlette', 'matplotlib', 'dask', 'hypothesis',"
        " 'multiprocessing', 'concurrent'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


_HELP_CHILD = """
import contextlib, io, sys
sys.argv = ["vmss-rollout", "--help"]
from vmss_rollout.cli.app import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main()
    except SystemExit:
        pass
print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:])))
print(sorted(m for m in ("importlib.metadata", "simpy") if m in sys.modules))
print(out.getvalue())
"""


def test_help_lists_every_command_and_imports_nothing_heavy() -> None:
    """``vmss-rollout --help`` (issue 13: under 0.3 s) lists every command from
    its docstring, without importing the simulator, the strategies' entry points
    (importlib.metadata) or any optional extra."""
    heavy = ["simpy", "azure", "starlette", "uvicorn", "matplotlib", "dask", "distributed"]
    heavy += ["hypothesis", "multiprocessing", "concurrent"]
    out = subprocess.run(
        [sys.executable, "-c", _HELP_CHILD, *heavy], capture_output=True, text=True, check=True
    ).stdout
    packages, modules, help_text = out.split("\n", 2)
    assert packages == "[]" and modules == "[]", out
    from vmss_rollout.cli.app import _COMMANDS

    for name, function in _COMMANDS.items():
        summary = (function.__doc__ or "").split("\n")[0].split(".")[0]
        assert f" {name} " in help_text and summary[:30] in help_text, name


_POOL_MAIN = """
import json, sys
if __name__ != "__main__":  # a worker runs the parent's script again: what is imported?
    with open({marker!r}, "a") as marker:
        marker.write(str("vmss_rollout.sim.runner" in sys.modules) + "\\n")
from vmss_rollout.sim.parallel import run_study
from vmss_rollout.sim.scenario import Scenario
if __name__ == "__main__":
    scenario = Scenario(instances=40, runs=100)  # 4 chunks (MIN_CHUNK_COST)
    pooled = run_study(scenario, "window", workers=3)
    serial = run_study(scenario, "window", workers=1)
    print(json.dumps([pooled == serial, "simpy" in sys.modules]))
"""


@pytest.mark.skipif(
    "forkserver" not in __import__("multiprocessing").get_all_start_methods(),
    reason="no fork server on this OS: spawn (and its start-up) is what there is",
)
def test_pool_workers_start_with_the_simulator_imported(tmp_path: Path) -> None:
    """The pool's workers are forked from a server that imported the simulator
    once: a worker does not import it again (a spawned one did, and with the
    ``vmss-rollout`` script the whole CLI: about 0.2 s of CPU per worker), and no
    result changes."""
    marker = tmp_path / "marker"
    script = tmp_path / "main.py"
    script.write_text(_POOL_MAIN.format(marker=str(marker)))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert out.strip() == "[true, true]", out
    workers = marker.read_text().split()
    assert workers and set(workers) == {"True"}, workers


def test_the_parent_runs_chunks_while_the_pool_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the first worker's chunk comes back, this process runs chunks from
    the back of the queue itself (the pool's start-up is otherwise idle time),
    and the results are those of a serial run."""
    import functools

    from vmss_rollout.sim import parallel

    here: list[int] = []
    original = parallel.run_chunk

    @functools.wraps(original)  # the same qualified name: still pickled by reference
    def counting(chunk: parallel.Chunk) -> tuple[int, int, list[object]]:
        here.append(chunk.start)
        return original(chunk)  # type: ignore[return-value]

    scenario = Scenario(instances=20, runs=400)
    serial = parallel.run_study(scenario, "batch", workers=1)
    monkeypatch.setattr(parallel, "run_chunk", counting)
    here.clear()
    pooled = parallel.run_study(scenario, "batch", workers=2)
    assert pooled == serial
    chunks = parallel.plan_chunks([parallel.Study(scenario, "batch", 400, scenario.seed)], 2)
    assert 1 <= len(here) < len(chunks)
    assert here[0] == chunks[-1].start  # from the back: the workers take the front


def test_commands_built_on_demand_still_suggest_a_near_name() -> None:
    """The root group builds a command only when it is asked for, so typer's
    "Did you mean" (which looks at the commands built) is given the names of
    every command."""
    from typer.testing import CliRunner

    from vmss_rollout.cli.app import app

    result = CliRunner().invoke(app, ["compar"])
    assert result.exit_code == 2
    assert "No such command 'compar'. Did you mean 'compare'?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
