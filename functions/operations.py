"""What people and programs ask of runs: submit a file, cancel a run, re-run it (DESIGN §13, §14). The CLI, the
REST API and the web call these. A submission and a re-run are uploads to the inbox, exactly as any client's, so
INTAKE makes their runs; a cancel is a commit on the update times it read, so it races safely with INGEST and the
tick."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import BinaryIO

from functions.common import Plan, end_attempt
from functions.intake.transitions import submission_limit
from functions.stage import StageContext
from jobs.launchers.base import ExecutionControl
from schemas.documents import AttemptDoc, RunDoc
from schemas.enums import AttemptState, RunStatus
from schemas.paths import (
    IDEMPOTENCY_METADATA_KEY,
    RERUN_OF_METADATA_KEY,
    UnsafeName,
    check_filename,
    gs_uri,
    inbox_object,
    is_run_id,
    is_slug,
    run_id_for,
)

log = logging.getLogger("validibot.operations")

CANCEL_REASON = "canceled on request"


class RunNotFound(LookupError):
    pass


class NotCancelable(ValueError):
    """The run has ended already (its verdict stands)."""


class SubmissionRefused(ValueError):
    """The file cannot be a submission (its name, its size, an unknown workflow): nothing was uploaded."""


class SubmissionTooLarge(SubmissionRefused):
    pass


class UnknownWorkflow(SubmissionRefused):
    """The org has no such workflow (or the ids are not ids): the API's 404."""


class NotRerunnable(ValueError):
    """The run has no stored submission to run again (it was refused at intake, or retention deleted it)."""


@dataclass(frozen=True)
class Operations:
    context: StageContext

    def submit(
        self,
        org: str,
        workflow: str,
        filename: str,
        source: BinaryIO,
        content_type: str,
        idempotency_record: str | None = None,
    ) -> str:
        """Upload `source` to inbox/{org}/{workflow}/{filename}; returns the id of the run INTAKE makes of it. The
        upload carries the Idempotency-Key record it was made for, so a retry can find it (`submitted_run`)."""
        settings = self.context.settings
        try:
            check_filename(filename, settings.max_filename_bytes)
        except UnsafeName as exc:
            raise SubmissionRefused(str(exc)) from exc
        found = self.context.store.workflow(org, workflow) if is_slug(org) and is_slug(workflow) else None
        if found is None:
            raise UnknownWorkflow(f"org {org} has no workflow {workflow!r}")
        limit = submission_limit(found, settings)
        size = source.seek(0, os.SEEK_END)
        source.seek(0)
        if size > limit:
            raise SubmissionTooLarge(f"the file is {size} bytes; workflow {workflow} takes at most {limit} bytes")
        name = inbox_object(org, workflow, filename)
        tag = {IDEMPOTENCY_METADATA_KEY: idempotency_record} if idempotency_record else None
        stored = self.context.objects.upload_stream(gs_uri(settings.inbox_bucket, name), source, content_type, tag)
        return run_id_for(settings.inbox_bucket, name, stored.generation)

    def submitted_run(self, org: str, workflow: str, filename: str, idempotency_record: str) -> str | None:
        """The run of an upload made for this Idempotency-Key record, if it is still the inbox's live version:
        what a retry of a request that died after its upload landed must answer instead of uploading again."""
        settings = self.context.settings
        name = inbox_object(org, workflow, filename)
        found = self.context.objects.stat(gs_uri(settings.inbox_bucket, name))
        if found is None or found.idempotency_record != idempotency_record:
            return None
        return run_id_for(settings.inbox_bucket, name, found.generation)

    def _run(self, run_id: str) -> RunDoc:
        found = self.context.store.run(run_id) if is_run_id(run_id) else None
        if found is None:
            raise RunNotFound(f"no run {run_id}")
        return found.doc

    def cancel(self, run_id: str) -> RunDoc:
        """End the run CANCELED: its running step CANCELED, the rest SKIPPED, its job stopped; a job's output that
        still comes is recorded as late and not applied. Returns the canceled run."""
        ctx = self.context
        canceled: dict[str, AttemptDoc] = {}

        def decide() -> Plan | None:
            run = ctx.store.run(run_id)
            if run is None:
                raise RunNotFound(f"no run {run_id}")
            if RunStatus(run.doc.status).is_terminal:
                raise NotCancelable(f"run {run_id} has ended already: {run.doc.status}")
            step = ctx.store.step(run_id, run.doc.current_step or 1)
            attempt = ctx.store.attempt(run_id, step.attempt_id) if step and step.attempt_id else None
            if step is None or step.attempt_id is None or attempt is None:
                raise RunNotFound(f"run {run_id} has no attempt to cancel")
            canceled["attempt"] = attempt.doc
            return end_attempt(
                run_id,
                step.attempt_id,
                run=run,
                attempt=attempt,
                problem=None,
                state=AttemptState.FAILED,
                now=ctx.clock(),
                cancelled=True,
                reason=CANCEL_REASON,
            )

        plan = ctx.commit_replanned(decide)
        if plan is None:
            raise RuntimeError(f"run {run_id} kept changing while it was canceled; try again")
        ctx.perform(plan.effects)
        attempt = canceled["attempt"]
        launcher = ctx.launchers.get(attempt.launcher)
        if attempt.execution_name and isinstance(launcher, ExecutionControl):
            launcher.stop(attempt.execution_name)
        log.info("run %s canceled", run_id)
        return self._run(run_id)

    def rerun(self, run_id: str) -> str:
        """Upload the run's pinned submission again to its workflow's inbox folder, marked as a re-run of it, so
        INTAKE makes the new run as it makes every run; returns the new run's id."""
        run = self._run(run_id)
        submission = run.submission
        if submission is None or run.purged_at is not None:
            raise NotRerunnable(f"run {run_id} has no stored submission to run again")
        settings = self.context.settings
        name = inbox_object(run.org, run.workflow_slug, submission.name)
        stored = self.context.objects.copy_version(
            submission.uri,
            submission.generation,
            gs_uri(settings.inbox_bucket, name),
            metadata={RERUN_OF_METADATA_KEY: run_id},
            content_type=submission.content_type,
        )
        return run_id_for(settings.inbox_bucket, name, stored.generation)
