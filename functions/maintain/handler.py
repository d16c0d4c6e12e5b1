"""MAINTAIN: on each tick, the sweeps of DESIGN §13, so that every run ends and nothing is kept past retention.

Each sweep reads at most VALIDIBOT_SWEEP_BATCH documents, decides with a pure transition, and commits on the update
times it read: two ticks at once (or one delivered twice) make each change once; the loser's commit conflicts and
it moves on. Work the other stages already know how to do (launch, ingest, replay effects) is handed back to them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

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
from jobs.launchers.base import ExecutionControl
from schemas.changes import Versioned
from schemas.documents import AttemptDoc, ReceiptDoc, RunDoc
from schemas.enums import AttemptState, ReceiptStatus, RunStatus
from schemas.log_labels import log_labels
from schemas.objects import ObjectFinalized
from schemas.paths import gs_uri, steps_prefix
from store.ports import Conflict, Found

log = logging.getLogger("validibot.maintenance")

TickReport = Counter[str]
T = TypeVar("T")
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

    def _commit_for(
        self, found: Found[AttemptDoc], decide: Callable[[str, str, Versioned[RunDoc]], Plan | None]
    ) -> Plan | None:
        """Commit (and perform) what `decide` plans from the attempt found and its run as they are now; the plan
        committed, or None when there was nothing to do, the run is gone, or another tick won."""
        run_id, attempt_id = found.path[1], found.path[3]
        run = self.context.store.run(run_id)
        plan = decide(run_id, attempt_id, run) if run is not None else None
        return plan if self._commit(plan) else None

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

    def _ingested(self, attempt: AttemptDoc) -> bool:
        """The attempt's genuine output, if one was written, handed to INGEST now (its own event may be stuck or
        lost): True when it is applied (now or before). A rejected output is no verdict: the sweep goes on."""
        handled = self._redeliver(attempt.expected_output_uri)
        return handled is not None and handled.outcome in (Outcome.APPLIED, Outcome.DUPLICATE, Outcome.EFFECTS_REPLAYED)

    def _each(self, report: TickReport, found: Iterable[T], act: Callable[[T], str | None]) -> None:
        """Act on each document found; one that fails is logged and counted, and the sweep goes on with the rest,
        so a document no code path can handle never holds up those behind it."""
        for item in found:
            # A found document's path holds its run (runs/{run_id}/...); a receipt carries its run in the document.
            path = getattr(item, "path", ())
            run_id = (
                path[1] if len(path) > 1 and path[0] == "runs" else getattr(getattr(item, "doc", None), "run_id", None)
            )
            with log_labels(run_id=run_id):
                try:
                    counted = act(item)
                except Exception:
                    report["document errors"] += 1
                    log.exception("maintenance: %s could not be handled; the next tick tries again", item)
                    continue
            if counted:
                report[counted] += 1

    # -- the sweeps ------------------------------------------------------------------------------------------

    def _leases(self, report: TickReport) -> None:
        """Claims lost with their function (DISPATCHING past the lease): back to the queue, or failed."""
        now, settings = self.context.clock(), self.context.settings
        cutoff = now - timedelta(seconds=settings.dispatch_lease_seconds)

        def release(found: Found[AttemptDoc]) -> str | None:
            # An inline run that wrote its verdict before its function was lost: ingest it, do not run it again.
            if self._ingested(found.doc):
                return "outputs ingested"
            plan = self._commit_for(
                found,
                lambda run_id, attempt_id, run: plan_lease_expired(
                    run_id, attempt_id, run=run, attempt=found.found, settings=settings, now=now
                ),
            )
            if plan is None:
                return None
            return "leases failed" if plan.effects.events else "leases released"

        found = self.context.store.attempts_in(
            AttemptState.DISPATCHING, "dispatched_at", before=cutoff, limit=self._batch
        )
        self._each(report, found, release)

    def _queue(self, report: TickReport) -> None:
        """Attempts left queued by a full launcher, oldest first, until the launcher is full again."""
        for found in self.context.store.attempts_in(
            AttemptState.SCHEDULED, "queued_at", after=EPOCH, limit=self._batch
        ):
            try:
                handled = self._redeliver(found.doc.input_uri)
            except Exception:
                report["document errors"] += 1
                log.exception("maintenance: queued attempt %s could not be launched", found.path)
                continue
            if handled is not None and handled.outcome == Outcome.QUEUED:
                break
            if handled is not None:
                report["queued launched"] += 1

    def _timeouts(self, report: TickReport) -> None:
        now, settings = self.context.clock(), self.context.settings
        cutoff = now - timedelta(seconds=settings.timeout_grace_seconds)

        def time_out(found: Found[AttemptDoc]) -> str | None:
            # A verdict written in time whose event is late (a backlog, a lost delivery) is no timeout.
            if self._ingested(found.doc):
                return "outputs ingested"
            timed_out = self._commit_for(
                found,
                lambda run_id, attempt_id, run: plan_timeout(
                    run_id, attempt_id, run=run, attempt=found.found, settings=settings, now=now
                ),
            )
            if timed_out is None:
                return None
            self._stop(found.doc)
            return "timed out"

        for state in (AttemptState.RUNNING, AttemptState.DISPATCHING):
            self._each(
                report, self.context.store.attempts_in(state, "timeout_at", before=cutoff, limit=self._batch), time_out
            )

    def _executions(self, report: TickReport) -> None:
        """Running jobs as their platform sees them: one that ended has its output ingested, or fails its step."""

        def reconcile(found: Found[AttemptDoc]) -> str | None:
            attempt = found.doc
            control = self._control(attempt)
            if control is None or not attempt.execution_name:
                return None
            execution = control.inspect(attempt.execution_name)
            run_id, attempt_id = found.path[1], found.path[3]
            if not execution.finished:
                refresh = plan_job_status(run_id, attempt_id, attempt=found.found, job_status=execution.job_status)
                return "job status refreshed" if self._commit(refresh) else None
            # Its output's own event may still be on its way (or lost): ingest it now; the receipt dedupes.
            if self._ingested(attempt):
                return "outputs ingested"
            ended = self._commit_for(
                found,
                lambda run_id, attempt_id, run: plan_execution_ended(
                    run_id,
                    attempt_id,
                    run=run,
                    attempt=found.found,
                    job_status=execution.job_status,
                    message=execution.message,
                    now=self.context.clock(),
                ),
            )
            return "executions ended without output" if ended else None

        self._each(
            report, self.context.store.attempts_in(AttemptState.RUNNING, "dispatched_at", limit=self._batch), reconcile
        )

    def _lost_effects(self, report: TickReport) -> None:
        """Effects a crash lost and no redelivery brought back: a PENDING run's intake, a scheduled attempt's
        launch, an applied receipt's effects."""
        store = self.context.store
        cutoff = self.context.clock() - timedelta(seconds=self.context.settings.lost_effects_seconds)

        def intake(found: Found[RunDoc]) -> str:
            self.replay_intake(found.path[1], found.doc)
            return "intakes replayed"

        def launch(found: Found[AttemptDoc]) -> str | None:
            if found.doc.queued_at is not None or self._redeliver(found.doc.input_uri) is None:
                return None
            return "launches replayed"

        def effects(found: Found[ReceiptDoc]) -> str:
            self.replay_receipt(found.path[1], found.doc)
            return "receipts replayed"

        self._each(
            report, store.runs_due("created_at", before=cutoff, status=RunStatus.PENDING, limit=self._batch), intake
        )
        self._each(
            report, store.attempts_in(AttemptState.SCHEDULED, "scheduled_at", before=cutoff, limit=self._batch), launch
        )
        processing = store.receipts_due(
            "received_at", before=cutoff, status=ReceiptStatus.PROCESSING, limit=self._batch
        )
        self._each(report, processing, effects)

    def _receipts(self, report: TickReport) -> None:
        """Receipts past expire_at (production's TTL policy does the same; the emulator has none)."""
        store = self.context.store

        def expire(found: Found[ReceiptDoc]) -> str | None:
            return "receipts expired" if store.delete(found.path, found.found.update_time) else None

        self._each(report, store.receipts_due("expire_at", before=self.context.clock(), limit=self._batch), expire)

    def _retention(self, report: TickReport) -> None:
        now = self.context.clock()

        def purge(found: Found[RunDoc]) -> str | None:
            due = purge_due_now(found.doc, now)
            if due:
                self._purge_objects(found.path[1], found.doc, submission=due.submission, results=due.results)
            # Recorded only once every object is gone: a failed delete raises, and the next tick tries again.
            return "runs purged" if self._commit(plan_purged(found.path[1], found.found, due, now=now)) else None

        self._each(report, self.context.store.runs_due("purge_due_at", before=now, limit=self._batch), purge)

    def _purge_objects(self, run_id: str, run: RunDoc, *, submission: bool, results: bool) -> None:
        objects = self.context.objects
        if submission:
            # A user's file name may hold "#": the generation is after the last one.
            source, _, generation = run.source.rpartition("#")
            # The inbox original, exactly the version this run was made from (a newer upload is another run).
            objects.delete(source, int(generation) if generation.isdigit() else None)
            if run.submission is not None:
                objects.delete(run.submission.uri, run.submission.generation)
        if results:
            for uri in objects.uris_under(gs_uri(self.context.settings.bucket, steps_prefix(run.org, run_id))):
                objects.delete(uri)
