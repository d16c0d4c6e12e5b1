"""Bad input is recorded, acknowledged, and never crashes a handler or corrupts a run (DESIGN §5, §6)."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from functions.pipeline import Pipeline
from functions.stage import Handled, Outcome
from schemas.enums import AttemptState, ErrorCategory, RunStatus, StepStatus
from schemas.paths import attempt_id_for, inbox_object, run_id_for
from tests.support import APPLIED, CREATED, DUPLICATE, VALID, Harness

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


UNSAFE_FILE_NAMES = {
    "nested": ("nested/dir/evil.json", "contains a path separator, a control character or a bidirectional override"),
    "dotdot": ("..", "names a folder, not a file"),
    "tab": ("tab\there.json", "contains a path separator, a control character or a bidirectional override"),
    "c1-control": ("c1\x85.json", "contains a path separator, a control character or a bidirectional override"),
    "right-to-left-override": (
        "invoice\u202egpj.exe",
        "contains a path separator, a control character or a bidirectional override",
    ),
    "201-bytes": ("x" * 201, "is 201 bytes long in UTF-8; the limit is 200 bytes"),
    # 200 characters pass a character count; 800 bytes are more than any file system takes in one name.
    "200-emoji": ("\U0001f600" * 200, "is 800 bytes long in UTF-8; the limit is 200 bytes"),
}


@pytest.mark.parametrize(("filename", "why"), UNSAFE_FILE_NAMES.values(), ids=UNSAFE_FILE_NAMES.keys())
def test_unsafe_file_name_is_refused_and_nothing_is_written(harness: Harness, filename: str, why: str) -> None:
    name = inbox_object("demo", "json-basic", filename)
    outcome, run = refused(harness, name, VALID)

    assert outcome == Handled(Outcome.REFUSED)
    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.VALIDATION_FAILED
    assert run.error.startswith("unsafe file name: ")
    assert why in run.error
    assert run.submission is None


def test_a_name_that_merely_contains_two_dots_is_a_plain_file_name(harness: Harness) -> None:
    event, run_id = harness.submit(VALID, filename="building..v2.json")
    assert harness.pipeline.handle(event) == CREATED
    harness.pipeline.handle(harness.input_event(run_id))
    assert harness.pipeline.handle(harness.output_event(run_id)) == APPLIED

    run = harness.store.run(run_id).doc
    assert (run.status, run.submission.name) == (RunStatus.SUCCEEDED, "building..v2.json")


def test_an_upload_outside_a_workflow_folder_is_a_refused_run_its_org_can_see(harness: Harness) -> None:
    outcome, run = refused(harness, "inbox/demo/loose.json", VALID)

    assert outcome == Handled(Outcome.REFUSED)
    assert (run.org, run.status, run.error) == (
        "demo",
        RunStatus.FAILED,
        "the file is not in a workflow's folder; upload to inbox/demo/<workflow>/loose.json",
    )


def test_an_upload_elsewhere_in_the_inbox_bucket_is_refused_in_the_log(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"uploads/{uuid.uuid4().hex}.json"
    with caplog.at_level(logging.WARNING, logger="validibot.pipeline"):
        handled = harness.pipeline.handle(harness.upload(name, VALID, bucket=harness.settings.inbox_bucket))

    assert handled == Handled(Outcome.IGNORED, "not an inbox/{org}/{workflow}/{file} upload")
    assert f"refused gs://{harness.settings.inbox_bucket}/{name}: uploads go to inbox/" in caplog.text


def test_pipeline_objects_written_into_the_inbox_bucket_start_nothing(harness: Harness) -> None:
    event, run_id = harness.submit(VALID)
    harness.pipeline.handle(event)
    input_name = harness.input_event(run_id).name
    planted = harness.upload(input_name, b"{}", bucket=harness.settings.inbox_bucket)

    assert harness.pipeline.handle(planted) == Handled(Outcome.IGNORED, "not an inbox/{org}/{workflow}/{file} upload")
    assert harness.store.attempt(run_id, attempt_id_for(1, 1)).doc.state == AttemptState.SCHEDULED


def test_a_submission_uploaded_to_the_pipeline_bucket_starts_no_run(harness: Harness) -> None:
    event = harness.upload(inbox_object("demo", "json-basic", "sneaky.json"), VALID, bucket=harness.settings.bucket)

    assert harness.pipeline.handle(event) == Handled(Outcome.IGNORED)
    assert harness.store.run(run_id_for(event.bucket, event.name, event.generation)) is None


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
