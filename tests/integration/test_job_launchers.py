"""What can go wrong around a job: killed, hung, started twice, inputs changed under it, no capacity left, its
function process gone, the stack stopped under it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bootstrap import Services
from deploy.stack import Supervisor, adopt_orphans
from functions.pipeline import Pipeline
from functions.stage import Handled, Outcome
from jobs.launchers.base import ExecutionState
from jobs.launchers.local import EXECUTION_PREFIX, LocalProcessLauncher, job_environment, parse_execution_name
from jobs.launchers.processes import process_stat, process_stats
from jobs.runtime import Assignment
from schemas.documents import StepSpec
from schemas.enums import AttemptState, ErrorCategory, JobStatus, RunStatus
from schemas.envelopes import InputEnvelope, OutputEnvelope, sha256_hex
from schemas.paths import attempt_id_for, parse_gs_uri
from schemas.signing import SIGNING_KEY_ENV
from tests.support import APPLIED, CREATED, LAUNCHED, Harness

pytestmark = pytest.mark.integration


def slow_workflow(harness: Harness, timeout_seconds: int = 120, steps: int = 1000) -> str:
    """SlowRoom sleeps 0.1 s a step: 1000 steps keep its job busy for about 100 s unless stopped."""
    config = {"stop_time": steps, "step_size": 1, "output_variables": ["room_temperature"]}
    step = StepSpec(key="slow", name="Slow", validator="fmu", config=config, timeout_seconds=timeout_seconds)
    return harness.add_workflow([step])


def with_local_launcher(harness: Harness, **settings: object) -> tuple[Pipeline, LocalProcessLauncher]:
    launchers = Services(harness.settings.model_copy(update=settings)).launchers
    launcher = launchers["local"]
    assert isinstance(launcher, LocalProcessLauncher)
    return harness.rewired(launchers=launchers), launcher


def launched_execution(harness: Harness, run_id: str) -> str:
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert attempt.state == AttemptState.RUNNING
    assert attempt.execution_name is not None
    assert attempt.execution_name.startswith(EXECUTION_PREFIX)
    return attempt.execution_name


def launched_group(harness: Harness, run_id: str) -> int:
    """The job's pid, which is its process group's id: it leads its group."""
    pid, _start = parse_execution_name(launched_execution(harness, run_id))
    return pid


def group_is_gone(pgid: int) -> bool:
    """No live process is left in the group. A killed grandchild (the engine's sandbox) is re-parented to this test
    process (a subreaper: it runs a stack) and lingers as a zombie until its reaper collects it: dead, holding
    nothing, so it does not count."""
    return all(process.pgid != pgid or not process.alive for process in process_stats())


def wait_until(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


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


def test_full_launcher_leaves_the_attempt_queued_and_a_later_launch_completes_the_run(
    harness: Harness, fmus: dict[str, Path]
) -> None:
    pipeline, launcher = with_local_launcher(harness, local_max_concurrent_jobs=1)
    blocker = start(harness, pipeline, fmus["SlowRoom"].read_bytes(), slow_workflow(harness))
    event, run_id = harness.submit(fmus["RoomHeater"].read_bytes(), "fmu-basic", "RoomHeater.fmu")
    assert pipeline.handle(event) == CREATED
    input_event = harness.input_event(run_id)

    # Acknowledged, not raised: the platform would retry a raise a few times within seconds and then drop it.
    assert pipeline.handle(input_event) == Handled(
        Outcome.QUEUED, "1 local jobs are already running (VALIDIBOT_LOCAL_MAX_CONCURRENT_JOBS)"
    )
    queued = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert (queued.state, queued.queued_at is not None) == (AttemptState.SCHEDULED, True)

    os.killpg(launched_group(harness, blocker), signal.SIGKILL)  # the slot frees when that job ends
    deadline = time.monotonic() + 30
    while launcher.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pipeline.handle(input_event) == LAUNCHED  # as the tick's queue sweep hands it to LAUNCH
    assert pipeline.handle(harness.wait_for_output(run_id)) == APPLIED
    assert harness.store.run(run_id).doc.status == RunStatus.SUCCEEDED


FUNCTION_PROCESS = """
import os, sys, time
from pathlib import Path
from bootstrap import Services
from jobs.launchers.local import LocalProcessLauncher
from jobs.runtime import Assignment
from schemas.envelopes import InputEnvelope, sha256_hex
from schemas.signing import SIGNING_KEY_ENV

envelope, announced = Path(sys.argv[1]), Path(sys.argv[2])
data = envelope.read_bytes()
services = Services.from_environment()
launcher = LocalProcessLauncher(services.objects, services.settings)
assignment = Assignment(InputEnvelope.model_validate_json(data), sha256_hex(data), os.environ[SIGNING_KEY_ENV])
result = launcher.launch(assignment)
announced.with_suffix(".partial").write_text(result.execution_name)
announced.with_suffix(".partial").replace(announced)
time.sleep(600)
"""


def function_process(harness: Harness, run_id: str, folder: Path) -> tuple[list[str], dict[str, str], Path]:
    """A stand-in for the functions server: a process that launches the attempt's job with the local launcher, writes
    the execution name to the returned file, and then idles. Returns its argv, its environment and that file."""
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    folder.mkdir(parents=True, exist_ok=True)
    envelope = folder / "input.json"
    envelope.write_bytes(harness.bucket.blob(parse_gs_uri(attempt.input_uri)[1]).download_as_bytes())
    announced = folder / "execution-name"
    env = {**os.environ, **harness.settings.as_environment(), SIGNING_KEY_ENV: harness.attempt_key(run_id)}
    return [sys.executable, "-c", FUNCTION_PROCESS, str(envelope), str(announced)], env, announced


def submit_slow(harness: Harness, fmus: dict[str, Path], steps: int = 1000) -> str:
    event, run_id = harness.submit(fmus["SlowRoom"].read_bytes(), slow_workflow(harness, steps=steps), "model.fmu")
    assert harness.pipeline.handle(event) == CREATED
    return run_id


def group_exists(pgid: int) -> bool:
    """Any process in the group, zombies included: a zombie still holds the group's id."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_local_job_outlives_the_function_process_that_started_it(
    harness: Harness, fmus: dict[str, Path], tmp_path: Path
) -> None:
    adopt_orphans()  # as the process running the local stack is
    run_id = submit_slow(harness, fmus, steps=50)
    argv, env, announced = function_process(harness, run_id, tmp_path)
    function = subprocess.Popen(argv, env=env, start_new_session=True)
    assert wait_until(announced.exists)
    execution = announced.read_text()
    job_pid, _ = parse_execution_name(execution)
    # Another process (a maintenance sweep, a restarted function) finds the job by its execution name.
    launcher = LocalProcessLauncher(harness.objects_port, harness.settings)
    assert launcher.inspect(execution) == ExecutionState(JobStatus.RUNNING)

    function.kill()  # as if the functions server crashed
    function.wait()

    job = process_stat(job_pid)
    assert job is not None
    assert job.ppid == os.getpid()  # adopted by the process running the stack, not by init
    harness.wait_for_signed_output(run_id)  # the job finished its work and signed its verdict
    output_uri = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc.expected_output_uri
    output = OutputEnvelope.model_validate_json(harness.bucket.blob(parse_gs_uri(output_uri)[1]).download_as_bytes())
    assert output.status == "success"
    # Its exit status was collected: no zombie is left behind, so nothing holds its pid or its group.
    assert wait_until(lambda: not group_exists(job_pid))
    assert launcher.inspect(execution).job_status == JobStatus.FAILED  # gone: the sweeps look for output.json first


