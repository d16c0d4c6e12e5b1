"""LAUNCH's handler on the in-memory ports: claimed, duplicate, busy, refused, failed and released, lost race."""

from __future__ import annotations

import pytest

from functions.stage import Handled, Outcome
from jobs.launchers.base import LauncherBusy, LaunchRefused, LaunchResult
from schemas.enums import AttemptState, ErrorCategory, JobStatus, LifecycleType, RunStatus, StepStatus
from schemas.paths import attempt_id_for
from schemas.signing import attempt_signing_key
from tests.fakes import FakeWorld
from tests.support import APPLIED, CREATED, DUPLICATE, LAUNCHED, VALID


def scheduled(world: FakeWorld, workflow: str = "json-basic", filename: str = "a.json") -> str:
    event, run_id = world.submit(VALID, workflow, filename)
    assert world.pipeline.handle(event) == CREATED
    return run_id


def attempt_state(world: FakeWorld, run_id: str) -> AttemptState:
    return AttemptState(world.store.attempt(run_id, attempt_id_for(1, 1)).doc.state)


def test_an_inline_launch_claims_the_attempt_and_writes_its_output() -> None:
    world = FakeWorld()
    run_id = scheduled(world)

    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED

    assert attempt_state(world, run_id) == AttemptState.DISPATCHING
    assert world.store.run(run_id).doc.status == RunStatus.RUNNING
    assert world.reads.step(run_id, 1).status == StepStatus.RUNNING
    assert world.publisher.types(run_id) == [LifecycleType.RUN_CREATED, LifecycleType.STEP_STARTED]
    assert world.pipeline.handle(world.output_event(run_id)) == APPLIED


def test_a_job_launch_records_its_execution() -> None:
    world = FakeWorld()
    world.job_launcher.result = LaunchResult("local/4242", JobStatus.RUNNING)
    run_id = scheduled(world, "fmu-basic", "model.fmu")

    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED

    attempt = world.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert (attempt.state, attempt.launcher) == (AttemptState.RUNNING, "local")
    assert (attempt.execution_name, attempt.job_status) == ("local/4242", JobStatus.RUNNING)
    [assignment] = world.job_launcher.launched
    assert assignment.envelope.context.expected_output_uri == attempt.expected_output_uri
    assert assignment.input_sha256 == attempt.input_sha256
    assert assignment.signing_key == attempt_signing_key(
        world.settings.signing_secret_bytes(), run_id=run_id, attempt_id="01-1", callback_id=attempt.callback_id
    )


def test_a_redelivered_input_is_a_duplicate_and_launches_nothing_more() -> None:
    world = FakeWorld()
    run_id = scheduled(world)
    input_event = world.input_event(run_id)
    world.pipeline.handle(input_event)

    assert world.pipeline.handle(input_event) == DUPLICATE

    assert world.objects.generations_written(world.store.attempt(run_id, "01-1").doc.expected_output_uri) == 1


def test_a_busy_launcher_leaves_the_attempt_queued_and_acknowledges() -> None:
    world = FakeWorld()
    run_id = scheduled(world, "fmu-basic", "model.fmu")
    world.job_launcher.error = LauncherBusy("2 local jobs are already running")

    assert world.pipeline.handle(world.input_event(run_id)) == Handled(
        Outcome.QUEUED, "2 local jobs are already running"
    )
    attempt = world.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert (attempt.state, attempt.queued_at, attempt.dispatch_tries) == (AttemptState.SCHEDULED, world.clock.now, 0)

    # Whoever comes next (the tick, or a redelivery) claims it as any scheduled attempt.
    world.job_launcher.error = None
    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED
    attempt = world.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert (attempt.state, attempt.dispatch_tries) == (AttemptState.RUNNING, 1)


