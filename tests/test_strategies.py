"""Strategy specs, discovery through entry points, and each built-in's waves
on a hand-made view (no simulator)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmss_rollout.engine.errors import InputError, StrategyLoadError
from vmss_rollout.engine.model import Instance
from vmss_rollout.engine.options import EngineOptions
from vmss_rollout.engine.rollout import PhaseView
from vmss_rollout.strategies import InstanceInfo, make, parse_spec, registry

BUILTINS = {
    "one-at-a-time",
    "update-domain",
    "fault-domain",
    "zone",
    "batch",
    "window",
    "surge",
    "azure-rolling",
    "all-at-once",
}


def fleet(n: int, uds: int = 5, fds: int = 3, zones: tuple[str, ...] = ()) -> list[InstanceInfo]:
    out = []
    for i in range(n):
        zone = zones[i % len(zones)] if zones else ""
        j = i // len(zones) if zones else i
        out.append(InstanceInfo(str(i), j % uds, j % fds, zone))
    return out


def view(infos: list[InstanceInfo], unhealthy: int = 0) -> PhaseView:
    return PhaseView(infos, lambda: len(infos), lambda: unhealthy)


def test_builtins_are_discovered_through_the_entry_point_group() -> None:
    assert set(registry.available()) >= BUILTINS
    assert set(registry.builtin_names()) == BUILTINS


def test_parse_spec() -> None:
    assert parse_spec("batch") == ("batch", {})
    assert parse_spec(" window:max-unavailable=3 ") == ("window", {"max-unavailable": "3"})
    assert parse_spec("azure-rolling:max-surge=true,max-batch-instance-percent=40") == (
        "azure-rolling",
        {"max-surge": "true", "max-batch-instance-percent": "40"},
    )


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("nope", "unknown strategy 'nope' (installed: all-at-once, azure-rolling, batch"),
        ("batch:colour=red", "unknown parameter 'colour' (valid: size, percent)"),
        ("batch:size=0", "batch:size: must be >= 1"),
        ("batch:size=two", "batch:size: expected a whole number"),
        ("batch:percent=150", "batch:percent: must be in (0, 100]"),
        ("batch:size=2,percent=20", "give size or percent, not both"),
        ("window:max-unavailable=0", "count must be a whole number >= 1"),
        ("window:max-unavailable=120%", "percentage must be in (0, 100]"),
        ("batch:size", "expected key=value"),
        ("batch:size=1,size=2", "given twice"),
        (":size=1", "missing strategy name"),
        ("azure-rolling:max-batch-instance-percent=3", "must be between 5 and 100"),
        ("azure-rolling:max-surge=maybe", "expected true or false"),
        ("update-domain:order=", "expected asc, desc or a list"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, needle: str) -> None:
    with pytest.raises(InputError) as err:
        make(spec)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_spec_round_trips() -> None:
    for spec in [
        "batch:size=3",
        "window:max-unavailable=25%",
        "update-domain:order=desc",
        "azure-rolling:max-batch-instance-percent=40,max-surge=true",
        "surge",
    ]:
        assert make(make(spec).spec()).spec() == make(spec).spec()
        assert make(spec).spec() == spec


def test_every_builtin_describes_parameters_and_guarantee() -> None:
    described = {d["name"]: d for d in registry.describe()}
    assert set(described) >= BUILTINS
    for name in BUILTINS:
        assert described[name]["guarantee"]
        assert described[name]["summary"]
    assert [p["name"] for p in described["batch"]["parameters"]] == ["size", "percent"]


def test_one_at_a_time_and_lock_step() -> None:
    v = view(fleet(10))
    s = make("one-at-a-time")
    assert s.next_wave(v) == ["0"]
    v.start("0")
    assert s.next_wave(v) == []
    assert make("batch:size=3").next_wave(view(fleet(10))) == ["0", "1", "2"]
    assert make("batch:percent=50").next_wave(view(fleet(10))) == ["0", "1", "2", "3", "4"]
    assert make("batch").next_wave(view(fleet(10))) == ["0", "1"]  # default 20%


def test_window_tops_up() -> None:
    v = view(fleet(10))
    s = make("window:max-unavailable=3")
    first = s.next_wave(v)
    assert first == ["0", "1", "2"]
    for i in first:
        v.start(i)
    assert s.next_wave(v) == []
    from vmss_rollout.engine.rollout import Resolution

    v.resolve("1", Resolution.DONE)
    assert s.next_wave(v) == ["3"]


def test_update_domain_orders() -> None:
    infos = fleet(10, uds=5)
    assert make("update-domain").next_wave(view(infos)) == ["0", "5"]
    assert make("update-domain:order=desc").next_wave(view(infos)) == ["4", "9"]
    assert make("update-domain:order=3/1").next_wave(view(infos)) == ["3", "8"]
    assert make("fault-domain").next_wave(view(fleet(9, fds=3))) == ["0", "3", "6"]


def test_zone_goes_zone_by_zone_and_update_domain_within() -> None:
    infos = fleet(12, uds=2, zones=("1", "2", "3"))
    v = view(infos)
    wave = make("zone").next_wave(v)
    assert {infos[int(i)].zone for i in wave} == {"1"}
    assert {infos[int(i)].update_domain for i in wave} == {0}
    assert make("zone:order=3/1/2").next_wave(v)[0] == "2"


def test_azure_rolling_batches_within_an_update_domain_and_shrink_with_unhealthy() -> None:
    infos = fleet(50, uds=5)  # 10 per update domain; batch = 20% of 50 = 10
    s = make("azure-rolling")
    assert len(s.next_wave(view(infos))) == 10
    assert {infos[int(i)].update_domain for i in s.next_wave(view(infos))} == {0}
    # 8 unhealthy of 50, max 20% = 10 -> the batch shrinks to 2
    assert len(s.next_wave(view(infos, unhealthy=8))) == 2
    small = fleet(5)
    assert len(make("azure-rolling").next_wave(view(small))) == 1  # <= 5 instances: 1 per batch


def test_azure_rolling_prioritizes_unhealthy() -> None:
    infos = fleet(10, uds=5)
    infos[7] = InstanceInfo("7", 2, 1, "", healthy=False)
    s = make("azure-rolling:prioritize-unhealthy-instances=true")
    assert s.next_wave(view(infos))[0] == "7"


def test_azure_rolling_maps_its_policy_onto_engine_options() -> None:
    base = EngineOptions(max_unhealthy=50)
    assert make("azure-rolling").engine_options(base).max_unhealthy == 50
    opts = make(
        "azure-rolling:max-unhealthy-instance-percent=30,pause-time-between-batches=2m"
    ).engine_options(base)
    assert (opts.max_unhealthy, opts.pause) == (30, 120)


def test_guarantees() -> None:
    infos = fleet(20, uds=5, fds=3)
    assert make("one-at-a-time").max_down(infos, 20) == 1
    assert make("update-domain").max_down(infos, 20) == 4
    assert make("fault-domain").max_down(infos, 20) == 7
    assert make("batch:size=3").max_down(infos, 20) == 3
    assert make("window:max-unavailable=25%").max_down(infos, 20) == 5
    assert make("surge:max-surge=4").max_down(infos, 20) == 0
    assert make("all-at-once").max_down(infos, 20) == 20
    assert make("azure-rolling").max_down(infos, 20) == 4


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A third-party distribution on sys.path registering one strategy, found by
    importlib.metadata exactly as an installed package's would be."""
    (tmp_path / "evens_plugin.py").write_text(
        textwrap.dedent("""
        from dataclasses import dataclass, field
        from vmss_rollout.strategies import StrategyBase

        @dataclass(frozen=True)
        class EvensFirst(StrategyBase):
            name = "evens-first"
            summary = "Even instance ids first, two at a time."
            size: int = field(default=2, metadata={"help": "instances per wave"})

            def next_wave(self, view):
                if view.in_flight:
                    return []
                evens = [i for i in view.pending if int(i) % 2 == 0]
                return (evens or list(view.pending))[: self.size]

            def max_down(self, scope, fleet_size):
                return min(self.size, len(scope))

            def guarantee(self):
                return f"at most {self.size} down"
    """)
    )
    info = tmp_path / "evens_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evens-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[vmss_rollout.strategies]\nevens-first = evens_plugin:EvensFirst\n"
        "broken = evens_plugin:DoesNotExist\none-at-a-time = evens_plugin:EvensFirst\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(registry.DISABLE_ENV, raising=False)
    registry._entry_points.cache_clear()
    yield tmp_path
    registry._entry_points.cache_clear()
    sys.modules.pop("evens_plugin", None)


