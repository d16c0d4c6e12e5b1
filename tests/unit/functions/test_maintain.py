"""The MAINTAIN stage (DESIGN §13) on the in-memory ports: every sweep, and ticks that race or repeat."""

from __future__ import annotations

from datetime import timedelta

import pytest

from functions.stage import Outcome
from jobs.launchers.base import ExecutionState, LauncherBusy, LaunchResult
from schemas.changes import Write, receipt_path, workflow_path
from schemas.documents import ReceiptDoc, Retention
from schemas.enums import AttemptState, ErrorCategory, JobStatus, ReceiptStatus, RunStatus, StepStatus
from schemas.paths import attempt_id_for
from tests.fakes import Crash, FakeWorld
from tests.support import CREATED, LAUNCHED, VALID, genuine_output

FIRST = attempt_id_for(1, 1)


def job_run(world: FakeWorld, filename: str = "model.fmu") -> str:
    """An FMU run created and launched as a job (execution local/4242 on the scripted launcher)."""
    event, run_id = world.submit(VALID, "fmu-basic", filename)
    assert world.pipeline.handle(event) == CREATED
    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED
    return run_id


def attempt(world: FakeWorld, run_id: str):
    return world.store.attempt(run_id, FIRST).doc


def test_queued_attempts_launch_oldest_first_as_slots_free() -> None:
    world = FakeWorld()
    world.job_launcher.error = LauncherBusy("2 local jobs are already running")
    runs = []
    for n in range(3):
        event, run_id = world.submit(VALID, "fmu-basic", f"model-{n}.fmu")
        world.pipeline.handle(event)
        assert world.pipeline.handle(world.input_event(run_id)).outcome == Outcome.QUEUED
        runs.append(run_id)
        world.clock.advance(1)

    # Still full: nothing launches, nothing is lost.
    assert world.pipeline.tick()["queued launched"] == 0
    assert [attempt(world, r).state for r in runs] == [AttemptState.SCHEDULED] * 3

    # One slot frees: the oldest goes, then the launcher is full again and the sweep stops.
    world.job_launcher.error = None
    world.job_launcher.capacity = 1
    assert world.pipeline.tick()["queued launched"] == 1
    assert [attempt(world, r).state for r in runs] == [
        AttemptState.RUNNING,
        AttemptState.SCHEDULED,
        AttemptState.SCHEDULED,
    ]
    world.job_launcher.capacity = None
    assert world.pipeline.tick()["queued launched"] == 2
    assert [a.envelope.run_id for a in world.job_launcher.launched] == runs


def test_a_job_past_its_timeout_ends_timed_out_and_is_stopped() -> None:
    world = FakeWorld()
    run_id = job_run(world)
    world.clock.advance(attempt(world, run_id).timeout_seconds)
    assert world.pipeline.tick()["timed out"] == 0  # within the grace a job has to deliver

    world.clock.advance(world.settings.timeout_grace_seconds + 1)
    assert world.pipeline.tick()["timed out"] == 1

    run = world.store.run(run_id).doc
    assert (run.status, run.error_category) == (RunStatus.TIMED_OUT, ErrorCategory.TIMEOUT)
    assert "ran past its 120 s timeout" in run.error
    assert attempt(world, run_id).state == AttemptState.TIMED_OUT
    assert world.reads.step(run_id, 1).status == StepStatus.FAILED
    assert world.job_launcher.stopped == ["local/4242"]
    # The job's late output is recorded as late, not applied.
    late = genuine_output(run_id, attempt(world, run_id)).to_bytes()
    assert world.pipeline.handle(world.put_output(run_id, late)).outcome == Outcome.REJECTED
    assert world.store.run(run_id).doc.status == RunStatus.TIMED_OUT


def test_an_execution_that_ended_without_output_fails_its_step_in_its_own_words() -> None:
    world = FakeWorld()
    run_id = job_run(world)
    world.job_launcher.executions["local/4242"] = ExecutionState(JobStatus.FAILED, "Task exited with code 137")

    assert world.pipeline.tick()["executions ended without output"] == 1

    run = world.store.run(run_id).doc
    assert (run.status, run.error_category) == (RunStatus.FAILED, ErrorCategory.RUNTIME_ERROR)
    assert run.error.endswith(": Task exited with code 137")
    assert (attempt(world, run_id).state, attempt(world, run_id).job_status) == (AttemptState.FAILED, "FAILED")


def test_a_cancelled_execution_cancels_the_run() -> None:
    world = FakeWorld()
    run_id = job_run(world)
    world.job_launcher.executions["local/4242"] = ExecutionState(JobStatus.CANCELLED, "cancelled by an operator")

    world.pipeline.tick()

    assert world.store.run(run_id).doc.status == RunStatus.CANCELED
    assert world.reads.step(run_id, 1).status == StepStatus.CANCELED


def test_an_ended_execution_whose_output_exists_is_ingested_not_failed() -> None:
    world = FakeWorld()
    run_id = job_run(world)
    # The job wrote its verdict, but its finalize event never came.
    world.put_output(run_id, genuine_output(run_id, attempt(world, run_id)).to_bytes())
    world.job_launcher.executions["local/4242"] = ExecutionState(JobStatus.SUCCEEDED)

    assert world.pipeline.tick()["outputs ingested"] == 1

    assert world.store.run(run_id).doc.status == RunStatus.SUCCEEDED


