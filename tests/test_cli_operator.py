"""The operator commands as an operator sees them (issue 12, items 3, 4, 7 and 8):
the plan's summary and its assumptions, the prompt, -o/--query, collapsed wave
tables, named failed instances, history's times, ``upgrade -o json`` streaming
its events, ``instances delete`` and ``scale``.

Each CLI run is its own process, talking to the ARM emulator (another process,
overprovisioning on as on Azure) through the real azure-mgmt-compute SDK."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import FAST, RG, SCENARIO, Emulated, last_json

from vmss_rollout.cli.render import Clock, history_row, plan_summary
from vmss_rollout.emulator.launch import emulator_process
from vmss_rollout.engine.events import Event, EventKind

INSTANCES = 30


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("operator")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=INSTANCES))
    with emulator_process(scenario, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        yield Emulated(info, tmp, scenario)


def status(emu: Emulated) -> dict[str, Any]:
    result = emu.cli("status", "-g", RG, "-n", emu.name, "-o", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def upgrade(emu: Emulated, version: str, *args: str) -> Any:
    """``upgrade`` to image ``version`` with batches of 15 (two waves)."""
    return emu.cli(
        "upgrade",
        "-g",
        RG,
        "-n",
        emu.name,
        "--image-version",
        version,
        "-s",
        "batch:size=15",
        *args,
    )


def arm(emu: Emulated, *args: str) -> Any:
    """A command with -g/-n and the emulator's endpoint."""
    return emu.cli(
        args[0], "-g", RG, "-n", emu.name, *args[1:], "--arm-endpoint", emu.info["endpoint"]
    )


def plan(emu: Emulated, *args: str) -> Any:
    return emu.cli(
        "plan", "-g", RG, "-n", emu.name, "--image-version", "99.0.0", "--runs", "4", *args
    )


# --------------------------------------------------------------------------- item 3


def test_plan_text_shows_halts_demand_degraded_failed_and_assumed_timings(
    emu: Emulated, tmp_path: Any
) -> None:
    result = plan(emu, "-s", "batch:size=10")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "halted in 0 of 4 runs" in text
    # 30 instances, batches of 10: 20 serve, demand is 80% = 24
    assert "lowest serving: 20 of 30 (BELOW demand 24 = 80%)" in text
    assert re.search(r"degraded \(below demand\): mean \d", text)
    assert "failed or unhealthy instances: mean 0, max 0" in text
    assert "assumed (built-in default scenario): upgrade lognormal(mean=4m, sd=1m)" in text
    scenario = tmp_path / "slow.toml"
    scenario.write_text('[timing]\nupgrade = "fixed(10m)"\n[demand]\nrequired = "50%"\n')
    mine = plan(emu, "-s", "batch:size=10", "--scenario", str(scenario))
    assert mine.returncode == 0, mine.stderr
    assert f"assumed (--scenario {scenario}): upgrade fixed(10m)" in " ".join(mine.stdout.split())
    assert "lowest serving: 20 of 30 (meets demand 15 = 50%)" in mine.stdout
    data = json.loads(plan(emu, "-s", "batch:size=10", "-o", "json").stdout)
    assert data["assumed"]["origin"] == "built-in default scenario"
    assert data["assumed"]["required_count"] == 24


def test_plan_summary_names_the_halt_reasons() -> None:
    stats = {"mean": 1.0, "p50": 60.0, "p95": 90.0, "min": 5.0, "max": 2.0}
    result = {
        "simulation": {
            "runs": 10,
            "halted_runs": 3,
            "halt_reasons": ["max unhealthy"],
            "duration_s": stats,
            "min_serving": stats,
            "degraded_s": stats,
            "failed": stats,
        },
        "outage_runs": 1,
        "assumed": {
            "origin": "built-in default scenario",
            "upgrade": "fixed(1m)",
            "health_delay": "fixed(30s)",
            "upgrade_failure": 0.1,
            "unhealthy_after_upgrade": 0.0,
            "required": "80%",
            "required_count": 8,
        },
    }
    lines = plan_summary(result, 10)
    assert "halted in 3 of 10 runs (max unhealthy)" in lines
    assert "lowest serving: 5 of 10 (BELOW demand 8 = 80%)" in lines
    assert "outage (nothing serving) in 1 of 10 runs" in lines[3]
    assert "upgrade failure 0.1" in lines[-1]


