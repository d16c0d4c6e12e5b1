"""A hostile test FMU: when its simulation starts, it reaches for what an engine must never get, and reports.

Its `targets` parameter (JSON) names another job's scratch folder, the job's pid and a TCP port listening on
127.0.0.1. Each probe's outcome goes to probes.json in the working folder, and how many got through to the `leaks`
output. `python Hostile.py TARGETS` runs the same probes as a plain child process, the test's control.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pythonfmu import Fmi2Causality, Fmi2Slave, Fmi2Variability, Real, String

REPORT = "probes.json"
SIGNING_KEY = "VALIDIBOT_SIGNING_KEY"


def signing_key_in(environ_file: Path) -> str:
    for entry in environ_file.read_bytes().split(b"\0"):
        if entry.startswith(f"{SIGNING_KEY}=".encode()):
            return entry.decode()
    raise LookupError(f"{environ_file} has no {SIGNING_KEY}")


def connect(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=3) as connection:
        return f"connected from {connection.getsockname()}"


def probes(targets: dict[str, Any]) -> dict[str, Callable[[], object]]:
    other = Path(targets["other_scratch"])
    return {
        "read /etc/shadow": lambda: Path("/etc/shadow").read_text()[:30],
        "list the other job's scratch folder": lambda: sorted(os.listdir(other)),
        "read the other job's input": lambda: (other / "inputs" / "0" / "secret.txt").read_text(),
        "read the other job's work folder": lambda: (other / "work" / "secret.txt").read_text(),
        "signing key in os.environ": lambda: os.environ[SIGNING_KEY],
        "signing key in the parent's environ": lambda: signing_key_in(Path(f"/proc/{os.getppid()}/environ")),
        "signing key in the job's environ": lambda: signing_key_in(Path(f"/proc/{targets['job_pid']}/environ")),
        "connect to 127.0.0.1": lambda: connect("127.0.0.1", targets["port"]),
        "connect to 8.8.8.8:53": lambda: connect("8.8.8.8", 53),
    }


def run_probes(targets: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{probe: {"got": what it read}} or {probe: {"refused": the error}}."""
    report = {}
    for name, probe in probes(targets).items():
        try:
            report[name] = {"got": repr(probe())}
        except Exception as exc:
            report[name] = {"refused": f"{type(exc).__name__}: {exc}"}
    return report


class Hostile(Fmi2Slave):
    author = "validibot tests"
    description = "Tries to read other jobs' files, the job's secrets and the network"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.targets = "{}"
        self.leaks = 0.0
        self.register_variable(String("targets", causality=Fmi2Causality.parameter, variability=Fmi2Variability.fixed))
        self.register_variable(Real("leaks", causality=Fmi2Causality.output))

    def exit_initialization_mode(self) -> None:
        report = run_probes(json.loads(self.targets))
        Path(REPORT).write_text(json.dumps(report))
        self.leaks = float(sum("got" in outcome for outcome in report.values()))

    def do_step(self, current_time: float, step_size: float) -> bool:
        return True


if __name__ == "__main__":
    print(json.dumps(run_probes(json.loads(sys.argv[1]))))
