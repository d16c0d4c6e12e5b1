"""The cloudrun launcher through the real run_v2 clients (REST transport) against a local stand-in for the Cloud Run
Admin API (Jobs and Executions).

The stand-in records each request and answers as the API does: a long-running Operation whose metadata is the
Execution, an Execution, or a google.rpc error.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.cloud import run_v2

from bootstrap import Services
from deploy.stack import LocalStack
from functions.pipeline import Pipeline
from functions.stage import Handled, Outcome
from jobs.launchers.base import ExecutionState
from jobs.launchers.cloudrun import CloudRunLauncher
from schemas.enums import AttemptState, ErrorCategory, JobStatus, RunStatus
from schemas.paths import attempt_id_for
from schemas.settings import Settings
from tests.support import CREATED, DUPLICATE, EXAMPLES, LAUNCHED, Harness, isolated_harness

pytestmark = pytest.mark.integration

PROJECT = "validibot-test"
REGION = "europe-west1"
JOB = f"projects/{PROJECT}/locations/{REGION}/jobs/validibot-validator-energyplus"
EXECUTION = f"{JOB}/executions/validibot-validator-energyplus-x7k2p"
EXECUTION_TYPE = "type.googleapis.com/google.cloud.run.v2.Execution"
EXECUTION_RESOURCE = re.compile(
    r"/v2/(?P<name>projects/[^/]+/locations/[^/]+/jobs/[^/]+/executions/[^/:]+)(?::cancel)?"
)
RUN_JOB_OPERATION = {
    "name": f"projects/{PROJECT}/locations/{REGION}/operations/5f0c1f4e",
    "metadata": {"@type": EXECUTION_TYPE, "name": EXECUTION, "job": "validibot-validator-energyplus"},
    "done": False,
}

State = run_v2.Condition.State
Reason = run_v2.Condition.ExecutionReason
STARTED_AT = "2026-03-02T09:14:05.118Z"
COMPLETED_AT = "2026-03-02T09:24:07.532Z"


def rpc_error(code: int, status: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": status}}


def execution(*conditions: dict, **status: object) -> dict:
    """EXECUTION as the API renders it (camelCase; enums as ints, as the client asks): the one-task execution a
    launch starts, with these conditions and status fields."""
    return {
        "name": EXECUTION,
        "job": "validibot-validator-energyplus",
        "taskCount": 1,
        "conditions": list(conditions),
        **status,
    }


@dataclass
class JobsApi:
    """The Cloud Run Admin API as the launcher calls it; keeps every request it was sent.

    POST …/jobs/{job}:run answers `status` and `body`. The executions in `executions` (name → Execution JSON) are
    served as the Executions API serves them: GET …/executions/{id} returns one; POST …/executions/{id}:cancel
    returns a long-running Operation, or FAILED_PRECONDITION once the execution has completed. An execution not
    there is NOT_FOUND.
    """

    status: int = 200
    body: dict = field(default_factory=dict)
    executions: dict[str, dict] = field(default_factory=dict)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)

    def answer(self, method: str, path: str) -> tuple[int, dict]:
        resource = EXECUTION_RESOURCE.fullmatch(path)
        if resource is None:
            return self.status, self.body
        name = resource["name"]
        found = self.executions.get(name)
        if found is None:
            return 404, rpc_error(404, "NOT_FOUND", f"Resource '{name}' of kind 'EXECUTION' does not exist.")
        if method == "GET":
            return 200, found
        if "completionTime" in found:
            return 400, rpc_error(400, "FAILED_PRECONDITION", f"Execution {name} has already completed.")
        operation = f"projects/{PROJECT}/locations/{REGION}/operations/9a4e7d21"
        return 200, {"name": operation, "metadata": {"@type": EXECUTION_TYPE, **found}, "done": False}


@pytest.fixture
def jobs_api() -> Iterator[tuple[JobsApi, str]]:
    api = JobsApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.answer({})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            self.answer(json.loads(self.rfile.read(length) or b"{}"))

        def answer(self, body: dict) -> None:
            path = self.path.split("?", 1)[0]  # the query only asks for JSON with enums as ints
            api.requests.append((self.command, path, body))
            status, reply = api.answer(self.command, path)
            payload = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield api, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def launcher(jobs_api: tuple[JobsApi, str]) -> CloudRunLauncher:
    """The launcher alone, on the clients the wiring place builds for a stand-in endpoint (no emulator needed)."""
    _, endpoint = jobs_api
    settings = Settings(
        project=PROJECT, job_launcher="cloudrun", cloudrun_region=REGION, cloudrun_api_endpoint=endpoint
    )
    services = Services(settings)
    return CloudRunLauncher(settings, services.run_jobs_client, services.run_executions_client)


def cloudrun_pipeline(harness: Harness, endpoint: str) -> Pipeline:
    settings = harness.settings.model_copy(
        update={"job_launcher": "cloudrun", "cloudrun_region": REGION, "cloudrun_api_endpoint": endpoint}
    )
    return harness.rewired(settings=settings, launchers=Services(settings).launchers)


def launch_energyplus(harness: Harness, pipeline: Pipeline) -> tuple[str, Handled]:
    event, run_id = harness.submit((EXAMPLES / "small-office.idf").read_bytes(), "energyplus-basic", "office.idf")
    assert pipeline.handle(event) == CREATED
    return run_id, pipeline.handle(harness.input_event(run_id))


def test_run_job_request_and_recorded_execution(harness: Harness, jobs_api: tuple[JobsApi, str]) -> None:
    api, endpoint = jobs_api
    api.body = RUN_JOB_OPERATION
    pipeline = cloudrun_pipeline(harness, endpoint)

    run_id, outcome = launch_energyplus(harness, pipeline)

    assert outcome == LAUNCHED
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    [(method, path, body)] = api.requests
    assert (method, path) == ("POST", f"/v2/{JOB}:run")
    assert body == {
        "overrides": {
            "containerOverrides": [
                {
                    "env": [
                        {"name": "VALIDIBOT_INPUT_URI", "value": attempt.input_uri},
                        {"name": "VALIDIBOT_OUTPUT_URI", "value": attempt.expected_output_uri},
                        {"name": "VALIDIBOT_RUN_ID", "value": run_id},
                        # The attempt's own key, nothing else: the service secret never leaves the functions.
                        {"name": "VALIDIBOT_SIGNING_KEY", "value": harness.attempt_key(run_id)},
                    ]
                }
            ],
            "taskCount": 1,
            "timeout": "600s",
        }
    }
    assert attempt.launcher == "cloudrun"
    assert attempt.state == AttemptState.RUNNING
    assert attempt.execution_name == EXECUTION
    assert attempt.job_status == JobStatus.PENDING
    assert pipeline.handle(harness.input_event(run_id)) == DUPLICATE
    assert len(api.requests) == 1


def test_job_not_deployed_fails_the_step_saying_so(harness: Harness, jobs_api: tuple[JobsApi, str]) -> None:
    api, endpoint = jobs_api
    api.status = 404
    api.body = {"error": {"code": 404, "message": f"Job '{JOB}' not found.", "status": "NOT_FOUND"}}

    run_id, outcome = launch_energyplus(harness, cloudrun_pipeline(harness, endpoint))

    assert outcome == Handled(Outcome.FAILED, f"Cloud Run refused to start job {JOB}: Job '{JOB}' not found.")
    run = harness.store.run(run_id).doc
    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.SYSTEM_ERROR
    assert run.error == (
        f"step 1 'EnergyPlus annual simulation, Golden CO': Cloud Run refused to start job {JOB}: "
        f"Job '{JOB}' not found."
    )
    assert harness.store.attempt(run_id, attempt_id_for(1, 1)).doc.state == AttemptState.FAILED


def test_jobs_api_unavailable_is_retried_by_redelivery(harness: Harness, jobs_api: tuple[JobsApi, str]) -> None:
    api, endpoint = jobs_api
    api.status = 503
    api.body = {"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}}
    pipeline = cloudrun_pipeline(harness, endpoint)
    event, run_id = harness.submit((EXAMPLES / "small-office.idf").read_bytes(), "energyplus-basic", "office.idf")
    assert pipeline.handle(event) == CREATED

    with pytest.raises(Exception, match="unavailable"):
        pipeline.handle(harness.input_event(run_id))

    assert harness.store.attempt(run_id, attempt_id_for(1, 1)).doc.state == AttemptState.SCHEDULED
    assert harness.store.run(run_id).doc.status == RunStatus.RUNNING


EXITED_WITH_AN_ERROR = (
    "Task validibot-validator-energyplus-x7k2p-task0 failed with message: The container exited with an error."
)
RUNNING = execution(
    {"type": "ResourcesAvailable", "state": State.CONDITION_SUCCEEDED},
    {"type": "Started", "state": State.CONDITION_SUCCEEDED},
    {"type": "Completed", "state": State.CONDITION_RECONCILING},
    startTime=STARTED_AT,
    runningCount=1,
)
FAILED_WITHOUT_OUTPUT = execution(
    {"type": "ResourcesAvailable", "state": State.CONDITION_SUCCEEDED},
    {"type": "Started", "state": State.CONDITION_SUCCEEDED},
    {
        "type": "Completed",
        "state": State.CONDITION_FAILED,
        "executionReason": Reason.NON_ZERO_EXIT_CODE,
        "message": EXITED_WITH_AN_ERROR,
    },
    startTime=STARTED_AT,
    completionTime=COMPLETED_AT,
    failedCount=1,
)


@pytest.mark.parametrize(
    ("found", "message"),
    [
        (FAILED_WITHOUT_OUTPUT, EXITED_WITH_AN_ERROR),
        # Completed names no cause: the condition that failed does.
        (
            execution(
                {
                    "type": "Started",
                    "state": State.CONDITION_FAILED,
                    "message": "Image 'europe-west1-docker.pkg.dev/validibot-test/validators/energyplus' not found.",
                },
                {"type": "Completed", "state": State.CONDITION_FAILED},
                completionTime=COMPLETED_AT,
                failedCount=1,
            ),
            "Image 'europe-west1-docker.pkg.dev/validibot-test/validators/energyplus' not found.",
        ),
        # No message anywhere: the reason is the execution's only word.
        (
            execution(
                {"type": "Completed", "state": State.CONDITION_FAILED, "executionReason": Reason.NON_ZERO_EXIT_CODE},
                startTime=STARTED_AT,
                completionTime=COMPLETED_AT,
                failedCount=1,
            ),
            "NON_ZERO_EXIT_CODE",
        ),
    ],
    ids=["completed-says-why", "failed-condition-says-why", "only-a-reason"],
)
def test_inspect_failed_execution_gives_its_own_words(
    jobs_api: tuple[JobsApi, str], launcher: CloudRunLauncher, found: dict, message: str
) -> None:
    api, _ = jobs_api
    api.executions[EXECUTION] = found

    state = launcher.inspect(EXECUTION)

    assert state == ExecutionState(JobStatus.FAILED, message)
    assert state.finished
    assert api.requests == [("GET", f"/v2/{EXECUTION}", {})]


@pytest.mark.parametrize(
    ("found", "message"),
    [
        (
            execution(
                {"type": "Started", "state": State.CONDITION_SUCCEEDED},
                {
                    "type": "Completed",
                    "state": State.CONDITION_FAILED,
                    "executionReason": Reason.CANCELLED,
                    "message": "The execution was cancelled.",
                },
                startTime=STARTED_AT,
                completionTime=COMPLETED_AT,
                cancelledCount=1,
            ),
            "The execution was cancelled.",
        ),
        # Cancelled before it started: no completion time, only the Completed condition says it ended.
        (
            execution(
                {"type": "Started", "state": State.CONDITION_RECONCILING},
                {"type": "Completed", "state": State.CONDITION_FAILED, "executionReason": Reason.CANCELLED},
                cancelledCount=1,
            ),
            "CANCELLED",
        ),
    ],
    ids=["after-start", "before-start"],
)
def test_inspect_cancelled_execution(
    jobs_api: tuple[JobsApi, str], launcher: CloudRunLauncher, found: dict, message: str
) -> None:
    api, _ = jobs_api
    api.executions[EXECUTION] = found

    state = launcher.inspect(EXECUTION)

    assert state == ExecutionState(JobStatus.CANCELLED, message)
    assert state.finished


@pytest.mark.parametrize(
    ("found", "job_status"),
    [
        (RUNNING, JobStatus.RUNNING),
        # Waiting for resources: not started yet.
        (
            execution(
                {"type": "ResourcesAvailable", "state": State.CONDITION_RECONCILING},
                {"type": "Completed", "state": State.CONDITION_PENDING},
            ),
            JobStatus.PENDING,
        ),
        # A cancel under way has not ended it: its tasks may still be running.
        (
            execution(
                {"type": "Started", "state": State.CONDITION_SUCCEEDED},
                {"type": "Completed", "state": State.CONDITION_RECONCILING, "executionReason": Reason.CANCELLING},
                startTime=STARTED_AT,
                runningCount=1,
            ),
            JobStatus.RUNNING,
        ),
    ],
    ids=["running", "pending", "cancelling"],
)
def test_inspect_unfinished_execution(
    jobs_api: tuple[JobsApi, str], launcher: CloudRunLauncher, found: dict, job_status: JobStatus
) -> None:
    api, _ = jobs_api
    api.executions[EXECUTION] = found

    state = launcher.inspect(EXECUTION)

    assert state == ExecutionState(job_status)
    assert not state.finished


def test_inspect_succeeded_execution(jobs_api: tuple[JobsApi, str], launcher: CloudRunLauncher) -> None:
    api, _ = jobs_api
    api.executions[EXECUTION] = execution(
        {"type": "Started", "state": State.CONDITION_SUCCEEDED},
        {"type": "Completed", "state": State.CONDITION_SUCCEEDED},
        startTime=STARTED_AT,
        completionTime=COMPLETED_AT,
        succeededCount=1,
    )

    state = launcher.inspect(EXECUTION)

    assert state == ExecutionState(JobStatus.SUCCEEDED)
    assert state.finished


def test_inspect_missing_execution_fails_saying_so(jobs_api: tuple[JobsApi, str], launcher: CloudRunLauncher) -> None:
    api, _ = jobs_api

    state = launcher.inspect(EXECUTION)

    assert state == ExecutionState(JobStatus.FAILED, f"the Cloud Run execution {EXECUTION} no longer exists")
    assert api.requests == [("GET", f"/v2/{EXECUTION}", {})]


def test_stop_cancels_the_recorded_execution(harness: Harness, jobs_api: tuple[JobsApi, str]) -> None:
    api, endpoint = jobs_api
    api.body = RUN_JOB_OPERATION
    api.executions[EXECUTION] = RUNNING
    pipeline = cloudrun_pipeline(harness, endpoint)
    run_id, outcome = launch_energyplus(harness, pipeline)
    assert outcome == LAUNCHED
    recorded = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc.execution_name
    cloudrun = pipeline.context.launchers["cloudrun"]
    assert isinstance(cloudrun, CloudRunLauncher)

    cloudrun.stop(recorded)

    assert api.requests[-1] == ("POST", f"/v2/{EXECUTION}:cancel", {})


@pytest.mark.parametrize(
    "found",
    [FAILED_WITHOUT_OUTPUT, None],
    ids=["already-finished", "gone"],
)
def test_stop_has_nothing_to_do_for_an_ended_execution(
    jobs_api: tuple[JobsApi, str], launcher: CloudRunLauncher, found: dict | None
) -> None:
    api, _ = jobs_api
    if found is not None:
        api.executions[EXECUTION] = found

    launcher.stop(EXECUTION)

    # The API was asked and refused (FAILED_PRECONDITION, NOT_FOUND); the refusal means the execution is over.
    assert api.requests == [("POST", f"/v2/{EXECUTION}:cancel", {})]


@pytest.fixture
def ticked(emulators: LocalStack, jobs_api: tuple[JobsApi, str]) -> tuple[Harness, JobsApi]:
    """A pipeline whose job steps go to the stand-in Cloud Run API, in a project of its own (for its ticks)."""
    api, endpoint = jobs_api
    api.body = RUN_JOB_OPERATION
    harness = isolated_harness(
        emulators.settings,
        job_launcher="cloudrun",
        cloudrun_region=REGION,
        cloudrun_api_endpoint=endpoint,
        timeout_grace_seconds=0,
    )
    return harness, api


def test_the_tick_fails_a_step_whose_execution_failed_without_output_in_its_own_words(
    ticked: tuple[Harness, JobsApi],
) -> None:
    harness, api = ticked
    run_id, outcome = launch_energyplus(harness, harness.pipeline)
    assert outcome == LAUNCHED
    api.executions[EXECUTION] = FAILED_WITHOUT_OUTPUT

    assert harness.pipeline.tick()["executions ended without output"] == 1

    run = harness.store.run(run_id).doc
    assert (run.status, run.error_category) == (RunStatus.FAILED, ErrorCategory.RUNTIME_ERROR)
    assert run.error == f"step 1 'EnergyPlus annual simulation, Golden CO': {EXITED_WITH_AN_ERROR}"
    assert harness.store.attempt(run_id, attempt_id_for(1, 1)).doc.job_status == JobStatus.FAILED


def test_the_tick_cancels_a_run_whose_execution_was_cancelled(ticked: tuple[Harness, JobsApi]) -> None:
    harness, api = ticked
    run_id, _ = launch_energyplus(harness, harness.pipeline)
    api.executions[EXECUTION] = execution(
        {"type": "Completed", "state": State.CONDITION_FAILED, "executionReason": Reason.CANCELLED},
        startTime=STARTED_AT,
        completionTime=COMPLETED_AT,
        cancelledCount=1,
    )

    harness.pipeline.tick()

    assert harness.store.run(run_id).doc.status == RunStatus.CANCELED


def test_the_tick_times_out_a_running_execution_and_cancels_it_by_its_recorded_name(
    ticked: tuple[Harness, JobsApi],
) -> None:
    harness, api = ticked
    slug = harness.add_workflow(
        [
            harness.store.workflow("demo", "energyplus-basic").steps[0].model_copy(update={"timeout_seconds": 1}),
        ]
    )
    event, run_id = harness.submit((EXAMPLES / "small-office.idf").read_bytes(), slug, "office.idf")
    harness.pipeline.handle(event)
    assert harness.pipeline.handle(harness.input_event(run_id)) == LAUNCHED
    api.executions[EXECUTION] = execution({"type": "Started", "state": State.CONDITION_SUCCEEDED}, startTime=STARTED_AT)
    time.sleep(1.5)

    assert harness.pipeline.tick()["timed out"] == 1

    assert harness.store.run(run_id).doc.status == RunStatus.TIMED_OUT
    assert ("POST", f"/v2/{EXECUTION}:cancel", {}) in api.requests
