"""The route table from object kind to stage, and the dispatcher every finalize event goes through.

Adding a stage is one module under functions/ (its handler, its transitions below it) and one row in ROUTES.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from functions.ingest.handler import IngestStage
from functions.intake.handler import IntakeStage
from functions.launch.handler import LaunchStage
from functions.maintain.handler import MaintainStage, TickReport
from functions.stage import Chained, Handled, Known, Outcome, Stage, StageContext
from schemas.log_labels import log_labels
from schemas.objects import ObjectFinalized
from schemas.paths import ObjectKind, StepObjectPath, parse_object_name, run_id_for

log = logging.getLogger("validibot.pipeline")

ROUTES: Mapping[ObjectKind, Callable[[StageContext], Stage[Any]]] = {
    "submission": IntakeStage,  # inbox/{org}/{workflow}/{filename}
    "input": LaunchStage,  # runs/.../{attempt_id}/input.json
    "output": IngestStage,  # runs/.../{attempt_id}/output.json
}


@dataclass(frozen=True)
class Pipeline:
    context: StageContext
    stages: Mapping[ObjectKind, Stage[Any]]

    @classmethod
    def wired(cls, context: StageContext) -> Pipeline:
        return cls(context, {kind: make(context) for kind, make in ROUTES.items()})

    def handle(self, event: ObjectFinalized, known: Known | None = None) -> Handled:
        """Route a finalized object by its bucket and path to its stage; returns what was done, for logs and tests.
        `known` is what the chain knows of an object this call wrote (never given for a delivered event).

        Submissions count only in the inbox bucket and step objects only in the pipeline bucket, so nobody who can
        write the inbox can start or answer a step.
        """
        settings = self.context.settings
        path = parse_object_name(event.name)
        expected_bucket = settings.inbox_bucket if path is not None and path.kind == "submission" else settings.bucket
        if event.bucket == settings.inbox_bucket and (path is None or event.bucket != expected_bucket):
            # A user put it there: say so where operators and the uploader's admins can find it, not in debug.
            log.warning(
                "refused gs://%s/%s: uploads go to inbox/{org}/{workflow}/{file} in this bucket",
                event.bucket,
                event.name,
            )
            return Handled(Outcome.IGNORED, "not an inbox/{org}/{workflow}/{file} upload")
        if path is None or event.bucket != expected_bucket:
            log.debug("ignored gs://%s/%s: not a pipeline object", event.bucket, event.name)
            return Handled(Outcome.IGNORED)
        run_id = (
            path.run_id if isinstance(path, StepObjectPath) else run_id_for(event.bucket, event.name, event.generation)
        )
        with log_labels(run_id=run_id, org=path.org):
            started = time.perf_counter()
            try:
                handled = self.stages[path.kind].handle(event, path, known)
            except Exception:
                # Logged here, with the run's labels; raised on, so the event is redelivered.
                log.exception("%s (generation %s) failed; it will be redelivered", event.name, event.generation)
                raise
            elapsed_ms = (time.perf_counter() - started) * 1000
            log.info("%s (generation %s): %s in %.0f ms", event.name, event.generation, handled, elapsed_ms)
            return self._follow(handled)

    def tick(self) -> TickReport:
        """One maintenance tick (DESIGN §13): every sweep once, bounded; returns what each changed."""
        return self._maintain.tick()

    @cached_property
    def _maintain(self) -> MaintainStage:
        intake, ingest = self.stages["submission"], self.stages["output"]
        assert isinstance(intake, IntakeStage)
        assert isinstance(ingest, IngestStage)
        return MaintainStage(
            self.context,
            redeliver=self.handle,
            replay_intake=lambda run_id, run: self._follow(intake.replay(run_id, run)),
            replay_receipt=lambda callback_id, receipt: self._follow(ingest.replay(callback_id, receipt)),
        )

    def _follow(self, handled: Handled) -> Handled:
        if self.context.settings.inline_chain:
            for follow_up in handled.follow_up:
                self._chain(follow_up)
        return handled

    def _chain(self, chained: Chained) -> None:
        """Handle an object this call just wrote as its finalize event will be handled (DESIGN §16). Its own event
        still arrives later and finds the work done; so a fault here is left to that event, not raised."""
        try:
            self.handle(chained.event, chained.known)
        except Exception:
            log.warning("chained %s failed; its own finalize event will redo it", chained.event.name, exc_info=True)
