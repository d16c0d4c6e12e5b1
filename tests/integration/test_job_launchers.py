"""What can go wrong around a job: killed, hung, started twice, inputs changed under it, no capacity left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootstrap import Services
from functions.pipeline import Pipeline
from jobs.launchers.base import LauncherBusy
from jobs.launchers.local import EXECUTION_PREFIX, LocalProcessLauncher, job_environment
from jobs.runtime import Assignment
from schemas.documents import StepSpec
from schemas.enums import AttemptState, ErrorCategory, RunStatus
from schemas.envelopes import InputEnvelope, OutputEnvelope, sha256_hex
from schemas.paths import attempt_id_for, parse_gs_uri
from tests.support import APPLIED, CREATED, LAUNCHED, Harness

pytestmark = pytest.mark.integration


def slow_workflow(harness: Harness, timeout_seconds: int = 120) -> str:
    """SlowRoom sleeps 0.1 s a step: 1000 steps keep its job busy for about 100 s unless stopped."""
    config = {"stop_time": 1000, "step_size": 1, "output_variables": ["room_temperature"]}
    step = StepSpec(key="slow", name="Slow", validator="fmu", config=config, timeout_seconds=timeout_seconds)
    return harness.add_workflow([step])


def with_local_launcher(harness: Harness, **settings: object) -> tuple[Pipeline, LocalProcessLauncher]:
    launchers = Services(harness.settings.model_copy(update=settings)).launchers
    launcher = launchers["local"]
    assert isinstance(launcher, LocalProcessLauncher)
    return harness.rewired(launchers=launchers), launcher


def launched_group(harness: Harness, run_id: str) -> int:
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert attempt.state == AttemptState.RUNNING
    assert attempt.execution_name is not None
    return int(attempt.execution_name.removeprefix(EXECUTION_PREFIX))


def group_is_gone(pgid: int) -> bool:
    """No live process is left in the group. A killed grandchild (the engine's sandbox) is reparented to PID 1 and
    may linger as a zombie until PID 1 reaps it: dead, holding nothing, so it does not count."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if int(group) == pgid and state != "Z":
            return False
    return True


def start(harness: Harness, pipeline: Pipeline, data: bytes, workflow: str) -> str:
    event, run_id = harness.submit(data, workflow, "model.fmu")
    assert pipeline.handle(event) == CREATED
    assert pipeline.handle(harness.input_event(run_id)) == LAUNCHED
    return run_id


def test_killed_job_fails_the_run_with_a_clear_error_and_leaves_no_process(
    harness: Harness, fmus: dict[str, Path]
) -> None:
    run_id = start(harness, harness.pipeline, fmus["SlowRoom"].read_bytes(), slow_workflow(harness))
    pgid = launched_group(harness, run_id)
    time.sleep(1.5)  # well inside the simulation: the job and its simulation child are both running

    os.killpg(pgid, signal.SIGKILL)
    assert harness.pipeline.handle(harness.wait_for_output(run_id, timeout=30)) == APPLIED

    run = harness.store.run(run_id).doc
    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.RUNTIME_ERROR
    assert run.error == (
        "step 1 'Slow' could not run: the validation job was killed (SIGKILL) before it wrote a result"
    )
    assert harness.store.attempt(run_id, attempt_id_for(1, 1)).doc.state == AttemptState.FAILED
    assert group_is_gone(pgid)


def test_hung_job_is_killed_at_its_timeout_and_the_run_times_out(harness: Harness, fmus: dict[str, Path]) -> None:
    pipeline, launcher = with_local_launcher(harness, local_kill_grace_seconds=1)
    run_id = start(harness, pipeline, fmus["SlowRoom"].read_bytes(), slow_workflow(harness, timeout_seconds=3))
    pgid = launched_group(harness, run_id)
    os.killpg(pgid, signal.SIGSTOP)  # frozen: it can no longer enforce its own timeout, only the launcher can

    assert pipeline.handle(harness.wait_for_output(run_id, timeout=30)) == APPLIED

    run = harness.store.run(run_id).doc
    assert run.status == RunStatus.TIMED_OUT
    assert run.error_category == ErrorCategory.TIMEOUT
    assert run.error == "step 1 'Slow' timed out: the validation job ran past its 3 s timeout and was stopped"
    assert harness.store.attempt(run_id, attempt_id_for(1, 1)).doc.state == AttemptState.TIMED_OUT
    assert group_is_gone(pgid)
    assert launcher.running() == []


def test_simulation_past_the_step_timeout_is_stopped_by_the_validator(harness: Harness, fmus: dict[str, Path]) -> None:
    run_id = start(harness, harness.pipeline, fmus["SlowRoom"].read_bytes(), slow_workflow(harness, timeout_seconds=8))
    assert harness.pipeline.handle(harness.wait_for_output(run_id, timeout=30)) == APPLIED

    run = harness.store.run(run_id).doc
    assert run.status == RunStatus.TIMED_OUT
    assert run.error == (
        "step 1 'Slow' timed out: the FMU simulation did not finish within the step's 8 s timeout and was stopped"
    )


def job_command(harness: Harness, run_id: str) -> tuple[list[str], dict[str, str]]:
    """How the local launcher (and Cloud Run, through its overrides) starts the job for this attempt."""
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    _, name = parse_gs_uri(attempt.input_uri)
    data = harness.bucket.blob(name).download_as_bytes()
    assignment = Assignment(InputEnvelope.model_validate_json(data), sha256_hex(data), harness.attempt_key(run_id))
    env = job_environment(assignment, "validibot-validator-fmu", {**os.environ, **harness.settings.as_environment()})
    return [sys.executable, "-m", "jobs.run"], env


def test_job_started_twice_for_one_attempt_writes_one_output(harness: Harness, fmus: dict[str, Path]) -> None:
    event, run_id = harness.submit(fmus["RoomHeater"].read_bytes(), "fmu-basic", "RoomHeater.fmu")
    assert harness.pipeline.handle(event) == CREATED
    argv, env = job_command(harness, run_id)

    twins = [subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in twins]
    output = harness.wait_for_output(run_id)
    late = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    assert [code for code, _ in results] == [0, 0]
    assert late.returncode == 0
    assert "output.json already exists; nothing computed" in late.stderr
    assert harness.bucket.get_blob(parse_gs_uri(harness.store.attempt(run_id, "01-1").doc.expected_output_uri)[1])\
        .generation == output.generation  # fmt: skip
    assert harness.pipeline.handle(harness.input_event(run_id)) == LAUNCHED
    assert harness.pipeline.handle(output) == APPLIED
    assert harness.store.run(run_id).doc.status == RunStatus.SUCCEEDED


def test_job_refuses_an_output_uri_that_is_not_the_envelopes(harness: Harness, fmus: dict[str, Path]) -> None:
    event, run_id = harness.submit(fmus["RoomHeater"].read_bytes(), "fmu-basic", "RoomHeater.fmu")
    assert harness.pipeline.handle(event) == CREATED
    argv, env = job_command(harness, run_id)
    env["VALIDIBOT_OUTPUT_URI"] = env["VALIDIBOT_OUTPUT_URI"].replace("output.json", "elsewhere.json")

    job = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    assert job.returncode == 2
    assert "is not this envelope's expected_output_uri" in job.stderr
    assert harness.bucket.get_blob(parse_gs_uri(env["VALIDIBOT_OUTPUT_URI"])[1]) is None


def test_job_reads_its_envelope_from_a_file_uri(harness: Harness, fmus: dict[str, Path], tmp_path: Path) -> None:
    event, run_id = harness.submit(fmus["RoomHeater"].read_bytes(), "fmu-basic", "RoomHeater.fmu")
    assert harness.pipeline.handle(event) == CREATED
    argv, env = job_command(harness, run_id)
    local = tmp_path / "input.json"
    local.write_bytes(harness.bucket.blob(parse_gs_uri(env["VALIDIBOT_INPUT_URI"])[1]).download_as_bytes())

    job = subprocess.run(argv, env={**env, "VALIDIBOT_INPUT_URI": local.as_uri()}, timeout=120, check=False)

    assert job.returncode == 0
    output = OutputEnvelope.model_validate_json(
        harness.bucket.blob(parse_gs_uri(env["VALIDIBOT_OUTPUT_URI"])[1]).download_as_bytes()
    )
    assert output.status == "success"


def test_input_changed_after_the_envelope_was_written_fails_without_validating(
    harness: Harness, fmus: dict[str, Path]
) -> None:
    event, run_id = harness.submit(fmus["RoomHeater"].read_bytes(), "fmu-basic", "RoomHeater.fmu")
    assert harness.pipeline.handle(event) == CREATED
    submission = harness.store.run(run_id).doc.submission
    # Someone with bucket access replaces the stored submission between scheduling and the job's download.
    harness.bucket.blob(parse_gs_uri(submission.uri)[1]).upload_from_string(b"swapped for something else")

    assert harness.pipeline.handle(harness.input_event(run_id)) == LAUNCHED
    assert harness.pipeline.handle(harness.wait_for_output(run_id)) == APPLIED

    run = harness.store.run(run_id).doc
    assert run.status == RunStatus.FAILED
    assert run.error_category == ErrorCategory.RUNTIME_ERROR
    assert run.error == (
        "step 1 'Two hours of room heating, comfort bounds' could not run: an input file is missing: "
        f"{submission.uri} (generation {submission.generation})"
    )
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    output = OutputEnvelope.model_validate_json(
        harness.bucket.blob(parse_gs_uri(attempt.expected_output_uri)[1]).download_as_bytes()
    )
    assert output.outputs == {}  # the validator never ran: it reports `simulated` whenever it does
    assert output.metrics == []


@pytest.mark.parametrize("promise", ["size_bytes", "sha256"])
def test_input_bytes_that_differ_from_the_envelope_are_refused_before_the_validator(
    harness: Harness, fmus: dict[str, Path], tmp_path: Path, promise: str
) -> None:
    event, run_id = harness.submit(fmus["RoomHeater"].read_bytes(), "fmu-basic", "RoomHeater.fmu")
    assert harness.pipeline.handle(event) == CREATED
    argv, env = job_command(harness, run_id)
    envelope = InputEnvelope.model_validate_json(
        harness.bucket.blob(parse_gs_uri(env["VALIDIBOT_INPUT_URI"])[1]).download_as_bytes()
    )
    [ref] = envelope.input_files
    wrong = {"size_bytes": ref.size_bytes - 1, "sha256": "0" * 64}[promise]
    local = tmp_path / "input.json"
    local.write_bytes(envelope.model_copy(update={"input_files": [ref.model_copy(update={promise: wrong})]}).to_bytes())

    job = subprocess.run(argv, env={**env, "VALIDIBOT_INPUT_URI": local.as_uri()}, timeout=120, check=False)

    output = OutputEnvelope.model_validate_json(
        harness.bucket.blob(parse_gs_uri(env["VALIDIBOT_OUTPUT_URI"])[1]).download_as_bytes()
    )
    assert job.returncode == 1
    assert output.status == "failed_runtime"
    assert output.outputs == {}  # the validator never ran
    [message] = output.messages
    expected = {
        "size_bytes": f"RoomHeater.fmu is larger than the {wrong} bytes recorded",
        "sha256": f"RoomHeater.fmu does not match what was recorded (size {ref.size_bytes} vs {ref.size_bytes}, "
        f"sha256 {ref.sha256[:12]}… vs 000000000000…)",
    }[promise]
    assert message.text == f"an input file changed after the run was created: {expected}"


def test_full_launcher_answers_busy_and_the_redelivered_event_completes_the_run(
    harness: Harness, fmus: dict[str, Path]
) -> None:
    pipeline, launcher = with_local_launcher(harness, local_max_concurrent_jobs=1)
    blocker = start(harness, pipeline, fmus["SlowRoom"].read_bytes(), slow_workflow(harness))
    event, run_id = harness.submit(fmus["RoomHeater"].read_bytes(), "fmu-basic", "RoomHeater.fmu")
    assert pipeline.handle(event) == CREATED
    input_event = harness.input_event(run_id)

    with pytest.raises(LauncherBusy, match="1 local jobs are already running"):
        pipeline.handle(input_event)
    assert harness.store.attempt(run_id, attempt_id_for(1, 1)).doc.state == AttemptState.SCHEDULED

    os.killpg(launched_group(harness, blocker), signal.SIGKILL)  # the slot frees when that job ends
    deadline = time.monotonic() + 30
    while launcher.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pipeline.handle(input_event) == LAUNCHED  # the platform's redelivery of the same event
    assert pipeline.handle(harness.wait_for_output(run_id)) == APPLIED
    assert harness.store.run(run_id).doc.status == RunStatus.SUCCEEDED


PARENT = """
import os, subprocess, sys, time
env = dict(os.environ, VALIDIBOT_PARENT_PID=str(os.getpid()))
job = subprocess.Popen([sys.executable, "-m", "jobs.run"], env=env, start_new_session=True)
print(job.pid, flush=True)
time.sleep(120)
"""


def test_a_local_job_does_not_outlive_the_process_that_started_it(harness: Harness, fmus: dict[str, Path]) -> None:
    event, run_id = harness.submit(fmus["SlowRoom"].read_bytes(), slow_workflow(harness), "model.fmu")
    assert harness.pipeline.handle(event) == CREATED
    _, env = job_command(harness, run_id)
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=env, stdout=subprocess.PIPE, text=True)
    job_group = int(parent.stdout.readline())
    time.sleep(2)  # the job is simulating
    assert not group_is_gone(job_group)

    parent.kill()  # as if the function's process crashed
    parent.wait()
    deadline = time.monotonic() + 10
    while not group_is_gone(job_group) and time.monotonic() < deadline:
        time.sleep(0.1)

    assert group_is_gone(job_group)
