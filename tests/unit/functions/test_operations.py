"""Cancel and re-run (DESIGN §13) on the in-memory ports."""

from __future__ import annotations

import pytest

from functions.operations import NotCancelable, Operations, RunNotFound
from functions.stage import Outcome
from jobs.launchers.base import LaunchResult
from jobs.runtime import Assignment
from schemas.enums import AttemptState, LifecycleType, RunStatus, StepStatus
from schemas.paths import RERUN_OF_METADATA_KEY, attempt_id_for, inbox_object, run_id_for
from tests.fakes import FakeWorld
from tests.support import CREATED, INVALID, LAUNCHED, VALID, genuine_output, json_step


def operations(world: FakeWorld) -> Operations:
    return Operations(world.pipeline.context)


def test_cancel_ends_a_running_job_run_stops_its_job_and_records_its_late_output_as_late() -> None:
    world = FakeWorld()
    slug = world.add_workflow(
        [
            json_step("one", {"type": "object"}).model_copy(
                update={"validator": "fmu", "config": {"stop_time": 1, "step_size": 1, "output_variables": ["x"]}}
            ),
            json_step("two", {"type": "object"}),
        ]
    )
    event, run_id = world.submit(b"{}", slug)
    assert world.pipeline.handle(event) == CREATED
    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED

    canceled = operations(world).cancel(run_id)

    assert (canceled.status, canceled.error_category, canceled.error) == (RunStatus.CANCELED, None, None)
    assert [world.reads.step(run_id, n).status for n in (1, 2)] == [StepStatus.CANCELED, StepStatus.SKIPPED]
    assert world.store.attempt(run_id, attempt_id_for(1, 1)).doc.state == AttemptState.FAILED
    assert world.job_launcher.stopped == ["local/4242"]
    assert world.publisher.types(run_id)[-1] == LifecycleType.RUN_COMPLETED
    late = genuine_output(run_id, world.store.attempt(run_id, attempt_id_for(1, 1)).doc).to_bytes()
    assert world.pipeline.handle(world.put_output(run_id, late)).outcome == Outcome.REJECTED
    assert world.store.run(run_id).doc.status == RunStatus.CANCELED


def test_an_ended_or_unknown_run_cannot_be_canceled() -> None:
    world = FakeWorld()
    run_id, _ = world.run_through(VALID)

    with pytest.raises(NotCancelable, match="SUCCEEDED"):
        operations(world).cancel(run_id)
    with pytest.raises(RunNotFound):
        operations(world).cancel("0" * 24)


def test_rerun_makes_a_new_run_of_the_same_submission_linked_to_the_first() -> None:
    world = FakeWorld()
    first_id, first = world.run_through(INVALID)

    rerun_id = operations(world).rerun(first_id)
    event = world.event_for(
        f"gs://{world.settings.inbox_bucket}/{inbox_object('demo', 'json-basic', first.submission_name)}"
    )
    assert world.pipeline.handle(event) == CREATED
    world.pipeline.handle(world.input_event(rerun_id))
    world.pipeline.handle(world.output_event(rerun_id))

    rerun = world.store.run(rerun_id).doc
    assert rerun_id != first_id
    assert rerun.rerun_of == first_id
    assert rerun.submission.sha256 == first.submission.sha256
    assert (rerun.status, rerun.counts.ERROR) == (RunStatus.FAILED, first.counts.ERROR)


def test_an_upload_claiming_to_rerun_a_run_with_other_bytes_is_not_linked() -> None:
    world = FakeWorld()
    _, valid = world.run_through(VALID)
    invalid_id, _ = world.run_through(INVALID)
    uri = f"gs://{world.settings.inbox_bucket}/{inbox_object('demo', 'json-basic', 'claims-a-rerun.json')}"
    stored = world.objects.copy_version(
        valid.submission.uri, valid.submission.generation, uri, {RERUN_OF_METADATA_KEY: invalid_id}, None
    )

    assert world.pipeline.handle(world.event_for(uri)) == CREATED

    run = world.store.run(run_id_for(world.settings.inbox_bucket, stored.uri.split("/", 3)[3], stored.generation))
    assert run.doc.rerun_of is None


def test_a_job_started_while_its_run_was_canceled_is_stopped() -> None:
    world = FakeWorld()
    event, run_id = world.submit(b"{}", "fmu-basic", "model.fmu")
    world.pipeline.handle(event)
    start = world.job_launcher.launch

    def start_while_canceled(assignment: Assignment) -> LaunchResult:
        # The cancel lands between LAUNCH's claim and its record of the execution it started.
        result = start(assignment)
        operations(world).cancel(run_id)
        return result

    world.job_launcher.launch = start_while_canceled  # type: ignore[method-assign]

    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED

    assert world.store.run(run_id).doc.status == RunStatus.CANCELED
    assert world.job_launcher.stopped == ["local/4242"]