def test_live_view_clock_counts_down_pause_and_bake_on_a_fake_clock() -> None:
    from vmss_rollout.backends.clock import Clock as TimeSource

    now = [100.0]
    clock = Clock(600.0, TimeSource(wall_monotonic=lambda: now[0]))
    now[0] = 160.0
    assert clock.line() == "elapsed 1m00s; ETA 9m00s (plan: 10m00s)"
    clock.event(Event(0.0, EventKind.WAVE_COMPLETED, "rolling", wave=1), pause=30.0, bake=0.0)
    now[0] = 170.0
    assert clock.line(done=5, scope=10) == (
        "elapsed 1m10s; ETA 8m50s (plan: 10m00s); ~1m10s at the pace so far; pause: 20.0s left"
    )
    clock.event(Event(0.0, EventKind.CHECKPOINT, "rolling"), pause=30.0, bake=120.0)
    assert clock.line().endswith("bake: 2m00s left")
    clock.event(Event(0.0, EventKind.WAVE_STARTED, "rolling", wave=2), pause=30.0, bake=120.0)
    assert "left" not in clock.line()
    now[0] = 800.0
    assert clock.line() == "elapsed 11m40s; over the plan's 10m00s by 1m40s"


def test_upgrade_o_json_streams_events_then_the_summary(emu: Emulated) -> None:
    result = upgrade(emu, emu.next_target(), "--yes", "-o", "json", *FAST)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    events = lines[:-1]
    assert all(e["type"] == "event" for e in events)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "rollout_started" and kinds[-1] == "rollout_finished"
    assert kinds.count("wave_started") == 2
    assert sum(len(e["instances"]) for e in events if e["kind"] == "instance_healthy") == 30
    assert lines[-1]["rollout"]["state"] == "completed"
    # --query: only the summary, filtered
    query = upgrade(emu, emu.next_target(), "--yes", "--query", "rollout.state", *FAST)
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout) == "completed"


