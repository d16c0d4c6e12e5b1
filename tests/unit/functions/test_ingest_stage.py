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
    revised,
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


SIGNED_FORGERIES = {
    "callback_id": (lambda out: out.model_copy(update={"callback_id": "guessed"}), "callback_id does not match"),
    "callback_id-path": (lambda out: out.model_copy(update={"callback_id": "a/b"}), "callback_id does not match"),
    "input_sha256": (
        lambda out: out.model_copy(update={"input_envelope_sha256": "0" * 64}),
        "input_envelope_sha256 does not match the input.json that was launched",
    ),
    "step": (lambda out: out.model_copy(update={"step_key": "other"}), "step does not match the attempt"),
    "artifact-elsewhere": (
        lambda out: revised(
            out,
            artifacts=[
                {
                    "name": "x.json",
                    "uri": "gs://unit-bucket/runs/demo/0123456789abcdef01234567/submission/x.json",
                    "size_bytes": 1,
                    "sha256": "0" * 64,
                }
            ],
        ),
        "artifact 'x.json' lies outside the attempt's artifacts/ folder",
    ),
}


@pytest.mark.parametrize(("forge", "reason"), SIGNED_FORGERIES.values(), ids=SIGNED_FORGERIES.keys())
def test_a_signed_output_that_is_not_this_attempts_is_rejected_and_the_run_is_untouched(forge, reason: str) -> None:
    world = FakeWorld()
    run_id, _ = scheduled_slot(world)
    before = world.store.run(run_id)
    event = world.put_output(run_id, forge(genuine_output(run_id, world.store.attempt(run_id, "01-1").doc)).to_bytes())

    handled = world.pipeline.handle(event)

    assert handled.outcome == Outcome.REJECTED
    assert reason in (handled.detail or "")
    assert world.store.run(run_id) == before
    [rejected] = world.reads.rejected_receipts(run_id, limit=10)
    assert reason in (rejected.reason or "")
    assert world.pipeline.handle(event) == Handled(Outcome.ALREADY_RECORDED)


@pytest.mark.parametrize(
    ("signature", "reason"),
    [(None, "output.json is not signed"), ("f" * 64, "output.json's signature does not verify with its attempt's key")],
    ids=["unsigned", "wrongly-signed"],
)
def test_an_output_without_its_attempts_signature_is_rejected_even_with_every_identity_right(
    signature: str | None, reason: str
) -> None:
    world = FakeWorld()
    run_id, slot = scheduled_slot(world)
    before = world.store.run(run_id)
    forged = genuine_output(run_id, world.store.attempt(run_id, "01-1").doc).to_bytes()

    handled = world.pipeline.handle(world.upload(parse_gs_uri(slot)[1], forged, signature=signature))

    assert handled == Handled(Outcome.REJECTED, reason)
    assert world.store.run(run_id) == before
    assert world.store.receipt(world.store.attempt(run_id, "01-1").doc.callback_id) is None


