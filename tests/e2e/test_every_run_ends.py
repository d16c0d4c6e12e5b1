"""Every run ends (DESIGN §13) on the whole local stack: its functions killed under a running job, a cancel and a
re-run through the CLI. The stack ticks every VALIDIBOT_TICK_SECONDS, as `validibot up` does."""

from __future__ import annotations

import os
import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploy.stack import LocalStack
from schemas.changes import Write, receipt_path
from schemas.documents import ReceiptDoc, RunDoc
from schemas.enums import AttemptState, ReceiptStatus, RunStatus, StepStatus
from schemas.paths import attempt_id_for
from tests.support import EXAMPLES, cli, isolated_harness, wait_until

pytestmark = pytest.mark.e2e

MODEL = EXAMPLES / "small-office.idf"


def submit(stack: LocalStack, file: Path, workflow: str) -> str:
    result = cli(stack, "submit", str(file), "--workflow", workflow)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()[0]


def running_job(stack: LocalStack, run_id: str) -> int:
    """The pid (and process group) of the run's local job, once it runs."""

    def pid() -> int | None:
        attempt = stack.services.run_store.attempt(run_id, attempt_id_for(1, 1))
        name = attempt.doc.execution_name if attempt and attempt.doc.state == AttemptState.RUNNING else None
        return int(name.removeprefix("local/").split("@")[0]) if name else None

    return wait_until(pid, 60, "running job")


def run(stack: LocalStack, run_id: str) -> RunDoc:
    found = stack.services.run_reads.run(run_id)
    assert found is not None
    return found


def ended(stack: LocalStack, run_id: str, seconds: float) -> RunDoc:
    return wait_until(lambda: (r := run(stack, run_id)) and RunStatus(r.status).is_terminal and r, seconds, "verdict")


def functions_worker(stack: LocalStack) -> int:
    """The gunicorn worker that runs the functions (its master respawns it, as Cloud Run restarts an instance)."""
    master = next(c for c in stack.supervisor.children if c.name == "functions").process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_job_outlives_its_killed_function_and_the_restarted_function_ingests_its_verdict(
    full_stack: LocalStack,
) -> None:
    run_id = submit(full_stack, MODEL, "energyplus-basic")
    job = running_job(full_stack, run_id)

    os.kill(functions_worker(full_stack), signal.SIGKILL)

    assert not group_gone(job)
    assert ended(full_stack, run_id, 300).status == RunStatus.SUCCEEDED


def test_a_job_that_dies_with_its_function_ends_its_run_with_a_clear_message(full_stack: LocalStack) -> None:
    run_id = submit(full_stack, MODEL, "energyplus-basic")
    job = running_job(full_stack, run_id)

    os.kill(functions_worker(full_stack), signal.SIGKILL)
    os.killpg(job, signal.SIGKILL)

    # Nothing is left to report it but the tick: within two of them.
    verdict = ended(full_stack, run_id, 3 * full_stack.settings.tick_seconds + 10)
    assert verdict.status == RunStatus.FAILED
    assert re.search(r"local job process \d+ ended without writing a result", verdict.error or ""), verdict.error


def test_cancel_stops_a_running_simulation_and_its_late_output_is_recorded_late(full_stack: LocalStack) -> None:
    run_id = submit(full_stack, MODEL, "energyplus-basic")
    job = running_job(full_stack, run_id)

    canceled = cli(full_stack, "cancel", run_id)

    assert canceled.returncode == 0, canceled.stdout + canceled.stderr
    assert canceled.stdout.startswith("CANCELED")
    wait_until(lambda: group_gone(job), 5, "end of the job's process group")
    assert run(full_stack, run_id).status == RunStatus.CANCELED
    assert full_stack.services.run_reads.step(run_id, 1).status == StepStatus.CANCELED
    # The job's watcher reports how it died; that output comes after the cancel and is not applied.
    late = wait_until(lambda: full_stack.services.run_reads.rejected_receipts(run_id, 5), 30, "late receipt")
    assert late[0].status == ReceiptStatus.REJECTED
    assert (late[0].reason or "").startswith("late:")
    assert run(full_stack, run_id).status == RunStatus.CANCELED
    again = cli(full_stack, "cancel", run_id)
    assert again.returncode == 2
    assert "has ended already: CANCELED" in again.stderr


def test_rerun_runs_the_same_submission_again_as_a_new_linked_run(full_stack: LocalStack) -> None:
    first = cli(full_stack, "submit", str(EXAMPLES / "building-invalid.json"), "--workflow", "json-basic", "--wait")
    assert first.returncode == 1, first.stdout + first.stderr
    first_id = first.stdout.split()[0]

    again = cli(full_stack, "rerun", first_id, "--wait", "--timeout", "60")

    assert again.returncode == 1, again.stdout + again.stderr
    rerun_id = again.stdout.split()[0]
    assert rerun_id != first_id
    rerun, original = run(full_stack, rerun_id), run(full_stack, first_id)
    assert rerun.rerun_of == first_id
    assert rerun.submission.sha256 == original.submission.sha256
    assert (rerun.status, rerun.counts.ERROR) == (RunStatus.FAILED, original.counts.ERROR)
    assert cli(full_stack, "rerun", "0" * 24).returncode == 2


def test_maintain_once_runs_one_tick_and_prints_what_it_changed(full_stack: LocalStack) -> None:
    # A project of its own, which no functions tick: what the command prints is all its own doing.
    isolated = isolated_harness(full_stack.settings)
    now = datetime.now(UTC)
    receipt = ReceiptDoc(
        run_id=None,
        attempt_id=None,
        status=ReceiptStatus.REJECTED,
        received_at=now - timedelta(days=31),
        output_uri="gs://elsewhere/output.json",
        output_generation=1,
        expire_at=now - timedelta(days=1),
    )
    isolated.store.commit([Write(receipt_path("rejected-expired"), receipt, "create")])

    first = cli(full_stack, "maintain", "--once", settings=isolated.settings)
    second = cli(full_stack, "maintain", "--once", settings=isolated.settings)

    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines() == ["receipts expired: 1"]
    assert second.stdout.splitlines() == ["nothing to do"]
    assert isolated.store.receipt("rejected-expired") is None
