"""fail_policy on the real emulators: a three-step workflow whose middle step fails, with `continue` and `stop`;
later steps' assertions read earlier steps' results through `steps.<key>`."""

from __future__ import annotations

import pytest

from schemas.enums import RunStatus, StepStatus
from schemas.envelopes import AssertionSpec
from tests.support import Harness, json_step

pytestmark = pytest.mark.integration

DOCUMENT = b'{"name": "office", "floors": 3}'


def three_steps(harness: Harness, fail_policy: str) -> str:
    last = json_step("three", {"type": "object", "required": ["floors"]}).model_copy(
        update={
            "assertions": [
                # The first step found nothing wrong; the second found one violation: both visible here. Metrics
                # are CEL doubles, and CEL compares a double with a double (0.0), not with an int, for equality.
                AssertionSpec(id="first-clean", expr="steps.one.schema_violations == 0.0"),
                AssertionSpec(
                    id="second-failed",
                    expr="steps.two.schema_violations == 0.0",
                    message="step two found {{ steps.two.schema_violations }} violation(s)",
                ),
            ]
        }
    )
    return harness.add_workflow(
        [
            json_step("one", {"type": "object", "required": ["name"]}),
            json_step("two", {"type": "object", "required": ["address"]}),
            last,
        ],
        fail_policy=fail_policy,
    )


def test_continue_runs_every_step_and_fails_the_run_with_all_counts(harness: Harness) -> None:
    run_id, run = harness.run_through(DOCUMENT, three_steps(harness, "continue"))

    assert run.status == RunStatus.FAILED
    steps = harness.reads.steps(run_id)
    assert [step.status for step in steps] == [StepStatus.PASSED, StepStatus.FAILED, StepStatus.FAILED]
    assert [step.counts.ERROR for step in steps] == [0, 1, 1]
    assert run.counts.ERROR == 2
    findings = harness.reads.findings(run_id, limit=10)
    assert [(f.step, f.code, f.message) for f in findings if f.step == 3] == [
        (3, "second-failed", "step two found 1 violation(s)")
    ]


def test_stop_skips_the_steps_after_the_failing_one(harness: Harness) -> None:
    run_id, run = harness.run_through(DOCUMENT, three_steps(harness, "stop"))

    assert run.status == RunStatus.FAILED
    statuses = [step.status for step in harness.reads.steps(run_id)]
    assert statuses == [StepStatus.PASSED, StepStatus.FAILED, StepStatus.SKIPPED]
    assert run.counts.ERROR == 1
