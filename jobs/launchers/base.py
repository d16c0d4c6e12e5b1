"""What every launcher promises: start the validator for one input envelope, and say how to find it again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from schemas.enums import JobStatus
from schemas.envelopes import InputEnvelope


@dataclass(frozen=True)
class LaunchResult:
    # None for inline runs: output.json is already written when launch() returns.
    execution_name: str | None = None
    job_status: JobStatus | None = None


class LauncherBusy(Exception):
    """No capacity right now; the event is redelivered later, so the platform's retry is the queue."""


class LaunchRefused(Exception):
    """The platform will never start this job as configured (not deployed, no permission): the step fails."""


class Launcher(Protocol):
    name: str

    def launch(self, envelope: InputEnvelope, input_sha256: str) -> LaunchResult: ...
