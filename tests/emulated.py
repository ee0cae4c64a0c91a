"""Shared helpers for the tests that run the CLI, as its own process, against
the ARM emulator (another process) through the real azure-mgmt-compute SDK.

Every CLI run gets ``--arm-endpoint`` and ``VMSS_ROLLOUT_ARM_ENDPOINT`` pointing
at the emulator, and no identity variables from the caller's environment, so
no command can reach a non-loopback address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

RG = "vmss-rollout-rg"
SCENARIO = """
name = "web-tier"
seed = 3
[scale_set]
instances = {instances}
update_domains = 5
fault_domains = 3
[timing]
upgrade = "fixed(60s)"
health_delay = "fixed(30s)"
"""
#: engine options for a rehearsal: the CLI waits on the emulator's clock (x600 in
#: most tests: a poll every simulated second or few is a few wall milliseconds;
#: instances are healthy 90 simulated seconds after an upgrade starts)
FAST = ["--poll-interval", "1:5", "--health-timeout", "5m"]
IDENTITY_VARS = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "MSI_ENDPOINT",
    "IMDS_ENDPOINT",
    "AZURE_FEDERATED_TOKEN_FILE",
)
#: the commands that talk to ARM (they get --arm-endpoint)
ARM_COMMANDS = ("status", "plan", "upgrade", "resume", "abandon", "instances")
#: request-log operations that cannot change the scale set
READS = (
    "vmss.get",
    "vms.list",
    "vms.get",
    "vm.list",
    "vm.get",
    "vm.instanceview",
    "identity.token",
    "operations",
    "vmss.skus",
    "subscriptions.",
    "tenants.",
    "resourcegroups.",
    "metadata.",
)


class Emulated:
    """One emulator process and helpers to run the CLI against it."""

    def __init__(self, info: dict[str, Any], tmp: Path, scenario: Path) -> None:
        self.info = info
        self.tmp = tmp
        self.scenario = scenario
        self.journal = tmp / "journal.sqlite"
        self.env = {k: v for k, v in os.environ.items() if k not in IDENTITY_VARS}
        self.env.update(info["env"])
        # the tests pass --arm-endpoint too; the variable stays as a guard, so that no
        # command can ever fall back to the public endpoint
        self.env["VMSS_ROLLOUT_JOURNAL"] = str(self.journal)
        self.env["COLUMNS"] = "200"
        self.version = 1
        #: (args, stdout, stderr) of every command run through this object
        self.outputs: list[tuple[tuple[str, ...], str, str]] = []

    @property
    def name(self) -> str:
        return str(self.info["name"])

    def command(self, *args: str) -> list[str]:
        command = [sys.executable, "-m", "vmss_rollout.cli.app", *args]
        if args and args[0] in ARM_COMMANDS and "--arm-endpoint" not in args:
            command += ["--arm-endpoint", self.info["endpoint"]]
        return command

    def cli(
        self, *args: str, check_json: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        self.outputs.append((args, result.stdout, result.stderr))
        if check_json:
            assert result.stdout, result.stderr
        return result

    def next_target(self) -> str:
        self.version += 1
        return f"{self.version}.0.0"

    def upgrade(self, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        result = self.cli(
            "upgrade",
            "-g",
            RG,
            "-n",
            self.name,
            "--image-version",
            self.next_target(),
            "--yes",
            "--json",
            *FAST,
            *args,
        )
        return result, last_json(result.stdout)

    def watch_upgrade(
        self,
        *args: str,
        on_line: Callable[[str, subprocess.Popen[str]], None],
        target: str | None = None,
    ) -> tuple[int, str]:
        """Run ``upgrade`` (plain event log on stderr) and call ``on_line`` for
        every line it prints; returns (exit code, everything printed)."""
        command = self.command(
            "upgrade",
            "-g",
            RG,
            "-n",
            self.name,
            "--image-version",
            target or self.next_target(),
            "--yes",
            *FAST,
            *args,
        )
        proc = subprocess.Popen(command, env=self.env, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            on_line(line, proc)
        proc.wait(timeout=180)
        output = "".join(lines)
        self.outputs.append((tuple(args), "", output))
        return proc.returncode, output

    def admin(self, path: str, body: Any = None) -> Any:
        url = f"{self.info['endpoint']}/_emulator/{path}"
        verify = self.info["env"]["REQUESTS_CA_BUNDLE"]
        response = (
            requests.post(url, json=body, verify=verify, timeout=10)
            if body is not None
            else requests.get(url, verify=verify, timeout=10)
        )
        response.raise_for_status()
        return response.json()

    def faults(self, **changes: Any) -> None:
        self.admin("faults", changes)

    def upgrade_requests(self) -> Counter[str]:
        """How many accepted manual-upgrade requests each instance received."""
        log = self.admin("requests")["log"]
        return Counter(
            i
            for entry in log
            if entry["operation"].endswith("manualupgrade") and entry["status"] < 300
            for i in entry.get("instance_ids") or []
        )

    def writes(self) -> int:
        """Requests that could change the scale set (PUT, PATCH, POST actions, deletes)."""
        by_op = self.admin("requests")["by_operation"]
        return sum(n for op, n in by_op.items() if not op.startswith(READS))

    def accepted_writes(self) -> list[tuple[str, int]]:
        """(operation, status) of every write the scale set accepted (status < 400)
        since the last reset: a refused write (401, 403, 404, 412) changed nothing."""
        return [
            (e["operation"], e["status"])
            for e in self.admin("requests")["log"]
            if not e["operation"].startswith(READS) and e["status"] < 400
        ]

    def state(self) -> dict[str, Any]:
        return dict(self.admin("state"))

    @contextmanager
    def sdk(self) -> Iterator[Any]:
        """A ComputeManagementClient on the emulator (as another tool would be)."""
        from azure.identity import DefaultAzureCredential
        from azure.mgmt.compute import ComputeManagementClient

        saved = {k: os.environ.get(k) for k in self.info["env"]}
        os.environ.update(self.info["env"])
        try:
            yield ComputeManagementClient(
                DefaultAzureCredential(), self.info["subscription"], base_url=self.info["endpoint"]
            )
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def upgrades_after_target(self, target_suffix: str) -> list[tuple[str, float]]:
        """(instance, t_sim) of every accepted manual upgrade (or reimage) an
        instance received while it already ran the target (provisioning
        succeeded on a model whose text contains ``target_suffix``): proved
        from the emulator's request log and per-instance state history, ordered
        by their shared sequence numbers."""
        log = self.admin("requests")["log"]
        history = self.admin("history")["history"]
        by_instance: dict[str, list[dict[str, Any]]] = {}
        for change in history:
            by_instance.setdefault(change["instance_id"], []).append(change)
        bad = []
        for entry in log:
            if entry["status"] >= 300 or not entry["operation"].endswith(
                ("manualupgrade", "reimage", "reimageall")
            ):
                continue
            for iid in entry["instance_ids"]:
                before = [c for c in by_instance.get(iid, []) if c["seq"] < entry["seq"]]
                if not before:
                    continue
                last = before[-1]
                on_target = (
                    target_suffix in (last["model"] or "")
                    and last["latest_model_applied"]
                    and last["provisioning"] == "Succeeded"
                )
                if on_target:
                    bad.append((iid, entry["t_sim"]))
        return bad


def last_json(stdout: str) -> Any:
    """The summary of ``upgrade``/``resume`` with ``-o json`` or ``--json``: the
    last of the JSON lines they stream (``{}`` when nothing was printed)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def writes_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Write operations counted in ``after`` but not in ``before`` (by_operation)."""
    return {
        op: n - before.get(op, 0)
        for op, n in after.items()
        if n != before.get(op, 0) and not op.startswith(READS)
    }
