"""Run a validator's native tool as a bounded child: own process group, hard timeout, no network, bare environment.

Simulation engines run user-supplied models. They get no network (a fresh network namespace via `unshare`, where
the kernel allows unprivileged namespaces), none of the job's credentials or emulator addresses (a bare
environment), and a wall-clock limit after which their whole process group is killed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

UNSHARE_NET = ["unshare", "--net", "--map-root-user"]
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")


@functools.cache
def network_isolation_available() -> bool:
    try:
        probe = subprocess.run([*UNSHARE_NET, "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if probe.returncode != 0:
        log.warning("unshare --net is not permitted here: validators run without network isolation")
    return probe.returncode == 0


@dataclass(frozen=True)
class Completed:
    returncode: int | None  # None: killed at the timeout
    log_path: Path

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run_isolated(argv: list[str], cwd: Path, timeout_seconds: float, log_path: Path) -> Completed:
    """Run `argv` in `cwd`; stdout and stderr go to `log_path`."""
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ} | {"HOME": str(cwd)}
    command = [*UNSHARE_NET, *argv] if network_isolation_available() else argv
    with log_path.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            return Completed(process.wait(timeout=max(timeout_seconds, 0.1)), log_path)
        except subprocess.TimeoutExpired:
            return Completed(None, log_path)
        finally:
            # Whatever the tool started (ReadVarsESO, an FMU's helpers) goes with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
