"""A verdict nobody can forge (DESIGN §3, §6): outputs count only when signed with their attempt's key, artifacts
only inside their attempt's folder, every write from one output is bounded, and the web serves exactly what a
step recorded. Each case is one a hostile writer tried; each ends with the run closed by its real verdict."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from functions.stage import Handled, Outcome
from jobs.launchers.inline import InlineLauncher
from schemas.enums import ErrorCategory, ReceiptStatus, RunStatus
from schemas.envelopes import OutputEnvelope
from schemas.paths import attempt_id_for, gs_uri, parse_gs_uri, submission_object
from tests.support import APPLIED, CREATED, INVALID, LAUNCHED, VALID, Harness, genuine_output, json_step, revised

pytestmark = pytest.mark.integration


def scheduled(harness: Harness, data: bytes = INVALID, workflow: str = "json-basic", filename: str | None = None):
    event, run_id = harness.submit(data, workflow, filename)
    assert harness.pipeline.handle(event) == CREATED
    return run_id


def attempt_of(harness: Harness, run_id: str):
    return harness.store.attempt(run_id, attempt_id_for(1, 1)).doc


def assert_rejected(harness: Harness, run_id: str, event, reason: str) -> None:
    before = harness.store.run(run_id)

    handled = harness.pipeline.handle(event)

    assert handled == Handled(Outcome.REJECTED, reason)
    after = harness.store.run(run_id)
    assert (after.doc, after.update_time) == (before.doc, before.update_time)
    rejected = harness.reads.rejected_receipts(run_id, limit=50)
    assert any(
        r.output_uri == gs_uri(event.bucket, event.name)
        and r.output_generation == event.generation
        and r.reason == reason
        for r in rejected
    )
    assert all(r.status == ReceiptStatus.REJECTED for r in rejected)
    assert harness.pipeline.handle(event) == Handled(Outcome.ALREADY_RECORDED)


@pytest.fixture(scope="module")
def web(harness: Harness) -> FlaskClient:
    return harness.signed_in_web()


def test_forgeries_in_a_jobs_output_slot_are_rejected_and_the_real_job_still_delivers_its_verdict(
    harness: Harness, fmus: dict[str, Path]
) -> None:
    """Written before the job ran, with the attempt's callback_id and input sha256 read from input.json."""
    workflow = harness.add_workflow(
        [
            json_step("simulate").model_copy(
                update={
                    "validator": "fmu",
                    "config": {"stop_time": 600, "step_size": 60, "output_variables": ["room_temperature"]},
                }
            )
        ]
    )
    run_id = scheduled(harness, fmus["RoomHeater"].read_bytes(), workflow, "heater.fmu")
    success = revised(
        genuine_output(run_id, attempt_of(harness, run_id)), metrics=[{"name": "room_temperature", "value": 21.0}]
    )
    other_run = scheduled(harness)
    forgeries = [
        (None, "output.json is not signed"),
        ("0" * 64, "output.json's signature does not verify with its attempt's key"),
        (
            harness.attempt_signature(other_run, success.to_bytes()),
            "output.json's signature does not verify with its attempt's key",
        ),
    ]
    for signature, reason in forgeries:
        slot = parse_gs_uri(attempt_of(harness, run_id).expected_output_uri)[1]
        assert_rejected(harness, run_id, harness.upload(slot, success.to_bytes(), signature=signature), reason)

    assert harness.pipeline.handle(harness.input_event(run_id)) == LAUNCHED
    real = harness.wait_for_signed_output(run_id)
    assert harness.pipeline.handle(real) == APPLIED

    run = harness.store.run(run_id).doc
    assert run.status == RunStatus.SUCCEEDED
    metrics = {m.name: m.value for m in harness.store.step(run_id, 1).metrics}
    assert metrics["room_temperature"] != 21.0
    assert len(harness.reads.rejected_receipts(run_id, limit=10)) == 3


def stolen_artifact(harness: Harness) -> dict[str, object]:
    victim = scheduled(harness, VALID, filename="secret.json")
    victim_file = gs_uri(harness.settings.bucket, submission_object("demo", victim, "secret.json"))
    return {"name": "secret.json", "uri": victim_file, "size_bytes": len(VALID), "sha256": "0" * 64}


def test_a_forged_artifact_pointing_at_another_runs_submission_is_never_served(
    harness: Harness, web: FlaskClient
) -> None:
    run_id = scheduled(harness)
    forged = revised(genuine_output(run_id, attempt_of(harness, run_id)), artifacts=[stolen_artifact(harness)])

    assert_rejected(
        harness, run_id, harness.put_output(run_id, forged.to_bytes(), signed=False), "output.json is not signed"
    )

    assert web.get(f"/orgs/demo/runs/{run_id}/steps/1/artifacts/secret.json").status_code == 404
    harness.pipeline.handle(harness.input_event(run_id))
    assert harness.pipeline.handle(harness.wait_for_signed_output(run_id)) == APPLIED
    assert harness.store.run(run_id).doc.counts.ERROR == 4
    assert web.get(f"/orgs/demo/runs/{run_id}/steps/1/artifacts/secret.json").status_code == 404


