"""Bad input against the emulator: each case exits 2 with one line naming the
problem, no traceback, and no write reaches the scale set (the emulator's
request log has no PUT, PATCH, POST action or DELETE)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import FAST, RG, SCENARIO, Emulated

from vmss_rollout.backends.journal import Journal
from vmss_rollout.emulator.launch import emulator_process

N = 30


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("bad-input")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=N))
    with emulator_process(scenario, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        yield Emulated(info, tmp, scenario)


def upgrade_args(emu: Emulated, *extra: str, version: str = "9.0.0") -> list[str]:
    return ["upgrade", "-g", RG, "-n", emu.name, "--image-version", version, "--yes", *extra]


def assert_refused(emu: Emulated, args: list[str], needle: str, *, json_out: bool = True) -> str:
    """Exit 2, one line on stderr containing ``needle``, no traceback, no
    accepted write (a write refused with 403 changed nothing)."""
    emu.admin("reset-counts", {})
    if json_out and args[0] == "upgrade":
        args = [*args, "--json"]  # no plan preview: stderr is the error alone
    result = emu.cli(*args)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], (needle, lines[0])
    assert "Traceback" not in result.stderr
    assert emu.accepted_writes() == []
    return lines[0]


def test_missing_subscription_resource_group_or_scale_set(emu: Emulated) -> None:
    other = "11111111-1111-1111-1111-111111111111"
    assert_refused(
        emu, upgrade_args(emu, "-s", "batch", "--subscription", other), "SubscriptionNotFound"
    )
    assert_refused(emu, ["status", "-g", RG, "-n", emu.name, "--subscription", other], other)
    nope = ["upgrade", "-g", "nope", "-n", emu.name, "--image-version", "9.0.0", "-s", "batch"]
    assert_refused(emu, [*nope, "--yes"], "ResourceGroupNotFound")
    assert_refused(
        emu,
        ["upgrade", "-g", RG, "-n", "nope", "--image-version", "9.0.0", "-s", "batch", "--yes"],
        "not found",
    )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--image-version", "9.0", "-s", "batch"], "--image-version: expected MAJOR.MINOR.BUILD"),
        (
            ["--image-sku", "OtherPublisher:OtherOffer:server", "-s", "batch"],
            "--image-sku: OtherPublisher:OtherOffer differs from the scale set's",
        ),
        (["-s", "batch:size=0"], "batch:size: must be >= 1, got 0"),
        (["-s", "batch:size=50"], f"batch:size: 50 is larger than the scope ({N} instances)"),
        (
            ["-s", "batch:size=7", "--only-update-domains", "1"],
            f"batch:size: 7 is larger than the scope ({N // 5} instances)",
        ),
        (["-s", "batch:percent=0"], "batch:percent: must be in (0, 100], got 0"),
        (["-s", "batch:percent=101"], "batch:percent: must be in (0, 100], got 101"),
        (["-s", "batch", "--max-unhealthy", "101"], "--max-unhealthy: percentage must be"),
        (["-s", "batch", "--canary", "150%"], "--canary: percentage must be in (0, 100]"),
        (["-s", "nope"], "unknown strategy 'nope'"),
        (["-s", "batch:sizes=3"], "strategy batch: unknown parameter 'sizes'"),
        (["-s", "batch", "--only-instances", "99"], "only_instances: 99 not in the scale set"),
        # the checks simulate shares (strategies.registry.validate)
        (["-s", "update-domain:order=x/y"], "update-domain:order: x, y not among the update"),
        (["-s", ""], "missing strategy name"),
        (["-s", "batch:size=99999999999999999999"], "batch:size: expected a whole number up to"),
        (["-s", "batch", "--bake", "1000h"], "--bake: duration must be at most 30 days"),
    ],
)
def test_malformed_target_strategy_or_option(emu: Emulated, extra: list[str], needle: str) -> None:
    args = ["upgrade", "-g", RG, "-n", emu.name, "--yes"]
    if "--image-version" not in extra and "--image-sku" not in extra:
        args += ["--image-version", "9.0.0"]
    assert_refused(emu, [*args, *extra], needle)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('nme = "x"\n', "nme: unknown key"),
        ('[scale_set]\ninstances = "x"\n', "scale_set.instances: expected a whole number"),
        ('[timing]\nhealth_delay = "-5s"\n', "timing.health_delay: expected a duration"),
    ],
)
def test_malformed_scenario(emu: Emulated, tmp_path: Path, text: str, needle: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    args = ["plan", "-g", RG, "-n", emu.name, "--image-version", "9.0.0", "-s", "batch"]
    assert_refused(emu, [*args, "--scenario", str(bad), "--runs", "2"], needle)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("update-domain:order=x/y", "update-domain:order: x, y not among the update domains"),
        ("batch:size=50", f"batch:size: 50 is larger than the scope ({N} instances)"),
    ],
)
def test_plan_refuses_what_upgrade_and_simulate_refuse(
    emu: Emulated, spec: str, needle: str
) -> None:
    args = ["plan", "-g", RG, "-n", emu.name, "--image-version", "9.0.0", "-s", spec, "-r", "2"]
    assert_refused(emu, args, needle)


def test_an_unreachable_endpoint(emu: Emulated) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = f"https://127.0.0.1:{port}"
    env = {**emu.env, "VMSS_ROLLOUT_ARM_ENDPOINT": closed}
    emu.admin("reset-counts", {})
    result = emu.cli("status", "-g", RG, "-n", emu.name, "--arm-endpoint", closed, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the ARM endpoint" in lines[0], result.stderr
    # only the token request (its endpoint is the emulator's) reached the emulator
    assert set(emu.admin("requests")["by_operation"]) <= {"identity.token"}


@pytest.mark.parametrize(
    ("failure", "needle"),
    [
        ("401", "not authenticated"),
        ("403", "not authorized"),
        ("403-writes", "the identity needs the 'Virtual Machine Contributor' role"),
    ],
)
def test_refused_credentials(emu: Emulated, failure: str, needle: str) -> None:
    emu.faults(auth_failure=failure)
    try:
        line = assert_refused(emu, upgrade_args(emu, "-s", "batch:size=10"), needle)
        if failure.startswith("403"):
            assert "Virtual Machine Contributor" in line
        if failure != "403-writes":
            assert_refused(emu, ["status", "-g", RG, "-n", emu.name], needle)
    finally:
        emu.faults(auth_failure="")
    if failure == "403-writes":  # the refused model update changed nothing: not running
        with Journal(emu.journal) as journal:
            latest = journal.history(None, limit=1)[0]
        assert latest.state == "failed" and latest.reason.startswith("nothing changed:")


def test_policy_automatic_needs_consent(emu: Emulated) -> None:
    from azure.mgmt.compute.models import VirtualMachineScaleSetUpdate

    def policy(mode: str) -> None:
        body = VirtualMachineScaleSetUpdate({"properties": {"upgradePolicy": {"mode": mode}}})
        with emu.sdk() as client:
            client.virtual_machine_scale_sets.begin_update(RG, emu.name, body).result()

    policy("Automatic")
    try:
        assert_refused(emu, upgrade_args(emu, "-s", "batch"), "upgrade policy is Automatic")
    finally:
        policy("Manual")


def test_a_target_equal_to_the_current_model_is_a_noop(emu: Emulated) -> None:
    current = emu.state()["model"].split(":")[3].split()[0]
    emu.admin("reset-counts", {})
    result = emu.cli(*upgrade_args(emu, "-s", "batch", "--json", *FAST, version=current))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["noop"] is True
    assert emu.accepted_writes() == []
