"""Start a job validator as a Cloud Run Job execution (`run_v2.JobsClient.run_job` with env overrides), and read or
stop that execution for the maintenance sweeps (`run_v2.ExecutionsClient`).

One job per validator type, `validibot-validator-{type}`, deployed from jobs/Dockerfile; the overrides tell the
execution which input.json to read. The call returns once the execution exists: the function does not wait for
the job, whose output.json finalize event is the callback.
"""

from __future__ import annotations

import enum
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.protobuf.duration_pb2 import Duration

from jobs.launchers.base import ExecutionState, LaunchRefused, LaunchResult, job_overrides
from jobs.runtime import Assignment
from schemas.enums import JobStatus
from schemas.settings import Settings

Overrides = run_v2.RunJobRequest.Overrides
ConditionState = run_v2.Condition.State

# The execution condition that says how it ended (the others: ResourcesAvailable, Started).
COMPLETED = "Completed"
ENDED_STATES = (ConditionState.CONDITION_SUCCEEDED, ConditionState.CONDITION_FAILED)


def run_job_request(assignment: Assignment, settings: Settings) -> run_v2.RunJobRequest:
    envelope = assignment.envelope
    job = run_v2.JobsClient.job_path(
        settings.project,
        settings.cloudrun_region,
        settings.cloudrun_job_prefix + envelope.validator.type + settings.cloudrun_job_suffix,
    )
    env = job_overrides(assignment)
    return run_v2.RunJobRequest(
        name=job,
        overrides=Overrides(
            container_overrides=[
                Overrides.ContainerOverride(env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()])
            ],
            task_count=1,
            timeout=Duration(seconds=envelope.context.timeout_seconds),
        ),
    )


def execution_state(execution: run_v2.Execution) -> ExecutionState:
    """Cloud Run's account of an execution as a job status, with its own words for an end other than success."""
    completed = next((c for c in execution.conditions if c.type_ == COMPLETED), None)
    # A cancelled execution that never started may have no completion time: its Completed condition says it ended.
    ended = "completion_time" in execution or (completed is not None and completed.state in ENDED_STATES)
    if not ended:
        started = execution.running_count > 0 or "start_time" in execution
        return ExecutionState(JobStatus.RUNNING if started else JobStatus.PENDING)
    if execution.succeeded_count >= max(execution.task_count, 1):  # every task (one, for a validator)
        return ExecutionState(JobStatus.SUCCEEDED)
    cancelled = execution.cancelled_count >= 1 or any(
        c.execution_reason == run_v2.Condition.ExecutionReason.CANCELLED for c in execution.conditions
    )
    status, ending = (JobStatus.CANCELLED, "was cancelled") if cancelled else (JobStatus.FAILED, "failed")
    return ExecutionState(status, _ending_message(execution) or f"the Cloud Run execution {execution.name} {ending}")


def _ending_message(execution: run_v2.Execution) -> str | None:
    """Why it ended, as Cloud Run put it: the Completed condition's message, else a failed condition's (a Started
    that failed on a missing image, say), else the reason one of them names."""
    telling = [c for c in execution.conditions if c.type_ == COMPLETED] + [
        c for c in execution.conditions if c.type_ != COMPLETED and c.state == ConditionState.CONDITION_FAILED
    ]
    for condition in telling:
        if condition.message:
            return condition.message
    for condition in telling:
        if reason := _reason(condition):
            return reason
    return None


def _reason(condition: run_v2.Condition) -> str | None:
    which = run_v2.Condition.pb(condition).WhichOneof("reasons")
    if which is None:
        return None
    reason = getattr(condition, which)
    if not reason:  # the *_UNDEFINED value
        return None
    # A reason newer than this client reads as a bare number.
    return reason.name if isinstance(reason, enum.Enum) else str(reason)


def _api_error(exc: gexc.GoogleAPICallError) -> dict[str, Any]:
    """The google.rpc error a REST response carries ({} over gRPC, whose exception class already says it all)."""
    try:
        error = exc.response.json()["error"]
    except (AttributeError, ValueError, KeyError, TypeError):
        return {}
    return error if isinstance(error, dict) else {}


def _api_message(exc: gexc.GoogleAPICallError) -> str:
    """The API's own words; over REST the exception's message also carries the request URL."""
    return str(_api_error(exc).get("message", exc.message))


class CloudRunLauncher:
    name = "cloudrun"

    def __init__(
        self, settings: Settings, jobs_client: run_v2.JobsClient, executions_client: run_v2.ExecutionsClient
    ) -> None:
        self._settings = settings
        self._jobs = jobs_client
        self._executions = executions_client

    def launch(self, assignment: Assignment) -> LaunchResult:
        request = run_job_request(assignment, self._settings)
        try:
            operation = self._jobs.run_job(request=request)
        except (gexc.NotFound, gexc.PermissionDenied, gexc.InvalidArgument) as exc:
            # Retrying cannot help until someone deploys the job or grants the role: fail the step, say why.
            raise LaunchRefused(f"Cloud Run refused to start job {request.name}: {_api_message(exc)}") from exc
        execution: run_v2.Execution = operation.metadata
        return LaunchResult(execution_name=execution.name, job_status=JobStatus.PENDING)

    def inspect(self, execution_name: str) -> ExecutionState:
        try:
            execution = self._executions.get_execution(name=execution_name)
        except gexc.NotFound:
            return ExecutionState(JobStatus.FAILED, f"the Cloud Run execution {execution_name} no longer exists")
        return execution_state(execution)

    def stop(self, execution_name: str) -> None:
        try:
            # The operation ends once the tasks have stopped; a later sweep reads how the execution ended.
            self._executions.cancel_execution(name=execution_name)
        except (gexc.NotFound, gexc.FailedPrecondition):
            return  # gone, or ended already: nothing left to stop
        except gexc.BadRequest as exc:
            # Over REST a FAILED_PRECONDITION arrives as a plain 400 whose body names it.
            if _api_error(exc).get("status") != "FAILED_PRECONDITION":
                raise
