"""Run a job validator as a local process: `python -m jobs.run`, the same entry point a Cloud Run Job runs.

Each job leads its own process group (so a timeout or a stop kills EnergyPlus and anything else it started) inside
this process's session, gets the environment a Cloud Run Job execution would get, and a watcher thread in this
process. Whatever the job could not report itself (it was killed, it crashed before writing, it ran out of time)
the watcher reports as a failed_runtime output.json, written create-only, so a job that did finish always wins.

Like a Cloud Run job, a local job outlives the function process that started it: its execution name,
`local/{pid}@{start}`, lets any later process (a maintenance sweep after a restart) inspect and stop it, and the
local stack, which adopts the jobs of a functions process that died, stops them all when it stops.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime

from jobs.launchers.base import ExecutionState, LauncherBusy, LaunchResult, job_overrides
from jobs.launchers.processes import ProcessStat, process_stat
from jobs.runtime import Assignment, output_taken, report_failure
from jobs.validators.base import ValidationResult
from schemas.enums import JobStatus
from schemas.settings import Settings
from schemas.signing import SIGNING_SECRET_ENV
from store.ports import ObjectStore

log = logging.getLogger("validibot.launcher.local")

EXECUTION_PREFIX = "local/"


def job_environment(assignment: Assignment, job_name: str, base: dict[str, str]) -> dict[str, str]:
    """What a Cloud Run Job execution sees: its image's environment plus the launch's overrides; never the service's
    signing secret, which the function's own environment holds."""
    return {
        **{k: v for k, v in base.items() if k != SIGNING_SECRET_ENV},
        **job_overrides(assignment),
        "CLOUD_RUN_JOB": job_name,
        "CLOUD_RUN_TASK_INDEX": "0",
        "CLOUD_RUN_TASK_COUNT": "1",
    }


def execution_name_for(job: ProcessStat) -> str:
    return f"{EXECUTION_PREFIX}{job.pid}@{job.start}"


def parse_execution_name(name: str) -> tuple[int, int]:
    """The pid and start time (clock ticks after boot) a local execution name records."""
    pid, separator, start = name.removeprefix(EXECUTION_PREFIX).partition("@")
    if not (name.startswith(EXECUTION_PREFIX) and separator and pid.isdigit() and start.isdigit()):
        raise ValueError(f"{name!r} is not a local execution name ({EXECUTION_PREFIX}{{pid}}@{{start}})")
    return int(pid), int(start)


def find_job(name: str) -> ProcessStat | None:
    """The job process `name` records, zombie or not; None once it is gone, whoever holds its pid now."""
    pid, start = parse_execution_name(name)
    process = process_stat(pid)
    return process if process is not None and process.start == start else None


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"the validation job was killed ({name}) before it wrote a result"
    return f"the validation job exited with status {returncode} without writing a result"


class LocalProcessLauncher:
    name = "local"

    def __init__(self, objects: ObjectStore, settings: Settings) -> None:
        self._objects = objects
        self._settings = settings
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen[bytes]] = {}

    def running(self) -> list[int]:
        """Process group ids of the jobs still running (one per job: each leads its own group)."""
        with self._lock:
            return list(self._running)

    def launch(self, assignment: Assignment) -> LaunchResult:
        envelope = assignment.envelope
        job_name = self._settings.cloudrun_job_prefix + envelope.validator.type
        env = job_environment(assignment, job_name, {**os.environ, **self._settings.as_environment()})
        with self._lock:
            limit = self._settings.local_max_concurrent_jobs
            if len(self._running) >= limit:
                raise LauncherBusy(f"{limit} local jobs are already running (VALIDIBOT_LOCAL_MAX_CONCURRENT_JOBS)")
            # A group of its own, but this process's session: the local stack recognises its functions' jobs by
            # session, the adopted ones included (deploy/stack.py). A Cloud Run job has no stdin either.
            process = subprocess.Popen(
                [sys.executable, "-m", "jobs.run"], env=env, stdin=subprocess.DEVNULL, process_group=0
            )
            self._running[process.pid] = process
        # Read before the watcher starts: until it reaps the job, /proc keeps the job's entry.
        job = process_stat(process.pid)
        assert job is not None
        # The watcher logs about this run: it keeps the launching call's log labels (its context).
        watch = contextvars.copy_context().run
        threading.Thread(
            target=watch, args=(self._watch, process, assignment), name=f"job-{process.pid}", daemon=True
        ).start()
        log.info("started %s for run %s as process group %s", job_name, envelope.run_id, process.pid)
        return LaunchResult(execution_name=execution_name_for(job), job_status=JobStatus.RUNNING)

    def inspect(self, execution_name: str) -> ExecutionState:
        """RUNNING while the job process lives; FAILED once it has ended, whether or not it wrote its verdict
        (the sweeps look for output.json first)."""
        job = find_job(execution_name)
        if job is not None and job.alive:
            return ExecutionState(JobStatus.RUNNING)
        pid, _ = parse_execution_name(execution_name)
        return ExecutionState(JobStatus.FAILED, f"the local job process {pid} ended without writing a result")

    def stop(self, execution_name: str) -> None:
        """Kill the job's process group, engines included; nothing to do once the job is gone."""
        job = find_job(execution_name)
        if job is None:
            return
        # The job leads its group, and even as a zombie it keeps the group's id from being reused.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)

    def _watch(self, process: subprocess.Popen[bytes], assignment: Assignment) -> None:
        envelope = assignment.envelope
        started_at = datetime.now(UTC)
        limit = envelope.context.timeout_seconds + self._settings.local_kill_grace_seconds
        timed_out = False
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # The job's children die with it, whether it finished, crashed or ran out of time.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            with self._lock:
                self._running.pop(process.pid, None)
        if timed_out:
            result = ValidationResult(
                runtime_error=f"the validation job ran past its {envelope.context.timeout_seconds} s timeout "
                "and was stopped",
                timed_out=True,
            )
        elif process.returncode != 0 and not output_taken(self._objects, assignment, self._settings):
            result = ValidationResult(runtime_error=describe_exit(process.returncode))
        else:
            return
        log.warning("job %s for run %s: %s", process.pid, envelope.run_id, result.runtime_error)
        report_failure(self._objects, assignment, result, started_at=started_at, settings=self._settings)
