"""INGEST's handler on the in-memory ports: applied, duplicate, rejected (each identity check), late, a PROCESSING
receipt replayed after a crash, and a lost race."""

from __future__ import annotations

import json

import pytest

from functions.stage import Handled, Outcome
from schemas.changes import Write, run_path
from schemas.enums import ErrorCategory, LifecycleType, ReceiptStatus, RunStatus
from schemas.paths import attempt_id_for, parse_gs_uri
from tests.fakes import Crash, FakeWorld
from tests.support import (
    APPLIED,
    CREATED,
    DUPLICATE,
    INVALID,
    INVALID_MESSAGES,
    LAUNCHED,
    genuine_output,
    json_step,
)


def launched(world: FakeWorld, data: bytes = INVALID, workflow: str = "json-basic") -> str:
    event, run_id = world.submit(data, workflow)
    assert world.pipeline.handle(event) == CREATED
    assert world.pipeline.handle(world.input_event(run_id)) == LAUNCHED
    return run_id


def scheduled_slot(world: FakeWorld) -> tuple[str, str]:
    """A run whose first attempt is scheduled but not launched: its output slot is still free to forge."""
    event, run_id = world.submit(INVALID)
    world.pipeline.handle(event)
    return run_id, world.store.attempt(run_id, attempt_id_for(1, 1)).doc.expected_output_uri


def test_an_output_is_applied_once_with_its_findings_and_events() -> None:
    world = FakeWorld()
    run_id = launched(world)

    assert world.pipeline.handle(world.output_event(run_id)) == APPLIED

    run = world.store.run(run_id).doc
    assert (run.status, run.error_category, run.counts.ERROR) == (RunStatus.FAILED, ErrorCategory.VALIDATION_FAILED, 4)
    assert [f.message for f in world.reads.findings(run_id, limit=100)] == INVALID_MESSAGES
    receipt = world.store.receipt(world.store.attempt(run_id, "01-1").doc.callback_id)
    assert receipt.status == ReceiptStatus.COMPLETED
    assert world.publisher.types(run_id) == [
        LifecycleType.RUN_CREATED,
        LifecycleType.STEP_STARTED,
        LifecycleType.STEP_COMPLETED,
        LifecycleType.RUN_COMPLETED,
    ]


def test_a_redelivered_output_is_a_duplicate_and_changes_nothing() -> None:
    world = FakeWorld()
    run_id = launched(world)
    output_event = world.output_event(run_id)
    world.pipeline.handle(output_event)
    before = world.store.run(run_id)

    assert world.pipeline.handle(output_event) == DUPLICATE

    assert world.store.run(run_id) == before
    assert len(world.reads.findings(run_id, limit=100)) == 4


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (lambda out: out.model_copy(update={"callback_id": "guessed"}).to_bytes(), "callback_id does not match"),
        (
            lambda out: out.model_copy(update={"input_envelope_sha256": "0" * 64}).to_bytes(),
            "input_envelope_sha256 does not match the input.json that was launched",
        ),
        (lambda out: out.model_copy(update={"step_key": "other"}).to_bytes(), "step does not match the attempt"),
        (lambda out: b"{ nope", "output.json is not a valid output envelope: 1 validation error"),
        (
            lambda out: json.dumps({**out.model_dump(mode="json"), "surprise": 1}).encode(),
            "output.json is not a valid output envelope",
        ),
    ],
    ids=["callback_id", "input_sha256", "step", "malformed", "unknown-field"],
)
def test_a_forged_or_broken_output_is_rejected_and_the_run_is_untouched(forge, reason: str) -> None:
    world = FakeWorld()
    run_id, slot = scheduled_slot(world)
    before = world.store.run(run_id)
    data = forge(genuine_output(run_id, world.store.attempt(run_id, "01-1").doc))
    event = world.upload(parse_gs_uri(slot)[1], data)

    handled = world.pipeline.handle(event)

    assert handled.outcome == Outcome.REJECTED
    assert reason in (handled.detail or "")
    assert world.store.run(run_id) == before
    [rejected] = world.reads.rejected_receipts(run_id, limit=10)
    assert reason in (rejected.reason or "")
    assert world.pipeline.handle(event) == Handled(Outcome.ALREADY_RECORDED)