def test_a_signature_made_for_another_attempt_does_not_verify() -> None:
    world = FakeWorld()
    other_run, _ = scheduled_slot(world)
    run_id, slot = scheduled_slot(world)
    forged = genuine_output(run_id, world.store.attempt(run_id, "01-1").doc).to_bytes()

    handled = world.pipeline.handle(
        world.upload(parse_gs_uri(slot)[1], forged, signature=world.attempt_signature(other_run, forged))
    )

    assert handled == Handled(Outcome.REJECTED, "output.json's signature does not verify with its attempt's key")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (lambda out: b"{ nope", "its output.json is not a valid output envelope"),
        (
            lambda out: json.dumps({**out.model_dump(mode="json"), "surprise": 1}).encode(),
            "its output.json is not a valid output envelope: surprise: Extra inputs are not permitted",
        ),
        (
            lambda out: revised(out, metrics=[{"name": f"m{i}", "value": i} for i in range(201)]).to_bytes(),
            "its output could not be recorded: it has 201 metrics; the limit is 200 (VALIDIBOT_MAX_METRICS_PER_OUTPUT)",
        ),
        (
            lambda out: out.model_copy(update={"outputs": {"blob": "x" * 20_000}}).to_bytes(),
            "its outputs are 20012 bytes of JSON; the limit is 16384 bytes (VALIDIBOT_MAX_OUTPUTS_BYTES)",
        ),
        (
            lambda out: revised(out, messages=[{"severity": "ERROR", "code": "x", "text": "y" * 3000}]).to_bytes(),
            "a message is 3000 characters long; the limit is 2000 (VALIDIBOT_MAX_MESSAGE_CHARS)",
        ),
        (
            lambda out: revised(
                out, messages=[{"severity": "ERROR", "code": "x", "text": "y"}], counts={"ERROR": 0}
            ).to_bytes(),
            "its counts are lower than the messages it lists",
        ),
    ],
    ids=["malformed", "unknown-field", "metrics", "outputs", "message-text", "counts"],
)
def test_a_genuine_output_that_cannot_be_recorded_fails_its_step_and_ends_the_run(content, error: str) -> None:
    world = FakeWorld()
    run_id = launched(world)
    output = genuine_output(run_id, world.store.attempt(run_id, "01-1").doc)

    assert world.pipeline.handle(world.put_output(run_id, content(output))) == APPLIED

    run = world.store.run(run_id).doc
    assert (run.status, run.error_category) == (RunStatus.FAILED, ErrorCategory.RUNTIME_ERROR)
    assert error in run.error
    assert error in world.store.step(run_id, 1).error


def test_a_genuine_output_over_the_envelope_limit_fails_its_step_unparsed() -> None:
    world = FakeWorld(max_envelope_bytes=4096)
    run_id = launched(world)
    output = genuine_output(run_id, world.store.attempt(run_id, "01-1").doc)
    huge = output.model_copy(update={"outputs": {"pad": "x" * 10_000}}).to_bytes()

    assert world.pipeline.handle(world.put_output(run_id, huge)) == APPLIED

    run = world.store.run(run_id).doc
    assert run.status == RunStatus.FAILED
    assert f"its output.json is {len(huge)} bytes; the limit is 4096 bytes (VALIDIBOT_MAX_ENVELOPE_BYTES)" in run.error


def test_overwriting_a_finished_runs_output_is_rejected_and_changes_nothing() -> None:
    world = FakeWorld()
    run_id = launched(world)
    world.pipeline.handle(world.output_event(run_id))
    before = world.store.run(run_id)
    success = genuine_output(run_id, world.store.attempt(run_id, "01-1").doc).to_bytes()

    handled = world.pipeline.handle(world.put_output(run_id, success, signed=False))

    assert handled == Handled(Outcome.REJECTED, "output.json is not signed")
    assert world.store.run(run_id) == before
    assert len(world.reads.findings(run_id, limit=100)) == 4


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


def test_the_signature_in_the_notification_counts_only_if_it_verifies_against_the_bytes() -> None:
    world = FakeWorld()
    run_id = launched(world)
    genuine = world.output_event(run_id)
    found = world.objects.stat(world.store.attempt(run_id, "01-1").doc.expected_output_uri)
    # Metadata can be patched onto a version: a signature copied there from elsewhere does not verify.
    patched = genuine.model_copy(update={"metadata": {"validibot-signature": "0" * 64}})

    assert world.pipeline.handle(patched) == Handled(
        Outcome.REJECTED, "output.json's signature does not verify with its attempt's key"
    )
    metadata = {"sha256": found.sha256, "validibot-signature": found.signature}
    delivered = genuine.model_copy(update={"metadata": metadata})
    assert world.pipeline.handle(delivered) == APPLIED


def test_an_output_far_over_the_envelope_limit_is_refused_unread() -> None:
    world = FakeWorld(max_envelope_bytes=4096)
    run_id = launched(world)
    output = genuine_output(run_id, world.store.attempt(run_id, "01-1").doc)
    huge = revised(output, outputs={"pad": "x" * 20_000}).to_bytes()

    handled = world.pipeline.handle(world.put_output(run_id, huge))

    assert handled == Handled(
        Outcome.REJECTED, f"output.json is {len(huge)} bytes, far over VALIDIBOT_MAX_ENVELOPE_BYTES; not read"
    )
