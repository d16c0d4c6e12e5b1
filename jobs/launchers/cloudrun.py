"""Start a job validator as a Cloud Run Job execution (`run_v2.JobsClient.run_job` with env overrides).

One job per validator type, `validibot-validator-{type}`, deployed from jobs/Dockerfile; the overrides tell the
execution which input.json to read. The call returns once the execution exists: the function does not wait for
the job, whose output.json finalize event is the callback.
"""

from __future__ import annotations

from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.protobuf.duration_pb2 import Duration

from jobs.launchers.base import LaunchRefused, LaunchResult, job_overrides
from jobs.runtime import Assignment
from schemas.enums import JobStatus
from schemas.settings import Settings

Overrides = run_v2.RunJobRequest.Overrides


def run_job_request(assignment: Assignment, settings: Settings) -> run_v2.RunJobRequest:
    envelope = assignment.envelope
    job = run_v2.JobsClient.job_path(
        settings.project, settings.cloudrun_region, settings.cloudrun_job_prefix + envelope.validator.type
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


def _api_message(exc: gexc.GoogleAPICallError) -> str:
    """The API's own words; over REST the exception's message also carries the request URL."""
    try:
        return str(exc.response.json()["error"]["message"])
    except (AttributeError, ValueError, KeyError, TypeError):
        return str(exc.message)


class CloudRunLauncher:
    name = "cloudrun"

    def __init__(self, settings: Settings, client: run_v2.JobsClient) -> None:
        self._settings = settings
        self._client = client

    def launch(self, assignment: Assignment) -> LaunchResult:
        request = run_job_request(assignment, self._settings)
        try:
            operation = self._client.run_job(request=request)
        except (gexc.NotFound, gexc.PermissionDenied, gexc.InvalidArgument) as exc:
            # Retrying cannot help until someone deploys the job or grants the role: fail the step, say why.
            raise LaunchRefused(f"Cloud Run refused to start job {request.name}: {_api_message(exc)}") from exc
        execution: run_v2.Execution = operation.metadata
        return LaunchResult(execution_name=execution.name, job_status=JobStatus.PENDING)
