"""Bad input is recorded, acknowledged, and never crashes a handler or corrupts a run (DESIGN §5, §6)."""

from __future__ import annotations

import json
import uuid

import pytest

from functions.pipeline import Pipeline
from functions.stage import Handled, Outcome
from schemas.enums import AttemptState, ErrorCategory, ReceiptStatus, RunStatus, StepStatus
from schemas.envelopes import OutputEnvelope
from schemas.paths import attempt_id_for, inbox_object, run_id_for
from tests.support import APPLIED, DUPLICATE, INVALID, VALID, Harness, genuine_output

pytestmark = pytest.mark.integration


def refused(harness: Harness, name: str, data: bytes, pipeline: Pipeline | None = None):
    event = harness.upload(name, data)
    outcome = (pipeline or harness.pipeline).handle(event)
    run_id = run_id_for(event.bucket, event.name, event.generation)
    run = harness.store.run(run_id)
    assert run is not None
    # A refused submission leaves nothing behind but its run document.
    assert list(harness.gcs.list_blobs(harness.bucket, prefix=f"runs/{run.doc.org}/{run_id}/")) == []
    assert harness.reads.steps(run_id) == []
    return outcome, run.doc


def test_malformed_json_submission_fails_validation_with_its_position(harness: Harness) -> None:
    event, run_id = harness.submit(b'{"building_id": "B-0001",\n  "name": }')
    harness.pipeline.handle(event)
    harness.pipeline.handle(harness.input_event(run_id))
    harness.pipeline.handle(harness.output_event(run_id))

    run = harness.store.run(run_id).doc
    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.VALIDATION_FAILED
    [finding] = harness.reads.findings(run_id, limit=10)
    assert finding.code == "json.syntax"
    assert finding.message.endswith("is not valid JSON: Expecting value")
    assert (finding.location.line, finding.location.column) == (2, 11)


def test_submission_over_the_size_limit_is_refused_before_it_is_read(harness: Harness) -> None:
    small = harness.rewired(settings=harness.settings.model_copy(update={"max_submission_bytes": 100}))
    name = inbox_object("demo", "json-basic", f"{uuid.uuid4().hex}.json")
    outcome, run = refused(harness, name, b" " * 101, pipeline=small)

    assert outcome == Handled(Outcome.REFUSED)
    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.VALIDATION_FAILED
    assert run.error == "the file is 101 bytes; the limit is 100 bytes (VALIDIBOT_MAX_SUBMISSION_BYTES)"
    assert run.submission is None


def test_unknown_workflow_is_refused(harness: Harness) -> None:
    outcome, run = refused(harness, inbox_object("demo", "no-such-workflow", "a.json"), VALID)

    assert outcome == Handled(Outcome.REFUSED)
    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.VALIDATION_FAILED
    assert run.error == ("organization 'demo' has no workflow 'no-such-workflow'; upload to inbox/demo/<workflow>/")
    assert run.workflow is None


def test_unknown_organization_is_refused(harness: Harness) -> None:
    outcome, run = refused(harness, inbox_object("nobody", "json-basic", "a.json"), VALID)

    assert outcome == Handled(Outcome.REFUSED)
    assert run.error == "unknown organization 'nobody'"


@pytest.mark.parametrize(
    ("filename", "why"),
    [
        ("nested/dir/evil.json", "contains a path separator or control character"),
        ("..", "contains '..'"),
        ("a..b.json", "contains '..'"),
        ("tab\there.json", "contains a path separator or control character"),
        ("x" * 201, "is 201 characters long; the limit is 200"),
    ],
)
def test_unsafe_file_name_is_refused_and_nothing_is_written(harness: Harness, filename: str, why: str) -> None:
    name = inbox_object("demo", "json-basic", filename)
    outcome, run = refused(harness, name, VALID)

    assert outcome == Handled(Outcome.REFUSED)
    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.VALIDATION_FAILED
    assert run.error.startswith("unsafe file name: ")
    assert why in run.error
    assert run.submission is None


def test_input_json_for_an_unknown_attempt_is_ignored(harness: Harness) -> None:
    run_id = uuid.uuid4().hex[:24]
    for data in (b"not json at all", b'{"schema_version": "validibot.input.v1"}'):
        name = f"runs/demo/{run_id}/steps/01-schema/01-{len(data)}/input.json"
        assert harness.pipeline.handle(harness.upload(name, data)) == Handled(Outcome.UNKNOWN_ATTEMPT)
    assert harness.store.run(run_id) is None


@pytest.mark.parametrize(
    "tampered",
    [b"{ this is not json", json.dumps({"schema_version": "validibot.input.v1", "run_id": "x"}).encode()],
    ids=["malformed", "schema-invalid"],
)
def test_tampered_input_json_fails_the_run_without_running_the_validator(harness: Harness, tampered: bytes) -> None:
    event, run_id = harness.submit(VALID)
    harness.pipeline.handle(event)
    original = harness.input_event(run_id)
    # An attacker (or a bug) replaces the scheduled envelope before it is launched.
    harness.bucket.blob(original.name).delete()
    forged = harness.upload(original.name, tampered)

    assert harness.pipeline.handle(forged) == Handled(
        Outcome.FAILED, "input.json is not the envelope scheduled for this attempt (sha256 differs)"
    )
    assert harness.pipeline.handle(original) == DUPLICATE

    run = harness.store.run(run_id).doc
    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.SYSTEM_ERROR
    assert run.error == (
        "step 1 'Building summary schema': input.json is not the envelope scheduled for this attempt (sha256 differs)"
    )
    assert [s.status for s in harness.reads.steps(run_id)] == [StepStatus.FAILED]
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert attempt.state == AttemptState.FAILED
    assert harness.bucket.get_blob(attempt.expected_output_uri.split("/", 3)[3]) is None


