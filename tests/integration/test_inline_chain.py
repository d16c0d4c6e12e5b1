"""The inline chain on the emulators (DESIGN §16): a crash at any point of a chained run, injected into the real
adapters, is repaired by the platform's redeliveries, in order or shuffled; and a workflow mixing inline and job
steps chains where it can while its job runs as before."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from functions.pipeline import Pipeline
from jobs.launchers.inline import InlineLauncher
from schemas.changes import Write
from schemas.documents import AttemptDoc, ReceiptDoc, StepSpec
from schemas.enums import AttemptState, LifecycleType, ReceiptStatus, RunStatus
from schemas.lifecycle import LifecycleEvent
from schemas.objects import ObjectFinalized
from schemas.paths import attempt_id_for
from tests.support import APPLIED, CREATED, INVALID, INVALID_MESSAGES, LAUNCHED, VALID, Harness, json_step

pytestmark = pytest.mark.integration


class Crash(Exception):
    """The process dies here: raised from inside an adapter call."""


class Faulty:
    """A real adapter that crashes once, on the first call `strikes` matches: before the call, or just after it
    completed (the work is done, the caller never learns it)."""

    def __init__(self, target: Any, strikes: Callable[[str, tuple], bool], after: bool) -> None:
        self._target, self._strikes, self._after = target, strikes, after
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            strike = not self.fired and self._strikes(name, args)
            if strike and not self._after:
                self.fired = True
                raise Crash(f"crash before {name}")
            result = method(*args, **kwargs)
            if strike:
                self.fired = True
                raise Crash(f"crash after {name}")
            return result

        return call


def _writes(args: tuple) -> list[Write]:
    return list(args[0]) if args else []


def _claims(name: str, args: tuple) -> bool:
    return name == "commit" and any(
        isinstance(w.doc, AttemptDoc) and w.doc.state == AttemptState.DISPATCHING for w in _writes(args)
    )


def _applies(name: str, args: tuple) -> bool:
    return name == "commit" and any(
        isinstance(w.doc, ReceiptDoc) and w.doc.status == ReceiptStatus.PROCESSING for w in _writes(args)
    )


def _publishes(kind: LifecycleType) -> Callable[[str, tuple], bool]:
    def strikes(name: str, args: tuple) -> bool:
        events: list[LifecycleEvent] = list(args[0]) if args else []
        return name == "publish" and any(e.type == kind for e in events)

    return strikes


def _writes_output(name: str, args: tuple) -> bool:
    return name == "write_new" and str(args[0]).endswith("/output.json")


# (adapter, which call, crash after it rather than before, whether the upload's own handling raises). Only the
# first crash point is outside the chain; a crash inside it is logged and left to that object's own event.
CRASH_POINTS = {
    "after-the-intake-commit": ("publisher", _publishes(LifecycleType.RUN_CREATED), False, True),
    "after-the-claim": ("store", _claims, True, False),
    "after-output-json-is-written": ("objects", _writes_output, True, False),
    "after-the-ingest-commit": ("store", _applies, True, False),
    "before-the-run-completed-event": ("publisher", _publishes(LifecycleType.RUN_COMPLETED), False, False),
}


def chained(harness: Harness, *, later_by: float = 0, **faulty: Faulty) -> Pipeline:
    """The harness's pipeline with the chain on, some adapters made faulty, and its clock `later_by` seconds on."""
    settings = harness.settings.model_copy(update={"inline_chain": True})
    context = harness.pipeline.context
    objects = faulty.get("objects", context.objects)
    launchers = {**context.launchers, "inline": InlineLauncher(objects, settings)}
    return harness.rewired(
        settings=settings,
        store=faulty.get("store", context.store),
        objects=objects,
        publisher=faulty.get("publisher", context.publisher),
        launchers=launchers,
        clock=lambda: context.clock() + timedelta(seconds=later_by),
    )


def runs_from(harness: Harness, event: ObjectFinalized) -> int:
    runs = harness.services.firestore_client.collection("runs")
    source = f"gs://{event.bucket}/{event.name}#{event.generation}"
    return len(list(runs.where(filter=firestore.FieldFilter("source", "==", source)).stream()))


