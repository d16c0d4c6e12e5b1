"""LAUNCH: an input.json finalized → claim its attempt once, then run the validator inline or start its job."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from functions.common import Plan
from functions.launch.transitions import (
    claimable,
    plan_dispatched,
    plan_handed_off,
    plan_launch,
    plan_launch_refused,
    plan_release,
)
from functions.stage import MAX_COMMIT_TRIES, Handled, Known, Outcome, StageContext, chain, short
from jobs.launchers.base import ExecutionControl, HandOff, LauncherBusy, LaunchRefused, LaunchResult
from jobs.runtime import Assignment
from schemas.changes import Committed, Versioned
from schemas.documents import AttemptDoc
from schemas.envelopes import InputEnvelope, sha256_hex
from schemas.objects import ObjectFinalized
from schemas.paths import StepObjectPath, gs_uri
from schemas.signing import attempt_signing_key
from store.ports import Conflict, ObjectMissing, ObjectTooLarge

log = logging.getLogger("validibot.pipeline")


@dataclass(frozen=True)
class LaunchStage:
    context: StageContext

    def handle(self, event: ObjectFinalized, path: StepObjectPath, known: Known | None = None) -> Handled:
        ctx = self.context
        ctx.settings.signing_secret_bytes()  # before any claim: without it no launch could be verified
        for _ in range(MAX_COMMIT_TRIES):
            attempt = (known and known.attempt) or ctx.store.attempt(path.run_id, path.attempt_id)
            if attempt is not None and not claimable(attempt.doc, settings=ctx.settings, now=ctx.clock()):
                return Handled(Outcome.DUPLICATE)
            run = (known and known.run) or ctx.store.run(path.run_id)
            if run is None or attempt is None or run.doc.workflow is None:
                log.warning("input.json for unknown attempt %s/%s: ignored", path.run_id, path.attempt_id)
                return Handled(Outcome.UNKNOWN_ATTEMPT)
            if gs_uri(event.bucket, event.name) != attempt.doc.input_uri:
                log.warning("%s is not the input_uri of attempt %s: ignored", event.name, path.attempt_id)
                return Handled(Outcome.IGNORED, "not the attempt's input_uri")
            envelope, problem = self._read_input(event, attempt.doc.input_sha256, known.data if known else None)
            plan = plan_launch(
                path.run_id,
                path.attempt_id,
                run=run,
                attempt=attempt,
                input_generation=event.generation,
                input_problem=problem,
                settings=ctx.settings,
                now=ctx.clock(),
            )
            if plan is None:
                return Handled(Outcome.DUPLICATE)
            try:
                committed = ctx.store.commit(plan.writes)
            except Conflict:
                # The bytes still hold (a generation never changes); the documents are read afresh.
                known = Known(known.data) if known else None
                continue
            ctx.perform(plan.effects)
            if envelope is None or plan.claimed is None:
                return Handled(Outcome.FAILED, problem)
            return self._start(event, path, claimed=plan.claimed, envelope=envelope, committed=committed)
        raise RuntimeError(f"attempt {path.run_id}/{path.attempt_id} kept changing while being claimed")

    def _read_input(
        self, event: ObjectFinalized, expected_sha256: str, data: bytes | None
    ) -> tuple[InputEnvelope | None, str | None]:
        """That version's envelope (read unless the chain has its bytes), checked against the attempt's sha256."""
        settings = self.context.settings
        try:
            if data is None:
                data = self.context.objects.read_bytes(
                    gs_uri(event.bucket, event.name), event.generation, settings.max_envelope_bytes
                )
        except ObjectMissing:
            return None, "input.json was deleted or replaced before it was launched"
        except ObjectTooLarge:
            return None, f"input.json is over {settings.max_envelope_bytes} bytes"
        if sha256_hex(data) != expected_sha256:
            return None, "input.json is not the envelope scheduled for this attempt (sha256 differs)"
        try:
            return InputEnvelope.model_validate_json(data), None
        except ValidationError as exc:
            return None, f"input.json is not a valid input envelope: {short(exc)}"

    def _start(
        self,
        event: ObjectFinalized,
        path: StepObjectPath,
        *,
        claimed: AttemptDoc,
        envelope: InputEnvelope,
        committed: Committed,
    ) -> Handled:
        ctx = self.context
        signing_key = attempt_signing_key(
            ctx.settings.signing_secret_bytes(),
            run_id=path.run_id,
            attempt_id=path.attempt_id,
            callback_id=claimed.callback_id,
        )
        assignment = Assignment(envelope, claimed.input_sha256, signing_key)
        # At most twice: inline, then the job it hands an over-budget step to.
        for _ in range(2):
            try:
                result = self._launch(path, claimed, assignment)
            except HandOff as exc:
                log.info("%s: %s; handing it to the %s launcher", event.name, exc, ctx.settings.job_launcher)
                handed = self._hand_off(path, claimed)
                if handed is None:
                    return Handled(Outcome.DUPLICATE, "the attempt moved on while it was handed to a job")
                claimed = handed
                continue
            except LaunchRefused as exc:
                self._refuse(path, claimed, str(exc))
                return Handled(Outcome.FAILED, str(exc))
            except LauncherBusy as exc:
                # Queued, not redelivered: the platform's retries are few and fast, the tick's are not lost.
                self._release(path, claimed, queued_at=ctx.clock())
                log.info("%s: %s; queued for the maintenance tick", event.name, exc)
                return Handled(Outcome.QUEUED, str(exc))
            self._record_execution(path, claimed, result)
            written = result.written_output
            if written is None:
                return Handled(Outcome.LAUNCHED)
            # An inline run: its output goes on to INGEST in this call, with the claim as this call committed it.
            return Handled(
                Outcome.LAUNCHED,
                follow_up=(chain(written.stored, "application/json", written.data, committed),),
            )
        raise RuntimeError(f"launcher {claimed.launcher!r} handed the attempt off again")

    def _launch(self, path: StepObjectPath, claimed: AttemptDoc, assignment: Assignment) -> LaunchResult:
        """Start the attempt on its launcher; on a fault the claim is released first, so the redelivery the
        raise asks for can claim the attempt again (else it would take it for a duplicate)."""
        launcher = self.context.launchers.get(claimed.launcher)
        if launcher is None:
            raise LaunchRefused(f"no launcher {claimed.launcher!r} is configured in this deployment")
        try:
            return launcher.launch(assignment)
        except (HandOff, LaunchRefused, LauncherBusy):
            raise
        except Exception:
            self._release(path, claimed)
            raise

    def _hand_off(self, path: StepObjectPath, claimed: AttemptDoc) -> AttemptDoc | None:
        launcher = self.context.settings.job_launcher
        plan = self._replan_attempt(
            path,
            lambda current: plan_handed_off(
                path.run_id, path.attempt_id, current=current, claimed=claimed, launcher=launcher
            ),
        )
        return plan.claimed if plan is not None else None

    def _replan_attempt(
        self, path: StepObjectPath, decide: Callable[[Versioned[AttemptDoc]], Plan | None]
    ) -> Plan | None:
        """Commit what `decide` plans from the attempt as it is now, deciding again after a lost race."""

        def replan() -> Plan | None:
            current = self.context.store.attempt(path.run_id, path.attempt_id)
            return decide(current) if current is not None else None

        return self.context.commit_replanned(replan)

    def _release(self, path: StepObjectPath, claimed: AttemptDoc, queued_at: datetime | None = None) -> None:
        current = self.context.store.attempt(path.run_id, path.attempt_id)
        release = (
            plan_release(path.run_id, path.attempt_id, current=current, claimed=claimed, queued_at=queued_at)
            if current
            else None
        )
        if release is not None:
            with contextlib.suppress(Conflict):
                self.context.store.commit(release.writes)

    def _record_execution(self, path: StepObjectPath, claimed: AttemptDoc, result: LaunchResult) -> None:
        execution_name = result.execution_name
        if execution_name is None:
            return  # inline: the output is written already, there is no execution to find again
        recorded = self._replan_attempt(
            path,
            lambda current: plan_dispatched(
                path.run_id,
                path.attempt_id,
                current=current,
                claimed=claimed,
                execution_name=execution_name,
                job_status=result.job_status,
            ),
        )
        launcher = self.context.launchers.get(claimed.launcher)
        if recorded is None and isinstance(launcher, ExecutionControl):
            # The attempt moved on while the job started (canceled, timed out, taken over, or already answered):
            # nobody would ever find this execution again to stop it, so it is stopped now.
            log.info("%s: the attempt moved on while %s started; stopping it", path.attempt_id, execution_name)
            launcher.stop(execution_name)

    def _refuse(self, path: StepObjectPath, claimed: AttemptDoc, reason: str) -> None:
        def replan() -> Plan | None:
            run = self.context.store.run(path.run_id)
            current = self.context.store.attempt(path.run_id, path.attempt_id)
            if run is None or current is None:
                return None
            return plan_launch_refused(
                path.run_id,
                path.attempt_id,
                run=run,
                current=current,
                claimed=claimed,
                reason=reason,
                now=self.context.clock(),
            )

        plan = self.context.commit_replanned(replan)
        if plan is not None:
            self.context.perform(plan.effects)
