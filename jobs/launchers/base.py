"""What every launcher promises: start the validator for one input envelope, and say how to find it again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from jobs.runtime import Assignment, Written
from schemas.enums import JobStatus
from schemas.paths import INPUT_NAME
from schemas.signing import SIGNING_KEY_ENV


@dataclass(frozen=True)
class LaunchResult:
    # None for inline runs: output.json is already written when launch() returns.
    execution_name: str | None = None
    job_status: JobStatus | None = None
    # The output.json an inline run wrote just now (None when a twin's was there already).
    written_output: Written | None = None


def job_overrides(assignment: Assignment) -> dict[str, str]:
    """The environment that tells a job execution which attempt it serves (DESIGN §9) and the key it signs its
    verdict with (DESIGN §6; the launch environment is the only place that key is ever written)."""
    envelope = assignment.envelope
    return {
        "VALIDIBOT_INPUT_URI": envelope.context.execution_bundle_uri + INPUT_NAME,
        "VALIDIBOT_OUTPUT_URI": envelope.context.expected_output_uri,
        "VALIDIBOT_RUN_ID": envelope.run_id,
        SIGNING_KEY_ENV: assignment.signing_key,
    }


@dataclass(frozen=True)
class ExecutionState:
    """What a launcher can tell of an execution it started (the executions and timeouts sweeps read it)."""

    job_status: JobStatus
    # Why it ended, in the platform's own words, when it ended without succeeding.
    message: str | None = None

    @property
    def finished(self) -> bool:
        return self.job_status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class LauncherBusy(Exception):
    """No capacity right now: LAUNCH leaves the attempt queued (SCHEDULED) and the maintenance tick launches it."""


class LaunchRefused(Exception):
    """The platform will never start this job as configured (not deployed, no permission): the step fails."""


class HandOff(Exception):
    """An inline run gave the step up (its time budget ran out): the attempt goes to the job launcher instead."""


class Launcher(Protocol):
    name: str

    def launch(self, assignment: Assignment) -> LaunchResult: ...


@runtime_checkable
class ExecutionControl(Protocol):
    """A launcher whose executions outlive the call that started them (local processes, Cloud Run jobs)."""

    def inspect(self, execution_name: str) -> ExecutionState:
        """The execution's state now; one that cannot be found any more is FAILED, saying so."""
        ...

    def stop(self, execution_name: str) -> None:
        """Stop the execution and everything it started; nothing to do when it has ended already."""
        ...