def test_an_output_at_another_path_is_rejected() -> None:
    world = FakeWorld()
    run_id, slot = scheduled_slot(world)
    output = genuine_output(run_id, world.store.attempt(run_id, "01-1").doc)
    elsewhere = parse_gs_uri(slot)[1].replace("/01-schema/", "/01-other/")

    handled = world.pipeline.handle(world.upload(elsewhere, output.to_bytes()))

    assert handled == Handled(Outcome.REJECTED, "output path is not the attempt's expected_output_uri")


def test_an_output_for_an_unknown_run_is_rejected() -> None:
    world = FakeWorld()
    run_id, slot = scheduled_slot(world)
    unknown = "0123456789abcdef01234567"
    output = genuine_output(unknown, world.store.attempt(run_id, "01-1").doc)

    handled = world.pipeline.handle(world.upload(parse_gs_uri(slot)[1].replace(run_id, unknown), output.to_bytes()))

    assert handled == Handled(Outcome.REJECTED, f"no run {unknown} with attempt 01-1")
    assert world.store.run(unknown) is None


def test_an_output_after_the_run_ended_is_recorded_as_late_and_not_applied() -> None:
    world = FakeWorld()
    run_id = launched(world)
    run = world.store.run(run_id)
    canceled = run.doc.model_copy(update={"status": RunStatus.CANCELED})
    world.store.commit([Write(run_path(run_id), canceled, "replace", run.update_time)])

    handled = world.pipeline.handle(world.output_event(run_id))

    assert handled.outcome == Outcome.REJECTED
    assert handled.detail == "late: attempt is DISPATCHING and run is CANCELED; not applied"
    assert world.store.run(run_id).doc.status == RunStatus.CANCELED
    assert world.reads.findings(run_id, limit=10) == []
    receipt = world.store.receipt(world.store.attempt(run_id, "01-1").doc.callback_id)
    assert receipt.status == ReceiptStatus.REJECTED


def test_a_processing_receipt_left_by_a_crash_has_its_effects_replayed() -> None:
    world = FakeWorld()
    slug = world.add_workflow([json_step("one", {"type": "object"}), json_step("two", {"type": "object"})])
    run_id = launched(world, b"{}", slug)
    output_event = world.output_event(run_id)
    world.publisher.crash_next_publish()

    with pytest.raises(Crash):
        world.pipeline.handle(output_event)
    callback_id = world.store.attempt(run_id, "01-1").doc.callback_id
    assert world.store.receipt(callback_id).status == ReceiptStatus.PROCESSING
    assert world.objects.stat(world.store.attempt(run_id, "02-1").doc.input_uri) is None

    assert world.pipeline.handle(output_event) == Handled(Outcome.EFFECTS_REPLAYED)

    assert world.store.receipt(callback_id).status == ReceiptStatus.COMPLETED
    assert world.pipeline.handle(world.input_event(run_id, 2)) == LAUNCHED
    assert world.pipeline.handle(world.output_event(run_id, 2)) == APPLIED
    assert world.store.run(run_id).doc.status == RunStatus.SUCCEEDED


def test_an_output_applied_by_a_concurrent_delivery_first_is_a_duplicate() -> None:
    world = FakeWorld()
    run_id = launched(world)
    output_event = world.output_event(run_id)
    winner: list[Handled] = []
    world.fake_store.before_next_commit(lambda: winner.append(world.pipeline.handle(output_event)))

    assert world.pipeline.handle(output_event) == DUPLICATE

    assert winner == [APPLIED]
    assert world.store.run(run_id).doc.counts.ERROR == 4
    assert len(world.reads.findings(run_id, limit=100)) == 4
