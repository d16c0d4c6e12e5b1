"""MAINTAIN: on each tick, the sweeps of DESIGN §13, so that every run ends and nothing is kept past retention.

Each sweep reads at most VALIDIBOT_SWEEP_BATCH documents, decides with a pure transition, and commits on the update
times it read: two ticks at once (or one delivered twice) make each change once; the loser's commit conflicts and
it moves on. Work the other stages already know how to do (launch, ingest, replay effects) is handed back to them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from functions.common import Plan
from functions.maintain.transitions import (
    plan_execution_ended,
    plan_job_status,
    plan_lease_expired,
    plan_purged,
    plan_timeout,
    purge_due_now,
)
from functions.stage import Handled, Outcome, StageContext, finalized
from jobs.launchers.base import ExecutionControl, ExecutionState
from schemas.changes import Versioned
from schemas.documents import AttemptDoc, ReceiptDoc, RunDoc
from schemas.enums import AttemptState, ReceiptStatus, RunStatus
from schemas.objects import ObjectFinalized
from schemas.paths import gs_uri, steps_prefix
from store.ports import Conflict, Found

log = logging.getLogger("validibot.maintenance")

TickReport = Counter[str]
# Every queued attempt has a queued_at after this (an inequality also leaves out the attempts never queued).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class MaintainStage:
    context: StageContext
    # Handles an object as its finalize event would be (the pipeline's own dispatcher, chain included).
    redeliver: Callable[[ObjectFinalized], Handled]
    replay_intake: Callable[[str, RunDoc], object]
    replay_receipt: Callable[[str, ReceiptDoc], object]

    def tick(self) -> TickReport:
        """Run every sweep once; returns what each changed, by name. A sweep that fails is logged and left to the
        next tick, so one unavailable service does not hold up the others."""
        report: TickReport = Counter()
        for sweep in (
            self._leases,
            self._queue,
            self._timeouts,
            self._executions,
            self._lost_effects,
            self._receipts,
            self._retention,
        ):
            try:
                sweep(report)
            except Exception:
                report["sweep errors"] += 1
                log.exception("maintenance sweep %s failed; the next tick tries again", sweep.__name__.strip("_"))
        changed = ", ".join(f"{name} {count}" for name, count in sorted(report.items()) if count)
        log.info("maintenance tick: %s", changed or "nothing to do")
        return report

    # -- helpers -------------------------------------------------------------------------------------------

    @property
    def _batch(self) -> int:
        return self.context.settings.sweep_batch

    def _commit(self, plan: Plan | None) -> bool:
        """Commit a sweep's plan and perform its effects; False when there was nothing to do or another tick won."""
        if plan is None:
            return False
        try:
            self.context.store.commit(plan.writes)
        except Conflict:
            return False
        self.context.perform(plan.effects)
        return True

    def _attempt_and_run(self, found: Found[AttemptDoc]) -> tuple[str, str, Versioned[RunDoc]] | None:
        run_id, attempt_id = found.path[1], found.path[3]
        run = self.context.store.run(run_id)
        return (run_id, attempt_id, run) if run is not None else None

    def _control(self, attempt: AttemptDoc) -> ExecutionControl | None:
        launcher = self.context.launchers.get(attempt.launcher)
        return launcher if isinstance(launcher, ExecutionControl) else None

    def _stop(self, attempt: AttemptDoc) -> None:
        control = self._control(attempt)
        if control is not None and attempt.execution_name:
            control.stop(attempt.execution_name)

    def _redeliver(self, uri: str) -> Handled | None:
        """Hand an existing object to its stage as if its finalize event had just arrived; None when it is gone."""
        stored = self.context.objects.stat(uri)
        return self.redeliver(finalized(stored, "application/json")) if stored is not None else None

    # -- the sweeps ------------------------------------------------------------------------------------------

    def _leases(self, report: TickReport) -> None:
        """Claims lost with their function (DISPATCHING past the lease): back to the queue, or failed."""
        now, settings = self.context.clock(), self.context.settings
        cutoff = now - timedelta(seconds=settings.dispatch_lease_seconds)
        for found in self.context.store.attempts_in(
            AttemptState.DISPATCHING, "dispatched_at", before=cutoff, limit=self._batch
        ):
            # An inline run that wrote its verdict before its function was lost: ingest it, do not run it again.
            if self._redeliver(found.doc.expected_output_uri) is not None:
                report["outputs ingested"] += 1
                continue
            loaded = self._attempt_and_run(found)
            if loaded is None:
                continue
            run_id, attempt_id, run = loaded
            plan = plan_lease_expired(run_id, attempt_id, run=run, attempt=found.found, settings=settings, now=now)
            if self._commit(plan):
                report["leases released" if plan and not plan.effects.events else "leases failed"] += 1

    def _queue(self, report: TickReport) -> None:
        """Attempts left queued by a full launcher, oldest first, until the launcher is full again."""
        for found in self.context.store.attempts_in(
            AttemptState.SCHEDULED, "queued_at", after=EPOCH, limit=self._batch
        ):
            handled = self._redeliver(found.doc.input_uri)
            if handled is None:
                continue
            if handled.outcome == Outcome.QUEUED:
                break
            report["queued launched"] += 1

    def _timeouts(self, report: TickReport) -> None:
        now, settings = self.context.clock(), self.context.settings
        cutoff = now - timedelta(seconds=settings.timeout_grace_seconds)
        for state in (AttemptState.RUNNING, AttemptState.DISPATCHING):
            for found in self.context.store.attempts_in(state, "timeout_at", before=cutoff, limit=self._batch):
                loaded = self._attempt_and_run(found)
                if loaded is None:
                    continue
                run_id, attempt_id, run = loaded
                plan = plan_timeout(run_id, attempt_id, run=run, attempt=found.found, settings=settings, now=now)
                if self._commit(plan):
                    report["timed out"] += 1
                    self._stop(found.doc)

    def _executions(self, report: TickReport) -> None:
        """Running jobs as their platform sees them: one that ended has its output ingested, or fails its step."""
        for found in self.context.store.attempts_in(AttemptState.RUNNING, "dispatched_at", limit=self._batch):
            attempt = found.doc
            control = self._control(attempt)
            if control is None or not attempt.execution_name:
                continue
            execution = control.inspect(attempt.execution_name)
            if not execution.finished:
                run_id, attempt_id = found.path[1], found.path[3]
                refresh = plan_job_status(run_id, attempt_id, attempt=found.found, job_status=execution.job_status)
                if self._commit(refresh):
                    report["job status refreshed"] += 1
                continue
            self._ended(found, execution, report)

    def _ended(self, found: Found[AttemptDoc], execution: ExecutionState, report: TickReport) -> None:
        # Its output's own event may still be on its way (or lost): ingest it now; the receipt dedupes.
        if self._redeliver(found.doc.expected_output_uri) is not None:
            report["outputs ingested"] += 1
            return
        loaded = self._attempt_and_run(found)
        if loaded is None:
            return
        run_id, attempt_id, run = loaded
        plan = plan_execution_ended(
            run_id,
            attempt_id,
            run=run,
            attempt=found.found,
            job_status=execution.job_status,
            message=execution.message,
            now=self.context.clock(),
        )
        if self._commit(plan):
            report["executions ended without output"] += 1

    def _lost_effects(self, report: TickReport) -> None:
        """Effects a crash lost and no redelivery brought back: a PENDING run's intake, a scheduled attempt's
        launch, an applied receipt's effects."""
        store = self.context.store
        cutoff = self.context.clock() - timedelta(seconds=self.context.settings.lost_effects_seconds)
        for found in store.runs_due("created_at", before=cutoff, status=RunStatus.PENDING, limit=self._batch):
            self.replay_intake(found.path[1], found.doc)
            report["intakes replayed"] += 1
        for attempt in store.attempts_in(AttemptState.SCHEDULED, "scheduled_at", before=cutoff, limit=self._batch):
            if attempt.doc.queued_at is None and self._redeliver(attempt.doc.input_uri) is not None:
                report["launches replayed"] += 1
        for receipt in store.receipts_due(
            "received_at", before=cutoff, status=ReceiptStatus.PROCESSING, limit=self._batch
        ):
            self.replay_receipt(receipt.path[1], receipt.doc)
            report["receipts replayed"] += 1

    def _receipts(self, report: TickReport) -> None:
        """Receipts past expire_at (production's TTL policy does the same; the emulator has none)."""
        store = self.context.store
        for found in store.receipts_due("expire_at", before=self.context.clock(), limit=self._batch):
            if store.delete(found.path, found.found.update_time):
                report["receipts expired"] += 1

    def _retention(self, report: TickReport) -> None:
        now = self.context.clock()
        for found in self.context.store.runs_due("purge_due_at", before=now, limit=self._batch):
            due = purge_due_now(found.doc, now)
            if due:
                self._purge_objects(found.path[1], found.doc, submission=due.submission, results=due.results)
            # Recorded only once every object is gone: a failed delete raises, and the next tick tries again.
            if self._commit(plan_purged(found.path[1], found.found, due, now=now)):
                report["runs purged"] += 1

    def _purge_objects(self, run_id: str, run: RunDoc, *, submission: bool, results: bool) -> None:
        objects = self.context.objects
        if submission:
            source, _, generation = run.source.partition("#")
            # The inbox original, exactly the version this run was made from (a newer upload is another run).
            objects.delete(source, int(generation) if generation.isdigit() else None)
            if run.submission is not None:
                objects.delete(run.submission.uri, run.submission.generation)
        if results:
            for uri in objects.uris_under(gs_uri(self.context.settings.bucket, steps_prefix(run.org, run_id))):
                objects.delete(uri)
