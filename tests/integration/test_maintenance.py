"""The maintenance tick (DESIGN §13) on the real emulators and real local jobs. Each test gets a project of its own
so that its sweeps see only its own runs."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploy.stack import LocalStack
from jobs.launchers.processes import process_stats
from schemas.changes import Write, attempt_path, receipt_path, workflow_path
from schemas.documents import ReceiptDoc, Retention, StepSpec
from schemas.enums import AttemptState, ErrorCategory, LifecycleType, ReceiptStatus, RunStatus
from schemas.paths import attempt_id_for
from tests.support import APPLIED, CREATED, VALID, Harness, isolated_harness

pytestmark = pytest.mark.integration

FIRST = attempt_id_for(1, 1)


@pytest.fixture
def maintained(emulators: LocalStack) -> Harness:
    """Two local job slots, short leases and no timeout grace, in a project of its own."""
    return isolated_harness(
        emulators.settings,
        local_max_concurrent_jobs=2,
        timeout_grace_seconds=0,
        dispatch_lease_seconds=1,
        lost_effects_seconds=1,
        # The job's own watcher waits long enough for the sweep to be the one that stops a hung job.
        local_kill_grace_seconds=120,
    )


def slow_fmu_workflow(harness: Harness, steps: int, timeout_seconds: int = 120) -> str:
    """SlowRoom sleeps 0.1 s a step."""
    config = {"stop_time": steps, "step_size": 1, "output_variables": ["room_temperature"]}
    step = StepSpec(key="slow", name="Slow", validator="fmu", config=config, timeout_seconds=timeout_seconds)
    return harness.add_workflow([step])


def tick_until(harness: Harness, done: Callable[[], bool], seconds: float = 120) -> None:
    """What the stack does: a tick at a steady pace, until `done` holds."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the ticks did not get there in time"
        harness.pipeline.tick()
        time.sleep(0.5)


def status(harness: Harness, run_id: str) -> RunStatus:
    return RunStatus(harness.store.run(run_id).doc.status)


def test_six_slow_jobs_with_two_slots_all_succeed_oldest_first_without_redelivery(
    maintained: Harness, fmus: dict[str, Path]
) -> None:
    workflow = slow_fmu_workflow(maintained, steps=10)
    runs, outcomes = [], []
    for n in range(6):
        event, run_id = maintained.submit(fmus["SlowRoom"].read_bytes(), workflow, f"slow-{n}.fmu")
        assert maintained.pipeline.handle(event) == CREATED
        # Each input.json event is delivered once, as Pub/Sub would; nothing is ever redelivered.
        outcomes.append(maintained.pipeline.handle(maintained.input_event(run_id)).outcome)
        runs.append(run_id)

    assert [str(o) for o in outcomes] == ["launched"] * 2 + ["queued (launcher full)"] * 4
    tick_until(maintained, lambda: all(status(maintained, r).is_terminal for r in runs))

    assert [status(maintained, r) for r in runs] == [RunStatus.SUCCEEDED] * 6
    started = [maintained.store.attempt(r, FIRST).doc.dispatched_at for r in runs]
    assert started == sorted(started)


def test_a_hung_job_is_timed_out_by_the_tick_and_its_process_group_is_gone(
    maintained: Harness, fmus: dict[str, Path]
) -> None:
    workflow = slow_fmu_workflow(maintained, steps=1000, timeout_seconds=2)
    event, run_id = maintained.submit(fmus["SlowRoom"].read_bytes(), workflow, "hung.fmu")
    maintained.pipeline.handle(event)
    maintained.pipeline.handle(maintained.input_event(run_id))
    execution = maintained.store.attempt(run_id, FIRST).doc.execution_name
    pid = int(execution.removeprefix("local/").split("@")[0])
    os.killpg(pid, signal.SIGSTOP)

    tick_until(maintained, lambda: status(maintained, run_id).is_terminal)

    run = maintained.store.run(run_id).doc
    assert (run.status, run.error_category) == (RunStatus.TIMED_OUT, ErrorCategory.TIMEOUT)
    assert "ran past its 2 s timeout" in run.error
    deadline = time.monotonic() + 10
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_alive(pid)


