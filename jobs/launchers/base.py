"""What every launcher promises: start the validator for one input envelope, and say how to find it again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from schemas.enums import JobStatus
from schemas.envelopes import InputEnvelope
from schemas.paths import INPUT_NAME


@dataclass(frozen=True)
class LaunchResult:
    # None for inline runs: output.json is already written when launch() returns.
    execution_name: str | None = None
    job_status: JobStatus | None = None


def job_overrides(envelope: InputEnvelope) -> dict[str, str]:
    """The environment that tells a job execution which attempt it serves (DESIGN §9), on every launcher."""
    return {
        "VALIDIBOT_INPUT_URI": envelope.context.execution_bundle_uri + INPUT_NAME,
        "VALIDIBOT_OUTPUT_URI": envelope.context.expected_output_uri,
        "VALIDIBOT_RUN_ID": envelope.run_id,
    }


class LauncherBusy(Exception):
    """No capacity right now; the event is redelivered later, so the platform's retry is the queue."""


class LaunchRefused(Exception):
    """The platform will never start this job as configured (not deployed, no permission): the step fails."""


class Launcher(Protocol):
    name: str

    def launch(self, envelope: InputEnvelope, input_sha256: str) -> LaunchResult: ...
