"""The pipeline's decisions, without any I/O: documents in, planned writes and effects out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from functions.common import Plan
from functions.ingest.transitions import plan_ingest, rejected_receipt_id
from functions.intake.transitions import intake_problem, plan_intake
from functions.launch.transitions import plan_dispatched, plan_launch, plan_launch_refused, plan_release
from schemas.changes import Versioned, attempt_path, receipt_path, run_path, step_path
from schemas.documents import AttemptDoc, OrgDoc, RunDoc, StepDoc, StepSpec, Submission, WorkflowDoc, WorkflowLimits
from schemas.enums import (
    AttemptState,
    ErrorCategory,
    JobStatus,
    LifecycleType,
    ReceiptStatus,
    RunStatus,
    StepStatus,
)
from schemas.envelopes import TIMEOUT_CODE, InputEnvelope, Message, OutputEnvelope, sha256_hex
from schemas.objects import ObjectFinalized
from schemas.paths import InboxPath, parse_object_name, run_id_for
from schemas.settings import Settings

# Callback ids in the form new_callback_id() makes (43 URL-safe characters): INGEST refuses any other.
FIRST_CALLBACK = "first-callback".ljust(43, "x")
NEXT_CALLBACK = "next-callback".ljust(43, "x")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SETTINGS = Settings(bucket="bkt", max_findings_per_step=3, dispatch_lease_seconds=60)
SCHEMA = {"type": "object", "required": ["name"]}
ORG = OrgDoc(name="Demo", created_at=NOW)


def spec(key: str) -> StepSpec:
    return StepSpec(key=key, name=key.title(), validator="json-schema", config={"schema": SCHEMA})


def workflow(*keys: str, fail_policy: str = "stop") -> WorkflowDoc:
    return WorkflowDoc(org="demo", slug="wf", name="WF", steps=[spec(k) for k in keys], fail_policy=fail_policy)


def inbox_event(size: int = 10) -> ObjectFinalized:
    return ObjectFinalized(bucket="bkt", name="inbox/demo/wf/a.json", generation=7, size=size)


PATH = InboxPath(org="demo", workflow="wf", filename="a.json")
RUN_ID = run_id_for("bkt", "inbox/demo/wf/a.json", 7)
SUBMISSION = Submission(
    name="a.json", uri=f"gs://bkt/runs/demo/{RUN_ID}/submission/a.json", generation=3, size_bytes=10, sha256="a" * 64
)


def intake(wf: WorkflowDoc) -> Plan:
    return intake_with(wf, SETTINGS)


def intake_with(wf: WorkflowDoc, settings: Settings) -> Plan:
    return plan_intake(
        RUN_ID,
        inbox_event(),
        PATH,
        org=ORG,
        workflow=wf,
        submission=SUBMISSION,
        problem=None,
        callback_id=FIRST_CALLBACK,
        settings=settings,
        now=NOW,
    )


def launch(run: RunDoc, attempt: AttemptDoc, *, problem: str | None = None, now: datetime = NOW, settings=SETTINGS):
    return plan_launch(
        RUN_ID,
        "01-1",
        run=versioned(run),
        attempt=versioned(attempt),
        input_generation=11,
        input_problem=problem,
        settings=settings,
        now=now,
    )


def written(plan: Plan, path: tuple[str, ...]):
    [write] = [w for w in plan.writes if w.path == path]
    return write


def versioned(doc):
    return Versioned(doc, NOW)


def launched(wf: WorkflowDoc) -> tuple[RunDoc, AttemptDoc]:
    plan = intake(wf)
    run, attempt = written(plan, run_path(RUN_ID)).doc, written(plan, attempt_path(RUN_ID, "01-1")).doc
    claim = launch(run, attempt)
    return written(claim, run_path(RUN_ID)).doc, written(claim, attempt_path(RUN_ID, "01-1")).doc


def output_for(attempt: AttemptDoc, status: str = "success", messages: list[Message] | None = None) -> OutputEnvelope:
    return OutputEnvelope(
        run_id=RUN_ID,
        step_key=attempt.step_key,
        attempt_id=f"{attempt.step:02d}-1",
        callback_id=attempt.callback_id,
        input_envelope_sha256=attempt.input_sha256,
        validator={"id": "json-schema", "type": "json-schema", "version": "1"},
        status=status,
        timing={"started_at": NOW, "finished_at": NOW},
        messages=messages or [],
    )


def output_event(attempt: AttemptDoc) -> ObjectFinalized:
    return ObjectFinalized(
        bucket="bkt", name=attempt.expected_output_uri.removeprefix("gs://bkt/"), generation=5, size=1
    )


def ingest(run: RunDoc, attempt: AttemptDoc, output: OutputEnvelope, event: ObjectFinalized | None = None) -> Plan:
    event = event or output_event(attempt)
    return plan_ingest(
        event,
        parse_object_name(event.name),
        output,
        run=versioned(run),
        attempt=versioned(attempt),
        next_callback_id=NEXT_CALLBACK,
        settings=SETTINGS,
        now=NOW,
    )


def errors(n: int) -> list[Message]:
    return [Message(severity="ERROR", code="x", text=f"problem {i}") for i in range(n)]


# -- INTAKE ------------------------------------------------------------------------------------------------


def test_intake_creates_run_steps_and_first_attempt_whose_input_hash_is_recorded() -> None:
    plan = intake(workflow("one", "two"))

    assert [(w.path, w.mode) for w in plan.writes] == [
        (run_path(RUN_ID), "create"),
        (step_path(RUN_ID, 1), "create"),
        (step_path(RUN_ID, 2), "create"),
        (attempt_path(RUN_ID, "01-1"), "create"),
    ]
    run = written(plan, run_path(RUN_ID)).doc
    assert run.status == RunStatus.PENDING
    assert run.current_step == 1
    attempt = written(plan, attempt_path(RUN_ID, "01-1")).doc
    assert attempt.state == AttemptState.SCHEDULED
    assert attempt.expected_output_uri == f"gs://bkt/runs/demo/{RUN_ID}/steps/01-one/01-1/output.json"
    [input_json] = plan.effects.objects
    assert input_json.uri == attempt.input_uri
    assert sha256_hex(input_json.data) == attempt.input_sha256
    envelope = InputEnvelope.model_validate_json(input_json.data)
    assert envelope.context.callback_id == FIRST_CALLBACK
    assert envelope.input_files[0].generation == 3
    assert envelope.inputs == {"schema": SCHEMA}
    assert [e.type for e in plan.effects.events] == [LifecycleType.RUN_CREATED]
    assert [written(plan, step_path(RUN_ID, n)).doc.attempt_id for n in (1, 2)] == ["01-1", None]


@pytest.mark.parametrize(("max_bytes", "launcher"), [(10, "inline"), (9, "local")])
def test_an_inline_step_on_a_submission_over_the_inline_size_goes_to_a_job(max_bytes: int, launcher: str) -> None:
    plan = intake_with(workflow("one"), SETTINGS.model_copy(update={"inline_max_bytes": max_bytes}))

    assert written(plan, attempt_path(RUN_ID, "01-1")).doc.launcher == launcher


def test_intake_input_envelope_is_deterministic() -> None:
    assert intake(workflow("one")).effects == intake(workflow("one")).effects


def test_refused_submission_is_one_failed_run_and_two_events() -> None:
    problem = intake_problem(
        PATH,
        inbox_event(size=101),
        org=ORG,
        workflow=workflow("one").model_copy(update={"limits": WorkflowLimits(max_submission_bytes=100)}),
        settings=SETTINGS,
    )
    plan = plan_intake(
        RUN_ID,
        inbox_event(101),
        PATH,
        org=ORG,
        workflow=None,
        submission=None,
        problem=problem,
        callback_id=FIRST_CALLBACK,
        settings=SETTINGS,
        now=NOW,
    )

    [write] = plan.writes
    assert write.mode == "create"
    assert write.doc.status == RunStatus.FAILED
    assert write.doc.error_category == ErrorCategory.VALIDATION_FAILED
    assert write.doc.error == "the file is 101 bytes; the limit is 100 bytes (VALIDIBOT_MAX_SUBMISSION_BYTES)"
    assert write.doc.duration_ms == 0
    assert [e.type for e in plan.effects.events] == [LifecycleType.RUN_CREATED, LifecycleType.RUN_COMPLETED]
    assert plan.effects.objects == []


def test_misconfigured_workflow_is_a_system_error() -> None:
    bad = workflow("one").model_copy(update={"steps": [StepSpec(key="x", name="X", validator="nope")]})
    problem = intake_problem(PATH, inbox_event(), org=ORG, workflow=bad, settings=SETTINGS)
    assert problem.category == ErrorCategory.SYSTEM_ERROR
    assert "unknown validator 'nope'" in problem.message

    broken_schema = StepSpec(key="x", name="X", validator="json-schema", config={"schema": {"type": 12}})
    problem = intake_problem(
        PATH,
        inbox_event(),
        org=ORG,
        workflow=workflow("one").model_copy(update={"steps": [broken_schema]}),
        settings=SETTINGS,
    )
    assert problem.category == ErrorCategory.SYSTEM_ERROR
    assert "not a valid JSON Schema" in problem.message


def test_acceptable_submission_has_no_problem() -> None:
    assert intake_problem(PATH, inbox_event(), org=ORG, workflow=workflow("one"), settings=SETTINGS) is None


# -- LAUNCH ------------------------------------------------------------------------------------------------


def test_launch_claims_a_scheduled_attempt_once() -> None:
    plan = intake(workflow("one"))
    run, attempt = written(plan, run_path(RUN_ID)).doc, written(plan, attempt_path(RUN_ID, "01-1")).doc

    claim = launch(run, attempt)

    claimed = written(claim, attempt_path(RUN_ID, "01-1"))
    assert claimed.mode == "replace"
    assert claimed.read_at == NOW  # the precondition that makes a concurrent second claim fail
    assert claimed.doc.state == AttemptState.DISPATCHING
    assert claimed.doc.input_generation == 11
    assert claimed.doc.timeout_at == NOW + timedelta(seconds=SETTINGS.step_timeout_seconds)
    assert written(claim, run_path(RUN_ID)).doc.status == RunStatus.RUNNING
    assert written(claim, step_path(RUN_ID, 1)).doc.status == StepStatus.RUNNING
    assert [e.type for e in claim.effects.events] == [LifecycleType.STEP_STARTED]
    assert claim.claimed == claimed.doc
    assert launch(run, claimed.doc) is None


def test_a_dispatching_claim_is_taken_over_only_after_its_lease() -> None:
    run, attempt = launched(workflow("one"))
    within = NOW + timedelta(seconds=59)
    after = NOW + timedelta(seconds=60)
    assert launch(run, attempt, now=within) is None
    assert launch(run, attempt, now=after) is not None
    with_job = attempt.model_copy(update={"execution_name": "executions/e1"})
    assert launch(run, with_job, now=after) is None


def test_bad_input_json_fails_the_run_and_skips_what_is_left() -> None:
    plan = intake(workflow("one", "two", fail_policy="continue"))
    run, attempt = written(plan, run_path(RUN_ID)).doc, written(plan, attempt_path(RUN_ID, "01-1")).doc

    failed = launch(run, attempt, problem="tampered")

    new_run = written(failed, run_path(RUN_ID)).doc
    assert new_run.status == RunStatus.FAILED
    assert new_run.error_category == ErrorCategory.SYSTEM_ERROR
    assert new_run.error == "step 1 'One': tampered"
    assert written(failed, attempt_path(RUN_ID, "01-1")).doc.state == AttemptState.FAILED
    assert written(failed, step_path(RUN_ID, 2)).doc.status == StepStatus.SKIPPED
    assert [e.type for e in failed.effects.events] == [LifecycleType.STEP_COMPLETED, LifecycleType.RUN_COMPLETED]


def test_launch_of_a_finished_run_does_nothing() -> None:
    plan = intake(workflow("one"))
    run, attempt = written(plan, run_path(RUN_ID)).doc, written(plan, attempt_path(RUN_ID, "01-1")).doc
    canceled = run.model_copy(update={"status": RunStatus.CANCELED})
    assert launch(canceled, attempt) is None


# -- INGEST ------------------------------------------------------------------------------------------------


def test_applied_output_caps_stored_findings_but_counts_them_all() -> None:
    run, attempt = launched(workflow("one"))

    plan = ingest(run, attempt, output_for(attempt, "failed_validation", errors(5)))

    assert written(plan, receipt_path(attempt.callback_id)).doc.status == ReceiptStatus.PROCESSING
    assert written(plan, receipt_path(attempt.callback_id)).mode == "create"
    findings = [w for w in plan.writes if w.path[2:3] == ("findings",)]
    assert [w.path[-1] for w in findings] == ["01-1-0000", "01-1-0001", "01-1-0002"]
    step: StepDoc = written(plan, step_path(RUN_ID, 1)).doc
    assert step.counts.ERROR == 5
    assert step.findings_stored == 3
    new_run = written(plan, run_path(RUN_ID)).doc
    assert new_run.status == RunStatus.FAILED
    assert new_run.error_category == ErrorCategory.VALIDATION_FAILED
    assert new_run.error == "step 1 'One' failed validation with 5 errors"
    assert new_run.duration_ms == 0
    assert [e.type for e in plan.effects.events] == [LifecycleType.STEP_COMPLETED, LifecycleType.RUN_COMPLETED]
    assert plan.pending_receipt.callback_id == attempt.callback_id


def test_passing_step_schedules_the_next_with_a_fresh_callback_id() -> None:
    run, attempt = launched(workflow("one", "two"))

    plan = ingest(run, attempt, output_for(attempt))

    next_attempt = written(plan, attempt_path(RUN_ID, "02-1"))
    assert next_attempt.mode == "create"
    assert next_attempt.doc.callback_id == NEXT_CALLBACK
    assert next_attempt.doc.step_key == "two"
    [input_json] = plan.effects.objects
    assert sha256_hex(input_json.data) == next_attempt.doc.input_sha256
    new_run = written(plan, run_path(RUN_ID)).doc
    assert (new_run.status, new_run.current_step, new_run.ended_at) == (RunStatus.RUNNING, 2, None)
    assert [e.type for e in plan.effects.events] == [LifecycleType.STEP_COMPLETED]


def test_continue_policy_runs_every_step_and_fails_at_the_end() -> None:
    run, attempt = launched(workflow("one", "two", fail_policy="continue"))

    first = ingest(run, attempt, output_for(attempt, "failed_validation", errors(1)))
    run_after = written(first, run_path(RUN_ID)).doc
    assert run_after.status == RunStatus.RUNNING
    assert run_after.error == "step 1 'One' failed validation with 1 error"

    second_attempt = written(first, attempt_path(RUN_ID, "02-1")).doc.model_copy(
        update={"state": AttemptState.DISPATCHING}
    )
    last = ingest(run_after, second_attempt, output_for(second_attempt))
    final = written(last, run_path(RUN_ID)).doc
    assert final.status == RunStatus.FAILED
    assert final.error_category == ErrorCategory.VALIDATION_FAILED
    assert final.counts.ERROR == 1


def test_stop_policy_skips_the_remaining_steps() -> None:
    run, attempt = launched(workflow("one", "two", "three"))
    plan = ingest(
        run, attempt, output_for(attempt, "failed_runtime", [Message(severity="ERROR", code="runtime", text="boom")])
    )

    assert written(plan, run_path(RUN_ID)).doc.error == "step 1 'One' could not run: boom"
    assert written(plan, run_path(RUN_ID)).doc.error_category == ErrorCategory.RUNTIME_ERROR
    assert written(plan, attempt_path(RUN_ID, "01-1")).doc.state == AttemptState.FAILED
    assert [written(plan, step_path(RUN_ID, n)).doc.status for n in (2, 3)] == [StepStatus.SKIPPED] * 2
    assert plan.effects.objects == []


def test_cancelled_output_cancels_the_run_whatever_the_policy() -> None:
    run, attempt = launched(workflow("one", "two", fail_policy="continue"))
    plan = ingest(run, attempt, output_for(attempt, "cancelled"))
    assert written(plan, run_path(RUN_ID)).doc.status == RunStatus.CANCELED


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"callback_id": "guess"}, "callback_id does not match the attempt"),
        ({"input_envelope_sha256": "0" * 64}, "input_envelope_sha256 does not match the input.json that was launched"),
        ({"run_id": "f" * 24}, "run_id or attempt_id does not match the output's path"),
        ({"step_key": "other"}, "step does not match the attempt"),
    ],
)
def test_mismatched_output_is_rejected_under_its_own_object_id(change: dict, reason: str) -> None:
    run, attempt = launched(workflow("one"))
    event = output_event(attempt)

    plan = ingest(run, attempt, output_for(attempt).model_copy(update=change), event)

    [write] = plan.writes
    assert write.path == receipt_path(rejected_receipt_id(event))
    assert write.doc.status == ReceiptStatus.REJECTED
    assert write.doc.reason == reason
    assert plan.effects.events == []
    assert plan.pending_receipt is None
    assert plan.rejection == write.doc


def test_output_for_an_attempt_no_longer_current_is_recorded_as_late() -> None:
    run, attempt = launched(workflow("one"))
    timed_out = run.model_copy(update={"status": RunStatus.TIMED_OUT})

    plan = ingest(timed_out, attempt, output_for(attempt))

    [write] = plan.writes
    assert write.path == receipt_path(attempt.callback_id)
    assert write.doc.status == ReceiptStatus.REJECTED
    assert write.doc.reason.startswith("late: ")
    assert plan.pending_receipt is None
    assert plan.rejection == write.doc


def test_a_failed_launch_releases_only_its_own_claim() -> None:
    _, claimed = launched(workflow("one"))

    release = plan_release(RUN_ID, "01-1", current=versioned(claimed), claimed=claimed)
    [write] = release.writes
    assert (write.mode, write.read_at) == ("replace", NOW)
    assert write.doc.state == AttemptState.SCHEDULED
    assert write.doc.dispatched_at is None
    assert write.doc.callback_id == claimed.callback_id

    reclaimed = claimed.model_copy(update={"dispatched_at": NOW + timedelta(minutes=20)})
    assert plan_release(RUN_ID, "01-1", current=versioned(reclaimed), claimed=claimed) is None
    completed = claimed.model_copy(update={"state": AttemptState.COMPLETED})
    assert plan_release(RUN_ID, "01-1", current=versioned(completed), claimed=claimed) is None


def test_a_timed_out_output_ends_the_attempt_and_the_run_timed_out() -> None:
    run, attempt = launched(workflow("one", "two", fail_policy="continue"))
    timeout = Message(severity="ERROR", code=TIMEOUT_CODE, text="the validation job ran past its 600 s timeout")

    plan = ingest(run, attempt, output_for(attempt, "failed_runtime", [timeout]))

    step_two = written(plan, attempt_path(RUN_ID, "02-1")).doc
    assert step_two.state == AttemptState.SCHEDULED  # continue policy: a timeout does not stop the workflow
    assert written(plan, attempt_path(RUN_ID, "01-1")).doc.state == AttemptState.TIMED_OUT
    new_run = written(plan, run_path(RUN_ID)).doc
    assert new_run.error_category == ErrorCategory.TIMEOUT
    assert new_run.error == "step 1 'One' timed out: the validation job ran past its 600 s timeout"

    last = ingest(new_run, step_two, output_for(step_two))
    assert written(last, run_path(RUN_ID)).doc.status == RunStatus.TIMED_OUT


def test_a_job_launch_uses_the_configured_job_launcher_and_is_recorded() -> None:
    step = StepSpec(key="sim", name="Sim", validator="fmu", config={"stop_time": 1, "step_size": 1,
                                                                       "output_variables": ["x"]})  # fmt: skip
    wf = WorkflowDoc(org="demo", slug="wf", name="WF", steps=[step])
    cloud = SETTINGS.model_copy(update={"job_launcher": "cloudrun"})
    plan = intake_with(wf, cloud)
    run, attempt = written(plan, run_path(RUN_ID)).doc, written(plan, attempt_path(RUN_ID, "01-1")).doc
    assert attempt.launcher == "cloudrun"
    claimed = written(launch(run, attempt, settings=cloud), attempt_path(RUN_ID, "01-1")).doc

    recorded = plan_dispatched(
        RUN_ID,
        "01-1",
        current=versioned(claimed),
        claimed=claimed,
        execution_name="projects/p/executions/e1",
        job_status=JobStatus.PENDING,
    )

    [write] = recorded.writes
    assert (write.doc.state, write.doc.execution_name, write.doc.job_status) == (
        AttemptState.RUNNING, "projects/p/executions/e1", JobStatus.PENDING
    )  # fmt: skip
    done = claimed.model_copy(update={"state": AttemptState.COMPLETED})
    assert (
        plan_dispatched(RUN_ID, "01-1", current=versioned(done), claimed=claimed, execution_name="e1", job_status=None)
        is None
    )


def test_a_refused_launch_fails_the_step_as_a_system_error() -> None:
    run, claimed = launched(workflow("one", "two"))

    plan = plan_launch_refused(
        RUN_ID,
        "01-1",
        run=versioned(run),
        current=versioned(claimed),
        claimed=claimed,
        reason="job not deployed",
        now=NOW,
    )

    new_run = written(plan, run_path(RUN_ID)).doc
    assert (new_run.status, new_run.error_category) == (RunStatus.FAILED, ErrorCategory.SYSTEM_ERROR)
    assert new_run.error == "step 1 'One': job not deployed"
    assert written(plan, attempt_path(RUN_ID, "01-1")).doc.state == AttemptState.FAILED
    assert written(plan, step_path(RUN_ID, 2)).doc.status == StepStatus.SKIPPED
    moved_on = claimed.model_copy(update={"state": AttemptState.COMPLETED})
    refused_again = plan_launch_refused(
        RUN_ID, "01-1", run=versioned(run), current=versioned(moved_on), claimed=claimed, reason="x", now=NOW
    )
    assert refused_again is None