def _group_alive(pgid: int) -> bool:
    """A member of the group still runs (killed members may linger as zombies until reaped: they do not count)."""
    return any(process.pgid == pgid and process.alive for process in process_stats())


def test_a_claim_lost_with_its_function_is_redispatched_once_and_the_run_completes(maintained: Harness) -> None:
    event, run_id = maintained.submit(VALID)
    maintained.pipeline.handle(event)
    attempt = maintained.store.attempt(run_id, FIRST)
    lost = attempt.doc.model_copy(
        update={
            "state": AttemptState.DISPATCHING,
            "dispatched_at": datetime.now(UTC) - timedelta(seconds=5),
            "dispatch_tries": 1,
        }
    )
    maintained.store.commit([Write(attempt_path(run_id, FIRST), lost, "replace", attempt.update_time)])

    report = maintained.pipeline.tick()

    assert (report["leases released"], report["queued launched"]) == (1, 1)
    assert maintained.pipeline.handle(maintained.output_event(run_id)) == APPLIED
    assert status(maintained, run_id) == RunStatus.SUCCEEDED
    assert maintained.store.attempt(run_id, FIRST).doc.dispatch_tries == 2


def test_ticks_at_once_and_redelivered_end_a_run_once(maintained: Harness, fmus: dict[str, Path]) -> None:
    settings = maintained.settings
    subscriber = maintained.services.subscriber_client
    events = subscriber.subscription_path(settings.project, "lifecycle")
    subscriber.create_subscription(name=events, topic=f"projects/{settings.project}/topics/{settings.run_events_topic}")
    workflow = slow_fmu_workflow(maintained, steps=1000, timeout_seconds=1)
    event, run_id = maintained.submit(fmus["SlowRoom"].read_bytes(), workflow, "slow.fmu")
    maintained.pipeline.handle(event)
    maintained.pipeline.handle(maintained.input_event(run_id))
    time.sleep(1.5)

    ticks = [threading.Thread(target=maintained.pipeline.tick) for _ in range(2)]
    for tick in ticks:
        tick.start()
    for tick in ticks:
        tick.join()
    ended = maintained.store.run(run_id)
    for _ in range(3):
        maintained.pipeline.tick()

    assert ended.doc.status == RunStatus.TIMED_OUT
    assert maintained.store.run(run_id).update_time == ended.update_time
    received = subscriber.pull(subscription=events, max_messages=50, timeout=10).received_messages
    completed = [
        m
        for m in received
        if m.message.attributes["ce-type"] == LifecycleType.RUN_COMPLETED
        and run_id in m.message.attributes["ce-subject"]
    ]
    assert len(completed) == 1


def test_expired_receipts_go_and_a_zero_day_submission_is_deleted_after_its_run(maintained: Harness) -> None:
    now = datetime.now(UTC)
    expired = ReceiptDoc(
        run_id="r",
        attempt_id=FIRST,
        status=ReceiptStatus.COMPLETED,
        received_at=now - timedelta(days=31),
        output_uri="gs://b/o",
        output_generation=1,
        expire_at=now - timedelta(seconds=1),
    )
    kept = expired.model_copy(update={"expire_at": now + timedelta(days=1)})
    maintained.store.commit(
        [Write(receipt_path("expired"), expired, "create"), Write(receipt_path("kept"), kept, "create")]
    )
    workflow = maintained.store.workflow("demo", "json-basic").model_copy(
        update={"retention": Retention(submission_days=0)}
    )
    maintained.store.commit([Write(workflow_path("demo", "json-basic"), workflow, "upsert")])
    run_id, run = maintained.run_through(VALID)
    inbox_uri = run.source.partition("#")[0]
    assert maintained.objects_port.stat(run.submission.uri) is not None

    report = maintained.pipeline.tick()

    assert (report["receipts expired"], report["runs purged"]) == (1, 1)
    assert maintained.store.receipt("expired") is None
    assert maintained.store.receipt("kept") is not None
    assert maintained.objects_port.stat(run.submission.uri) is None
    assert maintained.objects_port.stat(inbox_uri) is None
    purged = maintained.store.run(run_id).doc
    assert (purged.status, purged.purged_at is not None) == (RunStatus.SUCCEEDED, True)