def test_a_refused_launch_fails_the_step_and_the_run_saying_why() -> None:
    world = FakeWorld()
    run_id = scheduled(world, "fmu-basic", "model.fmu")
    world.job_launcher.error = LaunchRefused("Cloud Run refused to start job validibot-validator-fmu: not found")

    handled = world.pipeline.handle(world.input_event(run_id))

    assert handled == Handled(Outcome.FAILED, "Cloud Run refused to start job validibot-validator-fmu: not found")
    run = world.store.run(run_id).doc
    assert (run.status, run.error_category) == (RunStatus.FAILED, ErrorCategory.SYSTEM_ERROR)
    assert run.error == (
        "step 1 'Two hours of room heating, comfort bounds': "
        "Cloud Run refused to start job validibot-validator-fmu: not found"
    )
    assert attempt_state(world, run_id) == AttemptState.FAILED
    assert world.publisher.types(run_id)[-2:] == [LifecycleType.STEP_COMPLETED, LifecycleType.RUN_COMPLETED]


def test_a_launch_that_fails_after_its_claim_is_released_and_relaunched() -> None:
    world = FakeWorld()
    run_id = scheduled(world, "fmu-basic", "model.fmu")
    world.job_launcher.error = ConnectionError("the Jobs API is unavailable")

    with pytest.raises(ConnectionError):
        world.pipeline.handle(world.input_event(run_id))
    attempt = world.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert (attempt.state, attempt.dispatched_at, attempt.timeout_at) == (AttemptState.SCHEDULED, None, None)

    world.job_launcher.error = None
    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED
    assert len(world.job_launcher.launched) == 1


def test_a_claim_lost_to_a_concurrent_delivery_is_a_duplicate() -> None:
    world = FakeWorld()
    run_id = scheduled(world, "fmu-basic", "model.fmu")
    input_event = world.input_event(run_id)
    winner: list[Handled] = []
    world.fake_store.before_next_commit(lambda: winner.append(world.pipeline.handle(input_event)))

    assert world.pipeline.handle(input_event) == DUPLICATE

    assert winner == [LAUNCHED]
    assert len(world.job_launcher.launched) == 1


def test_a_tampered_input_fails_the_run_without_launching() -> None:
    world = FakeWorld()
    run_id = scheduled(world, "fmu-basic", "model.fmu")
    attempt = world.store.attempt(run_id, attempt_id_for(1, 1)).doc
    world.objects.upload(attempt.input_uri, b'{"schema_version": "validibot.input.v1"}')

    handled = world.pipeline.handle(world.input_event(run_id))

    assert handled == Handled(
        Outcome.FAILED, "input.json is not the envelope scheduled for this attempt (sha256 differs)"
    )
    assert world.store.run(run_id).doc.error_category == ErrorCategory.SYSTEM_ERROR
    assert world.job_launcher.launched == []


def test_an_input_for_no_known_attempt_is_acknowledged_and_ignored() -> None:
    world = FakeWorld()
    name = "runs/demo/0123456789abcdef01234567/steps/01-schema/01-1/input.json"

    assert world.pipeline.handle(world.upload(name, b"{}")) == Handled(Outcome.UNKNOWN_ATTEMPT)
    assert world.fake_store.collection("runs") == {}


def test_a_document_whose_keys_cannot_be_written_back_as_utf8_still_gets_its_verdict() -> None:
    world = FakeWorld()
    # A lone surrogate is valid JSON escaping but not UTF-8: quoted back in a finding, it is spelled out.
    event, run_id = world.submit(b'{"\\ud800": 1, "\\ud800": 2}', "json-basic")
    world.pipeline.handle(event)

    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED
    world.pipeline.handle(world.output_event(run_id))

    run = world.store.run(run_id).doc
    assert run.status == RunStatus.FAILED
    paths = [f.location.path for f in world.reads.findings(run_id, limit=50) if f.code == "json.duplicate_key"]
    assert paths == ["/\\ud800"]


def test_a_launch_that_keeps_failing_ends_the_run_after_its_tries() -> None:
    world = FakeWorld(max_dispatch_tries=2)
    run_id = scheduled(world, "fmu-basic", "model.fmu")
    world.job_launcher.error = RuntimeError("the launcher's API is broken")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            world.pipeline.handle(world.input_event(run_id))
    handled = world.pipeline.handle(world.input_event(run_id))

    assert handled.outcome == Outcome.FAILED
    run = world.store.run(run_id).doc
    assert (run.status, run.error_category) == (RunStatus.FAILED, ErrorCategory.SYSTEM_ERROR)
    assert "no launch took hold in 2 claims" in run.error