def test_even_a_validator_holding_its_key_cannot_list_an_artifact_outside_its_folder(
    harness: Harness, web: FlaskClient
) -> None:
    run_id = scheduled(harness)
    forged = revised(genuine_output(run_id, attempt_of(harness, run_id)), artifacts=[stolen_artifact(harness)])

    reason = "artifact 'secret.json' lies outside the attempt's artifacts/ folder"
    assert_rejected(harness, run_id, harness.put_output(run_id, forged.to_bytes()), reason)

    assert web.get(f"/orgs/demo/runs/{run_id}/steps/1/artifacts/secret.json").status_code == 404


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_callback_id_that_is_no_document_id_is_rejected_not_retried(harness: Harness, signed: bool) -> None:
    run_id = scheduled(harness)
    forged = revised(genuine_output(run_id, attempt_of(harness, run_id)), callback_id="a/b")
    reason = "callback_id does not match the attempt" if signed else "output.json is not signed"

    assert_rejected(harness, run_id, harness.put_output(run_id, forged.to_bytes(), signed=signed), reason)


def test_overwriting_a_finished_runs_output_changes_nothing(harness: Harness) -> None:
    run_id = scheduled(harness)
    harness.pipeline.handle(harness.input_event(run_id))
    assert harness.pipeline.handle(harness.output_event(run_id)) == APPLIED
    findings = harness.reads.findings(run_id, limit=100)
    passed = genuine_output(run_id, attempt_of(harness, run_id))

    assert_rejected(
        harness, run_id, harness.put_output(run_id, passed.to_bytes(), signed=False), "output.json is not signed"
    )

    run = harness.store.run(run_id).doc
    assert (run.status, run.counts.ERROR) == (RunStatus.FAILED, 4)
    assert harness.reads.findings(run_id, limit=100) == findings


def test_a_genuine_output_with_two_megabytes_of_metrics_fails_its_step_instead_of_hanging(harness: Harness) -> None:
    run_id = scheduled(harness)
    harness.pipeline.handle(harness.input_event(run_id))
    attempt = attempt_of(harness, run_id)
    harness.bucket.blob(parse_gs_uri(attempt.expected_output_uri)[1]).delete()  # the inline verdict, made again
    metrics = [{"name": f"metric-{i:06d}-" + "m" * 40, "value": i} for i in range(30_000)]
    heavy = revised(genuine_output(run_id, attempt), metrics=metrics).to_bytes()
    assert len(heavy) > 2_000_000

    assert harness.pipeline.handle(harness.put_output(run_id, heavy)) == APPLIED

    run = harness.store.run(run_id).doc
    assert (run.status, run.error_category) == (RunStatus.FAILED, ErrorCategory.RUNTIME_ERROR)
    assert run.error == (
        "step 1 'Building summary schema' could not run: its output.json is "
        f"{len(heavy)} bytes; the limit is {harness.settings.max_envelope_bytes} bytes (VALIDIBOT_MAX_ENVELOPE_BYTES)"
        if len(heavy) > harness.settings.max_envelope_bytes
        else "step 1 'Building summary schema' could not run: its output could not be recorded: it has 30000 "
        "metrics; the limit is 200 (VALIDIBOT_MAX_METRICS_PER_OUTPUT)"
    )


def test_ten_thousand_long_messages_are_bounded_by_the_validator_and_all_counted(harness: Harness) -> None:
    workflow = harness.add_workflow([json_step("short", {"type": "array", "items": {"maxLength": 3}})])
    document = json.dumps(["x" * 600] * 10_000).encode()
    run_id = scheduled(harness, document, workflow)

    harness.pipeline.handle(harness.input_event(run_id))
    output_event = harness.wait_for_signed_output(run_id)
    assert output_event.size <= harness.settings.max_envelope_bytes
    assert harness.pipeline.handle(output_event) == APPLIED

    run = harness.store.run(run_id).doc
    assert (run.status, run.error_category, run.counts.ERROR) == (
        RunStatus.FAILED,
        ErrorCategory.VALIDATION_FAILED,
        10_000,
    )
    assert run.error == "step 1 'Short' failed validation with 10000 errors"
    output = OutputEnvelope.model_validate_json(harness.bucket.blob(output_event.name).download_as_bytes())
    assert output.messages[-1].code == "truncated"
    assert len(harness.reads.findings(run_id, limit=1000)) == harness.settings.max_findings_per_step


def test_a_hundred_thousand_violations_are_counted_as_a_hundred_thousand(harness: Harness) -> None:
    workflow = harness.add_workflow([json_step("strings", {"type": "array", "items": {"type": "string"}})])
    run_id = scheduled(harness, json.dumps([0] * 100_000).encode(), workflow)

    harness.pipeline.handle(harness.input_event(run_id))
    assert harness.pipeline.handle(harness.wait_for_signed_output(run_id)) == APPLIED

    run = harness.store.run(run_id).doc
    assert (run.status, run.counts.ERROR) == (RunStatus.FAILED, 100_000)
    assert run.error == "step 1 'Strings' failed validation with 100000 errors"


