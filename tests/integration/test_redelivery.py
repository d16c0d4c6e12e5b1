"""Every stage survives redelivery (DESIGN §6): duplicates, concurrent duplicates, and out-of-order delivery."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.cloud import firestore

from functions.ingest.transitions import plan_ingest
from functions.stage import Handled, Outcome, new_callback_id
from schemas.enums import AttemptState, ReceiptStatus, RunStatus, StepStatus
from schemas.envelopes import OutputEnvelope
from schemas.paths import attempt_id_for, parse_object_name
from tests.support import APPLIED, CREATED, DUPLICATE, INVALID, INVALID_MESSAGES, LAUNCHED, Harness, json_step

pytestmark = pytest.mark.integration

DELIVERIES = 5


def deliver_concurrently(harness: Harness, event, times: int = DELIVERIES) -> list[Handled]:
    with ThreadPoolExecutor(max_workers=times) as pool:
        return list(pool.map(lambda _: harness.pipeline.handle(event), range(times)))


def runs_from_source(harness: Harness, source: str) -> int:
    runs = harness.services.firestore_client.collection("runs")
    return len(list(runs.where(filter=firestore.FieldFilter("source", "==", source)).stream()))


def findings_of(harness: Harness, run_id: str) -> list:
    return harness.reads.findings(run_id, limit=1000)


def test_same_inbox_notification_five_times_makes_one_run(harness: Harness) -> None:
    event, run_id = harness.submit(INVALID)

    outcomes = deliver_concurrently(harness, event)

    assert outcomes.count(CREATED) == 1
    assert all(o.outcome.is_duplicate for o in outcomes if o != CREATED)
    source = f"gs://{event.bucket}/{event.name}#{event.generation}"
    assert runs_from_source(harness, source) == 1
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1))
    assert attempt is not None
    assert attempt.doc.state == AttemptState.SCHEDULED
    # Sequential redeliveries after the fact are no-ops too.
    for _ in range(DELIVERIES):
        assert harness.pipeline.handle(event).outcome.is_duplicate
    assert runs_from_source(harness, source) == 1


def test_same_input_event_five_times_launches_once(harness: Harness) -> None:
    event, run_id = harness.submit(INVALID)
    harness.pipeline.handle(event)
    input_event = harness.input_event(run_id)

    outcomes = deliver_concurrently(harness, input_event)

    assert outcomes.count(LAUNCHED) == 1
    assert outcomes.count(DUPLICATE) == DELIVERIES - 1
    output = harness.output_event(run_id)
    # One output, written once: its first generation is still the only one.
    versions = list(harness.gcs.list_blobs(harness.bucket, prefix=output.name, versions=True))
    assert len(versions) == 1
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1))
    assert attempt is not None
    assert attempt.doc.state == AttemptState.DISPATCHING
    assert attempt.doc.input_generation == input_event.generation


def test_same_output_event_five_times_applies_once(harness: Harness) -> None:
    event, run_id = harness.submit(INVALID)
    harness.pipeline.handle(event)
    harness.pipeline.handle(harness.input_event(run_id))
    output_event = harness.output_event(run_id)

    outcomes = deliver_concurrently(harness, output_event)
    outcomes += [harness.pipeline.handle(output_event) for _ in range(DELIVERIES)]

    assert outcomes.count(APPLIED) == 1
    assert all(o.outcome.is_duplicate for o in outcomes if o != APPLIED)
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1))
    assert attempt is not None
    receipt = harness.store.receipt(attempt.doc.callback_id)
    assert receipt is not None
    assert receipt.status == ReceiptStatus.COMPLETED
    run = harness.store.run(run_id)
    assert run is not None
    assert run.doc.status == RunStatus.FAILED
    assert run.doc.counts.ERROR == 4
    assert len(findings_of(harness, run_id)) == 4


def test_output_before_launch_is_acknowledged_ends_the_same(harness: Harness) -> None:
    """The launch's acknowledgement is lost: its event comes back after the output was ingested, as does intake's."""
    _, reference = harness.run_through(INVALID)

    event, run_id = harness.submit(INVALID)
    harness.pipeline.handle(event)
    input_event = harness.input_event(run_id)
    assert harness.pipeline.handle(input_event) == LAUNCHED
    assert harness.pipeline.handle(harness.output_event(run_id)) == APPLIED
    assert harness.pipeline.handle(input_event) == DUPLICATE
    assert harness.pipeline.handle(event) == DUPLICATE

    run = harness.store.run(run_id)
    assert run is not None
    assert run.doc.status == reference.status == RunStatus.FAILED
    assert run.doc.counts == reference.counts
    assert run.doc.error == reference.error
    assert [f.message for f in findings_of(harness, run_id)] == INVALID_MESSAGES


def test_two_step_workflow_with_every_event_delivered_twice_in_reverse(harness: Harness) -> None:
    slug = harness.add_workflow([json_step("first"), json_step("second")])
    event, run_id = harness.submit(json.dumps({"name": "x"}).encode(), workflow=slug)
    for _ in range(2):
        harness.pipeline.handle(event)
    for step in (1, 2):
        input_event = harness.input_event(run_id, step)
        harness.pipeline.handle(input_event)
        output_event = harness.output_event(run_id, step)
        # The output's event overtakes the redelivered launch event.
        assert harness.pipeline.handle(output_event) == APPLIED
        assert harness.pipeline.handle(input_event) == DUPLICATE
        assert harness.pipeline.handle(output_event) == DUPLICATE

    run = harness.store.run(run_id)
    assert run is not None
    assert run.doc.status == RunStatus.SUCCEEDED
    assert run.doc.error_category is None
    assert [s.status for s in harness.reads.steps(run_id)] == [StepStatus.PASSED, StepStatus.PASSED]


def test_crash_after_ingest_commit_is_repaired_by_redelivery(harness: Harness) -> None:
    """The commit landed (receipt PROCESSING) but the process died before writing the next input.json."""
    schema = {"type": "object"}
    slug = harness.add_workflow([json_step("one", schema), json_step("two", schema)])
    event, run_id = harness.submit(b"{}", workflow=slug)
    harness.pipeline.handle(event)
    harness.pipeline.handle(harness.input_event(run_id))
    output_event = harness.output_event(run_id)
    path = parse_object_name(output_event.name)
    output = OutputEnvelope.model_validate_json(harness.bucket.blob(output_event.name).download_as_bytes())
    plan = plan_ingest(
        output_event,
        path,
        output,
        run=harness.store.run(run_id),
        attempt=harness.store.attempt(run_id, path.attempt_id),
        next_callback_id=new_callback_id(),
        settings=harness.settings,
        now=harness.pipeline.context.clock(),
    )
    harness.store.commit(plan.writes)  # ... and then the crash: no effects performed
    assert harness.bucket.get_blob(plan.effects.objects[0].uri.split("/", 3)[3]) is None

    assert harness.pipeline.handle(output_event) == Handled(Outcome.EFFECTS_REPLAYED)

    assert harness.store.receipt(output.callback_id).status == ReceiptStatus.COMPLETED
    assert harness.pipeline.handle(harness.input_event(run_id, 2)) == LAUNCHED
    assert harness.pipeline.handle(harness.output_event(run_id, 2)) == APPLIED
    run = harness.store.run(run_id)
    assert run is not None
    assert run.doc.status == RunStatus.SUCCEEDED
