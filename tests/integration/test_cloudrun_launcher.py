"""The cloudrun launcher through the real run_v2 client (REST transport) against a local stand-in for the Jobs API.

The stand-in records each request and answers as the Jobs API does: a long-running Operation whose metadata is
the new Execution, or a google.rpc error.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bootstrap import Services
from functions.pipeline import Pipeline
from functions.stage import Handled, Outcome
from schemas.enums import AttemptState, ErrorCategory, JobStatus, RunStatus
from schemas.paths import attempt_id_for
from tests.support import CREATED, DUPLICATE, EXAMPLES, LAUNCHED, Harness

pytestmark = pytest.mark.integration

PROJECT = "validibot-test"
REGION = "europe-west1"
JOB = f"projects/{PROJECT}/locations/{REGION}/jobs/validibot-validator-energyplus"
EXECUTION = f"{JOB}/executions/validibot-validator-energyplus-x7k2p"


@dataclass
class JobsApi:
    """Answers POST …/jobs/{job}:run with `status` and `body`; keeps what it was sent."""

    status: int = 200
    body: dict = field(default_factory=dict)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)


@pytest.fixture
def jobs_api() -> Iterator[tuple[JobsApi, str]]:
    api = JobsApi()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            path = self.path.split("?", 1)[0]  # the query only asks for JSON with enums as ints
            api.requests.append(("POST", path, json.loads(self.rfile.read(length) or b"{}")))
            payload = json.dumps(api.body).encode()
            self.send_response(api.status)
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
    api.body = {
        "name": f"projects/{PROJECT}/locations/{REGION}/operations/5f0c1f4e",
        "metadata": {
            "@type": "type.googleapis.com/google.cloud.run.v2.Execution",
            "name": EXECUTION,
            "job": "validibot-validator-energyplus",
        },
        "done": False,
    }
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