def test_an_inline_step_over_its_time_budget_is_handed_to_a_job_and_finishes_there(harness: Harness) -> None:
    settings = harness.settings.model_copy(update={"inline_budget_seconds": 0.001})
    launchers = {**harness.pipeline.context.launchers, "inline": InlineLauncher(harness.objects_port, settings)}
    impatient = harness.rewired(settings=settings, launchers=launchers)
    workflow = harness.add_workflow([json_step("strings", {"type": "array", "items": {"type": "string"}})])
    event, run_id = harness.submit(json.dumps([0] * 20_000).encode(), workflow)
    assert impatient.handle(event) == CREATED

    assert impatient.handle(harness.input_event(run_id)) == LAUNCHED

    attempt = attempt_of(harness, run_id)
    assert attempt.launcher == harness.settings.job_launcher
    assert attempt.execution_name.startswith("local/")
    assert impatient.handle(harness.wait_for_signed_output(run_id)) == APPLIED
    assert harness.store.run(run_id).doc.counts.ERROR == 20_000


@pytest.mark.parametrize(
    "path",
    [
        "/orgs/demo/runs/__x__",
        "/orgs/demo/runs/__x__/steps/1/artifacts/a.json",
        "/orgs/__x__/runs/0123456789abcdef01234567",
        "/orgs/demo/runs/..",
        "/orgs/demo/runs/0123456789abcdef01234567/steps/99999999999999999999/artifacts/x",
        f"/orgs/demo/runs/{'a' * 2000}",
    ],
)
def test_malformed_ids_in_web_urls_are_not_found_never_a_server_error(web: FlaskClient, path: str) -> None:
    assert web.get(path).status_code == 404


def run_with_artifact(harness: Harness, recorded_sha256: str | None = None) -> tuple[str, str]:
    """A run whose applied output lists one artifact (with the sha256 given, else its own); its URL and URI."""
    run_id = scheduled(harness)
    harness.pipeline.handle(harness.input_event(run_id))
    attempt = attempt_of(harness, run_id)
    harness.bucket.blob(parse_gs_uri(attempt.expected_output_uri)[1]).delete()  # the inline verdict, made again
    artifact_uri = attempt.expected_output_uri.removesuffix("output.json") + "artifacts/report.txt"
    stored = harness.objects_port.write_new(artifact_uri, b"the validator's report", "text/plain")
    listed = {
        "name": "report.txt",
        "uri": artifact_uri,
        "size_bytes": stored.size,
        "sha256": recorded_sha256 or stored.sha256,
        "generation": stored.generation,
        "mime_type": "text/plain",
    }
    output = revised(genuine_output(run_id, attempt), artifacts=[listed])
    assert harness.pipeline.handle(harness.put_output(run_id, output.to_bytes())) == APPLIED
    return f"/orgs/demo/runs/{run_id}/steps/1/artifacts/report.txt", artifact_uri


def test_an_artifact_is_served_as_recorded_and_only_to_its_own_org(harness: Harness, web: FlaskClient) -> None:
    url, _ = run_with_artifact(harness)

    served = web.get(url)

    assert (served.status_code, served.data) == (200, b"the validator's report")
    assert served.headers["Content-Disposition"] == "attachment; filename=report.txt"
    assert web.get(url.replace("/orgs/demo/", "/orgs/other/")).status_code == 404


def test_an_artifact_replaced_after_its_step_recorded_it_is_not_served(harness: Harness, web: FlaskClient) -> None:
    url, artifact_uri = run_with_artifact(harness)

    harness.upload(parse_gs_uri(artifact_uri)[1], b"something else entirely", "text/plain")

    # Pinned to the recorded generation: without bucket versioning that version is gone, never the new one served.
    assert web.get(url).status_code == 404


def test_an_artifact_whose_bytes_differ_from_the_record_is_not_served(harness: Harness, web: FlaskClient) -> None:
    url, _ = run_with_artifact(harness, recorded_sha256="0" * 64)

    refused = web.get(url)

    assert refused.status_code == 409
    assert b"the validator's report" not in refused.data


def test_uploads_land_in_the_inbox_bucket_and_runs_copy_them_into_the_pipeline_bucket(harness: Harness) -> None:
    name = f"{uuid.uuid4().hex}.json"
    run_id = scheduled(harness, VALID, filename=name)

    submission = harness.store.run(run_id).doc.submission
    assert submission.uri == gs_uri(harness.settings.bucket, submission_object("demo", run_id, name))
    assert harness.gcs.bucket(harness.settings.inbox_bucket).get_blob(f"inbox/demo/json-basic/{name}") is not None