def test_a_running_executions_status_is_refreshed() -> None:
    world = FakeWorld()
    world.job_launcher.result = LaunchResult("local/4242", JobStatus.PENDING)
    run_id = job_run(world)

    assert world.pipeline.tick()["job status refreshed"] == 1
    assert attempt(world, run_id).job_status == JobStatus.RUNNING
    assert world.pipeline.tick()["job status refreshed"] == 0


def lost_claim(world: FakeWorld, run_id: str, tries: int) -> None:
    """The attempt as a function leaves it that claimed it and died before recording a launch."""
    claimed = attempt(world, run_id).model_copy(
        update={"state": AttemptState.DISPATCHING, "dispatched_at": world.clock(), "dispatch_tries": tries}
    )
    world.fake_store.commit([Write(("runs", run_id, "attempts", FIRST), claimed, "upsert")])


def test_a_claim_past_its_lease_is_released_and_redispatched() -> None:
    world = FakeWorld()
    event, run_id = world.submit(VALID, "fmu-basic", "model.fmu")
    world.pipeline.handle(event)
    lost_claim(world, run_id, tries=1)

    assert world.pipeline.tick()["leases released"] == 0
    world.clock.advance(world.settings.dispatch_lease_seconds + 1)
    report = world.pipeline.tick()

    assert (report["leases released"], report["queued launched"]) == (1, 1)
    assert (attempt(world, run_id).state, attempt(world, run_id).dispatch_tries) == (AttemptState.RUNNING, 2)


def test_a_claim_lost_on_its_last_try_fails_the_run() -> None:
    world = FakeWorld(max_dispatch_tries=2)
    event, run_id = world.submit(VALID, "fmu-basic", "model.fmu")
    world.pipeline.handle(event)
    lost_claim(world, run_id, tries=2)
    world.clock.advance(world.settings.dispatch_lease_seconds + 1)

    assert world.pipeline.tick()["leases failed"] == 1

    run = world.store.run(run_id).doc
    assert (run.status, run.error_category) == (RunStatus.FAILED, ErrorCategory.SYSTEM_ERROR)
    assert "no launch took hold in 2 claims" in run.error


def test_a_pending_run_whose_input_was_never_written_is_replayed() -> None:
    world = FakeWorld()
    world.publisher.crash_next_publish()  # the intake dies after its commit, before its effects
    event, run_id = world.submit(VALID)
    with pytest.raises(Crash):
        world.pipeline.handle(event)
    assert world.store.run(run_id).doc.status == RunStatus.PENDING

    world.clock.advance(world.settings.lost_effects_seconds + 1)
    report = world.pipeline.tick()

    assert (report["intakes replayed"], report["launches replayed"]) == (1, 1)
    assert attempt(world, run_id).state == AttemptState.DISPATCHING  # claimed and run inline; its output is next


def test_expired_receipts_are_deleted() -> None:
    world = FakeWorld()
    old = ReceiptDoc(
        run_id="r",
        attempt_id=FIRST,
        status=ReceiptStatus.COMPLETED,
        received_at=world.clock(),
        output_uri="gs://b/o",
        output_generation=1,
        expire_at=world.clock() + timedelta(days=1),
    )
    world.fake_store.commit([Write(receipt_path("old"), old, "create")])

    assert world.pipeline.tick()["receipts expired"] == 0
    world.clock.advance(86_401)
    assert world.pipeline.tick()["receipts expired"] == 1
    assert world.store.receipt("old") is None


def test_retention_zero_deletes_the_submission_once_the_run_ends_and_keeps_the_verdict() -> None:
    world = FakeWorld()
    workflow = world.store.workflow("demo", "json-basic").model_copy(
        update={"retention": Retention(submission_days=0, results_days=1)}
    )
    world.fake_store.commit([Write(workflow_path("demo", "json-basic"), workflow, "upsert")])
    run_id, _ = world.run_through(VALID)
    run = world.store.run(run_id).doc
    inbox_uri, _, _ = run.source.partition("#")

    world.clock.advance(1)  # the first tick after the run ended
    assert world.pipeline.tick()["runs purged"] == 1

    assert world.objects.stat(run.submission.uri) is None
    assert world.objects.stat(inbox_uri) is None
    purged = world.store.run(run_id).doc
    assert (purged.status, purged.purged_at, purged.results_purged_at) == (RunStatus.SUCCEEDED, world.clock(), None)
    assert world.objects.stat(attempt(world, run_id).expected_output_uri) is not None

    world.clock.advance(86_400)
    assert world.pipeline.tick()["runs purged"] == 1
    assert world.objects.stat(attempt(world, run_id).expected_output_uri) is None
    assert world.store.run(run_id).doc.purge_due_at is None


def test_ticks_at_once_and_repeated_change_each_document_once() -> None:
    world = FakeWorld()
    run_id = job_run(world)
    world.clock.advance(attempt(world, run_id).timeout_seconds + world.settings.timeout_grace_seconds + 1)
    writes = world.fake_store.writes_by_path.copy()
    # A second tick runs while the first is about to commit; then the tick is redelivered three times.
    world.fake_store.before_next_commit(world.pipeline.tick)
    world.pipeline.tick()
    for _ in range(3):
        world.pipeline.tick()

    changed = world.fake_store.writes_by_path - writes
    assert changed[("runs", run_id)] == 1
    assert changed[("runs", run_id, "attempts", FIRST)] == 1
    assert world.publisher.types(run_id).count("org.validibot.run.v1.completed") == 1
    assert world.job_launcher.stopped == ["local/4242"]
