"""INTAKE: an upload under inbox/ becomes a run (or a refused run saying why), its submission copied and pinned."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from functions.common import Problem
from functions.intake.transitions import (
    intake_problem,
    intake_replay,
    plan_intake,
    rerun_link,
    submission_limit,
)
from functions.stage import Handled, Known, Outcome, StageContext
from schemas.documents import RunDoc, Submission
from schemas.enums import ErrorCategory, RunStatus
from schemas.objects import ObjectFinalized
from schemas.paths import (
    RERUN_OF_METADATA_KEY,
    InboxPath,
    attempt_id_for,
    gs_uri,
    is_run_id,
    is_slug,
    run_id_for,
    submission_object,
)
from store.ports import Conflict, ObjectConflict, ObjectMissing, ObjectTooLarge


@dataclass(frozen=True)
class IntakeStage:
    context: StageContext

    def handle(self, event: ObjectFinalized, path: InboxPath, known: Known | None = None) -> Handled:
        ctx = self.context
        run_id = run_id_for(event.bucket, event.name, event.generation)
        org_id = path.org if is_slug(path.org) else None
        found = ctx.store.submission_docs(run_id, org_id, path.workflow if is_slug(path.workflow) else None)
        if found.run is not None:
            return self.replay(run_id, found.run.doc)
        org = found.org
        workflow = found.workflow if org is not None else None
        problem = intake_problem(path, event, org=org, workflow=workflow, settings=ctx.settings)
        submission = None
        if problem is None and workflow is not None:
            limit = submission_limit(workflow, ctx.settings)
            submission, problem = self._store_submission(run_id, event, path, limit=limit)
        plan = plan_intake(
            run_id,
            event,
            path,
            org=org,
            workflow=workflow,
            submission=submission,
            problem=problem,
            callback_id=ctx.new_callback_id(),
            settings=ctx.settings,
            now=ctx.clock(),
            rerun_of=self._rerun_of(event, path, submission),
        )
        try:
            committed = ctx.store.commit(plan.writes)
        except Conflict:
            existing = ctx.store.run(run_id)
            assert existing is not None, "a run create can only conflict with an existing run"
            return self.replay(run_id, existing.doc)
        chained = ctx.perform(plan.effects, committed)
        return Handled(Outcome.REFUSED if problem else Outcome.CREATED, follow_up=chained)

    def _rerun_of(self, event: ObjectFinalized, path: InboxPath, submission: Submission | None) -> str | None:
        claimed = event.metadata.get(RERUN_OF_METADATA_KEY)
        if claimed is None or submission is None or not is_run_id(claimed):
            return None
        original = self.context.store.run(claimed)
        return rerun_link(event, path, submission, original.doc if original else None)

    def replay(self, run_id: str, run: RunDoc) -> Handled:
        # Once LAUNCH has claimed the first attempt, intake's effects are known to be done.
        if run.status != RunStatus.PENDING and run.workflow is not None:
            return Handled(Outcome.DUPLICATE)
        first = self.context.store.attempt(run_id, attempt_id_for(1, 1))
        chained = self.context.perform(intake_replay(run_id, run, first.doc if first else None))
        return Handled(Outcome.EFFECTS_REPLAYED, follow_up=chained)

    def _store_submission(
        self, run_id: str, event: ObjectFinalized, path: InboxPath, *, limit: int
    ) -> tuple[Submission | None, Problem | None]:
        """Copy the uploaded version into the run's folder, hashing it on the way."""
        objects = self.context.objects
        # Out of the inbox, which its uploader could still touch, into the bucket only the pipeline writes.
        uri = gs_uri(self.context.settings.bucket, submission_object(path.org, run_id, path.filename))
        with tempfile.TemporaryDirectory(prefix="validibot-intake-") as scratch:
            local = Path(scratch) / "submission"
            try:
                size, sha256 = objects.download_hashed(
                    gs_uri(event.bucket, event.name), event.generation, local, max_bytes=limit
                )
            except ObjectTooLarge:
                return None, Problem(
                    ErrorCategory.VALIDATION_FAILED,
                    f"the file is larger than the limit of {limit} bytes (VALIDIBOT_MAX_SUBMISSION_BYTES)",
                )
            except ObjectMissing:
                return None, Problem(
                    ErrorCategory.VALIDATION_FAILED, "the uploaded file was replaced or deleted before it was read"
                )
            try:
                stored = objects.write_new_file(uri, local, event.content_type, sha256)
            except ObjectConflict:
                found = objects.stat(uri)
                if found is None or found.sha256 != sha256:
                    return None, Problem(ErrorCategory.SYSTEM_ERROR, f"{uri} exists with other contents")
                stored = found
        return (
            Submission(
                name=path.filename,
                uri=uri,
                generation=stored.generation,
                size_bytes=size,
                sha256=sha256,
                content_type=event.content_type,
            ),
            None,
        )