def test_upgrade_json_alias_streams_events_as_they_happen_like_o_json(emu: Emulated) -> None:
    """``--json`` is ``-o json``: the events arrive on stdout while the rollout
    runs (the canary's checkpoint line is read while the process still runs
    and instances are still on the old image), in the same kinds and counts."""
    import subprocess

    def shape(lines: list[dict[str, Any]]) -> tuple[Any, ...]:
        """What does not depend on when a poll saw an instance."""
        events = [e for e in lines[:-1] if e["type"] == "event"]
        kinds = [e["kind"] for e in events]
        healthy = sum(len(e["instances"]) for e in events if e["kind"] == "instance_healthy")
        waves = [len(e["instances"]) for e in events if e["kind"] == "wave_started"]
        return kinds[0], kinds[-1], kinds.count("checkpoint"), waves, healthy, sorted(lines[-1])

    args = ["-s", "batch:size=15", "--canary", "1", "--bake", "2s", "--yes", *FAST]
    target = emu.next_target()
    command = emu.command(
        "upgrade", "-g", RG, "-n", emu.name, "--image-version", target, "--json", *args
    )
    proc = subprocess.Popen(command, env=emu.env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    during: tuple[int | None, int] | None = None
    for line in proc.stdout:
        lines.append(json.loads(line))
        if during is None and lines[-1].get("kind") == "checkpoint":
            # after the canary: the bake and two waves of 15 are still to come
            on_target = sum(f":{target} (" in s["model"] for s in emu.state()["instances"].values())
            during = (proc.poll(), on_target)
    assert proc.wait(timeout=180) == 0
    assert during is not None and during[0] is None  # read while the process ran
    assert during[1] < INSTANCES  # ...before the rollout finished
    assert lines[-1]["rollout"]["state"] == "completed"
    explicit = upgrade(emu, emu.next_target(), "-o", "json", *args[2:])
    assert explicit.returncode == 0, explicit.stderr
    streamed = [json.loads(line) for line in explicit.stdout.splitlines()]
    assert shape(streamed) == shape(lines)
    assert shape(lines)[:5] == ("rollout_started", "rollout_finished", 1, [1, 15, 14], 30)


def test_resume_o_json_streams_the_rest_of_the_rollout(emu: Emulated) -> None:
    started = upgrade(emu, emu.next_target(), "--yes", "--no-wait", "--json", *FAST)
    assert started.returncode == 0, started.stderr
    rollout = last_json(started.stdout)["rollout"]["id"]
    resumed = emu.cli("resume", rollout, "--yes", "-o", "json", *FAST[:2])
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert {e["kind"] for e in lines[:-1]} >= {"wave_started", "instance_healthy"}
    assert lines[-1]["completed"] and lines[-1]["rollout"]["id"] == rollout


def test_upgrade_prompt_shows_the_plan_and_refuses_without_a_terminal(emu: Emulated) -> None:
    before = emu.writes()
    result = upgrade(emu, "77.0.0", "--canary", "2", "--bake", "5m")
    assert result.returncode == 2
    err = " ".join(result.stderr.split())
    assert re.search(r"predicted over 20 simulated runs: duration p50 \S+, p95 \S+", err)
    assert "lowest serving: 15 of 30 (BELOW demand 24 = 80%)" in err
    assert "canary 2, bake 5m00s" in err
    assert "confirmation needed" in err
    assert emu.writes() == before


# --------------------------------------------------------------------------- item 4


@pytest.mark.parametrize("command", ["status", "history"])
def test_output_formats_and_query_on_operator_commands(emu: Emulated, command: str) -> None:
    args = [command, "-g", RG, "-n", emu.name]
    as_json = emu.cli(*args, "-o", "json")
    alias = emu.cli(*args, "--json")
    assert as_json.returncode == alias.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    # the journal has rows once an upgrade ran; status always has instances
    rows = data["instances"] if command == "status" else data
    key = "instance_id" if command == "status" else "id"
    tsv = emu.cli(*args, "-o", "tsv")
    assert tsv.returncode == 0, tsv.stderr
    assert len(tsv.stdout.splitlines()) == len(rows)
    as_csv = list(csv.DictReader(io.StringIO(emu.cli(*args, "-o", "csv").stdout)))
    assert [r[key] for r in as_csv] == [str(r[key]) for r in rows]
    query = "instances[?state=='latest'].instance_id" if command == "status" else "[].id"
    queried = emu.cli(*args, "--query", query)
    assert json.loads(queried.stdout) == [
        r[key] for r in rows if command != "status" or r["state"] == "latest"
    ]
    bad = emu.cli(*args, "-o", "yaml")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --output: expected one of")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_plan_and_instances_take_output_and_query(emu: Emulated) -> None:
    waves = plan(emu, "-s", "update-domain", "-o", "tsv")
    assert waves.returncode == 0, waves.stderr
    assert len(waves.stdout.splitlines()) == 5  # one row per wave
    first = json.loads(plan(emu, "-s", "update-domain", "--query", "waves[0]").stdout)
    assert sorted(first, key=int) == ["0", "5", "10", "15", "20", "25"]
    restart = arm(
        emu,
        "instances",
        "restart",
        "--only-instances",
        "3,4",
        "--yes",
        "--query",
        "instances",
        *FAST[:2],
    )
    assert restart.returncode == 0, restart.stderr
    assert json.loads(restart.stdout) == ["3", "4"]


# --------------------------------------------------------------------------- item 7


def test_plan_collapses_long_wave_tables_unless_all_waves(emu: Emulated) -> None:
    short = plan(emu, "-s", "one-at-a-time")
    assert short.returncode == 0, short.stderr
    rows = [line for line in short.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 21  # 10 first, one range, 10 last
    assert "11-20" in short.stdout and "10 instances in 10 waves" in short.stdout
    full = plan(emu, "-s", "one-at-a-time", "--all-waves")
    assert len([line for line in full.stdout.splitlines() if line.startswith("│")]) == 30
    data = json.loads(plan(emu, "-s", "one-at-a-time", "--json").stdout)
    assert len(data["waves"]) == 30


def test_status_names_failed_and_stopped_instances_and_its_legend_fits_80_columns(
    emu: Emulated,
) -> None:
    off = arm(emu, "instances", "power-off", "--only-instances", "7,12", "--yes", *FAST[:2])
    assert off.returncode == 0, off.stderr
    env = {**emu.env, "COLUMNS": "80"}
    text = emu.cli("status", "-g", RG, "-n", emu.name, env=env)
    assert text.returncode == 0, text.stderr
    assert "stopped (2): 7 12" in text.stdout
    legend = [line for line in text.stdout.splitlines() if "latest" in line and "protected" in line]
    assert len(legend) == 1 and len(legend[0]) <= 80, text.stdout
    assert all(len(line) <= 80 for line in text.stdout.splitlines()[2:])
    on = arm(emu, "instances", "start", "--only-instances", "7,12", "--yes", *FAST[:2])
    assert on.returncode == 0, on.stderr


def test_status_draws_one_heat_map_per_zone_with_the_legend_on_one_line() -> None:
    from rich.console import Console

    from vmss_rollout.cli.operate import heat_maps
    from vmss_rollout.engine.model import Instance, ProvisioningState

    fleet = [
        Instance(str(n), n % 5, 0, zone=str(1 + n % 3), provisioning=ProvisioningState.FAILED)
        if n == 4
        else Instance(str(n), n % 5, 0, zone=str(1 + n % 3))
        for n in range(12)
    ]
    console = Console(width=80, record=True, color_system=None)
    console.print(heat_maps(fleet))
    text = console.export_text()
    titles = [line for line in text.splitlines() if line.startswith("zone ")]
    assert [t.split(":")[0] for t in titles] == ["zone 1", "zone 2", "zone 3"]
    # zone 2 holds 1, 4, 7, 10: its map alone names instance 4, and no other zone's
    zone2 = text.split("zone 2:")[1].split("zone 3:")[0]
    cells = re.findall(r"│ +2/\d │ ([\d ]+?) +│", zone2)
    assert sorted(int(i) for cell in cells for i in cell.split()) == [1, 4, 7, 10]
    legend = text.strip().splitlines()[-1]
    assert "latest" in legend and "protected" in legend and len(legend) <= 80


def test_history_shows_target_duration_and_iso_times(emu: Emulated) -> None:
    emu.upgrade("-s", "batch:size=15")
    result = emu.cli("history", "-g", RG, "-n", emu.name)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result.stdout)
    assert f"{emu.version}.0.0" in result.stdout  # the target
    # at 80 columns: one block per rollout, nothing wrapped
    narrow = emu.cli("history", "-g", RG, "-n", emu.name, env={**emu.env, "COLUMNS": "80"})
    lines = narrow.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), narrow.stdout
    assert re.search(
        rf"^  target +\S+:{emu.version}\.0\.0 \(Standard_D2s_v5\)$", narrow.stdout, re.M
    )
    assert re.search(r"^  started +\S+Z +finished \S+Z +\(\S+\)$", narrow.stdout, re.M)
    data = json.loads(emu.cli("history", "-g", RG, "-n", emu.name, "-o", "json").stdout)
    newest = data[0]
    assert newest["target"].endswith(f"{emu.version}.0.0 (Standard_D2s_v5)")
    assert newest["duration_s"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", newest["finished"])


def test_history_row_of_a_running_rollout_counts_to_now() -> None:
    record = {
        "id": "r-1",
        "scale_set_id": "x",
        "target_model": {"image": {"id": "/a/b/images/img/versions/2.0.0"}, "vm_size": "S"},
        "started_at": 0.0,
        "finished_at": None,
    }
    row = history_row(record, 90.0)
    assert row["duration_s"] == 90.0 and row["finished"] == ""
    assert row["started"] == "1970-01-01T00:00:00Z"


# --------------------------------------------------------------------------- item 8


def test_instances_delete_removes_the_chosen_instances_and_lowers_capacity(
    emu: Emulated,
) -> None:
    before = status(emu)
    ids = {i["instance_id"] for i in before["instances"]}
    fd2_ud = [i["instance_id"] for i in before["instances"] if i["update_domain"] == 4][:2]
    chosen = ",".join(fd2_ud)
    result = arm(
        emu, "instances", "delete", "--only-instances", chosen, "--yes", "-o", "json", *FAST[:2]
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["instances"] == fd2_ud and data["capacity"] == before["capacity"] - 2
    after = status(emu)
    assert {i["instance_id"] for i in after["instances"]} == ids - set(fd2_ud)
    assert after["capacity"] == before["capacity"] - 2
    refused = arm(emu, "instances", "delete", "--only-instances", "1")
    assert refused.returncode == 2 and "confirmation needed" in refused.stderr


def test_scale_out_and_in_waits_and_says_what_azure_removes(emu: Emulated) -> None:
    start = status(emu)
    n = len(start["instances"])
    out = arm(emu, "scale", "--capacity", str(n + 3), "--yes", "-o", "json", *FAST[:2])
    assert out.returncode == 0, out.stderr
    grown = json.loads(out.stdout)
    assert len(grown["added"]) == 3 and grown["removed"] == []
    # overprovisioned extras were created and deleted by the platform before the wait ended
    after = status(emu)
    assert len(after["instances"]) == n + 3 == after["capacity"]
    assert all(i["provisioning"] == "Succeeded" for i in after["instances"])
    back = arm(
        emu, "scale", "-c", str(n), "--yes", "--query", "[removed, scale_in_policy]", *FAST[:2]
    )
    assert back.returncode == 0, back.stderr
    removed, policy = json.loads(back.stdout)
    assert len(removed) == 3 and "scaleInPolicy Default" in policy
    assert len(status(emu)["instances"]) == n


def test_instances_and_scale_are_journaled_and_history_shows_them(emu: Emulated) -> None:
    """Each ``instances ACTION`` and ``scale`` is an operation in the journal:
    action, what it targeted, the instances, ISO times, duration, outcome (a
    refused write: failed with Azure's reason; no confirmation: nothing)."""

    def operations() -> list[dict[str, Any]]:
        result = emu.cli("history", "-g", RG, "-n", emu.name, "-o", "json")
        assert result.returncode == 0, result.stderr
        return [r for r in json.loads(result.stdout) if r["kind"] == "operation"]

    before = len(operations())
    n = len(status(emu)["instances"])
    restart = arm(
        emu, "instances", "restart", "--only-instances", "2,5", "--yes", "-o", "json", *FAST[:2]
    )
    assert restart.returncode == 0, restart.stderr
    out = arm(emu, "scale", "--capacity", str(n + 1), "--yes", "-o", "json", *FAST[:2])
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)["added"]
    back = arm(emu, "scale", "--capacity", str(n), "--yes", "-o", "json", *FAST[:2])
    assert back.returncode == 0, back.stderr
    removed = json.loads(back.stdout)["removed"]
    unconfirmed = arm(emu, "instances", "deallocate", "--only-instances", "2")
    assert unconfirmed.returncode == 2 and len(operations()) == before + 3
    emu.faults(auth_failure="403-writes")
    try:
        refused = arm(emu, "instances", "power-off", "--only-instances", "7", "--yes", *FAST[:2])
    finally:
        emu.faults(auth_failure="")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr

    ops = operations()[:4]  # newest first
    assert [(o["action"], o["state"]) for o in ops] == [
        ("power-off", "failed"),
        ("scale", "completed"),
        ("scale", "completed"),
        ("restart", "completed"),
    ]
    failed, scale_in, scale_out, restarted = ops
    assert "not authorized" in failed["reason"] or "403" in failed["reason"], failed
    assert failed["instances"] == ["7"] and failed["target"] == "1 instance: 7"
    assert scale_out["request"] == {"capacity": n + 1, "previous": n}
    assert scale_out["result"]["added"] == added and scale_out["instances"] == added
    assert scale_out["target"] == f"capacity {n} -> {n + 1}; added {' '.join(added)}"
    assert scale_in["result"]["removed"] == removed
    assert restarted["id"] == json.loads(restart.stdout)["operation"]
    assert restarted["instances"] == ["2", "5"] and restarted["target"] == "2 instances: 2 5"
    for o in ops:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", o["finished"])
        assert o["duration_s"] >= 0 and "@" in o["driver"]
    # the text: one block per operation at 80 columns, a row in the wide table
    narrow = emu.cli("history", "-g", RG, "-n", emu.name, env={**emu.env, "COLUMNS": "80"})
    assert all(len(line) <= 80 for line in narrow.stdout.splitlines()), narrow.stdout
    assert re.search(
        rf"^{scale_out['id']}  completed  scale  {RG}/{emu.name}$", narrow.stdout, re.M
    )
    assert f"  target    capacity {n} -> {n + 1}; added" in narrow.stdout
    assert re.search(rf"^{failed['id']}  failed  power-off ", narrow.stdout, re.M)
    wide = emu.cli("history", "-g", RG, "-n", emu.name)
    assert "strategy / action" in wide.stdout and restarted["id"] in wide.stdout


@pytest.mark.parametrize("command", ["instances", "scale"])
def test_an_unwritable_journal_refuses_before_any_change(
    emu: Emulated, tmp_path: Any, command: str
) -> None:
    before = emu.writes()
    args = ["restart", "--only-instances", "3"] if command == "instances" else ["-c", "31"]
    result = arm(emu, command, *args, "--yes", "--journal", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: journal {tmp_path}: is a directory; give the path of a file"
    )
    assert emu.writes() == before


@pytest.mark.parametrize(
    ("capacity", "message"),
    [
        ("-1", "--capacity: must be 0 or more, got -1"),
        ("1001", "--capacity: 1001 is above Azure's limit of 1000 instances per scale set"),
        ("101", "--capacity: 101 is above 100, the most in a single placement group"),
        ("99999999999999999999", "--capacity: 99999999999999999999 is above Azure's limit"),
        ("abc", "--capacity' / '-c': Input should be a valid integer"),
    ],
)
def test_scale_refuses_capacities_azure_refuses(emu: Emulated, capacity: str, message: str) -> None:
    before = emu.writes()
    result = arm(emu, "scale", "--capacity", capacity, "--yes")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert emu.writes() == before


def test_scale_and_instances_delete_are_in_help(emu: Emulated) -> None:
    root = emu.cli("--help").stdout
    assert re.search(r"scale\s+Scale a scale set out or in", root)
    scale = emu.cli("scale", "--help").stdout
    assert "--capacity" in scale and "scaleInPolicy" in scale and "<int>" not in scale
    assert "delete" in emu.cli("instances", "--help").stdout
    assert "--all-waves" in emu.cli("plan", "--help").stdout


def test_named_states_lists_failed_and_unhealthy_ids_in_order() -> None:
    from vmss_rollout.cli.render import named_states

    listed = [
        {"instance_id": "3", "state": "failed"},
        {"instance_id": "5", "state": "latest"},
        {"instance_id": "12", "state": "unhealthy"},
        {"instance_id": "17", "state": "failed"},
    ]
    assert named_states(listed, ("failed", "unhealthy", "stopped")) == [
        "failed (2): 3 17",
        "unhealthy (1): 12",
    ]
