"""One handler per stage: load the documents, ask the transition, commit, perform the effects.

Returning normally acknowledges the event; raising asks the platform to redeliver, which is right only for
transient faults. Bad input is recorded on the run (or as a rejected receipt) and acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from events.publish import LifecyclePublisher
from functions.transitions import (
    Plan,
    Problem,
    ingest_effects,
    intake_problem,
    intake_replay,
    plan_dispatched,
    plan_ingest,
    plan_intake,
    plan_launch,
    plan_launch_refused,
    plan_release,
    reject,
    submission_limit,
)
from jobs.launchers.base import Launcher, LauncherBusy, LaunchRefused, LaunchResult
from schemas.changes import Write, attempt_path, receipt_path
from schemas.documents import AttemptDoc, ReceiptDoc, RunDoc, Submission
from schemas.enums import ErrorCategory, ReceiptStatus, RunStatus
from schemas.envelopes import InputEnvelope, OutputEnvelope, sha256_hex
from schemas.objects import ObjectFinalized
from schemas.paths import (
    InboxPath,
    StepObjectPath,
    attempt_id_for,
    gs_uri,
    is_slug,
    parse_object_name,
    run_id_for,
    submission_object,
)
from schemas.settings import Settings
from store.objects import ObjectConflict, ObjectMissing, ObjectStore, ObjectTooLarge
from store.runs import Conflict, RunStore

log = logging.getLogger("validibot.pipeline")

# A commit that loses a race is re-planned from fresh reads; the second plan nearly always sees the winner.
MAX_COMMIT_TRIES = 4
MAX_REASON_CHARS = 600


def _short(exc: Exception) -> str:
    text = str(exc).strip()
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _claimed_attempt(path: StepObjectPath, claim: Plan) -> AttemptDoc:
    claimed = next(w.doc for w in claim.writes if w.path == attempt_path(path.run_id, path.attempt_id))
    assert isinstance(claimed, AttemptDoc)
    return claimed


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_callback_id() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Pipeline:
    settings: Settings
    store: RunStore
    objects: ObjectStore
    publisher: LifecyclePublisher
    launchers: dict[str, Launcher]
    clock: Callable[[], datetime] = field(default=_utcnow)
    new_callback_id: Callable[[], str] = field(default=_new_callback_id)

    def handle(self, event: ObjectFinalized) -> str:
        """Route a finalized object by its path; returns what was done, for logs and tests."""
        path = parse_object_name(event.name)
        if path is None or event.bucket != self.settings.bucket:
            log.debug("ignored gs://%s/%s: not a pipeline object", event.bucket, event.name)
            return "ignored"
        started = time.perf_counter()
        if isinstance(path, InboxPath):
            outcome = self.intake(event, path)
        elif path.kind == "input":
            outcome = self.launch(event, path)
        else:
            outcome = self.ingest(event, path)
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info("%s (generation %s): %s in %.0f ms", event.name, event.generation, outcome, elapsed_ms)
        return outcome

    def _perform(self, plan: Plan) -> None:
        self.publisher.publish(plan.events)
        for obj in plan.objects:
            # A conflict means an earlier delivery wrote it; LAUNCH checks its bytes against the attempt.
            with contextlib.suppress(ObjectConflict):
                self.objects.write_new(obj.uri, obj.data, obj.content_type)

    # -- INTAKE -----------------------------------------------------------------------------------------

    def intake(self, event: ObjectFinalized, path: InboxPath) -> str:
        run_id = run_id_for(event.bucket, event.name, event.generation)
        existing = self.store.run(run_id)
        if existing is not None:
            return self._replay_intake(run_id, existing.doc)
        org = self.store.org(path.org) if is_slug(path.org) else None
        workflow = self.store.workflow(path.org, path.workflow) if org and is_slug(path.workflow) else None
        problem = intake_problem(path, event, org, workflow, self.settings)
        submission = None
        if problem is None and workflow is not None:
            submission, problem = self._store_submission(run_id, event, path, submission_limit(workflow, self.settings))
        plan = plan_intake(
            run_id,
            event,
            path,
            org,
            workflow,
            submission,
            problem,
            self.new_callback_id(),
            self.settings,
            self.clock(),
        )
        try:
            self.store.commit(plan.writes)
        except Conflict:
            existing = self.store.run(run_id)
            assert existing is not None, "a run create can only conflict with an existing run"
            return self._replay_intake(run_id, existing.doc)
        self._perform(plan)
        return "refused" if problem else "created"

    def _replay_intake(self, run_id: str, run: RunDoc) -> str:
        # Once LAUNCH has claimed the first attempt, intake's effects are known to be done.
        if run.status != RunStatus.PENDING and run.workflow is not None:
            return "duplicate"
        attempt = self.store.attempt(run_id, attempt_id_for(1, 1))
        self._perform(intake_replay(run_id, run, attempt.doc if attempt else None, self.settings.bucket))
        return "duplicate (effects replayed)"

    def _store_submission(
        self, run_id: str, event: ObjectFinalized, path: InboxPath, limit: int
    ) -> tuple[Submission | None, Problem | None]:
        """Copy the uploaded version into the run's folder, hashing it on the way."""
        uri = gs_uri(event.bucket, submission_object(path.org, run_id, path.filename))
        with tempfile.TemporaryDirectory(prefix="validibot-intake-") as scratch:
            local = Path(scratch) / "submission"
            try:
                size, sha256 = self.objects.download_hashed(
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
                stored = self.objects.write_new_file(uri, local, event.content_type, sha256)
            except ObjectConflict:
                found = self.objects.stat(uri)
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

    # -- LAUNCH -----------------------------------------------------------------------------------------

    def _read_input(self, event: ObjectFinalized, expected_sha256: str) -> tuple[InputEnvelope | None, str | None]:
        uri = gs_uri(event.bucket, event.name)
        try:
            data = self.objects.read_bytes(uri, event.generation, self.settings.max_envelope_bytes)
        except ObjectMissing:
            return None, "input.json was deleted or replaced before it was launched"
        except ObjectTooLarge:
            return None, f"input.json is over {self.settings.max_envelope_bytes} bytes"
        if sha256_hex(data) != expected_sha256:
            return None, "input.json is not the envelope scheduled for this attempt (sha256 differs)"
        try:
            return InputEnvelope.model_validate_json(data), None
        except ValidationError as exc:
            return None, f"input.json is not a valid input envelope: {_short(exc)}"

    def launch(self, event: ObjectFinalized, path: StepObjectPath) -> str:
        for _ in range(MAX_COMMIT_TRIES):
            run = self.store.run(path.run_id)
            attempt = self.store.attempt(path.run_id, path.attempt_id)
            if run is None or attempt is None or run.doc.workflow is None:
                log.warning("input.json for unknown attempt %s/%s: ignored", path.run_id, path.attempt_id)
                return "unknown attempt"
            if gs_uri(event.bucket, event.name) != attempt.doc.input_uri:
                log.warning("%s is not the input_uri of attempt %s: ignored", event.name, path.attempt_id)
                return "ignored"
            envelope, problem = self._read_input(event, attempt.doc.input_sha256)
            plan = plan_launch(
                path.run_id, run, path.attempt_id, attempt, event.generation, problem, self.settings, self.clock()
            )
            if plan is None:
                return "duplicate"
            try:
                self.store.commit(plan.writes)
            except Conflict:
                continue
            self._perform(plan)
            if envelope is None:
                return f"failed: {problem}"
            claimed = _claimed_attempt(path, plan)
            launcher = self.launchers.get(attempt.doc.launcher)
            try:
                if launcher is None:
                    raise LaunchRefused(f"no launcher {attempt.doc.launcher!r} is configured in this deployment")
                result = launcher.launch(envelope, attempt.doc.input_sha256)
            except LaunchRefused as exc:
                self._refuse_launch(path, claimed, str(exc))
                return f"failed: {exc}"
            except Exception as exc:
                # Raising makes the platform redeliver; without the release that redelivery would find the
                # attempt DISPATCHING, take it for a duplicate, and the run would never finish.
                self._release_claim(path, claimed)
                if isinstance(exc, LauncherBusy):
                    log.warning("%s: %s; the event will be redelivered", event.name, exc)
                raise
            self._record_execution(path, claimed, result)
            return "launched"
        raise RuntimeError(f"attempt {path.run_id}/{path.attempt_id} kept changing while being claimed")

    def _release_claim(self, path: StepObjectPath, claimed: AttemptDoc) -> None:
        current = self.store.attempt(path.run_id, path.attempt_id)
        release = plan_release(path.run_id, path.attempt_id, current, claimed) if current else None
        if release is not None:
            with contextlib.suppress(Conflict):
                self.store.commit(release.writes)

    def _commit_fresh(self, replan: Callable[[], Plan | None]) -> Plan | None:
        """Commit what `replan` decides from fresh reads, deciding again after a lost race; None: nothing done."""
        for _ in range(MAX_COMMIT_TRIES):
            plan = replan()
            if plan is None:
                return None
            try:
                self.store.commit(plan.writes)
            except Conflict:
                continue
            return plan
        return None

    def _record_execution(self, path: StepObjectPath, claimed: AttemptDoc, result: LaunchResult) -> None:
        execution_name = result.execution_name
        if execution_name is None:
            return  # inline: the output is written already, there is no execution to find again

        def replan() -> Plan | None:
            current = self.store.attempt(path.run_id, path.attempt_id)
            if current is None:
                return None
            return plan_dispatched(path.run_id, path.attempt_id, current, claimed, execution_name, result.job_status)

        self._commit_fresh(replan)

    def _refuse_launch(self, path: StepObjectPath, claimed: AttemptDoc, reason: str) -> None:
        def replan() -> Plan | None:
            run = self.store.run(path.run_id)
            current = self.store.attempt(path.run_id, path.attempt_id)
            if run is None or current is None:
                return None
            return plan_launch_refused(path.run_id, run, path.attempt_id, current, claimed, reason, self.clock())

        plan = self._commit_fresh(replan)
        if plan is not None:
            self._perform(plan)

    # -- INGEST -----------------------------------------------------------------------------------------

    def _read_output(self, event: ObjectFinalized) -> tuple[OutputEnvelope | None, str | None]:
        uri = gs_uri(event.bucket, event.name)
        try:
            data = self.objects.read_bytes(uri, event.generation, self.settings.max_envelope_bytes)
            return OutputEnvelope.model_validate_json(data), None
        except ObjectMissing:
            return None, "output.json was deleted or replaced before it was read"
        except ObjectTooLarge:
            return None, f"output.json is over {self.settings.max_envelope_bytes} bytes"
        except ValidationError as exc:
            return None, f"output.json is not a valid output envelope: {_short(exc)}"

    def ingest(self, event: ObjectFinalized, path: StepObjectPath) -> str:
        output, problem = self._read_output(event)
        if output is None:
            return self._commit_rejection(reject(event, path, problem or "unreadable", self.settings, self.clock()))
        for _ in range(MAX_COMMIT_TRIES):
            receipt = self.store.receipt(output.callback_id)
            if receipt is not None:
                return self._replay_ingest(output.callback_id, receipt)
            plan = plan_ingest(
                event,
                path,
                output,
                self.store.run(path.run_id),
                self.store.attempt(path.run_id, path.attempt_id),
                self.new_callback_id(),
                self.settings,
                self.clock(),
            )
            if plan.receipt_to_complete is None:
                return self._commit_rejection(plan)
            try:
                self.store.commit(plan.writes)
            except Conflict:
                continue
            self._perform(plan)
            self._complete_receipt(*plan.receipt_to_complete)
            return "applied"
        raise RuntimeError(f"attempt {path.run_id}/{path.attempt_id} kept changing while its output was applied")

    def _commit_rejection(self, plan: Plan) -> str:
        try:
            self.store.commit(plan.writes)
        except Conflict:
            return "duplicate (already recorded)"
        receipt = plan.writes[0].doc
        assert isinstance(receipt, ReceiptDoc)
        log.warning("output %s rejected: %s", receipt.output_uri, receipt.reason)
        return f"rejected: {receipt.reason}"

    def _complete_receipt(self, callback_id: str, receipt: ReceiptDoc) -> None:
        completed = receipt.model_copy(update={"status": ReceiptStatus.COMPLETED})
        self.store.commit([Write(receipt_path(callback_id), completed, "upsert")])

    def _replay_ingest(self, callback_id: str, receipt: ReceiptDoc) -> str:
        if receipt.status != ReceiptStatus.PROCESSING:
            return "duplicate"
        # An earlier delivery committed the result and stopped before its effects: perform them again.
        assert receipt.run_id is not None
        assert receipt.attempt_id is not None
        run = self.store.run(receipt.run_id)
        attempt = self.store.attempt(receipt.run_id, receipt.attempt_id)
        assert run is not None, "a PROCESSING receipt is committed with its run"
        assert attempt is not None, "a PROCESSING receipt is committed with its attempt"
        step = self.store.step(receipt.run_id, attempt.doc.step)
        assert step is not None
        next_id = next_attempt = None
        if run.doc.ended_at is None:
            following = self.store.step(receipt.run_id, attempt.doc.step + 1)
            next_id = following.attempt_id if following else None
            found = self.store.attempt(receipt.run_id, next_id) if next_id else None
            next_attempt = found.doc if found else None
        self._perform(ingest_effects(receipt.run_id, run.doc, step, next_id, next_attempt, self.settings.bucket))
        self._complete_receipt(callback_id, receipt)
        return "duplicate (effects replayed)"