def test_third_party_plugin_is_discovered_and_runs(plugin_dist: Path) -> None:
    from vmss_rollout.sim import default_scenario, run_once

    assert "evens-first" in registry.available()
    s = make("evens-first:size=3")
    assert s.next_wave(view(fleet(10))) == ["0", "2", "4"]
    result = run_once(default_scenario(), "evens-first:size=3", seed=3, record=True)
    assert result.upgraded == 20 and not result.halted
    assert result.waves()[0] == ("0", "2", "4")


def test_a_plugin_cannot_shadow_a_builtin(plugin_dist: Path) -> None:
    assert type(make("one-at-a-time")).__module__ == "vmss_rollout.strategies.builtin"


def test_a_broken_plugin_names_its_entry_point_and_package(plugin_dist: Path) -> None:
    with pytest.raises(StrategyLoadError) as err:
        make("broken")
    message = str(err.value)
    assert "broken = evens_plugin:DoesNotExist" in message
    assert "evens-plugin" in message


def test_the_off_switch_hides_third_party_plugins(
    plugin_dist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(registry.DISABLE_ENV, "1")
    assert "evens-first" not in registry.available()
    assert set(registry.available()) == BUILTINS
    with pytest.raises(StrategyLoadError):
        make("evens-first")


def test_instances_know_their_domains() -> None:
    inst = Instance("3", 2, 1, "2")
    assert inst.evolve(update_domain=4).update_domain == 4
    with pytest.raises(TypeError):
        inst.evolve(colour="red")


def test_internal_fields_are_not_parameters() -> None:
    described = {d["name"]: d for d in registry.describe()}
    assert [p["name"] for p in described["update-domain"]["parameters"]] == ["order"]
    with pytest.raises(InputError, match="unknown parameter 'kind'"):
        make("update-domain:kind=zone")
