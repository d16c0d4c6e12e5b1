"""The inline chain (DESIGN §16) on the in-memory ports: one call from upload to verdict for inline steps, jobs
launched as before, the later finalize events recognised as done from one document read each."""

from __future__ import annotations

from functions.stage import Handled, Known, Outcome
from schemas.enums import AttemptState, LifecycleType, ReceiptStatus, RunStatus
from schemas.paths import attempt_id_for
from tests.fakes import FakeWorld
from tests.support import CREATED, DUPLICATE, INVALID, INVALID_MESSAGES, LAUNCHED, VALID, genuine_output, json_step


def test_a_single_step_inline_run_ends_in_the_call_that_created_it() -> None:
    world = FakeWorld(inline_chain=True)
    event, run_id = world.submit(INVALID)

    assert world.pipeline.handle(event) == CREATED

    run = world.store.run(run_id).doc
    assert (run.status, run.counts.ERROR) == (RunStatus.FAILED, 4)
    assert [f.message for f in world.reads.findings(run_id, limit=10)] == INVALID_MESSAGES
    assert world.publisher.types(run_id) == [
        LifecycleType.RUN_CREATED,
        LifecycleType.STEP_STARTED,
        LifecycleType.STEP_COMPLETED,
        LifecycleType.RUN_COMPLETED,
    ]
    attempt = world.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert attempt.state == AttemptState.COMPLETED
    assert world.store.receipt(attempt.callback_id).status == ReceiptStatus.COMPLETED
    # Every object was still written create-only, for the audit trail and the replay paths.
    assert world.objects.generations_written(attempt.input_uri) == 1
    assert world.objects.generations_written(attempt.expected_output_uri) == 1


def test_the_chained_objects_own_events_are_duplicates_known_from_one_read_each() -> None:
    world = FakeWorld(inline_chain=True)
    event, run_id = world.submit(VALID)
    world.pipeline.handle(event)
    before = world.store.run(run_id)
    events = world.publisher.types(run_id)

    for late in (world.input_event(run_id), world.output_event(run_id)):
        reads = world.fake_store.reads
        assert world.pipeline.handle(late) == DUPLICATE
        assert world.fake_store.reads - reads == 1

    assert world.store.run(run_id) == before
    assert world.publisher.types(run_id) == events


def test_a_single_step_inline_run_costs_few_document_operations() -> None:
    world = FakeWorld(inline_chain=True)
    event, run_id = world.submit(VALID)
    reads, writes = world.fake_store.reads, world.fake_store.writes
    world.pipeline.handle(event)
    chained_reads, chained_writes = world.fake_store.reads - reads, world.fake_store.writes - writes
    late = (world.input_event(run_id), world.output_event(run_id))
    reads = world.fake_store.reads
    for event in late:
        world.pipeline.handle(event)
    late_reads = world.fake_store.reads - reads

    assert world.store.run(run_id).doc.status == RunStatus.SUCCEEDED
    # Intake reads the run, org and workflow; launch and ingest go on from what the call committed, reading
    # nothing back. Writes: intake 3, launch 3, ingest 4 plus the receipt's completion.
    assert (chained_reads, chained_writes) == (3, 11)
    # The two late events: one read each.
    assert late_reads == 2


def test_consecutive_inline_steps_chain_and_a_job_step_is_launched_as_before() -> None:
    world = FakeWorld(inline_chain=True)
    slug = world.add_workflow(
        [
            json_step("one", {"type": "object"}),
            json_step("two", {"type": "object"}).model_copy(
                update={"validator": "fmu", "config": {"stop_time": 1, "step_size": 1, "output_variables": ["x"]}}
            ),
            json_step("three", {"type": "object"}),
            json_step("four", {"type": "object"}),
        ]
    )
    event, run_id = world.submit(b"{}", slug)

    assert world.pipeline.handle(event) == CREATED

    # Step 1 ran inline in that call; step 2 (a job) was scheduled, not launched: its own event launches it.
    assert world.store.attempt(run_id, attempt_id_for(1, 1)).doc.state == AttemptState.COMPLETED
    assert world.store.attempt(run_id, attempt_id_for(2, 1)).doc.state == AttemptState.SCHEDULED
    assert world.job_launcher.launched == []
    assert world.pipeline.handle(world.input_event(run_id, 2)) == LAUNCHED
    assert len(world.job_launcher.launched) == 1

    # The job's signed output: its ingest chains steps 3 and 4, and the run ends in that call.
    output = genuine_output(run_id, world.store.attempt(run_id, attempt_id_for(2, 1)).doc).to_bytes()
    assert world.pipeline.handle(world.put_output(run_id, output, step=2)) == Handled(Outcome.APPLIED)
    run = world.store.run(run_id).doc
    assert run.status == RunStatus.SUCCEEDED
    assert [world.store.step(run_id, n).status for n in (1, 2, 3, 4)] == ["PASSED"] * 4


def test_with_the_chain_off_each_object_waits_for_its_own_event() -> None:
    world = FakeWorld(inline_chain=False)
    event, run_id = world.submit(VALID)

    assert world.pipeline.handle(event) == CREATED

    assert world.store.run(run_id).doc.status == RunStatus.PENDING
    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED


def test_a_chained_stage_whose_view_went_stale_reads_afresh_and_finds_the_work_done() -> None:
    # The chain's view of an object is taken after intake's commit; the objects' own events then run the attempt.
    world = FakeWorld(inline_chain=False)
    event, run_id = world.submit(INVALID)
    world.pipeline.handle(event)
    input_event, first = world.input_event(run_id), world.store.attempt(run_id, attempt_id_for(1, 1)).doc
    stale = Known(
        world.objects.read_bytes(first.input_uri, input_event.generation, 1 << 20),
        run=world.store.run(run_id),
        attempt=world.store.attempt(run_id, attempt_id_for(1, 1)),
    )
    world.pipeline.handle(input_event)
    output_event = world.output_event(run_id)
    stale_output = Known(
        world.objects.read_bytes(first.expected_output_uri, output_event.generation, 1 << 20),
        run=world.store.run(run_id),
        attempt=world.store.attempt(run_id, attempt_id_for(1, 1)),
    )
    world.pipeline.handle(output_event)
    ended = world.store.run(run_id)

    # Each stale view loses its conditioned commit, is read again and is seen done: nothing runs twice.
    assert world.pipeline.handle(input_event, stale) == DUPLICATE
    assert world.pipeline.handle(output_event, stale_output) == DUPLICATE
    assert world.store.run(run_id) == ended
    assert [f.message for f in world.reads.findings(run_id, limit=10)] == INVALID_MESSAGES
    assert world.objects.generations_written(first.expected_output_uri) == 1
