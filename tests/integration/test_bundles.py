"""Bundles through the pipeline: a .zip submission unpacked into a workflow's input roles, run as a local job."""

from __future__ import annotations

import uuid

import pytest

from jobs.validators.energyplus import bundled_weather, energyplus_binary
from schemas.changes import Write, workflow_path
from schemas.documents import StepSpec, WorkflowDoc
from schemas.enums import ErrorCategory, RunStatus, Severity
from schemas.envelopes import OutputEnvelope
from schemas.paths import attempt_id_for, parse_gs_uri
from tests.support import ENERGYPLUS_ROLES, EXAMPLES, SAN_FRANCISCO_EPW, Harness, as_input_roles, zip_bytes

pytestmark = pytest.mark.integration

# The step's own weather: what a single-file submission would run with, and what a bundle's weather replaces.
GOLDEN = "USA_CO_Golden-NREL.724666_TMY3.epw"


def energyplus_bundle_workflow(harness: Harness) -> str:
    slug = f"wf-{uuid.uuid4().hex[:10]}"
    step = StepSpec(key="simulate", name="Simulate", validator="energyplus", config={"weather_file": GOLDEN})
    workflow = WorkflowDoc(
        org="demo", slug=slug, name=f"Test {slug}", steps=[step], inputs=as_input_roles(ENERGYPLUS_ROLES)
    )
    harness.store.commit([Write(workflow_path("demo", slug), workflow, "upsert")])
    return slug


def output_of(harness: Harness, run_id: str) -> OutputEnvelope:
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1))
    assert attempt is not None
    _, name = parse_gs_uri(attempt.doc.expected_output_uri)
    return OutputEnvelope.model_validate_json(harness.bucket.blob(name).download_as_bytes())


def test_a_bundles_weather_replaces_the_steps_weather(harness: Harness) -> None:
    weather = bundled_weather(energyplus_binary(), SAN_FRANCISCO_EPW).read_bytes()
    bundle = zip_bytes(
        [
            ("office/small-office.idf", (EXAMPLES / "small-office.idf").read_bytes()),
            (f"office/{SAN_FRANCISCO_EPW}", weather),
        ]
    )

    run_id, run = harness.run_job(bundle, energyplus_bundle_workflow(harness), "office.zip")

    assert run.status == RunStatus.SUCCEEDED
    output = output_of(harness, run_id)
    assert output.outputs["weather_location"] == "San Francisco Intl Ap CA USA TMY3 WMO#=724940"
    # The model is set in Golden; EnergyPlus says whose location it used.
    messages = [f.message for f in harness.reads.findings(run_id, 100) if f.severity == Severity.WARNING]
    assert any("Weather File Location=San Francisco Intl Ap CA USA TMY3" in m for m in messages)
    assert {m.name for m in output.metrics} >= {"site_electricity", "site_eui"}


def test_a_bundle_leading_out_of_its_folder_fails_the_run_with_one_finding(harness: Harness) -> None:
    model = (EXAMPLES / "small-office.idf").read_bytes()
    bundle = zip_bytes([("../../small-office.idf", model), ("weather.epw", b"LOCATION,Nowhere\n")])

    run_id, run = harness.run_job(bundle, energyplus_bundle_workflow(harness), "office.zip")

    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.VALIDATION_FAILED
    [finding] = harness.reads.findings(run_id, 100)
    assert (finding.severity, finding.code) == (Severity.ERROR, "bundle_zip_slip")
    assert finding.message == "member '../../small-office.idf' leads out of the bundle's folder ('..')"
    assert output_of(harness, run_id).artifacts == []  # EnergyPlus never started


def test_a_single_model_runs_with_the_steps_weather(harness: Harness) -> None:
    model = (EXAMPLES / "small-office.idf").read_bytes()

    run_id, run = harness.run_job(model, energyplus_bundle_workflow(harness), "office.idf")

    assert run.status == RunStatus.SUCCEEDED
    assert (
        output_of(harness, run_id).outputs["weather_location"]
        == "Denver Centennial  Golden   Nr CO USA TMY3 WMO#=724666"
    )
