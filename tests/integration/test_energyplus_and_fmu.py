"""Heavy validators as real jobs: `python -m jobs.run` started by the local launcher, real EnergyPlus, real fmpy."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from schemas.documents import StepSpec
from schemas.enums import AttemptState, ErrorCategory, RunStatus, Severity
from schemas.envelopes import OutputEnvelope
from schemas.paths import attempt_id_for, parse_gs_uri
from tests.support import APPLIED, CREATED, EXAMPLES, LAUNCHED, Harness

pytestmark = pytest.mark.integration

GOLDEN = "USA_CO_Golden-NREL.724666_TMY3.epw"


def fmu_workflow(harness: Harness, **config: object) -> str:
    base = {
        "stop_time": 600,
        "step_size": 60,
        "output_variables": ["room_temperature"],
    }
    return harness.add_workflow([StepSpec(key="simulate", name="Simulate", validator="fmu", config=base | config)])


def output_of(harness: Harness, run_id: str) -> OutputEnvelope:
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1))
    assert attempt is not None
    _, name = parse_gs_uri(attempt.doc.expected_output_uri)
    return OutputEnvelope.model_validate_json(harness.bucket.blob(name).download_as_bytes())


def test_energyplus_model_simulates_in_a_separate_process(harness: Harness) -> None:
    event, run_id = harness.submit((EXAMPLES / "small-office.idf").read_bytes(), "energyplus-basic", "office.idf")
    assert harness.pipeline.handle(event) == CREATED
    assert harness.pipeline.handle(harness.input_event(run_id)) == LAUNCHED

    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert attempt.launcher == "local"
    assert attempt.state in (AttemptState.RUNNING, AttemptState.DISPATCHING)
    assert attempt.execution_name is not None
    assert attempt.execution_name.startswith("local/")
    assert harness.pipeline.handle(harness.wait_for_output(run_id)) == APPLIED

    run = harness.store.run(run_id).doc
    assert run.status == RunStatus.SUCCEEDED
    step = harness.store.step(run_id, 1)
    metrics = {m.name: m for m in step.metrics}
    assert metrics["conditioned_area"].value == 80.0
    assert metrics["site_electricity"].value > 1000
    assert metrics["site_electricity"].unit == "kWh"
    assert metrics["site_natural_gas"].value > 100
    assert metrics["site_eui"].unit == "kWh/m2"
    assert {"unmet_heating_hours", "unmet_cooling_hours"} <= set(metrics)
    assert sorted(a.name for a in step.artifacts) == [
        "end-uses.json",
        "eplusout.csv",
        "eplusout.err",
        "eplusout.sql",
        "eplustbl.htm",
    ]
    end_uses = next(a for a in step.artifacts if a.name == "end-uses.json")
    charted = json.loads(harness.bucket.blob(parse_gs_uri(end_uses.uri)[1]).download_as_bytes())
    assert charted["months"][0] == "Jan"
    assert len(charted["months"]) == 12
    by_name = {(s["fuel"], s["end_use"]): s["values"] for s in charted["series"]}
    assert {("Electricity", "Interior Lighting"), ("Natural Gas", "Interior Equipment")} <= set(by_name)
    # The monthly end uses add up to the annual site electricity the summary reports (kWh, rounded per month).
    electricity = sum(sum(v) for (fuel, _), v in by_name.items() if fuel == "Electricity")
    assert electricity == pytest.approx(metrics["site_electricity"].value, rel=0.01)
    prefix = attempt.expected_output_uri.removesuffix("output.json") + "artifacts/"
    for artifact in step.artifacts:
        assert artifact.uri == prefix + artifact.name
        assert harness.bucket.get_blob(parse_gs_uri(artifact.uri)[1]).size == artifact.size_bytes
    [warning] = harness.reads.findings(run_id, 100)
    assert warning.severity == Severity.WARNING
    assert "Ground Temperatures" in warning.message


def test_energyplus_fatal_error_fails_the_run_with_its_message(harness: Harness) -> None:
    run_id, run = harness.run_job((EXAMPLES / "broken-office.idf").read_bytes(), "energyplus-basic", "broken.idf")

    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.VALIDATION_FAILED
    findings = {f.code: f for f in harness.reads.findings(run_id, 100)}
    assert 'invalid Construction Name="REINFORCED UNOBTAINIUM"' in findings["energyplus.severe"].message
    assert findings["energyplus.fatal"].message == "GetSurfaceData: Errors discovered, program terminates."
    assert findings["energyplus.fatal"].severity == Severity.ERROR


def test_python_plugin_model_is_refused_before_energyplus_runs(harness: Harness) -> None:
    run_id, run = harness.run_job((EXAMPLES / "plugin-office.idf").read_bytes(), "energyplus-basic", "plugin.idf")

    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.VALIDATION_FAILED
    messages = [f.message for f in harness.reads.findings(run_id, 100)]
    assert "PythonPlugin:Instance 'Exfiltrate' is not allowed" in " ".join(messages)
    output = output_of(harness, run_id)
    assert output.outputs == {"simulated": False}
    assert output.artifacts == []  # no eplusout.err: EnergyPlus never started


@pytest.mark.parametrize(
    ("file_name", "refused"),
    [("occupancy.csv", False), ("/etc/passwd", True), ("../../secrets/occupancy.csv", True)],
    ids=["relative", "absolute", "outside"],
)
def test_schedule_file_runs_with_a_relative_name_and_is_refused_with_any_other(
    harness: Harness, file_name: str, refused: bool
) -> None:
    model = (EXAMPLES / "small-office.idf").read_text() + (
        f"\nSchedule:File, Occupancy From File, Any Number, {file_name}, 1, 0, 8760, Comma;\n"
    )
    workflow = harness.add_workflow(
        [StepSpec(key="simulate", name="Design days", validator="energyplus", config={"design_days_only": True})]
    )

    run_id, run = harness.run_job(model.encode(), workflow, "office.idf")

    assert run.status == RunStatus.FAILED
    messages = " ".join(f.message for f in harness.reads.findings(run_id, 100))
    output = output_of(harness, run_id)
    if refused:
        assert output.outputs == {"simulated": False}
        assert f"Schedule:File 'Occupancy From File' field 'File Name' is not allowed: '{file_name}'" in messages
    else:
        # Not refused: EnergyPlus itself ran, and reports the file this one-file submission did not bring.
        assert output.outputs["simulated"] is True
        assert "occupancy.csv" in messages.lower()
        assert "is not allowed" not in messages


def test_epjson_model_runs_with_the_steps_run_settings(harness: Harness, tmp_path: Path) -> None:
    from jobs.validators.energyplus import energyplus_binary

    # The example model in EnergyPlus's other format, converted by EnergyPlus itself.
    subprocess.run(
        [str(energyplus_binary()), "--convert-only", "-d", str(tmp_path), str(EXAMPLES / "small-office.idf")],
        check=True,
        capture_output=True,
    )
    slug = harness.add_workflow(
        [
            StepSpec(
                key="simulate",
                name="January at 6 steps per hour",
                validator="energyplus",
                config={
                    "weather_file": GOLDEN,
                    "timesteps_per_hour": 6,
                    "run_period": {"begin_month": 1, "begin_day": 1, "end_month": 1, "end_day": 31},
                },
            )
        ]
    )
    epjson = (tmp_path / "small-office.epJSON").read_bytes()
    run_id, run = harness.run_job(epjson, slug, "office.epJSON")

    assert run.status == RunStatus.SUCCEEDED, run.error
    january = {m.name: m.value for m in harness.store.step(run_id, 1).metrics}
    assert 0 < january["site_electricity"] < 1000  # one month, not the model's whole year
    csv = next(a for a in harness.store.step(run_id, 1).artifacts if a.name == "eplusout.csv")
    rows = harness.bucket.blob(parse_gs_uri(csv.uri)[1]).download_as_text().splitlines()
    assert len(rows) == 1 + 31 * 24  # hourly reports for January only


def test_fmu_outputs_become_metrics(harness: Harness, fmus: dict[str, Path]) -> None:
    run_id, run = harness.run_job(fmus["RoomHeater"].read_bytes(), "fmu-basic", "RoomHeater.fmu")

    assert run.status == RunStatus.SUCCEEDED, run.error
    step = harness.store.step(run_id, 1)
    [temperature] = step.metrics
    assert temperature.name == "room_temperature"
    assert 18.0 < temperature.value < 20.0  # 1.5 kW against 100 W/K from 18 C, two hours
    [csv] = step.artifacts
    assert csv.name == "results.csv"
    header, *rows = harness.bucket.blob(parse_gs_uri(csv.uri)[1]).download_as_text().splitlines()
    assert header == '"time","room_temperature"'
    assert len(rows) == 121


def test_fmu_bound_violation_fails_naming_the_variable(harness: Harness, fmus: dict[str, Path]) -> None:
    slug = fmu_workflow(
        harness,
        stop_time=7200,
        input_values={"heater_power": 5000},
        bounds={"room_temperature": {"min": 16, "max": 26}},
    )
    run_id, run = harness.run_job(fmus["RoomHeater"].read_bytes(), slug, "RoomHeater.fmu")

    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.VALIDATION_FAILED
    [finding] = harness.reads.findings(run_id, 100)
    assert finding.code == "fmu.above_max"
    assert finding.location.path == "room_temperature"
    assert finding.message.startswith("room_temperature rose to ")
    assert finding.message.endswith("above its maximum 26")


def test_fmu_unknown_variable_is_a_finding(harness: Harness, fmus: dict[str, Path]) -> None:
    slug = fmu_workflow(harness, input_values={"window_open": 1})
    run_id, run = harness.run_job(fmus["RoomHeater"].read_bytes(), slug, "RoomHeater.fmu")

    assert run.status == RunStatus.FAILED
    [finding] = harness.reads.findings(run_id, 100)
    assert finding.message == "input value for 'window_open': the model declares no such variable"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (b"MZ\x90\x00 certainly not a zip", "fmu.not_zip", "the file is not an FMU: an FMU is a zip archive"),
        (_zip({"binaries/linux64/x.so": b"\x7fELF"}), "fmu.no_model_description", "the FMU has no modelDescription"),
        (
            _zip({"modelDescription.xml": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'}),
            "fmu.unsafe_model_description",
            "modelDescription.xml declares a DTD",
        ),
        (_zip({"modelDescription.xml": b"<fmiModelDescription"}), "fmu.bad_model_description", "not well-formed"),
    ],
    ids=["not-a-zip", "no-model-description", "xxe", "truncated-xml"],
)  # fmt: skip
def test_malformed_fmu_fails_with_a_clear_error(harness: Harness, data: bytes, code: str, message: str) -> None:
    run_id, run = harness.run_job(data, "fmu-basic", "model.fmu")

    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.VALIDATION_FAILED
    [finding] = harness.reads.findings(run_id, 100)
    assert finding.code == code
    assert message in finding.message
