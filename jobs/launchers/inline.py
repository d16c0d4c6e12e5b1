"""Run a lightweight validator inside the launching function; it writes output.json like any job would.

Inline work has a time budget (VALIDIBOT_INLINE_BUDGET_SECONDS): a validation still running when it is spent is
abandoned and handed to a job, so one large document cannot hold the functions, or the small ones behind it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from jobs.launchers.base import HandOff, LaunchResult
from jobs.runtime import Assignment, execute, report_failure
from jobs.validators.base import OverBudget, ValidationResult
from schemas.settings import Settings
from store.ports import ObjectStore

log = logging.getLogger(__name__)


class InlineLauncher:
    name = "inline"

    def __init__(self, objects: ObjectStore, settings: Settings) -> None:
        self._objects = objects
        self._settings = settings

    def launch(self, assignment: Assignment) -> LaunchResult:
        started_at = datetime.now(UTC)
        try:
            written = execute(
                assignment, self._objects, self._settings, budget_seconds=self._settings.inline_budget_seconds
            )
        except OverBudget as exc:
            raise HandOff(
                f"{exc} ({self._settings.inline_budget_seconds:g} s, VALIDIBOT_INLINE_BUDGET_SECONDS)"
            ) from exc
        except ValueError as exc:
            # What this input makes of the result cannot be written (the validators' own crashes are findings
            # already): every redelivery would fail the same way, so the step fails, as it would in a job.
            log.exception("run %s: the inline result could not be written", assignment.envelope.run_id)
            result = ValidationResult(
                runtime_error=f"the validation's result could not be written ({type(exc).__name__}); operators "
                "have the logs"
            )
            report_failure(self._objects, assignment, result, started_at=started_at, settings=self._settings)
            return LaunchResult()
        return LaunchResult(written_output=written)
