"""Run a lightweight validator inside the launching function; it writes output.json like any job would.

Inline work has a time budget (VALIDIBOT_INLINE_BUDGET_SECONDS): a validation still running when it is spent is
abandoned and handed to a job, so one large document cannot hold the functions, or the small ones behind it.
"""

from __future__ import annotations

from jobs.launchers.base import HandOff, LaunchResult
from jobs.runtime import Assignment, execute
from jobs.validators.base import OverBudget
from schemas.settings import Settings
from store.ports import ObjectStore


class InlineLauncher:
    name = "inline"

    def __init__(self, objects: ObjectStore, settings: Settings) -> None:
        self._objects = objects
        self._settings = settings

    def launch(self, assignment: Assignment) -> LaunchResult:
        try:
            written = execute(
                assignment, self._objects, self._settings, budget_seconds=self._settings.inline_budget_seconds
            )
        except OverBudget as exc:
            raise HandOff(
                f"{exc} ({self._settings.inline_budget_seconds:g} s, VALIDIBOT_INLINE_BUDGET_SECONDS)"
            ) from exc
        return LaunchResult(written_output=written.stored if written else None)
