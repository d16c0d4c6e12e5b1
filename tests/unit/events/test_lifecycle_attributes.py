from __future__ import annotations

from datetime import UTC, datetime

from events.publish import message_attributes
from schemas.documents import Counts
from schemas.enums import LifecycleType
from schemas.lifecycle import LifecycleData, LifecycleEvent, StepRef


def event(step: StepRef | None = None) -> LifecycleEvent:
    return LifecycleEvent(
        type=LifecycleType.STEP_COMPLETED if step else LifecycleType.RUN_CREATED,
        time=datetime(2026, 11, 22, 12, 0, 1, 500000, tzinfo=UTC),
        data=LifecycleData(run_id="r1", org="demo", workflow="wf", status="RUNNING", step=step, counts=Counts()),
    )


def test_binary_binding_attributes() -> None:
    assert message_attributes(event()) == {
        "ce-specversion": "1.0",
        "ce-id": "r1:org.validibot.run.v1.created",
        "ce-source": "//validibot.org/pipeline",
        "ce-type": "org.validibot.run.v1.created",
        "ce-subject": "runs/r1",
        "ce-time": "2026-11-22T12:00:01.500000Z",
        "content-type": "application/json",
        "ce-org": "demo",
        "ce-workflow": "wf",
        "ce-runstatus": "RUNNING",
    }


def test_step_events_have_one_id_per_step() -> None:
    first = event(StepRef(number=1, key="a", status="PASSED"))
    second = event(StepRef(number=2, key="b", status="PASSED"))
    assert first.id == "r1:org.validibot.step.v1.completed:01"
    assert second.id != first.id
