"""Scenario files, CLI overrides and duration distributions."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmss_rollout.engine.errors import InputError
from vmss_rollout.engine.options import MAX_DURATION_S, Amount, EngineOptions, Scope
from vmss_rollout.sim.distributions import (
    Distribution,
    Exponential,
    Fixed,
    LogNormal,
    Uniform,
    parse_distribution,
)
from vmss_rollout.sim.scenario import (
    Scenario,
    default_scenario,
    load_scenario,
    load_scenario_text,
)

FULL = """
name = "web-tier"
seed = 7
runs = 50
strategy = "batch:size=5"

[scale_set]
instances = 30
update_domains = 3
fault_domains = 2
zones = ["1", "2", "3"]
upgrade_policy = "rolling"

[timing]
upgrade = "uniform(1m, 5m)"
health_delay = "exponential(mean=45s)"

[faults]
upgrade_failure = 0.05
unhealthy_after_upgrade = 0.1
bad_image = true

[demand]
required = 24

[engine]
max_unhealthy = 30
canary = "10%"
pause = "1m30s"
checkpoints = ["25%", "50%"]
only_zones = ["1", "2"]
on_failure = "rollback"
"""


def check_message(excinfo: pytest.ExceptionInfo[InputError], key: str) -> None:
    """The error is one line that names ``key``."""
    message = str(excinfo.value)
    assert key in message
    assert "\n" not in message


# --- defaults and round trips ---


def test_default_scenario_values() -> None:
    sc = default_scenario()
    assert sc == Scenario()
    assert load_scenario(None) == sc
    assert (sc.name, sc.seed, sc.runs) == ("default", 1, 200)
    assert (sc.instances, sc.update_domains, sc.fault_domains) == (20, 5, 5)
    assert sc.zones == ()
    assert sc.upgrade_policy == "Manual"
    assert sc.upgrade == LogNormal(240, 60)
    assert sc.health_delay == Fixed(30)
    assert (sc.upgrade_failure, sc.unhealthy_after_upgrade, sc.bad_image) == (0.0, 0.0, False)
    assert sc.required == Amount(80, percent=True)
    assert sc.required_serving() == 16
    assert sc.strategy is None
    assert sc.engine == EngineOptions()


def test_empty_document_is_the_default() -> None:
    assert load_scenario_text("") == Scenario()


def test_full_file_parses_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "web.toml"
    path.write_text(FULL, encoding="utf-8")
    sc = load_scenario(path)
    assert sc.name == "web-tier"
    assert sc.strategy == "batch:size=5"
    assert sc.zones == ("1", "2", "3")
    assert sc.upgrade_policy == "Rolling"  # stored canonical
    assert sc.upgrade == Uniform(60, 300)
    assert sc.health_delay == Exponential(45)
    assert sc.bad_image is True
    assert sc.required == Amount(24) and sc.required_serving() == 24
    assert sc.engine.max_unhealthy == 30
    assert sc.engine.canary == Amount(10, percent=True)
    assert sc.engine.pause == 90
    assert sc.engine.checkpoints == (25.0, 50.0)
    assert sc.engine.scope == Scope(zones=frozenset({"1", "2"}))
    assert sc.engine.on_failure == "rollback"
    assert load_scenario_text(sc.to_toml()) == sc
    assert load_scenario(str(path)) == sc


def test_default_to_toml_round_trips_without_engine_table() -> None:
    text = Scenario().to_toml()
    assert "[engine]" not in text
    assert "strategy" not in text
    assert load_scenario_text(text) == Scenario()


@given(
    name=st.text(min_size=1).filter(lambda s: s.strip() != ""),
    seed=st.integers(0, 2**63 - 1),
    probability=st.floats(0, 1),
    mean=st.floats(1e-3, 1e6),
    percent=st.floats(0, 100),
    pause=st.floats(0, 1e5),
)
def test_to_toml_round_trips_awkward_values(
    name: str, seed: int, probability: float, mean: float, percent: float, pause: float
) -> None:
    sc = Scenario(
        name=name,
        seed=seed,
        upgrade_failure=probability,
        upgrade=LogNormal(mean, mean / 3),
        health_delay=Uniform(pause / 2, pause),
        required=Amount(percent, percent=True),
        engine=EngineOptions(pause=pause, canary=Amount(percent or 1, percent=True)),
    )
    assert load_scenario_text(sc.to_toml()) == sc


# --- distributions ---


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), (90.5, 90.5), ("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0),
     ("1h30m", 5400.0), (" 2M ", 120.0)],
)  # fmt: skip
def test_every_duration_form_is_a_fixed_distribution(text: object, seconds: float) -> None:
    assert parse_distribution(text, "timing.health_delay") == Fixed(seconds)


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("fixed(30s)", Fixed(30), "fixed(30s)"),
        ("uniform(1m, 5m)", Uniform(60, 300), "uniform(1m, 5m)"),
        ("exponential(mean=2m)", Exponential(120), "exponential(mean=2m)"),
        ("exponential(2m)", Exponential(120), "exponential(mean=2m)"),
        ("lognormal(mean=4m, sd=1m)", LogNormal(240, 60), "lognormal(mean=4m, sd=1m)"),
        ("  LogNormal ( sd = 60 , mean = 4M ) ", LogNormal(240, 60), "lognormal(mean=4m, sd=1m)"),
        ("lognormal(240, 0)", LogNormal(240, 0), "lognormal(mean=4m, sd=0s)"),
        ("uniform(low=1.5, high=2.25)", Uniform(1.5, 2.25), "uniform(1.5s, 2.25s)"),
    ],
)
def test_distribution_forms_parse_and_str_round_trips(
    text: str, expected: Distribution, canonical: str
) -> None:
    parsed = parse_distribution(text, "timing.upgrade")
    assert parsed == expected
    assert str(parsed) == canonical
    assert parse_distribution(str(parsed), "timing.upgrade") == parsed


@given(st.floats(0, MAX_DURATION_S / 2 - 1))  # uniform's high end is twice it
def test_str_round_trips_any_duration(seconds: float) -> None:
    for dist in (Fixed(seconds), Uniform(seconds, seconds * 2), LogNormal(seconds + 1, seconds)):
        assert parse_distribution(str(dist), "k") == dist


@pytest.mark.parametrize(
    ("dist", "tolerance"),
    [
        (Fixed(30), 0.0),
        (Uniform(60, 300), 0.02),
        (Exponential(120), 0.05),
        (LogNormal(240, 60), 0.02),
    ],
)
def test_samples_are_deterministic_with_the_right_mean(
    dist: Distribution, tolerance: float
) -> None:
    first = [dist.sample(random.Random(42)) for _ in range(3)]
    rng_a, rng_b = random.Random(42), random.Random(42)
    a = [dist.sample(rng_a) for _ in range(20_000)]
    b = [dist.sample(rng_b) for _ in range(20_000)]
    assert a == b  # bit for bit
    assert a[0] == first[0]
    assert min(a) >= 0
    assert abs(sum(a) / len(a) - dist.mean()) <= tolerance * dist.mean()


def test_lognormal_with_zero_sd_is_always_the_mean() -> None:
    rng = random.Random(3)
    assert {LogNormal(240, 0).sample(rng) for _ in range(10)} == {240.0}


@pytest.mark.parametrize(
    "text",
    ["normal(1m)", "fixed()", "fixed(1m, 2m)", "uniform(5m, 1m)", "uniform(1m)",
     "exponential(mean=0)", "lognormal(mean=4m)", "lognormal(mean=4m, sd=-1m)",
     "lognormal(mean=4m, mean=5m)", "lognormal(mean=4m, 1m)", "lognormal(mean=4m, sd=1m, x=2)",
     "fixed(abc)", "fixed(1m", "-5", -5, float("nan"), "", "soon", True, None, [1]],
)  # fmt: skip
def test_bad_distribution_is_one_line_input_error(text: object) -> None:
    with pytest.raises(InputError) as excinfo:
        parse_distribution(text, "timing.upgrade")
    message = str(excinfo.value)
    assert message.startswith("timing.upgrade: ")
    assert "lognormal(mean=D, sd=D)" in message  # says what is valid
    assert "\n" not in message


# --- validation errors ---


@pytest.mark.parametrize(
    ("text", "key"),
    [
        # unknown keys
        ("colour = 'red'", "colour"),
        ("[scale_set]\ncolour = 'red'", "scale_set.colour"),
        ("[network]\nx = 1", "network"),
        ("[engine]\nspeed = 3", "engine.speed"),
        # wrong types
        ('[scale_set]\ninstances = "ten"', "scale_set.instances"),
        ("[scale_set]\ninstances = true", "scale_set.instances"),
        ("[scale_set]\ninstances = 2.0", "scale_set.instances"),
        ('[faults]\nbad_image = "yes"', "faults.bad_image"),
        ('[scale_set]\nzones = "1"', "scale_set.zones"),
        ("[scale_set]\nzones = [1, 2]", "scale_set.zones"),
        ("scale_set = 3", "scale_set"),
        ("name = 3", "name"),
        ("seed = 1.5", "seed"),
        ("strategy = 5", "strategy"),
        ("engine = 5", "engine"),
        ("[demand]\nrequired = true", "demand.required"),
        # impossible values
        ("[scale_set]\ninstances = 0", "scale_set.instances"),
        ("[scale_set]\ninstances = 1000001", "scale_set.instances"),
        ("[scale_set]\nfault_domains = 6", "scale_set.fault_domains"),
        ("[scale_set]\nupdate_domains = 21", "scale_set.update_domains"),
        ('[scale_set]\nzones = ["1", "1"]', "scale_set.zones"),
        ('[scale_set]\nupgrade_policy = "Sometimes"', "scale_set.upgrade_policy"),
        ("[faults]\nupgrade_failure = 1.5", "faults.upgrade_failure"),
        ("[faults]\nunhealthy_after_upgrade = nan", "faults.unhealthy_after_upgrade"),
        ("runs = 0", "runs"),
        ("seed = -1", "seed"),
        ('[timing]\nhealth_delay = "-30s"', "timing.health_delay"),
        ('[timing]\nupgrade = "gaussian(1m)"', "timing.upgrade"),
        ('[demand]\nrequired = "120%"', "demand.required"),
        ('[demand]\nrequired = "nan"', "demand.required"),
        ("[demand]\nrequired = 21", "demand.required"),
        ("[engine]\nmax_unhealthy = 130", "engine.max_unhealthy"),
        ('[engine]\ncanary = "nan"', "engine.canary"),
    ],
)
def test_invalid_scenario_is_one_line_error_naming_the_key(text: str, key: str) -> None:
    with pytest.raises(InputError) as excinfo:
        load_scenario_text(text)
    check_message(excinfo, key)


def test_wrong_type_message_is_specific() -> None:
    with pytest.raises(InputError) as excinfo:
        load_scenario_text("[scale_set]\ninstances = 0")
    assert str(excinfo.value) == "scale_set.instances: expected a whole number >= 1, got 0"
    with pytest.raises(InputError) as excinfo:
        load_scenario_text("[scale_set]\ncolour = 1")
    assert str(excinfo.value).startswith("scale_set.colour: unknown key (valid: fault_domains, ")


def test_bad_toml_is_one_line_error_naming_the_source() -> None:
    with pytest.raises(InputError) as excinfo:
        load_scenario_text("[scale_set\ninstances = 3", source="web.toml")
    message = str(excinfo.value)
    assert message.startswith("web.toml: invalid TOML: ")
    assert "\n" not in message


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(InputError) as excinfo:
        load_scenario(missing)
    check_message(excinfo, str(missing))
    with pytest.raises(InputError) as excinfo:
        load_scenario(tmp_path)  # a directory is unreadable as a file
    check_message(excinfo, str(tmp_path))


def test_constructor_validates_too() -> None:
    with pytest.raises(InputError, match=r"^scale_set\.instances: "):
        Scenario(instances=0)
    with pytest.raises(InputError, match=r"^demand\.required: "):
        Scenario(required=Amount(-1))


# --- CLI overrides ---


def test_with_overrides_parses_raw_strings() -> None:
    sc = Scenario().with_overrides(
        name="canary-test",
        seed="9",
        runs="10",
        instances="50",
        update_domains="2",
        fault_domains="3",
        zones="1, 2,3",
        upgrade_policy="automatic",
        upgrade="fixed(5m)",
        health_delay="45s",
        upgrade_failure="0.25",
        unhealthy_after_upgrade=0.5,
        bad_image="yes",
        required="75%",
        strategy="batch:size=5",
    )
    assert sc == Scenario(
        name="canary-test",
        seed=9,
        runs=10,
        instances=50,
        update_domains=2,
        fault_domains=3,
        zones=("1", "2", "3"),
        upgrade_policy="Automatic",
        upgrade=Fixed(300),
        health_delay=Fixed(45),
        upgrade_failure=0.25,
        unhealthy_after_upgrade=0.5,
        bad_image=True,
        required=Amount(75, percent=True),
        strategy="batch:size=5",
    )
    assert sc.required_serving() == 38  # 75% of 50, rounded up


def test_with_overrides_ignores_none_and_accepts_typed_values() -> None:
    base = load_scenario_text(FULL)
    assert base.with_overrides(instances=None, zones=None) == base
    sc = base.with_overrides(instances=40, zones=[], demand="10", upgrade=Exponential(60))
    assert (sc.instances, sc.zones) == (40, ())
    assert (sc.required, sc.upgrade) == (Amount(10), Exponential(60))
    assert sc.engine == base.engine


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"fault_domains": 9}, "scale_set.fault_domains"),
        ({"fault_domains": "9"}, "scale_set.fault_domains"),
        ({"instances": "ten"}, "scale_set.instances"),
        ({"bad_image": "maybe"}, "faults.bad_image"),
        ({"upgrade": "fixed(soon)"}, "timing.upgrade"),
        ({"upgrade_failure": "2"}, "faults.upgrade_failure"),
        ({"instances": 10, "required": "16"}, "demand.required"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_with_overrides_validates(values: dict[str, object], key: str) -> None:
    with pytest.raises(InputError) as excinfo:
        Scenario().with_overrides(**values)
    check_message(excinfo, key)


# --- [engine] ---


def test_engine_table_parses_and_round_trips() -> None:
    sc = load_scenario_text('[engine]\nmax_unhealthy = 30\ncanary = "10%"\n')
    assert sc.engine == EngineOptions(max_unhealthy=30, canary=Amount(10, percent=True))
    text = sc.to_toml()
    assert "[engine]" in text
    assert "max_unhealthy = 30" in text
    assert load_scenario_text(text) == sc
