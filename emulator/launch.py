"""Start the ARM emulator as a separate process and wait until it listens:
for tests and for CI scripts that exercise Azure tooling against it.

    with emulator_process(Path("scenario.toml"), tmp_dir, "--time-scale", "600") as info:
        env = info["env"]  # export these, then use the real SDK or vmss-rollout

Standard library only; the emulator itself needs ``vmss-rollout[emulator]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def emulator_process(
    scenario: Path | None, workdir: Path, *args: str, timeout: float = 30.0
) -> Iterator[dict[str, Any]]:
    """Run ``python -m vmss_rollout.emulator`` on a free loopback port;
    yield what it wrote to its env file (``env``, ``endpoint``, ``port``,
    ``resource_group``, ``name``, ...) plus ``log`` (its output file). The
    process is terminated on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    env_file = workdir / "env.json"
    env_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "vmss_rollout.emulator"]
    if scenario is not None:
        command.append(str(scenario))
    command += ["--port", "0", "--env-file", str(env_file), "--state-dir", str(workdir / "tls")]
    command += list(args)
    log_path = workdir / "emulator.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            deadline = time.monotonic() + timeout
            while not env_file.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"emulator exited: {log_path.read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"emulator did not start within {timeout:g} s")
                time.sleep(0.05)  # waiting for another process to start listening
            info: dict[str, Any] = json.loads(env_file.read_text())
            info["log"] = log_path
            info["process"] = proc
            yield info
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
