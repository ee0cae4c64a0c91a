"""Surge is crash-safe, through the real SDK against the emulator (issue 8,
case 5).

A surge wave raises the capacity, waits for the new instance to be healthy,
then deletes the old one. Killed (SIGKILL) anywhere in between, ``resume``
finds the replacement the killed process asked for and uses it: the scale set
ends at its original capacity, every original instance is deleted once, no
instance is created beyond one per original, and nothing is upgraded in place.

Also the emulator: deleting instances lowers the stored ``sku.capacity`` (as
Azure does), so a later model PATCH does not scale the set out again.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import FAST, RG, SCENARIO, Emulated

from vmss_rollout.backends.journal import Journal
from vmss_rollout.emulator.launch import emulator_process

N = 10


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("surge")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=N))
    with emulator_process(scenario, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        yield Emulated(info, tmp, scenario)


def created_and_deleted(emu: Emulated) -> tuple[list[str], Counter[str]]:
    """Instances that came into being (the emulator's per-instance history),
    and how many accepted delete requests named each (its request log), since
    the last reset."""
    created: list[str] = []
    seen: set[str] = set()
    for change in emu.admin("history")["history"]:
        iid = change["instance_id"]
        if iid not in seen and change["provisioning"] == "Creating":
            created.append(iid)
        seen.add(iid)
    deleted = Counter(
        iid
        for entry in emu.admin("requests")["log"]
        if entry["operation"].endswith(".delete") and entry["status"] < 300
        for iid in entry["instance_ids"]
    )
    return created, deleted


def test_a_model_update_after_surge_does_not_scale_the_set_out(emu: Emulated) -> None:
    """The stored capacity follows deletions: a surge rollout then an in-place
    one leave N instances, not N + the surge."""
    result, _ = emu.upgrade("--strategy", "surge:max-surge=2")
    assert result.returncode == 0, result.stderr
    assert len(emu.state()["instances"]) == N
    with emu.sdk() as client:
        vmss = client.virtual_machine_scale_sets.get("vmss-rollout-rg", emu.name)
        assert vmss.sku.capacity == N
    result, _ = emu.upgrade("--strategy", "one-at-a-time")
    assert result.returncode == 0, result.stderr
    assert len(emu.state()["instances"]) == N


#: seeded kill points (at least 10): the k-th event line of a kind a surge rollout prints
KILLS = 12
KINDS = (
    "model_updated",
    "wave_started",
    "surge_created",
    "instance_healthy",
    "instance_delete_requested",
    "wave_completed",
)
#: an event-log line: "HH:MM:SS kind instances detail"
EVENT = re.compile(r"^\d\d:\d\d:\d\d ([a-z_]+)")


def test_surge_killed_at_seeded_moments_then_resumed(emu: Emulated) -> None:
    rng = random.Random(8)
    moments = []
    found = 0
    for cycle in range(KILLS):
        emu.admin("reset-counts", {})
        originals = set(emu.state()["instances"])
        assert len(originals) == N
        target = emu.next_target()
        # every kind once, then seeded; the k-th line of that kind (5 waves of 2)
        kind = KINDS[cycle] if cycle < len(KINDS) else rng.choice(KINDS)
        nth = 1 if kind == "model_updated" else rng.randrange(1, 5)
        seen = [0]

        def on_line(
            line: str,
            proc: subprocess.Popen[str],
            seen: list[int] = seen,
            kind: str = kind,
            nth: int = nth,
        ) -> None:
            match = EVENT.match(line)
            if match and match.group(1) == kind:
                seen[0] += 1
                if seen[0] == nth:
                    moments.append((kind, nth))
                    proc.kill()

        code, output = emu.watch_upgrade(
            "--strategy", "surge:max-surge=2", on_line=on_line, target=target
        )
        assert code == -signal.SIGKILL, output
        with Journal(emu.journal) as journal:
            rollout = journal.history(None, limit=1)[0].id
        resumed = emu.cli("resume", rollout, "--yes", "--json", *FAST[:2])
        assert resumed.returncode == 0, (kind, nth, resumed.stderr)
        with Journal(emu.journal) as journal:
            assert journal.check()
            assert journal.get(rollout).state == "completed"
            found += any("found on resume" in e["detail"] for e in journal.events(rollout))
        state = emu.state()
        marker = f":{target} ("
        # the original capacity, every instance on the target and healthy
        assert len(state["instances"]) == N, ((kind, nth), sorted(state["instances"]))
        with emu.sdk() as client:
            assert client.virtual_machine_scale_sets.get(RG, emu.name).sku.capacity == N
        for iid, inst in state["instances"].items():
            assert marker in inst["model"] and inst["latest_model_applied"], (iid, inst)
            assert inst["health"] == "healthy", (iid, inst)
        # surge never upgrades in place; each original deleted once, one new instance each
        assert sum(emu.upgrade_requests().values()) == 0
        created, deleted = created_and_deleted(emu)
        # overprovisioning (on by default, as on Azure) creates extras that the
        # platform deletes itself: the instances kept are one per original
        kept = [iid for iid in created if iid in state["instances"] or deleted[iid]]
        assert len(kept) == N, ((kind, nth), created)
        assert set(deleted) == originals and set(deleted.values()) == {1}, ((kind, nth), deleted)
        assert set(state["instances"]) == set(kept)
    assert len(moments) == KILLS, moments
    # some kills left a replacement asked for and not yet used: resume used it
    assert found >= 3, (found, moments)