def test_inspect_reports_a_job_running_and_then_failed_once_it_ended_without_output(
    harness: Harness, fmus: dict[str, Path]
) -> None:
    pipeline, launcher = with_local_launcher(harness)
    run_id = start(harness, pipeline, fmus["SlowRoom"].read_bytes(), slow_workflow(harness))
    execution = launched_execution(harness, run_id)
    job_pid, _ = parse_execution_name(execution)
    assert launcher.inspect(execution) == ExecutionState(JobStatus.RUNNING)

    os.kill(job_pid, signal.SIGKILL)  # the job dies before it writes anything
    assert wait_until(lambda: launcher.running() == [])

    assert launcher.inspect(execution) == ExecutionState(
        JobStatus.FAILED, f"the local job process {job_pid} ended without writing a result"
    )
    assert pipeline.handle(harness.wait_for_output(run_id)) == APPLIED  # the watcher's report ends the run
    assert harness.store.run(run_id).doc.status == RunStatus.FAILED


def test_inspect_and_stop_never_take_another_process_for_an_ended_job(harness: Harness) -> None:
    launcher = LocalProcessLauncher(harness.objects_port, harness.settings)
    ended = subprocess.Popen(["true"])
    ended_stat = process_stat(ended.pid)
    assert ended_stat is not None
    ended.wait()
    bystander = subprocess.Popen(["sleep", "60"], process_group=0)
    bystander_stat = process_stat(bystander.pid)
    assert bystander_stat is not None
    # The bystander's pid, as if it had been reused since a job with that pid ended: its start time differs.
    reused = f"{EXECUTION_PREFIX}{bystander.pid}@{bystander_stat.start - 1}"
    gone = f"{EXECUTION_PREFIX}{ended.pid}@{ended_stat.start}"

    try:
        for execution, pid in ((reused, bystander.pid), (gone, ended.pid)):
            assert launcher.inspect(execution) == ExecutionState(
                JobStatus.FAILED, f"the local job process {pid} ended without writing a result"
            )
            launcher.stop(execution)
        assert bystander.poll() is None  # not taken for the job, so not killed
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_kills_the_jobs_whole_process_group_and_may_be_repeated(harness: Harness, fmus: dict[str, Path]) -> None:
    pipeline, launcher = with_local_launcher(harness)
    run_id = start(harness, pipeline, fmus["SlowRoom"].read_bytes(), slow_workflow(harness))
    execution = launched_execution(harness, run_id)
    pgid, _ = parse_execution_name(execution)
    # The job and its simulation engine are both running.
    assert wait_until(lambda: sum(p.pgid == pgid and p.alive for p in process_stats()) > 1), (
        f"group {pgid}: {[p for p in process_stats() if p.pgid == pgid]}; "
        f"attempt: {harness.store.attempt(run_id, attempt_id_for(1, 1))}"
    )

    launcher.stop(execution)

    assert wait_until(lambda: not group_exists(pgid))
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    launcher.stop(execution)  # again: the job is gone, nothing to do
    assert launcher.inspect(execution).job_status == JobStatus.FAILED
    assert pipeline.handle(harness.wait_for_output(run_id)) == APPLIED
    assert harness.store.run(run_id).doc.error == (
        "step 1 'Slow' could not run: the validation job was killed (SIGKILL) before it wrote a result"
    )


def test_stopping_the_stack_stops_its_jobs_the_adopted_ones_included(
    harness: Harness, fmus: dict[str, Path], tmp_path: Path
) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    job_groups = []
    for name in ("functions", "functions-2"):
        argv, env, announced = function_process(harness, submit_slow(harness, fmus), tmp_path / name)
        supervisor.start(name, argv, env)
        assert wait_until(announced.exists)
        job_groups.append(parse_execution_name(announced.read_text())[0])
    crashed, running = (child.process for child in supervisor.children)
    sessions = {crashed.pid, running.pid}
    crashed.kill()  # the first functions process crashes; its job runs on
    crashed.wait()
    parents = [stat.ppid if (stat := process_stat(pgid)) else None for pgid in job_groups]
    assert parents == [os.getpid(), running.pid]  # the crashed one's job was adopted by the process running the stack

    supervisor.stop()

    assert [p for p in process_stats() if p.session in sessions] == []  # zombies neither
    for pgid in job_groups:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
    assert supervisor.children == []
