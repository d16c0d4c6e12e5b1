"""Run a job validator as a local process: `python -m jobs.run`, the same entry point a Cloud Run Job runs.

Each job gets its own process group (so a timeout kills EnergyPlus and anything else it started), the
environment a Cloud Run Job execution would get, and a watcher thread in this process. Whatever the job could
not report itself (it was killed, it crashed before writing, it ran out of time) the watcher reports as a
failed_runtime output.json, written create-only, so a job that did finish always wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime

from jobs.launchers.base import LauncherBusy, LaunchResult, job_overrides
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
        base = {**os.environ, **self._settings.as_environment(), "VALIDIBOT_PARENT_PID": str(os.getpid())}
        env = job_environment(assignment, job_name, base)
        with self._lock:
            limit = self._settings.local_max_concurrent_jobs
            if len(self._running) >= limit:
                raise LauncherBusy(f"{limit} local jobs are already running (VALIDIBOT_LOCAL_MAX_CONCURRENT_JOBS)")
            process = subprocess.Popen([sys.executable, "-m", "jobs.run"], env=env, start_new_session=True)
            self._running[process.pid] = process
        threading.Thread(target=self._watch, args=(process, assignment), name=f"job-{process.pid}", daemon=True).start()
        log.info("started %s for run %s as process group %s", job_name, envelope.run_id, process.pid)
        return LaunchResult(execution_name=f"{EXECUTION_PREFIX}{process.pid}", job_status=JobStatus.RUNNING)

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