@pytest.mark.parametrize("order", ["in-order", "shuffled"])
@pytest.mark.parametrize(("adapter", "strikes", "after", "raises"), CRASH_POINTS.values(), ids=CRASH_POINTS.keys())
def test_a_crash_anywhere_in_a_chained_run_is_repaired_by_redelivery(
    harness: Harness, adapter: str, strikes: Callable[[str, tuple], bool], after: bool, raises: bool, order: str
) -> None:
    real = {"store": harness.store, "objects": harness.objects_port, "publisher": harness.pipeline.context.publisher}
    fault = Faulty(real[adapter], strikes, after)
    upload, run_id = harness.submit(INVALID)

    try:
        chained(harness, **{adapter: fault}).handle(upload)
    except Crash:
        assert raises, "a crash inside the chain is left to the object's own event, not raised"
    assert fault.fired

    # The platform redelivers what was not acknowledged and delivers what was written, in any order. A claim that
    # died with its process is taken over once its lease has run out (DESIGN §6), so the redeliveries come later.
    healthy = chained(harness, later_by=harness.settings.dispatch_lease_seconds + 1)
    for _ in range(2):
        deliveries = [upload, *_written_events(harness, run_id)]
        if order == "shuffled":
            random.Random(adapter + str(after)).shuffle(deliveries)
        for event in deliveries:
            healthy.handle(event)

    run = harness.store.run(run_id).doc
    assert (run.status, run.counts.ERROR) == (RunStatus.FAILED, 4)
    assert runs_from(harness, upload) == 1
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1)).doc
    assert attempt.state == AttemptState.COMPLETED
    assert harness.store.receipt(attempt.callback_id).status == ReceiptStatus.COMPLETED
    assert [f.message for f in harness.reads.findings(run_id, limit=100)] == INVALID_MESSAGES


def _written_events(harness: Harness, run_id: str) -> list[ObjectFinalized]:
    attempt = harness.store.attempt(run_id, attempt_id_for(1, 1))
    if attempt is None:
        return []
    events = []
    for uri in (attempt.doc.input_uri, attempt.doc.expected_output_uri):
        name = uri.split("/", 3)[3]
        if harness.bucket.get_blob(name) is not None:
            events.append(harness.event_for(uri))
    return events


def test_a_mixed_workflow_chains_its_inline_steps_around_a_real_job(harness: Harness) -> None:
    fmu = StepSpec(
        key="simulate",
        name="Simulate",
        validator="fmu",
        config={"stop_time": 600, "step_size": 60, "output_variables": ["room_temperature"]},
    )
    # A JSON document: the inline steps pass it, the FMU job refuses it (not an FMU) and the run goes on.
    slug = harness.add_workflow(
        [json_step("before", {"type": "object"}), fmu, json_step("after", {"type": "object"})], fail_policy="continue"
    )
    pipeline = chained(harness)
    event, run_id = harness.submit(VALID, slug)

    assert pipeline.handle(event) == CREATED

    assert harness.store.attempt(run_id, attempt_id_for(1, 1)).doc.state == AttemptState.COMPLETED
    job = harness.store.attempt(run_id, attempt_id_for(2, 1)).doc
    assert (job.state, job.launcher) == (AttemptState.SCHEDULED, "local")
    assert pipeline.handle(harness.input_event(run_id, 2)) == LAUNCHED
    assert harness.store.attempt(run_id, attempt_id_for(2, 1)).doc.execution_name.startswith("local/")
    assert pipeline.handle(harness.wait_for_signed_output(run_id, step=2)) == APPLIED

    # Step 3 ran in the call that ingested the job's output, and the run ended there.
    assert harness.store.attempt(run_id, attempt_id_for(3, 1)).doc.state == AttemptState.COMPLETED
    run = harness.store.run(run_id).doc
    assert run.status == RunStatus.FAILED
    assert [s.status for s in harness.reads.steps(run_id)] == ["PASSED", "FAILED", "PASSED"]