def test_input_json_deleted_before_launch_fails_the_run(harness: Harness) -> None:
    event, run_id = harness.submit(VALID)
    harness.pipeline.handle(event)
    original = harness.input_event(run_id)
    harness.bucket.blob(original.name).delete()

    assert harness.pipeline.handle(original) == Handled(
        Outcome.FAILED, "input.json was deleted or replaced before it was launched"
    )
    run = harness.store.run(run_id).doc
    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.SYSTEM_ERROR


def _scheduled_run(harness: Harness) -> tuple[str, str]:
    """A run whose first attempt is scheduled but not yet launched: its output slot is still free."""
    event, run_id = harness.submit(INVALID)
    harness.pipeline.handle(event)
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    return run_id, attempt.expected_output_uri.split("/", 3)[3]


def _genuine_output(harness: Harness, run_id: str) -> OutputEnvelope:
    return genuine_output(run_id, harness.store.attempt(run_id, attempt_id_for(1, 1)).doc)


def assert_rejected_and_run_unchanged(harness: Harness, run_id: str, name: str, data: bytes, reason: str) -> None:
    before = harness.store.run(run_id)
    event = harness.upload(name, data)

    handled = harness.pipeline.handle(event)

    assert handled.outcome == Outcome.REJECTED
    assert reason in (handled.detail or "")
    after = harness.store.run(run_id)
    assert after.doc == before.doc
    assert after.update_time == before.update_time
    rejected = harness.reads.rejected_receipts(run_id, limit=50)
    assert any(r.output_uri == f"gs://{event.bucket}/{name}" and reason in (r.reason or "") for r in rejected)
    assert all(r.status == ReceiptStatus.REJECTED for r in rejected)
    assert harness.pipeline.handle(event) == Handled(Outcome.ALREADY_RECORDED)


def test_malformed_output_json_is_rejected(harness: Harness) -> None:
    run_id, slot = _scheduled_run(harness)
    assert_rejected_and_run_unchanged(
        harness, run_id, slot, b"{ nope", "output.json is not a valid output envelope: 1 validation error"
    )


def test_schema_invalid_output_json_is_rejected(harness: Harness) -> None:
    run_id, slot = _scheduled_run(harness)
    data = _genuine_output(harness, run_id).model_dump(mode="json")
    data["surprise"] = "unknown fields are refused"
    assert_rejected_and_run_unchanged(
        harness, run_id, slot, json.dumps(data).encode(), "output.json is not a valid output envelope"
    )


def test_output_with_wrong_callback_id_is_rejected(harness: Harness) -> None:
    run_id, slot = _scheduled_run(harness)
    forged = _genuine_output(harness, run_id).model_copy(update={"callback_id": "guessed"})
    assert_rejected_and_run_unchanged(harness, run_id, slot, forged.to_bytes(), "callback_id does not match")


def test_output_with_wrong_input_sha256_is_rejected(harness: Harness) -> None:
    run_id, slot = _scheduled_run(harness)
    forged = _genuine_output(harness, run_id).model_copy(update={"input_envelope_sha256": "0" * 64})
    assert_rejected_and_run_unchanged(harness, run_id, slot, forged.to_bytes(), "input_envelope_sha256 does not match")


def test_output_at_the_wrong_path_is_rejected(harness: Harness) -> None:
    run_id, slot = _scheduled_run(harness)
    elsewhere = slot.replace("/01-schema/", "/01-other/")
    assert_rejected_and_run_unchanged(
        harness,
        run_id,
        elsewhere,
        _genuine_output(harness, run_id).to_bytes(),
        "output path is not the attempt's expected_output_uri",
    )


def test_rejected_outputs_leave_the_run_able_to_finish(harness: Harness) -> None:
    run_id, slot = _scheduled_run(harness)
    forged = _genuine_output(harness, run_id).model_copy(update={"callback_id": "guessed"})
    harness.pipeline.handle(harness.upload(slot.replace("/01-schema/", "/01-other/"), forged.to_bytes()))

    harness.pipeline.handle(harness.input_event(run_id))
    assert harness.pipeline.handle(harness.output_event(run_id)) == APPLIED
    assert harness.store.run(run_id).doc.status == RunStatus.FAILED
    assert harness.store.run(run_id).doc.counts.ERROR == 4


def test_output_for_an_unknown_run_is_rejected(harness: Harness) -> None:
    run_id = uuid.uuid4().hex[:24]
    name = f"runs/demo/{run_id}/steps/01-schema/01-1/output.json"
    output = OutputEnvelope(
        run_id=run_id,
        step_key="schema",
        attempt_id="01-1",
        callback_id=uuid.uuid4().hex,
        input_envelope_sha256="0" * 64,
        validator={"id": "json-schema", "type": "json-schema", "version": "1"},
        status="success",
        timing={"started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z"},
    )
    event = harness.upload(name, output.to_bytes())

    assert harness.pipeline.handle(event) == Handled(Outcome.REJECTED, f"no run {run_id} with attempt 01-1")
    assert harness.store.run(run_id) is None
    [receipt] = harness.reads.rejected_receipts(run_id, limit=5)
    assert receipt.reason == f"no run {run_id} with attempt 01-1"
