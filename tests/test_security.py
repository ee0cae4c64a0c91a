"""Secrets stay secret: the emulator issues recognizable access tokens (JWTs
whose encoded header, ``TOKEN_PREFIX``, is the same for all of them, followed by
claims and a random signature) and its managed-identity secret
(``IDENTITY_HEADER``) is known; neither appears in anything vmss-rollout prints
(stdout, stderr, ``--debug`` tracebacks) or writes (the journal and its -wal
and -shm files). The journal is readable by its owner only, and the emulator
listens on loopback unless told otherwise."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("azure.mgmt.compute")
pytest.importorskip("uvicorn")

from emulated import FAST, RG, SCENARIO, Emulated

from vmss_rollout.emulator.identity import TOKEN_PREFIX
from vmss_rollout.emulator.launch import emulator_process


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp("security")
    scenario = tmp / "scenario.toml"
    scenario.write_text(SCENARIO.format(instances=10))
    with emulator_process(scenario, tmp, "--time-scale", "600", "--retry-after", "0.05") as info:
        emulated = Emulated(info, tmp, scenario)
        emulated.journal = tmp / "state" / "vmss-rollout" / "journal.sqlite"
        emulated.env["VMSS_ROLLOUT_JOURNAL"] = str(emulated.journal)
        yield emulated


def test_tokens_and_secrets_are_never_printed_logged_or_journaled(emu: Emulated) -> None:
    secret = emu.info["env"]["IDENTITY_HEADER"]
    assert len(secret) >= 16
    base = ["-g", RG, "-n", emu.name]
    assert emu.cli("status", *base, "--debug").returncode == 0
    assert emu.cli("status", *base, "--json").returncode == 0
    ok, _ = emu.upgrade("--strategy", "batch:size=5", "--debug")
    assert ok.returncode == 0, ok.stderr
    # a plain event log, interrupted by the scale set disappearing: exit 3, with traceback
    deleted = [False]

    def delete(line: str, proc: object) -> None:
        if "wave_started" in line and not deleted[0]:
            deleted[0] = True
            emu.admin("delete-scale-set", {})

    code, _ = emu.watch_upgrade("--strategy", "batch:size=5", "--debug", on_line=delete)
    assert code == 3
    emu.admin("restore-scale-set", {})
    resumed = emu.cli("resume", "-g", RG, "-n", emu.name, "--yes", "--debug", *FAST[:2])
    assert resumed.returncode == 0, resumed.stderr
    # refused credentials, with tracebacks
    for failure in ("401", "403", "403-writes"):
        emu.faults(auth_failure=failure)
        try:
            refused, _ = emu.upgrade("--strategy", "batch:size=5", "--debug")
        finally:
            emu.faults(auth_failure="")
        assert refused.returncode == 2
        assert "Traceback" in refused.stderr  # --debug shows it: it must not leak either
    assert emu.cli("history", "--json").returncode == 0
    assert emu.cli("history", "--debug").returncode == 0

    canaries = (secret, TOKEN_PREFIX, "Bearer ", "access_token")
    printed = "\n".join(out + err for _, out, err in emu.outputs)
    assert len(emu.outputs) >= 10 and printed
    for canary in canaries:
        assert canary not in printed, canary
    files = [emu.journal.with_name(emu.journal.name + suffix) for suffix in ("", "-wal", "-shm")]
    assert files[0].exists()
    for path in files:
        if path.exists():
            data = path.read_bytes()
            for canary in canaries:
                assert canary.encode() not in data, (path, canary)


def test_the_journal_is_readable_by_its_owner_only(emu: Emulated) -> None:
    if not emu.journal.exists():
        emu.upgrade("--strategy", "batch:size=5")
    for suffix in ("", "-wal", "-shm"):
        path = emu.journal.with_name(emu.journal.name + suffix)
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(emu.journal.parent.stat().st_mode) == 0o700


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* has them) listening on ``port``."""
    found = []
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for row in table.read_text().splitlines()[1:]:
            fields = row.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.append(address)
    return found


def test_the_emulator_binds_loopback_by_default(emu: Emulated) -> None:
    assert emu.info["endpoint"].startswith("https://127.0.0.1:")
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read the listening address from")
    assert _listening(int(emu.info["port"])) == ["0100007F"]  # 127.0.0.1 only
